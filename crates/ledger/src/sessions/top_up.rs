//! `TopUp`: the owner adds to a session's deposit.

use super::*;
use crate::bank;
use piazza_primitives::Amount;

pub(super) fn check_stateless(amount: &Amount) -> Result<(), TxError> {
    if amount.is_zero() {
        return Err(invalid("a top-up is positive"));
    }
    Ok(())
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
    amount: &Amount,
) -> Result<(), TxError> {
    let mut session = existing(state, *id)?;
    bank::transfer(state, &ctx.sender, &escrow(), *amount)?;
    session.deposit = session
        .deposit
        .checked_add(*amount)
        .ok_or_else(|| error(ErrorCode::Overflow, "the deposit overflows"))?;
    put_session(state, &session);
    ctx.emit(Event::new(
        "sessions.topped_up",
        &[
            ("session", id.to_string()),
            ("amount", amount_text(*amount)),
            ("deposit", amount_text(session.deposit)),
        ],
    ));
    Ok(())
}
