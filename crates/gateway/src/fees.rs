//! What a job submission pays in transaction fees on the gateway's chain.
//!
//! The ledger charges `(tx_base_units + Σ message units + bytes × byte_units) × unit_price`
//! (`piazza_ledger::executor::fee_for`). Every transaction the gateway sends carries exactly one
//! `SubmitJob`, so its fee is `fixed + per_byte × bytes` with `fixed = unit_price ×
//! (tx_base_units + SubmitJob's units)` and `per_byte = unit_price × byte_units`. The gateway
//! signs each job with exactly that fee as its `max_fee` and reserves exactly that against the
//! API key, so an input up to the ledger's limit is never refused for its size.
//!
//! The node serves no call for the fee parameters, so [`learn`] measures them: it asks the node
//! to admit probe transactions from a fresh, unfunded key. Admission checks the fee before the
//! balance, so `fee_too_low` means the probe's `max_fee` was below the fee and
//! `insufficient_funds` means it was enough; nothing is ever admitted (the key holds nothing).
//! Two probe sizes give `fixed` and `per_byte`.

use piazza_client::{Client, ClientError};
use piazza_ledger::compute::{self, JobParams};
use piazza_ledger::genesis::FeeParams;
use piazza_ledger::module::Module;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Amount, SecretKey};

/// Input bytes of the two probes (their difference measures the per-byte fee; the ledger
/// refuses an empty input before looking at the fee).
const PROBE_INPUT_BYTES: [usize; 2] = [1, 1025];
/// The search for a fee doubles its guess at most this many times (2^100 base units is far
/// beyond any supply).
const PROBE_DOUBLINGS_MAX: u32 = 100;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeeError {
    #[error("node: {0}")]
    Node(#[from] ClientError),
    #[error("measuring the chain's fees: {0}")]
    Probe(String),
}

/// The fee of a transaction carrying one `SubmitJob`, by its encoded size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFees {
    pub fixed: Amount,
    pub per_byte: Amount,
}

impl JobFees {
    /// The schedule the ledger applies under `params`.
    pub fn from_params(params: &FeeParams) -> Option<JobFees> {
        let job_units = compute::Compute::fee_units(&probe_job(1));
        let units = params.tx_base_units.checked_add(job_units)?;
        Some(JobFees {
            fixed: params.unit_price.checked_mul(u128::from(units))?,
            per_byte: params
                .unit_price
                .checked_mul(u128::from(params.byte_units))?,
        })
    }

    /// The fee of a signed job transaction of `tx_bytes` bytes; `None` on overflow.
    pub fn fee(&self, tx_bytes: usize) -> Option<Amount> {
        self.per_byte
            .checked_mul(tx_bytes as u128)?
            .checked_add(self.fixed)
    }
}

/// The signed size of a job transaction, which is all its fee depends on: the nonce, the fee
/// cap and the key are fixed-width, so any values give the same size.
pub fn job_tx_bytes(chain_id: &str, job: compute::Msg) -> usize {
    let key = SecretKey::from_seed([0; 32]);
    Transaction {
        chain_id: chain_id.to_string(),
        sender: key.public_key(),
        nonce: 0,
        max_fee: Amount::ZERO,
        messages: vec![Message::Compute(job)],
    }
    .sign(&key)
    .encoded_len()
}

fn probe_job(input_bytes: usize) -> compute::Msg {
    compute::Msg::SubmitJob {
        model: "fee-probe".into(),
        input: vec![b'x'; input_bytes],
        params: JobParams::default(),
        max_units: 1,
        max_price: Amount::new(1),
    }
}

/// Whether a probe with this `max_fee` passes the fee check.
async fn enough(
    client: &Client,
    chain_id: &str,
    key: &SecretKey,
    job: &compute::Msg,
    max_fee: Amount,
) -> Result<bool, FeeError> {
    let tx = Transaction {
        chain_id: chain_id.to_string(),
        sender: key.public_key(),
        nonce: 0,
        max_fee,
        messages: vec![Message::Compute(job.clone())],
    }
    .sign(key);
    match client.submit(&tx).await {
        Ok(_) => Err(FeeError::Probe(
            "the node admitted an unfunded probe transaction".into(),
        )),
        Err(e) => match e.ledger_error_name() {
            Some("fee_too_low") => Ok(false),
            Some("insufficient_funds") => Ok(true),
            _ => Err(FeeError::Node(e)),
        },
    }
}

/// The smallest `max_fee` the node admits for `job`: doubling, then bisection.
async fn measure(
    client: &Client,
    chain_id: &str,
    key: &SecretKey,
    job: &compute::Msg,
) -> Result<Amount, FeeError> {
    if enough(client, chain_id, key, job, Amount::ZERO).await? {
        return Ok(Amount::ZERO);
    }
    let (mut low, mut high) = (0u128, 1u128);
    let mut doublings = 0;
    while !enough(client, chain_id, key, job, Amount::new(high)).await? {
        doublings += 1;
        if doublings > PROBE_DOUBLINGS_MAX {
            return Err(FeeError::Probe(format!(
                "no fee below 2^{PROBE_DOUBLINGS_MAX} base units is enough"
            )));
        }
        low = high;
        high *= 2;
    }
    // `low` is too little, `high` is enough.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if enough(client, chain_id, key, job, Amount::new(middle)).await? {
            high = middle;
        } else {
            low = middle;
        }
    }
    Ok(Amount::new(high))
}

/// Measures the chain's job fees through the node's admission check (see the module's docs).
pub async fn learn(client: &Client, chain_id: &str) -> Result<JobFees, FeeError> {
    let key = SecretKey::generate();
    let mut points = [(0u128, 0u128); 2];
    for (point, input_bytes) in points.iter_mut().zip(PROBE_INPUT_BYTES) {
        let job = probe_job(input_bytes);
        let bytes = job_tx_bytes(chain_id, job.clone()) as u128;
        let fee = measure(client, chain_id, &key, &job).await?;
        *point = (bytes, fee.base_units());
    }
    let [(bytes_a, fee_a), (bytes_b, fee_b)] = points;
    let not_linear = || {
        FeeError::Probe(format!("fees {fee_a} at {bytes_a} bytes and {fee_b} at {bytes_b} bytes are not a fixed part plus a price per byte"))
    };
    let (extra_fee, extra_bytes) = (
        fee_b.checked_sub(fee_a).ok_or_else(not_linear)?,
        bytes_b - bytes_a,
    );
    if !extra_fee.is_multiple_of(extra_bytes) {
        return Err(not_linear());
    }
    let per_byte = extra_fee / extra_bytes;
    let fixed = fee_a
        .checked_sub(per_byte * bytes_a)
        .ok_or_else(not_linear)?;
    Ok(JobFees {
        fixed: Amount::new(fixed),
        per_byte: Amount::new(per_byte),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_ledger::executor::fee_for;

    #[test]
    fn the_schedule_is_the_ledgers_fee_for_job_transactions() {
        let params = [
            FeeParams::default(),
            FeeParams {
                unit_price: Amount::new(7),
                tx_base_units: 3,
                byte_units: 5,
            },
        ];
        for params in params {
            let fees = JobFees::from_params(&params).unwrap();
            for (model, input_bytes, stop) in [
                ("m", 0, vec![]),
                ("all-minilm-l6-v2", 300, vec!["\n".to_string()]),
                (
                    "smollm2-135m-instruct",
                    16 * 1024,
                    vec!["END".into(), "STOP".into()],
                ),
            ] {
                let job = compute::Msg::SubmitJob {
                    model: model.into(),
                    input: vec![b'x'; input_bytes],
                    params: JobParams {
                        stop,
                        max_tokens: 9,
                        ..JobParams::default()
                    },
                    max_units: 256,
                    max_price: Amount::new(123_456),
                };
                let key = SecretKey::from_seed([9; 32]);
                let tx = Transaction {
                    chain_id: "some-chain".into(),
                    sender: key.public_key(),
                    nonce: 41,
                    max_fee: Amount::pza(1),
                    messages: vec![Message::Compute(job.clone())],
                }
                .sign(&key);
                assert_eq!(job_tx_bytes("some-chain", job), tx.encoded_len());
                assert_eq!(
                    fees.fee(tx.encoded_len()),
                    Some(fee_for(&tx, &params).unwrap()),
                    "{params:?} {input_bytes} bytes"
                );
            }
        }
    }
}
