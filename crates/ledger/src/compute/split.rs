//! The fee split: a price paid out of an escrow to the provider, the model's owner, the
//! auditor pool and the treasury, in the chain's basis points. Settled jobs and session
//! payouts (the module above) pay by this one rule.

use super::{params, BPS};
use crate::bank;
use crate::models;
use crate::state::StateDelta;
use piazza_primitives::{Address, Amount};

/// Where one price went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceSplit {
    pub to_provider: Amount,
    pub to_model_owner: Amount,
    pub to_auditor_pool: Amount,
    pub to_treasury: Amount,
}

/// Pays `price` from `from` to `provider`, the owner of `model` (the treasury when the model
/// has no record), `auditors` (the auditor pool, or the auditor that attested) and the
/// treasury. `from` must hold `price`.
pub fn pay_price(
    state: &mut StateDelta<'_>,
    from: &Address,
    price: Amount,
    provider: &Address,
    model: &str,
    auditors: &Address,
) -> PriceSplit {
    let split = params(state).split;
    let share = |bps: u16| {
        price
            .checked_mul_div(bps as u128, BPS)
            .expect("bps shares of a u128 price fit")
    };
    let (to_model_owner, to_auditor_pool, to_treasury) = (
        share(split.model_owner_bps),
        share(split.auditor_pool_bps),
        share(split.treasury_bps),
    );
    let to_provider = price
        .checked_sub(to_model_owner)
        .and_then(|p| p.checked_sub(to_auditor_pool))
        .and_then(|p| p.checked_sub(to_treasury))
        .expect("shares sum to at most the price");
    let owner = models::record(state, model)
        .map(|m| m.owner)
        .unwrap_or_else(bank::treasury);
    for (to, amount) in [
        (*provider, to_provider),
        (owner, to_model_owner),
        (*auditors, to_auditor_pool),
        (bank::treasury(), to_treasury),
    ] {
        if !amount.is_zero() {
            bank::transfer(state, from, &to, amount).expect("the escrow holds the price it pays");
        }
    }
    PriceSplit {
        to_provider,
        to_model_owner,
        to_auditor_pool,
        to_treasury,
    }
}
