//! The devnet's own provider picks up a model record registered while it runs and naming its
//! files' blobs: the record is resolved like the ones it started with (here the local MiniLM
//! files, whose commitments it names), added to the provider's offer, and a job on it is served
//! by that provider.

use piazza_client::Client;
use piazza_keystore::Keystore;

mod common;
mod model_register;
use common::*;

const LATER: &str = "minilm-registered-later";
const INPUT: &str = "registered while the devnet runs";

#[test]
fn a_model_registered_on_a_running_devnet_is_served_by_its_provider() {
    let dir = tempfile::tempdir().unwrap();
    let devnet = start_devnet(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(&devnet.url);
    let keystore = Keystore::open(&dir.path().join("keys")).unwrap();
    let provider = keystore.info("provider").unwrap().address;
    let offer = runtime
        .block_on(client.provider(&provider))
        .unwrap()
        .unwrap();
    assert!(
        !offer.models.iter().any(|m| m == LATER),
        "{:?}",
        offer.models
    );

    let base = piazza_provider::models::minilm_record(
        &piazza_engine::models_dir(),
        keystore.info("dev").unwrap().address,
    )
    .unwrap();
    // It names the bundled files' blob ids (a blob id is known before the file is stored).
    let minilm = piazza_provider::models::bundled_paths(
        &piazza_engine::models_dir(),
        piazza_provider::models::MINILM,
    )
    .unwrap();
    let blob_of = |path: &std::path::Path| {
        piazza_primitives::blob::blob_id(&std::fs::read(path).unwrap()).to_hex()
    };
    let (weights, tokenizer, config) = (
        blob_of(&minilm.weights),
        blob_of(&minilm.tokenizer),
        blob_of(&minilm.config),
    );
    let mut args = model_register::register_args(LATER, &base);
    args.extend(
        [
            "--weights-blob",
            &weights,
            "--tokenizer-blob",
            &tokenizer,
            "--config-blob",
            &config,
            "--from",
            "dev",
            "--wait",
        ]
        .map(str::to_string),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let receipt = cli(&devnet, dir.path(), &args);
    assert!(receipt["error"].is_null(), "{receipt}");

    wait_until("the provider offers the new model", READY_WAIT, || {
        runtime
            .block_on(client.provider(&provider))
            .ok()
            .flatten()
            .is_some_and(|p| p.models.iter().any(|m| m == LATER))
    });
    let out = cli(
        &devnet,
        dir.path(),
        &[
            "job", "submit", "--model", LATER, "--input", INPUT, "--wait",
        ],
    );
    let job = &out["job"];
    assert_eq!(job["status"], "settled", "{out}");
    assert_eq!(job["provider"], provider.to_string());
    // The trace root the local files give under the new record.
    let record = runtime
        .block_on(client.models())
        .unwrap()
        .into_iter()
        .find(|m| m.name == LATER)
        .unwrap();
    let local = piazza_provider::models::load(&piazza_engine::models_dir(), &record).unwrap();
    let params: piazza_api::JobParamsInfo = serde_json::from_value(job["params"].clone()).unwrap();
    let expected = piazza_provider::models::execute(&local, INPUT.as_bytes(), &params, 1).unwrap();
    assert_eq!(job["result"]["trace_root"], expected.trace_root.to_hex());
}
