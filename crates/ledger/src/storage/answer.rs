//! `AnswerChallenge`: the holder sends the challenged chunk with its Merkle path. A correct
//! answer pays (the epoch price, or the repair bounty for a rebuilt shard); a wrong one fails
//! the shard as a missed deadline does.

use super::lifecycle::{fail_shard, Failure};
use super::*;
use crate::bank;
use piazza_primitives::blob::{self, MerklePath};

pub(super) fn check_stateless(chunk: &[u8]) -> Result<(), TxError> {
    if chunk.is_empty() {
        return Err(invalid("a challenge answer carries its chunk"));
    }
    Ok(())
}

pub(super) fn check_stateful(
    state: &StateDelta<'_>,
    ctx: &TxContext<'_>,
    id: &u64,
    shard: &u16,
    chunk_index: &u64,
) -> Result<(Deal, Challenge), TxError> {
    let deal = existing(state, *id)?;
    if deal.status != DealStatus::Active {
        return Err(error(
            ErrorCode::DealClosed,
            format!("deal {id} is not active"),
        ));
    }
    let Some(held) = deal.shards.get(usize::from(*shard)) else {
        return Err(invalid(format!(
            "deal {id} has {} shards, not {}",
            deal.shards.len(),
            u32::from(*shard) + 1
        )));
    };
    if held.provider != Some(ctx.sender) {
        return Err(error(
            ErrorCode::NotShardHolder,
            format!("{} does not hold shard {shard} of deal {id}", ctx.sender),
        ));
    }
    let Some(challenge) = held
        .challenge
        .clone()
        .filter(|c| ctx.block.height <= c.deadline_height)
    else {
        return Err(error(
            ErrorCode::ChallengeClosed,
            format!("no open challenge on shard {shard} of deal {id} (answered, missed or none)"),
        ));
    };
    if challenge.chunk_index != *chunk_index {
        return Err(invalid(format!(
            "the challenge asks for chunk {}, not {chunk_index}",
            challenge.chunk_index
        )));
    }
    Ok((deal, challenge))
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: &u64,
    shard: &u16,
    chunk_index: &u64,
    chunk: &[u8],
    path: &MerklePath,
) -> Result<(), TxError> {
    let (mut deal, challenge) = check_stateful(state, ctx, id, shard, chunk_index)?;
    let index = usize::from(*shard);
    let root = deal.blob.shard_roots[index];
    if !blob::verify(&root, deal.blob.shard_len, *chunk_index, chunk, path) {
        fail_shard(
            state,
            &mut deal,
            *shard,
            Failure::WrongAnswer,
            &mut ctx.events,
        );
        put_deal(state, &deal);
        return Ok(());
    }
    let sender = ctx.sender;
    let pay = match challenge.kind {
        ChallengeKind::Epoch => {
            let remaining = deal.escrow.checked_sub(deal.paid).ok_or_else(overflow)?;
            deal.shard_epoch_price()
                .ok_or_else(overflow)?
                .min(remaining)
        }
        ChallengeKind::Repair => std::mem::take(&mut deal.shards[index].bounty),
    };
    if challenge.kind == ChallengeKind::Epoch {
        deal.paid = deal.paid.checked_add(pay).ok_or_else(overflow)?;
    }
    bank::transfer(state, &escrow(), &sender, pay)?;
    let held = &mut deal.shards[index];
    held.challenge = None;
    held.proven = true;
    put_deal(state, &deal);
    if let Some(mut p) = provider(state, &sender) {
        p.proofs += 1;
        put_provider(state, &p);
    }
    ctx.emit(Event::new(
        "storage.proved",
        &[
            ("deal", id.to_string()),
            ("shard", shard.to_string()),
            ("provider", sender.to_string()),
            ("chunk", chunk_index.to_string()),
            (
                "kind",
                match challenge.kind {
                    ChallengeKind::Epoch => "epoch",
                    ChallengeKind::Repair => "repair",
                }
                .into(),
            ),
            ("paid", amount_text(pay)),
        ],
    ));
    Ok(())
}
