//! piazza-session: the off-chain half of a session (DESIGN.md §3.1), as pure state machines
//! over the ledger's session types, and the wire format both ends speak.
//!
//! - [`ProviderChannel`]: admits request `n + 1` only once request `n` is paid by a voucher
//!   whose cumulative total covers every receipt issued so far, so a client can never owe more
//!   than one request's worst case (`max_units × max_price_per_unit`); refuses forged,
//!   replayed, reordered and under-paying requests and vouchers with a typed [`Refusal`].
//! - [`ClientChannel`]: checks each receipt against its own request (provider signature,
//!   session, seq, input hash, output hash of what it received, units, price) before it signs
//!   the next cumulative voucher: it never pays for a receipt it did not check.
//! - [`wire`]: JSON bodies with signed objects as hex of their canonical bytes, and the
//!   server-sent events of a request (`delta`, `embedding`, `receipt`, `error`) with a bounded
//!   incremental parser.
//!
//! **Invariants:** no IO, clock or randomness; every refusal leaves the channel unchanged;
//! arithmetic on amounts is checked. **Must not know:** HTTP servers, engines, storage.
//!
//! ```
//! use piazza_ledger::job::JobParams;
//! use piazza_primitives::{Amount, Hash, SecretKey};
//! use piazza_session::{ClientChannel, ProviderChannel, Served, Terms};
//!
//! let (owner, provider) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
//! let terms = Terms {
//!     session: 1,
//!     owner_key: owner.public_key(),
//!     authorised: None,
//!     provider: provider.public_key().address(),
//!     deposit: Amount::new(1_000),
//!     max_price_per_unit: Amount::new(10),
//!     committed_seq: 0,
//!     committed_total: Amount::ZERO,
//!     open: true,
//! };
//! let mut client = ClientChannel::new(terms.clone(), owner).unwrap();
//! let mut server = ProviderChannel::new(terms, provider.public_key().address()).unwrap();
//! let request = client.request(b"hi".to_vec(), JobParams::default(), 5).unwrap();
//! server.admit(&request).unwrap();
//! let receipt = server
//!     .complete(Served { output: b"out", trace_root: Hash::ZERO, units: 3, input_units: 5, price_per_unit: Amount::new(7) })
//!     .unwrap()
//!     .sign(&provider);
//! let voucher = client.accept(&receipt, b"out").unwrap();
//! server.pay(&voucher).unwrap();
//! assert_eq!(server.view().paid, Amount::new(21));
//! ```

mod client;
mod provider;
pub mod wire;

pub use client::{ClientChannel, ReceiptRefusal};
pub use provider::{
    Commit, ProviderChannel, ProviderView, RestoreError, Served, SNAPSHOT_BYTES_MAX,
};

use piazza_ledger::sessions::{Session, SessionStatus, SignatureError};
use piazza_primitives::{Address, Amount, PublicKey};

/// Why a provider refused a request or a voucher. Each has a stable [`Refusal::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("session {session} is not open with this provider")]
    NotAssigned { session: u64 },
    #[error("request {seq} was already served (the next is {next})")]
    Replayed { seq: u64, next: u64 },
    #[error("request {seq} is out of order: the next is {next}")]
    OutOfOrder { seq: u64, next: u64 },
    #[error("request {seq} is still being served")]
    Busy { seq: u64 },
    #[error("request {seq} is not paid: {owed} owed, the latest voucher pays {paid}")]
    Unpaid {
        seq: u64,
        owed: Amount,
        paid: Amount,
    },
    #[error("a request may cost {worst} but only {left} of the deposit is not yet paid out")]
    OverDeposit { worst: Amount, left: Amount },
    #[error("max_units must be between 1 and {max}, not {max_units}")]
    MaxUnits { max_units: u64, max: u64 },
    #[error("voucher for {seq} is stale: request {paid_seq} is already paid")]
    StaleVoucher { seq: u64, paid_seq: u64 },
    #[error("voucher for {seq} pays a request not served (the latest is {served})")]
    VoucherAhead { seq: u64, served: u64 },
    #[error("voucher for {seq} pays {total}, less than the {owed} owed")]
    UnderPaid {
        seq: u64,
        total: Amount,
        owed: Amount,
    },
    #[error("voucher total {total} exceeds the deposit {deposit}")]
    VoucherOverDeposit { total: Amount, deposit: Amount },
    #[error("{held} receipts wait for a commit (at most {max}); retry after the next commit")]
    QueueFull { held: u64, max: u64 },
    #[error("the run used {units} units, over the request's {max_units}")]
    UnitsOverMax { units: u64, max_units: u64 },
    #[error("no request {seq} is being served")]
    NotInFlight { seq: u64 },
    #[error("amount overflow")]
    Overflow,
}

impl Refusal {
    /// A stable, machine-readable name (the `code` of a wire error).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Signature(SignatureError::WrongSigner { .. }) => "wrong_signer",
            Refusal::Signature(SignatureError::WrongSession { .. }) => "wrong_session",
            Refusal::Signature(_) => "bad_signature",
            Refusal::NotAssigned { .. } => "not_assigned",
            Refusal::Replayed { .. } => "replayed",
            Refusal::OutOfOrder { .. } => "out_of_order",
            Refusal::Busy { .. } => "busy",
            Refusal::Unpaid { .. } => "unpaid",
            Refusal::OverDeposit { .. } => "over_deposit",
            Refusal::MaxUnits { .. } => "max_units",
            Refusal::StaleVoucher { .. } => "stale_voucher",
            Refusal::VoucherAhead { .. } => "voucher_ahead",
            Refusal::UnderPaid { .. } => "under_paid",
            Refusal::VoucherOverDeposit { .. } => "voucher_over_deposit",
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::UnitsOverMax { .. } => "units_over_max",
            Refusal::NotInFlight { .. } => "not_in_flight",
            Refusal::Overflow => "overflow",
        }
    }
}

/// What both ends of a session need of its on-chain record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub session: u64,
    pub owner_key: PublicKey,
    pub authorised: Option<PublicKey>,
    pub provider: Address,
    /// What the session escrowed in all (what it holds plus what it paid out): no voucher
    /// total may pass it.
    pub deposit: Amount,
    pub max_price_per_unit: Amount,
    /// The latest committed voucher's seq and total (where a fresh channel starts).
    pub committed_seq: u64,
    pub committed_total: Amount,
    /// Open and assigned: requests may be served.
    pub open: bool,
}

impl Terms {
    /// The terms of `session`; `None` while no provider is assigned.
    pub fn of(session: &Session) -> Option<Terms> {
        Some(Terms {
            session: session.id,
            owner_key: session.owner_key,
            authorised: session.authorised,
            provider: session.provider?,
            deposit: session.deposit.checked_add(session.paid)?,
            max_price_per_unit: session.max_price_per_unit,
            committed_seq: session.committed_seq,
            committed_total: session.committed_total,
            open: session.status == SessionStatus::Open,
        })
    }

    /// Whether `key` may sign requests and vouchers.
    pub fn may_pay(&self, key: &PublicKey) -> bool {
        *key == self.owner_key || self.authorised.as_ref() == Some(key)
    }
}

/// `max_units × max_price_per_unit`: the most one request can cost.
pub fn worst_case(max_units: u64, max_price_per_unit: Amount) -> Option<Amount> {
    max_price_per_unit.checked_mul(u128::from(max_units))
}
