//! The economy's whole story on a real devnet through the CLI, the client and the node's
//! queries: a pool's contributions validated by real MiniLM embedding jobs (a duplicate
//! refused), the pool's dataset bought, a fine-tune of SmolLM2 (its own name, SmolLM2's
//! weights) published with lineage (SmolLM2 and the pool's dataset), its shares issued and sold
//! in an offering, a client's paid job on the fine-tune served by a provider that found the
//! record's weights by their commitments, and that job's price landing, to the base unit, with
//! the provider, the fine-tune's holders, SmolLM2's owner and the pool's contributors, each
//! share computed here from the paid price and the genesis' published split.

mod common;

use common::*;
use piazza_client::Client;
use piazza_ledger::bank::assets::{AssetId, SCALE};
use piazza_primitives::Hash;
use std::process::Command;

/// The fine-tune: SmolLM2's weights under its own name, with lineage.
const FINE_TUNE: &str = "tuned";
const SMOLLM2: &str = piazza_provider::models::SMOLLM2;
/// Basis points in a whole.
const BPS: u128 = 10_000;
/// The fine-tune's provider's price per unit of work, in base units (0.0001 PZA).
const HOST_PRICE_PER_UNIT: u128 = 100_000;

/// `amount` × `bps` / 10 000, rounded down, as the chain splits a price.
fn bps_of(amount: u128, bps: u128) -> u128 {
    amount * bps / BPS
}

/// What a holder of `units` of `supply` may claim from `amount` paid to an asset whose carried
/// fraction is zero: the amount spread per unit (times [`SCALE`], rounded down), then the
/// holder's whole base units.
fn holder_share(amount: u128, units: u128, supply: u128) -> u128 {
    amount * SCALE / supply * units / SCALE
}

/// The fees `who` paid for transactions in blocks `after + 1 ..= upto`, summed from each
/// block's transactions and their receipts.
fn fees_sent(
    client: &Client,
    runtime: &tokio::runtime::Runtime,
    who: &str,
    after: u64,
    upto: u64,
) -> u128 {
    let mut fees = 0;
    for height in after + 1..=upto {
        let block = runtime.block_on(client.block(height)).unwrap().unwrap();
        for hash in block.tx_hashes {
            let hash: Hash = hash.parse().unwrap();
            let tx = runtime
                .block_on(client.transaction(&hash))
                .unwrap()
                .unwrap();
            if tx.sender == who {
                let receipt = runtime.block_on(client.receipt(&hash)).unwrap().unwrap();
                fees += receipt.fee_paid.parse::<u128>().unwrap();
            }
        }
    }
    fees
}

/// `who`'s balance and the height it was read at.
fn balance_at(client: &Client, runtime: &tokio::runtime::Runtime, who: &str) -> (u128, u64) {
    let account = runtime
        .block_on(client.account(&who.parse().unwrap()))
        .unwrap();
    (account.balance.parse().unwrap(), account.proof.height)
}

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
fn pools_datasets_lineage_offerings_and_paid_jobs_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(
        dir.path(),
        &[
            "--no-auditor",
            "--storage-providers",
            "0",
            "--models",
            &format!("all-minilm-l6-v2,{SMOLLM2}"),
        ],
    );
    let d = dir.path();
    let alice = funded_key(&devnet, d, "alice", "100");
    let bob = funded_key(&devnet, d, "bob", "100");
    funded_key(&devnet, d, "carol", "100");
    let investor = funded_key(&devnet, d, "investor", "100");
    funded_key(&devnet, d, "dave", "100");
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

    // A fine-tune with lineage: SmolLM2's own commitments under its own name, 60 % SmolLM2,
    // 40 % the pool's dataset, 30 % of its revenue as royalty.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let base = runtime
        .block_on(client.models())
        .unwrap()
        .into_iter()
        .find(|m| m.name == SMOLLM2)
        .expect("SmolLM2 is registered at genesis");
    // Model registrations by Bob, all with SmolLM2's commitments and a lineage.
    let register = |name: &str, lineage: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "model",
            "register",
            "--from",
            "bob",
            "--name",
            name,
            "--kind",
            &base.kind,
            "--architecture",
            &base.architecture,
            "--config-hash",
            &base.config_hash,
            "--weights-commitment",
            &base.weights_commitment,
            "--tokenizer-hash",
            &base.tokenizer_hash,
            "--wait",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(lineage.iter().map(|s| s.to_string()));
        args
    };
    let (base_bps, dataset_bps, royalty_bps) = (6_000u128, 4_000u128, 3_000u128);
    let args = register(
        FINE_TUNE,
        &[
            "--base",
            &format!("{SMOLLM2}:{base_bps}"),
            "--dataset",
            &format!("0:{dataset_bps}"),
            "--royalty-bps",
            &royalty_bps.to_string(),
        ],
    );
    cli(
        &devnet,
        d,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let graph = cli(&devnet, d, &["model", "lineage", FINE_TUNE]);
    assert_eq!(graph["royalty_bps"], 3000);
    assert_eq!(graph["parents"][0]["source"]["model"], SMOLLM2);
    assert_eq!(graph["parents"][1]["source"]["dataset"], 0);
    // Over 100 % royalty is refused with its stable code.
    let args = register(
        "greedy",
        &[
            "--base",
            &format!("{SMOLLM2}:10000"),
            "--royalty-bps",
            "10001",
        ],
    );
    let (ok, text) = try_cli(
        &devnet,
        d,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(!ok && text.contains("royalty_over_whole"), "{text}");

    // Its shares: 100 issued, 40 offered at 0.01 PZA each, bought by the investor.
    let asset = format!("model:{FINE_TUNE}");
    wait(&[
        "shares", "issue", &asset, "--from", "bob", "--supply", "100",
    ]);
    wait(&[
        "offering", "create", &asset, "--from", "bob", "--units", "40", "--price", "0.01",
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
    let record = runtime
        .block_on(client.asset(&AssetId::Model(FINE_TUNE.into())))
        .unwrap();
    let units = |who: &str| {
        record["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["address"] == who)
            .map(|h| h["units"].as_str().unwrap().to_string())
    };
    assert_eq!(units(&bob).as_deref(), Some("60"));
    assert_eq!(units(&investor).as_deref(), Some("40"));
    let offering = cli(&devnet, d, &["offering", "show", "0"]);
    assert_eq!(offering["units_left"], "0");

    // A provider started after the registration serves the fine-tune: it finds SmolLM2's
    // file in the shared models directory by the record's commitments.
    let host = funded_key(&devnet, d, "host", "1100");
    let _host = daemon(
        &devnet,
        d,
        &[
            "provider", "run", "--from", "host", "--models", FINE_TUNE, "--price", "0.0001",
        ],
    );
    wait_until("the fine-tune's provider registers", READY_WAIT, || {
        runtime
            .block_on(client.provider(&host.parse().unwrap()))
            .ok()
            .flatten()
            .is_some()
    });

    // What each payee holds before Dave's paid job on the fine-tune.
    let claimable = |asset: &str| -> Vec<(String, u128, u128)> {
        let shown = cli(&devnet, d, &["shares", "show", asset]);
        let mut holders: Vec<(String, u128, u128)> = shown["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["address"].as_str().unwrap().to_string(),
                    h["units"].as_str().unwrap().parse().unwrap(),
                    h["claimable"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        holders.sort();
        holders
    };
    let (pool_before, tuned_before) = (claimable("pool:0"), claimable(&asset));
    let (host_before, host_height) = balance_at(&client, &runtime, &host);
    let (owner_before, owner_height) = balance_at(&client, &runtime, &base.owner);
    let out = cli(
        &devnet,
        d,
        &[
            "job",
            "submit",
            "--from",
            "dave",
            "--model",
            FINE_TUNE,
            "--input",
            "The capital of France is",
            "--max-tokens",
            "8",
            "--max-price",
            "1",
            "--wait",
        ],
    );
    let job = &out["job"];
    assert_eq!(job["status"], "settled", "{out}");
    assert_eq!(job["provider"], host, "{out}");
    let work_units = job["result"]["work_units"].as_u64().unwrap() as u128;
    let price: u128 = job["receipt"]["price"].as_str().unwrap().parse().unwrap();
    assert_eq!(price, HOST_PRICE_PER_UNIT * work_units, "{out}");

    // The expected shares, from the paid price and the genesis' published split.
    let genesis: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("genesis.json")).unwrap()).unwrap();
    let split = &genesis["compute"]["split"];
    let bps = |key: &str| split[key].as_u64().unwrap() as u128;
    let to_model = bps_of(price, bps("model_owner_bps"));
    let to_provider = price
        - to_model
        - bps_of(price, bps("auditor_pool_bps"))
        - bps_of(price, bps("treasury_bps"));
    let royalty = bps_of(to_model, royalty_bps);
    let to_smollm2 = bps_of(royalty, base_bps);
    let to_dataset = royalty - to_smollm2;
    let to_tuned_holders = to_model - royalty;
    assert!(to_smollm2 > 0 && to_dataset > 0 && to_tuned_holders > 0);

    // The provider and SmolLM2's owner (it issued no shares) are paid in their balances: the
    // change plus the fees they paid meanwhile.
    let (host_after, host_now) = balance_at(&client, &runtime, &host);
    let host_fees = fees_sent(&client, &runtime, &host, host_height, host_now);
    assert_eq!(host_after + host_fees, host_before + to_provider);
    let (owner_after, owner_now) = balance_at(&client, &runtime, &base.owner);
    let owner_fees = fees_sent(&client, &runtime, &base.owner, owner_height, owner_now);
    assert_eq!(owner_after + owner_fees, owner_before + to_smollm2);
    // The fine-tune's holders (Bob 60, the investor 40) and the pool's contributors (one unit
    // each) may claim their part of what reached them; every earlier payment split evenly,
    // so no fraction was carried.
    for (before, after, amount) in [
        (&tuned_before, claimable(&asset), to_tuned_holders),
        (&pool_before, claimable("pool:0"), to_dataset),
    ] {
        let supply: u128 = before.iter().map(|(_, units, _)| units).sum();
        let expected: Vec<(String, u128, u128)> = before
            .iter()
            .map(|(who, units, owed)| {
                (
                    who.clone(),
                    *units,
                    owed + holder_share(amount, *units, supply),
                )
            })
            .collect();
        assert_eq!(after, expected);
    }

    // Alice claims her share of the access sale and the job; the investor claims the
    // fine-tune's; Carol, who holds nothing, is refused.
    for (who, address, asset) in [("alice", &alice, "pool:0"), ("investor", &investor, &asset)] {
        let owed = claimable(asset)
            .into_iter()
            .find(|(holder, _, _)| holder == address)
            .unwrap()
            .2;
        let before = balance_of(&client, &runtime, address);
        let claim = wait(&["shares", "claim", asset, "--from", who]);
        let fee: u128 = claim["fee_paid"].as_str().unwrap().parse().unwrap();
        assert_eq!(balance_of(&client, &runtime, address) + fee, before + owed);
    }
    let (ok, text) = try_cli(
        &devnet,
        d,
        &["shares", "claim", "pool:0", "--from", "carol", "--wait"],
    );
    assert!(!ok && text.contains("not_a_holder"), "{text}");
}
