//! The fee split: a price paid out of an escrow to the provider, the model's owner, the
//! auditor pool and the treasury, in the chain's basis points. Settled jobs and session
//! payouts (the module above) pay by this one rule.
//!
//! The model's share is its revenue: [`pay_model_revenue`] splits it between the model's holders
//! (its owner while it has issued no shares) and its lineage, recursively.

use super::{params, BPS};
use crate::bank;
use crate::bank::assets::{self, AssetId};
use crate::models::{self, lineage, Source};
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
    pay_model_revenue(state, from, model, to_model_owner);
    for (to, amount) in [
        (*provider, to_provider),
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

/// Pays a model's revenue from `from`: `royalty_bps` of it flows up to the model's parents by
/// their weights (each parent's part rounded down, the last parent taking what the others
/// leave, so the parts sum to the royalty), recursively; the rest goes to the model's holders
/// (its owner while it has no units). A dataset parent's part goes to its holders or pool. A
/// model without a record pays the treasury; the walk stops at [`lineage::MAX_DEPTH`] levels
/// (a deeper record keeps its whole revenue), so it visits at most `MAX_PARENTS^MAX_DEPTH`
/// records. Every base unit of `amount` lands in exactly one place.
pub fn pay_model_revenue(state: &mut StateDelta<'_>, from: &Address, model: &str, amount: Amount) {
    pay_source(state, from, &Source::Model(model.to_string()), amount, 0);
}

fn pay_source(
    state: &mut StateDelta<'_>,
    from: &Address,
    source: &Source,
    amount: Amount,
    level: u8,
) {
    if amount.is_zero() {
        return;
    }
    let name = match source {
        Source::Dataset(id) => {
            assets::pay(
                state,
                from,
                &AssetId::Dataset(*id),
                amount,
                &bank::treasury(),
            )
            .expect("the escrow holds the revenue it pays");
            return;
        }
        Source::Model(name) => name,
    };
    let Some(record) = models::record(state, name) else {
        bank::transfer(state, from, &bank::treasury(), amount)
            .expect("the escrow holds the revenue it pays");
        return;
    };
    let parents = &record.lineage.parents;
    let up = if parents.is_empty() || level >= lineage::MAX_DEPTH {
        Amount::ZERO
    } else {
        amount
            .checked_mul_div(record.lineage.royalty_bps as u128, BPS)
            .expect("bps shares of a u128 amount fit")
    };
    let mut left = up;
    for (i, parent) in parents.iter().enumerate() {
        let part = if i + 1 == parents.len() {
            left
        } else {
            up.checked_mul_div(parent.weight_bps as u128, BPS)
                .expect("bps shares of a u128 amount fit")
        };
        left = left.checked_sub(part).expect("parts sum to the royalty");
        pay_source(state, from, &parent.source, part, level + 1);
    }
    let keep = amount
        .checked_sub(up)
        .expect("the royalty is at most the whole");
    if !keep.is_zero() {
        assets::pay(
            state,
            from,
            &AssetId::Model(name.clone()),
            keep,
            &record.owner,
        )
        .expect("the escrow holds the revenue it pays");
    }
}
