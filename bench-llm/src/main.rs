//! piazza-llm (f32 weights, deterministic kernels, full trace) next to candle-transformers'
//! `quantized_llama` (Q4_1 weights kept quantized, activations quantized to Q8, integer dot
//! products) on the same GGUF, prompt and thread count (1 and 2; candle runs in a rayon pool
//! of that size). Greedy decoding in both.

use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use piazza_llm::{GenerateParams, Generator};

const PROMPT: &str = "Decentralized compute networks let anyone rent out spare machines to run \
    models for others. The hard part is trust: how does the client know the provider really ran \
    the model it paid for, and did not return something cheaper? One answer is to make every \
    operator deterministic, so that any result can be checked by re-running it.";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for i in 1..values.len() {
        if values[i] > values[best] {
            best = i;
        }
    }
    best as u32
}

/// Prefill seconds, decode seconds, generated ids and the logits after the prompt.
fn candle_run(
    model: &mut ModelWeights,
    prompt: &[u32],
    new_tokens: usize,
) -> Result<(f64, f64, Vec<u32>, Vec<f32>), Error> {
    model.clear_kv_cache();
    let device = Device::Cpu;
    let start = Instant::now();
    let input = Tensor::new(prompt, &device)?.unsqueeze(0)?;
    let logits: Vec<f32> = model.forward(&input, 0)?.squeeze(0)?.to_vec1()?;
    let prefill_s = start.elapsed().as_secs_f64();
    let mut ids = vec![argmax(&logits)];
    let start = Instant::now();
    for i in 1..new_tokens {
        let input = Tensor::new(&[ids[i - 1]], &device)?.unsqueeze(0)?;
        let next: Vec<f32> = model
            .forward(&input, prompt.len() + i - 1)?
            .squeeze(0)?
            .to_vec1()?;
        ids.push(argmax(&next));
    }
    Ok((prefill_s, start.elapsed().as_secs_f64(), ids, logits))
}

fn main() -> Result<(), Error> {
    let new_tokens: usize = std::env::args().nth(1).map_or(Ok(32), |s| s.parse())?;
    let path = piazza_llm::default_model_path();
    let start = Instant::now();
    let generator = Generator::load(&path)?;
    println!("piazza load {:.2} s", start.elapsed().as_secs_f64());
    let start = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut candle = ModelWeights::from_gguf(content, &mut file, &Device::Cpu)?;
    println!("candle load {:.2} s", start.elapsed().as_secs_f64());
    let prompt = generator.tokenize(PROMPT)?;
    println!(
        "prompt {} tokens, {new_tokens} new tokens, greedy\n",
        prompt.len()
    );
    println!("engine  threads  prompt tok/s  generate tok/s");
    for threads in [1usize, 2] {
        let start = Instant::now();
        let first = generator.generate(&prompt, &GenerateParams::greedy(1), threads, |_| {})?;
        let prefill_s = start.elapsed().as_secs_f64();
        let mut params = GenerateParams::greedy(new_tokens);
        params.stop_at_eos = false;
        let start = Instant::now();
        let ours = generator.generate(&prompt, &params, threads, |_| {})?;
        let decode_s = start.elapsed().as_secs_f64() - prefill_s;
        println!(
            "piazza  {threads}        {:>10.1}  {:>14.1}   trace root {}",
            prompt.len() as f64 / prefill_s,
            (new_tokens - 1) as f64 / decode_s,
            ours.trace_root()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let (c_prefill, c_decode, c_ids, c_logits) =
            pool.install(|| candle_run(&mut candle, &prompt, new_tokens))?;
        println!(
            "candle  {threads}        {:>10.1}  {:>14.1}",
            prompt.len() as f64 / c_prefill,
            (new_tokens - 1) as f64 / c_decode
        );
        if threads == 1 {
            let ours_logits = generator.next_token_logits(&prompt, 1)?;
            let max_diff = ours_logits
                .iter()
                .zip(&c_logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let same = ours
                .ids
                .iter()
                .zip(&c_ids)
                .take_while(|(a, b)| a == b)
                .count();
            println!(
                "  first token: piazza {} candle {}; max |logit diff| after the prompt {max_diff:.3}; \
                 greedy ids agree for the first {same} of {new_tokens}",
                first.ids[0], c_ids[0]
            );
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
            println!(
                "\npeak memory of this process (both models loaded): {}",
                line.trim_start_matches("VmHWM:").trim()
            );
        }
    }
    Ok(())
}
