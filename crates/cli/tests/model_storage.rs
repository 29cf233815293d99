//! Models come from the chain and from storage: the devnet registers the quantized SmolLM2
//! record with its file's blob id and stores the file through its storage providers; a
//! provider started with an EMPTY models directory fetches the file by blob id, checks it, and
//! serves jobs on the quantized record and on a fine-tune record (`piazza model register
//! --numeric quantized --weights-blob`: its own name and lineage, the same weights) with the
//! same trace root as the local file gives; the devnet's auditor re-executes the quantized job
//! in the record's profile and attests it.

use piazza_client::Client;
use piazza_keystore::Keystore;
use piazza_primitives::Hash;
use piazza_provider::models::SMOLLM2_QUANTIZED;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
mod model_register;
use common::*;

/// How long the devnet may take to store the bundled file (encode, deal, six uploads).
const PUBLISH_WAIT: Duration = Duration::from_secs(180);
const FINE_TUNE: &str = "smollm2-135m-instruct-q-fine-tune";
const PROMPT: &str = "The capital of France is";

#[test]
fn a_provider_with_an_empty_model_cache_serves_the_quantized_smollm2_fetched_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet_with(
        dir.path(),
        &[
            "--no-provider",
            "--storage-providers",
            "6",
            "--models",
            SMOLLM2_QUANTIZED,
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let keystore = Keystore::open(&dir.path().join("keys")).unwrap();

    // The record names the file's blob; the devnet stores it right after it starts.
    let record = runtime
        .block_on(client.models())
        .unwrap()
        .into_iter()
        .find(|m| m.name == SMOLLM2_QUANTIZED)
        .expect("the quantized record is registered at genesis");
    assert_eq!(record.numeric, "quantized");
    let files = record.files.clone().expect("the record names its blobs");
    let blob: Hash = files.weights.parse().unwrap();
    assert_eq!(
        blob,
        piazza_primitives::blob::blob_id(&std::fs::read(piazza_llm::default_model_path()).unwrap())
    );
    wait_until("the devnet stores the model's file", PUBLISH_WAIT, || {
        runtime
            .block_on(client.blob(&blob))
            .ok()
            .flatten()
            .is_some_and(|found| found.deal.shards.iter().all(|s| s.proven))
    });

    // A fine-tune registered with `piazza model register`: its own name and lineage, the
    // quantized profile and the same weights file (and blob) as the base.
    let base = piazza_provider::models::smollm2_quantized_record(
        &piazza_engine::models_dir(),
        keystore.info("dev").unwrap().address,
    )
    .unwrap();
    let mut args = model_register::register_args(FINE_TUNE, &base);
    let (blob_hex, parent) = (blob.to_hex(), format!("{SMOLLM2_QUANTIZED}:10000"));
    args.extend(
        [
            "--weights-blob",
            &blob_hex,
            "--base",
            &parent,
            "--royalty-bps",
            "1000",
            "--from",
            "dev",
            "--wait",
        ]
        .map(str::to_string),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let receipt = cli(&devnet, dir.path(), &args);
    assert!(receipt["error"].is_null(), "{receipt}");
    let registered = runtime
        .block_on(client.models())
        .unwrap()
        .into_iter()
        .find(|m| m.name == FINE_TUNE)
        .expect("the fine-tune is registered");
    assert_eq!(registered.numeric, "quantized");
    let files = registered.files.expect("the fine-tune names its blobs");
    for id in [&files.weights, &files.tokenizer, &files.config] {
        assert_eq!(id.parse::<Hash>().unwrap(), blob);
    }

    // The provider's models directory is empty: everything it serves comes from storage.
    let empty = dir.path().join("empty-models");
    std::fs::create_dir_all(&empty).unwrap();
    let _provider = Daemon(
        Command::new(PIAZZA)
            .args([
                "provider",
                "run",
                "--from",
                "provider",
                "--node",
                &devnet.url,
            ])
            .args(["--poll-ms", "50", "--models"])
            .arg(format!("{SMOLLM2_QUANTIZED},{FINE_TUNE}"))
            .arg("--models-dir")
            .arg(&empty)
            .arg("--journal")
            .arg(dir.path().join("journal"))
            .env("PIAZZA_KEYSTORE", dir.path().join("keys"))
            .env_remove("PIAZZA_PASSWORD")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let provider = keystore.info("provider").unwrap().address;
    wait_until("the provider registers", READY_WAIT, || {
        runtime
            .block_on(client.provider(&provider))
            .ok()
            .flatten()
            .is_some()
    });
    assert!(
        piazza_provider::models::cached_blob_path(&empty, &blob.to_hex()).is_file(),
        "the file was fetched into the provider's cache"
    );

    // The same output and trace root as a provider with the local file: the record resolved
    // from the shared models directory, in its quantized profile.
    let local = piazza_provider::models::load(&piazza_engine::models_dir(), &record).unwrap();
    for model in [SMOLLM2_QUANTIZED, FINE_TUNE] {
        let out = cli(
            &devnet,
            dir.path(),
            &[
                "job",
                "submit",
                "--model",
                model,
                "--input",
                PROMPT,
                "--max-tokens",
                "8",
                "--wait",
            ],
        );
        let job = &out["job"];
        assert_eq!(job["status"], "settled", "{model}: {out}");
        assert_eq!(job["provider"], provider.to_string(), "{model}");
        let params: piazza_api::JobParamsInfo =
            serde_json::from_value(job["params"].clone()).unwrap();
        let expected =
            piazza_provider::models::execute(&local, PROMPT.as_bytes(), &params, 1).unwrap();
        assert_eq!(
            out["output"],
            String::from_utf8(expected.output).unwrap(),
            "{model}"
        );
        assert_eq!(
            job["result"]["trace_root"],
            expected.trace_root.to_hex(),
            "{model}"
        );
    }
    let served = runtime
        .block_on(client.provider(&provider))
        .unwrap()
        .unwrap();
    assert_eq!(served.frauds, 0);
    assert_eq!(served.jobs_completed, 2);
    // The quantized job was drawn for audit (a new provider's every job is) and the devnet's
    // auditor, loading the record's profile from its local file, attested it; the fine-tune
    // has no auditor of its name and settles after its window.
    let auditor = keystore.info("auditor").unwrap().address;
    let audits = runtime.block_on(client.auditor(&auditor)).unwrap().unwrap();
    assert_eq!((audits.attested, audits.challenged), (1, 0));
}
