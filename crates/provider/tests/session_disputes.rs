//! Sessions' verification on the daemons' own players against the ledger's executor (see
//! `harness`): a provider that corrupts one step of a session answer is caught by the audit
//! draw (its reveal makes the request a job the honest auditor re-executes and challenges) or
//! by the owner's own challenge, bisected to the corrupted step, slashed by `fraud_slash`, and
//! the owner refunded exactly that request's price; honest answers of the same commit are paid.
//! An audited receipt the owner challenged first is answered by revealing it (no second job);
//! another receipt for the same request still owes its own reveal. The client's own challenge
//! is built from the receipts it kept (`piazza session challenge`: a `ReceiptBook` and
//! `session::owner_challenge`). Every fraud also costs the provider its commit's fraud slash
//! (`sessions::fraud_slash`), once.
//!
//! A provider that never reveals an audited receipt is slashed one penalty per receipt at the
//! reveal deadline: `crates/ledger/tests/sessions.rs`
//! (`every_receipt_drawn_must_be_revealed_or_the_provider_is_slashed`).

mod harness;

use harness::{fault, steps, SessionPlay, Setup, World};
use piazza_client::session::ReceiptBook;
use piazza_ledger::compute::{self, JobStatus};
use piazza_ledger::sessions::{self, SessionStatus};
use piazza_ledger::tx::Message;
use piazza_ledger::{bank, verify};
use piazza_primitives::{Address, Amount};
use piazza_provider::dispute::Fault;

/// The inputs of the session's requests.
const TEXTS: [&str; 2] = ["the square beside the tower", "bread, wine and olives"];
/// What the owner escrows: the worst case of a few requests.
const DEPOSIT: Amount = Amount::new(2_000_000);
/// The session's length, in blocks (longer than any scenario).
const EXPIRY_BLOCKS: u64 = 1_000;
/// The provider's deliberate fault on the answers it corrupts.
const CORRUPT: &str = "corrupt-op=middle";

/// A world whose provider corrupts the middle step of what it runs in disputes (its
/// session answers are corrupted or not per request, by `serve_session`).
fn world(seed: u64) -> World {
    World::new(Setup {
        seed,
        provider_fault: fault(CORRUPT),
        ..Setup::default()
    })
}

/// Balances and stakes at the start of a scenario: each party's balance with the fees it paid
/// so far added back (the same sum at the end moves only by what it earned or spent, fees
/// aside).
struct Before {
    owner: Amount,
    provider: Amount,
    provider_stake: Amount,
    auditor: Amount,
}

fn before(world: &World) -> Before {
    let (owner, auditor) = (owner(world), world.auditor.address());
    Before {
        owner: plus_fees(world, &owner),
        provider: plus_fees(world, &world.provider.address()),
        provider_stake: world.provider_stake(),
        auditor: plus_fees(world, &auditor),
    }
}

/// `address`'s balance with every fee it has paid added back.
fn plus_fees(world: &World, address: &Address) -> Amount {
    world
        .balance(address)
        .checked_add(world.sim.fees_paid(address))
        .expect("within the supply")
}

fn owner(world: &World) -> Address {
    world.user.public_key().address()
}

/// The price of request `seq` on its receipt.
fn price(session: &SessionPlay, seq: u64) -> Amount {
    session.receipts[&seq].receipt.price
}

/// Checks that dispute over `job` went the honest way: bisected to the corrupted step of
/// `text`'s run, arbitrated by the honest side's evidence, the provider the losing defendant
/// slashed by `fraud_slash`, the job failed with a refund of exactly `refund`. Returns the
/// winner's share.
fn check_fraud(world: &World, job: u64, text: &str, winner: &Address, refund: Amount) -> Amount {
    let resolved = |name| world.attribute("verify.dispute_resolved", job, name);
    assert_eq!(resolved("winner"), winner.to_string());
    assert_eq!(resolved("loser"), world.provider.address().to_string());
    assert_eq!(resolved("loser_side"), "defendant");
    assert_eq!(
        world.attribute("verify.step_found", job, "step"),
        (steps(text) / 2).to_string(),
        "bisected to the corrupted step"
    );
    assert_eq!(
        world.attribute("verify.arbitrated", job, "by"),
        winner.to_string(),
        "the honest side sends the evidence"
    );
    assert_eq!(
        world.attribute("compute.job_failed", job, "refund"),
        refund.base_units().to_string(),
        "the owner gets that request's price back"
    );
    let fraud_slash = verify::Params::default().fraud_slash;
    let to_winner = Amount::new(fraud_slash.base_units() / 2);
    assert_eq!(resolved("to_winner"), to_winner.base_units().to_string());
    to_winner
}

/// The owner closes the session and the chain runs until it is closed (its last commit's
/// window over, the unspent deposit returned).
fn close(world: &World, session: &SessionPlay) {
    let close = Message::Sessions(sessions::Msg::Close {
        session: session.id,
    });
    world
        .sim
        .submit(&world.user, vec![close])
        .expect("close admitted");
    let start = world.sim.height();
    loop {
        world.sim.block();
        let status = world
            .sim
            .read(|view| sessions::session(view, session.id))
            .expect("the session exists")
            .status;
        if status == SessionStatus::Closed {
            break;
        }
        assert!(
            world.sim.height() - start < harness::SCENARIO_BLOCKS_MAX,
            "session {} never closed",
            session.id
        );
    }
}

/// The owner challenges receipt `seq` of `commit` in the block that also draws the commit's
/// audits; returns the commit after that block.
fn challenge_in_draw_block(
    world: &mut World,
    session: &SessionPlay,
    commit: u64,
    seq: u64,
) -> sessions::CommitRecord {
    let challenge = world.owner_challenge(session, commit, seq);
    submit_in_draw_block(world, challenge, commit)
}

/// The owner sends `challenge` of a receipt of `commit` in the block that also draws the
/// commit's audits; returns the commit after that block.
fn submit_in_draw_block(world: &World, challenge: Message, commit: u64) -> sessions::CommitRecord {
    world
        .sim
        .submit(&world.user, vec![challenge])
        .expect("challenge admitted");
    world.sim.block();
    world.commit_record(commit)
}

/// After the owner challenged request `corrupt` of `commit` (now `record`): the provider
/// reveals both audited receipts (the challenged one is already a job, the honest one becomes
/// one), loses the dispute and is slashed, the owner is refunded and wins half the slash, the
/// honest answer stands and is paid.
async fn the_owner_wins(
    world: &mut World,
    start: &Before,
    session: &SessionPlay,
    (commit, record): (u64, sessions::CommitRecord),
    (honest, corrupt): (u64, u64),
) {
    assert_eq!(record.jobs.len(), 1, "the challenge made the request a job");
    let challenged = record.jobs[0];
    assert_eq!(
        world.attribute("sessions.challenged", challenged, "seq"),
        corrupt.to_string()
    );
    assert_eq!(record.audited, vec![0, 1]);
    let jobs = world.reveal_audited(session, commit);
    assert_eq!(jobs.len(), 1, "only the honest request becomes a new job");
    let honest_job = jobs[0];
    assert_eq!(
        world.attribute("sessions.request_adopted", honest_job, "seq"),
        honest.to_string()
    );
    let outcome = world.run_to_end(challenged).await;
    assert_eq!(outcome.status, JobStatus::Failed);
    let outcome = world.run_to_end(honest_job).await;
    assert_eq!(
        outcome.status,
        JobStatus::Settled,
        "the honest answer stands"
    );
    let owner = owner(world);
    let to_winner = check_fraud(world, challenged, TEXTS[1], &owner, price(session, corrupt));
    let won = Won {
        owner: to_winner,
        auditor: Amount::ZERO,
    };
    check_end(world, start, session, (honest, honest_job), won);
}

/// Nothing is left in escrow: no session, job or bond holds money.
fn check_escrows_empty(world: &World) {
    for (name, escrow) in [
        ("sessions", sessions::escrow()),
        ("compute", compute::escrow()),
        ("verify", verify::escrow()),
    ] {
        assert_eq!(
            world.sim.read(|view| bank::account(view, &escrow).balance),
            Amount::ZERO,
            "the {name} escrow is empty"
        );
    }
}

/// What the fraud's winner took (half the slash), by who won.
struct Won {
    owner: Amount,
    auditor: Amount,
}

/// Closes `session` and checks every balance to the unit, fees aside: the provider's stake
/// lost `fraud_slash` and its commit's fraud slash (once) and nothing else; the owner paid the honest request `honest` (seq, job)
/// only (the corrupted one came back by the job path, the unspent deposit at the close, a
/// challenger's bond after its win); the provider was paid for the honest answer; the
/// auditor took its pool share of the audit it attested; `won` went to the fraud's winner;
/// every escrow is empty and the books balance.
fn check_end(world: &World, start: &Before, session: &SessionPlay, honest: (u64, u64), won: Won) {
    let (seq, job) = honest;
    close(world, session);
    assert_eq!(world.sim.refusals(), Vec::<String>::new());
    let fraud_slash = verify::Params::default().fraud_slash;
    let commit_slashes: Vec<_> = world
        .sim
        .events()
        .into_iter()
        .filter(|(_, e)| e.kind == "sessions.fraud_slashed")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        commit_slashes.len(),
        1,
        "one commit slash: {commit_slashes:?}"
    );
    let number = |name: &str| -> u64 {
        commit_slashes[0]
            .attribute(name)
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    let commit = world.commit_record(number("commit"));
    let record = world
        .sim
        .read(|view| sessions::session(view, session.id))
        .expect("the session");
    let audits = world
        .sim
        .read(|view| sessions::params(view).audits_per_commit);
    let commit_slash = sessions::fraud_slash(&record, &commit, audits);
    assert_eq!(u128::from(number("penalty")), commit_slash.base_units());
    assert_eq!(
        Some(world.provider_stake()),
        start
            .provider_stake
            .checked_sub(fraud_slash)
            .and_then(|s| s.checked_sub(commit_slash)),
        "slashed by fraud_slash and the commit's fraud slash, and only that"
    );
    let settled = |name| -> Amount {
        Amount::new(
            world
                .attribute("compute.job_settled", job, name)
                .parse()
                .expect("an amount"),
        )
    };
    let owner = owner(world);
    assert_eq!(
        Some(plus_fees(world, &owner)),
        start
            .owner
            .checked_add(won.owner)
            .and_then(|o| o.checked_sub(price(session, seq))),
        "the owner pays the honest answer only"
    );
    let provider = world.provider.address();
    assert_eq!(
        Some(plus_fees(world, &provider)),
        start.provider.checked_add(settled("to_provider")),
        "the provider is paid for the honest answer"
    );
    let auditor = world.auditor.address();
    assert_eq!(
        Some(plus_fees(world, &auditor)),
        start
            .auditor
            .checked_add(won.auditor)
            .and_then(|a| a.checked_add(settled("to_auditor_pool"))),
        "the auditor's share"
    );
    check_escrows_empty(world);
    world.check_books().expect("the books balance");
}

#[tokio::test]
async fn a_corrupted_session_answer_drawn_for_audit_is_bisected_slashed_and_refunded() {
    let mut world = world(21);
    let start = before(&world);
    let mut session = world.open_session(DEPOSIT, EXPIRY_BLOCKS);
    let honest = world.serve_session(&mut session, TEXTS[0], &Fault::default());
    let corrupt = world.serve_session(&mut session, TEXTS[1], &fault(CORRUPT));
    let commit = world.commit_session(&mut session);
    // Every receipt is drawn (the world audits at 100%) in the block after the commit.
    world.sim.block();
    let record = world.commit_record(commit);
    assert_eq!(record.audited, vec![0, 1]);
    let jobs = world.reveal_audited(&session, commit);
    assert_eq!(jobs.len(), 2, "each reveal makes its request a job");
    let (honest_job, corrupt_job) = (jobs[0], jobs[1]);
    for (job, seq) in [(honest_job, honest), (corrupt_job, corrupt)] {
        assert_eq!(
            world.attribute("sessions.request_adopted", job, "seq"),
            seq.to_string()
        );
    }
    let outcome = world.run_to_end(honest_job).await;
    assert_eq!(
        outcome.status,
        JobStatus::Settled,
        "the honest answer stands"
    );
    assert!(world
        .sim
        .event("verify.dispute_opened", honest_job)
        .is_none());
    let outcome = world.run_to_end(corrupt_job).await;
    assert_eq!(outcome.status, JobStatus::Failed);
    let auditor = world.auditor.address();
    let to_winner = check_fraud(
        &world,
        corrupt_job,
        TEXTS[1],
        &auditor,
        price(&session, corrupt),
    );
    let won = Won {
        owner: Amount::ZERO,
        auditor: to_winner,
    };
    check_end(&world, &start, &session, (honest, honest_job), won);
}

#[tokio::test]
async fn a_corrupted_session_answer_the_owner_challenges_is_bisected_slashed_and_refunded() {
    let mut world = world(22);
    let start = before(&world);
    let mut session = world.open_session(DEPOSIT, EXPIRY_BLOCKS);
    let honest = world.serve_session(&mut session, TEXTS[0], &Fault::default());
    let corrupt = world.serve_session(&mut session, TEXTS[1], &fault(CORRUPT));
    let commit = world.commit_session(&mut session);
    // The owner checks the answer it got against its own run and challenges the receipt, in
    // the block that also draws the commit's audits.
    let record = challenge_in_draw_block(&mut world, &session, commit, corrupt);
    the_owner_wins(
        &mut world,
        &start,
        &session,
        (commit, record),
        (honest, corrupt),
    )
    .await;
}

#[tokio::test]
async fn a_second_receipt_for_a_challenged_request_still_owes_its_own_reveal() {
    let mut world = world(23);
    let mut session = world.open_session(DEPOSIT, EXPIRY_BLOCKS);
    let seq = world.serve_session(&mut session, TEXTS[1], &fault(CORRUPT));
    // The provider slips a second receipt for the same request (an honest run's) into its
    // commit, after the one it gave the owner.
    let given = session.receipts[&seq].receipt.clone();
    let honest = piazza_arbiter::run_job(
        &harness::minilm(),
        &piazza_arbiter::JobSpec::embedding(TEXTS[1].into()),
        harness::THREADS,
        None,
    )
    .expect("MiniLM runs");
    let second = sessions::Receipt {
        output_hash: compute::output_hash(&honest.output),
        trace_root: piazza_primitives::Hash(honest.trace_root),
        ..given.clone()
    };
    assert_ne!(second, given);
    let receipts = vec![given, second];
    let paid = session.provider.commit().expect("a paid receipt");
    let commit = Message::Sessions(sessions::Msg::Commit {
        session: session.id,
        root: sessions::receipts_root(&receipts),
        count: 2,
        units: receipts.iter().map(|r| r.units).sum(),
        voucher: paid.voucher,
    });
    world
        .sim
        .submit(&world.provider.key, vec![commit])
        .expect("commit admitted");
    world.sim.block();
    let commit = world
        .sim
        .read(|view| sessions::session_commit(view, session.id, 0))
        .expect("the commit landed");
    session.commits.insert(commit, receipts);
    let record = challenge_in_draw_block(&mut world, &session, commit, seq);
    assert_eq!(record.audited, vec![0, 1]);
    // Revealing the challenged receipt answers its audit; the second one is no job, and the
    // request is one already: it cannot be revealed.
    for index in [0, 1] {
        let reveal = world.reveal(&session, commit, index);
        world
            .sim
            .submit(&world.provider.key, vec![reveal])
            .expect("reveal admitted");
    }
    world.sim.block();
    let record = world.commit_record(commit);
    assert_eq!(record.revealed, vec![0]);
    assert_eq!(record.jobs.len(), 1, "no second job for the request");
    let refusals = world.sim.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].contains("already a job"), "{refusals:?}");
    // At the deadline the second receipt costs the provider one missed reveal.
    let deadline = record.reveal_deadline;
    while world.sim.height() < deadline {
        world.sim.block();
    }
    let missed = world
        .sim
        .events()
        .into_iter()
        .find(|(_, e)| e.kind == "sessions.reveal_missed")
        .expect("a missed reveal");
    assert_eq!(missed.1.attribute("missed"), Some("1"));
}

#[tokio::test]
async fn a_corrupted_receipt_the_client_kept_is_challenged_from_its_book_slashed_and_refunded() {
    let mut world = world(24);
    let start = before(&world);
    let mut session = world.open_session(DEPOSIT, EXPIRY_BLOCKS);
    let honest = world.serve_session(&mut session, TEXTS[0], &Fault::default());
    let corrupt = world.serve_session(&mut session, TEXTS[1], &fault(CORRUPT));
    // The client keeps each request and receipt it got, as `piazza chat` does.
    let dir = tempfile::tempdir().unwrap();
    let book = ReceiptBook::in_dir(dir.path(), session.id);
    for seq in [honest, corrupt] {
        book.record(&session.requests[&seq], &session.receipts[&seq])
            .unwrap();
    }
    let commit = world.commit_session(&mut session);
    // `piazza session challenge SESSION --seq N`: the kept request and receipt, the client's
    // own honest run of the request.
    let (request, receipt) = book
        .find(session.id, corrupt)
        .unwrap()
        .expect("the kept receipt");
    let challenge = piazza_provider::session::owner_challenge(
        &world.setup.model.loaded(),
        commit,
        &request,
        &receipt,
        1,
    )
    .expect("the client's run");
    // The harness's owner challenge (which also starts the client's player) is the same.
    assert_eq!(
        world.owner_challenge(&session, commit, corrupt),
        Message::Sessions(challenge.clone())
    );
    let record = submit_in_draw_block(&world, Message::Sessions(challenge), commit);
    the_owner_wins(
        &mut world,
        &start,
        &session,
        (commit, record),
        (honest, corrupt),
    )
    .await;
}
