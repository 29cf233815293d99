//! Escrow conservation across the `compute` and `verify` modules, as a property over random
//! block sequences on the pure executor.
//!
//! Each case registers three providers and two auditors, then runs up to 40 steps. A step is a
//! block of one to three actions — job submissions (single, or redundant on 2 or 3 providers,
//! with random units and escrow), declines by the assigned provider, results it posts (right,
//! with a different output and trace root, or with the honest trace root but a different
//! output), stray posts and attestations that must be refused, attestations by the drawn auditor,
//! challenges with a bond (by an auditor, an outsider or the client), reveals of a dispute
//! round (truthful children from the party's real trace tree, a different token-ids
//! commitment, or garbage) — or a run of empty blocks, in which deadlines pass: missed result
//! deadlines (slash, reassignment, expiry), queue timeouts, audit deadlines, silent dispute
//! rounds and arbitration deadlines. Verification parameters draw audits often and every
//! deadline is a few blocks, so short sequences reach every path.
//!
//! After every block:
//! - (a) the compute escrow holds exactly the `max_price` of every job copy still pending,
//!   assigned or posted, and exactly what the events say flowed in (submissions) minus out
//!   (settlement shares, refunds of settled, expired and failed jobs);
//! - (b) the verify escrow holds exactly the bonds of open disputes, and exactly the bonds
//!   that challenges brought in minus those their resolutions paid out;
//! - (c) the supply is the genesis supply less what the events report as burned (a dispute's
//!   loser, a disproven attestation), balances sum to the supply, and the staking pool holds
//!   exactly the stake;
//! - no job sits past a deadline: pending within its queue timeout, assigned before its result
//!   deadline, posted and unheld before its settlement height, audits and dispute rounds
//!   before their deadlines, every dispute holding its job, every settled job paid at most its
//!   escrow with the rest refunded.
//!
//! At the end, empty blocks run until every deadline (queue timeout, result deadline, audit,
//! challenge window, round and arbitration deadlines, chained group disputes) has passed:
//! (d) every job is settled, expired or failed, nothing is held, no dispute or task is open,
//! both escrows are empty and every unit escrowed left as a settlement share or a refund.
//!
//! Arbitration by re-execution (`verify::Msg::Arbitrate`) needs real models and is left out:
//! disputes here end at their deadlines (a silent party, or no evidence by the arbitration
//! deadline). `tests/verify.rs` and the CLI's devnet tests cover arbitration.

mod common;

use common::*;
use piazza_codec::Decode;
use piazza_ledger::bank::{self, Account};
use piazza_ledger::block::{Event, TxStatus};
use piazza_ledger::compute::{self, Job, JobParams, JobStatus};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, SignedTransaction};
use piazza_ledger::verify::{self, Hold, Phase};
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use piazza_trace::merkle;
use piazza_trace::trace::{Trace, TRACE_DOMAIN};
use piazza_trace::tree;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const PROVIDERS: usize = 3;
const AUDITORS: usize = 2;
/// Key indices: providers, then auditors, then the client, then an outsider who challenges.
const CLIENT: usize = PROVIDERS + AUDITORS;
const OUTSIDER: usize = CLIENT + 1;
const KEYS: usize = OUTSIDER + 1;
/// Each provider's price per unit; a job's escrow may afford only some of them.
const PRICES: [u128; PROVIDERS] = [1_000, 1_200, 1_500];
const UNITS_MAX: u64 = 8;
const STEPS_MAX: usize = 40;
/// Empty blocks the end of a case may need before every deadline has passed: see
/// [`drain_blocks`], which must stay below this.
const DRAIN_BLOCKS_MAX: u64 = 200;

fn compute_params() -> compute::Params {
    compute::Params {
        challenge_window_blocks: 2,
        job_deadline_blocks: 4,
        missed_deadline_penalty: Amount::pza(10),
        max_attempts: 2,
        queue_timeout_blocks: 4,
        ..compute::Params::default()
    }
}

fn verify_params() -> verify::Params {
    verify::Params {
        audit_rate_bps: 5_000,
        new_provider_audit_rate_bps: 8_000,
        new_provider_jobs: 3,
        audit_blocks: 3,
        round_blocks: 3,
        arbitration_blocks: 3,
        challenge_bond: Amount::pza(10),
        fraud_slash: Amount::pza(50),
        winner_share_bps: 5_000,
        ..verify::Params::default()
    }
}

/// Blocks after the last action within which every deadline has passed: each job copy waits
/// at most `max_attempts` × (queue timeout + result deadline), then one block for its audit
/// draw, the audit deadline and the challenge window; a redundant group may chain one
/// unanswered dispute per other copy, each ending at a round or arbitration deadline; a
/// dispute opened by the last action ends within the longer of those.
fn drain_blocks() -> u64 {
    let (c, v) = (compute_params(), verify_params());
    let dispute = v.round_blocks.max(v.arbitration_blocks) + 1;
    c.max_attempts as u64 * (c.queue_timeout_blocks + c.job_deadline_blocks + 1)
        + 1
        + v.audit_blocks
        + c.challenge_window_blocks
        + compute::REDUNDANCY_MAX as u64 * dispute
        + 2
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Right,
    /// A different output with the dishonest trace.
    WrongTrace,
    /// A different output under the honest trace root.
    WrongOutput,
}

#[derive(Debug, Clone, Copy)]
enum Play {
    /// The true children of the node, with the true step count and ids.
    Truth,
    /// The true children, with another token-ids commitment (sends the game to its input
    /// phase when the other side stated the true one).
    OtherIds,
    /// Children that hash to nothing the party committed to: refused.
    Garbage,
}

#[derive(Debug, Clone)]
enum Action {
    Submit {
        copies: u8,
        units: u64,
        /// Index into [`PRICES`]: the escrow affords that provider and the cheaper ones.
        afford: usize,
        extra: u64,
    },
    /// The assigned provider of a job posts.
    Post {
        pick: u16,
        outcome: Outcome,
        units: u16,
    },
    /// The assigned provider of a job declines it.
    Decline { pick: u16 },
    /// Some provider posts for some job (mostly refused).
    StrayPost { provider: usize, pick: u16 },
    /// The auditor drawn for a job attests.
    Attest { pick: u16 },
    /// Some auditor attests some job (mostly refused).
    StrayAttest { auditor: usize, pick: u16 },
    /// Someone challenges a posted job with the other trace.
    Challenge { pick: u16, by: usize },
    /// A party of an open dispute answers the current round.
    Reveal { pick: u16, side: usize, play: Play },
}

#[derive(Debug, Clone)]
enum Step {
    Block(Vec<Action>),
    Idle(u8),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Right),
        2 => Just(Outcome::WrongTrace),
        1 => Just(Outcome::WrongOutput),
    ]
}

/// Half the jobs run once, the rest on two or three providers.
fn copies() -> impl Strategy<Value = u8> {
    prop_oneof![Just(1u8), 2u8..=3]
}

fn play() -> impl Strategy<Value = Play> {
    prop_oneof![
        6 => Just(Play::Truth),
        1 => Just(Play::OtherIds),
        1 => Just(Play::Garbage),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (copies(), 1..=UNITS_MAX, 0..PROVIDERS, 0u64..20_000).prop_map(
            |(copies, units, afford, extra)| Action::Submit { copies, units, afford, extra }
        ),
        5 => (any::<u16>(), outcome(), any::<u16>())
            .prop_map(|(pick, outcome, units)| Action::Post { pick, outcome, units }),
        1 => any::<u16>().prop_map(|pick| Action::Decline { pick }),
        1 => (0..PROVIDERS, any::<u16>())
            .prop_map(|(provider, pick)| Action::StrayPost { provider, pick }),
        2 => any::<u16>().prop_map(|pick| Action::Attest { pick }),
        1 => (0..AUDITORS, any::<u16>())
            .prop_map(|(auditor, pick)| Action::StrayAttest { auditor, pick }),
        2 => (any::<u16>(), 0..4usize).prop_map(|(pick, by)| Action::Challenge { pick, by }),
        5 => (any::<u16>(), 0..2usize, play())
            .prop_map(|(pick, side, play)| Action::Reveal { pick, side, play }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::collection::vec(action(), 1..=3).prop_map(Step::Block),
        1 => (1u8..=3).prop_map(Step::Idle),
    ]
}

/// The honest and the dishonest trace of each job group, and every trace by its root.
#[derive(Default)]
struct Traces {
    by_root: BTreeMap<Hash, Vec<tree::Hash>>,
}

impl Traces {
    /// The leaves of group `group`'s honest trace, or of the dishonest one that departs from
    /// it at some step; 3 to 13 steps.
    fn leaves(group: u64, honest: bool) -> Vec<tree::Hash> {
        let n = 3 + (group % 11) as usize;
        let wrong_from = (group as usize * 7) % n;
        (0..n)
            .map(|i| {
                let wrong = !honest && i >= wrong_from;
                merkle::leaf_hash(
                    TRACE_DOMAIN,
                    i as u64,
                    &[&group.to_le_bytes()[..], &[wrong as u8]].concat(),
                )
            })
            .collect()
    }

    fn root(&mut self, group: u64, honest: bool) -> Hash {
        let leaves = Traces::leaves(group, honest);
        let root = Hash(Trace::from_leaves(leaves.clone()).root);
        self.by_root.insert(root, leaves);
        root
    }

    /// The token-ids commitment every honest run of `group` states.
    fn ids(group: u64) -> Hash {
        Hash::of("ids", &[&group.to_le_bytes()])
    }
}

fn output(outcome: Outcome, group: u64) -> Vec<u8> {
    let kind = match outcome {
        Outcome::Right => "right",
        Outcome::WrongTrace => "wrong",
        Outcome::WrongOutput => "odd",
    };
    format!("{kind}-{group}").into_bytes()
}

fn base(amount: Amount) -> u128 {
    amount.base_units()
}

fn number(event: &Event, key: &str) -> u128 {
    event
        .attribute(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in {event:?}"))
}

/// The flows the events report, and the burns.
#[derive(Default, Debug)]
struct Flows {
    escrow_in: u128,
    escrow_out: u128,
    bonds_in: u128,
    bonds_out: u128,
    burned: u128,
    /// Open disputes a challenger (not a redundant copy's provider) brought, by job.
    challenged: BTreeSet<u64>,
}

struct World {
    chain: Chain,
    keys: Vec<SecretKey>,
    traces: Traces,
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
        let mut txs = Vec::new();
        for (i, price) in PRICES.iter().enumerate() {
            txs.push(chain.tx(&keys[i], register("embed", *price)));
        }
        for key in &keys[PROVIDERS..PROVIDERS + AUDITORS] {
            txs.push(chain.tx(
                key,
                Message::Verify(verify::Msg::RegisterAuditor {
                    models: vec!["embed".into()],
                    stake: Amount::pza(200),
                }),
            ));
        }
        let (receipts, _) = chain.block(txs);
        for r in &receipts {
            assert_eq!(failed(r), None, "setup: {r:?}");
        }
        let genesis_supply = base(bank::supply(&StateDelta::new(&chain.state)));
        World {
            chain,
            keys,
            traces: Traces::default(),
            flows: Flows::default(),
            genesis_supply,
        }
    }

    fn address(&self, index: usize) -> Address {
        self.keys[index].public_key().address()
    }

    fn key_of(&self, address: &Address) -> Option<usize> {
        (0..KEYS).find(|i| self.address(*i) == *address)
    }

    fn is_provider(&self, address: &Address) -> bool {
        self.key_of(address).is_some_and(|i| i < PROVIDERS)
    }

    fn jobs(&self) -> Vec<Job> {
        let view = StateDelta::new(&self.chain.state);
        (0..).map_while(|id| compute::job(&view, id)).collect()
    }

    fn hold(&self, id: u64) -> Option<Hold> {
        verify::hold(&StateDelta::new(&self.chain.state), id)
    }

    fn dispute(&self, id: u64) -> Option<verify::Dispute> {
        verify::dispute(&StateDelta::new(&self.chain.state), id)
    }

    fn balance(&self, address: &Address) -> u128 {
        base(self.chain.balance(address))
    }

    /// The transaction an action sends, resolved against the state before the block; `None`
    /// when there is nothing to act on.
    fn tx(&mut self, action: &Action) -> Option<SignedTransaction> {
        let jobs = self.jobs();
        let nth = |list: &[&Job], pick: u16| -> Option<Job> {
            (!list.is_empty()).then(|| list[pick as usize % list.len()].clone())
        };
        let (key, message) = match *action {
            Action::Submit {
                copies,
                units,
                afford,
                extra,
            } => {
                let price = Amount::new(units as u128 * PRICES[afford] + extra as u128);
                let message = Message::Compute(compute::Msg::SubmitJob {
                    model: "embed".into(),
                    input: format!("input-{}", jobs.len()).into_bytes(),
                    params: JobParams {
                        redundancy: copies,
                        ..JobParams::default()
                    },
                    max_units: units,
                    max_price: price,
                });
                (CLIENT, message)
            }
            Action::Post {
                pick,
                outcome,
                units,
            } => {
                let assigned: Vec<&Job> = jobs
                    .iter()
                    .filter(|j| matches!(j.status, JobStatus::Assigned { .. }))
                    .collect();
                let job = nth(&assigned, pick)?;
                let provider = self.key_of(&job.provider()?)?;
                let honest = !matches!(outcome, Outcome::WrongTrace);
                let trace_root = self.traces.root(job.group, honest);
                let output = output(outcome, job.group);
                let message = Message::Compute(compute::Msg::PostResult {
                    job: job.id,
                    output_hash: compute::output_hash(&output),
                    output,
                    trace_root,
                    work_units: 1 + units as u64 % job.max_units,
                    input_units: 0,
                });
                (provider, message)
            }
            Action::Decline { pick } => {
                let assigned: Vec<&Job> = jobs
                    .iter()
                    .filter(|j| matches!(j.status, JobStatus::Assigned { .. }))
                    .collect();
                let job = nth(&assigned, pick)?;
                let provider = self.key_of(&job.provider()?)?;
                let message = Message::Compute(compute::Msg::DeclineJob {
                    job: job.id,
                    reason: "cannot serve".into(),
                });
                (provider, message)
            }
            Action::StrayPost { provider, pick } => {
                let all: Vec<&Job> = jobs.iter().collect();
                let job = nth(&all, pick)?;
                (provider, post(job.id, b"stray", 1))
            }
            Action::Attest { pick } => {
                let audited: Vec<(u64, Address)> = jobs
                    .iter()
                    .filter_map(|j| match self.hold(j.id) {
                        Some(Hold::Audit { auditor, .. }) => Some((j.id, auditor)),
                        _ => None,
                    })
                    .collect();
                if audited.is_empty() {
                    return None;
                }
                let (job, auditor) = audited[pick as usize % audited.len()];
                let key = self.key_of(&auditor)?;
                (key, Message::Verify(verify::Msg::Attest { job }))
            }
            Action::StrayAttest { auditor, pick } => {
                let all: Vec<&Job> = jobs.iter().collect();
                let job = nth(&all, pick)?;
                (
                    PROVIDERS + auditor,
                    Message::Verify(verify::Msg::Attest { job: job.id }),
                )
            }
            Action::Challenge { pick, by } => {
                let posted: Vec<&Job> = jobs
                    .iter()
                    .filter(|j| matches!(j.status, JobStatus::Posted { .. }))
                    .collect();
                let job = nth(&posted, pick)?;
                let honest_root = self.traces.root(job.group, true);
                let posted_root = job.result.as_ref()?.trace_root;
                // The challenger claims the other trace: honest against a wrong trace, a
                // false claim against an honest one.
                let claim = self.traces.root(job.group, posted_root != honest_root);
                let sender = match by {
                    0 | 1 => PROVIDERS + by,
                    2 => OUTSIDER,
                    _ => CLIENT,
                };
                let message = Message::Verify(verify::Msg::Challenge {
                    job: job.id,
                    trace_root: claim,
                    step_count: Traces::leaves(job.group, true).len() as u64,
                    ids: Traces::ids(job.group),
                });
                (sender, message)
            }
            Action::Reveal { pick, side, play } => {
                let open: Vec<verify::Dispute> =
                    jobs.iter().filter_map(|j| self.dispute(j.id)).collect();
                if open.is_empty() {
                    return None;
                }
                let d = &open[pick as usize % open.len()];
                // The chosen side, unless it already answered this round.
                let side = if d.reveals[side].is_some() {
                    1 - side
                } else {
                    side
                };
                let party = &d.parties[side];
                let sender = self.key_of(&party.address)?;
                let leaves = self.traces.by_root.get(&party.root)?.clone();
                let count = leaves.len() as u64;
                let node = if d.round == 0 {
                    tree::top(count)?
                } else {
                    d.node
                };
                let (left, right) = tree::children(&tree::levels(&leaves), node)
                    .map(|(l, r)| (Hash(l), Hash(r)))
                    .unwrap_or((Hash::ZERO, Hash::ZERO));
                let group = jobs[party.job as usize].group;
                let (left, right, ids) = match play {
                    Play::Truth => (left, right, Traces::ids(group)),
                    Play::OtherIds => (left, right, Hash([0xab; 32])),
                    Play::Garbage => (Hash([pick as u8; 32]), right, Traces::ids(group)),
                };
                let message = Message::Verify(verify::Msg::Reveal {
                    job: d.job,
                    round: d.round,
                    left,
                    right,
                    step_count: count,
                    ids,
                });
                (sender, message)
            }
        };
        Some(self.chain.tx(&self.keys[key], message))
    }

    /// Runs one block and checks every invariant after it.
    fn block(&mut self, txs: Vec<SignedTransaction>) -> Result<(), TestCaseError> {
        let (receipts, block_events) = self.chain.block(txs);
        let events: Vec<Event> = receipts
            .iter()
            .filter(|r| r.status == TxStatus::Ok)
            .flat_map(|r| r.events.iter().cloned())
            .chain(block_events)
            .collect();
        for r in receipts.iter().filter(|r| r.status != TxStatus::Ok) {
            prop_assert!(
                r.events.is_empty(),
                "a failed transaction emits nothing: {r:?}"
            );
        }
        self.account(&events)?;
        self.check()
    }

    /// Follows the escrow flows and burns the events report.
    fn account(&mut self, events: &[Event]) -> Result<(), TestCaseError> {
        let v = verify_params();
        let bond = base(v.challenge_bond);
        for e in events {
            let job = || -> u64 { number(e, "job") as u64 };
            // Every burn is reported: a dispute's loser, a disproven attestation.
            if e.attribute("burned").is_some() {
                self.flows.burned += number(e, "burned");
            }
            match e.kind.as_str() {
                "compute.job_submitted" => self.flows.escrow_in += number(e, "escrow"),
                "compute.job_settled" => {
                    let shares = [
                        "to_provider",
                        "to_model_owner",
                        "to_auditor_pool",
                        "to_treasury",
                    ]
                    .map(|k| number(e, k));
                    prop_assert_eq!(shares.iter().sum::<u128>(), number(e, "price"));
                    self.flows.escrow_out += number(e, "price") + number(e, "refund");
                }
                "compute.job_expired" | "compute.job_failed" => {
                    self.flows.escrow_out += number(e, "refund")
                }
                "verify.dispute_opened" => {
                    let claimant: Address = e
                        .attribute("claimant")
                        .and_then(|a| a.parse().ok())
                        .expect("a claimant address");
                    if !self.is_provider(&claimant) {
                        prop_assert!(self.flows.challenged.insert(job()), "one dispute per job");
                        self.flows.bonds_in += bond;
                    }
                }
                "verify.dispute_resolved" => {
                    let (to_winner, burned) = (number(e, "to_winner"), number(e, "burned"));
                    let challenged = self.flows.challenged.remove(&job());
                    if challenged {
                        // The bond leaves the escrow: forfeited or given back.
                        self.flows.bonds_out += bond;
                    }
                    match e.attribute("loser_side") {
                        Some("claimant") if challenged => {
                            prop_assert_eq!(to_winner + burned, bond, "a forfeited bond: {:?}", e)
                        }
                        _ => prop_assert!(
                            to_winner + burned <= base(v.fraud_slash),
                            "a slash is at most fraud_slash: {:?}",
                            e
                        ),
                    }
                }
                "verify.dispute_drawn" => prop_assert!(false, "no arbitration, no draw: {:?}", e),
                _ => {}
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let view = StateDelta::new(&self.chain.state);
        let (c, v) = (compute_params(), verify_params());
        let height = self.chain.height;
        let jobs = self.jobs();

        // (a) The compute escrow: open job copies, and the flows.
        let open_escrow: u128 = jobs
            .iter()
            .filter(|j| {
                matches!(
                    j.status,
                    JobStatus::Pending | JobStatus::Assigned { .. } | JobStatus::Posted { .. }
                )
            })
            .map(|j| base(j.max_price))
            .sum();
        let escrow = self.balance(&compute::escrow());
        prop_assert_eq!(escrow, open_escrow, "compute escrow = open jobs' max_price");
        prop_assert_eq!(
            escrow,
            self.flows.escrow_in - self.flows.escrow_out,
            "compute escrow = submitted - paid out"
        );

        // (b) The verify escrow: bonds of open disputes, and the flows.
        let disputes: Vec<verify::Dispute> =
            jobs.iter().filter_map(|j| self.dispute(j.id)).collect();
        let bonds: u128 = disputes
            .iter()
            .flat_map(|d| d.parties.iter())
            .filter(|p| !p.is_provider)
            .map(|p| base(p.bond))
            .sum();
        let verify_escrow = self.balance(&verify::escrow());
        prop_assert_eq!(verify_escrow, bonds, "verify escrow = open disputes' bonds");
        prop_assert_eq!(
            verify_escrow,
            self.flows.bonds_in - self.flows.bonds_out,
            "verify escrow = bonds in - bonds out"
        );
        let challenged: BTreeSet<u64> = disputes
            .iter()
            .filter(|d| !d.parties[verify::CLAIMANT].is_provider)
            .map(|d| d.job)
            .collect();
        prop_assert_eq!(&challenged, &self.flows.challenged);

        // (c) Supply: only reported burns destroy tokens; balances and stake are backed.
        let supply = base(bank::supply(&view));
        prop_assert_eq!(
            supply,
            self.genesis_supply - self.flows.burned,
            "supply = genesis - burned"
        );
        let mut sum = 0u128;
        for (_, bytes) in self
            .chain
            .state
            .range(b"bank/account/".to_vec()..b"bank/account0".to_vec())
        {
            sum += Account::from_bytes(bytes)
                .expect("an account decodes")
                .balance
                .base_units();
        }
        prop_assert_eq!(sum, supply, "balances sum to the supply");
        let mut stakers: Vec<Address> = (0..KEYS).map(|i| self.address(i)).collect();
        stakers.push(self.chain.validator.public_key().address());
        let staked: u128 = stakers
            .iter()
            .map(|a| {
                Role::ALL
                    .iter()
                    .map(|role| base(staking::bonded(&view, a, *role)))
                    .sum::<u128>()
                    + base(staking::unbonding(&view, a))
            })
            .sum();
        prop_assert_eq!(
            self.balance(&staking::pool()),
            staked,
            "the pool holds the stake"
        );

        // Nothing sits past a deadline.
        for job in &jobs {
            let hold = self.hold(job.id);
            let in_dispute = disputes
                .iter()
                .any(|d| d.parties.iter().any(|p| p.job == job.id) || d.job == job.id);
            match &job.status {
                JobStatus::Pending => {
                    prop_assert!(
                        height < job.queued_height + c.queue_timeout_blocks,
                        "job {} pending past its queue timeout at {height}: {job:?}",
                        job.id
                    );
                    // A job declined by its last allowed provider waits one block, then
                    // expires at the next assignment.
                    prop_assert!(job.missed.len() <= c.max_attempts as usize);
                    prop_assert_eq!(hold, None);
                }
                JobStatus::Assigned {
                    deadline_height, ..
                } => {
                    prop_assert!(
                        *deadline_height > height,
                        "job {} assigned past its deadline: {job:?}",
                        job.id
                    );
                    prop_assert_eq!(hold, None);
                }
                JobStatus::Posted { settle_height, .. } => match hold {
                    None => prop_assert!(
                        *settle_height > height,
                        "job {} posted, unheld and past its settlement at {height}: {job:?}",
                        job.id
                    ),
                    Some(Hold::Audit { deadline, .. }) => {
                        prop_assert!(!job.is_redundant());
                        prop_assert!(
                            deadline > height,
                            "audit of job {} past its deadline",
                            job.id
                        )
                    }
                    Some(Hold::Dispute) => {
                        let d = self.dispute(job.id);
                        prop_assert!(
                            d.is_some(),
                            "job {} held for a dispute that is gone",
                            job.id
                        );
                    }
                    Some(Hold::Group) => prop_assert!(job.is_redundant()),
                },
                JobStatus::Settled => {
                    let receipt = job.receipt.as_ref().expect("a settled job has a receipt");
                    prop_assert!(receipt.price <= job.max_price);
                    prop_assert_eq!(
                        base(receipt.price) + base(receipt.refund),
                        base(job.max_price),
                        "a settlement pays out the whole escrow"
                    );
                    prop_assert!(hold.is_none() || in_dispute, "settled job {} held", job.id);
                }
                JobStatus::Expired | JobStatus::Failed => {
                    // A failed claimant copy keeps its group hold until its other disputes end.
                    prop_assert!(
                        hold.is_none() || in_dispute,
                        "ended job {} held with no dispute: {hold:?}",
                        job.id
                    );
                }
            }
        }
        for d in &disputes {
            prop_assert!(
                d.deadline > height,
                "dispute on job {} past its deadline",
                d.job
            );
            prop_assert_eq!(self.hold(d.job), Some(Hold::Dispute));
            let status = &jobs[d.job as usize].status;
            prop_assert!(
                matches!(status, JobStatus::Posted { .. }),
                "a disputed job is posted, not {:?}",
                status
            );
            let phase_deadline = match d.phase {
                Phase::Bisect => v.round_blocks,
                _ => v.arbitration_blocks,
            };
            prop_assert!(d.deadline <= height + phase_deadline);
        }
        Ok(())
    }

    /// (d) Every job ended, nothing held or open, both escrows empty, every unit escrowed
    /// accounted for.
    fn check_ended(&self) -> Result<(), TestCaseError> {
        let view = StateDelta::new(&self.chain.state);
        let jobs = self.jobs();
        let mut paid_out = 0u128;
        for job in &jobs {
            prop_assert!(
                matches!(
                    job.status,
                    JobStatus::Settled | JobStatus::Expired | JobStatus::Failed
                ),
                "job {} still open: {job:?}",
                job.id
            );
            prop_assert_eq!(self.hold(job.id), None, "job {} still held", job.id);
            prop_assert!(
                !compute::is_held(&view, job.id),
                "job {} still held by compute",
                job.id
            );
            prop_assert!(self.dispute(job.id).is_none());
            paid_out += match &job.receipt {
                Some(r) if job.status == JobStatus::Settled => base(r.price) + base(r.refund),
                _ => base(job.max_price),
            };
        }
        for i in 0..KEYS {
            prop_assert!(
                verify::tasks(&view, &self.address(i)).is_empty(),
                "tasks left"
            );
            if i < PROVIDERS {
                prop_assert!(compute::assigned_jobs(&view, &self.address(i)).is_empty());
            }
        }
        prop_assert_eq!(self.balance(&compute::escrow()), 0);
        prop_assert_eq!(self.balance(&verify::escrow()), 0);
        prop_assert_eq!(
            paid_out,
            self.flows.escrow_in,
            "escrowed = settled + refunded"
        );
        prop_assert_eq!(self.flows.escrow_in, self.flows.escrow_out);
        prop_assert_eq!(self.flows.bonds_in, self.flows.bonds_out);
        prop_assert!(self.flows.challenged.is_empty());
        Ok(())
    }

    /// Whether a job has ended: settled, expired or failed, and not held.
    fn ended(&self, job: &Job) -> bool {
        matches!(
            job.status,
            JobStatus::Settled | JobStatus::Expired | JobStatus::Failed
        ) && self.hold(job.id).is_none()
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
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
    let last = world.chain.height;
    for _ in 0..drain_blocks() {
        world.block(Vec::new())?;
    }
    let open: Vec<(u64, String, Option<Hold>)> = world
        .jobs()
        .iter()
        .filter(|j| !world.ended(j))
        .map(|j| (j.id, format!("{:?}", j.status), world.hold(j.id)))
        .collect();
    prop_assert!(
        open.is_empty(),
        "not everything ended {} blocks after the last action (height {last}); open: {open:?}",
        drain_blocks()
    );
    world.check_ended()
}

#[test]
fn the_drain_covers_every_deadline() {
    assert!(drain_blocks() < DRAIN_BLOCKS_MAX);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn escrow_is_conserved_across_compute_and_verify(
        steps in proptest::collection::vec(step(), 1..=STEPS_MAX)
    ) {
        run(steps)?;
    }
}

/// The property's reach: over a fixed set of sequences, the paths it is meant to exercise are
/// taken (so a change that made, say, audits never happen would not pass silently).
#[test]
fn the_sequences_reach_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let strategy = proptest::collection::vec(step(), STEPS_MAX..=STEPS_MAX);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..32 {
        let steps = strategy.new_tree(&mut runner).unwrap().current();
        let mut world = World::new();
        let mut record = |world: &mut World, txs: Vec<SignedTransaction>| {
            let (receipts, events) = world.chain.block(txs);
            for e in receipts.iter().flat_map(|r| r.events.iter()).chain(&events) {
                let key = match e.kind.as_str() {
                    "verify.dispute_resolved" => format!(
                        "{} ({}, {} lost)",
                        e.kind,
                        e.attribute("reason").unwrap_or_default(),
                        e.attribute("loser_side").unwrap_or_default()
                    ),
                    "verify.dispute_opened" => {
                        let claimant: Address = e
                            .attribute("claimant")
                            .and_then(|a| a.parse().ok())
                            .expect("a claimant address");
                        let by = if world.is_provider(&claimant) {
                            "a copy"
                        } else {
                            "a challenge"
                        };
                        format!("{} (by {by})", e.kind)
                    }
                    kind => kind.to_string(),
                };
                *seen.entry(key).or_default() += 1;
            }
        };
        for step in steps {
            match step {
                Step::Block(actions) => {
                    let txs = actions.iter().filter_map(|a| world.tx(a)).collect();
                    record(&mut world, txs);
                }
                Step::Idle(n) => (0..n).for_each(|_| record(&mut world, Vec::new())),
            }
        }
        for _ in 0..drain_blocks() {
            record(&mut world, Vec::new());
        }
    }
    for kind in [
        "compute.job_settled",
        "compute.job_expired",
        "compute.job_failed",
        "compute.deadline_missed",
        "compute.job_declined",
        "verify.audit_assigned",
        "verify.audit_missed",
        "verify.attested",
        "verify.attestation_disproven",
        "verify.group_agreed",
        "verify.dispute_opened (by a copy)",
        "verify.dispute_opened (by a challenge)",
        "verify.revealed",
        "verify.input_disputed",
        "verify.step_found",
        "verify.dispute_resolved (silent in a round, defendant lost)",
        "verify.dispute_resolved (silent in a round, claimant lost)",
        "verify.dispute_resolved (no evidence by the arbitration deadline, claimant lost)",
    ] {
        assert!(seen.contains_key(kind), "no {kind} in {seen:#?}");
    }
}

/// A change made to the state behind the executor's back.
type Tamper = Box<dyn Fn(&mut StateDelta<'_>)>;

/// The checks are not vacuous: a unit moved out of an escrow, a bond that appears from
/// nowhere, a silent burn, and a job left past its deadline are each caught.
#[test]
fn the_checks_catch_a_leak() {
    let mut world = World::new();
    let submit = Action::Submit {
        copies: 1,
        units: 4,
        afford: PROVIDERS - 1,
        extra: 0,
    };
    let tx = world.tx(&submit).expect("a submission");
    world.block(vec![tx]).expect("a clean block");
    world.block(Vec::new()).expect("the job is assigned");
    let (client, job) = (world.address(CLIENT), world.jobs()[0].clone());
    assert!(matches!(job.status, JobStatus::Assigned { .. }));
    let tamperings: Vec<(&str, Tamper)> = vec![
        (
            "escrow leak",
            Box::new(move |s| {
                bank::transfer(s, &compute::escrow(), &client, Amount::new(1)).unwrap()
            }),
        ),
        (
            "bond from nowhere",
            Box::new(move |s| {
                bank::transfer(s, &client, &verify::escrow(), Amount::new(1)).unwrap()
            }),
        ),
        (
            "silent burn",
            Box::new(move |s| bank::burn(s, &client, Amount::new(1)).unwrap()),
        ),
        (
            "past its deadline",
            Box::new(move |s| {
                let mut stale = job.clone();
                let JobStatus::Assigned { provider, .. } = stale.status else {
                    unreachable!()
                };
                stale.status = JobStatus::Assigned {
                    provider,
                    deadline_height: 1,
                };
                s.put(compute::state_key::job(stale.id), &stale);
            }),
        ),
    ];
    for (name, tamper) in tamperings {
        let clean = world.chain.state.clone();
        let writes = {
            let mut delta = StateDelta::new(&clean);
            tamper(&mut delta);
            delta.into_writes()
        };
        for (k, v) in writes {
            match v {
                Some(v) => world.chain.state.insert(k, v),
                None => world.chain.state.remove(&k),
            };
        }
        assert!(world.check().is_err(), "{name} went unnoticed");
        world.chain.state = clean;
        assert!(world.check().is_ok(), "the clean state passes");
    }
}

/// A redundant group on three providers with three different results: the two copies that
/// differ from the reference (the lowest id, on a tie) each dispute it. The first defendant
/// answers round 0 and the reference stays silent, so the reference fails; the second
/// defendant stays silent and fails too. The first defendant's copy is then the group's only
/// result and must settle (or at least end): its escrow must not stay held.
#[test]
fn a_group_whose_reference_and_other_copy_fail_settles_the_survivor() {
    let mut world = World::new();
    let submit = Action::Submit {
        copies: 3,
        units: 2,
        afford: PROVIDERS - 1,
        extra: 0,
    };
    let tx = world.tx(&submit).expect("a submission");
    world.block(vec![tx]).unwrap();
    world.block(Vec::new()).unwrap();
    let group: Vec<Job> = world.jobs();
    assert!(group
        .iter()
        .all(|j| matches!(j.status, JobStatus::Assigned { .. })));
    let mut txs = Vec::new();
    for (job, outcome) in
        group
            .iter()
            .zip([Outcome::WrongOutput, Outcome::Right, Outcome::WrongTrace])
    {
        let provider = world.key_of(&job.provider().unwrap()).unwrap();
        let output = output(outcome, job.group);
        let trace_root = world
            .traces
            .root(job.group, !matches!(outcome, Outcome::WrongTrace));
        let message = Message::Compute(compute::Msg::PostResult {
            job: job.id,
            output_hash: compute::output_hash(&output),
            output,
            trace_root,
            work_units: 2,
            input_units: 0,
        });
        txs.push(world.chain.tx(&world.keys[provider].clone(), message));
    }
    world.block(txs).unwrap();
    // The next block compares the group and opens the disputes.
    world.block(Vec::new()).unwrap();
    let (reference, survivor, silent) = (group[0].id, group[1].id, group[2].id);
    assert!(world.dispute(survivor).is_some() && world.dispute(silent).is_some());
    // Only the survivor answers round 0 of its dispute.
    let reveal = Action::Reveal {
        pick: 0,
        side: verify::DEFENDANT,
        play: Play::Truth,
    };
    let tx = world.tx(&reveal).expect("a reveal");
    world.block(vec![tx]).unwrap();
    for _ in 0..drain_blocks() {
        world.block(Vec::new()).unwrap();
    }
    let jobs = world.jobs();
    assert_eq!(jobs[reference as usize].status, JobStatus::Failed);
    assert_eq!(jobs[silent as usize].status, JobStatus::Failed);
    assert!(
        world.ended(&jobs[survivor as usize]),
        "the survivor is still {:?} with hold {:?}",
        jobs[survivor as usize].status,
        world.hold(survivor)
    );
    world.check_ended().unwrap();
}
