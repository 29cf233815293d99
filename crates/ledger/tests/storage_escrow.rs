//! Storage escrow conservation, as a property over random deal histories on the pure executor.
//!
//! Each case registers five storage providers and runs up to 24 steps. A step is a block of
//! deals opened (random k, m, length and epochs), a block of answers to every open challenge
//! (each right, wrong, or withheld — a withheld one misses its deadline), an owner ending one of
//! its deals, or a run of empty blocks.
//!
//! After every block:
//! - (a) the storage escrow holds exactly `escrow − paid` of every deal not ended plus every
//!   bounty not yet paid;
//! - (b) every deal's epoch payments (from the events) sum to its `paid`, never above its
//!   escrow, and an ended deal's `paid + refunded` is its escrow, to the unit;
//! - (c) the slashes (from the events) equal the bounties paid to repairers, plus those sent
//!   to the treasury at a deal's end, plus those still held; each provider's bond is its stake
//!   less its slashes;
//! - (d) the supply never changes (storage moves tokens, it never mints or burns).
//!
//! At the end, empty blocks run past every epoch and deadline: (e) every deal has ended, and the
//! storage escrow is empty.

mod common;
mod storage_support;

use piazza_ledger::bank;
use piazza_ledger::block::Event;
use piazza_ledger::state::StateDelta;
use piazza_ledger::storage::{self, DealStatus};
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount};
use proptest::prelude::*;
use std::collections::BTreeMap;
use storage_support::*;

const STEPS_MAX: usize = 24;
const EPOCHS_MAX: u64 = 3;
/// Blocks that take any deal past its last epoch and every repair deadline.
const TAIL_BLOCKS: u64 = 64;

#[derive(Debug, Clone)]
enum Step {
    Open {
        owner: usize,
        k: u16,
        m: u16,
        len_bytes: u64,
        epochs: u64,
    },
    /// After up to an epoch of empty blocks until a challenge is open: one entry per open
    /// challenge, in (deal, shard) order, cycled: 0 right, 1 wrong, 2 none.
    Answer(Vec<u8>),
    End {
        owner: usize,
        pick: usize,
    },
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (
            0usize..2,
            1u16..=2,
            1u16..=2,
            1u64..12_000,
            1u64..=EPOCHS_MAX
        )
            .prop_map(|(owner, k, m, len_bytes, epochs)| Step::Open {
                owner,
                k,
                m,
                len_bytes,
                epochs
            }),
        3 => proptest::collection::vec(0u8..3, 1..6).prop_map(Step::Answer),
        1 => (0usize..2, any::<usize>()).prop_map(|(owner, pick)| Step::End { owner, pick }),
        1 => (1u64..5).prop_map(Step::Wait),
    ]
}

/// What the events said, summed.
#[derive(Default)]
struct Ledger {
    /// Epoch payments by deal.
    epoch_paid: BTreeMap<u64, u128>,
    /// Slashes by provider.
    slashed: BTreeMap<Address, u128>,
    slashed_total: u128,
    repair_paid: u128,
    bounties_to_treasury: u128,
}

impl Ledger {
    fn read(&mut self, events: &[Event]) {
        for e in events {
            let number = |key: &str| e.attribute(key).unwrap().parse::<u128>().unwrap();
            match e.kind.as_str() {
                "storage.proved" if e.attribute("kind") == Some("epoch") => {
                    let deal = number("deal") as u64;
                    *self.epoch_paid.entry(deal).or_default() += number("paid");
                }
                "storage.proved" => self.repair_paid += number("paid"),
                "storage.shard_failed" => {
                    let provider: Address = e.attribute("provider").unwrap().parse().unwrap();
                    *self.slashed.entry(provider).or_default() += number("slashed");
                    self.slashed_total += number("slashed");
                }
                "storage.deal_ended" => self.bounties_to_treasury += number("bounties_to_treasury"),
                _ => {}
            }
        }
    }
}

struct Run {
    net: Net,
    blobs: BTreeMap<u64, Coded>,
    ledger: Ledger,
    supply: Amount,
    opened: u8,
    /// Blobs of deals sent but not yet seen opened, by transaction.
    pending: BTreeMap<piazza_primitives::Hash, Coded>,
}

impl Run {
    fn block(&mut self, txs: Vec<piazza_ledger::tx::SignedTransaction>) {
        let (receipts, events) = self.net.chain.block(txs);
        self.ledger.read(&events);
        for r in &receipts {
            self.ledger.read(&r.events);
            if let Some(id) = r
                .events
                .iter()
                .find(|e| e.kind == "storage.deal_opened")
                .and_then(|e| e.attribute("deal"))
            {
                let id: u64 = id.parse().unwrap();
                let pending = self.pending.remove(&r.tx_hash).unwrap();
                self.blobs.insert(id, pending);
            }
        }
        self.check();
    }

    fn deals(&self) -> Vec<storage::Deal> {
        let view = StateDelta::new(&self.net.chain.state);
        self.blobs
            .keys()
            .map(|id| storage::deal(&view, *id).unwrap())
            .collect()
    }

    fn check(&self) {
        let view = StateDelta::new(&self.net.chain.state);
        let deals = self.deals();
        let mut held = 0u128;
        for d in &deals {
            let bounties: u128 = d.shards.iter().map(|s| s.bounty.base_units()).sum();
            held += bounties;
            assert!(d.paid <= d.escrow, "(b) deal {} pays over its escrow", d.id);
            assert_eq!(
                self.ledger.epoch_paid.get(&d.id).copied().unwrap_or(0),
                d.paid.base_units(),
                "(b) deal {}'s payments",
                d.id
            );
            if d.status == DealStatus::Ended {
                assert_eq!(
                    d.paid.checked_add(d.refunded).unwrap(),
                    d.escrow,
                    "(b) deal {} ended unbalanced",
                    d.id
                );
                assert_eq!(bounties, 0, "an ended deal holds no bounty");
            } else {
                held += d.escrow.base_units() - d.paid.base_units();
            }
        }
        assert_eq!(
            bank::account(&view, &storage::escrow())
                .balance
                .base_units(),
            held,
            "(a) the storage escrow"
        );
        let bounties_held: u128 = deals
            .iter()
            .flat_map(|d| d.shards.iter())
            .map(|s| s.bounty.base_units())
            .sum();
        assert_eq!(
            self.ledger.slashed_total,
            self.ledger.repair_paid + self.ledger.bounties_to_treasury + bounties_held,
            "(c) slashes"
        );
        for key in &self.net.providers {
            let address = key.public_key().address();
            let slashed = self.ledger.slashed.get(&address).copied().unwrap_or(0);
            assert_eq!(
                self.net.bonded(&address).base_units(),
                Amount::pza(PROVIDER_STAKE).base_units() - slashed,
                "(c) the bond of {address}"
            );
        }
        assert_eq!(bank::supply(&view), self.supply, "(d) the supply");
    }
}

fn run(steps: Vec<Step>) {
    let net = Net::new(5, 2);
    let supply = bank::supply(&net.view());
    let mut run = Run {
        net,
        blobs: BTreeMap::new(),
        ledger: Ledger::default(),
        supply,
        opened: 0,
        pending: BTreeMap::new(),
    };
    for step in steps {
        match step {
            Step::Open {
                owner,
                k,
                m,
                len_bytes,
                epochs,
            } => {
                run.opened = run.opened.wrapping_add(1);
                let coded = coded(len_bytes, k, m, run.opened);
                let key = run.net.owners[owner].clone();
                let tx = run.net.chain.tx(&key, open_deal(&coded.record, epochs));
                run.pending.insert(tx.hash(), coded);
                run.block(vec![tx]);
            }
            Step::Answer(policy) => {
                // Up to an epoch of empty blocks until some challenge is open.
                for _ in 0..test_params().epoch_blocks {
                    let open = run
                        .deals()
                        .iter()
                        .any(|d| d.shards.iter().any(|s| s.challenge.is_some()));
                    if open {
                        break;
                    }
                    run.block(Vec::new());
                }
                let mut txs = Vec::new();
                let mut at = 0;
                for d in run.deals() {
                    for (index, shard) in d.shards.iter().enumerate() {
                        let (Some(holder), Some(challenge)) = (shard.provider, &shard.challenge)
                        else {
                            continue;
                        };
                        let choice = policy[at % policy.len()];
                        at += 1;
                        let bytes = &run.blobs[&d.id].shards[index];
                        let mut message =
                            answer_for(d.id, index as u16, challenge.chunk_index, bytes);
                        match choice {
                            0 => {}
                            1 => {
                                if let Message::Storage(storage::Msg::AnswerChallenge {
                                    chunk,
                                    ..
                                }) = &mut message
                                {
                                    chunk[0] ^= 0xff;
                                }
                            }
                            _ => continue,
                        }
                        let key = run.net.key_of(&holder).clone();
                        txs.push(run.net.chain.tx(&key, message));
                    }
                }
                run.block(txs);
            }
            Step::End { owner, pick } => {
                let key = run.net.owners[owner].clone();
                let mine: Vec<u64> =
                    storage::deals_of_owner(&run.net.view(), &key.public_key().address());
                if mine.is_empty() {
                    run.block(Vec::new());
                    continue;
                }
                let deal = mine[pick % mine.len()];
                let tx = run
                    .net
                    .chain
                    .tx(&key, Message::Storage(storage::Msg::EndDeal { deal }));
                run.block(vec![tx]);
            }
            Step::Wait(blocks) => {
                for _ in 0..blocks {
                    run.block(Vec::new());
                }
            }
        }
    }
    for _ in 0..TAIL_BLOCKS {
        run.block(Vec::new());
    }
    for d in run.deals() {
        assert_eq!(d.status, DealStatus::Ended, "(e) deal {} ended", d.id);
    }
    assert_eq!(
        run.net.chain.balance(&storage::escrow()),
        Amount::ZERO,
        "(e) nothing stays locked"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn storage_escrow_is_conserved(steps in proptest::collection::vec(step(), 1..=STEPS_MAX)) {
        run(steps);
    }
}
