//! A job's life after submission: assignment with a block's randomness, missed deadlines and
//! expiry, settlement and its fee split, and the hold/release/fail calls through which the
//! verify module (above) steers jobs under audit or dispute.

use super::split::pay_price;
use super::{assigned_jobs, job, params, provider, state_key, Job, JobReceipt, JobStatus};
use super::{auditor_pool, escrow, providers_serving, JOBS_PER_QUEUE_MAX, PROVIDER_CAPACITY_MAX};
use crate::bank;
use crate::error::TxError;
use crate::event::Event;
use crate::list::{self, List};
use crate::module::BlockContext;
use crate::staking::{self, Role};
use crate::state::StateDelta;
use piazza_primitives::{Address, Hash};

pub(super) fn set_assigned(
    state: &mut StateDelta<'_>,
    address: &Address,
    job: u64,
    assigned: bool,
) {
    let mut list = assigned_jobs(state, address);
    match (list.binary_search(&job), assigned) {
        (Err(at), true) => list.insert(at, job),
        (Ok(at), false) => {
            list.remove(at);
        }
        _ => {}
    }
    state.put(
        state_key::assigned(address),
        &List::<u64, { PROVIDER_CAPACITY_MAX as usize }>(list),
    );
}

pub(super) fn push_queue(
    state: &mut StateDelta<'_>,
    key: Vec<u8>,
    job: u64,
) -> Result<(), TxError> {
    list::push::<JOBS_PER_QUEUE_MAX>(state, key, job)
        .map_err(|full| full.refusal("the job queue of that block"))
}

pub(super) fn take_queue(state: &mut StateDelta<'_>, key: Vec<u8>) -> Vec<u64> {
    list::take::<JOBS_PER_QUEUE_MAX>(state, key)
}

/// Chooses a provider for `job` by stake-weighted randomness: eligible providers serve the model,
/// have room, charge at most the job's escrow for its declared work, have the minimum stake and
/// have not missed this job's deadline before.
pub fn choose_provider(state: &StateDelta<'_>, job: &Job, randomness: &Hash) -> Option<Address> {
    let candidates = eligible_providers(state, job, true);
    crate::draw::weighted_choice(
        "piazza/compute/assign",
        &[
            &randomness.0,
            &job.id.to_le_bytes(),
            &(job.missed.len() as u64).to_le_bytes(),
        ],
        &candidates,
    )
}

/// Providers that could serve `job`, with their stake as weight; `with_room` also requires a
/// free slot now.
pub(super) fn eligible_providers(
    state: &StateDelta<'_>,
    job: &Job,
    with_room: bool,
) -> Vec<(Address, u128)> {
    let params = params(state);
    // A redundant job's copies go to distinct providers.
    let siblings: Vec<Address> = job
        .group_ids()
        .filter(|id| *id != job.id)
        .filter_map(|id| self::job(state, id)?.provider())
        .collect();
    let mut candidates: Vec<(Address, u128)> = Vec::new();
    for address in providers_serving(state, &job.model) {
        let Some(p) = provider(state, &address) else {
            continue;
        };
        let affordable = p
            .offer
            .price_per_unit
            .checked_mul(job.max_units as u128)
            .is_some_and(|cost| cost <= job.max_price);
        // A client's own deadline must leave the provider the blocks its declared speed needs.
        let fast_enough = job.params.deadline_blocks == 0
            || p.offer.work_blocks(job.deadline_units()) < u64::from(job.params.deadline_blocks);
        let stake = staking::bonded(state, &address, Role::Provider);
        if affordable
            && fast_enough
            && (!with_room || p.active_jobs < p.offer.capacity)
            && stake >= params.min_provider_stake
            && !job.missed.contains(&address)
            && !siblings.contains(&address)
        {
            candidates.push((address, stake.base_units()));
        }
    }
    candidates
}

pub(super) fn expire(
    state: &mut StateDelta<'_>,
    mut job: Job,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    bank::transfer(state, &escrow(), &job.client, job.max_price)
        .expect("the escrow holds every open job's price");
    events.push(Event::new(
        "compute.job_expired",
        &[
            ("job", job.id.to_string()),
            ("refund", job.max_price.base_units().to_string()),
        ],
    ));
    job.status = JobStatus::Expired;
    state.put(state_key::job(job.id), &job);
    if job.is_redundant() {
        // The other copies no longer wait for this one: their group is reviewed again.
        if list::schedule::<JOBS_PER_QUEUE_MAX>(state, state_key::reviews, block.height, job.id)
            .is_err()
        {
            events.push(Event::new(
                "compute.review_unscheduled",
                &[("job", job.id.to_string())],
            ));
        }
    }
}

/// Assigns `job` at `block` or expires it when nobody can serve it.
pub(super) fn assign(
    state: &mut StateDelta<'_>,
    mut job: Job,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let params = params(state);
    let chosen = (job.missed.len() < params.max_attempts as usize)
        .then(|| choose_provider(state, &job, &block.randomness))
        .flatten();
    let Some(address) = chosen else {
        // Providers may be busy: wait in the queue (bounded), then give up and refund.
        let waiting = job.missed.len() < params.max_attempts as usize
            && block.height
                < job
                    .queued_height
                    .saturating_add(params.queue_timeout_blocks);
        if waiting && push_queue(state, state_key::pending(), job.id).is_ok() {
            job.status = JobStatus::Pending;
            state.put(state_key::job(job.id), &job);
            return;
        }
        return expire(state, job, block, events);
    };
    let mut p = provider(state, &address).expect("chosen providers exist");
    // The deadline follows the work asked for at the provider's declared speed, on top of the
    // chain's base allowance for inclusion and latency; a client's own deadline was checked
    // against that speed when the provider was chosen.
    let deadline_blocks = match job.params.deadline_blocks {
        0 => params
            .job_deadline_blocks
            .saturating_add(p.offer.work_blocks(job.deadline_units())),
        asked => asked as u64,
    };
    let Ok(deadline_height) = list::schedule::<JOBS_PER_QUEUE_MAX>(
        state,
        state_key::deadlines,
        block.height + deadline_blocks,
        job.id,
    ) else {
        return expire(state, job, block, events);
    };
    p.active_jobs += 1;
    job.price_per_unit = p.offer.price_per_unit;
    state.put(state_key::provider(&address), &p);
    set_assigned(state, &address, job.id, true);
    job.status = JobStatus::Assigned {
        provider: address,
        deadline_height,
    };
    events.push(Event::new(
        "compute.job_assigned",
        &[
            ("job", job.id.to_string()),
            ("provider", address.to_string()),
            ("deadline_height", deadline_height.to_string()),
        ],
    ));
    state.put(state_key::job(job.id), &job);
}

/// One more (or one fewer) posted result of `address` waits to settle.
pub(super) fn change_unsettled(state: &mut StateDelta<'_>, address: &Address, posted: bool) {
    if let Some(mut p) = provider(state, address) {
        p.unsettled = if posted {
            p.unsettled.saturating_add(1)
        } else {
            p.unsettled.saturating_sub(1)
        };
        state.put(state_key::provider(address), &p);
    }
}

pub(super) fn release_provider(
    state: &mut StateDelta<'_>,
    address: &Address,
    job: u64,
    completed: bool,
) {
    if let Some(mut p) = provider(state, address) {
        p.active_jobs = p.active_jobs.saturating_sub(1);
        if completed {
            p.jobs_completed += 1;
        } else {
            p.deadlines_missed += 1;
        }
        state.put(state_key::provider(address), &p);
    }
    set_assigned(state, address, job, false);
}

pub(super) fn settle(
    state: &mut StateDelta<'_>,
    mut job: Job,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let JobStatus::Posted {
        provider: address, ..
    } = job.status
    else {
        return;
    };
    change_unsettled(state, &address, false);
    let result = job.result.clone().expect("posted jobs have a result");
    let price = job
        .price_per_unit
        .checked_mul(result.work_units as u128)
        .unwrap_or(job.max_price)
        .min(job.max_price);
    let auditors = state
        .get::<Address>(&state_key::auditor_share(job.id))
        .unwrap_or_else(auditor_pool);
    let paid = pay_price(state, &escrow(), price, &address, &job.model, &auditors);
    let refund = job
        .max_price
        .checked_sub(price)
        .expect("price is capped by the escrow");
    if !refund.is_zero() {
        bank::transfer(state, &escrow(), &job.client, refund)
            .expect("the escrow holds every open job's price");
    }
    let receipt = JobReceipt {
        job: job.id,
        model: job.model.clone(),
        input_hash: job.input_hash(),
        output_hash: result.output_hash,
        trace_root: result.trace_root,
        provider: address,
        price,
        refund,
        height: block.height,
    };
    events.push(Event::new(
        "compute.job_settled",
        &[
            ("job", job.id.to_string()),
            ("provider", address.to_string()),
            ("price", price.base_units().to_string()),
            ("to_provider", paid.to_provider.base_units().to_string()),
            (
                "to_model_owner",
                paid.to_model_owner.base_units().to_string(),
            ),
            (
                "to_auditor_pool",
                paid.to_auditor_pool.base_units().to_string(),
            ),
            ("to_treasury", paid.to_treasury.base_units().to_string()),
            ("refund", refund.base_units().to_string()),
            ("output_hash", result.output_hash.to_hex()),
            ("trace_root", result.trace_root.to_hex()),
        ],
    ));
    job.status = JobStatus::Settled;
    job.receipt = Some(receipt);
    state.put(state_key::job(job.id), &job);
}

/// Settles a posted job the verify module held back, if its challenge window is over (else its
/// queued settlement will).
pub fn settle_released(
    state: &mut StateDelta<'_>,
    id: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let Some(job) = job(state, id) else {
        return;
    };
    if let JobStatus::Posted { settle_height, .. } = job.status {
        if settle_height <= block.height {
            settle(state, job, block, events);
        }
    }
}

/// Keeps a posted job from settling until [`release`] (an audit, a dispute, a group).
pub fn hold(state: &mut StateDelta<'_>, id: u64) {
    state.put(state_key::held(id), &true);
}

/// Whether a posted job is kept from settling.
pub fn is_held(state: &StateDelta<'_>, id: u64) -> bool {
    state.get::<bool>(&state_key::held(id)).unwrap_or(false)
}

/// Ends a hold; the job settles at once if its challenge window is over, else at its end.
pub fn release(state: &mut StateDelta<'_>, id: u64, block: &BlockContext, events: &mut Vec<Event>) {
    state.delete(state_key::held(id));
    settle_released(state, id, block, events);
}

/// Keeps a posted job open to challenges for a full challenge window from `from_height` (after
/// an attestation, so a wrong attested result can still be proven); never shortens it.
pub fn extend_window(state: &mut StateDelta<'_>, id: u64, from_height: u64) -> Result<(), TxError> {
    let Some(mut job) = job(state, id) else {
        return Ok(());
    };
    let JobStatus::Posted {
        provider,
        settle_height,
    } = job.status
    else {
        return Ok(());
    };
    let wanted = from_height.saturating_add(params(state).challenge_window_blocks);
    if wanted <= settle_height {
        return Ok(());
    }
    let scheduled = list::schedule::<JOBS_PER_QUEUE_MAX>(state, state_key::settlements, wanted, id)
        .map_err(|full| full.refusal("the settlement queue"))?;
    job.status = JobStatus::Posted {
        provider,
        settle_height: scheduled,
    };
    state.put(state_key::job(id), &job);
    Ok(())
}

/// Ends a hold without settling (the job fails, or its group is settled together).
pub fn unhold(state: &mut StateDelta<'_>, id: u64) {
    state.delete(state_key::held(id));
}

/// The job's auditor-pool share goes to `auditor` when it settles (it attested the result).
pub fn pay_auditor_share_to(state: &mut StateDelta<'_>, id: u64, auditor: &Address) {
    state.put(state_key::auditor_share(id), auditor);
}

/// The jobs whose results were posted (or whose redundant copies closed) at `height`, for the
/// modules above to review; each height is taken once.
pub fn take_reviews(state: &mut StateDelta<'_>, height: u64) -> Vec<u64> {
    list::take::<JOBS_PER_QUEUE_MAX>(state, state_key::reviews(height))
}

/// Settles a posted job now (a redundant job whose copies agree).
pub fn settle_now(
    state: &mut StateDelta<'_>,
    id: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    if let Some(job) = job(state, id) {
        settle(state, job, block, events);
    }
}

/// A posted result proven wrong: the job fails, its whole escrow goes back to the client and
/// the provider's fraud count grows. Returns the provider.
pub fn fail(state: &mut StateDelta<'_>, id: u64, events: &mut Vec<Event>) -> Option<Address> {
    let mut job = job(state, id)?;
    let JobStatus::Posted {
        provider: address, ..
    } = job.status
    else {
        return None;
    };
    change_unsettled(state, &address, false);
    bank::transfer(state, &escrow(), &job.client, job.max_price)
        .expect("the escrow holds every open job's price");
    if let Some(mut p) = provider(state, &address) {
        p.frauds += 1;
        state.put(state_key::provider(&address), &p);
    }
    events.push(Event::new(
        "compute.job_failed",
        &[
            ("job", id.to_string()),
            ("provider", address.to_string()),
            ("refund", job.max_price.base_units().to_string()),
        ],
    ));
    job.status = JobStatus::Failed;
    state.put(state_key::job(id), &job);
    Some(address)
}
