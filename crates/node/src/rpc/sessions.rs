//! Session methods and the JSON of session messages: the ledger's `sessions` records mapped to
//! `piazza_api` shapes.

use super::framing::{internal, rpc_error};
use super::methods::{address_param, param, to_value};
use crate::app::App;
use piazza_api::{
    error_code, session_method, AccountSessions, RpcError, SessionCommitInfo, SessionInfo,
    SessionState, SESSION_COMMITS_PAGE_MAX,
};
use piazza_ledger::compute;
use piazza_ledger::sessions::{self, CommitRecord, CommitStatus, Session, SessionStatus};
use piazza_ledger::state::StateDelta;
use piazza_primitives::Amount;
use serde_json::{json, Value};

fn amount(value: Amount) -> String {
    value.base_units().to_string()
}

pub(super) fn u64_param(params: &[Value], index: usize, what: &str) -> Result<u64, RpcError> {
    param(params, index, what)?.as_u64().ok_or_else(|| {
        rpc_error(
            error_code::INVALID_PARAMS,
            format!("{what} must be a non-negative integer"),
            None,
        )
    })
}

pub(super) fn session_info(view: &StateDelta<'_>, s: &Session) -> SessionInfo {
    SessionInfo {
        id: s.id,
        owner: s.owner.to_string(),
        owner_key: s.owner_key.to_hex(),
        authorised: s.authorised.map(|k| k.to_hex()),
        model: s.model.clone(),
        provider: s.provider.map(|p| p.to_string()),
        endpoint: s
            .provider
            .and_then(|p| compute::provider(view, &p))
            .map(|p| p.offer.endpoint),
        deposit: amount(s.deposit),
        max_price_per_unit: amount(s.max_price_per_unit),
        expiry_height: s.expiry_height,
        opened_height: s.opened_height,
        state: match s.status {
            SessionStatus::Pending => SessionState::Pending,
            SessionStatus::Open => SessionState::Open,
            SessionStatus::Closing => SessionState::Closing,
            SessionStatus::Closed => SessionState::Closed,
        },
        paid: amount(s.paid),
        committed_total: amount(s.committed_total),
        committed_seq: s.committed_seq,
        commit_height: s.commit_height,
        committed_units: s.committed_units,
        commits: s.commits,
        pending_commits: s.pending_commits,
        closing_height: s.closing_height,
    }
}

pub(super) fn commit_info(c: &CommitRecord) -> SessionCommitInfo {
    SessionCommitInfo {
        id: c.id,
        session: c.session,
        index: c.index,
        provider: c.provider.to_string(),
        root: c.root.to_hex(),
        count: c.count,
        units: c.units,
        from_seq: c.from_seq,
        voucher_seq: c.voucher_seq,
        total: amount(c.total),
        amount: amount(c.amount),
        moved: amount(c.moved),
        height: c.height,
        settle_height: c.settle_height,
        audited: c.audited.clone(),
        revealed: c.revealed.clone(),
        reveal_deadline: c.reveal_deadline,
        audits_closed: c.audits_closed,
        jobs: c.jobs.clone(),
        paid: c.status == CommitStatus::Paid,
    }
}

/// The commits of `session` from index `first` (default: the newest page), oldest first.
fn commits(view: &StateDelta<'_>, session: &Session, first: Option<u64>) -> Vec<SessionCommitInfo> {
    let first = first.unwrap_or(session.commits.saturating_sub(SESSION_COMMITS_PAGE_MAX));
    let end = session
        .commits
        .min(first.saturating_add(SESSION_COMMITS_PAGE_MAX));
    (first..end)
        .filter_map(|index| sessions::session_commit(view, session.id, index))
        .filter_map(|id| sessions::commit(view, id))
        .map(|c| commit_info(&c))
        .collect()
}

/// Answers a session method.
pub(super) fn dispatch(app: &App, name: &str, params: &[Value]) -> Result<Value, RpcError> {
    let snapshot = app.store().snapshot().map_err(internal)?;
    let view = StateDelta::new(&snapshot);
    match name {
        session_method::GET_SESSION => {
            let id = u64_param(params, 0, "session id")?;
            match sessions::session(&view, id) {
                None => Ok(Value::Null),
                Some(s) => to_value(session_info(&view, &s)),
            }
        }
        session_method::GET_SESSION_COMMITS => {
            let id = u64_param(params, 0, "session id")?;
            let first = match params.get(1) {
                None | Some(Value::Null) => None,
                Some(_) => Some(u64_param(params, 1, "first commit index")?),
            };
            match sessions::session(&view, id) {
                None => Ok(Value::Null),
                Some(s) => to_value(commits(&view, &s, first)),
            }
        }
        _ => {
            let address = address_param(params, 0)?;
            to_value(AccountSessions {
                owned: sessions::sessions_of_client(&view, &address),
                served: sessions::sessions_of_provider(&view, &address),
            })
        }
    }
}

/// A session message as JSON (receipts and requests by their hashes and seqs, never inputs).
pub fn message_json(message: &sessions::Msg) -> Value {
    match message {
        sessions::Msg::Open {
            model,
            owner_key,
            authorised,
            deposit,
            max_price_per_unit,
            expiry_blocks,
        } => json!({"type": "sessions.open", "model": model, "owner_key": owner_key.to_hex(),
            "authorised": authorised.map(|k| k.to_hex()), "deposit": amount(*deposit),
            "max_price_per_unit": amount(*max_price_per_unit), "expiry_blocks": expiry_blocks}),
        sessions::Msg::TopUp { session, amount: a } => {
            json!({"type": "sessions.top_up", "session": session, "amount": amount(*a)})
        }
        sessions::Msg::Commit {
            session,
            root,
            count,
            units,
            voucher,
        } => json!({"type": "sessions.commit", "session": session, "root": root.to_hex(),
            "count": count, "units": units, "voucher_seq": voucher.voucher.seq,
            "total": amount(voucher.voucher.total)}),
        sessions::Msg::Reveal {
            session,
            commit,
            index,
            receipt,
            ..
        } => json!({"type": "sessions.reveal", "session": session, "commit": commit,
            "index": index, "seq": receipt.seq}),
        sessions::Msg::Challenge {
            session,
            commit,
            receipt,
            trace_root,
            ..
        } => json!({"type": "sessions.challenge", "session": session, "commit": commit,
            "seq": receipt.receipt.seq, "trace_root": trace_root.to_hex()}),
        sessions::Msg::Close { session } => json!({"type": "sessions.close", "session": session}),
    }
}
