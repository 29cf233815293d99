//! The verification game end to end on real devnet processes: faulty providers are audited,
//! bisected to the step they corrupted, arbitrated by the ledger's own re-execution, slashed,
//! and their clients refunded; a false challenger loses its bond; a silent party loses by
//! timeout; a redundant job with one bad copy settles to the honest result.

use piazza_client::Client;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::*;

const MINILM: &str = "all-minilm-l6-v2";
const SMOLLM2: &str = "smollm2-135m-instruct";
const DISPUTE_WAIT: Duration = Duration::from_secs(240);

/// Every event the devnet emits, collected from its WebSocket feed.
struct Events(Arc<Mutex<Vec<Value>>>);

impl Events {
    fn follow(runtime: &tokio::runtime::Runtime, client: &Client) -> Events {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut subscription = runtime.block_on(client.subscribe("events")).unwrap();
        let sink = seen.clone();
        runtime.spawn(async move {
            while let Some(event) = subscription.next().await {
                sink.lock().unwrap().push(event);
            }
        });
        Events(seen)
    }

    /// The first event of `kind` about `job`, waiting for it.
    fn wait(&self, kind: &str, job: u64) -> Value {
        let started = Instant::now();
        loop {
            if let Some(e) = self.0.lock().unwrap().iter().find(|e| {
                e["kind"] == kind && e["attributes"]["job"].as_str() == Some(&job.to_string())
            }) {
                return e.clone();
            }
            if started.elapsed() >= DISPUTE_WAIT {
                for e in self.0.lock().unwrap().iter() {
                    if e["attributes"]["job"].as_str() == Some(&job.to_string()) {
                        eprintln!("{e}");
                    }
                }
                panic!("no {kind} for job {job}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_registered(runtime: &tokio::runtime::Runtime, client: &Client, role: &str, address: &str) {
    let address: piazza_primitives::Address = address.parse().unwrap();
    wait_until(
        &format!("{role} {address} did not register"),
        Duration::from_secs(60),
        || {
            if role == "auditor" {
                runtime
                    .block_on(client.auditor(&address))
                    .unwrap()
                    .is_some()
            } else {
                runtime
                    .block_on(client.provider(&address))
                    .unwrap()
                    .is_some()
            }
        },
    );
}

fn attr(event: &Value, name: &str) -> String {
    event["attributes"][name]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn stake_of(runtime: &tokio::runtime::Runtime, client: &Client, address: &str) -> u128 {
    runtime
        .block_on(client.provider(&address.parse().unwrap()))
        .unwrap()
        .map_or(0, |p| p.stake.parse().unwrap())
}

fn submit(devnet: &Devnet, dir: &Path, model: &str, input: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["job", "submit", "--model", model, "--input", input];
    args.extend_from_slice(extra);
    cli(devnet, dir, &args)["job"].as_u64().unwrap()
}

/// The step count and the token ids of a job on the local engine (what the provider runs).
fn local_steps(model: &str, input: &str, spec: piazza_arbiter::JobSpec) -> u64 {
    let dir = piazza_engine::models_dir();
    let loaded = if model == MINILM {
        piazza_arbiter::LoadedModel::Embedding(Arc::new(
            piazza_engine::Embedder::load(dir.join("minilm")).unwrap(),
        ))
    } else {
        piazza_arbiter::LoadedModel::Generation(Arc::new(
            piazza_llm::Generator::load(
                dir.join("smollm2")
                    .join(piazza_provider::models::SMOLLM2_FILE),
            )
            .unwrap(),
        ))
    };
    let _ = input;
    piazza_arbiter::run_job(&loaded, &spec, 2, None)
        .unwrap()
        .step_count()
}

/// How a dispute should end.
enum Expect {
    /// Bisected to this step and arbitrated by re-execution.
    Step(u64),
    /// Decided by the ledger's own tokenization.
    Input,
    /// The silent defendant loses at a round's deadline.
    Silent,
    /// The runs agree on every common step; the ledger reads where the agreed samples stop.
    Length,
}

/// Runs one faulty provider on one job and checks the whole dispute; returns the numbers.
#[allow(clippy::too_many_arguments)]
fn caught(
    devnet: &Devnet,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    events: &Events,
    cheat: &str,
    model: &str,
    faults: &[&str],
    input: &str,
    extra: &[&str],
    expected: Expect,
) -> String {
    let auditor = piazza_keystore::Keystore::open(&dir.join("keys"))
        .unwrap()
        .info("auditor")
        .unwrap()
        .address
        .to_string();
    let key = if model == MINILM {
        "cheat"
    } else {
        "cheat-llm"
    };
    let mut args = vec!["provider", "run", "--from", key, "--models", model];
    for f in faults {
        args.extend_from_slice(&["--fault", f]);
    }
    let journal = dir.join(format!("journal-{}", faults.join("-")));
    args.extend_from_slice(&["--journal", journal.to_str().unwrap()]);
    let provider = daemon(devnet, dir, &args);
    wait_registered(runtime, client, "provider", cheat);
    let stake_before = stake_of(runtime, client, cheat);
    let auditor_before = balance_of(client, runtime, &auditor);
    let id = submit(devnet, dir, model, input, extra);
    let job = runtime
        .block_on(client.wait_for_job(id, DISPUTE_WAIT))
        .unwrap();
    drop(provider);
    if job.status != piazza_api::JobState::Failed {
        for e in events.0.lock().unwrap().iter() {
            if e["kind"].as_str().is_some_and(|k| k.starts_with("verify.")) {
                eprintln!("{e}");
            }
        }
    }
    assert_eq!(
        job.status,
        piazza_api::JobState::Failed,
        "job {id} with faults {faults:?}"
    );
    assert!(job.receipt.is_none());
    let refunded = events.wait("compute.job_failed", id);
    assert_eq!(
        attr(&refunded, "refund"),
        job.max_price,
        "the client gets its whole escrow back"
    );
    let resolved = events.wait("verify.dispute_resolved", id);
    assert_eq!(attr(&resolved, "loser"), cheat);
    assert_eq!(attr(&resolved, "winner"), auditor);
    assert_eq!(attr(&resolved, "loser_side"), "defendant");
    let slash = piazza_ledger::verify::Params::default()
        .fraud_slash
        .base_units();
    assert_eq!(
        stake_of(runtime, client, cheat),
        stake_before - slash,
        "slashed by fraud_slash"
    );
    let to_winner: u128 = attr(&resolved, "to_winner").parse().unwrap();
    let burned: u128 = attr(&resolved, "burned").parse().unwrap();
    assert_eq!(to_winner + burned, slash);
    assert_eq!(to_winner, slash / 2);
    // Once ended, `piazza dispute` tells the outcome, and `provider status` counts the fraud.
    let ended = cli(devnet, dir, &["dispute", &id.to_string()]);
    assert_eq!(
        (ended["open"].as_bool(), ended["status"].as_str()),
        (Some(false), Some("failed"))
    );
    let record = cli(devnet, dir, &["provider", "status", cheat]);
    assert!(record["provider"]["frauds"].as_u64() >= Some(1));
    let rounds = attr(&resolved, "rounds");
    let blocks = attr(&resolved, "blocks");
    let challenged = events.wait("verify.dispute_opened", id);
    let report = match expected {
        Expect::Step(expected) => {
            let found = events.wait("verify.step_found", id);
            assert_eq!(
                attr(&found, "step"),
                expected.to_string(),
                "bisected to the corrupted step"
            );
            assert_eq!(attr(&resolved, "step"), expected.to_string());
            let arbitrated = events.wait("verify.arbitrated", id);
            assert_eq!(attr(&arbitrated, "by"), auditor);
            // The auditor's account: + its share of the slash, bond back, minus its fees.
            let auditor_after = balance_of(client, runtime, &auditor);
            assert!(auditor_after + 5_000_000_000 > auditor_before + to_winner);
            format!(
                "{model} {faults:?}: step {expected}, {rounds} rounds, evidence {} bytes, dispute {blocks} blocks (opened at {})",
                attr(&arbitrated, "evidence_bytes"),
                challenged["height"]
            )
        }
        Expect::Input => {
            events.wait("verify.input_disputed", id);
            let arbitrated = events.wait("verify.arbitrated", id);
            assert_eq!(attr(&arbitrated, "by"), auditor);
            assert!(attr(&resolved, "reason").starts_with("input tokenized to"));
            format!(
                "{model} {faults:?}: input dispute, {rounds} rounds, tokenizer evidence {} bytes, dispute {blocks} blocks",
                attr(&arbitrated, "evidence_bytes"),
            )
        }
        Expect::Length => {
            events.wait("verify.length_disputed", id);
            let arbitrated = events.wait("verify.arbitrated", id);
            assert_eq!(attr(&arbitrated, "by"), auditor);
            assert!(attr(&resolved, "reason").starts_with("the agreed samples"));
            format!(
                "{model} {faults:?}: length dispute, {rounds} rounds, length evidence {} bytes, dispute {blocks} blocks",
                attr(&arbitrated, "evidence_bytes"),
            )
        }
        Expect::Silent => {
            assert_eq!(attr(&resolved, "reason"), "silent in a round");
            format!(
                "{model} {faults:?}: silent defendant lost after {rounds} rounds, {blocks} blocks"
            )
        }
    };
    eprintln!("{report}");
    report
}

#[test]
fn corrupt_providers_are_caught_bisected_to_the_step_slashed_and_clients_refunded() {
    let dir = tempfile::tempdir().unwrap();
    // 200 ms blocks: a round's 20 blocks (4 s) leave a loaded 2-core box time to re-execute a
    // SmolLM2 step and answer; at 100 ms (2 s) the SmolLM2 dispute after six MiniLM ones ended
    // without the step found.
    let devnet = start_devnet_with(
        dir.path(),
        &[
            "--no-provider",
            "--models",
            &format!("{MINILM},{SMOLLM2}"),
            "--block-interval-ms",
            "200",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let events = Events::follow(&runtime, &client);
    let cheat = funded_key(&devnet, dir.path(), "cheat", "5000");
    // The devnet's auditor registers once it has loaded its models.
    let auditor: piazza_primitives::Address =
        piazza_keystore::Keystore::open(&dir.path().join("keys"))
            .unwrap()
            .info("auditor")
            .unwrap()
            .address;
    wait_registered(&runtime, &client, "auditor", &auditor.to_string());
    let text = "the square beside the tower";
    let steps = local_steps(
        MINILM,
        text,
        piazza_arbiter::JobSpec::embedding(text.into()),
    );
    let mut numbers = Vec::new();
    for (fault, step) in [
        ("corrupt-op=first", 0),
        ("corrupt-op=middle", steps / 2),
        ("corrupt-op=last", steps - 1),
        ("wrong-output", steps - 1),
    ] {
        numbers.push(caught(
            &devnet,
            dir.path(),
            &runtime,
            &client,
            &events,
            &cheat,
            MINILM,
            &[fault],
            text,
            &[],
            Expect::Step(step),
        ));
    }
    numbers.push(caught(
        &devnet,
        dir.path(),
        &runtime,
        &client,
        &events,
        &cheat,
        MINILM,
        &["corrupt-op=middle", "silent-in-dispute"],
        text,
        &[],
        Expect::Silent,
    ));
    numbers.push(caught(
        &devnet,
        dir.path(),
        &runtime,
        &client,
        &events,
        &cheat,
        MINILM,
        &["wrong-ids"],
        text,
        &[],
        Expect::Input,
    ));
    // Generation: a chat job of a few tokens, corrupted in the middle of its trace.
    let prompt = "Name a colour.";
    let spec = piazza_arbiter::JobSpec {
        input: prompt.as_bytes().to_vec(),
        max_tokens: 4,
        chat: true,
        ..Default::default()
    };
    let gen_steps = local_steps(SMOLLM2, prompt, spec);
    let cheat_llm = funded_key(&devnet, dir.path(), "cheat-llm", "5000");
    numbers.push(caught(
        &devnet,
        dir.path(),
        &runtime,
        &client,
        &events,
        &cheat_llm,
        SMOLLM2,
        &["corrupt-op=middle"],
        prompt,
        &["--chat", "--max-tokens", "4"],
        Expect::Step(gen_steps / 2),
    ));
    // A generation one token short: the same ids, a shorter trace. The game walks the steps
    // both runs share, finds them agreed, and the ledger reads where the agreed samples stop
    // the generation: the shorter run loses.
    numbers.push(caught(
        &devnet,
        dir.path(),
        &runtime,
        &client,
        &events,
        &cheat_llm,
        SMOLLM2,
        &["stop-early"],
        prompt,
        &["--chat", "--max-tokens", "4"],
        Expect::Length,
    ));
    eprintln!("dispute numbers:\n{}", numbers.join("\n"));
}

#[test]
fn an_honest_provider_falsely_challenged_keeps_its_stake_and_the_challenger_loses_its_bond() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(dir.path(), &["--no-auditor", "--models", MINILM]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let events = Events::follow(&runtime, &client);
    let keystore = piazza_keystore::Keystore::open(&dir.path().join("keys")).unwrap();
    let provider = keystore.info("provider").unwrap().address.to_string();
    let liar = funded_key(&devnet, dir.path(), "liar", "5000");
    let _auditor = daemon(
        &devnet,
        dir.path(),
        &[
            "auditor",
            "run",
            "--from",
            "liar",
            "--models",
            MINILM,
            "--fault",
            "corrupt-op=middle",
        ],
    );
    wait_registered(&runtime, &client, "auditor", &liar);
    wait_registered(&runtime, &client, "provider", &provider);
    let stake_before = stake_of(&runtime, &client, &provider);
    let liar_before = balance_of(&client, &runtime, &liar);
    let id = submit(&devnet, dir.path(), MINILM, "an honest answer", &[]);
    let job = runtime
        .block_on(client.wait_for_job(id, DISPUTE_WAIT))
        .unwrap();
    assert_eq!(
        job.status,
        piazza_api::JobState::Settled,
        "the honest result settles after the dispute"
    );
    assert_eq!(job.receipt.as_ref().unwrap().provider, provider);
    let resolved = events.wait("verify.dispute_resolved", id);
    assert_eq!(attr(&resolved, "winner"), provider);
    assert_eq!(attr(&resolved, "loser"), liar);
    assert_eq!(attr(&resolved, "loser_side"), "claimant");
    assert_eq!(
        stake_of(&runtime, &client, &provider),
        stake_before,
        "the honest stake is untouched"
    );
    let bond = piazza_ledger::verify::Params::default()
        .challenge_bond
        .base_units();
    assert_eq!(attr(&resolved, "to_winner"), (bond / 2).to_string());
    assert_eq!(attr(&resolved, "burned"), (bond - bond / 2).to_string());
    let liar_after = balance_of(&client, &runtime, &liar);
    assert!(
        liar_before - liar_after >= bond,
        "the challenger's bond is gone"
    );
    eprintln!(
        "false challenge: {} rounds, {} blocks, reason: {}",
        attr(&resolved, "rounds"),
        attr(&resolved, "blocks"),
        attr(&resolved, "reason")
    );
}

#[test]
fn a_redundant_job_with_one_bad_provider_settles_to_the_honest_result() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(dir.path(), &["--no-auditor", "--models", MINILM]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let events = Events::follow(&runtime, &client);
    let honest = funded_key(&devnet, dir.path(), "honest", "5000");
    let cheat = funded_key(&devnet, dir.path(), "cheat", "5000");
    let journal = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (ja, jb) = (journal("journal-honest"), journal("journal-cheat"));
    let _honest = daemon(
        &devnet,
        dir.path(),
        &["provider", "run", "--from", "honest", "--journal", &ja],
    );
    let _cheat = daemon(
        &devnet,
        dir.path(),
        &[
            "provider",
            "run",
            "--from",
            "cheat",
            "--fault",
            "corrupt-op=middle",
            "--journal",
            &jb,
        ],
    );
    let devnet_provider = piazza_keystore::Keystore::open(&dir.path().join("keys"))
        .unwrap()
        .info("provider")
        .unwrap()
        .address
        .to_string();
    // All three providers must be registered before the job, or a copy would wait for one.
    for address in [&honest, &cheat, &devnet_provider] {
        wait_registered(&runtime, &client, "provider", address);
    }
    let cheat_stake = stake_of(&runtime, &client, &cheat);
    let first = submit(
        &devnet,
        dir.path(),
        MINILM,
        "three opinions",
        &["--redundancy", "3"],
    );
    let jobs: Vec<_> = (first..first + 3)
        .map(|id| {
            runtime
                .block_on(client.wait_for_job(id, DISPUTE_WAIT))
                .unwrap()
        })
        .collect();
    let failed: Vec<_> = jobs
        .iter()
        .filter(|j| j.status == piazza_api::JobState::Failed)
        .collect();
    let settled: Vec<_> = jobs
        .iter()
        .filter(|j| j.status == piazza_api::JobState::Settled)
        .collect();
    assert_eq!(failed.len(), 1, "{jobs:?}");
    assert_eq!(settled.len(), 2, "{jobs:?}");
    let receipts: Vec<_> = settled.iter().map(|j| j.receipt.clone().unwrap()).collect();
    assert_eq!(receipts[0].output_hash, receipts[1].output_hash);
    assert_eq!(receipts[0].trace_root, receipts[1].trace_root);
    assert!(receipts.iter().all(|r| r.provider != cheat));
    let resolved = events.wait("verify.dispute_resolved", failed[0].id);
    assert_eq!(attr(&resolved, "loser"), cheat);
    let slash = piazza_ledger::verify::Params::default()
        .fraud_slash
        .base_units();
    assert_eq!(stake_of(&runtime, &client, &cheat), cheat_stake - slash);
    eprintln!(
        "redundant(3): {} rounds, {} blocks",
        attr(&resolved, "rounds"),
        attr(&resolved, "blocks")
    );
}
