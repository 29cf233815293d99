//! Share assets: a fixed supply of units per model, dataset or agent (or a contribution pool's
//! growing weights), and the revenue that reaches them, distributed by a reward-per-unit
//! accumulator.
//!
//! Exactness: a payment of `a` base units to an asset with `supply` units raises the
//! accumulator by `(a · SCALE + carry) / supply` and keeps the remainder in the asset's
//! `carry_scaled` (added to the next payment). A holding keeps what it has earned in scaled
//! units (`owed_scaled`); a claim pays `owed_scaled / SCALE` and keeps the fraction in the
//! holding; a holding that is emptied gives its fraction back to the asset's carry. So at every
//! moment `escrow · SCALE = Σ owed_scaled (as of now) + Σ carry_scaled`, summed over assets:
//! every unit paid in is claimable by exactly one holder or waits in one carry. The carry (each
//! part under one base unit) goes to whoever holds units at the next payment, so a holding
//! earns exactly its pro-rata share of each payment plus that payment's carry, rounded down.
//!
//! Bounds: `supply ≤ SUPPLY_MAX = 2^48` and `SCALE = 2^32`, so `units · accumulator` stays below
//! `2^128` until an asset has received 2^96 base units (about 7.9·10^19 PZA, beyond any supply).
//! Every product is checked; a payment that would overflow goes to the asset's owner instead.

use super::state_key;
use crate::error::{ErrorCode, TxError};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount};

/// The accumulator's fixed-point scale.
pub const SCALE: u128 = 1 << 32;
/// Most units one asset may have.
pub const SUPPLY_MAX: u128 = 1 << 48;
/// Most accounts holding units of (or owed by) one asset; a transfer to a new holder beyond
/// it is refused.
pub const HOLDERS_MAX: usize = 1_024;
/// Longest model or agent name an asset id carries (a model name's bound).
const NAME_BYTES_MAX: usize = 64;

/// Where every asset's undistributed and unclaimed revenue waits.
pub fn escrow() -> Address {
    Address::module("shares")
}

/// What an asset is the share of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetId {
    /// A registered model, by name.
    Model(String),
    /// A dataset, by id.
    Dataset(u64),
    /// An agent, by name.
    Agent(String),
    /// A contribution pool's weights (granted by validation, not transferable).
    Pool(u64),
}

impl Encode for AssetId {
    fn encode(&self, w: &mut Writer) {
        match self {
            AssetId::Model(name) => {
                w.u8(0);
                w.str(name);
            }
            AssetId::Dataset(id) => {
                w.u8(1);
                w.u64(*id);
            }
            AssetId::Agent(name) => {
                w.u8(2);
                w.str(name);
            }
            AssetId::Pool(id) => {
                w.u8(3);
                w.u64(*id);
            }
        }
    }
}

impl Decode for AssetId {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(AssetId::Model(r.string(NAME_BYTES_MAX)?)),
            1 => Ok(AssetId::Dataset(r.u64()?)),
            2 => Ok(AssetId::Agent(r.string(NAME_BYTES_MAX)?)),
            3 => Ok(AssetId::Pool(r.u64()?)),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "asset id",
            }),
        }
    }
}

impl std::fmt::Display for AssetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssetId::Model(name) => write!(f, "model:{name}"),
            AssetId::Dataset(id) => write!(f, "dataset:{id}"),
            AssetId::Agent(name) => write!(f, "agent:{name}"),
            AssetId::Pool(id) => write!(f, "pool:{id}"),
        }
    }
}

/// Parses the form [`AssetId`] displays: `model:NAME`, `dataset:ID`, `agent:NAME`, `pool:ID`.
impl std::str::FromStr for AssetId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not KIND:ID (model:, dataset:, agent:, pool:)"))?;
        let number = || {
            rest.parse::<u64>()
                .map_err(|_| format!("`{rest}` is not a number"))
        };
        let name = || {
            if rest.is_empty() || rest.len() > NAME_BYTES_MAX {
                Err(format!("a name is 1-{NAME_BYTES_MAX} bytes"))
            } else {
                Ok(rest.to_string())
            }
        };
        match kind {
            "model" => name().map(AssetId::Model),
            "dataset" => number().map(AssetId::Dataset),
            "agent" => name().map(AssetId::Agent),
            "pool" => number().map(AssetId::Pool),
            other => Err(format!("unknown asset kind `{other}`")),
        }
    }
}

/// An asset's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Who may issue its units (and who receives its revenue while it has none).
    pub owner: Address,
    /// Units outstanding: fixed once issued, for a share; growing with grants, for a pool.
    pub supply: u128,
    /// Reward per unit since the asset began, times [`SCALE`].
    pub per_unit_scaled: u128,
    /// Scaled revenue not yet spread over the units (the remainder of the last division, and
    /// fractions given back by emptied holdings); added to the next payment.
    pub carry_scaled: u128,
    /// Revenue received in all, in base units (for queries and invariants).
    pub revenue: Amount,
    /// Revenue forwarded to another asset instead (a pool's dataset pays its pool).
    pub forward: Option<AssetId>,
}

impl Encode for Asset {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.owner);
        w.u128(self.supply);
        w.u128(self.per_unit_scaled);
        w.u128(self.carry_scaled);
        w.value(&self.revenue);
        w.option(&self.forward);
    }
}

impl Decode for Asset {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Asset {
            owner: r.value()?,
            supply: r.u128()?,
            per_unit_scaled: r.u128()?,
            carry_scaled: r.u128()?,
            revenue: r.value()?,
            forward: r.option()?,
        })
    }
}

/// One account's units of an asset and what they have earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holding {
    pub units: u128,
    /// Units committed to an open offering (not transferable until sold or released).
    pub locked: u128,
    /// `units · per_unit_scaled` when `owed_scaled` was last brought up to date.
    pub debt_scaled: u128,
    /// Earned and not yet claimed, times [`SCALE`].
    pub owed_scaled: u128,
}

impl Encode for Holding {
    fn encode(&self, w: &mut Writer) {
        w.u128(self.units);
        w.u128(self.locked);
        w.u128(self.debt_scaled);
        w.u128(self.owed_scaled);
    }
}

impl Decode for Holding {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Holding {
            units: r.u128()?,
            locked: r.u128()?,
            debt_scaled: r.u128()?,
            owed_scaled: r.u128()?,
        })
    }
}

/// The accounts that hold (or are owed by) an asset, in the order they arrived.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holders(pub Vec<Address>);

impl Encode for Holders {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.0);
    }
}

impl Decode for Holders {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Holders(r.seq(HOLDERS_MAX)?))
    }
}

pub fn asset(state: &StateDelta<'_>, id: &AssetId) -> Option<Asset> {
    state.get(&state_key::asset(id))
}

pub fn holding(state: &StateDelta<'_>, id: &AssetId, holder: &Address) -> Holding {
    state
        .get(&state_key::holding(id, holder))
        .unwrap_or_default()
}

pub fn holders(state: &StateDelta<'_>, id: &AssetId) -> Vec<Address> {
    state
        .get::<Holders>(&state_key::holders(id))
        .unwrap_or_default()
        .0
}

pub fn unknown(id: &AssetId) -> TxError {
    TxError::new(ErrorCode::UnknownAsset, format!("no asset {id}"))
}

fn overflow(what: &str) -> TxError {
    TxError::new(
        ErrorCode::OfferingOverflow,
        format!("{what} would overflow"),
    )
}

/// Registers an asset with no units (revenue goes to `owner` until units are issued). Called
/// by the module that owns the record the asset is the share of.
pub fn register(
    state: &mut StateDelta<'_>,
    id: &AssetId,
    owner: Address,
    forward: Option<AssetId>,
) -> Result<(), TxError> {
    if asset(state, id).is_some() {
        return Err(TxError::new(
            ErrorCode::AssetExists,
            format!("asset {id} exists"),
        ));
    }
    state.put(
        state_key::asset(id),
        &Asset {
            owner,
            supply: 0,
            per_unit_scaled: 0,
            carry_scaled: 0,
            revenue: Amount::ZERO,
            forward,
        },
    );
    Ok(())
}

/// Forgets an asset that never issued units (its record left); one with units stays, so its
/// holders keep their claims.
pub fn forget_if_unissued(state: &mut StateDelta<'_>, id: &AssetId) {
    if asset(state, id).is_some_and(|a| a.supply == 0) {
        state.delete(state_key::asset(id));
    }
}

/// What a holding has earned, brought up to the asset's accumulator.
fn settle(asset: &Asset, mut h: Holding) -> Holding {
    // Both products are bounded by the asset's revenue · SCALE (see the module's note).
    let now = h.units.saturating_mul(asset.per_unit_scaled);
    h.owed_scaled = h
        .owed_scaled
        .saturating_add(now.saturating_sub(h.debt_scaled));
    h.debt_scaled = now;
    h
}

/// Writes a holding with a new unit count, keeping the holder list in step: a new holder is
/// added (refused past [`HOLDERS_MAX`]); an emptied one is removed and its fraction returned
/// to the asset's carry.
fn put_holding(
    state: &mut StateDelta<'_>,
    id: &AssetId,
    asset: &mut Asset,
    holder: &Address,
    mut h: Holding,
) -> Result<(), TxError> {
    h.debt_scaled = h.units.saturating_mul(asset.per_unit_scaled);
    let mut list = holders(state, id);
    let listed = list.contains(holder);
    let empty = h.units == 0 && h.owed_scaled < SCALE;
    if empty {
        asset.carry_scaled = asset.carry_scaled.saturating_add(h.owed_scaled);
        state.delete(state_key::holding(id, holder));
        if listed {
            list.retain(|a| a != holder);
            state.put(state_key::holders(id), &Holders(list));
        }
        return Ok(());
    }
    if !listed {
        if list.len() >= HOLDERS_MAX {
            return Err(TxError::new(
                ErrorCode::QueueFull,
                format!("asset {id} has {HOLDERS_MAX} holders, the most it may have"),
            ));
        }
        list.push(*holder);
        state.put(state_key::holders(id), &Holders(list));
    }
    state.put(state_key::holding(id, holder), &h);
    Ok(())
}

/// Issues `supply` units of a registered asset with none, all to its owner.
pub fn issue(
    state: &mut StateDelta<'_>,
    id: &AssetId,
    issuer: &Address,
    supply: u128,
) -> Result<(), TxError> {
    let mut a = asset(state, id).ok_or_else(|| unknown(id))?;
    if a.owner != *issuer {
        return Err(TxError::new(
            ErrorCode::NotAssetOwner,
            format!("only {} may issue {id}", a.owner),
        ));
    }
    if a.supply != 0 || matches!(id, AssetId::Pool(_)) {
        return Err(TxError::new(
            ErrorCode::AssetExists,
            format!("{id} has units already or grows by grants"),
        ));
    }
    if supply == 0 || supply > SUPPLY_MAX {
        return Err(overflow(&format!(
            "a supply of {supply} (1..={SUPPLY_MAX} units)"
        )));
    }
    a.supply = supply;
    let h = Holding {
        units: supply,
        ..Holding::default()
    };
    put_holding(state, id, &mut a, issuer, h)?;
    state.put(state_key::asset(id), &a);
    Ok(())
}

/// Adds `units` to `holder` and to the supply (a pool's weight granted by validation).
pub fn grant(
    state: &mut StateDelta<'_>,
    id: &AssetId,
    holder: &Address,
    units: u128,
) -> Result<(), TxError> {
    let mut a = asset(state, id).ok_or_else(|| unknown(id))?;
    let supply = a
        .supply
        .checked_add(units)
        .filter(|s| *s <= SUPPLY_MAX)
        .ok_or_else(|| overflow(&format!("{id}'s supply")))?;
    let mut h = settle(&a, holding(state, id, holder));
    h.units += units;
    a.supply = supply;
    put_holding(state, id, &mut a, holder, h)?;
    state.put(state_key::asset(id), &a);
    Ok(())
}

/// Moves `units` (not locked) from one holder to another; both keep what they earned so far.
pub fn transfer(
    state: &mut StateDelta<'_>,
    id: &AssetId,
    from: &Address,
    to: &Address,
    units: u128,
) -> Result<(), TxError> {
    move_units(state, id, from, to, units, false)
}

/// Moves units, from `from`'s locked units when `from_locked` (an offering's sale).
pub(super) fn move_units(
    state: &mut StateDelta<'_>,
    id: &AssetId,
    from: &Address,
    to: &Address,
    units: u128,
    from_locked: bool,
) -> Result<(), TxError> {
    let mut a = asset(state, id).ok_or_else(|| unknown(id))?;
    let mut src = settle(&a, holding(state, id, from));
    let free = if from_locked {
        src.locked
    } else {
        src.units - src.locked
    };
    if units > free {
        return Err(TxError::new(
            ErrorCode::InsufficientShares,
            format!("{from} has {free} units of {id} to move, not {units}"),
        ));
    }
    if from == to {
        return Ok(());
    }
    src.units -= units;
    if from_locked {
        src.locked -= units;
    }
    let mut dst = settle(&a, holding(state, id, to));
    dst.units = dst
        .units
        .checked_add(units)
        .ok_or_else(|| overflow("a holding"))?;
    // Nothing is written when the move is refused: only a new holder can be refused (a full
    // list), so the sender's side goes first only when it frees its place.
    if src.units == 0 {
        put_holding(state, id, &mut a, from, src)?;
        put_holding(state, id, &mut a, to, dst)?;
    } else {
        put_holding(state, id, &mut a, to, dst)?;
        put_holding(state, id, &mut a, from, src)?;
    }
    state.put(state_key::asset(id), &a);
    Ok(())
}

/// Locks (`lock`) or releases free units of a holding for an offering.
pub(super) fn set_locked(
    state: &mut StateDelta<'_>,
    id: &AssetId,
    holder: &Address,
    units: u128,
    lock: bool,
) -> Result<(), TxError> {
    let mut h = holding(state, id, holder);
    if lock {
        if units > h.units - h.locked {
            return Err(TxError::new(
                ErrorCode::InsufficientShares,
                format!("{holder} has {} free units of {id}", h.units - h.locked),
            ));
        }
        h.locked += units;
    } else {
        h.locked = h.locked.saturating_sub(units);
    }
    state.put(state_key::holding(id, holder), &h);
    Ok(())
}

/// Where a payment to an asset went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payee {
    /// To the asset's holders through the accumulator.
    Holders(AssetId),
    /// To an account: the owner of an asset with no units, or of an unknown one's fallback.
    Account(Address),
}

/// Pays `amount` from `from` to an asset: to its holders through the accumulator when it has
/// units, else to its owner; a forwarding asset (a pool's dataset) pays the asset it names. An
/// unknown asset is paid to `fallback`. Writes: the asset and one balance (or two). `from`
/// must hold `amount`.
pub fn pay(
    state: &mut StateDelta<'_>,
    from: &Address,
    id: &AssetId,
    amount: Amount,
    fallback: &Address,
) -> Result<Payee, TxError> {
    let (id, a) = match asset(state, id) {
        Some(Asset {
            forward: Some(next),
            ..
        }) => (next.clone(), asset(state, &next)),
        found => (id.clone(), found),
    };
    let Some(mut a) = a else {
        super::transfer(state, from, fallback, amount)?;
        return Ok(Payee::Account(*fallback));
    };
    let spread = amount
        .base_units()
        .checked_mul(SCALE)
        .and_then(|scaled| scaled.checked_add(a.carry_scaled))
        .filter(|_| a.supply > 0)
        .and_then(|total| {
            let per_unit = a.per_unit_scaled.checked_add(total / a.supply)?;
            // A holding's product stays below 2^128 while per_unit · supply does.
            per_unit.checked_mul(a.supply)?;
            Some((per_unit, total % a.supply))
        });
    a.revenue = a.revenue.checked_add(amount).unwrap_or(a.revenue);
    let payee = match spread {
        Some((per_unit, carry)) => {
            a.per_unit_scaled = per_unit;
            a.carry_scaled = carry;
            super::transfer(state, from, &escrow(), amount)?;
            Payee::Holders(id.clone())
        }
        None => {
            super::transfer(state, from, &a.owner, amount)?;
            Payee::Account(a.owner)
        }
    };
    state.put(state_key::asset(&id), &a);
    Ok(payee)
}

/// What `holder` may claim now: whole base units (the fraction stays for later).
pub fn claimable(state: &StateDelta<'_>, id: &AssetId, holder: &Address) -> Amount {
    owed_scaled(state, id, holder)
        .map(|owed| Amount::new(owed / SCALE))
        .unwrap_or(Amount::ZERO)
}

/// What `holder` has earned and not claimed, times [`SCALE`].
pub fn owed_scaled(state: &StateDelta<'_>, id: &AssetId, holder: &Address) -> Option<u128> {
    let a = asset(state, id)?;
    Some(settle(&a, holding(state, id, holder)).owed_scaled)
}

/// Pays `holder` the whole base units it has earned. Refused for an account that holds no
/// units and is owed nothing.
pub fn claim(
    state: &mut StateDelta<'_>,
    id: &AssetId,
    holder: &Address,
) -> Result<Amount, TxError> {
    let mut a = asset(state, id).ok_or_else(|| unknown(id))?;
    let stored = holding(state, id, holder);
    if stored == Holding::default() {
        return Err(TxError::new(
            ErrorCode::NotAHolder,
            format!("{holder} holds no units of {id}"),
        ));
    }
    let mut h = settle(&a, stored);
    let paid = Amount::new(h.owed_scaled / SCALE);
    h.owed_scaled %= SCALE;
    put_holding(state, id, &mut a, holder, h)?;
    state.put(state_key::asset(id), &a);
    if !paid.is_zero() {
        super::transfer(state, &escrow(), holder, paid)?;
    }
    Ok(paid)
}
