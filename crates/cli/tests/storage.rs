//! Blob storage end to end with the `piazza` binary: a devnet, eight `piazza storage run`
//! processes, `piazza blob put` of a file, challenge epochs proven, two holders SIGKILLed,
//! `piazza blob get` still equal to the file, the two slashed for the challenges they missed,
//! and repairs putting every shard back on live providers, proven.

use piazza_client::storage::DealInfo;
use piazza_client::Client;
use piazza_primitives::Address;
use std::time::Duration;

mod common;
use common::*;

const STORAGE_PROVIDERS: usize = 8;
/// Long enough for several epochs, a slash and a repair at the devnet's 100 ms blocks.
const PROTOCOL_WAIT: Duration = Duration::from_secs(90);
/// The blob's size: 100 MB (and 17 bytes, so the last chunk is partial); a smaller
/// `PIAZZA_STORAGE_TEST_BYTES` runs the same story faster.
const BLOB_BYTES_DEFAULT: u32 = 100_000_017;

fn blob_bytes() -> u32 {
    std::env::var("PIAZZA_STORAGE_TEST_BYTES")
        .ok()
        .map(|v| {
            v.parse()
                .expect("PIAZZA_STORAGE_TEST_BYTES is a byte count")
        })
        .unwrap_or(BLOB_BYTES_DEFAULT)
}

fn deal_of(client: &Client, runtime: &tokio::runtime::Runtime, blob: &str) -> DealInfo {
    runtime
        .block_on(client.blob(&blob.parse().unwrap()))
        .unwrap()
        .expect("a deal keeps the blob")
        .deal
}

fn stake_of(client: &Client, runtime: &tokio::runtime::Runtime, address: &Address) -> u128 {
    let info = runtime
        .block_on(client.storage_provider(address))
        .unwrap()
        .expect("a storage provider");
    info.stake.parse().unwrap()
}

#[test]
fn put_prove_kill_m_get_slash_and_repair() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(
        dir.path(),
        &[
            "--no-provider",
            "--no-auditor",
            "--storage-providers",
            "0",
            "--models",
            "all-minilm-l6-v2",
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);

    // Eight storage providers, each its own process with its own store.
    let mut daemons = Vec::new();
    let mut addresses = Vec::new();
    for i in 0..STORAGE_PROVIDERS {
        let name = format!("store{i}");
        let address: Address = funded_key(&devnet, dir.path(), &name, "500")
            .parse()
            .unwrap();
        let store = dir.path().join(format!("shards-{i}"));
        let store = store.to_str().unwrap();
        daemons.push(Some(daemon(
            &devnet,
            dir.path(),
            &[
                "storage",
                "run",
                "--from",
                &name,
                "--listen",
                "127.0.0.1:0",
                "--dir",
                store,
                "--stake",
                "100",
            ],
        )));
        addresses.push(address);
    }
    wait_until("eight storage providers registered", WAIT, || {
        runtime
            .block_on(client.storage_providers())
            .is_ok_and(|p| p.len() == STORAGE_PROVIDERS)
    });

    // Put a file.
    let data: Vec<u8> = (0..blob_bytes())
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, &data).unwrap();
    let put = cli(
        &devnet,
        dir.path(),
        &["blob", "put", file.to_str().unwrap(), "--epochs", "1000"],
    );
    let blob = put["blob"].as_str().unwrap().to_string();
    assert_eq!(blob, piazza_primitives::blob::blob_id(&data).to_hex());
    assert_eq!(put["k"], 4);
    assert_eq!(put["m"], 2);
    println!("put {} bytes: {} MB/s", data.len(), put["mb_per_s"]);

    // Epochs pass with every shard proven.
    wait_until("two epochs proven", PROTOCOL_WAIT, || {
        let deal = deal_of(&client, &runtime, &blob);
        deal.epochs_done >= 2 && deal.shards.iter().all(|s| s.proven)
    });
    let status = cli(&devnet, dir.path(), &["blob", "status", &blob]);
    assert_eq!(status["deal"]["status"], "active");

    // SIGKILL the holders of shards 0 and 1.
    let deal = deal_of(&client, &runtime, &blob);
    let killed: Vec<Address> = deal.shards[..2]
        .iter()
        .map(|s| s.provider.unwrap())
        .collect();
    let stakes: Vec<u128> = killed
        .iter()
        .map(|a| stake_of(&client, &runtime, a))
        .collect();
    for address in &killed {
        let i = addresses.iter().position(|a| a == address).unwrap();
        drop(daemons[i].take());
    }

    // The blob still comes back whole from the other holders.
    let out = dir.path().join("back.bin");
    let got = cli(
        &devnet,
        dir.path(),
        &["blob", "get", &blob, "--out", out.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
    println!("get {} bytes: {} MB/s", data.len(), got["mb_per_s"]);

    // The killed holders miss their next challenges and are slashed.
    wait_until("the killed holders slashed", PROTOCOL_WAIT, || {
        killed
            .iter()
            .zip(&stakes)
            .all(|(a, before)| stake_of(&client, &runtime, a) < *before)
    });
    // Repairs put every shard back on live providers, each proven.
    wait_until("every shard repaired and proven", PROTOCOL_WAIT, || {
        let deal = deal_of(&client, &runtime, &blob);
        deal.shards
            .iter()
            .all(|s| s.proven && s.provider.is_some_and(|p| !killed.contains(&p)))
    });
    // And the blob comes back from the repaired set.
    std::fs::remove_file(&out).unwrap();
    cli(
        &devnet,
        dir.path(),
        &["blob", "get", &blob, "--out", out.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

/// A node address nothing listens on: the refusals below must come before any request.
const NO_NODE: &str = "http://127.0.0.1:9";

fn refused(args: &[&str]) -> String {
    let output = std::process::Command::new(PIAZZA)
        .args(args)
        .args(["--node", NO_NODE])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "piazza {args:?} succeeded");
    let text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    text
}

#[test]
fn blob_commands_refuse_bad_input_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    // Past 4 shards of 128 MiB: refused from its length alone (a sparse file, never read).
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(4 * (128 << 20) + 1)
        .unwrap();
    let text = refused(&["blob", "put", big.to_str().unwrap(), "--from", "nobody"]);
    assert!(text.contains("too large for its shard count"), "{text}");
    let text = refused(&["blob", "put", "/nonexistent/file", "--from", "nobody"]);
    assert!(
        text.starts_with("error: reading /nonexistent/file"),
        "{text}"
    );
    let small = dir.path().join("small.bin");
    std::fs::write(&small, b"abc").unwrap();
    let text = refused(&["blob", "put", small.to_str().unwrap(), "--k", "0"]);
    assert!(text.contains("unsupported shard counts"), "{text}");
    let text = refused(&["blob", "get", "xyz", "--out", "/tmp/never"]);
    assert!(text.contains("is not a blob id"), "{text}");
}
