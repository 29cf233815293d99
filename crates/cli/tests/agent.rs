//! `piazza agent serve|call|rate` as the README runs them, against a devnet process: the agent
//! registers itself and sells the network's embeddings over x402; another key pays a call
//! (refused first above its `--max-price`, with nothing paid), is served, and rates the paid
//! call, which shows in the agent's record.

mod common;

use common::{balance_of, cli, funded_key, start_devnet, Daemon, PIAZZA, WAIT};
use piazza_client::Client;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The agent's price in PZA, and in base units.
const PRICE: &str = "2";
const PRICE_UNITS: u128 = 2_000_000_000;

#[test]
fn an_agent_serves_a_paid_capability_and_its_payer_rates_it() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let alice = funded_key(&devnet, dir.path(), "alice", "5");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Command::new(PIAZZA)
        .args([
            "agent",
            "serve",
            "--name",
            "embedder",
            "--tag",
            "embeddings",
        ])
        .args(["--price", PRICE, "--listen", &listen, "--node", &devnet.url])
        .args(["--description", "Turns sentences into embedding vectors"])
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .env("PIAZZA_KEYSTORE", dir.path().join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = serve.stdout.take().expect("stdout is piped");
    let _serve = Daemon(serve);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(WAIT).expect("the agent says it serves");
    assert!(line.contains("agent `embedder` serves"), "{line}");

    let url = format!("http://{listen}/v1/embeddings");
    let body = json!({"model": "all-minilm-l6-v2", "input": "Hello world"}).to_string();
    let before = balance_of(&client, &runtime, &alice);
    // Above --max-price: refused before anything is signed.
    let refused = Command::new(PIAZZA)
        .args(["agent", "call", &url, "--from", "alice", "--max-price", "1"])
        .args(["--body", &body, "--node", &devnet.url])
        .env("PIAZZA_KEYSTORE", dir.path().join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--max-price"), "{stderr}");
    assert_eq!(balance_of(&client, &runtime, &alice), before);

    let paid = cli(
        &devnet,
        dir.path(),
        &[
            "agent",
            "call",
            &url,
            "--from",
            "alice",
            "--max-price",
            "3",
            "--body",
            &body,
        ],
    );
    assert_eq!(paid["status"], 200, "{paid}");
    assert_eq!(
        paid["answer"]["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        384
    );
    let call = paid["call"].as_u64().expect("the paid call's id");
    assert_eq!(
        balance_of(&client, &runtime, &alice),
        before - PRICE_UNITS,
        "alice paid the price and no fee (the agent submitted the settlement)"
    );

    cli(
        &devnet,
        dir.path(),
        &[
            "agent",
            "rate",
            &call.to_string(),
            "5",
            "--from",
            "alice",
            "--wait",
        ],
    );
    let record: Value = runtime.block_on(client.agent_by_name("embedder")).unwrap();
    assert_eq!(record["history"]["completed"], 1, "{record}");
    assert_eq!(
        record["history"]["rated_paid"],
        PRICE_UNITS.to_string(),
        "{record}"
    );
    assert_ne!(record["reputation_bps"], "0", "{record}");
}
