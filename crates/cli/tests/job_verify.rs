//! `piazza job verify` against a real devnet: a job the devnet's provider ran re-executes here
//! to the posted output hash and trace root; an unknown job is a clear error.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

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
