//! Shared test helpers: the real model, loaded once per test binary.

#![allow(dead_code)]

use std::sync::OnceLock;

use piazza_llm::Generator;

/// The SmolLM2 generator; fails with instructions when the file is missing.
pub fn generator() -> &'static Generator {
    static GENERATOR: OnceLock<Generator> = OnceLock::new();
    GENERATOR.get_or_init(|| {
        let path = piazza_llm::default_model_path();
        assert!(
            path.exists(),
            "{} is missing: run `bash scripts/fetch-models.sh` (or set PIAZZA_MODELS_DIR)",
            path.display()
        );
        Generator::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    })
}

pub struct Case {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_text: String,
    pub top5_ids: Vec<u32>,
    pub top5_logits: Vec<f32>,
}

/// The cases of tests/fixtures/smollm2_reference.json (copied from ../shared/fixtures).
pub fn reference_cases() -> Vec<Case> {
    let text = include_str!("../fixtures/smollm2_reference.json");
    let json: serde_json::Value = serde_json::from_str(text).expect("fixture is JSON");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| Case {
            prompt: case["prompt"].as_str().unwrap().to_string(),
            prompt_ids: ids(&case["prompt_ids"]),
            greedy_ids: ids(&case["greedy_ids"]),
            greedy_text: case["greedy_text"].as_str().unwrap().to_string(),
            top5_ids: ids(&case["next_token_top5_ids"]),
            top5_logits: case["next_token_top5_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}
