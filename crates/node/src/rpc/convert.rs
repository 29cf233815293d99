//! Domain types → `piazza_api` shapes. Pure functions, no IO.

use piazza_api::{
    BlockInfo, DisputeInfo, DisputePhase, EventInfo, JobInfo, JobParamsInfo, JobReceiptInfo,
    JobResultInfo, JobState, ModelFilesInfo, ModelInfo, PartyInfo, ReceiptInfo, TxFailure, TxInfo,
};
use piazza_codec::Encode;
use piazza_ledger::bank::Msg as BankMsg;
use piazza_ledger::block::{Block, Event, Receipt, TxStatus};
use piazza_ledger::compute::{self, Job, JobStatus};
use piazza_ledger::error::ErrorCode;
use piazza_ledger::models;
use piazza_ledger::staking::Msg as StakingMsg;
use piazza_ledger::tx::{Message, SignedTransaction};
use piazza_ledger::verify;
use piazza_primitives::Hash;
use serde_json::{json, Value};

/// A model record as `piazza_getModels` lists it, with the addresses of the providers serving
/// it: the record's numeric profile and the blob ids of its files included, so a provider
/// that lacks the weights knows what to fetch and how to load it.
pub fn model_info(record: models::ModelRecord, providers: Vec<String>) -> ModelInfo {
    ModelInfo {
        name: record.name,
        kind: record.kind.name().to_string(),
        architecture: record.architecture,
        config_hash: record.config_hash.to_hex(),
        weights_commitment: record.weights_commitment.to_hex(),
        tokenizer_hash: record.tokenizer_hash.to_hex(),
        owner: record.owner.to_string(),
        license: record.license,
        price_floor: record.price_floor.base_units().to_string(),
        providers,
        numeric: match record.numeric {
            models::NumericProfile::F32 => "f32",
            models::NumericProfile::Quantized => "quantized",
        }
        .to_string(),
        files: record.files.map(|files| ModelFilesInfo {
            weights: files.weights.to_hex(),
            tokenizer: files.tokenizer.to_hex(),
            config: files.config.to_hex(),
        }),
    }
}

pub fn message_json(message: &Message) -> Value {
    match message {
        Message::Bank(BankMsg::Send { to, amount }) => {
            json!({"type": "bank.send", "to": to.to_string(), "amount": amount.base_units().to_string()})
        }
        Message::Staking(StakingMsg::Bond { role, amount }) => {
            json!({"type": "staking.bond", "role": role.name(), "amount": amount.base_units().to_string()})
        }
        Message::Staking(StakingMsg::Unbond { role, amount }) => {
            json!({"type": "staking.unbond", "role": role.name(), "amount": amount.base_units().to_string()})
        }
        Message::Models(models::Msg::Register(record)) => {
            json!({"type": "models.register", "name": record.name, "kind": record.kind.name()})
        }
        Message::Models(models::Msg::Retire { name }) => {
            json!({"type": "models.retire", "name": name})
        }
        Message::Compute(m) => match m {
            compute::Msg::RegisterProvider { offer, stake } => {
                json!({"type": "compute.register_provider", "models": offer.models, "price_per_unit": offer.price_per_unit.base_units().to_string(), "capacity": offer.capacity, "stake": stake.base_units().to_string()})
            }
            compute::Msg::UpdateProvider { offer } => {
                json!({"type": "compute.update_provider", "models": offer.models, "price_per_unit": offer.price_per_unit.base_units().to_string(), "capacity": offer.capacity})
            }
            compute::Msg::ExitProvider => json!({"type": "compute.exit_provider"}),
            compute::Msg::SubmitJob {
                model,
                input,
                max_units,
                max_price,
                ..
            } => {
                json!({"type": "compute.submit_job", "model": model, "input_bytes": input.len(), "max_units": max_units, "max_price": max_price.base_units().to_string()})
            }
            compute::Msg::PostResult {
                job,
                output_hash,
                trace_root,
                work_units,
                input_units,
                ..
            } => {
                json!({"type": "compute.post_result", "job": job, "output_hash": output_hash.to_hex(), "trace_root": trace_root.to_hex(), "work_units": work_units, "input_units": input_units})
            }
            compute::Msg::DeclineJob { job, reason } => {
                json!({"type": "compute.decline_job", "job": job, "reason": reason})
            }
        },
        Message::Verify(m) => match m {
            verify::Msg::RegisterAuditor { models, stake } => {
                json!({"type": "verify.register_auditor", "models": models, "stake": stake.base_units().to_string()})
            }
            verify::Msg::ExitAuditor => json!({"type": "verify.exit_auditor"}),
            verify::Msg::Attest { job } => json!({"type": "verify.attest", "job": job}),
            verify::Msg::Challenge {
                job,
                trace_root,
                step_count,
                ids,
            } => {
                json!({"type": "verify.challenge", "job": job, "trace_root": trace_root.to_hex(), "step_count": step_count, "ids": ids.to_hex()})
            }
            verify::Msg::Reveal {
                job,
                round,
                left,
                right,
                ..
            } => {
                json!({"type": "verify.reveal", "job": job, "round": round, "left": left.to_hex(), "right": right.to_hex()})
            }
            verify::Msg::Arbitrate { job, evidence } => {
                json!({"type": "verify.arbitrate", "job": job, "evidence_bytes": evidence.len()})
            }
        },
        Message::Sessions(m) => super::sessions::message_json(m),
        Message::Storage(m) => super::storage::message_json(m),
        Message::Grants(m) => super::agents::grants_json(m),
        Message::Agents(m) => super::agents::agents_json(m),
        Message::Shares(m) => super::economy::shares_json(m),
        Message::Data(m) => super::economy::data_json(m),
        Message::Bank(BankMsg::SettleAuthorization { authorization, .. }) => {
            super::agents::authorization_json(authorization)
        }
    }
}

pub(super) fn party_info(p: &verify::Party) -> PartyInfo {
    PartyInfo {
        address: p.address.to_string(),
        job: p.job,
        root: p.root.to_hex(),
        step_count: p.step_count,
        ids: p.ids.to_hex(),
        bond: p.bond.base_units().to_string(),
        is_provider: p.is_provider,
    }
}

pub(super) fn dispute_info(d: &verify::Dispute) -> DisputeInfo {
    let (phase, step, leaves) = match &d.phase {
        verify::Phase::Bisect => (DisputePhase::Bisect, None, Vec::new()),
        verify::Phase::Input => (DisputePhase::Input, None, Vec::new()),
        verify::Phase::Step { step, leaves } => (
            DisputePhase::Step,
            Some(*step),
            leaves.iter().map(|l| l.to_hex()).collect(),
        ),
    };
    DisputeInfo {
        job: d.job,
        defendant: party_info(&d.parties[verify::DEFENDANT]),
        claimant: party_info(&d.parties[verify::CLAIMANT]),
        round: d.round,
        node_level: d.node.level,
        node_index: d.node.index,
        phase,
        step,
        leaves,
        revealed: d.reveals.iter().map(Option::is_some).collect(),
        deadline_height: d.deadline,
        opened_height: d.opened_height,
    }
}

pub(super) fn job_info(job: &Job) -> JobInfo {
    let (provider, deadline_height, settle_height) = match &job.status {
        JobStatus::Assigned {
            provider,
            deadline_height,
        } => (Some(provider.to_string()), Some(*deadline_height), None),
        JobStatus::Posted {
            provider,
            settle_height,
        } => (Some(provider.to_string()), None, Some(*settle_height)),
        JobStatus::Settled => (
            job.receipt.as_ref().map(|r| r.provider.to_string()),
            None,
            None,
        ),
        JobStatus::Pending | JobStatus::Expired => (None, None, None),
        JobStatus::Failed => (None, None, None),
    };
    let p = &job.params;
    JobInfo {
        id: job.id,
        client: job.client.to_string(),
        model: job.model.clone(),
        input: hex::encode(&job.input),
        params: JobParamsInfo {
            max_tokens: p.max_tokens,
            temperature_milli: p.temperature_milli,
            top_k: p.top_k,
            top_p_milli: p.top_p_milli,
            repetition_penalty_milli: p.repetition_penalty_milli,
            seed: p.seed,
            chat: p.chat,
            stop: p.stop.clone(),
            deadline_blocks: p.deadline_blocks,
            redundancy: p.redundancy,
        },
        max_units: job.max_units,
        max_price: job.max_price.base_units().to_string(),
        submitted_height: job.submitted_height,
        status: match job.status {
            JobStatus::Pending => JobState::Pending,
            JobStatus::Assigned { .. } => JobState::Assigned,
            JobStatus::Posted { .. } => JobState::Posted,
            JobStatus::Settled => JobState::Settled,
            JobStatus::Expired => JobState::Expired,
            JobStatus::Failed => JobState::Failed,
        },
        group: job.group,
        hold: None,
        provider,
        deadline_height,
        settle_height,
        missed: job.missed.iter().map(|a| a.to_string()).collect(),
        result: job.result.as_ref().map(|r| JobResultInfo {
            output: hex::encode(&r.output),
            output_hash: r.output_hash.to_hex(),
            trace_root: r.trace_root.to_hex(),
            work_units: r.work_units,
            posted_height: r.posted_height,
            input_units: r.input_units,
        }),
        receipt: job.receipt.as_ref().map(|r| JobReceiptInfo {
            job: r.job,
            model: r.model.clone(),
            input_hash: r.input_hash.to_hex(),
            output_hash: r.output_hash.to_hex(),
            trace_root: r.trace_root.to_hex(),
            provider: r.provider.to_string(),
            price: r.price.base_units().to_string(),
            refund: r.refund.base_units().to_string(),
            height: r.height,
        }),
    }
}

pub(super) fn tx_info(tx: &SignedTransaction, height: u64, index: u32) -> TxInfo {
    TxInfo {
        hash: tx.hash().to_hex(),
        height,
        index,
        sender: tx.sender().to_string(),
        nonce: tx.tx.nonce,
        max_fee: tx.tx.max_fee.base_units().to_string(),
        messages: tx.tx.messages.iter().map(message_json).collect(),
        raw: hex::encode(tx.to_bytes()),
    }
}

pub(super) fn event_info(event: &Event, height: u64, tx_hash: Option<Hash>) -> EventInfo {
    EventInfo {
        kind: event.kind.clone(),
        attributes: event.attributes.iter().cloned().collect(),
        tx_hash: tx_hash.map(|h| h.to_hex()),
        height,
    }
}

pub(super) fn receipt_info(receipt: &Receipt) -> ReceiptInfo {
    let (status, error) = match &receipt.status {
        TxStatus::Ok => ("ok", None),
        TxStatus::Failed { code, message } => (
            "failed",
            Some(TxFailure {
                code: *code,
                name: ErrorCode::from_code(*code)
                    .map_or("unknown", |c| c.name())
                    .to_string(),
                message: message.clone(),
            }),
        ),
    };
    ReceiptInfo {
        tx_hash: receipt.tx_hash.to_hex(),
        height: receipt.height,
        index: receipt.index,
        status: status.to_string(),
        error,
        fee_paid: receipt.fee_paid.base_units().to_string(),
        events: receipt
            .events
            .iter()
            .map(|e| event_info(e, receipt.height, Some(receipt.tx_hash)))
            .collect(),
    }
}

pub(super) fn block_info(block: &Block, with_raw: bool) -> BlockInfo {
    let h = &block.header;
    BlockInfo {
        hash: block.hash().to_hex(),
        height: h.height,
        parent_hash: h.parent_hash.to_hex(),
        time_ms: h.time_ms,
        proposer: h.proposer.address().to_string(),
        tx_root: h.tx_root.to_hex(),
        state_root: h.state_root.to_hex(),
        randomness: h.randomness.to_hex(),
        tx_hashes: block.txs.iter().map(|t| t.hash().to_hex()).collect(),
        raw: with_raw.then(|| hex::encode(block.to_bytes())),
    }
}
