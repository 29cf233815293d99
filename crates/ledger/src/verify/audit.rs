//! Reviews of posted results: audit draws, redundant groups compared, releases, and the
//! penalty for an attestation proven wrong.

use super::*;
use crate::module::BlockContext;

/// Reviews a job `compute` reported in the previous block: a single job is drawn for audit
/// with this block's randomness; a redundant copy's group is compared once all copies are in.
pub(super) fn review(
    state: &mut StateDelta<'_>,
    id: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let Some(job) = compute::job(state, id) else {
        return;
    };
    if job.is_redundant() {
        if matches!(job.status, JobStatus::Posted { .. }) && !holds(state, id) {
            set_hold(state, id, &Hold::Group);
        }
        review_group(state, job.group, block, events);
    } else {
        draw_audit(state, id, block, events);
    }
}

/// A redundant group whose copies are all in: equal results settle at once; otherwise the
/// copies that differ from the most common result are disputed by its first holder.
pub(super) fn review_group(
    state: &mut StateDelta<'_>,
    group: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let Some(first) = compute::job(state, group) else {
        return;
    };
    let ids: Vec<u64> = first.group_ids().collect();
    let jobs: Vec<compute::Job> = ids
        .iter()
        .filter_map(|id| compute::job(state, *id))
        .collect();
    let open =
        |job: &compute::Job| matches!(job.status, JobStatus::Pending | JobStatus::Assigned { .. });
    if jobs.iter().any(open) || ids.iter().any(|id| dispute(state, *id).is_some()) {
        return;
    }
    let posted: Vec<&compute::Job> = jobs
        .iter()
        .filter(|job| matches!(job.status, JobStatus::Posted { .. }))
        .collect();
    let result = |job: &compute::Job| {
        job.result
            .as_ref()
            .map(|r| (r.output_hash, r.trace_root))
            .expect("posted jobs have a result")
    };
    // The most common result; ties go to the lowest job id.
    let mut best: Option<(&compute::Job, usize)> = None;
    for job in &posted {
        let count = posted.iter().filter(|o| result(o) == result(job)).count();
        if best.is_none_or(|(_, c)| count > c) {
            best = Some((job, count));
        }
    }
    let Some((reference, _)) = best else {
        return;
    };
    let differing: Vec<&compute::Job> = posted
        .iter()
        .copied()
        .filter(|job| result(job) != result(reference))
        .collect();
    if differing.is_empty() {
        for job in &posted {
            clear_hold(state, job.id);
            compute::settle_now(state, job.id, block, events);
        }
        events.push(Event::new(
            "verify.group_agreed",
            &[
                ("group", group.to_string()),
                ("copies", posted.len().to_string()),
            ],
        ));
        return;
    }
    let claimant_result = reference.result.as_ref().expect("posted");
    for job in differing {
        let defendant_result = job.result.as_ref().expect("posted");
        // Providers of a redundant job state their step count and ids in round 0.
        let claimant = Party {
            address: reference.provider().expect("posted jobs have a provider"),
            job: reference.id,
            root: claimant_result.trace_root,
            step_count: 0,
            ids: Hash::ZERO,
            bond: Amount::ZERO,
            is_provider: true,
        };
        let defendant = Party {
            address: job.provider().expect("posted jobs have a provider"),
            job: job.id,
            root: defendant_result.trace_root,
            step_count: 0,
            ids: Hash::ZERO,
            bond: Amount::ZERO,
            is_provider: true,
        };
        if let Err(refused) = open_dispute(state, job.id, defendant, claimant, block, events) {
            // Only when a party already has `TASKS_MAX` open disputes or every deadline queue
            // in reach is full: the copy stands (a result stands until proven wrong), openly.
            events.push(Event::new(
                "verify.dispute_refused",
                &[("job", job.id.to_string()), ("reason", refused.message)],
            ));
            clear_hold(state, job.id);
            compute::settle_now(state, job.id, block, events);
        }
    }
}

/// Draws whether `job` is audited, with the randomness of a block after its result.
pub(super) fn draw_audit(
    state: &mut StateDelta<'_>,
    id: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let Some(job) = compute::job(state, id) else {
        return;
    };
    let JobStatus::Posted {
        provider: address, ..
    } = job.status
    else {
        return;
    };
    if holds(state, id) {
        return;
    }
    let p = params(state);
    let record = compute::provider(state, &address);
    let new = record
        .as_ref()
        .is_none_or(|r| r.jobs_completed < p.new_provider_jobs || r.frauds > 0);
    let rate = if new {
        p.new_provider_audit_rate_bps.max(p.rate_for(&job.model))
    } else {
        p.rate_for(&job.model)
    };
    let seed: [&[u8]; 2] = [&block.randomness.0, &id.to_le_bytes()];
    if !crate::draw::happens("piazza/verify/audit", &seed, rate) {
        return;
    }
    assign_auditor(state, id, block, events);
}

/// Ends a hold and lets the job settle (now, if its window is over).
pub(super) fn release(
    state: &mut StateDelta<'_>,
    job: u64,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    let Some(record) = compute::job(state, job) else {
        clear_hold(state, job);
        return;
    };
    if !matches!(record.status, JobStatus::Posted { .. }) {
        clear_hold(state, job);
        return;
    }
    if record.is_redundant() {
        set_hold(state, job, &Hold::Group);
        review_group(state, record.group, block, events);
    } else {
        state.delete(state_key::hold(job));
        compute::release(state, job, block, events);
    }
}

/// A result `auditor` attested was proven wrong: it loses `lazy_slash` of its auditor stake,
/// the winner's share to whoever proved it, the rest burned.
pub(super) fn disprove_attestation(
    state: &mut StateDelta<'_>,
    job: u64,
    auditor: &Address,
    prover: &Address,
    events: &mut Vec<Event>,
) {
    let p = params(state);
    let slash = p
        .lazy_slash
        .min(staking::bonded(state, auditor, Role::Auditor));
    let reward = slash
        .checked_mul_div(p.winner_share_bps as u128, BPS)
        .expect("a share of an amount fits");
    let to_prover = staking::slash(state, auditor, Role::Auditor, reward, Some(prover));
    let burned = staking::slash(
        state,
        auditor,
        Role::Auditor,
        slash
            .checked_sub(reward)
            .expect("a share is at most the whole"),
        None,
    );
    if let Some(mut record) = self::auditor(state, auditor) {
        record.disproven += 1;
        state.put(state_key::auditor(auditor), &record);
    }
    events.push(Event::new(
        "verify.attestation_disproven",
        &[
            ("job", job.to_string()),
            ("auditor", auditor.to_string()),
            ("to_prover", to_prover.base_units().to_string()),
            ("burned", burned.base_units().to_string()),
        ],
    ));
}
