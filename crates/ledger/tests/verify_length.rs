//! Length disputes on the pure executor: two runs of the same ids that stop at different
//! lengths. The parties play the walk over the common prefix with real transactions, and the
//! ledger decides the length through the arbiter from the agreed samples. The arbiter here is
//! a table model whose every step samples one token (the leaf of step `i` is the token's
//! byte), token 0 ends the sequence; the engines' own arbiter is tested in `piazza-arbiter`.

mod common;

use common::*;
use piazza_ledger::arbitration::{Arbiter, InputVerdict, Job, LeafCheck, LengthFinding, Model};
use piazza_ledger::block::{Event, Receipt};
use piazza_ledger::compute::{self, JobParams, JobStatus};
use piazza_ledger::executor::BlockExecutor;
use piazza_ledger::module::BlockContext;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_ledger::verify::{self, Dispute, Phase, CLAIMANT, DEFENDANT};
use piazza_primitives::{Amount, Hash, SecretKey};
use piazza_trace::merkle;
use piazza_trace::trace::{Trace, TRACE_DOMAIN};
use piazza_trace::tree;

/// The end-of-sequence token of the table model.
const EOS: u8 = 0;
/// The job's `max_tokens`.
const MAX_TOKENS: u32 = 8;

fn leaf(step: u64, token: u8) -> [u8; 32] {
    merkle::leaf_hash(TRACE_DOMAIN, step, &[token])
}

fn leaves(tokens: &[u8]) -> Vec<[u8; 32]> {
    (0..).zip(tokens).map(|(i, &t)| leaf(i, t)).collect()
}

/// Evidence of the table model: each sample as `index u64 ‖ token u8 ‖ sibling count u8 ‖
/// siblings`, the tokens claimed and the proofs from the run of `proven`.
fn evidence(tokens: &[u8], proven: &[u8], common: u64) -> Vec<u8> {
    let trace = Trace::from_leaves(leaves(proven));
    let mut bytes = Vec::new();
    for step in 0..common {
        let proof = trace.proof(step as usize).unwrap();
        bytes.extend_from_slice(&step.to_le_bytes());
        bytes.push(tokens[step as usize]);
        bytes.push(proof.siblings.len() as u8);
        for sibling in &proof.siblings {
            bytes.extend_from_slice(sibling);
        }
    }
    bytes
}

/// Decides lengths as the engines' arbiter does, over the table model.
struct TableArbiter;

impl Arbiter for TableArbiter {
    fn input(&self, _: &Model, _: &Job, _: &[u8]) -> Result<Box<dyn InputVerdict>, String> {
        Err("no tokenizer in the table model".into())
    }

    fn step(
        &self,
        _: &Model,
        _: &Job,
        _: u64,
        _: u64,
        _: &Hash,
        _: &[u8],
        _: &LeafCheck<'_>,
    ) -> Result<Hash, String> {
        Err("no steps to re-execute in the table model".into())
    }

    fn length(
        &self,
        _: &Model,
        job: &Job,
        _: &Hash,
        step_counts: [u64; 2],
        evidence: &[u8],
        leaf_agreed: &LeafCheck<'_>,
    ) -> Result<LengthFinding, String> {
        let max_tokens = u64::from(job.params.max_tokens);
        let fits = step_counts.map(|count| (1..=max_tokens).contains(&count));
        let common = step_counts[0].min(step_counts[1]);
        let mut rest = evidence;
        let mut stop_steps = None;
        for step in 0..common {
            let (index, tail) = rest.split_first_chunk::<8>().ok_or("short evidence")?;
            let [token, count, tail @ ..] = tail else {
                return Err("short evidence".into());
            };
            let siblings: Vec<Hash> = tail
                .chunks_exact(32)
                .take(*count as usize)
                .map(|s| Hash(s.try_into().unwrap()))
                .collect();
            if u64::from_le_bytes(*index) != step || siblings.len() != *count as usize {
                return Err(format!("sample {step} is malformed"));
            }
            rest = &tail[32 * siblings.len()..];
            if !leaf_agreed(step, &Hash(leaf(step, *token)), &siblings) {
                return Err(format!("sample {step} is not agreed"));
            }
            if stop_steps.is_none() && (*token == EOS || step + 1 >= max_tokens) {
                stop_steps = Some(step + 1);
            }
        }
        Ok(LengthFinding { fits, stop_steps })
    }
}

/// Runs one block with the table arbiter; returns its receipts and the block hooks' events.
fn block(
    chain: &mut Chain,
    txs: Vec<piazza_ledger::tx::SignedTransaction>,
) -> (Vec<Receipt>, Vec<Event>) {
    chain.height += 1;
    let context = BlockContext {
        chain_id: "compute".into(),
        height: chain.height,
        time_ms: chain.height,
        randomness: Hash::of("r", &[&chain.height.to_le_bytes()]),
        proposer: chain.validator.public_key(),
    };
    let mut executor = BlockExecutor::begin(&chain.state, context).with_arbiter(&TableArbiter);
    for tx in &txs {
        executor.apply_tx(tx, false).unwrap();
    }
    let outcome = executor.finish();
    for (key, value) in outcome.writes {
        match value {
            Some(value) => chain.state.insert(key, value),
            None => chain.state.remove(&key),
        };
    }
    (outcome.receipts, outcome.events)
}

/// [`block`] whose transactions must all succeed; returns every event of the block.
fn block_ok(chain: &mut Chain, txs: Vec<piazza_ledger::tx::SignedTransaction>) -> Vec<Event> {
    let (receipts, mut events) = block(chain, txs);
    for receipt in receipts {
        assert_eq!(failed(&receipt), None, "{receipt:?}");
        events.extend(receipt.events);
    }
    events
}

fn dispute(chain: &Chain) -> Option<Dispute> {
    verify::dispute(&StateDelta::new(&chain.state), 0)
}

fn bonded(chain: &Chain, key: &SecretKey) -> Amount {
    let address = key.public_key().address();
    staking::bonded(&StateDelta::new(&chain.state), &address, Role::Provider)
}

/// How a length dispute ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    loser: &'static str,
    rounds: u32,
    job: JobStatus,
    provider_slashed: bool,
    bond_forfeited: bool,
}

/// A provider posts a generation of `provider` tokens, a challenger disputes it with a run of
/// `challenger` tokens (same prompt ids); both play the game truthfully and the challenger
/// sends the length evidence.
fn dispute_lengths(provider_tokens: &[u8], challenger_tokens: &[u8]) -> Outcome {
    let (provider, client, challenger) = (
        SecretKey::from_seed([1; 32]),
        SecretKey::from_seed([3; 32]),
        SecretKey::from_seed([5; 32]),
    );
    let mut chain = Chain::new(&[&provider, &client, &challenger], Default::default());
    let register = chain.tx(&provider, register("chat", 1_000));
    block_ok(&mut chain, vec![register]);
    let submit = chain.tx(
        &client,
        Message::Compute(compute::Msg::SubmitJob {
            model: "chat".into(),
            input: b"say something".to_vec(),
            params: JobParams {
                max_tokens: MAX_TOKENS,
                ..JobParams::default()
            },
            max_units: 2 * u64::from(MAX_TOKENS),
            max_price: Amount::new(50_000),
        }),
    );
    block_ok(&mut chain, vec![submit]);
    block_ok(&mut chain, vec![]);
    let mut result = post(0, b"text", provider_tokens.len() as u64);
    let Message::Compute(compute::Msg::PostResult { trace_root, .. }) = &mut result else {
        unreachable!("post builds a result")
    };
    *trace_root = Hash(Trace::from_leaves(leaves(provider_tokens)).root);
    let posted = chain.tx(&provider, result);
    block_ok(&mut chain, vec![posted]);
    let stake_before = bonded(&chain, &provider);
    let ids = Hash([7; 32]);
    let challenge = chain.tx(
        &challenger,
        Message::Verify(verify::Msg::Challenge {
            job: 0,
            trace_root: Hash(Trace::from_leaves(leaves(challenger_tokens)).root),
            step_count: challenger_tokens.len() as u64,
            ids,
        }),
    );
    block_ok(&mut chain, vec![challenge]);
    let runs = [provider_tokens, challenger_tokens];
    let keys = [&provider, &challenger];
    let mut resolved = None;
    for _ in 0..100 {
        let Some(d) = dispute(&chain) else {
            break;
        };
        let mut txs = Vec::new();
        match d.phase {
            Phase::Bisect => {
                for side in [DEFENDANT, CLAIMANT] {
                    if d.reveals[side].is_some() || !d.must_reveal(side) {
                        continue;
                    }
                    let count = runs[side].len() as u64;
                    let node = if d.round == 0 {
                        tree::top(count).unwrap()
                    } else {
                        d.node
                    };
                    let levels = tree::levels(&leaves(runs[side]));
                    let (left, right) = tree::children(&levels, node).unwrap();
                    let reveal = Message::Verify(verify::Msg::Reveal {
                        job: 0,
                        round: d.round,
                        left: Hash(left),
                        right: Hash(right),
                        step_count: count,
                        ids,
                    });
                    // One reveal per block: the other party answers the round's new state.
                    txs.push(chain.tx(keys[side], reveal));
                    break;
                }
            }
            Phase::Input => {
                let common = d.common_steps();
                let arbitrate =
                    |evidence| Message::Verify(verify::Msg::Arbitrate { job: 0, evidence });
                // A sample other than the agreed one is refused, and the dispute waits.
                let mut forged = challenger_tokens.to_vec();
                forged[common as usize - 1] ^= 0x40;
                let forged = evidence(&forged, challenger_tokens, common);
                let forged = chain.tx(&challenger, arbitrate(forged));
                let (receipts, _) = block(&mut chain, vec![forged]);
                assert_eq!(failed(&receipts[0]), Some("evidence_rejected"));
                assert_eq!(dispute(&chain).map(|d| d.phase), Some(Phase::Input));
                let honest = evidence(challenger_tokens, challenger_tokens, common);
                txs.push(chain.tx(&challenger, arbitrate(honest)));
            }
            Phase::Step { .. } => panic!("the runs agree on every common step"),
        }
        let events = block_ok(&mut chain, txs);
        if let Some(e) = events.iter().find(|e| e.kind == "verify.dispute_resolved") {
            resolved = Some((e.clone(), d.round));
        }
    }
    let (event, rounds) = resolved.expect("the dispute ended");
    let loser = match event.attribute("loser_side") {
        Some("defendant") => "provider",
        Some("claimant") => "challenger",
        other => panic!("loser {other:?}"),
    };
    let slashed = stake_before.checked_sub(bonded(&chain, &provider)).unwrap();
    let challenger_balance = chain.balance(&challenger.public_key().address());
    Outcome {
        loser,
        rounds,
        job: chain.job(0).status,
        provider_slashed: slashed == verify::Params::default().fraud_slash,
        bond_forfeited: challenger_balance < Amount::pza(10_000 - 10),
    }
}

fn provider_lost(rounds_max: u32) -> impl Fn(&Outcome) {
    move |outcome| {
        assert_eq!(outcome.loser, "provider", "{outcome:?}");
        assert_eq!(outcome.job, JobStatus::Failed, "{outcome:?}");
        assert!(outcome.provider_slashed, "{outcome:?}");
        assert!(!outcome.bond_forfeited, "{outcome:?}");
        assert!(outcome.rounds <= rounds_max, "{outcome:?}");
    }
}

fn challenger_lost(outcome: &Outcome) {
    assert_eq!(outcome.loser, "challenger", "{outcome:?}");
    assert!(!outcome.provider_slashed, "{outcome:?}");
    assert!(outcome.bond_forfeited, "{outcome:?}");
    assert!(!matches!(outcome.job, JobStatus::Failed), "{outcome:?}");
}

/// A provider that keeps generating past the end of sequence (to bill more tokens) loses and
/// is slashed, wherever the end falls and however far it runs on.
#[test]
fn a_provider_that_generates_past_the_end_of_sequence_is_slashed() {
    let cases: [(&[u8], &[u8]); 4] = [
        (&[5, 7, 9, EOS, 3, 3, 3, 3], &[5, 7, 9, EOS]),
        (&[5, EOS, 1], &[5, EOS]),
        (&[5, 7, 9, 4, 6, EOS, 2], &[5, 7, 9, 4, 6, EOS]),
        (&[9, 9, 9, 9, 9, 9, 9, EOS, 1], &[9, 9, 9, 9, 9, 9, 9, EOS]),
    ];
    for (provider, honest) in cases {
        let rounds_max = 2 + tree::rounds_max(provider.len() as u64);
        provider_lost(rounds_max)(&dispute_lengths(provider, honest));
    }
}

/// A provider that stops before the end (`stop-early`: one token fewer than allowed, no end
/// of sequence) loses to the honest, longer run.
#[test]
fn a_provider_that_stops_early_is_slashed() {
    let honest = [5, 7, 9, 4, 6, 2, 8, 1];
    for stop in 2..honest.len() {
        provider_lost(10)(&dispute_lengths(&honest[..stop], &honest));
    }
}

/// An honest provider wins against a false claim of either length, and the challenger
/// forfeits its bond.
#[test]
fn an_honest_provider_wins_against_a_false_length() {
    // The honest run ends at its end of sequence; the challenger claims it stops sooner.
    challenger_lost(&dispute_lengths(&[5, 7, 9, 4, 6, EOS], &[5, 7, 9, 4]));
    // ... or that it goes on after it.
    challenger_lost(&dispute_lengths(&[5, 7, EOS], &[5, 7, EOS, 1, 1]));
    // ... or after `max_tokens`.
    challenger_lost(&dispute_lengths(
        &[5, 7, 9, 4, 6, 2, 8, 1],
        &[5, 7, 9, 4, 6, 2, 8, 1, 1],
    ));
}

/// When both runs go past the end, neither is right and the defendant loses (a result is
/// proven wrong).
#[test]
fn when_both_lengths_are_wrong_the_provider_loses() {
    provider_lost(10)(&dispute_lengths(&[5, EOS, 1, 1, 1], &[5, EOS, 1, 1]));
}
