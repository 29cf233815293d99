//! Token choice: greedy, or seeded sampling whose every number is fixed by the job
//! (docs/llm.md §5).
//!
//! Random numbers come from a counter-based generator: draw `n` of a job with seed `s` is
//! `u64::from_le_bytes(BLAKE3("piazza.llm.sample.v1" ‖ s u64 LE ‖ n u64 LE)[0..8])`, turned into
//! a uniform `u = (x >> 11) · 2⁻⁵³ ∈ [0, 1)` (exact in f64). The sampling arithmetic orders
//! candidates by a total order (value by `total_cmp`, then lower id first), sums in that order,
//! and uses the pure-Rust `libm::exp`: the same seed gives the same tokens on every machine.

use std::cmp::Ordering;

/// Domain of the sampling random numbers.
pub const SAMPLE_DOMAIN: &str = "piazza.llm.sample.v1";

/// How tokens are chosen. `temperature == 0` is greedy (the other fields are then unused
/// except `repetition_penalty`).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: u32,
    /// Keep the smallest most-likely prefix whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Hugging Face's rule: a logit of a token already in the history is divided by the
    /// penalty if positive, multiplied if negative (1: off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl SamplingParams {
    pub fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }

    pub fn seeded(seed: u64, temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            seed,
            ..SamplingParams::greedy()
        }
    }

    /// Finite, non-negative temperature; `0 < top_p ≤ 1`; positive finite penalty.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "temperature {} must be finite and ≥ 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(format!(
                "repetition_penalty {} must be finite and > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// Uniform draw number `counter` of the job with `seed`, in `[0, 1)`.
pub fn uniform(seed: u64, counter: u64) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SAMPLE_DOMAIN.as_bytes());
    hasher.update(&seed.to_le_bytes());
    hasher.update(&counter.to_le_bytes());
    let bytes = hasher.finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes.as_bytes()[..8]);
    (u64::from_le_bytes(word) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Higher value first, then lower id: a strict total order on (value, id) pairs.
fn rank(a: (f32, u32), b: (f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Choose token number `index` from `logits` given the token `history` (the specification).
pub fn sample(logits: &[f32], history: &[u32], params: &SamplingParams, index: u64) -> u32 {
    // The logits themselves unless the penalty changes some (a greedy audit samples 49 152
    // logits per token: no copy).
    let mut scores = std::borrow::Cow::Borrowed(logits);
    if params.repetition_penalty != 1.0 {
        let scores = scores.to_mut();
        let mut seen: Vec<u32> = history
            .iter()
            .copied()
            .filter(|&id| (id as usize) < scores.len())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            let score = &mut scores[id as usize];
            *score = if *score < 0.0 {
                *score * params.repetition_penalty
            } else {
                *score / params.repetition_penalty
            };
        }
    }
    if scores.is_empty() {
        return 0;
    }
    if params.temperature == 0.0 {
        return argmax(&scores) as u32;
    }
    let mut candidates: Vec<(f32, u32)> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| (s / params.temperature, i as u32))
        .collect();
    let k = match params.top_k as usize {
        0 => candidates.len(),
        k => k.min(candidates.len()),
    };
    if k < candidates.len() {
        // The order is total (ids differ), so the selected set is unique.
        candidates.select_nth_unstable_by(k - 1, |a, b| rank(*a, *b));
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(|a, b| rank(*a, *b));
    let max = candidates[0].0 as f64;
    let weights: Vec<f64> = candidates
        .iter()
        .map(|&(z, _)| libm::exp(z as f64 - max))
        .collect();
    let total: f64 = weights.iter().fold(0.0, |acc, &w| acc + w);
    let mut kept = weights.len();
    if params.top_p < 1.0 {
        let target = params.top_p as f64 * total;
        let mut acc = 0.0f64;
        for (i, &w) in weights.iter().enumerate() {
            acc += w;
            if acc >= target {
                kept = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = weights[..kept].iter().fold(0.0, |acc, &w| acc + w);
    let target = uniform(params.seed, index) * kept_total;
    let mut acc = 0.0f64;
    for i in 0..kept {
        acc += weights[i];
        if target < acc {
            return candidates[i].1;
        }
    }
    candidates[kept - 1].1
}

/// `f32::total_cmp`'s order as a signed integer: comparing two keys compares the floats.
fn order_key(value: f32) -> i32 {
    let bits = value.to_bits() as i32;
    bits ^ ((((bits >> 31) as u32) >> 1) as i32)
}

/// The first index of the greatest of `scores` (not empty) in `total_cmp`'s order: the
/// greatest key in one pass (without a dependency from element to element, so it runs in
/// vectors), then the first index that holds it.
fn argmax(scores: &[f32]) -> usize {
    let best = scores
        .iter()
        .fold(i32::MIN, |best, &score| best.max(order_key(score)));
    scores
        .iter()
        .position(|&score| order_key(score) == best)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first strictly greater score in `total_cmp`'s order, element by element.
    fn first_greatest(scores: &[f32]) -> usize {
        let mut best = 0;
        for i in 1..scores.len() {
            if scores[i].total_cmp(&scores[best]) == Ordering::Greater {
                best = i;
            }
        }
        best
    }

    fn score() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -3.0f32..3.0,
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::NAN),
            1 => Just(-f32::NAN),
            1 => any::<u32>().prop_map(f32::from_bits),
        ]
    }

    proptest! {
        /// Ties, signed zeros, infinities and NaNs of either sign: the first greatest in
        /// `total_cmp`'s order, as comparing element by element gives.
        #[test]
        fn argmax_is_the_first_greatest_in_total_order(
            scores in prop::collection::vec(score(), 1..300)
        ) {
            prop_assert_eq!(argmax(&scores), first_greatest(&scores));
        }
    }
}
