//! One copy of each model per process: the devnet computes its genesis records, runs its
//! provider and its auditor in one process, and each used to load every model again.

use piazza_api::ModelInfo;
use piazza_arbiter::LoadedModel;
use piazza_primitives::Address;
use piazza_provider::models;

#[test]
fn a_model_is_loaded_once_per_process_and_still_checked_against_its_record() {
    let dir = piazza_engine::models_dir();
    let record = models::minilm_record(&dir, Address([1; 20])).unwrap();
    let info = ModelInfo {
        name: record.name.clone(),
        kind: "embedding".into(),
        architecture: record.architecture.clone(),
        config_hash: record.config_hash.to_hex(),
        weights_commitment: record.weights_commitment.to_hex(),
        tokenizer_hash: record.tokenizer_hash.to_hex(),
        owner: record.owner.to_string(),
        license: record.license.clone(),
        price_floor: record.price_floor.base_units().to_string(),
        providers: Vec::new(),
        numeric: "f32".into(),
        files: None,
    };
    let (LoadedModel::Embedding(first), LoadedModel::Embedding(second)) = (
        models::load(&dir, &info).unwrap(),
        models::load(&dir, &info).unwrap(),
    ) else {
        panic!("MiniLM loads as an embedding model");
    };
    assert!(std::sync::Arc::ptr_eq(&first, &second), "one copy, shared");
    // A record naming other weights is still refused, cache or not.
    let mut other = info.clone();
    other.weights_commitment = piazza_primitives::Hash([9; 32]).to_hex();
    let Err(refused) = models::load(&dir, &other) else {
        panic!("other weights are refused");
    };
    assert!(
        refused.to_string().contains("differ from the chain's"),
        "{refused}"
    );
}
