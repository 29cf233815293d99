//! `Close`: the owner ends a session. Its provider may still commit for one challenge window;
//! then, once every commit has paid out, the unspent deposit returns.

use super::*;

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
) -> Result<(), TxError> {
    let session = existing(state, *id)?;
    let block = ctx.block.clone();
    lifecycle::start_closing(state, session, &block, &mut ctx.events);
    Ok(())
}
