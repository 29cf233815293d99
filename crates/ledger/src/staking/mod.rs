//! `staking`: bonds per role, unbonding through a delay, the stake other modules weigh by, and
//! the validators (records, voting power, the set of each height: [`validators`]).
//!
//! Invariant: the staking pool's balance equals every bond plus every pending unbonding. Bonded
//! tokens stay in the bank as the pool's balance, so the bank's supply invariant covers them.

pub mod state_key;
pub mod validators;

use crate::bank;
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::GenesisError;
use crate::module::{BlockContext, Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount};

/// Most unbondings that may mature at one height.
pub const RELEASES_PER_HEIGHT_MAX: usize = 100_000;

/// The account that holds bonded and unbonding stake.
pub fn pool() -> Address {
    Address::module("staking")
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Role {
    Validator = 0,
    Provider = 1,
    Auditor = 2,
    Storage = 3,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Validator,
        Role::Provider,
        Role::Auditor,
        Role::Storage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Validator => "validator",
            Role::Provider => "provider",
            Role::Auditor => "auditor",
            Role::Storage => "storage",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown role `{s}` (validator, provider, auditor, storage)"))
    }
}

impl Encode for Role {
    fn encode(&self, w: &mut Writer) {
        w.u8(*self as u8)
    }
}

impl Decode for Role {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        let tag = r.u8()?;
        Role::ALL
            .get(tag as usize)
            .copied()
            .ok_or(DecodeError::InvalidTag {
                offset,
                tag,
                what: "role",
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Bond { role: Role, amount: Amount },
    Unbond { role: Role, amount: Amount },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        let (tag, role, amount) = match self {
            Msg::Bond { role, amount } => (0, role, amount),
            Msg::Unbond { role, amount } => (1, role, amount),
        };
        w.u8(tag);
        w.value(role);
        w.value(amount);
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Msg::Bond {
                role: r.value()?,
                amount: r.value()?,
            }),
            1 => Ok(Msg::Unbond {
                role: r.value()?,
                amount: r.value()?,
            }),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "staking message",
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Blocks between an unbond and the tokens' return.
    pub unbonding_delay_blocks: u64,
    /// Smallest non-zero bond per role, indexed by `Role as usize`.
    pub min_bond: [Amount; 4],
}

impl Default for Params {
    fn default() -> Self {
        Params {
            unbonding_delay_blocks: 20,
            min_bond: [
                Amount::pza(1_000),
                Amount::pza(100),
                Amount::pza(100),
                Amount::pza(100),
            ],
        }
    }
}

impl Encode for Params {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.unbonding_delay_blocks);
        for m in &self.min_bond {
            w.value(m);
        }
    }
}

impl Decode for Params {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Params {
            unbonding_delay_blocks: r.u64()?,
            min_bond: [r.value()?, r.value()?, r.value()?, r.value()?],
        })
    }
}

/// One unbonding that matures at a height.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Release {
    address: Address,
    amount: Amount,
}

impl Encode for Release {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.address);
        w.value(&self.amount);
    }
}

impl Decode for Release {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Release {
            address: r.value()?,
            amount: r.value()?,
        })
    }
}

struct Releases(Vec<Release>);

impl Encode for Releases {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.0)
    }
}

impl Decode for Releases {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Releases(r.seq(RELEASES_PER_HEIGHT_MAX)?))
    }
}

pub fn params(state: &StateDelta<'_>) -> Params {
    state
        .get(&state_key::params())
        .expect("staking params are written at genesis")
}

pub fn bonded(state: &StateDelta<'_>, address: &Address, role: Role) -> Amount {
    state
        .get(&state_key::bond(address, role))
        .unwrap_or_default()
}

pub fn total_bonded(state: &StateDelta<'_>, role: Role) -> Amount {
    state.get(&state_key::total(role)).unwrap_or_default()
}

pub fn unbonding(state: &StateDelta<'_>, address: &Address) -> Amount {
    state
        .get(&state_key::unbonding(address))
        .unwrap_or_default()
}

fn overflow() -> TxError {
    TxError::new(ErrorCode::Overflow, "stake arithmetic overflow")
}

fn set_bond(state: &mut StateDelta<'_>, address: &Address, role: Role, amount: Amount) {
    let key = state_key::bond(address, role);
    if amount.is_zero() {
        state.delete(key);
    } else {
        state.put(key, &amount);
    }
    if role == Role::Validator {
        validators::bond_changed(state, address, amount);
    }
}

/// Moves `amount` of the sender's balance into a bond for `role`.
pub fn bond(
    state: &mut StateDelta<'_>,
    address: &Address,
    role: Role,
    amount: Amount,
) -> Result<Amount, TxError> {
    let new_bond = bonded(state, address, role)
        .checked_add(amount)
        .ok_or_else(overflow)?;
    let minimum = params(state).min_bond[role as usize];
    if new_bond < minimum {
        return Err(TxError::new(
            ErrorCode::StakeBelowMinimum,
            format!(
                "a {} bond must be at least {minimum} PZA, this one would be {new_bond} PZA",
                role.name()
            ),
        ));
    }
    bank::transfer(state, address, &pool(), amount)?;
    set_bond(state, address, role, new_bond);
    let total = total_bonded(state, role)
        .checked_add(amount)
        .ok_or_else(overflow)?;
    state.put(state_key::total(role), &total);
    Ok(new_bond)
}

/// A registration's bond: bonds `stake` more for `role` (nothing when zero), then checks the
/// whole bond reaches the registering module's `minimum` (`who` names the role in the
/// refusal). Returns the bond.
pub fn bond_for_registration(
    state: &mut StateDelta<'_>,
    address: &Address,
    role: Role,
    stake: Amount,
    minimum: Amount,
    who: &str,
) -> Result<Amount, TxError> {
    if !stake.is_zero() {
        bond(state, address, role, stake)?;
    }
    let bonded = bonded(state, address, role);
    if bonded < minimum {
        return Err(TxError::new(
            ErrorCode::StakeBelowMinimum,
            format!("{who} needs {minimum} PZA bonded, {address} has {bonded} PZA"),
        ));
    }
    Ok(bonded)
}

/// Starts returning `amount` of a bond; the tokens reach the balance after the unbonding delay.
pub fn unbond(
    state: &mut StateDelta<'_>,
    block: &BlockContext,
    address: &Address,
    role: Role,
    amount: Amount,
) -> Result<u64, TxError> {
    let current = bonded(state, address, role);
    let remaining = current.checked_sub(amount).ok_or_else(|| {
        TxError::new(
            ErrorCode::UnbondExceedsBond,
            format!(
                "{address} has {current} PZA bonded as {}, cannot unbond {amount} PZA",
                role.name()
            ),
        )
    })?;
    let params = params(state);
    let minimum = params.min_bond[role as usize];
    if !remaining.is_zero() && remaining < minimum {
        return Err(TxError::new(
            ErrorCode::StakeBelowMinimum,
            format!("the remaining {} bond of {remaining} PZA would be below the minimum {minimum} PZA; unbond everything instead", role.name()),
        ));
    }
    set_bond(state, address, role, remaining);
    let total = total_bonded(state, role)
        .checked_sub(amount)
        .expect("the role total covers every bond");
    state.put(state_key::total(role), &total);
    let pending = unbonding(state, address)
        .checked_add(amount)
        .ok_or_else(overflow)?;
    state.put(state_key::unbonding(address), &pending);
    let release_height = block
        .height
        .checked_add(params.unbonding_delay_blocks)
        .ok_or_else(overflow)?;
    let queue_key = state_key::release_queue(release_height);
    let mut queue: Releases = state.get(&queue_key).unwrap_or(Releases(Vec::new()));
    if queue.0.len() >= RELEASES_PER_HEIGHT_MAX {
        return Err(TxError::new(
            ErrorCode::QueueFull,
            "too many unbondings mature at this height; try again next block",
        ));
    }
    queue.0.push(Release {
        address: *address,
        amount,
    });
    state.put(queue_key, &queue);
    Ok(release_height)
}

/// Takes up to `amount` from a bond (what there is, if less) and sends it to `to`, or burns it
/// when `to` is `None`. Returns what was taken. A bond left below the role's minimum stays: the
/// role's own module decides what a thin bond may do.
pub fn slash(
    state: &mut StateDelta<'_>,
    address: &Address,
    role: Role,
    amount: Amount,
    to: Option<&Address>,
) -> Amount {
    let current = bonded(state, address, role);
    let taken = amount.min(current);
    if taken.is_zero() {
        return taken;
    }
    set_bond(
        state,
        address,
        role,
        current
            .checked_sub(taken)
            .expect("taken is at most the bond"),
    );
    let total = total_bonded(state, role)
        .checked_sub(taken)
        .expect("the role total covers every bond");
    state.put(state_key::total(role), &total);
    match to {
        Some(to) => bank::transfer(state, &pool(), to, taken).expect("the pool holds every bond"),
        None => bank::burn(state, &pool(), taken).expect("the pool holds every bond"),
    }
    taken
}

/// A bond made at genesis from a funded account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenesisBond {
    pub address: Address,
    pub role: Role,
    pub amount: Amount,
}

/// The staking module's genesis section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisState {
    pub params: Params,
    pub bonds: Vec<GenesisBond>,
    /// Consensus keys of validators bonded in `bonds`; empty for a chain run by one producer.
    pub validators: Vec<validators::GenesisValidator>,
}

pub struct Staking;

impl Module for Staking {
    type Msg = Msg;
    type Genesis = GenesisState;
    const NAME: &'static str = "staking";

    fn fee_units(_msg: &Msg) -> u64 {
        20
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        let (Msg::Bond { amount, .. } | Msg::Unbond { amount, .. }) = msg;
        if amount.is_zero() {
            return Err(TxError::new(
                ErrorCode::InvalidMessage,
                "a stake change needs a positive amount",
            ));
        }
        Ok(())
    }

    fn check_stateful(
        state: &StateDelta<'_>,
        ctx: &TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Bond { amount, .. } => {
                let balance = bank::account(state, &ctx.sender).balance;
                if balance < *amount {
                    return Err(TxError::new(
                        ErrorCode::InsufficientFunds,
                        format!("{} holds {balance} PZA, needs {amount} PZA", ctx.sender),
                    ));
                }
                Ok(())
            }
            Msg::Unbond { .. } => Ok(()),
        }
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        let sender = ctx.sender;
        match msg {
            Msg::Bond { role, amount } => {
                if *role == Role::Validator {
                    // The transaction's key becomes the validator's consensus key.
                    validators::register(state, &ctx.sender_key)?;
                }
                let total = bond(state, &sender, *role, *amount)?;
                ctx.emit(Event::new(
                    "staking.bond",
                    &[
                        ("address", sender.to_string()),
                        ("role", role.name().into()),
                        ("amount", amount.base_units().to_string()),
                        ("bonded", total.base_units().to_string()),
                    ],
                ));
            }
            Msg::Unbond { role, amount } => {
                let release_height = unbond(state, ctx.block, &sender, *role, *amount)?;
                ctx.emit(Event::new(
                    "staking.unbond",
                    &[
                        ("address", sender.to_string()),
                        ("role", role.name().into()),
                        ("amount", amount.base_units().to_string()),
                        ("release_height", release_height.to_string()),
                    ],
                ));
            }
        }
        Ok(())
    }

    fn init_chain(state: &mut StateDelta<'_>, genesis: &GenesisState) -> Result<(), GenesisError> {
        state.put(state_key::params(), &genesis.params);
        for entry in &genesis.bonds {
            bond(state, &entry.address, entry.role, entry.amount).map_err(|e| {
                GenesisError::Invalid(format!("genesis bond of {}: {e}", entry.address))
            })?;
        }
        validators::init_chain(state, &genesis.validators)
    }

    fn end_block(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
        release_unbonded(state, block, events);
        validators::end_block(state, block.height, events);
    }
}

/// Returns the unbondings that mature at this block to their owners.
fn release_unbonded(state: &mut StateDelta<'_>, block: &BlockContext, events: &mut Vec<Event>) {
    let key = state_key::release_queue(block.height);
    let Some(Releases(releases)) = state.get::<Releases>(&key) else {
        return;
    };
    for release in releases {
        bank::transfer(state, &pool(), &release.address, release.amount)
            .expect("the pool holds every pending unbonding");
        let pending = unbonding(state, &release.address)
            .checked_sub(release.amount)
            .expect("pending unbonding covers its releases");
        if pending.is_zero() {
            state.delete(state_key::unbonding(&release.address));
        } else {
            state.put(state_key::unbonding(&release.address), &pending);
        }
        events.push(Event::new(
            "staking.released",
            &[
                ("address", release.address.to_string()),
                ("amount", release.amount.base_units().to_string()),
            ],
        ));
    }
    state.delete(key);
}
