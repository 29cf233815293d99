//! The client's side of a session: its next request, the receipt it waits for, and the
//! cumulative total it has signed.

use crate::{worst_case, Terms};
use piazza_ledger::compute::{input_hash, output_hash, JOB_INPUT_BYTES_MAX, JOB_UNITS_MAX};
use piazza_ledger::job::JobParams;
use piazza_ledger::sessions::{
    Request, SignatureError, SignedReceipt, SignedRequest, SignedVoucher, Voucher,
};
use piazza_primitives::{Amount, SecretKey};

/// Why a client refused a receipt (or could not make a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptRefusal {
    #[error("receipt signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("no request is waiting for a receipt")]
    NothingPending,
    #[error("request {seq} still waits for its receipt")]
    Pending { seq: u64 },
    #[error("receipt for request {found}, the request sent was {expected}")]
    WrongSeq { expected: u64, found: u64 },
    #[error("receipt's input hash is not that of the request sent")]
    WrongInput,
    #[error("receipt's output hash is not that of the output received")]
    WrongOutput,
    #[error("receipt claims {units} units, over the request's {max_units}")]
    TooManyUnits { units: u64, max_units: u64 },
    /// A prompt count no run can read: none, or for an embedding (whose units are its
    /// input's tokens) other than its units.
    #[error("receipt counts {input_units} input tokens for {units} units")]
    WrongInputUnits { input_units: u64, units: u64 },
    #[error("receipt price {price} is over {units} units at {max_price_per_unit}")]
    Overpriced {
        price: Amount,
        units: u64,
        max_price_per_unit: Amount,
    },
    #[error("the request may cost {worst} but only {left} of the deposit is left")]
    OverDeposit { worst: Amount, left: Amount },
    #[error("input of {bytes} bytes is over {max}")]
    InputTooLarge { bytes: usize, max: usize },
    #[error("max_units must be between 1 and {max}, not {max_units}")]
    MaxUnits { max_units: u64, max: u64 },
    #[error("this key may not sign for session {session}")]
    NotMyKey { session: u64 },
    #[error("amount overflow")]
    Overflow,
}

/// One session as its client uses it. See the crate docs for the rules.
pub struct ClientChannel {
    session: Terms,
    key: SecretKey,
    next_seq: u64,
    /// What the signed vouchers add up to.
    paid: Amount,
    pending: Option<Request>,
}

impl ClientChannel {
    /// A channel starting from what the chain has committed; `key` must be the session's owner
    /// key or the key it authorised.
    pub fn new(session: Terms, key: SecretKey) -> Result<ClientChannel, ReceiptRefusal> {
        let (next_seq, paid) = (session.committed_seq + 1, session.committed_total);
        ClientChannel::resume(session, key, next_seq, paid)
    }

    /// A channel continuing after `next_seq - 1` requests paid `paid` in all.
    pub fn resume(
        session: Terms,
        key: SecretKey,
        next_seq: u64,
        paid: Amount,
    ) -> Result<ClientChannel, ReceiptRefusal> {
        if !session.may_pay(&key.public_key()) {
            return Err(ReceiptRefusal::NotMyKey {
                session: session.session,
            });
        }
        Ok(ClientChannel {
            session,
            key,
            next_seq: next_seq.max(1),
            paid,
            pending: None,
        })
    }

    pub fn terms(&self) -> &Terms {
        &self.session
    }

    /// The cumulative total of the vouchers signed so far.
    pub fn paid(&self) -> Amount {
        self.paid
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The request waiting for its receipt.
    pub fn pending(&self) -> Option<&Request> {
        self.pending.as_ref()
    }

    /// Signs the next request; its worst case must fit in what the deposit has left.
    pub fn request(
        &mut self,
        input: Vec<u8>,
        params: JobParams,
        max_units: u64,
    ) -> Result<SignedRequest, ReceiptRefusal> {
        if let Some(pending) = &self.pending {
            return Err(ReceiptRefusal::Pending { seq: pending.seq });
        }
        if input.len() > JOB_INPUT_BYTES_MAX {
            return Err(ReceiptRefusal::InputTooLarge {
                bytes: input.len(),
                max: JOB_INPUT_BYTES_MAX,
            });
        }
        if max_units == 0 || max_units > JOB_UNITS_MAX {
            return Err(ReceiptRefusal::MaxUnits {
                max_units,
                max: JOB_UNITS_MAX,
            });
        }
        let worst = worst_case(max_units, self.session.max_price_per_unit)
            .ok_or(ReceiptRefusal::Overflow)?;
        let left = self
            .session
            .deposit
            .checked_sub(self.paid)
            .unwrap_or(Amount::ZERO);
        if worst > left {
            return Err(ReceiptRefusal::OverDeposit { worst, left });
        }
        let request = Request {
            session: self.session.session,
            seq: self.next_seq,
            input,
            params,
            max_units,
        };
        self.pending = Some(request.clone());
        Ok(request.sign(&self.key))
    }

    /// Checks `receipt` against the pending request and the `output` received, then signs the
    /// voucher that pays it (the previous total plus its price).
    pub fn accept(
        &mut self,
        receipt: &SignedReceipt,
        output: &[u8],
    ) -> Result<SignedVoucher, ReceiptRefusal> {
        let pending = self
            .pending
            .as_ref()
            .ok_or(ReceiptRefusal::NothingPending)?;
        let provider = self.session.provider;
        receipt.verify_for(self.session.session, |key| key.address() == provider)?;
        let body = &receipt.receipt;
        if body.seq != pending.seq {
            return Err(ReceiptRefusal::WrongSeq {
                expected: pending.seq,
                found: body.seq,
            });
        }
        if body.input_hash != input_hash(&pending.input) {
            return Err(ReceiptRefusal::WrongInput);
        }
        if body.output_hash != output_hash(output) {
            return Err(ReceiptRefusal::WrongOutput);
        }
        if body.units > pending.max_units {
            return Err(ReceiptRefusal::TooManyUnits {
                units: body.units,
                max_units: pending.max_units,
            });
        }
        if body.input_units == 0 {
            return Err(wrong_input_units(receipt));
        }
        let max_price_per_unit = self.session.max_price_per_unit;
        let ceiling = max_price_per_unit
            .checked_mul(u128::from(body.units))
            .ok_or(ReceiptRefusal::Overflow)?;
        if body.price > ceiling {
            return Err(ReceiptRefusal::Overpriced {
                price: body.price,
                units: body.units,
                max_price_per_unit,
            });
        }
        let total = self
            .paid
            .checked_add(body.price)
            .ok_or(ReceiptRefusal::Overflow)?;
        let voucher = Voucher {
            session: self.session.session,
            seq: body.seq,
            total,
        }
        .sign(&self.key);
        self.paid = total;
        self.next_seq = body.seq + 1;
        self.pending = None;
        Ok(voucher)
    }

    /// [`ClientChannel::accept`] for an embedding's receipt, whose units are its input's
    /// tokens: the signed prompt count must equal them.
    pub fn accept_embedding(
        &mut self,
        receipt: &SignedReceipt,
        output: &[u8],
    ) -> Result<SignedVoucher, ReceiptRefusal> {
        if receipt.receipt.input_units != receipt.receipt.units {
            return Err(wrong_input_units(receipt));
        }
        self.accept(receipt, output)
    }

    /// Gives up on the pending request (the provider failed or vanished before its receipt):
    /// nothing was signed for it, and the next request reuses its seq.
    pub fn abandon(&mut self) -> Option<Request> {
        self.pending.take()
    }
}

fn wrong_input_units(receipt: &SignedReceipt) -> ReceiptRefusal {
    ReceiptRefusal::WrongInputUnits {
        input_units: receipt.receipt.input_units,
        units: receipt.receipt.units,
    }
}
