//! Session escrow conservation, as a property over random session histories on the pure
//! executor (modelled on `escrow.rs`).
//!
//! Each case registers two providers of `chat` and one auditor, then runs up to 30 steps. A
//! step is a block of one to three actions — sessions opened (random deposit and expiry),
//! top-ups, commits by the assigned provider (one to four receipts, vouchers signed by the
//! owner, its authorised key or a stranger, paying the receipts, going back, or paying more than
//! the deposit), reveals of drawn receipts (or none: the provider is slashed), challenges of a
//! committed receipt by the owner, closes — or a run of empty blocks.
//!
//! After every block:
//! - (a) the sessions escrow holds exactly the `deposit` of every session;
//! - (b) every session's escrowed total (open plus top-ups, from the events) equals its
//!   deposit now, plus what it released (`paid`), plus its close refund: to the unit;
//! - (c) what it released is exactly its payouts plus the prices of its requests moved into
//!   compute jobs, and every payout's fee-split shares sum to the payout;
//! - (d) the supply is the genesis supply less what the events report as burned (slashes for
//!   missed reveals and commits' fraud slashes move stake to the treasury, fees move balances
//!   to the treasury);
//! - no voucher total exceeds what its session escrowed.
//!
//! At the end, empty blocks run past every expiry, grace, window, reveal and audit deadline:
//! (e) every session is closed with nothing escrowed, every job made from a request ended
//! (settled: price and refund; failed: refunded), and the sessions, compute and verify escrows
//! are empty — nothing is locked; (f) every commit drew at most `AUDITS` receipts (all of a
//! smaller one), and every commit one of whose jobs failed paid its fraud slash exactly once.

mod common;

use common::*;
use piazza_ledger::bank;
use piazza_ledger::block::{Event, TxStatus};
use piazza_ledger::compute::{self, JobParams, JobStatus};
use piazza_ledger::sessions::{
    self, prove_receipt, receipts_root, Receipt, Request, Session, SessionStatus, Voucher,
};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, SignedTransaction};
use piazza_ledger::verify;
use piazza_primitives::{Amount, Hash, SecretKey};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::collections::BTreeMap;

/// Key indices: providers, the auditor, the clients, a stranger.
const PROVIDERS: usize = 2;
const AUDITOR: usize = PROVIDERS;
const CLIENTS: [usize; 2] = [AUDITOR + 1, AUDITOR + 2];
const STRANGER: usize = AUDITOR + 3;
const KEYS: usize = STRANGER + 1;
const PRICES: [u128; PROVIDERS] = [1_000, 1_500];
const MAX_PRICE: u128 = 2_000;
const STEPS_MAX: usize = 30;
const EXPIRY_BLOCKS_MAX: u64 = 30;
/// Receipts drawn per commit: fewer than a commit's most receipts, so draws pick among them.
const AUDITS: u64 = 2;

fn sessions_params() -> sessions::Params {
    sessions::Params {
        audits_per_commit: AUDITS,
        ..sessions::Params::default()
    }
}

fn compute_params() -> compute::Params {
    compute::Params {
        challenge_window_blocks: 2,
        ..compute::Params::default()
    }
}

fn verify_params() -> verify::Params {
    verify::Params {
        audit_rate_bps: 5_000,
        new_provider_audit_rate_bps: 5_000,
        audit_blocks: 3,
        round_blocks: 3,
        arbitration_blocks: 3,
        ..verify::Params::default()
    }
}

/// Blocks after the last action within which every session has closed and every job made
/// from a request has ended: expiry, the closing grace, a commit's window, its reveal deadline,
/// then the job's audit or dispute and its window.
fn drain_blocks() -> u64 {
    let s = sessions_params();
    let (c, v) = (compute_params(), verify_params());
    EXPIRY_BLOCKS_MAX
        + 2 * s.challenge_window_blocks
        + s.reveal_blocks
        + v.audit_blocks.max(v.round_blocks + v.arbitration_blocks)
        + c.challenge_window_blocks
        + 2 * sessions::FRAUD_CHECK_BLOCKS
        + 4
}

#[derive(Debug, Clone, Copy)]
enum Signer {
    Owner,
    Authorised,
    Stranger,
}

#[derive(Debug, Clone, Copy)]
enum Pay {
    /// The receipts' prices.
    Exact,
    /// Less than was committed before (refused).
    Back,
    /// More than the session escrowed (refused).
    OverDeposit,
}

#[derive(Debug, Clone)]
enum Action {
    Open {
        client: usize,
        deposit: u128,
        expiry: u64,
    },
    TopUp {
        pick: u16,
        amount: u128,
    },
    Commit {
        pick: u16,
        receipts: u8,
        units: u64,
        signer: Signer,
        pay: Pay,
    },
    Reveal {
        pick: u16,
    },
    Challenge {
        pick: u16,
        by_stranger: bool,
    },
    Close {
        pick: u16,
    },
}

#[derive(Debug, Clone)]
enum Step {
    Block(Vec<Action>),
    Idle(u64),
}

fn action() -> impl Strategy<Value = Action> {
    let signer = prop_oneof![
        4 => Just(Signer::Owner),
        2 => Just(Signer::Authorised),
        1 => Just(Signer::Stranger)
    ];
    let pay = prop_oneof![6 => Just(Pay::Exact), 1 => Just(Pay::Back), 1 => Just(Pay::OverDeposit)];
    prop_oneof![
        3 => (0..CLIENTS.len(), 1u128..200_000, 1..=EXPIRY_BLOCKS_MAX)
            .prop_map(|(c, deposit, expiry)| Action::Open { client: CLIENTS[c], deposit, expiry }),
        1 => (any::<u16>(), 1u128..50_000).prop_map(|(pick, amount)| Action::TopUp { pick, amount }),
        5 => (any::<u16>(), 1u8..=4, 0u64..=8, signer, pay).prop_map(
            |(pick, receipts, units, signer, pay)| Action::Commit { pick, receipts, units, signer, pay }
        ),
        3 => any::<u16>().prop_map(|pick| Action::Reveal { pick }),
        1 => (any::<u16>(), any::<bool>())
            .prop_map(|(pick, by_stranger)| Action::Challenge { pick, by_stranger }),
        1 => any::<u16>().prop_map(|pick| Action::Close { pick }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec(action(), 1..=3).prop_map(Step::Block),
        1 => (1u64..=25).prop_map(Step::Idle),
    ]
}

fn base(amount: Amount) -> u128 {
    amount.base_units()
}

fn number(event: &Event, key: &str) -> u128 {
    event
        .attribute(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{} has no number {key}: {event:?}", event.kind))
}

/// The requests and receipts behind a commit, for reveals and challenges.
struct Served {
    requests: Vec<Request>,
    receipts: Vec<Receipt>,
}

/// What the events say flowed, by session.
#[derive(Default)]
struct Flows {
    escrowed: BTreeMap<u64, u128>,
    payouts: BTreeMap<u64, u128>,
    moved: BTreeMap<u64, u128>,
    refunded: BTreeMap<u64, u128>,
    /// Jobs made from requests.
    jobs: Vec<u64>,
    /// Challenges by an owner that opened a dispute.
    challenged: usize,
    /// Fraud slashes by commit id.
    fraud_slashed: BTreeMap<u64, usize>,
    burned: u128,
}

struct World {
    chain: Chain,
    keys: Vec<SecretKey>,
    /// By commit id.
    served: BTreeMap<u64, Served>,
    flows: Flows,
    genesis_supply: u128,
}

impl World {
    fn new() -> World {
        let keys: Vec<SecretKey> = (0..KEYS)
            .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
            .collect();
        let refs: Vec<&SecretKey> = keys.iter().collect();
        let mut chain = Chain::with_verify(&refs, compute_params(), verify_params());
        // The genesis sessions section, as `init_chain` writes it.
        chain.state.insert(
            sessions::state_key::params(),
            piazza_codec::Encode::to_bytes(&sessions_params()),
        );
        let mut txs: Vec<SignedTransaction> = PRICES
            .iter()
            .enumerate()
            .map(|(i, price)| chain.tx(&keys[i], register("chat", *price)))
            .collect();
        txs.push(chain.tx(
            &keys[AUDITOR],
            Message::Verify(verify::Msg::RegisterAuditor {
                models: vec!["chat".into()],
                stake: Amount::pza(200),
            }),
        ));
        let (receipts, _) = chain.block(txs);
        for r in &receipts {
            assert_eq!(failed(r), None, "setup: {r:?}");
        }
        let genesis_supply = base(bank::supply(&StateDelta::new(&chain.state)));
        World {
            chain,
            keys,
            served: BTreeMap::new(),
            flows: Flows::default(),
            genesis_supply,
        }
    }

    fn sessions(&self) -> Vec<Session> {
        let view = StateDelta::new(&self.chain.state);
        (0..).map_while(|id| sessions::session(&view, id)).collect()
    }

    fn commits(&self) -> Vec<sessions::CommitRecord> {
        let view = StateDelta::new(&self.chain.state);
        (0..).map_while(|id| sessions::commit(&view, id)).collect()
    }

    fn key_of(&self, address: &piazza_primitives::Address) -> &SecretKey {
        self.keys
            .iter()
            .find(|k| k.public_key().address() == *address)
            .expect("every party is one of the keys")
    }

    fn pick<T: Clone>(list: &[T], pick: u16) -> Option<T> {
        (!list.is_empty()).then(|| list[pick as usize % list.len()].clone())
    }

    fn tx(&mut self, action: &Action) -> Option<SignedTransaction> {
        let all = self.sessions();
        let live: Vec<Session> = all
            .iter()
            .filter(|s| s.status != SessionStatus::Closed)
            .cloned()
            .collect();
        let (key, message) = match action {
            Action::Open {
                client,
                deposit,
                expiry,
            } => (
                *client,
                Message::Sessions(sessions::Msg::Open {
                    model: "chat".into(),
                    owner_key: self.keys[*client].public_key(),
                    // Each client authorises the other's key.
                    authorised: Some(self.keys[CLIENTS[0] + CLIENTS[1] - *client].public_key()),
                    deposit: Amount::new(*deposit),
                    max_price_per_unit: Amount::new(MAX_PRICE),
                    expiry_blocks: *expiry,
                }),
            ),
            Action::TopUp { pick, amount } => {
                let s = Self::pick(&live, *pick)?;
                (
                    self.index(&s.owner),
                    Message::Sessions(sessions::Msg::TopUp {
                        session: s.id,
                        amount: Amount::new(*amount),
                    }),
                )
            }
            Action::Commit {
                pick,
                receipts,
                units,
                signer,
                pay,
            } => {
                let with_provider: Vec<Session> = live
                    .iter()
                    .filter(|s| s.provider.is_some())
                    .cloned()
                    .collect();
                let s = Self::pick(&with_provider, *pick)?;
                let requests: Vec<Request> = (1..=u64::from(*receipts))
                    .map(|i| Request {
                        session: s.id,
                        seq: s.committed_seq + i,
                        input: format!("s{} q{}", s.id, s.committed_seq + i).into_bytes(),
                        params: JobParams::default(),
                        max_units: 8,
                    })
                    .collect();
                let receipts: Vec<Receipt> = requests
                    .iter()
                    .map(|r| Receipt {
                        session: s.id,
                        seq: r.seq,
                        input_hash: compute::input_hash(&r.input),
                        output_hash: compute::output_hash(&r.input),
                        trace_root: Hash::of("test/trace", &[&r.input]),
                        units: *units,
                        input_units: 1,
                        price: Amount::new(u128::from(*units) * MAX_PRICE / 2),
                    })
                    .collect();
                let owed: u128 = receipts.iter().map(|r| base(r.price)).sum();
                let total = match pay {
                    Pay::Exact => base(s.committed_total) + owed,
                    Pay::Back => base(s.committed_total).saturating_sub(1),
                    Pay::OverDeposit => base(s.deposit) + base(s.paid) + 1,
                };
                let signer = match signer {
                    Signer::Owner => self.key_of(&s.owner).clone(),
                    Signer::Authorised => self
                        .keys
                        .iter()
                        .find(|k| Some(k.public_key()) == s.authorised)
                        .expect("the authorised key is one of the keys")
                        .clone(),
                    Signer::Stranger => self.keys[STRANGER].clone(),
                };
                let view = StateDelta::new(&self.chain.state);
                let next: u64 = (0..).map_while(|id| sessions::commit(&view, id)).count() as u64;
                self.served.insert(
                    next,
                    Served {
                        requests,
                        receipts: receipts.clone(),
                    },
                );
                (
                    self.index(&s.provider.expect("filtered")),
                    Message::Sessions(sessions::Msg::Commit {
                        session: s.id,
                        root: receipts_root(&receipts),
                        count: receipts.len() as u64,
                        units: receipts.iter().map(|r| r.units).sum(),
                        voucher: Voucher {
                            session: s.id,
                            seq: s.committed_seq + receipts.len() as u64,
                            total: Amount::new(total),
                        }
                        .sign(&signer),
                    }),
                )
            }
            Action::Reveal { pick } => {
                let open: Vec<(u64, u64)> = self
                    .commits()
                    .iter()
                    .filter(|c| !c.audits_closed)
                    .flat_map(|c| {
                        c.audited
                            .iter()
                            .filter(|i| !c.revealed.contains(i))
                            .map(|i| (c.id, *i))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let (commit, index) = Self::pick(&open, *pick)?;
                let record = &self.commits()[commit as usize];
                let session = &all[record.session as usize];
                let served = self.served_for(record)?;
                let owner = self.key_of(&session.owner).clone();
                (
                    self.index(&record.provider),
                    Message::Sessions(sessions::Msg::Reveal {
                        session: record.session,
                        commit,
                        index,
                        receipt: Box::new(served.receipts[index as usize].clone()),
                        proof: prove_receipt(&served.receipts, index as usize).unwrap(),
                        request: Box::new(served.requests[index as usize].clone().sign(&owner)),
                    }),
                )
            }
            Action::Challenge { pick, by_stranger } => {
                let pending: Vec<sessions::CommitRecord> = self
                    .commits()
                    .into_iter()
                    .filter(|c| c.status == sessions::CommitStatus::Pending)
                    .collect();
                let record = Self::pick(&pending, *pick)?;
                let session = &all[record.session as usize];
                let served = self.served_for(&record)?;
                let index = *pick as usize % served.receipts.len();
                let owner = self.key_of(&session.owner).clone();
                let provider = self.key_of(&record.provider).clone();
                let sender = if *by_stranger {
                    STRANGER
                } else {
                    self.index(&session.owner)
                };
                (
                    sender,
                    Message::Sessions(sessions::Msg::Challenge {
                        session: record.session,
                        commit: record.id,
                        receipt: Box::new(served.receipts[index].clone().sign(&provider)),
                        request: Box::new(served.requests[index].clone().sign(&owner)),
                        trace_root: Hash([0xcc; 32]),
                        step_count: 40,
                        ids: Hash::ZERO,
                    }),
                )
            }
            Action::Close { pick } => {
                let s = Self::pick(&live, *pick)?;
                (
                    self.index(&s.owner),
                    Message::Sessions(sessions::Msg::Close { session: s.id }),
                )
            }
        };
        // A message its module refuses without state never reaches a block.
        message.check_stateless().ok()?;
        let key = self.keys[key].clone();
        Some(self.chain.tx(&key, message))
    }

    /// What the provider served for `record` (a guess made before its block that a later
    /// commit may have replaced: checked against the root).
    fn served_for(&self, record: &sessions::CommitRecord) -> Option<&Served> {
        self.served
            .get(&record.id)
            .filter(|served| receipts_root(&served.receipts) == record.root)
    }

    fn index(&self, address: &piazza_primitives::Address) -> usize {
        (0..KEYS)
            .find(|i| self.keys[*i].public_key().address() == *address)
            .expect("every party is one of the keys")
    }

    fn block(&mut self, txs: Vec<SignedTransaction>) -> Result<(), TestCaseError> {
        let (receipts, block_events) = self.chain.block(txs);
        let events: Vec<Event> = receipts
            .iter()
            .filter(|r| r.status == TxStatus::Ok)
            .flat_map(|r| r.events.iter().cloned())
            .chain(block_events)
            .collect();
        self.account(&events)?;
        self.check()
    }

    fn account(&mut self, events: &[Event]) -> Result<(), TestCaseError> {
        for e in events {
            if e.attribute("burned").is_some() {
                self.flows.burned += number(e, "burned");
            }
            let session = || number(e, "session") as u64;
            match e.kind.as_str() {
                "sessions.opened" => {
                    *self.flows.escrowed.entry(session()).or_default() += number(e, "deposit")
                }
                "sessions.topped_up" => {
                    *self.flows.escrowed.entry(session()).or_default() += number(e, "amount")
                }
                "sessions.paid" => {
                    let shares = [
                        "to_provider",
                        "to_model_owner",
                        "to_auditor_pool",
                        "to_treasury",
                    ]
                    .map(|k| number(e, k));
                    prop_assert_eq!(shares.iter().sum::<u128>(), number(e, "amount"));
                    *self.flows.payouts.entry(session()).or_default() += number(e, "amount");
                }
                "sessions.request_adopted" => {
                    *self.flows.moved.entry(session()).or_default() += number(e, "price");
                    self.flows.jobs.push(number(e, "job") as u64);
                }
                "sessions.challenged" => self.flows.challenged += 1,
                "sessions.fraud_slashed" => {
                    *self
                        .flows
                        .fraud_slashed
                        .entry(number(e, "commit") as u64)
                        .or_default() += 1
                }
                "sessions.closed" => {
                    prop_assert!(
                        self.flows
                            .refunded
                            .insert(session(), number(e, "refund"))
                            .is_none(),
                        "a session closes once"
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let view = StateDelta::new(&self.chain.state);
        let all = self.sessions();
        // (a)
        let held: u128 = all.iter().map(|s| base(s.deposit)).sum();
        prop_assert_eq!(base(self.chain.balance(&sessions::escrow())), held);
        let get = |map: &BTreeMap<u64, u128>, id: u64| map.get(&id).copied().unwrap_or(0);
        for s in &all {
            // (b)
            let refunded = get(&self.flows.refunded, s.id);
            prop_assert_eq!(
                get(&self.flows.escrowed, s.id),
                base(s.deposit) + base(s.paid) + refunded,
                "session {} escrowed = deposit + paid + refund: {:?}",
                s.id,
                s
            );
            // (c)
            prop_assert_eq!(
                base(s.paid),
                get(&self.flows.payouts, s.id) + get(&self.flows.moved, s.id),
                "session {} released = payouts + moved",
                s.id
            );
            prop_assert!(s.committed_total <= s.deposit.checked_add(s.paid).unwrap());
            if s.status == SessionStatus::Closed {
                prop_assert!(s.deposit.is_zero() && s.pending_commits == 0);
            }
        }
        // (d)
        prop_assert_eq!(
            base(bank::supply(&view)),
            self.genesis_supply - self.flows.burned,
            "supply is conserved up to reported burns"
        );
        Ok(())
    }

    /// (e) Nothing is locked.
    fn check_ended(&self) -> Result<(), TestCaseError> {
        for s in self.sessions() {
            prop_assert_eq!(
                s.status,
                SessionStatus::Closed,
                "session {} still open",
                s.id
            );
        }
        for id in &self.flows.jobs {
            let job = self.chain.job(*id);
            prop_assert!(
                matches!(job.status, JobStatus::Settled | JobStatus::Failed),
                "job {} from a request did not end: {:?}",
                id,
                job.status
            );
        }
        for escrow in [sessions::escrow(), compute::escrow(), verify::escrow()] {
            prop_assert_eq!(base(self.chain.balance(&escrow)), 0);
        }
        // (f)
        for c in self.commits() {
            prop_assert!(c.audited.len() as u64 <= AUDITS.min(c.count));
            if c.count <= AUDITS && c.audits_closed && !c.audited.is_empty() {
                prop_assert_eq!(c.audited.len() as u64, c.count);
            }
            let failed = c
                .jobs
                .iter()
                .any(|id| matches!(self.chain.job(*id).status, JobStatus::Failed));
            let missed = c.revealed.len() < c.audited.len();
            let slashes = self.flows.fraud_slashed.get(&c.id).copied().unwrap_or(0);
            prop_assert!(slashes <= 1, "commit {} slashed {} times", c.id, slashes);
            if failed && !missed {
                prop_assert_eq!(slashes, 1, "commit {} with a failed job", c.id);
                prop_assert!(c.fraud_slashed);
            }
            if missed {
                prop_assert!(c.fraud_slashed, "commit {} missed a reveal", c.id);
            }
        }
        Ok(())
    }
}

fn run(steps: Vec<Step>) -> Result<World, TestCaseError> {
    let mut world = World::new();
    world.check()?;
    for step in steps {
        match step {
            Step::Block(actions) => {
                let txs = actions.iter().filter_map(|a| world.tx(a)).collect();
                world.block(txs)?;
            }
            Step::Idle(n) => {
                for _ in 0..n {
                    world.block(Vec::new())?;
                }
            }
        }
    }
    for _ in 0..drain_blocks() {
        world.block(Vec::new())?;
    }
    world.check_ended()?;
    Ok(world)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn session_deposits_are_conserved_and_nothing_stays_locked(
        steps in proptest::collection::vec(step(), 1..=STEPS_MAX)
    ) {
        run(steps)?;
    }
}

/// The property's reach: over a fixed set of histories, payouts, reveals, missed reveals,
/// challenges and close refunds all happen (so a change that made one of them unreachable
/// would not pass silently).
#[test]
fn the_histories_reach_every_path() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(step(), 1..=STEPS_MAX);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..64 {
        let steps = strategy.new_tree(&mut runner).unwrap().current();
        let world = run(steps).unwrap();
        let commits = world.commits();
        *seen.entry("payout").or_default() += world.flows.payouts.len();
        *seen.entry("moved").or_default() += world.flows.moved.len();
        *seen.entry("refund").or_default() +=
            world.flows.refunded.values().filter(|r| **r > 0).count();
        *seen.entry("missed reveal").or_default() += commits
            .iter()
            .filter(|c| c.revealed.len() < c.audited.len())
            .count();
        *seen.entry("challenged").or_default() += world.flows.challenged;
        *seen.entry("revealed").or_default() +=
            commits.iter().filter(|c| !c.revealed.is_empty()).count();
        *seen.entry("fraud slashed").or_default() += world.flows.fraud_slashed.len();
        *seen.entry("drawn among more").or_default() += commits
            .iter()
            .filter(|c| c.count > AUDITS && !c.audited.is_empty())
            .count();
    }
    for path in [
        "payout",
        "moved",
        "refund",
        "missed reveal",
        "revealed",
        "challenged",
        "fraud slashed",
        "drawn among more",
    ] {
        assert!(
            seen.get(path).copied().unwrap_or(0) > 0,
            "no {path}: {seen:?}"
        );
    }
}

/// A change to the recorded flows (or supply) that the state does not match.
type Tamper = fn(&mut World);

/// The checks are not vacuous: a record of the flows one unit off the state is caught.
#[test]
fn the_checks_catch_a_leak() {
    let mut world = World::new();
    let open = Action::Open {
        client: CLIENTS[0],
        deposit: 50_000,
        expiry: 10,
    };
    let tx = world.tx(&open).expect("an open");
    world.block(vec![tx]).expect("a clean block");
    world.block(Vec::new()).expect("the session is assigned");
    let tamperings: [(&str, Tamper); 3] = [
        ("a deposit the events never escrowed", |w| {
            *w.flows.escrowed.get_mut(&0).unwrap() += 1
        }),
        ("a payout the session never released", |w| {
            w.flows.payouts.insert(0, 1);
        }),
        ("a unit minted or burned silently", |w| {
            w.genesis_supply += 1
        }),
    ];
    for (name, tamper) in tamperings {
        let mut tampered = World {
            chain: Chain {
                state: world.chain.state.clone(),
                height: world.chain.height,
                nonces: world.chain.nonces.clone(),
                validator: world.chain.validator.clone(),
            },
            keys: world.keys.clone(),
            served: BTreeMap::new(),
            flows: Flows {
                escrowed: world.flows.escrowed.clone(),
                ..Flows::default()
            },
            genesis_supply: world.genesis_supply,
        };
        assert!(tampered.check().is_ok(), "the clean copy passes");
        tamper(&mut tampered);
        assert!(tampered.check().is_err(), "{name} went unnoticed");
    }
}
