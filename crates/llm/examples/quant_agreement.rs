//! Greedy agreement of the quantized numeric profile with the f32 reference on the fixture
//! prompts (tests/fixtures/smollm2_reference.json, from ../shared/fixtures), and the logit
//! differences behind every flip.
//!
//! `cargo run --release -p piazza-llm --example quant_agreement`
//!
//! For each prompt: the quantized greedy continuation next to the reference's; at the first
//! token where they differ, both tokens' logits under both profiles (so a flip on a near-tie
//! shows as one); and the largest |quantized − f32| logit over the vocabulary at every
//! position of the reference continuation (teacher-forced: both profiles read the same
//! prefix).

use piazza_llm::{GenerateParams, Generator, NumericProfile};

struct Case {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let text = include_str!("../tests/fixtures/smollm2_reference.json");
    let json: serde_json::Value = serde_json::from_str(text).expect("fixture is JSON");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect()
            })
            .unwrap_or_default()
    };
    json["cases"]
        .as_array()
        .map(|cases| {
            cases
                .iter()
                .map(|c| Case {
                    prompt: c["prompt"].as_str().unwrap_or_default().to_string(),
                    prompt_ids: ids(&c["prompt_ids"]),
                    greedy_ids: ids(&c["greedy_ids"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = piazza_llm::default_model_path();
    let f32_model = Generator::load_with(&path, NumericProfile::F32)?;
    let quantized = Generator::load_with(&path, NumericProfile::Quantized)?;
    let (mut agreed, mut total, mut worst) = (0usize, 0usize, 0.0f32);
    for case in cases() {
        let mut params = GenerateParams::greedy(case.greedy_ids.len());
        params.stop_at_eos = false;
        let ours = quantized.generate(&case.prompt_ids, &params, 2, |_| {})?;
        let mine = f32_model.generate(&case.prompt_ids, &params, 2, |_| {})?;
        let same = ours
            .ids
            .iter()
            .zip(&case.greedy_ids)
            .take_while(|(a, b)| a == b)
            .count();
        agreed += same;
        total += case.greedy_ids.len();
        println!(
            "{:?}: quantized agrees with the reference for {same}/{} tokens (f32 profile: {})",
            case.prompt,
            case.greedy_ids.len(),
            mine.ids
                .iter()
                .zip(&case.greedy_ids)
                .take_while(|(a, b)| a == b)
                .count()
        );
        let mut case_worst = 0.0f32;
        for t in 0..case.greedy_ids.len() {
            let mut prefix = case.prompt_ids.clone();
            prefix.extend_from_slice(&case.greedy_ids[..t]);
            let reference = f32_model.next_token_logits(&prefix, 2)?;
            let logits = quantized.next_token_logits(&prefix, 2)?;
            let gap = reference
                .iter()
                .zip(&logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            case_worst = case_worst.max(gap);
            if t == same && t < ours.ids.len() {
                let (r, q) = (case.greedy_ids[t] as usize, ours.ids[t] as usize);
                println!(
                    "  flip at generated token {t}: reference {r} (f32 {:.4}, quantized {:.4}) vs quantized {q} (f32 {:.4}, quantized {:.4}); f32 gap {:.4}",
                    reference[r], logits[r], reference[q], logits[q], reference[r] - reference[q]
                );
            }
        }
        worst = worst.max(case_worst);
        println!("  largest |quantized - f32| logit along the reference: {case_worst:.4}");
    }
    println!(
        "greedy agreement (tokens before the first flip): {agreed}/{total}; largest logit difference {worst:.4}"
    );
    Ok(())
}
