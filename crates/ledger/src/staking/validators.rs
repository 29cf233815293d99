//! Validators: records (operator, consensus key), voting power from bonded stake, and the set
//! that signs each height, computed from committed state.
//!
//! A validator's record is written when its operator bonds as a validator (the transaction's
//! signing key is its consensus key) or at genesis, and removed when its validator bond reaches
//! zero. Whenever a validator bond changes in block `h`, `end_block` computes the set from the
//! records — bond at least the role's minimum, one unit of voting power per whole PZA, the
//! `ACTIVE_VALIDATORS_MAX` largest (ties by operator address) — and schedules it for height
//! `h + VALIDATOR_SET_DELAY`. The set of height `H` is the last scheduled set at or before `H`,
//! so it is known from the state committed at `H - VALIDATOR_SET_DELAY` onwards: a consensus
//! engine that has committed `H - 1` always knows it.

use super::{bonded, params, state_key, Role};
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::GenesisError;
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, PublicKey, PZA_DECIMALS};

/// Blocks between a validator-bond change and the height whose set reflects it.
pub const VALIDATOR_SET_DELAY: u64 = 2;
/// The most validators that sign one height (the largest bonds).
pub const ACTIVE_VALIDATORS_MAX: usize = 100;
/// The most validator records; a bond that would add one more is refused.
pub const VALIDATOR_RECORDS_MAX: usize = 1_000;
/// The most voting power one validator holds, so that the power of a whole set (at most
/// `ACTIVE_VALIDATORS_MAX` validators) stays far below `u64::MAX / 4`.
pub const VOTING_POWER_MAX: u64 = 1 << 50;
/// Scheduled sets kept at once: the one in force and one per height of the delay.
const SCHEDULE_ENTRIES_MAX: usize = VALIDATOR_SET_DELAY as usize + 2;

/// A validator's record: who operates it and the key that signs its votes and proposals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorRecord {
    pub operator: Address,
    pub consensus_key: PublicKey,
}

impl Encode for ValidatorRecord {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.operator);
        w.value(&self.consensus_key);
    }
}

impl Decode for ValidatorRecord {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ValidatorRecord {
            operator: r.value()?,
            consensus_key: r.value()?,
        })
    }
}

/// A member of a height's validator set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveValidator {
    pub operator: Address,
    pub consensus_key: PublicKey,
    /// Whole PZA bonded, capped at `VOTING_POWER_MAX`.
    pub voting_power: u64,
}

impl Encode for ActiveValidator {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.operator);
        w.value(&self.consensus_key);
        w.u64(self.voting_power);
    }
}

impl Decode for ActiveValidator {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ActiveValidator {
            operator: r.value()?,
            consensus_key: r.value()?,
            voting_power: r.u64()?,
        })
    }
}

/// The set of validators that signs from `height` on (until the next scheduled set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSet {
    pub height: u64,
    pub validators: Vec<ActiveValidator>,
}

impl Encode for ScheduledSet {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.height);
        w.seq(&self.validators);
    }
}

impl Decode for ScheduledSet {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ScheduledSet {
            height: r.u64()?,
            validators: r.seq(ACTIVE_VALIDATORS_MAX)?,
        })
    }
}

struct Schedule(Vec<ScheduledSet>);

impl Encode for Schedule {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.0)
    }
}

impl Decode for Schedule {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Schedule(r.seq(SCHEDULE_ENTRIES_MAX)?))
    }
}

struct Operators(Vec<Address>);

impl Encode for Operators {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.0)
    }
}

impl Decode for Operators {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Operators(r.seq(VALIDATOR_RECORDS_MAX)?))
    }
}

/// A validator at genesis: its consensus key, whose address is the operator's account (bonded
/// as a validator in the genesis `bonds`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenesisValidator {
    /// JSON: the key's 32 bytes as 64 hex digits.
    #[serde(with = "key_hex")]
    pub consensus_key: PublicKey,
}

mod key_hex {
    use piazza_primitives::PublicKey;

    pub fn serialize<S: serde::Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_hex())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        let digits = text.as_bytes();
        if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(serde::de::Error::custom("a consensus key is 64 hex digits"));
        }
        let mut key = [0u8; 32];
        for (byte, pair) in key.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(serde::de::Error::custom)?;
            *byte = u8::from_str_radix(pair, 16).map_err(serde::de::Error::custom)?;
        }
        Ok(PublicKey(key))
    }
}

/// Voting power of a bond: one unit per whole PZA, capped at `VOTING_POWER_MAX`.
pub fn voting_power(bond: Amount) -> u64 {
    let whole = bond.base_units() / 10u128.pow(PZA_DECIMALS);
    u64::try_from(whole)
        .unwrap_or(u64::MAX)
        .min(VOTING_POWER_MAX)
}

/// The record of `operator`, if it is a validator.
pub fn validator(state: &StateDelta<'_>, operator: &Address) -> Option<ValidatorRecord> {
    state.get(&state_key::validator(operator))
}

/// Every validator's operator, in address order.
pub fn operators(state: &StateDelta<'_>) -> Vec<Address> {
    state
        .get::<Operators>(&state_key::validator_index())
        .map(|o| o.0)
        .unwrap_or_default()
}

/// The validator set of `height`: the last set scheduled at or before it. Exact for every
/// height up to the committed height plus `VALIDATOR_SET_DELAY`; `None` before the first
/// scheduled set (a chain whose genesis names no validators).
pub fn validator_set(state: &StateDelta<'_>, height: u64) -> Option<ScheduledSet> {
    schedule(state)
        .0
        .into_iter()
        .rev()
        .find(|s| s.height <= height)
}

fn schedule(state: &StateDelta<'_>) -> Schedule {
    state
        .get(&state_key::validator_schedule())
        .unwrap_or(Schedule(Vec::new()))
}

/// Records `key` as the consensus key of the validator its address operates (idempotent for
/// the same key). Refused when the records are full or the key is of small order.
pub fn register(state: &mut StateDelta<'_>, key: &PublicKey) -> Result<(), TxError> {
    crate::error::refuse_small_order(key, "a validator's consensus key")?;
    let operator = key.address();
    if validator(state, &operator).is_some() {
        return Ok(());
    }
    let mut index = operators(state);
    let Err(at) = index.binary_search(&operator) else {
        return Ok(());
    };
    if index.len() >= VALIDATOR_RECORDS_MAX {
        return Err(TxError::new(
            ErrorCode::QueueFull,
            format!("the chain holds {VALIDATOR_RECORDS_MAX} validator records, the most it keeps"),
        ));
    }
    index.insert(at, operator);
    state.put(state_key::validator_index(), &Operators(index));
    state.put(
        state_key::validator(&operator),
        &ValidatorRecord {
            operator,
            consensus_key: *key,
        },
    );
    mark_changed(state);
    Ok(())
}

/// Called whenever `operator`'s validator bond changes: the next `end_block` schedules a new
/// set; a bond gone to zero removes the record.
/// Bonds without a record (a chain whose validators have no consensus keys) change nothing.
pub(super) fn bond_changed(state: &mut StateDelta<'_>, operator: &Address, bond: Amount) {
    if validator(state, operator).is_none() {
        return;
    }
    mark_changed(state);
    if !bond.is_zero() {
        return;
    }
    state.delete(state_key::validator(operator));
    let mut index = operators(state);
    if let Ok(at) = index.binary_search(operator) {
        index.remove(at);
        state.put(state_key::validator_index(), &Operators(index));
    }
}

fn mark_changed(state: &mut StateDelta<'_>) {
    state.put(state_key::validators_changed(), &true);
}

/// The set the records and bonds give now: bonds at least the minimum, the largest first.
pub fn compute_set(state: &StateDelta<'_>) -> Vec<ActiveValidator> {
    let minimum = params(state).min_bond[Role::Validator as usize];
    let mut set: Vec<ActiveValidator> = operators(state)
        .iter()
        .filter_map(|operator| {
            let record = validator(state, operator)?;
            let bond = bonded(state, operator, Role::Validator);
            (bond >= minimum && !bond.is_zero()).then(|| ActiveValidator {
                operator: *operator,
                consensus_key: record.consensus_key,
                voting_power: voting_power(bond),
            })
        })
        .filter(|v| v.voting_power > 0)
        .collect();
    set.sort_by(|a, b| {
        b.voting_power
            .cmp(&a.voting_power)
            .then(a.operator.cmp(&b.operator))
    });
    set.truncate(ACTIVE_VALIDATORS_MAX);
    set
}

/// Schedules the set for `height` if validator bonds changed since the last one (also at
/// genesis, `height` 1); drops scheduled sets no longer needed (those superseded at or before
/// `in_force`). A set with no validator is not scheduled: the chain keeps its last set.
fn schedule_set(state: &mut StateDelta<'_>, height: u64, in_force: u64, events: &mut Vec<Event>) {
    let changed = state
        .get::<bool>(&state_key::validators_changed())
        .unwrap_or(false);
    let mut entries = schedule(state).0;
    let before = entries.len();
    if changed {
        state.delete(state_key::validators_changed());
        let validators = compute_set(state);
        if validators.is_empty() {
            events.push(Event::new(
                "staking.validator_set_kept",
                &[("reason", "no validator would remain".into())],
            ));
        } else {
            events.push(Event::new(
                "staking.validator_set",
                &[
                    ("height", height.to_string()),
                    ("validators", validators.len().to_string()),
                    (
                        "voting_power",
                        validators
                            .iter()
                            .map(|v| v.voting_power)
                            .fold(0u64, u64::saturating_add)
                            .to_string(),
                    ),
                ],
            ));
            entries.retain(|e| e.height < height);
            entries.push(ScheduledSet { height, validators });
        }
    }
    // Keep the last set in force at `in_force` and every later one.
    let superseded = entries
        .iter()
        .rposition(|e| e.height <= in_force)
        .unwrap_or(0);
    entries.drain(..superseded);
    if changed || entries.len() != before {
        state.put(state_key::validator_schedule(), &Schedule(entries));
    }
}

/// Genesis: records for `validators` (each bonded as a validator in the genesis `bonds`), and
/// their set for height 1.
pub fn init_chain(
    state: &mut StateDelta<'_>,
    validators: &[GenesisValidator],
) -> Result<(), GenesisError> {
    for v in validators {
        let operator = v.consensus_key.address();
        if bonded(state, &operator, Role::Validator).is_zero() {
            return Err(GenesisError::Invalid(format!(
                "genesis validator {operator} has no validator bond"
            )));
        }
        if validator(state, &operator).is_some() {
            return Err(GenesisError::Invalid(format!(
                "genesis validator {operator} appears twice"
            )));
        }
        register(state, &v.consensus_key)
            .map_err(|e| GenesisError::Invalid(format!("genesis validator {operator}: {e}")))?;
    }
    if !validators.is_empty() {
        let mut events = Vec::new();
        schedule_set(state, 1, 0, &mut events);
        if validator_set(state, 1).is_none() {
            return Err(GenesisError::Invalid(
                "no genesis validator bonds the validator minimum".into(),
            ));
        }
    }
    Ok(())
}

/// End of block `height`: a change in this block takes effect at `height + VALIDATOR_SET_DELAY`.
pub fn end_block(state: &mut StateDelta<'_>, height: u64, events: &mut Vec<Event>) {
    schedule_set(
        state,
        height.saturating_add(VALIDATOR_SET_DELAY),
        height.saturating_add(1),
        events,
    );
}
