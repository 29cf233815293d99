//! The economics of verification, run on the pure executor over many jobs: cheating does not
//! pay at the audit rates and slashes the chain uses, and attesting without computing (the
//! verifier's dilemma) loses money while honest auditing earns. Each test prints its figures.
//!
//! Disputes here end at a round deadline (the side that knows it is wrong stays silent, which
//! loses as surely as arbitration and faster); arbitration by re-execution runs on real models
//! in the CLI's devnet tests.

mod common;

use common::*;
use piazza_ledger::compute::{self, JobStatus};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_ledger::verify::{self, Hold};
use piazza_primitives::{Amount, Hash, SecretKey};

const RIGHT_ROOT: Hash = Hash([5; 32]);
const WRONG_ROOT: Hash = Hash([6; 32]);
/// The provider's price per unit (0.001 PZA: a job pays more than the transactions it costs),
/// the units each job does and the escrow that covers its 10-unit limit.
const PRICE_PER_UNIT: u128 = 1_000_000;
const UNITS: u64 = 4;
const ESCROW: u128 = 10 * PRICE_PER_UNIT;

/// One market: a provider, a client, an auditor and (for canaries) a second identity of the
/// party that plants wrong results, which challenges what the auditor attested.
struct Market {
    chain: Chain,
    provider: SecretKey,
    client: SecretKey,
    auditor: SecretKey,
    exposer: SecretKey,
    next_job: u64,
}

#[derive(Default, Debug)]
struct Tally {
    jobs: u64,
    audits: u64,
    caught: u64,
    disproven: u64,
}

impl Market {
    fn new(params: verify::Params) -> Market {
        let keys: Vec<SecretKey> = (1..=4).map(|i| SecretKey::from_seed([i; 32])).collect();
        let mut chain = Chain::with_verify(
            &keys.iter().collect::<Vec<_>>(),
            compute::Params::default(),
            params,
        );
        // A stake deep enough to stay above the minimum through many slashes.
        let mut registration = register("embed", PRICE_PER_UNIT);
        if let Message::Compute(compute::Msg::RegisterProvider { stake, .. }) = &mut registration {
            *stake = Amount::pza(5_000);
        }
        let t1 = chain.tx(&keys[0], registration);
        let t2 = chain.tx(
            &keys[2],
            Message::Verify(verify::Msg::RegisterAuditor {
                models: vec!["embed".into()],
                stake: Amount::pza(200),
            }),
        );
        let (receipts, _) = chain.block(vec![t1, t2]);
        assert!(receipts.iter().all(|r| failed(r).is_none()), "{receipts:?}");
        let [provider, client, auditor, exposer] = keys.try_into().unwrap();
        Market {
            chain,
            provider,
            client,
            auditor,
            exposer,
            next_job: 0,
        }
    }

    /// What `key` holds: its balance and its bonded stake in every role.
    fn worth(&self, key: &SecretKey) -> i128 {
        let address = key.public_key().address();
        let view = StateDelta::new(&self.chain.state);
        let staked = [Role::Provider, Role::Auditor]
            .iter()
            .map(|role| staking::bonded(&view, &address, *role).base_units())
            .sum::<u128>();
        (self.chain.balance(&address).base_units() + staked) as i128
    }

    fn challenge(&mut self, by: &SecretKey, job: u64) {
        let message = Message::Verify(verify::Msg::Challenge {
            job,
            trace_root: RIGHT_ROOT,
            step_count: 40,
            ids: Hash([1; 32]),
        });
        let by = by.clone();
        let (r, _) = self.chain.one(&by, message);
        assert_eq!(failed(&r), None, "challenge of job {job}");
    }

    /// One job from submission to its end. `wrong`: the provider posts a wrong result (and
    /// stays silent if disputed). `lazy`: the auditor attests whatever it is given.
    /// `expose`: a wrong result the auditor attested is challenged by the exposer.
    fn run_job(&mut self, wrong: bool, lazy: bool, expose: bool, tally: &mut Tally) {
        let job = self.next_job;
        self.next_job += 1;
        tally.jobs += 1;
        let client = self.client.clone();
        let (r, _) = self
            .chain
            .one(&client, submit("embed", b"job", 10, Amount::new(ESCROW)));
        assert_eq!(failed(&r), None);
        self.chain.block(vec![]);
        let (output, root): (&[u8], Hash) = if wrong {
            (b"wrong", WRONG_ROOT)
        } else {
            (b"right", RIGHT_ROOT)
        };
        let mut message = post(job, output, UNITS);
        if let Message::Compute(compute::Msg::PostResult { trace_root, .. }) = &mut message {
            *trace_root = root;
        }
        let provider = self.provider.clone();
        let (r, _) = self.chain.one(&provider, message);
        assert_eq!(failed(&r), None);
        self.chain.block(vec![]); // the audit draw
        let view = StateDelta::new(&self.chain.state);
        if let Some(Hold::Audit { .. }) = verify::hold(&view, job) {
            tally.audits += 1;
            let auditor = self.auditor.clone();
            if wrong && !lazy {
                self.challenge(&auditor, job);
                tally.caught += 1;
            } else {
                let (r, _) = self
                    .chain
                    .one(&auditor, Message::Verify(verify::Msg::Attest { job }));
                assert_eq!(failed(&r), None);
                if wrong && expose {
                    let exposer = self.exposer.clone();
                    self.challenge(&exposer, job);
                    tally.disproven += 1;
                }
            }
        }
        // Until the job ends: settled, or failed by its lost dispute.
        for _ in 0..200 {
            match self.chain.job(job).status {
                JobStatus::Settled | JobStatus::Failed => return,
                _ => {
                    self.chain.block(vec![]);
                }
            }
        }
        panic!("job {job} never ended: {:?}", self.chain.job(job).status);
    }
}

fn pza(base_units: i128) -> f64 {
    base_units as f64 / 1e9
}

/// The protocol's rates, with short deadlines so a run stays short.
fn params() -> verify::Params {
    verify::Params {
        audit_blocks: 4,
        round_blocks: 4,
        arbitration_blocks: 4,
        // Every provider starts at the base rate; a fraud raises it (the default rule).
        new_provider_jobs: 0,
        ..verify::Params::default()
    }
}

#[test]
fn cheating_on_a_fraction_of_jobs_loses_in_expectation() {
    let p = params();
    let jobs = 200u64;
    let cheat_every = 5; // one job in five is answered with a wrong result
    let mut outcomes = Vec::new();
    for cheater in [false, true] {
        let mut market = Market::new(p.clone());
        let before = market.worth(&market.provider.clone());
        let mut tally = Tally::default();
        for i in 0..jobs {
            let wrong = cheater && i % cheat_every == 0;
            market.run_job(wrong, false, false, &mut tally);
        }
        let earned = market.worth(&market.provider.clone()) - before;
        outcomes.push((cheater, earned, tally));
    }
    let q = p.audit_rate_bps as f64 / 10_000.0;
    let price = PRICE_PER_UNIT as i128 * UNITS as i128 * 70 / 100; // the provider's 70 %
    println!(
        "audit rate {q}, fraud slash {} PZA, provider pay per job {} PZA",
        p.fraud_slash,
        pza(price)
    );
    for (cheater, earned, tally) in &outcomes {
        println!(
            "{}: {} jobs, {} audited, {} frauds caught, net {:+.6} PZA",
            if *cheater {
                "cheater (1 in 5 wrong)"
            } else {
                "honest"
            },
            tally.jobs,
            tally.audits,
            tally.caught,
            pza(*earned)
        );
    }
    // Expected value of one wrong answer: the pay it would have earned, against being audited
    // with probability q and losing the slash (and the pay).
    let per_wrong = (1.0 - q) * pza(price) - q * p.fraud_slash.base_units() as f64 / 1e9;
    println!("expected gain of one wrong answer at rate {q}: {per_wrong:+.6} PZA (before the compute it saves)");
    let (_, honest, _) = &outcomes[0];
    let (_, cheater, tally) = &outcomes[1];
    assert!(*honest > 0, "an honest provider earns");
    assert!(
        tally.caught > 0,
        "with {} wrong answers some were audited",
        jobs / cheat_every
    );
    assert!(cheater < honest, "cheating pays less than honesty");
    assert!(
        *cheater < 0,
        "a caught cheater loses more than it ever earned"
    );
    // Cheating breaks even only if the compute it saves per wrong answer exceeds this.
    assert!(per_wrong < 0.0);
}

#[test]
fn a_lazy_auditor_loses_to_canaries_and_an_honest_one_earns() {
    let p = verify::Params {
        // Every result audited, so each canary meets the auditor.
        new_provider_audit_rate_bps: 10_000,
        audit_rate_bps: 10_000,
        ..params()
    };
    let jobs = 100u64;
    let canary_every = 10; // the planter answers one job in ten wrongly, on purpose
    let mut rows = Vec::new();
    for lazy in [false, true] {
        let mut market = Market::new(p.clone());
        let auditor = market.auditor.clone();
        let planter = [
            market.provider.clone(),
            market.client.clone(),
            market.exposer.clone(),
        ];
        let auditor_before = market.worth(&auditor);
        let planter_before: i128 = planter.iter().map(|k| market.worth(k)).sum();
        let mut tally = Tally::default();
        for i in 0..jobs {
            market.run_job(i % canary_every == 0, lazy, true, &mut tally);
        }
        let auditor_net = market.worth(&auditor) - auditor_before;
        let planter_net: i128 =
            planter.iter().map(|k| market.worth(k)).sum::<i128>() - planter_before;
        let record = verify::auditor(
            &StateDelta::new(&market.chain.state),
            &auditor.public_key().address(),
        )
        .unwrap();
        rows.push((lazy, auditor_net, planter_net, tally, record.disproven));
    }
    println!(
        "lazy slash {} PZA, fraud slash {} PZA, winner share {} bps",
        p.lazy_slash, p.fraud_slash, p.winner_share_bps
    );
    for (lazy, auditor_net, planter_net, tally, disproven) in &rows {
        println!(
            "{} auditor: {} jobs audited, {} canaries caught, {} attestations disproven; auditor net {:+.6} PZA, canary planter net {:+.6} PZA",
            if *lazy { "lazy" } else { "honest" },
            tally.audits,
            tally.caught,
            disproven,
            pza(*auditor_net),
            pza(*planter_net)
        );
    }
    let (_, honest_net, planter_vs_honest, honest_tally, _) = &rows[0];
    let (_, lazy_net, planter_vs_lazy, lazy_tally, lazy_disproven) = &rows[1];
    assert_eq!(honest_tally.caught, jobs / canary_every);
    // Each disproven attestation takes `lazy_slash`; once its stake is below the minimum the
    // lazy auditor is drawn no more (its audits stop long before the run ends).
    assert!(*lazy_disproven >= 1);
    assert!(lazy_tally.audits < honest_tally.audits);
    assert!(*honest_net > 0, "honest auditing earns");
    assert!(*lazy_net < 0, "attesting without computing loses money");
    // Planting canaries pays against a lazy auditor and costs against an honest one: the
    // threat is credible exactly when auditors shirk.
    assert!(*planter_vs_lazy > 0 && *planter_vs_honest < 0);
}
