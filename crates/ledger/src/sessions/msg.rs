//! The sessions module's messages and their canonical encoding.

use super::types::{Receipt, ReceiptProof, SignedReceipt, SignedRequest, SignedVoucher};
use crate::models::MODEL_NAME_BYTES_MAX;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Amount, Hash, PublicKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Escrows `deposit` for a session on `model`; a provider is assigned with a later
    /// block's randomness. `owner_key` is the sender's own key (it signs requests and
    /// vouchers); `authorised` may sign them too.
    Open {
        model: String,
        owner_key: PublicKey,
        authorised: Option<PublicKey>,
        deposit: Amount,
        max_price_per_unit: Amount,
        expiry_blocks: u64,
    },
    /// Adds `amount` to a session's deposit (its owner).
    TopUp { session: u64, amount: Amount },
    /// The provider's commit: the root over `count` receipts since its last commit, the
    /// units they declare, and the latest voucher.
    Commit {
        session: u64,
        root: Hash,
        count: u64,
        units: u64,
        voucher: SignedVoucher,
    },
    /// (Receipts and requests are boxed: they are the message's bulk.)
    /// The provider's answer to an audit: receipt `index` of commit `commit`, its proof, and
    /// the signed request it served.
    Reveal {
        session: u64,
        commit: u64,
        index: u64,
        receipt: Box<Receipt>,
        proof: ReceiptProof,
        request: Box<SignedRequest>,
    },
    /// The owner disputes a receipt of a commit in its window, with its own trace (as a
    /// verify challenge, bonded).
    Challenge {
        session: u64,
        commit: u64,
        receipt: Box<SignedReceipt>,
        request: Box<SignedRequest>,
        trace_root: Hash,
        step_count: u64,
        ids: Hash,
    },
    /// The owner ends the session: the provider may still commit for one challenge window,
    /// then the unspent deposit returns.
    Close { session: u64 },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::Open {
                model,
                owner_key,
                authorised,
                deposit,
                max_price_per_unit,
                expiry_blocks,
            } => {
                w.u8(0);
                w.str(model);
                w.value(owner_key);
                w.option(authorised);
                w.value(deposit);
                w.value(max_price_per_unit);
                w.u64(*expiry_blocks);
            }
            Msg::TopUp { session, amount } => {
                w.u8(1);
                w.u64(*session);
                w.value(amount);
            }
            Msg::Commit {
                session,
                root,
                count,
                units,
                voucher,
            } => {
                w.u8(2);
                w.u64(*session);
                w.value(root);
                w.u64(*count);
                w.u64(*units);
                w.value(voucher);
            }
            Msg::Reveal {
                session,
                commit,
                index,
                receipt,
                proof,
                request,
            } => {
                w.u8(3);
                w.u64(*session);
                w.u64(*commit);
                w.u64(*index);
                w.value(receipt.as_ref());
                w.value(proof);
                w.value(request.as_ref());
            }
            Msg::Challenge {
                session,
                commit,
                receipt,
                request,
                trace_root,
                step_count,
                ids,
            } => {
                w.u8(4);
                w.u64(*session);
                w.u64(*commit);
                w.value(receipt.as_ref());
                w.value(request.as_ref());
                w.value(trace_root);
                w.u64(*step_count);
                w.value(ids);
            }
            Msg::Close { session } => {
                w.u8(5);
                w.u64(*session);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Msg::Open {
                model: r.string(MODEL_NAME_BYTES_MAX)?,
                owner_key: r.value()?,
                authorised: r.option()?,
                deposit: r.value()?,
                max_price_per_unit: r.value()?,
                expiry_blocks: r.u64()?,
            },
            1 => Msg::TopUp {
                session: r.u64()?,
                amount: r.value()?,
            },
            2 => Msg::Commit {
                session: r.u64()?,
                root: r.value()?,
                count: r.u64()?,
                units: r.u64()?,
                voucher: r.value()?,
            },
            3 => Msg::Reveal {
                session: r.u64()?,
                commit: r.u64()?,
                index: r.u64()?,
                receipt: Box::new(r.value()?),
                proof: r.value()?,
                request: Box::new(r.value()?),
            },
            4 => Msg::Challenge {
                session: r.u64()?,
                commit: r.u64()?,
                receipt: Box::new(r.value()?),
                request: Box::new(r.value()?),
                trace_root: r.value()?,
                step_count: r.u64()?,
                ids: r.value()?,
            },
            5 => Msg::Close { session: r.u64()? },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "sessions message",
                })
            }
        })
    }
}
