//! `piazza job verify` against a real devnet: a job the devnet's provider ran re-executes here
//! to the posted output hash and trace root; a job a corrupt provider ran is a MISMATCH naming
//! the trace root; an unknown job and a job without a result are clear errors.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

const MINILM: &str = "all-minilm-l6-v2";
const SMOLLM2: &str = "smollm2-135m-instruct";

fn verify(devnet: &Devnet, dir: &Path, id: &str) -> std::process::Output {
    Command::new(PIAZZA)
        .args(["job", "verify", id, "--rpc", &devnet.url, "--json"])
        .env("PIAZZA_KEYSTORE", dir.join("keys"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Submits a job, waits for it to settle, verifies it and checks the report against the chain.
fn check_match(devnet: &Devnet, dir: &Path, model: &str, extra: &[&str]) {
    let mut args = vec!["job", "submit", "--model", model, "--wait"];
    args.extend_from_slice(extra);
    let submitted = cli(devnet, dir, &args);
    let job = &submitted["job"];
    let id = job["id"].as_u64().unwrap().to_string();
    let output = verify(devnet, dir, &id);
    assert!(
        output.status.success(),
        "job {id} ({model}) did not verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verdict"], "match", "{report}");
    assert_eq!(report["model"], model);
    assert_eq!(report["differs"], serde_json::json!([]));
    // The roots compared are the chain's, not ones the command made up.
    assert_eq!(report["posted"]["trace_root"], job["result"]["trace_root"]);
    assert_eq!(report["ours"]["trace_root"], job["result"]["trace_root"]);
    assert_eq!(report["ours"]["output_hash"], job["result"]["output_hash"]);
}

#[test]
fn a_devnet_job_verifies_as_a_match_and_an_unknown_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(dir.path(), &["--models", &format!("{MINILM},{SMOLLM2}")]);

    check_match(
        &devnet,
        dir.path(),
        MINILM,
        &["--input", "Check it yourself."],
    );
    check_match(
        &devnet,
        dir.path(),
        SMOLLM2,
        &["--input", "The capital of France is", "--max-tokens", "4"],
    );

    let unknown = verify(&devnet, dir.path(), "999999");
    assert!(!unknown.status.success(), "an unknown job verified");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no job 999999"),
        "unclear error for an unknown job: {stderr}"
    );
}

#[test]
fn a_corrupt_providers_result_is_a_mismatch_and_a_job_without_result_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(
        dir.path(),
        &["--no-provider", "--no-auditor", "--models", MINILM],
    );
    funded_key(&devnet, dir.path(), "cheat", "5000");
    // No provider yet: the job waits, without a result.
    let submitted = cli(
        &devnet,
        dir.path(),
        &["job", "submit", "--model", MINILM, "--input", "who cheats?"],
    );
    let id = submitted["job"].as_u64().unwrap().to_string();
    let pending = verify(&devnet, dir.path(), &id);
    assert!(!pending.status.success(), "a job without a result verified");
    let stderr = String::from_utf8_lossy(&pending.stderr);
    assert!(
        stderr.contains("no result yet"),
        "unclear error for a job without a result: {stderr}"
    );

    let journal = dir.path().join("journal-cheat");
    let _cheat = daemon(
        &devnet,
        dir.path(),
        &[
            "provider",
            "run",
            "--from",
            "cheat",
            "--models",
            MINILM,
            "--fault",
            "corrupt-op=middle",
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    let mut posted = Value::Null;
    wait_until(
        "the corrupt provider did not post a result",
        Duration::from_secs(60),
        || {
            posted = cli(&devnet, dir.path(), &["job", "show", &id])["job"]["result"].clone();
            !posted.is_null()
        },
    );
    let output = verify(&devnet, dir.path(), &id);
    assert!(!output.status.success(), "a corrupt result verified");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verdict"], "MISMATCH", "{report}");
    assert!(
        report["differs"]
            .as_array()
            .unwrap()
            .contains(&"trace_root".into()),
        "{report}"
    );
    assert_eq!(report["posted"]["trace_root"], posted["trace_root"]);
    assert_ne!(report["ours"]["trace_root"], posted["trace_root"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("MISMATCH"));
}
