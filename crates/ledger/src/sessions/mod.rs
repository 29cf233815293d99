//! `sessions`: interactive serving settled on chain (DESIGN.md §3.1). A client escrows a
//! deposit for a model; the chain assigns a provider; requests, receipts and vouchers travel
//! off chain, and the provider commits a receipts root with the latest voucher.

pub mod types;

pub use types::*;
