//! The gateway over sessions on an in-process devnet (node, provider serving its session
//! endpoint on 127.0.0.1, gateway), checked with the official `openai` Python client
//! (`tests/openai_sessions.py`): a streamed SmolLM2 chat relayed chunk by chunk with its
//! receipt last, embeddings equal to the MiniLM fixture, a receipt on every answer, the job
//! path by header; the key charged exactly the receipts' prices (and the job's price and
//! fee), and one session transaction per model however many requests.

mod support;

use piazza_gateway::{start, GatewayConfig};
use piazza_primitives::Amount;
use std::path::PathBuf;
use std::time::Duration;
use support::{devnet_on, ChainOptions, DevnetOptions, DEV_KEY};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_client_is_served_over_sessions() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output();
    match python {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the `openai` Python package is not importable (CI installs it: `python3 -m pip install openai`): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 is needed for the OpenAI client check: {e}"),
    }
    let devnet = devnet_on(
        DevnetOptions {
            block_interval: Duration::from_millis(100),
            generation: true,
            provider_concurrency: 2,
        },
        ChainOptions {
            session_endpoint: true,
            ..ChainOptions::default()
        },
    )
    .await;
    assert!(
        devnet.generation,
        "SmolLM2 is needed (scripts/fetch-models.sh)"
    );
    let gw = start(GatewayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &devnet.url,
        devnet.dir.path().join("gateway"),
        devnet.keystore_dir.clone(),
    ))
    .await
    .unwrap();
    let key = gw.create_key(DEV_KEY, Amount::pza(100)).unwrap();

    let mut command = std::process::Command::new("python3");
    command
        .arg(repo_root().join("crates/gateway/tests/openai_sessions.py"))
        .args(["--base-url", &format!("{}/v1", gw.url()), "--api-key", &key])
        .args(["--chat-model", piazza_provider::models::SMOLLM2])
        .arg("--fixture")
        .arg(repo_root().join("crates/engine/tests/fixtures/minilm_reference.json"));
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the client finishes within 10 minutes")
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai_sessions.py failed:\n{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary");
    let number = |name: &str| -> u128 {
        summary[name]
            .as_u64()
            .map(u128::from)
            .unwrap_or_else(|| panic!("{name} in {summary}"))
    };

    // Exactly the receipts' prices (and the job's price and fee); nothing left reserved.
    let record = gw.keys().into_iter().next().unwrap();
    assert!(number("session_paid") > 0);
    assert_eq!(
        record.spent,
        Amount::new(number("session_paid") + number("job_charge"))
    );
    assert_eq!(gw.reserved(&record.key_hash), Amount::ZERO);
    // One session per model (chat, embeddings), opened once, whatever the request count.
    assert_eq!(gw.session_transactions(), 2);
    gw.shutdown().await;
    devnet.shutdown().await;
}
