//! A deal's life in the block hooks: assignment of its shards with a later block's randomness,
//! an epoch's challenges, missed deadlines, failures that slash and queue a repair, repairs,
//! and the end that refunds what was not paid.

use super::*;
use crate::bank;
use crate::draw;
use crate::list::SCHEDULE_SLIP_BLOCKS_MAX;
use crate::staking::{self, Role};

/// Why a shard's holder lost it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    Missed,
    WrongAnswer,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Missed => "missed",
            Failure::WrongAnswer => "wrong_answer",
        }
    }
}

type HeightSet = List<u64, ACTIVE_DEALS_MAX>;

/// Adds deal `id` to the per-height set `key(height)`, or to the next height with room (at most
/// `SCHEDULE_SLIP_BLOCKS_MAX` later). Returns the height used.
fn add_at(
    state: &mut StateDelta<'_>,
    key: impl Fn(u64) -> Vec<u8>,
    height: u64,
    id: u64,
) -> Option<u64> {
    for slip in 0..=SCHEDULE_SLIP_BLOCKS_MAX {
        let at = height.checked_add(slip)?;
        let mut set: HeightSet = state.get(&key(at)).unwrap_or_default();
        if set.insert_sorted(id).is_ok() {
            state.put(key(at), &set);
            return Some(at);
        }
    }
    None
}

/// Moves `deal`'s next epoch to `height` (or the next height with room). Returns the height
/// used, or `None` (nothing changed) when no height in reach has room.
pub(super) fn reschedule_epoch(
    state: &mut StateDelta<'_>,
    deal: &mut Deal,
    height: u64,
) -> Option<u64> {
    let old = state_key::epochs(deal.next_epoch_height);
    let set: HeightSet = state.get(&old).unwrap_or_default();
    let mut without = set.clone();
    without.remove_sorted(&deal.id);
    if without.0.is_empty() {
        state.delete(old.clone());
    } else {
        state.put(old.clone(), &without);
    }
    match add_at(state, state_key::epochs, height, deal.id) {
        Some(at) => {
            deal.next_epoch_height = at;
            Some(at)
        }
        None => {
            state.put(old, &set);
            None
        }
    }
}

fn take_set(state: &mut StateDelta<'_>, key: Vec<u8>) -> Vec<u64> {
    let set: HeightSet = state.get(&key).unwrap_or_default();
    state.delete(key);
    set.0
}

fn shard_event(
    kind: &str,
    deal: u64,
    shard: u16,
    provider: &Address,
    extra: &[(&str, String)],
) -> Event {
    let mut attributes = vec![
        ("deal", deal.to_string()),
        ("shard", shard.to_string()),
        ("provider", provider.to_string()),
    ];
    attributes.extend(extra.iter().cloned());
    Event::new(kind, &attributes)
}

/// Providers that may take a shard of `deal` of `shard_len` bytes, with their `storage` bond as
/// weight: bonded at least the minimum, with room, holding no other shard of the deal and not
/// in `excluded`.
fn eligible(state: &StateDelta<'_>, deal: &Deal, excluded: &[Address]) -> Vec<(Address, u128)> {
    let minimum = params(state).min_provider_stake;
    let holders: Vec<Address> = deal.shards.iter().filter_map(|s| s.provider).collect();
    let mut candidates = Vec::new();
    for address in providers(state) {
        if holders.contains(&address) || excluded.contains(&address) {
            continue;
        }
        let Some(p) = provider(state, &address) else {
            continue;
        };
        let room = p
            .used_bytes
            .checked_add(deal.blob.shard_len)
            .is_some_and(|used| used <= p.capacity_bytes);
        let list_room = provider_shards(state, &address).len() < SHARDS_PER_PROVIDER_MAX;
        let stake = staking::bonded(state, &address, Role::Storage);
        if room && list_room && stake >= minimum && !stake.is_zero() {
            candidates.push((address, stake.base_units()));
        }
    }
    candidates
}

fn draw_chunk(block: &BlockContext, deal: &Deal, shard: u16) -> u64 {
    let chunks = deal.blob.chunks_per_shard().max(1);
    draw::uniform_below(
        "piazza/storage/challenge",
        &[
            &block.randomness.0,
            &deal.id.to_le_bytes(),
            &shard.to_le_bytes(),
            &deal.epochs_done.to_le_bytes(),
        ],
        u128::from(chunks),
    ) as u64
}

/// Gives shard `index` of `deal` to `holder`; a repair is challenged at once, to be answered
/// within `repair_blocks`.
fn assign(
    state: &mut StateDelta<'_>,
    block: &BlockContext,
    deal: &mut Deal,
    index: u16,
    holder: Address,
    repair: bool,
    events: &mut Vec<Event>,
) -> bool {
    let mut held: List<ShardRef, SHARDS_PER_PROVIDER_MAX> = List(provider_shards(state, &holder));
    let Some(mut p) = provider(state, &holder) else {
        return false;
    };
    let Some(used) = p.used_bytes.checked_add(deal.blob.shard_len) else {
        return false;
    };
    if held
        .insert_sorted(ShardRef {
            deal: deal.id,
            shard: index,
        })
        .is_err()
    {
        return false;
    }
    state.put(state_key::provider_shards(&holder), &held);
    p.used_bytes = used;
    put_provider(state, &p);
    let chunk_index = draw_chunk(block, deal, index);
    let repair_blocks = params(state).repair_blocks;
    let shard = &mut deal.shards[usize::from(index)];
    shard.provider = Some(holder);
    shard.proven = false;
    shard.assignments = shard.assignments.saturating_add(1);
    shard.challenge = None;
    let mut extra = vec![("repair", repair.to_string())];
    if repair {
        let deadline_height = block.height.saturating_add(repair_blocks);
        // A slipped deadline is caught by the deal's next epoch; answers after
        // `deadline_height` are refused either way.
        add_at(state, state_key::deadlines, deadline_height, deal.id);
        deal.shards[usize::from(index)].challenge = Some(Challenge {
            kind: ChallengeKind::Repair,
            chunk_index,
            issued_height: block.height,
            deadline_height,
        });
        extra.push(("chunk", chunk_index.to_string()));
        extra.push(("deadline_height", deadline_height.to_string()));
    }
    events.push(shard_event(
        "storage.shard_assigned",
        deal.id,
        index,
        &holder,
        &extra,
    ));
    true
}

/// Takes shard `index` of `deal` from its holder: its bytes leave the holder's capacity.
fn release(state: &mut StateDelta<'_>, deal: &Deal, index: u16, holder: &Address) {
    let mut held: List<ShardRef, SHARDS_PER_PROVIDER_MAX> = List(provider_shards(state, holder));
    held.remove_sorted(&ShardRef {
        deal: deal.id,
        shard: index,
    });
    if held.0.is_empty() {
        state.delete(state_key::provider_shards(holder));
    } else {
        state.put(state_key::provider_shards(holder), &held);
    }
    if let Some(mut p) = provider(state, holder) {
        p.used_bytes = p.used_bytes.saturating_sub(deal.blob.shard_len);
        put_provider(state, &p);
    }
}

/// Queues shard `index` for a new provider, unless it is queued already or was assigned
/// `ASSIGNMENTS_PER_SHARD_MAX` times. A full queue leaves it for the deal's next epoch.
fn queue_repair(state: &mut StateDelta<'_>, deal: &mut Deal, index: u16) {
    let shard = &deal.shards[usize::from(index)];
    if shard.waiting || shard.provider.is_some() || shard.assignments >= ASSIGNMENTS_PER_SHARD_MAX {
        return;
    }
    let mut queue: List<ShardRef, REPAIRS_QUEUE_MAX> =
        state.get(&state_key::repairs()).unwrap_or_default();
    if queue
        .push(ShardRef {
            deal: deal.id,
            shard: index,
        })
        .is_ok()
    {
        state.put(state_key::repairs(), &queue);
        deal.shards[usize::from(index)].waiting = true;
    }
}

/// The holder of shard `index` lost it (a missed deadline or a wrong answer): slashed if it had
/// proven the shard (the slash becomes the shard's repair bounty), no pay for this challenge,
/// and the shard is queued for another provider.
pub(super) fn fail_shard(
    state: &mut StateDelta<'_>,
    deal: &mut Deal,
    index: u16,
    failure: Failure,
    events: &mut Vec<Event>,
) {
    let slot = usize::from(index);
    let Some(holder) = deal.shards[slot].provider else {
        return;
    };
    let mut slashed = Amount::ZERO;
    if deal.shards[slot].proven {
        let amount = params(state).missed_proof_slash;
        slashed = staking::slash(state, &holder, Role::Storage, amount, Some(&escrow()));
        let shard = &mut deal.shards[slot];
        shard.bounty = shard
            .bounty
            .checked_add(slashed)
            .expect("bounties are bounded by the bonded supply");
        if let Some(mut p) = provider(state, &holder) {
            p.failures += 1;
            put_provider(state, &p);
        }
    }
    release(state, deal, index, &holder);
    // A shard is assigned at most `ASSIGNMENTS_PER_SHARD_MAX` times, so each of its holders
    // fits in the list: a push never refuses.
    let mut failed = failed_holders(state, deal.id, index);
    if !failed.0.contains(&holder) && failed.push(holder).is_ok() {
        state.put(state_key::shard_failed(deal.id, index), &failed);
    }
    let shard = &mut deal.shards[slot];
    shard.provider = None;
    shard.proven = false;
    shard.challenge = None;
    events.push(shard_event(
        "storage.shard_failed",
        deal.id,
        index,
        &holder,
        &[
            ("reason", failure.name().into()),
            ("slashed", amount_text(slashed)),
        ],
    ));
    queue_repair(state, deal, index);
}

/// The providers that failed shard `index` of deal `deal`.
fn failed_holders(
    state: &StateDelta<'_>,
    deal: u64,
    index: u16,
) -> List<Address, FAILED_HOLDERS_MAX> {
    state
        .get(&state_key::shard_failed(deal, index))
        .unwrap_or_default()
}

/// Most providers remembered as having failed one shard: one per assignment.
const FAILED_HOLDERS_MAX: usize = ASSIGNMENTS_PER_SHARD_MAX as usize;

/// Ends `deal`: the holders are released, unpaid bounties go to the treasury and the escrow
/// not paid returns to the owner.
fn finish(state: &mut StateDelta<'_>, mut deal: Deal, reason: &str, events: &mut Vec<Event>) {
    let mut bounties = Amount::ZERO;
    for index in 0..deal.shards.len() {
        let shard_index = index as u16;
        if let Some(holder) = deal.shards[index].provider.take() {
            release(state, &deal, shard_index, &holder);
        }
        let bounty = std::mem::take(&mut deal.shards[index].bounty);
        bounties = bounties
            .checked_add(bounty)
            .expect("bounties are bounded by the bonded supply");
        deal.shards[index].challenge = None;
        deal.shards[index].waiting = false;
        state.delete(state_key::shard_failed(deal.id, shard_index));
    }
    bank::transfer(state, &escrow(), &bank::treasury(), bounties)
        .expect("the escrow account holds every bounty");
    let refund = deal
        .escrow
        .checked_sub(deal.paid)
        .expect("a deal pays at most its escrow");
    bank::transfer(state, &escrow(), &deal.owner, refund)
        .expect("the escrow account holds every deal's unpaid escrow");
    deal.refunded = refund;
    deal.status = DealStatus::Ended;
    put_deal(state, &deal);
    state.delete(state_key::blob(&deal.blob.id));
    let mut mine: List<u64, DEALS_PER_OWNER_MAX> = List(deals_of_owner(state, &deal.owner));
    mine.remove_sorted(&deal.id);
    if mine.0.is_empty() {
        state.delete(state_key::of_owner(&deal.owner));
    } else {
        state.put(state_key::of_owner(&deal.owner), &mine);
    }
    let active: u64 = state.get(&state_key::active_count()).unwrap_or(0);
    state.put(state_key::active_count(), &active.saturating_sub(1));
    events.push(Event::new(
        "storage.deal_ended",
        &[
            ("deal", deal.id.to_string()),
            ("reason", reason.into()),
            ("paid", amount_text(deal.paid)),
            ("refunded", amount_text(refund)),
            ("bounties_to_treasury", amount_text(bounties)),
        ],
    ));
}

/// Assigns every shard of the deals opened before this block to distinct providers,
/// stake-weighted; a deal that cannot find `k + m` of them is refunded.
pub(super) fn assign_pending(
    state: &mut StateDelta<'_>,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    for id in crate::list::take::<ACTIVE_DEALS_MAX>(state, state_key::pending()) {
        let Some(mut deal) = deal(state, id) else {
            continue;
        };
        if deal.status != DealStatus::Pending {
            continue;
        }
        let mut candidates = eligible(state, &deal, &[]);
        let mut chosen = Vec::with_capacity(deal.shards.len());
        for index in 0..deal.shards.len() as u64 {
            let seed: [&[u8]; 3] = [&block.randomness.0, &id.to_le_bytes(), &index.to_le_bytes()];
            let Some(address) = draw::weighted_choice("piazza/storage/assign", &seed, &candidates)
            else {
                break;
            };
            candidates.retain(|(a, _)| *a != address);
            chosen.push(address);
        }
        let start = block.height.saturating_add(params(state).upload_blocks);
        if chosen.len() < deal.shards.len() {
            finish(state, deal, "unassigned", events);
            continue;
        }
        let Some(start) = add_at(state, state_key::epochs, start, id) else {
            finish(state, deal, "schedule_full", events);
            continue;
        };
        for (index, address) in chosen.into_iter().enumerate() {
            if !assign(
                state,
                block,
                &mut deal,
                index as u16,
                address,
                false,
                events,
            ) {
                queue_repair(state, &mut deal, index as u16);
            }
        }
        deal.status = DealStatus::Active;
        deal.next_epoch_height = start;
        put_deal(state, &deal);
    }
}

/// Gives each shard waiting for repair to a new provider (stake-weighted, distinct from the
/// deal's other holders and from every provider that failed this shard), challenged at once.
pub(super) fn assign_repairs(
    state: &mut StateDelta<'_>,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let queue: List<ShardRef, REPAIRS_QUEUE_MAX> =
        state.get(&state_key::repairs()).unwrap_or_default();
    state.delete(state_key::repairs());
    for shard_ref in queue.0 {
        let Some(mut deal) = deal(state, shard_ref.deal) else {
            continue;
        };
        let index = usize::from(shard_ref.shard);
        if deal.status != DealStatus::Active || index >= deal.shards.len() {
            continue;
        }
        deal.shards[index].waiting = false;
        if deal.shards[index].provider.is_none() {
            // Never back to a provider that failed this shard.
            let failed = failed_holders(state, deal.id, shard_ref.shard);
            let candidates = eligible(state, &deal, &failed.0);
            let seed: [&[u8]; 4] = [
                &block.randomness.0,
                &deal.id.to_le_bytes(),
                &shard_ref.shard.to_le_bytes(),
                &[deal.shards[index].assignments],
            ];
            match draw::weighted_choice("piazza/storage/repair", &seed, &candidates) {
                Some(address) => {
                    assign(
                        state,
                        block,
                        &mut deal,
                        shard_ref.shard,
                        address,
                        true,
                        events,
                    );
                }
                None => events.push(Event::new(
                    "storage.repair_waiting",
                    &[
                        ("deal", deal.id.to_string()),
                        ("shard", shard_ref.shard.to_string()),
                    ],
                )),
            }
        }
        put_deal(state, &deal);
    }
}

/// Starts the epochs due at this block: a deal whose epochs are done (or whose owner ended it)
/// ends; every other deal's held shards are challenged on one chunk each, and its unkept shards
/// are queued for repair.
pub(super) fn epochs(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
    let params = params(state);
    for id in take_set(state, state_key::epochs(block.height)) {
        let Some(mut deal) = deal(state, id) else {
            continue;
        };
        if deal.status != DealStatus::Active {
            continue;
        }
        if deal.end_requested || deal.epochs_done >= deal.epochs {
            let reason = if deal.end_requested {
                "ended"
            } else {
                "expired"
            };
            finish(state, deal, reason, events);
            continue;
        }
        let deadline = block.height.saturating_add(params.answer_blocks);
        let mut challenged = 0u32;
        for index in 0..deal.shards.len() {
            let shard_index = index as u16;
            // A deadline whose processing slipped is caught here.
            if deal.shards[index]
                .challenge
                .as_ref()
                .is_some_and(|c| c.deadline_height < block.height)
            {
                fail_shard(state, &mut deal, shard_index, Failure::Missed, events);
            }
            let shard = &deal.shards[index];
            if shard.provider.is_none() {
                queue_repair(state, &mut deal, shard_index);
            } else if shard.challenge.is_none() {
                let chunk_index = draw_chunk(block, &deal, shard_index);
                deal.shards[index].challenge = Some(Challenge {
                    kind: ChallengeKind::Epoch,
                    chunk_index,
                    issued_height: block.height,
                    deadline_height: deadline,
                });
                challenged += 1;
            }
        }
        if challenged > 0 {
            add_at(state, state_key::deadlines, deadline, id);
        }
        deal.epochs_done += 1;
        let next = block.height.saturating_add(params.epoch_blocks);
        let Some(next) = add_at(state, state_key::epochs, next, id) else {
            finish(state, deal, "schedule_full", events);
            continue;
        };
        deal.next_epoch_height = next;
        events.push(Event::new(
            "storage.epoch",
            &[
                ("deal", id.to_string()),
                ("epoch", deal.epochs_done.to_string()),
                ("challenges", challenged.to_string()),
                ("deadline_height", deadline.to_string()),
            ],
        ));
        put_deal(state, &deal);
    }
}

/// Fails every challenge whose deadline has come without an answer.
pub(super) fn deadlines(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
    for id in take_set(state, state_key::deadlines(block.height)) {
        let Some(mut deal) = deal(state, id) else {
            continue;
        };
        if deal.status != DealStatus::Active {
            continue;
        }
        for index in 0..deal.shards.len() {
            let due = deal.shards[index]
                .challenge
                .as_ref()
                .is_some_and(|c| c.deadline_height <= block.height);
            if due {
                fail_shard(state, &mut deal, index as u16, Failure::Missed, events);
            }
        }
        put_deal(state, &deal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_primitives::blob;

    #[test]
    fn chunk_draws_stay_inside_the_shard() {
        let block = BlockContext {
            chain_id: "t".into(),
            height: 7,
            time_ms: 7,
            randomness: Hash::of("r", &[]),
            proposer: piazza_primitives::SecretKey::from_seed([1; 32]).public_key(),
        };
        let record = BlobRecord {
            id: Hash::ZERO,
            len_bytes: 10 * blob::CHUNK_BYTES as u64 + 1,
            k: 2,
            m: 1,
            shard_len: blob::shard_len(10 * blob::CHUNK_BYTES as u64 + 1, 2).unwrap(),
            shard_roots: vec![Hash::ZERO; 3],
        };
        let mut deal = Deal {
            id: 3,
            owner: Address([1; 20]),
            blob: record,
            epochs: 1,
            price_per_byte_epoch: Amount::new(1),
            escrow: Amount::ZERO,
            paid: Amount::ZERO,
            opened_height: 0,
            epochs_done: 0,
            next_epoch_height: 0,
            end_requested: false,
            status: DealStatus::Active,
            refunded: Amount::ZERO,
            shards: vec![Shard::default(); 3],
        };
        let chunks = deal.blob.chunks_per_shard();
        assert_eq!(chunks, 6);
        let mut seen = std::collections::BTreeSet::new();
        for epoch in 0..200 {
            deal.epochs_done = epoch;
            let chunk = draw_chunk(&block, &deal, 1);
            assert!(chunk < chunks);
            seen.insert(chunk);
        }
        assert_eq!(seen.len() as u64, chunks, "every chunk can be drawn");
    }
}
