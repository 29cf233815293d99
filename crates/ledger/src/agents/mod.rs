//! `agents` (DESIGN.md §7): agent records (owner, unique name, description, endpoints by
//! protocol, capability tags, price, stake, optional share asset), update and deactivation;
//! paid calls (escrow for a request hash → the agent posts its result hash → release by the
//! payer or after a window, or a refund when the agent misses its deadline → an optional
//! rating by the payer, only on a settled call); reputation computed from that history
//! ([`reputation_bps`]) and discovery by capability tag ranked by [`score`]. Formulas:
//! `docs/agents.md`.
//!
//! Invariants: the module account holds exactly the active agents' stakes plus the open and
//! answered calls' escrows; a call pays out once (settled or refunded, never both); a rating
//! exists only on a settled call, from its payer, who does not own the agent, once; every list
//! is bounded and refuses when full.

mod calls;
pub mod state_key;
mod types;

pub use types::*;

use crate::bank::{self, assets::AssetId, authorization::TransferAuthorization};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::list::List;
use crate::module::{BlockContext, GenesisError, Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash, Signature};

/// The module tag `tx::Message` gives this module's messages.
pub const MODULE_TAG: u8 = 21;
/// Most agents one account may own (active or not).
pub const AGENTS_PER_OWNER_MAX: usize = 32;
/// Most active agents under one capability tag.
pub const AGENTS_PER_TAG_MAX: usize = 1_000;
/// Most calls whose deadline or release falls at one height.
pub const CALLS_PER_HEIGHT_MAX: usize = 10_000;
/// The longest a call may wait for its answer, in blocks.
pub const CALL_TIMEOUT_BLOCKS_MAX: u64 = 10_000;
/// Most agents one discovery query returns.
pub const FIND_RESULTS_MAX: usize = 100;
/// Ratings run from 1 to this.
pub const RATING_MAX: u8 = 5;

/// The account holding agents' stakes and calls' escrows.
pub fn escrow() -> Address {
    Address::module("agents")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Registers an agent owned by the sender, moving `stake` into the module's escrow.
    Register {
        name: String,
        profile: Profile,
        stake: Amount,
        share_asset: Option<AssetId>,
    },
    /// Replaces an active agent's profile (owner only).
    Update { agent: u64, profile: Profile },
    /// Takes the agent out of discovery and returns its stake (owner only). Open calls still
    /// settle or refund.
    Deactivate { agent: u64 },
    /// Escrows `amount` (at least the agent's price) for one request; the agent must answer
    /// within `timeout_blocks`.
    Call {
        agent: u64,
        request_hash: Hash,
        amount: Amount,
        timeout_blocks: u64,
    },
    /// The agent's owner posts the result's hash.
    Answer { call: u64, result_hash: Hash },
    /// The payer releases an answered call's escrow to the agent's owner.
    Release { call: u64 },
    /// The payer rates a settled call (1..=5), once.
    Rate { call: u64, rating: u8 },
    /// A call paid over HTTP with x402 (docs/agents.md §4): settles the payer's transfer
    /// `authorization` (to the agent's owner, at least the agent's price; anyone may submit
    /// it, once) and records a settled call of `authorization.from` for `request_hash`, which
    /// counts in the agent's history and which its payer may then rate.
    PaidCall {
        agent: u64,
        request_hash: Hash,
        authorization: TransferAuthorization,
        signature: Signature,
    },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::Register {
                name,
                profile,
                stake,
                share_asset,
            } => {
                w.u8(0);
                w.str(name);
                w.value(profile);
                w.value(stake);
                w.option(share_asset);
            }
            Msg::Update { agent, profile } => {
                w.u8(1);
                w.u64(*agent);
                w.value(profile);
            }
            Msg::Deactivate { agent } => {
                w.u8(2);
                w.u64(*agent);
            }
            Msg::Call {
                agent,
                request_hash,
                amount,
                timeout_blocks,
            } => {
                w.u8(3);
                w.u64(*agent);
                w.value(request_hash);
                w.value(amount);
                w.u64(*timeout_blocks);
            }
            Msg::Answer { call, result_hash } => {
                w.u8(4);
                w.u64(*call);
                w.value(result_hash);
            }
            Msg::Release { call } => {
                w.u8(5);
                w.u64(*call);
            }
            Msg::Rate { call, rating } => {
                w.u8(6);
                w.u64(*call);
                w.u8(*rating);
            }
            Msg::PaidCall {
                agent,
                request_hash,
                authorization,
                signature,
            } => {
                w.u8(7);
                w.u64(*agent);
                w.value(request_hash);
                w.value(authorization);
                w.value(signature);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Msg::Register {
                name: r.string(NAME_BYTES_MAX)?,
                profile: r.value()?,
                stake: r.value()?,
                share_asset: r.option()?,
            }),
            1 => Ok(Msg::Update {
                agent: r.u64()?,
                profile: r.value()?,
            }),
            2 => Ok(Msg::Deactivate { agent: r.u64()? }),
            3 => Ok(Msg::Call {
                agent: r.u64()?,
                request_hash: r.value()?,
                amount: r.value()?,
                timeout_blocks: r.u64()?,
            }),
            4 => Ok(Msg::Answer {
                call: r.u64()?,
                result_hash: r.value()?,
            }),
            5 => Ok(Msg::Release { call: r.u64()? }),
            6 => Ok(Msg::Rate {
                call: r.u64()?,
                rating: r.u8()?,
            }),
            7 => Ok(Msg::PaidCall {
                agent: r.u64()?,
                request_hash: r.value()?,
                authorization: r.value()?,
                signature: r.value()?,
            }),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "agents message",
            }),
        }
    }
}

/// The module's parameters: the genesis document's `agents` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// The least stake an agent registers with.
    pub stake_min: Amount,
    /// Blocks after an answer before its escrow releases by itself.
    pub release_window_blocks: u64,
    /// The stake at which the stake half of the score reaches half its weight.
    pub stake_half: Amount,
    /// The paid volume at which experience reaches half its weight.
    pub paid_half: Amount,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            stake_min: Amount::pza(10),
            release_window_blocks: 20,
            stake_half: Amount::pza(1_000),
            paid_half: Amount::pza(100),
        }
    }
}

impl Encode for Params {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.stake_min);
        w.u64(self.release_window_blocks);
        w.value(&self.stake_half);
        w.value(&self.paid_half);
    }
}

impl Decode for Params {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Params {
            stake_min: r.value()?,
            release_window_blocks: r.u64()?,
            stake_half: r.value()?,
            paid_half: r.value()?,
        })
    }
}

pub fn params(state: &StateDelta<'_>) -> Params {
    state.get(&state_key::params()).unwrap_or_default()
}

pub fn agent(state: &StateDelta<'_>, id: u64) -> Option<Agent> {
    state.get(&state_key::agent(id))
}

pub fn call(state: &StateDelta<'_>, id: u64) -> Option<Call> {
    state.get(&state_key::call(id))
}

pub(crate) fn put_agent(state: &mut StateDelta<'_>, record: &Agent) {
    state.put(state_key::agent(record.id), record);
}

type Ids<const MAX: usize> = List<u64, MAX>;

/// `x / (x + half)` in basis points: 0 at 0, 5,000 at `half`, approaching 10,000.
fn saturating_bps(x: Amount, half: Amount) -> u128 {
    let total = x.base_units().saturating_add(half.base_units());
    if total == 0 {
        return 0;
    }
    x.base_units().saturating_mul(10_000) / total
}

/// An agent's reputation in basis points (0..=10,000), from its history alone:
/// `experience × (reliability + rating) / 2`, where
/// - `experience = paid / (paid + paid_half)` (what completed calls paid, so cheap Sybil
///   volume buys little),
/// - `reliability = (completed + 1) / (completed + timeouts + 2)` (a missed deadline lowers it),
/// - `rating = (Σ rating × paid / Σ paid − 1) / 4` over rated settled calls, 1/2 when none.
pub fn reputation_bps(history: &History, params: &Params) -> u128 {
    let experience = saturating_bps(history.paid, params.paid_half);
    let calls = u128::from(history.completed) + u128::from(history.timeouts);
    let reliability = (u128::from(history.completed) + 1) * 10_000 / (calls + 2);
    let rated = history.rated_paid.base_units();
    let rating = if rated == 0 {
        5_000
    } else {
        // rating_points / rated is the paid-weighted mean in 1..=5.
        history
            .rating_points
            .saturating_sub(rated)
            .saturating_mul(10_000)
            / rated.saturating_mul(u128::from(RATING_MAX - 1))
    };
    experience * (reliability + rating.min(10_000)) / 20_000
}

/// The discovery score (0..=30,000): `stake / (stake + stake_half)` in basis points plus twice
/// the reputation, so a record of paid, settled work outweighs stake alone.
pub fn score(record: &Agent, params: &Params) -> u128 {
    saturating_bps(record.stake, params.stake_half) + 2 * reputation_bps(&record.history, params)
}

/// The active agents with capability `tag`, best [`score`] first (ties: lower id first), at
/// most `limit` (and [`FIND_RESULTS_MAX`]).
pub fn find_by_tag(state: &StateDelta<'_>, tag: &str, limit: usize) -> Vec<(Agent, u128)> {
    let params = params(state);
    let ids: Ids<AGENTS_PER_TAG_MAX> = state.get(&state_key::tag(tag)).unwrap_or_default();
    let mut found: Vec<(Agent, u128)> = ids
        .0
        .iter()
        .filter_map(|id| agent(state, *id))
        .filter(|a| a.active)
        .map(|a| {
            let s = score(&a, &params);
            (a, s)
        })
        .collect();
    found.sort_by(|(a, sa), (b, sb)| sb.cmp(sa).then(a.id.cmp(&b.id)));
    found.truncate(limit.min(FIND_RESULTS_MAX));
    found
}

fn invalid(message: impl Into<String>) -> TxError {
    TxError::new(ErrorCode::InvalidMessage, message)
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= TAG_BYTES_MAX
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_profile(profile: &Profile) -> Result<(), TxError> {
    if profile.endpoints.is_empty() {
        return Err(invalid("an agent names at least one endpoint"));
    }
    for endpoint in &profile.endpoints {
        if !(endpoint.url.starts_with("https://") || endpoint.url.starts_with("http://")) {
            return Err(invalid(format!(
                "endpoint `{}` is not an http(s) URL",
                endpoint.url
            )));
        }
    }
    if profile.tags.is_empty() || !profile.tags.iter().all(|t| valid_tag(t)) {
        return Err(invalid(format!(
            "an agent has 1..={TAGS_MAX} tags of 1..={TAG_BYTES_MAX} bytes of a-z, 0-9 and -"
        )));
    }
    if !profile.tags.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(invalid("an agent's tags are sorted and without repeats"));
    }
    Ok(())
}

fn unknown(id: u64) -> TxError {
    TxError::new(ErrorCode::UnknownAgent, format!("no agent {id}"))
}

fn not_owner(id: u64) -> TxError {
    TxError::new(
        ErrorCode::NotAgentParty,
        format!("only agent {id}'s owner may do this"),
    )
}

/// The active agent `id` owned by `owner`.
fn owned_active(state: &StateDelta<'_>, id: u64, owner: &Address) -> Result<Agent, TxError> {
    let record = agent(state, id).ok_or_else(|| unknown(id))?;
    if record.owner != *owner {
        return Err(not_owner(id));
    }
    if !record.active {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            format!("agent {id} is deactivated"),
        ));
    }
    Ok(record)
}

fn index_tags(state: &mut StateDelta<'_>, record: &Agent) -> Result<(), TxError> {
    for tag in &record.profile.tags {
        let key = state_key::tag(tag);
        let mut ids: Ids<AGENTS_PER_TAG_MAX> = state.get(&key).unwrap_or_default();
        ids.insert_sorted(record.id)
            .map_err(|full| full.refusal(&format!("the list of agents tagged `{tag}`")))?;
        state.put(key, &ids);
    }
    Ok(())
}

fn unindex_tags(state: &mut StateDelta<'_>, record: &Agent) {
    for tag in &record.profile.tags {
        let key = state_key::tag(tag);
        let mut ids: Ids<AGENTS_PER_TAG_MAX> = state.get(&key).unwrap_or_default();
        ids.remove_sorted(&record.id);
        if ids.0.is_empty() {
            state.delete(key);
        } else {
            state.put(key, &ids);
        }
    }
}

fn emit_agent(ctx: &mut TxContext<'_>, kind: &str, record: &Agent) {
    ctx.emit(Event::new(
        kind,
        &[
            ("agent", record.id.to_string()),
            ("owner", record.owner.to_string()),
            ("name", record.name.clone()),
        ],
    ));
}

pub struct Agents;

impl Module for Agents {
    type Msg = Msg;
    type Genesis = Params;
    const NAME: &'static str = "agents";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::Register { profile, .. } | Msg::Update { profile, .. } => {
                200 + 20 * profile.tags.len() as u64
            }
            Msg::Deactivate { .. } => 100,
            Msg::Call { .. } | Msg::Answer { .. } | Msg::Release { .. } | Msg::Rate { .. } => 30,
            // A signature verification and a transfer on top of a call.
            Msg::PaidCall { .. } => 90,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::Register {
                name,
                profile,
                share_asset,
                ..
            } => {
                if name.is_empty() || name.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "an agent's name is 1..={NAME_BYTES_MAX} bytes without control characters"
                    )));
                }
                if share_asset
                    .as_ref()
                    .is_some_and(|asset| *asset != AssetId::Agent(name.clone()))
                {
                    return Err(invalid("an agent's share asset is the one named after it"));
                }
                check_profile(profile)
            }
            Msg::Update { profile, .. } => check_profile(profile),
            Msg::Deactivate { .. } => Ok(()),
            Msg::Call {
                amount,
                timeout_blocks,
                ..
            } => {
                if amount.is_zero() {
                    return Err(invalid("a call escrows a positive amount"));
                }
                if *timeout_blocks == 0 || *timeout_blocks > CALL_TIMEOUT_BLOCKS_MAX {
                    return Err(invalid(format!(
                        "a call's timeout is 1..={CALL_TIMEOUT_BLOCKS_MAX} blocks"
                    )));
                }
                Ok(())
            }
            Msg::Answer { .. } | Msg::Release { .. } => Ok(()),
            Msg::PaidCall { authorization, .. } => authorization.check_stateless(),
            Msg::Rate { rating, .. } => {
                if !(1..=RATING_MAX).contains(rating) {
                    return Err(invalid(format!("a rating is 1..={RATING_MAX}")));
                }
                Ok(())
            }
        }
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Register { name, stake, .. } => {
                let minimum = params(state).stake_min;
                if *stake < minimum {
                    return Err(TxError::new(
                        ErrorCode::StakeBelowMinimum,
                        format!("an agent stakes at least {minimum} PZA"),
                    ));
                }
                if state.get_raw(&state_key::name(name)).is_some() {
                    return Err(invalid(format!("an agent is named `{name}` already")));
                }
                Ok(())
            }
            Msg::Update { agent, .. } | Msg::Deactivate { agent } => {
                owned_active(state, *agent, &ctx.sender).map(|_| ())
            }
            Msg::Call { .. }
            | Msg::Answer { .. }
            | Msg::Release { .. }
            | Msg::Rate { .. }
            | Msg::PaidCall { .. } => calls::check_stateful(state, ctx, msg),
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Register {
                name,
                profile,
                stake,
                share_asset,
            } => {
                let id: u64 = state.get(&state_key::next_agent()).unwrap_or(0);
                state.put(state_key::next_agent(), &(id + 1));
                let mut owned: Ids<AGENTS_PER_OWNER_MAX> = state
                    .get(&state_key::of_owner(&ctx.sender))
                    .unwrap_or_default();
                owned
                    .push(id)
                    .map_err(|full| full.refusal("the sender's list of agents"))?;
                state.put(state_key::of_owner(&ctx.sender), &owned);
                bank::transfer(state, &ctx.sender, &escrow(), *stake)?;
                let record = Agent {
                    id,
                    owner: ctx.sender,
                    name: name.clone(),
                    profile: profile.clone(),
                    stake: *stake,
                    share_asset: share_asset.clone(),
                    active: true,
                    registered_height: ctx.block.height,
                    history: History::default(),
                };
                index_tags(state, &record)?;
                state.put(state_key::name(name), &id);
                put_agent(state, &record);
                emit_agent(ctx, "agents.registered", &record);
            }
            Msg::Update { agent, profile } => {
                let mut record = owned_active(state, *agent, &ctx.sender)?;
                unindex_tags(state, &record);
                record.profile = profile.clone();
                index_tags(state, &record)?;
                put_agent(state, &record);
                emit_agent(ctx, "agents.updated", &record);
            }
            Msg::Deactivate { agent } => {
                let mut record = owned_active(state, *agent, &ctx.sender)?;
                unindex_tags(state, &record);
                bank::transfer(state, &escrow(), &record.owner, record.stake)?;
                record.stake = Amount::ZERO;
                record.active = false;
                put_agent(state, &record);
                emit_agent(ctx, "agents.deactivated", &record);
            }
            Msg::Call { .. }
            | Msg::Answer { .. }
            | Msg::Release { .. }
            | Msg::Rate { .. }
            | Msg::PaidCall { .. } => calls::execute(state, ctx, msg)?,
        }
        Ok(())
    }

    fn init_chain(state: &mut StateDelta<'_>, genesis: &Params) -> Result<(), GenesisError> {
        if genesis.release_window_blocks == 0 || genesis.stake_half.is_zero() {
            return Err(GenesisError::Invalid(
                "agents: release_window_blocks and stake_half must be positive".into(),
            ));
        }
        state.put(state_key::params(), genesis);
        Ok(())
    }

    fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        calls::end_block(state, block, events);
    }
}
