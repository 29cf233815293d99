//! The economy on a real devnet through the CLI, the client and the node's queries: a pool's
//! contributions validated by real MiniLM embedding jobs (a duplicate refused), the pool's
//! dataset bought and its price claimable by the contributors, a fine-tune published with
//! lineage (the base model and the pool's dataset), its shares issued and sold in an offering,
//! the lineage graph and holders read back over JSON-RPC. (The revenue of jobs on a model with
//! lineage, to the base unit, is the executor test `piazza-ledger/tests/economy_story.rs`.)

mod common;

use common::*;
use piazza_client::Client;
use piazza_ledger::bank::assets::AssetId;
use std::process::Command;

/// Runs `piazza ARGS --node URL --json` and returns whether it succeeded and its stderr.
fn try_cli(devnet: &Devnet, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(PIAZZA)
        .args(args)
        .args(["--node", &devnet.url, "--json"])
        .env("PIAZZA_KEYSTORE", dir.join("keys"))
        .env_remove("PIAZZA_PASSWORD")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// An embedding job on MiniLM for `from`, settled; returns its id.
fn embed(devnet: &Devnet, dir: &std::path::Path, from: &str, text: &str) -> String {
    let out = cli(
        devnet,
        dir,
        &[
            "job",
            "submit",
            "--from",
            from,
            "--model",
            "all-minilm-l6-v2",
            "--input",
            text,
            "--max-price",
            "0.01",
            "--wait",
        ],
    );
    assert_eq!(out["job"]["status"], "settled", "{out}");
    out["job"]["id"].to_string()
}

#[test]
fn pools_datasets_lineage_and_offerings_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(
        dir.path(),
        &["--no-auditor", "--models", "all-minilm-l6-v2"],
    );
    let d = dir.path();
    let alice = funded_key(&devnet, d, "alice", "100");
    let bob = funded_key(&devnet, d, "bob", "100");
    funded_key(&devnet, d, "carol", "100");
    funded_key(&devnet, d, "investor", "100");
    let wait = |args: &[&str]| cli(&devnet, d, &[args, &["--wait"]].concat());

    // Pool 0 (with dataset 0): MiniLM embeddings, refused within squared distance 2 000.
    wait(&[
        "pool",
        "create",
        "--from",
        "alice",
        "--model",
        "all-minilm-l6-v2",
        "--dims",
        "384",
        "--min-distance-sq",
        "2000",
        "--price",
        "2",
    ]);
    let (cat, dog) = (
        "A cat sleeps on the warm windowsill.",
        "Stock markets fell sharply after the announcement.",
    );
    let job = embed(&devnet, d, "alice", cat);
    wait(&[
        "pool",
        "contribute",
        "0",
        "--from",
        "alice",
        "--text",
        cat,
        "--job",
        &job,
    ]);
    let job = embed(&devnet, d, "bob", dog);
    wait(&[
        "pool",
        "contribute",
        "0",
        "--from",
        "bob",
        "--text",
        dog,
        "--job",
        &job,
    ]);
    // Carol embeds Alice's sentence again: the pool refuses it, from the job's own output.
    let job = embed(&devnet, d, "carol", cat);
    let (ok, text) = try_cli(
        &devnet,
        d,
        &[
            "pool",
            "contribute",
            "0",
            "--from",
            "carol",
            "--text",
            cat,
            "--job",
            &job,
            "--wait",
        ],
    );
    assert!(!ok && text.contains("contribution_rejected"), "{text}");

    // The pool's dataset is bought: 2 PZA to the two contributors, 1 PZA each to claim.
    wait(&["dataset", "buy", "0", "--from", "investor"]);
    let pool = cli(&devnet, d, &["shares", "show", "pool:0"]);
    let mut claims: Vec<(String, String)> = pool["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["address"].as_str().unwrap().to_string(),
                h["claimable"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    claims.sort();
    let mut expected = vec![
        (alice.clone(), "1000000000".to_string()),
        (bob.clone(), "1000000000".to_string()),
    ];
    expected.sort();
    assert_eq!(claims, expected);
    let listed = cli(&devnet, d, &["pool", "show", "0"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    // A fine-tune with lineage: 60 % MiniLM, 40 % the pool's dataset, 30 % royalty.
    let hash = "11".repeat(32);
    // Model registrations by Bob, all with the same (unchecked) hashes and a lineage.
    let register = |name: &str, lineage: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "model",
            "register",
            "--from",
            "bob",
            "--name",
            name,
            "--kind",
            "embedding",
            "--architecture",
            "bert",
            "--config-hash",
            &hash,
            "--weights-commitment",
            &hash,
            "--tokenizer-hash",
            &hash,
            "--wait",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(lineage.iter().map(|s| s.to_string()));
        args
    };
    let args = register(
        "minilm-tuned",
        &[
            "--base",
            "all-minilm-l6-v2:6000",
            "--dataset",
            "0:4000",
            "--royalty-bps",
            "3000",
        ],
    );
    cli(
        &devnet,
        d,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let graph = cli(&devnet, d, &["model", "lineage", "minilm-tuned"]);
    assert_eq!(graph["royalty_bps"], 3000);
    assert_eq!(graph["parents"][0]["source"]["model"], "all-minilm-l6-v2");
    assert_eq!(graph["parents"][1]["source"]["dataset"], 0);
    // Over 100 % royalty is refused with its stable code.
    let args = register(
        "greedy",
        &["--base", "all-minilm-l6-v2:10000", "--royalty-bps", "10001"],
    );
    let (ok, text) = try_cli(
        &devnet,
        d,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(!ok && text.contains("royalty_over_whole"), "{text}");

    // Its shares: 100 issued, 40 offered at 0.01 PZA each, bought by the investor.
    wait(&[
        "shares",
        "issue",
        "model:minilm-tuned",
        "--from",
        "bob",
        "--supply",
        "100",
    ]);
    wait(&[
        "offering",
        "create",
        "model:minilm-tuned",
        "--from",
        "bob",
        "--units",
        "40",
        "--price",
        "0.01",
    ]);
    wait(&[
        "offering",
        "buy",
        "0",
        "--from",
        "investor",
        "--units",
        "40",
        "--max-cost",
        "0.4",
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let asset = runtime
        .block_on(client.asset(&AssetId::Model("minilm-tuned".into())))
        .unwrap();
    let units = |who: &str| {
        asset["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["address"] == who)
            .map(|h| h["units"].as_str().unwrap().to_string())
    };
    assert_eq!(units(&bob).as_deref(), Some("60"));
    let offering = cli(&devnet, d, &["offering", "show", "0"]);
    assert_eq!(offering["units_left"], "0");

    // Alice claims her share of the access sale; Carol, who holds nothing, is refused.
    let before = balance_of(&client, &runtime, &alice);
    let claim = wait(&["shares", "claim", "pool:0", "--from", "alice"]);
    let fee: u128 = claim["fee_paid"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        balance_of(&client, &runtime, &alice) + fee,
        before + 1_000_000_000
    );
    let (ok, text) = try_cli(
        &devnet,
        d,
        &["shares", "claim", "pool:0", "--from", "carol", "--wait"],
    );
    assert!(!ok && text.contains("not_a_holder"), "{text}");
}
