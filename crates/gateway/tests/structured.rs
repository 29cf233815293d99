//! Structured outputs over sessions on an in-process devnet, checked with the official
//! `openai` Python client (`tests/openai_structured.py`): 20 prompts across three JSON schemas
//! and two tool sets on SmolLM2, every answer parsing and validating with its receipt; hostile
//! schemas a 400 naming the field.

mod support;

use piazza_gateway::Limits;
use piazza_primitives::Amount;
use std::path::PathBuf;
use std::time::Duration;
use support::{gateway, session_devnet, DevnetOptions, DEV_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_client_gets_valid_json_and_tool_calls() {
    let devnet = session_devnet(DevnetOptions {
        block_interval: Duration::from_millis(100),
        generation: true,
        provider_concurrency: 2,
    })
    .await;
    assert!(
        devnet.generation,
        "SmolLM2 is needed (scripts/fetch-models.sh)"
    );
    let gw = gateway(&devnet, Limits::default()).await;
    let key = gw.create_key(DEV_KEY, Amount::pza(100)).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_structured.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .args(["--base-url", &format!("{}/v1", gw.url()), "--api-key", &key])
        .args(["--chat-model", piazza_provider::models::SMOLLM2]);
    let out = tokio::time::timeout(
        Duration::from_secs(900),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the client finishes within 15 minutes")
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "openai_structured.py failed:\n{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary");
    assert_eq!(summary["passed"], 20, "{summary}");
}
