//! The slash of a commit proven to hold a wrong receipt (DESIGN.md §3.1).
//!
//! A commit of `n` receipts has `A` of them drawn for audit, uniformly and with replacement, so
//! a provider that corrupted `k` of them is caught (a drawn receipt revealed and disproven, or
//! not revealed) with probability `P = 1 - (1 - k/n)^A`, which is at least `k/n`. What it gains
//! is at most what the corrupted receipts were paid: at most `k × p` where `p` bounds one
//! request's price (`min(M, JOB_UNITS_MAX × max_price_per_unit)`, `M` the commit's new money),
//! and at most `M`. The slash `S = 2 × max(M, ⌈n/A⌉ × p)` keeps `P × S ≥ gain` for every `k`:
//! - `k × A ≤ n`: `P ≥ A·x / (1 + A·x)` with `x = k/n` (Bernoulli), so
//!   `P × S ≥ 2k·p / (1 + A·k/n) ≥ k·p`;
//! - `k × A > n`: `P ≥ 1 - (1 - 1/A)^A ≥ 1 - 1/e > 1/2`, so `P × S > M`.
//!
//! It is taken once per commit, from the provider's bond (at most the bond), to the treasury,
//! on top of the job path's own `fraud_slash` for the disproven request.

use super::*;
use crate::bank;
use crate::compute::{self, JobStatus, JOB_UNITS_MAX};
use crate::list;
use crate::staking::{self, Role};
use piazza_primitives::Amount;

/// `S` for `record`, a commit of `session` audited with `audits` draws: what its provider
/// loses when one of its receipts is proven wrong or a drawn one is not revealed.
pub fn fraud_slash(session: &Session, record: &CommitRecord, audits: u64) -> Amount {
    commit_slash(session, record.amount, record.count, audits)
}

/// `S` of a commit of `count` receipts bringing `amount` of new money to `session`, audited
/// with `audits` draws (saturating at the largest amount).
pub fn commit_slash(session: &Session, amount: Amount, count: u64, audits: u64) -> Amount {
    let most = Amount::new(u128::MAX);
    let request_max = session
        .max_price_per_unit
        .checked_mul(u128::from(JOB_UNITS_MAX))
        .unwrap_or(most);
    let price_max = amount.min(request_max);
    let per_draw = count.div_ceil(audits.max(1));
    let spread = price_max.checked_mul(u128::from(per_draw)).unwrap_or(most);
    spread.max(amount).checked_mul(2).unwrap_or(most)
}

/// Takes `S` from `record`'s provider once (the record is marked; the caller stores it).
/// Returns what was taken.
pub(super) fn slash_commit(
    state: &mut StateDelta<'_>,
    record: &mut CommitRecord,
    at_least: Amount,
) -> Amount {
    if record.fraud_slashed {
        return Amount::ZERO;
    }
    let audits = params(state).audits_per_commit;
    let owed = match session(state, record.session) {
        Some(session) => fraud_slash(&session, record, audits).max(at_least),
        None => at_least,
    };
    record.fraud_slashed = true;
    staking::slash(
        state,
        &record.provider,
        Role::Provider,
        owed,
        Some(&bank::treasury()),
    )
}

/// Looks at `record`'s jobs from `height` on (once none is looked at already); a full queue
/// refuses the transaction that made the job.
pub(super) fn watch(
    state: &mut StateDelta<'_>,
    record: &mut CommitRecord,
    height: u64,
) -> Result<(), TxError> {
    if record.fraud_check_height != 0 || record.fraud_slashed {
        return Ok(());
    }
    record.fraud_check_height = list::schedule::<SESSIONS_PER_QUEUE_MAX>(
        state,
        state_key::fraud_checks,
        height + FRAUD_CHECK_BLOCKS,
        record.id,
    )
    .map_err(|full| full.refusal("the session fraud check queue"))?;
    Ok(())
}

/// Slashes the commits one of whose jobs failed (its result proven wrong) since the last
/// look; looks again later at those with a job still posted or disputed.
pub(super) fn checks(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
    for id in list::take::<SESSIONS_PER_QUEUE_MAX>(state, state_key::fraud_checks(block.height)) {
        let Some(mut record) = commit(state, id) else {
            continue;
        };
        if record.fraud_check_height != block.height || record.fraud_slashed {
            continue;
        }
        record.fraud_check_height = 0;
        let statuses: Vec<JobStatus> = record
            .jobs
            .iter()
            .filter_map(|job| compute::job(state, *job).map(|job| job.status))
            .collect();
        if statuses.iter().any(|s| matches!(s, JobStatus::Failed)) {
            let slashed = slash_commit(state, &mut record, Amount::ZERO);
            events.push(Event::new(
                "sessions.fraud_slashed",
                &[
                    ("session", record.session.to_string()),
                    ("commit", id.to_string()),
                    ("provider", record.provider.to_string()),
                    ("count", record.count.to_string()),
                    ("penalty", amount_text(slashed)),
                ],
            ));
        } else if statuses
            .iter()
            .any(|s| !matches!(s, JobStatus::Settled | JobStatus::Expired))
        {
            let next = block.height + FRAUD_CHECK_BLOCKS;
            match list::schedule::<SESSIONS_PER_QUEUE_MAX>(state, state_key::fraud_checks, next, id)
            {
                Ok(at) => record.fraud_check_height = at,
                Err(full) => events.push(Event::new(
                    "sessions.fraud_check_skipped",
                    &[
                        ("commit", id.to_string()),
                        ("reason", full.refusal("the fraud check queue").message),
                    ],
                )),
            }
        }
        put_commit(state, &record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_of(count: u64, amount: u128) -> CommitRecord {
        CommitRecord {
            id: 0,
            session: 0,
            index: 0,
            provider: Address([1; 20]),
            root: piazza_primitives::Hash::ZERO,
            count,
            units: count,
            from_seq: 0,
            voucher_seq: count,
            total: Amount::new(amount),
            amount: Amount::new(amount),
            moved: Amount::ZERO,
            height: 1,
            settle_height: 2,
            audited: Vec::new(),
            revealed: Vec::new(),
            reveal_deadline: 0,
            audits_closed: false,
            adopted_seqs: Vec::new(),
            jobs: Vec::new(),
            status: CommitStatus::Pending,
            fraud_check_height: 0,
            fraud_slashed: false,
        }
    }

    fn session_priced(max_price_per_unit: u128) -> Session {
        Session {
            max_price_per_unit: Amount::new(max_price_per_unit),
            ..crate::sessions::types::tests::session(&piazza_primitives::SecretKey::from_seed(
                [9; 32],
            ))
        }
    }

    /// Cheating on `k` of `n` receipts, each worth at most `p` and together at most `M`, is
    /// caught with probability `1 - (1 - k/n)^A`; the slash times that probability covers the
    /// gain for every `k`, `n` and `A` tried (the bound the module's docs derive).
    #[test]
    fn the_expected_slash_covers_the_gain_of_any_cheat() {
        for audits in 1..=AUDITS_PER_COMMIT_MAX {
            for n in [1u64, 2, 3, 5, 16, 17, 100, 1_000, 2_048, 4_096] {
                for (price_per_unit, amount) in
                    [(1u128, 7u128), (1_000, 1_000_000), (3, 10_000_000)]
                {
                    let record = commit_of(n, amount);
                    let slash = fraud_slash(&session_priced(price_per_unit), &record, audits);
                    let price_max = amount.min(price_per_unit * u128::from(JOB_UNITS_MAX));
                    let draws = if n <= audits { i32::MAX } else { audits as i32 };
                    for k in (1..=n).step_by((n as usize / 64).max(1)).chain([n]) {
                        let caught = if draws == i32::MAX {
                            1.0
                        } else {
                            1.0 - (1.0 - k as f64 / n as f64).powi(draws)
                        };
                        let gain = (u128::from(k) * price_max).min(amount) as f64;
                        let expected = caught * slash.base_units() as f64;
                        assert!(
                            expected >= gain * (1.0 - 1e-9),
                            "A {audits}, n {n}, k {k}, M {amount}: {expected} < {gain}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_slash_grows_with_the_commit_and_falls_with_the_audits() {
        let session = session_priced(1);
        let small = fraud_slash(&session, &commit_of(100, 1_000), 4);
        let large = fraud_slash(&session, &commit_of(1_000, 1_000), 4);
        assert!(large > small, "{large} > {small}");
        assert!(fraud_slash(&session, &commit_of(1_000, 1_000), 16) < large);
        // A commit of no new money gains nothing and loses nothing more.
        assert_eq!(fraud_slash(&session, &commit_of(1_000, 0), 4), Amount::ZERO);
        // Huge values saturate instead of wrapping.
        let rich = session_priced(u128::MAX / 2);
        assert_eq!(
            fraud_slash(&rich, &commit_of(4_096, u128::MAX / 2), 1),
            Amount::new(u128::MAX)
        );
    }
}
