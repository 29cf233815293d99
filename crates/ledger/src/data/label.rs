//! Labelling tasks: escrowed rewards, labellers who join with a stake, assignment of each item
//! to `k` of them by a block's randomness, labels, and settlement by the task's rule.
//!
//! Money: the task escrows `reward_per_label · k` per item and each labeller its `stake`. At
//! settlement every agreeing label is paid its reward, what was not earned goes back to the
//! requester, and each labeller gets its stake back unless one of its labels disagreed with an
//! agreed item (or was missing), in which case the stake goes to the requester. So every
//! escrowed unit ends paid, refunded or forfeited.

use super::msg::Msg;
use super::types::{Assignment, LabelTask, Phase, Rule, Validation};
use super::{
    escrow, next_id, state_key, LABELLERS_MAX, LABEL_K_MAX, LABEL_WINDOW_BLOCKS_MAX,
    TEXT_BYTES_MAX, WEIGHT_PER_ITEM,
};
use crate::bank::{self, assets};
use crate::draw;
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::TxContext;
use crate::state::StateDelta;
use piazza_primitives::{Amount, Hash};

fn invalid(message: String) -> TxError {
    TxError::new(ErrorCode::InvalidMessage, message)
}

fn closed(message: String) -> TxError {
    TxError::new(ErrorCode::LabelClosed, message)
}

fn unknown(id: u64) -> TxError {
    TxError::new(
        ErrorCode::UnknownLabelTask,
        format!("no labelling task {id}"),
    )
}

pub(super) fn check_stateless(msg: &Msg) -> Result<(), TxError> {
    let Msg::CreateLabelTask {
        items,
        k,
        join_blocks,
        label_blocks,
        license,
        ..
    } = msg
    else {
        return Ok(());
    };
    let window = 1..=LABEL_WINDOW_BLOCKS_MAX;
    if items.is_empty()
        || *k == 0
        || *k as usize > LABEL_K_MAX
        || !window.contains(join_blocks)
        || !window.contains(label_blocks)
        || license.len() > TEXT_BYTES_MAX
    {
        return Err(invalid(format!(
            "a task has 1+ items, k in 1..={LABEL_K_MAX}, windows of 1..={LABEL_WINDOW_BLOCKS_MAX} blocks"
        )));
    }
    Ok(())
}

fn task(state: &StateDelta<'_>, id: u64) -> Result<LabelTask, TxError> {
    super::label_task(state, id).ok_or_else(|| unknown(id))
}

pub(super) fn create(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    msg: &Msg,
) -> Result<(), TxError> {
    let Msg::CreateLabelTask {
        items,
        k,
        reward_per_label,
        stake,
        rule,
        join_blocks,
        label_blocks,
        price,
        license,
    } = msg
    else {
        return Ok(());
    };
    let total = super::outflow(msg).ok_or_else(|| {
        TxError::new(
            ErrorCode::Overflow,
            "the task's rewards overflow".to_string(),
        )
    })?;
    bank::transfer(state, &ctx.sender, &escrow(), total)?;
    let join_end = ctx.block.height.saturating_add(*join_blocks as u64);
    let id = next_id(state, state_key::next_label_task());
    state.put(
        state_key::label_task(id),
        &LabelTask {
            requester: ctx.sender,
            items: items.clone(),
            k: *k,
            reward_per_label: *reward_per_label,
            stake: *stake,
            rule: *rule,
            join_end,
            label_end: join_end.saturating_add(*label_blocks as u64),
            labellers: Vec::new(),
            assignments: Vec::new(),
            phase: Phase::Joining,
            result: None,
            price: *price,
            license: license.clone(),
        },
    );
    ctx.emit(Event::new(
        "data.label_task_created",
        &[
            ("task", id.to_string()),
            ("items", items.len().to_string()),
            ("escrow", total.base_units().to_string()),
        ],
    ));
    Ok(())
}

pub(super) fn join(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
) -> Result<(), TxError> {
    let mut t = task(state, id)?;
    if t.phase != Phase::Joining || ctx.block.height > t.join_end {
        return Err(closed(format!("task {id} takes no more labellers")));
    }
    if t.labellers.contains(&ctx.sender) {
        return Err(invalid(format!("{} already joined task {id}", ctx.sender)));
    }
    if t.labellers.len() >= LABELLERS_MAX {
        return Err(TxError::new(
            ErrorCode::QueueFull,
            format!("task {id} has {LABELLERS_MAX} labellers"),
        ));
    }
    bank::transfer(state, &ctx.sender, &escrow(), t.stake)?;
    t.labellers.push(ctx.sender);
    state.put(state_key::label_task(id), &t);
    ctx.emit(Event::new(
        "data.labeller_joined",
        &[
            ("task", id.to_string()),
            ("labeller", ctx.sender.to_string()),
        ],
    ));
    Ok(())
}

pub(super) fn assign(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
) -> Result<(), TxError> {
    let mut t = task(state, id)?;
    if t.phase != Phase::Joining || ctx.block.height <= t.join_end {
        return Err(closed(format!(
            "task {id} assigns after block {}",
            t.join_end
        )));
    }
    let k = t.k as usize;
    if t.labellers.len() < k {
        // Too few labellers: everything goes back.
        for labeller in &t.labellers {
            bank::transfer(state, &escrow(), labeller, t.stake)?;
        }
        let total = reward_total(&t)?;
        bank::transfer(state, &escrow(), &t.requester, total)?;
        t.phase = Phase::Settled;
        state.put(state_key::label_task(id), &t);
        ctx.emit(Event::new(
            "data.label_task_cancelled",
            &[("task", id.to_string())],
        ));
        return Ok(());
    }
    let seed = ctx.block.randomness;
    t.assignments = (0..t.items.len() as u64)
        .map(|item| {
            let mut remaining: Vec<u8> = (0..t.labellers.len() as u8).collect();
            let labellers = (0..k as u64)
                .map(|slot| {
                    let at = draw::uniform_below(
                        "piazza/label-assign",
                        &[
                            &seed.0,
                            &id.to_le_bytes(),
                            &item.to_le_bytes(),
                            &slot.to_le_bytes(),
                        ],
                        remaining.len() as u128,
                    );
                    remaining.swap_remove(at as usize)
                })
                .collect();
            Assignment {
                labellers,
                labels: vec![None; k],
            }
        })
        .collect();
    // The labelling window starts now, however late the assignment came.
    let label_blocks = t.label_end.saturating_sub(t.join_end);
    t.label_end = ctx.block.height.saturating_add(label_blocks);
    t.phase = Phase::Labelling;
    state.put(state_key::label_task(id), &t);
    ctx.emit(Event::new(
        "data.labels_assigned",
        &[("task", id.to_string())],
    ));
    Ok(())
}

fn reward_total(t: &LabelTask) -> Result<Amount, TxError> {
    t.reward_per_label
        .checked_mul(t.items.len() as u128 * t.k as u128)
        .ok_or_else(|| TxError::new(ErrorCode::Overflow, "the task's rewards overflow"))
}

pub(super) fn submit(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
    item: u16,
    value: u32,
) -> Result<(), TxError> {
    let mut t = task(state, id)?;
    if t.phase != Phase::Labelling || ctx.block.height > t.label_end {
        return Err(closed(format!("task {id} takes no labels now")));
    }
    let index = t.labellers.iter().position(|a| *a == ctx.sender);
    let assignment = t
        .assignments
        .get_mut(item as usize)
        .ok_or_else(|| invalid(format!("task {id} has no item {item}")))?;
    let slot = index
        .and_then(|i| assignment.labellers.iter().position(|l| *l as usize == i))
        .ok_or_else(|| {
            TxError::new(
                ErrorCode::NotALabeller,
                format!("{} is not assigned item {item} of task {id}", ctx.sender),
            )
        })?;
    if assignment.labels[slot].is_some() {
        return Err(invalid(format!(
            "item {item} is already labelled by {}",
            ctx.sender
        )));
    }
    assignment.labels[slot] = Some(value);
    state.put(state_key::label_task(id), &t);
    Ok(())
}

/// An item's agreed label and which of its slots agree, if the rule reaches agreement: more
/// than half of the `k` assigned labellers must agree.
pub fn decide(rule: Rule, labels: &[Option<u32>]) -> Option<(u32, Vec<bool>)> {
    let mut given: Vec<u32> = labels.iter().flatten().copied().collect();
    given.sort_unstable();
    let agreed = match rule {
        Rule::Majority => {
            // The most frequent value; the smallest among equals.
            let mut best: Option<(usize, u32)> = None;
            for v in &given {
                let count = given.iter().filter(|x| *x == v).count();
                if best.is_none_or(|(c, _)| count > c) {
                    best = Some((count, *v));
                }
            }
            best?.1
        }
        Rule::Tolerance { .. } => *given.get(given.len().checked_sub(1)? / 2)?,
    };
    let agrees = |v: u32| match rule {
        Rule::Majority => v == agreed,
        Rule::Tolerance { tolerance } => v.abs_diff(agreed) <= tolerance,
    };
    let slots: Vec<bool> = labels.iter().map(|l| l.is_some_and(agrees)).collect();
    (slots.iter().filter(|a| **a).count() * 2 > labels.len()).then_some((agreed, slots))
}

pub(super) fn settle(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
) -> Result<(), TxError> {
    let mut t = task(state, id)?;
    if t.phase != Phase::Labelling || ctx.block.height <= t.label_end {
        return Err(closed(format!(
            "task {id} settles after block {}",
            t.label_end
        )));
    }
    let n = t.labellers.len();
    let mut earned = vec![0u128; n];
    let mut bad = vec![false; n];
    let mut result: Vec<(Hash, u32)> = Vec::new();
    for (item, assignment) in t.items.iter().zip(&t.assignments) {
        let Some((value, agreeing)) = decide(t.rule, &assignment.labels) else {
            continue;
        };
        result.push((*item, value));
        for (labeller, agrees) in assignment.labellers.iter().zip(agreeing) {
            let i = *labeller as usize;
            if agrees {
                earned[i] += 1;
            } else {
                bad[i] = true;
            }
        }
    }
    let mut paid = Amount::ZERO;
    let mut forfeited = Amount::ZERO;
    for (i, labeller) in t.labellers.iter().enumerate() {
        let reward = t
            .reward_per_label
            .checked_mul(earned[i])
            .ok_or_else(|| TxError::new(ErrorCode::Overflow, "a reward overflows"))?;
        bank::transfer(state, &escrow(), labeller, reward)?;
        paid = paid.checked_add(reward).unwrap_or(paid);
        if bad[i] {
            bank::transfer(state, &escrow(), &t.requester, t.stake)?;
            forfeited = forfeited.checked_add(t.stake).unwrap_or(forfeited);
        } else {
            bank::transfer(state, &escrow(), labeller, t.stake)?;
        }
    }
    let refund = reward_total(&t)?
        .checked_sub(paid)
        .expect("rewards paid are at most those escrowed");
    bank::transfer(state, &escrow(), &t.requester, refund)?;
    if !result.is_empty() {
        let (pool, dataset) = super::pool::create(
            state,
            ctx,
            t.requester,
            Validation::Labels { task: id },
            "labels: (item hash, u32 label)",
            &t.license,
            t.price,
        )?;
        if let Some(mut record) = super::dataset(state, dataset) {
            record.blob = labels_id(&result);
            state.put(state_key::dataset(dataset), &record);
        }
        for (i, labeller) in t.labellers.iter().enumerate() {
            if earned[i] > 0 && !bad[i] {
                let units = earned[i] * WEIGHT_PER_ITEM;
                assets::grant(state, &assets::AssetId::Pool(pool), labeller, units)?;
            }
        }
        t.result = Some(dataset);
    }
    t.phase = Phase::Settled;
    state.put(state_key::label_task(id), &t);
    ctx.emit(Event::new(
        "data.label_task_settled",
        &[
            ("task", id.to_string()),
            ("agreed_items", result.len().to_string()),
            ("paid", paid.base_units().to_string()),
            ("forfeited", forfeited.base_units().to_string()),
            ("refund", refund.base_units().to_string()),
        ],
    ));
    Ok(())
}

/// The content id of a labelled set: its (item, label) pairs in item order.
pub fn labels_id(labels: &[(Hash, u32)]) -> Hash {
    let mut w = piazza_codec::Writer::new();
    w.len(labels.len());
    for (item, value) in labels {
        w.value(item);
        w.u32(*value);
    }
    Hash::of("piazza/labels", &[&w.into_bytes()])
}
