//! What a job submission pays in transaction fees on the gateway's chain.
//!
//! The ledger charges `(tx_base_units + Σ message units + bytes × byte_units) × unit_price`
//! (`piazza_ledger::executor::fee_for`). Every transaction the gateway sends carries exactly one
//! `SubmitJob`, so its fee is `fixed + per_byte × bytes` with `fixed = unit_price ×
//! (tx_base_units + SubmitJob's units)` and `per_byte = unit_price × byte_units`. The gateway
//! signs each job with exactly that fee as its `max_fee` and reserves exactly that against the
//! API key, so an input up to the ledger's limit is never refused for its size.
//!
//! A session transaction (open, top-up, close) carries one `sessions::Msg`; its fee,
//! [`JobFees::message_fee`], is reserved against the API key whose request may send it and
//! charged when it is sent, as a job's is.
//!
//! The node states its chain's fee parameters in `piazza_status`; [`learn`] reads them.

use piazza_client::{Client, ClientError};
use piazza_ledger::compute::{self, JobParams};
use piazza_ledger::genesis::FeeParams;
use piazza_ledger::module::Module;
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::{Amount, SecretKey};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeeError {
    #[error("node: {0}")]
    Node(#[from] ClientError),
    #[error("the chain's fees: {0}")]
    Probe(String),
}

/// The fee of a transaction carrying one `SubmitJob`, by its encoded size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobFees {
    pub fixed: Amount,
    pub per_byte: Amount,
    /// The price of one fee unit.
    pub unit_price: Amount,
    /// The units every transaction pays before its messages.
    pub tx_base_units: u64,
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
            unit_price: params.unit_price,
            tx_base_units: params.tx_base_units,
        })
    }

    /// The fee of a signed transaction carrying `message` alone on `chain_id`; `None` on
    /// overflow.
    pub fn message_fee(&self, chain_id: &str, message: Message) -> Option<Amount> {
        let units = self.tx_base_units.checked_add(message.fee_units())?;
        let bytes = tx_bytes(chain_id, message);
        self.unit_price
            .checked_mul(u128::from(units))?
            .checked_add(self.per_byte.checked_mul(bytes as u128)?)
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
    tx_bytes(chain_id, Message::Compute(job))
}

/// The signed size of a transaction carrying `message` alone.
fn tx_bytes(chain_id: &str, message: Message) -> usize {
    let key = SecretKey::from_seed([0; 32]);
    Transaction {
        chain_id: chain_id.to_string(),
        sender: key.public_key(),
        nonce: 0,
        max_fee: Amount::ZERO,
        messages: vec![message],
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

/// The chain's job fees, from the fee schedule the node states in `piazza_status`.
pub async fn learn(client: &Client) -> Result<JobFees, FeeError> {
    let info = client
        .status()
        .await?
        .fees
        .ok_or_else(|| FeeError::Probe("the node states no fee schedule".into()))?;
    let params = FeeParams {
        unit_price: Amount::new(info.unit_price.parse().map_err(|_| {
            FeeError::Probe(format!("unit price `{}` is not a number", info.unit_price))
        })?),
        tx_base_units: info.tx_base_units,
        byte_units: info.byte_units,
    };
    JobFees::from_params(&params)
        .ok_or_else(|| FeeError::Probe("the chain's fee schedule overflows".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_ledger::executor::fee_for;

    #[test]
    fn session_transactions_cost_the_ledgers_fee_for_them() {
        use piazza_ledger::sessions::Msg;
        let params = FeeParams {
            unit_price: Amount::new(7),
            tx_base_units: 3,
            byte_units: 5,
        };
        let fees = JobFees::from_params(&params).unwrap();
        let key = SecretKey::from_seed([9; 32]);
        for message in [
            Msg::Open {
                model: "smollm2-135m-instruct".into(),
                owner_key: key.public_key(),
                authorised: None,
                deposit: Amount::pza(12),
                max_price_per_unit: Amount::new(1_000),
                expiry_blocks: 50_000,
            },
            Msg::TopUp {
                session: 41,
                amount: Amount::pza(3),
            },
            Msg::Close { session: 7 },
        ] {
            let message = Message::Sessions(message);
            let tx = Transaction {
                chain_id: "some-chain".into(),
                sender: key.public_key(),
                nonce: 3,
                max_fee: Amount::pza(1),
                messages: vec![message.clone()],
            }
            .sign(&key);
            assert_eq!(
                fees.message_fee("some-chain", message),
                Some(fee_for(&tx, &params).unwrap())
            );
        }
    }

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
