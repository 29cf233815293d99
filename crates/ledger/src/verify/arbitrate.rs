//! `Arbitrate`: anyone sends the evidence for the step the game found (or for the input
//! tokenization, or for the length of a generation whose common prefix is agreed) and the
//! ledger decides through the node's arbiter.

use super::*;

/// The job as the arbiter reads it, and the model's commitments.
/// The model and job of a dispute, as the arbiter reads them.
fn arbitration_inputs(
    state: &StateDelta<'_>,
    id: u64,
) -> Result<(arbitration::Model, arbitration::Job), TxError> {
    let job = compute::job(state, id).ok_or_else(|| no_dispute(id))?;
    let record = models::record(state, &job.model).ok_or_else(|| models::unknown(&job.model))?;
    Ok((
        arbitration::Model {
            architecture: record.architecture,
            config_hash: record.config_hash,
            weights_commitment: record.weights_commitment,
            tokenizer_hash: record.tokenizer_hash,
        },
        arbitration::Job {
            input: job.input,
            params: job.params,
        },
    ))
}

/// Decides the dispute with `evidence`: the loser (none for a draw), and why.
fn arbitrate(
    state: &StateDelta<'_>,
    arbiter: &dyn Arbiter,
    dispute: &Dispute,
    evidence: &[u8],
) -> Result<(Option<usize>, String), TxError> {
    let rejected = |reason: String| error(ErrorCode::EvidenceRejected, reason);
    if dispute.phase == Phase::Bisect {
        return Err(error(
            ErrorCode::WrongRound,
            "the dispute is still in its bisection rounds",
        ));
    }
    let (model, job) = arbitration_inputs(state, dispute.job)?;
    let [defendant, claimant] = &dispute.parties;
    match &dispute.phase {
        Phase::Bisect => unreachable!("checked above"),
        Phase::Input if dispute.is_length_dispute() && defendant.ids == claimant.ids => {
            let counts = [defendant.step_count, claimant.step_count];
            let finding = arbiter
                .length(
                    &model,
                    &job,
                    &claimant.ids,
                    counts,
                    evidence,
                    &|index, leaf, siblings| dispute.leaf_agreed(index, leaf, siblings),
                )
                .map_err(rejected)?;
            let common = dispute.common_steps();
            // A count is right when it is a possible run that stops where the agreed samples
            // stop it; with no stop among them, only a count past the common prefix can be.
            let right = |side: usize| {
                finding.fits[side]
                    && match finding.stop_steps {
                        Some(stop) => counts[side] == stop,
                        None => counts[side] > common,
                    }
            };
            // Counts differ, so at most one is right; when neither is, the defendant loses.
            let loser = if right(DEFENDANT) {
                CLAIMANT
            } else {
                DEFENDANT
            };
            let reason = match finding.stop_steps {
                Some(stop) => format!("the agreed samples stop the generation at {stop} steps"),
                None => format!(
                    "the agreed samples do not stop the generation within its {common} common steps"
                ),
            };
            Ok((Some(loser), reason))
        }
        Phase::Input => {
            let verdict = arbiter.input(&model, &job, evidence).map_err(rejected)?;
            let ids = verdict.ids();
            let fits = |count: u64| verdict.step_count_fits(count).map_err(rejected);
            let counts = verdict.id_count();
            // A party that signed a prompt count other than the tokenizer's signed a lie.
            let miscounted = |party: &Party| {
                signed_count(state, party).is_some_and(|signed| Some(signed) != counts)
            };
            if is_count_dispute(dispute) {
                let count =
                    counts.ok_or_else(|| rejected("this arbiter counts no token ids".into()))?;
                let loser = if miscounted(defendant) {
                    DEFENDANT
                } else {
                    CLAIMANT
                };
                return Ok((Some(loser), format!("input tokenized to {count} ids")));
            }
            let loser = if ids != defendant.ids || miscounted(defendant) {
                // The result was computed from the wrong token ids, or signed a wrong count.
                Some(DEFENDANT)
            } else if ids != claimant.ids || miscounted(claimant) {
                Some(CLAIMANT)
            } else if !fits(defendant.step_count)? {
                Some(DEFENDANT)
            } else if !fits(claimant.step_count)? {
                Some(CLAIMANT)
            } else {
                // Both counts are possible runs of these ids: the parties disagree on where a
                // generation stops, which the rounds cannot reach. Nobody is proven wrong.
                None
            };
            Ok((loser, format!("input tokenized to {}", ids.to_hex())))
        }
        Phase::Step { step, leaves } => {
            let re_execute = |step_count: u64| {
                arbiter.step(
                    &model,
                    &job,
                    *step,
                    step_count,
                    &claimant.ids,
                    evidence,
                    &|index, leaf, siblings| dispute.leaf_agreed(index, leaf, siblings),
                )
            };
            // In a length dispute the step lies in the common prefix, where both runs have
            // the same graph; either count that is a possible run rebuilds it.
            let leaf = match re_execute(claimant.step_count) {
                Err(_) if dispute.is_length_dispute() => re_execute(defendant.step_count),
                result => result,
            }
            .map_err(rejected)?;
            let loser = if leaf == leaves[CLAIMANT] {
                DEFENDANT
            } else if leaf == leaves[DEFENDANT] {
                CLAIMANT
            } else {
                DEFENDANT
            };
            Ok((
                Some(loser),
                format!("step {step} re-executed to {}", leaf.to_hex()),
            ))
        }
    }
}

/// Whether `dispute` is over the prompt count alone: the claimant challenged with the
/// result's own trace root (the same run), so only the count the provider signed is in doubt.
pub(super) fn is_count_dispute(dispute: &Dispute) -> bool {
    let [defendant, claimant] = &dispute.parties;
    defendant.root == claimant.root
}

/// The prompt count `party` signed: a provider's stated `input_units` for its job (a session
/// receipt's, or its `PostResult`'s); `None` for a challenger, or where none was stated (0).
pub(super) fn signed_count(state: &StateDelta<'_>, party: &Party) -> Option<u64> {
    if !party.is_provider {
        return None;
    }
    compute::job(state, party.job)
        .and_then(|job| job.result)
        .map(|result| result.input_units)
        .filter(|&count| count != 0)
}

pub(super) fn check_stateful(state: &StateDelta<'_>, job: &u64) -> Result<(), TxError> {
    dispute(state, *job).ok_or_else(|| no_dispute(*job))?;
    Ok(())
}

pub(super) fn execute(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    job: &u64,
    evidence: &[u8],
) -> Result<(), TxError> {
    let sender = ctx.sender;
    let block = ctx.block.clone();
    let d = dispute(state, *job).ok_or_else(|| no_dispute(*job))?;
    let (loser, reason) = arbitrate(state, ctx.arbiter, &d, evidence)?;
    ctx.emit(Event::new(
        "verify.arbitrated",
        &[
            ("job", job.to_string()),
            ("by", sender.to_string()),
            ("evidence_bytes", evidence.len().to_string()),
        ],
    ));
    match loser {
        Some(loser) => resolve(state, d, loser, &reason, &block, &mut ctx.events),
        None => draw(state, d, &reason, &block, &mut ctx.events),
    }
    Ok(())
}
