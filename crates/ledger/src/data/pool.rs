//! Contribution pools: an item earns weight only once a settled embedding job proves it is far
//! enough from every item already in the pool. The check uses integers only: the job's output
//! (little-endian f32s) is quantized to i8 at scale 127 by exact bit arithmetic, and squared
//! distances are summed in u64, so anyone re-checks it from the job's output alone.

use super::types::{Dataset, Item, Pool, Validation};
use super::{next_id, state_key, EMBEDDING_DIMS_MAX, POOL_ITEMS_MAX, WEIGHT_PER_ITEM};
use crate::bank::assets::{self, AssetId};
use crate::compute::{self, JobStatus};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::TxContext;
use crate::state::StateDelta;
use piazza_primitives::{Address, Amount, Hash};

pub(super) fn check_dims(dims: u16) -> Result<(), TxError> {
    if dims == 0 || dims as usize > EMBEDDING_DIMS_MAX {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            format!("an embedding has 1-{EMBEDDING_DIMS_MAX} dimensions"),
        ));
    }
    Ok(())
}

fn unknown(id: u64) -> TxError {
    TxError::new(ErrorCode::UnknownPool, format!("no pool {id}"))
}

fn rejected(message: String) -> TxError {
    TxError::new(ErrorCode::ContributionRejected, message)
}

/// Opens a pool and its dataset (whose revenue flows to the pool's weights); returns the pool
/// id and the dataset id.
pub(super) fn create(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    owner: Address,
    validation: Validation,
    schema: &str,
    license: &str,
    price: Amount,
) -> Result<(u64, u64), TxError> {
    let id = next_id(state, state_key::next_pool());
    assets::register(state, &AssetId::Pool(id), owner, None)?;
    let dataset = super::dataset::register(
        state,
        ctx,
        Dataset {
            owner,
            blob: Hash::ZERO,
            schema: schema.to_string(),
            license: license.to_string(),
            price,
            encrypted: false,
            pool: Some(id),
        },
    )?;
    state.put(
        state_key::pool(id),
        &Pool {
            owner,
            dataset,
            validation,
            items: 0,
        },
    );
    ctx.emit(Event::new(
        "data.pool_created",
        &[("pool", id.to_string()), ("dataset", dataset.to_string())],
    ));
    Ok((id, dataset))
}

/// One little-endian f32 times 127, rounded half away from zero and clamped to ±127, by bit
/// arithmetic (no floating point). `None` for NaN or infinity.
fn quantize_one(bits: u32) -> Option<i8> {
    let negative = bits >> 31 == 1;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = (bits & 0x7f_ffff) as u64;
    if exponent == 0xff {
        return None;
    }
    if exponent == 0 {
        return Some(0); // zero or subnormal: below 2^-126, far under half a step
    }
    // value · 127 = (2^23 + mantissa) · 127 · 2^(exponent − 150)
    let scaled = ((1u64 << 23) | mantissa) * 127;
    let shift = exponent - 150;
    let magnitude = if shift >= 0 {
        127 // the value is at least 2^23
    } else {
        let down = (-shift) as u32;
        if down > 40 {
            0
        } else {
            ((scaled + (1 << (down - 1))) >> down).min(127)
        }
    };
    let magnitude = magnitude as i8;
    Some(if negative { -magnitude } else { magnitude })
}

/// An embedding job's output (little-endian f32s) quantized to i8 (stored as bytes), or
/// `None` when its length is not whole f32s or a value is not finite.
pub fn quantize(output: &[u8]) -> Option<Vec<u8>> {
    if !output.len().is_multiple_of(4) {
        return None;
    }
    output
        .chunks_exact(4)
        .map(|c| quantize_one(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).map(|q| q as u8))
        .collect()
}

/// The squared Euclidean distance between two quantized embeddings of equal length.
pub fn distance_sq(a: &[u8], b: &[u8]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x as i8 as i64) - (*y as i8 as i64);
            (d * d) as u64
        })
        .sum()
}

pub(super) fn contribute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
    hash: Hash,
    job_id: u64,
) -> Result<(), TxError> {
    let mut pool = super::pool(state, id).ok_or_else(|| unknown(id))?;
    let Validation::Embedding {
        model,
        dims,
        min_distance_sq,
    } = &pool.validation
    else {
        return Err(rejected(format!(
            "pool {id} takes weight from labels, not contributions"
        )));
    };
    if pool.items >= POOL_ITEMS_MAX {
        return Err(TxError::new(
            ErrorCode::QueueFull,
            format!("pool {id} holds {POOL_ITEMS_MAX} items, the most it may"),
        ));
    }
    if state.get::<bool>(&state_key::used_job(job_id)).is_some() {
        return Err(rejected(format!("job {job_id} already validated an item")));
    }
    let job = compute::job(state, job_id).ok_or_else(|| rejected(format!("no job {job_id}")))?;
    if job.status != JobStatus::Settled || job.model != *model || job.client != ctx.sender {
        return Err(rejected(format!(
            "job {job_id} must be a settled `{model}` job of {}",
            ctx.sender
        )));
    }
    if compute::input_hash(&job.input) != hash {
        return Err(rejected(format!("job {job_id} embedded another item")));
    }
    let output = job.result.map(|r| r.output).unwrap_or_default();
    let embedding = quantize(&output)
        .filter(|e| e.len() == *dims as usize)
        .ok_or_else(|| rejected(format!("job {job_id}'s output is not {dims} finite f32s")))?;
    for index in 0..pool.items {
        let Some(other) = super::item(state, id, index) else {
            continue;
        };
        let d = distance_sq(&embedding, &other.embedding);
        if d <= *min_distance_sq as u64 {
            return Err(rejected(format!(
                "item is {d} (squared, quantized) from item {index}, not above {min_distance_sq}"
            )));
        }
    }
    state.put(
        state_key::item(id, pool.items),
        &Item {
            contributor: ctx.sender,
            hash,
            job: job_id,
            embedding,
        },
    );
    state.put(state_key::used_job(job_id), &true);
    pool.items += 1;
    state.put(state_key::pool(id), &pool);
    assets::grant(state, &AssetId::Pool(id), &ctx.sender, WEIGHT_PER_ITEM)?;
    ctx.emit(Event::new(
        "data.contributed",
        &[
            ("pool", id.to_string()),
            ("contributor", ctx.sender.to_string()),
            ("item", hash.to_string()),
            ("job", job_id.to_string()),
        ],
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_matches_rounding_of_exact_values() {
        // Values whose product with 127 is exact in f32 arithmetic checked against integers.
        let cases: [(f32, i8); 9] = [
            (0.0, 0),
            (1.0, 127),
            (-1.0, -127),
            (0.5, 64), // 63.5 rounds away from zero
            (-0.5, -64),
            (2.0, 127), // clamped
            (0.25, 32), // 31.75
            (1e-30, 0),
            (0.1, 13), // 12.7
        ];
        for (value, expected) in cases {
            assert_eq!(quantize_one(value.to_bits()), Some(expected), "{value}");
        }
        assert_eq!(quantize_one(f32::NAN.to_bits()), None);
        assert_eq!(quantize_one(f32::INFINITY.to_bits()), None);
        assert_eq!(quantize(&[0, 0, 0]), None);
    }

    #[test]
    fn distance_is_squared_euclidean_over_signed_bytes() {
        let a = [127u8, 0, (-127i8) as u8];
        let b = [(-127i8) as u8, 0, (-127i8) as u8];
        assert_eq!(distance_sq(&a, &b), 254 * 254);
        assert_eq!(distance_sq(&a, &a), 0);
    }
}
