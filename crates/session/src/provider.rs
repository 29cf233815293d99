//! The provider's side of a session: which request it serves next, what it is owed, what it
//! has been paid, and the receipts its next commit covers.

use crate::{worst_case, Refusal, Terms};
use piazza_codec::{DecodeError, Reader, Writer};
use piazza_ledger::compute::{input_hash, output_hash, JOB_UNITS_MAX};
use piazza_ledger::sessions::{
    receipts_root, Receipt, SignedRequest, SignedVoucher, RECEIPTS_PER_COMMIT_MAX,
};
use piazza_primitives::{Address, Amount, Hash};

/// The largest [`ProviderChannel::snapshot`]: a full commit's receipts and a voucher.
pub const SNAPSHOT_BYTES_MAX: usize = 1024 + RECEIPTS_PER_COMMIT_MAX as usize * 256;

/// What a run produced, for [`ProviderChannel::complete`] to turn into a receipt.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub output: &'a [u8],
    pub trace_root: Hash,
    pub units: u64,
    /// The input's tokens the run read (a generation's prompt ids, an embedding's tokens);
    /// the receipt signs it.
    pub input_units: u64,
    /// The provider's own price, capped at the session's maximum.
    pub price_per_unit: Amount,
}

/// The provider's view of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProviderView {
    pub session: u64,
    /// The seq the next request must carry.
    pub next_seq: u64,
    /// The seq of the latest receipt issued (0: none).
    pub served_seq: u64,
    /// The seq and total of the latest voucher accepted.
    pub paid_seq: u64,
    pub paid: Amount,
    /// The sum of every receipt's price.
    pub owed: Amount,
    /// The request being served, if any.
    pub in_flight: Option<u64>,
}

/// What the next `sessions::Msg::Commit` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub root: Hash,
    pub count: u64,
    pub units: u64,
    pub voucher: SignedVoucher,
    /// The receipts under `root`, in order (kept to answer audits).
    pub receipts: Vec<Receipt>,
}

/// A request admitted and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    seq: u64,
    max_units: u64,
    input_hash: Hash,
}

/// One session as its provider serves it. See the crate docs for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderChannel {
    session: Terms,
    served_seq: u64,
    owed: Amount,
    /// The latest voucher accepted (`None` before the first).
    voucher: Option<SignedVoucher>,
    /// Receipts issued since the last commit, in seq order.
    receipts: Vec<Receipt>,
    in_flight: Option<InFlight>,
}

impl ProviderChannel {
    /// A channel for `session` served by `provider`, starting from what the chain has
    /// committed (a provider with its own durable state uses [`ProviderChannel::restore`]).
    pub fn new(session: Terms, provider: Address) -> Result<ProviderChannel, Refusal> {
        if !session.open || session.provider != provider {
            return Err(Refusal::NotAssigned {
                session: session.session,
            });
        }
        Ok(ProviderChannel {
            served_seq: session.committed_seq,
            owed: session.committed_total,
            voucher: None,
            receipts: Vec::new(),
            in_flight: None,
            session,
        })
    }

    /// Takes the chain's newer record of the session (a top-up, a close).
    pub fn refresh(&mut self, session: Terms) {
        if session.session == self.session.session && session.provider == self.session.provider {
            self.session = session;
        }
    }

    pub fn terms(&self) -> &Terms {
        &self.session
    }

    fn paid(&self) -> (u64, Amount) {
        match &self.voucher {
            Some(v) => (v.voucher.seq, v.voucher.total),
            None => (self.session.committed_seq, self.session.committed_total),
        }
    }

    pub fn view(&self) -> ProviderView {
        let (paid_seq, paid) = self.paid();
        ProviderView {
            session: self.session.session,
            next_seq: self.served_seq + 1,
            served_seq: self.served_seq,
            paid_seq,
            paid,
            owed: self.owed,
            in_flight: self.in_flight.map(|f| f.seq),
        }
    }

    /// Admits `request` if it is the next one, signed by a key of the session's owner, every
    /// earlier receipt is paid, and its worst case fits in the deposit not yet paid.
    pub fn admit(&mut self, request: &SignedRequest) -> Result<(), Refusal> {
        if !self.session.open {
            return Err(Refusal::NotAssigned {
                session: self.session.session,
            });
        }
        let terms = &self.session;
        request.verify_for(terms.session, |key| terms.may_pay(key))?;
        let body = &request.request;
        if let Some(f) = self.in_flight {
            return Err(Refusal::Busy { seq: f.seq });
        }
        let next = self.served_seq + 1;
        if body.seq < next {
            return Err(Refusal::Replayed {
                seq: body.seq,
                next,
            });
        }
        if body.seq > next {
            return Err(Refusal::OutOfOrder {
                seq: body.seq,
                next,
            });
        }
        let (paid_seq, paid) = self.paid();
        if paid_seq < self.served_seq || paid < self.owed {
            return Err(Refusal::Unpaid {
                seq: self.served_seq,
                owed: self.owed,
                paid,
            });
        }
        if self.receipts.len() as u64 >= RECEIPTS_PER_COMMIT_MAX {
            return Err(Refusal::QueueFull {
                held: self.receipts.len() as u64,
                max: RECEIPTS_PER_COMMIT_MAX,
            });
        }
        if body.max_units == 0 || body.max_units > JOB_UNITS_MAX {
            return Err(Refusal::MaxUnits {
                max_units: body.max_units,
                max: JOB_UNITS_MAX,
            });
        }
        let worst =
            worst_case(body.max_units, self.session.max_price_per_unit).ok_or(Refusal::Overflow)?;
        let left = self
            .session
            .deposit
            .checked_sub(paid)
            .unwrap_or(Amount::ZERO);
        if worst > left {
            return Err(Refusal::OverDeposit { worst, left });
        }
        self.in_flight = Some(InFlight {
            seq: body.seq,
            max_units: body.max_units,
            input_hash: input_hash(&body.input),
        });
        Ok(())
    }

    /// The receipt for the request in flight (unsigned: the caller signs it with the provider
    /// key). Charges `min(units, max_units) × price` at most `max_price_per_unit` a unit; a run
    /// over the request's units is refused (the client would refuse its receipt).
    pub fn complete(&mut self, served: Served<'_>) -> Result<Receipt, Refusal> {
        let f = self.in_flight.ok_or(Refusal::NotInFlight {
            seq: self.served_seq + 1,
        })?;
        if served.units > f.max_units {
            return Err(Refusal::UnitsOverMax {
                units: served.units,
                max_units: f.max_units,
            });
        }
        let per_unit = served.price_per_unit.min(self.session.max_price_per_unit);
        let price = per_unit
            .checked_mul(u128::from(served.units))
            .ok_or(Refusal::Overflow)?;
        let owed = self.owed.checked_add(price).ok_or(Refusal::Overflow)?;
        let receipt = Receipt {
            session: self.session.session,
            seq: f.seq,
            input_hash: f.input_hash,
            output_hash: output_hash(served.output),
            trace_root: served.trace_root,
            units: served.units,
            input_units: served.input_units,
            price,
        };
        self.receipts.push(receipt.clone());
        self.owed = owed;
        self.served_seq = f.seq;
        self.in_flight = None;
        Ok(receipt)
    }

    /// Forgets the request in flight without a receipt (the run failed or the client hung
    /// up): nothing is owed for it and the client may send the same seq again.
    pub fn abandon(&mut self, seq: u64) {
        if self.in_flight.is_some_and(|f| f.seq == seq) {
            self.in_flight = None;
        }
    }

    /// The latest receipt issued (a client that lost the connection reads it again).
    pub fn last_receipt(&self) -> Option<&Receipt> {
        self.receipts.last()
    }

    /// Accepts a cumulative voucher for the latest receipt that pays everything owed.
    pub fn pay(&mut self, voucher: &SignedVoucher) -> Result<(), Refusal> {
        let terms = &self.session;
        voucher.verify_for(terms.session, |key| terms.may_pay(key))?;
        let body = &voucher.voucher;
        let (paid_seq, _) = self.paid();
        if body.seq <= paid_seq {
            return Err(Refusal::StaleVoucher {
                seq: body.seq,
                paid_seq,
            });
        }
        if body.seq > self.served_seq {
            return Err(Refusal::VoucherAhead {
                seq: body.seq,
                served: self.served_seq,
            });
        }
        // seq is in (paid_seq, served_seq]: since request n + 1 is served only once n is
        // paid, that is exactly the latest receipt, and the total must cover all that is owed.
        if body.total < self.owed {
            return Err(Refusal::UnderPaid {
                seq: body.seq,
                total: body.total,
                owed: self.owed,
            });
        }
        if body.total > self.session.deposit {
            return Err(Refusal::VoucherOverDeposit {
                total: body.total,
                deposit: self.session.deposit,
            });
        }
        self.voucher = Some(voucher.clone());
        Ok(())
    }

    /// What the next commit posts: the receipts the latest voucher pays, if any since the
    /// last commit.
    pub fn commit(&self) -> Option<Commit> {
        let voucher = self.voucher.clone()?;
        let receipts: Vec<Receipt> = self
            .receipts
            .iter()
            .filter(|r| r.seq <= voucher.voucher.seq)
            .cloned()
            .collect();
        if receipts.is_empty() {
            return None;
        }
        Some(Commit {
            root: receipts_root(&receipts),
            count: receipts.len() as u64,
            units: receipts.iter().map(|r| r.units).sum(),
            voucher,
            receipts,
        })
    }

    /// Drops the receipts a commit through `seq` covered (the commit landed).
    pub fn committed(&mut self, seq: u64) {
        self.receipts.retain(|r| r.seq > seq);
    }

    /// Everything but the session record and the request in flight, in canonical bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.served_seq);
        w.value(&self.owed);
        w.option(&self.voucher);
        w.seq(&self.receipts);
        w.into_bytes()
    }

    /// A channel from its [`ProviderChannel::snapshot`] and the chain's current record; a
    /// request in flight when the snapshot was taken is forgotten (it had no receipt).
    pub fn restore(
        session: Terms,
        provider: Address,
        snapshot: &[u8],
    ) -> Result<ProviderChannel, RestoreError> {
        if snapshot.len() > SNAPSHOT_BYTES_MAX {
            return Err(RestoreError::TooLarge(snapshot.len()));
        }
        let mut channel = ProviderChannel::new(session, provider)?;
        let mut r = Reader::new(snapshot);
        channel.served_seq = r.u64()?;
        channel.owed = r.value()?;
        channel.voucher = r.option()?;
        channel.receipts = r.seq(RECEIPTS_PER_COMMIT_MAX as usize)?;
        r.finish()?;
        Ok(channel)
    }
}

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("snapshot: {0}")]
    Decode(#[from] DecodeError),
    #[error("snapshot of {0} bytes is over the limit")]
    TooLarge(usize),
}
