//! The share messages: issue an asset's fixed supply, transfer units, claim revenue, and sell
//! units in offerings (fixed price or a linear bonding curve with a reserve for sales back).
//! The accounting is [`super::assets`]; the prices are [`super::curve`].

use super::assets::{self, AssetId};
use super::curve::Curve;
use super::state_key;
use crate::error::{ErrorCode, TxError};
use crate::event::Event;
use crate::module::{GenesisError, Module, TxContext};
use crate::state::StateDelta;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount};

/// The transaction tag of share messages.
pub const MODULE_TAG: u8 = 30;

/// Where curve offerings keep their reserves.
pub fn reserve_escrow() -> Address {
    Address::module("offerings")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The asset's owner issues its whole, fixed supply to itself.
    Issue { asset: AssetId, supply: u128 },
    Transfer {
        asset: AssetId,
        to: Address,
        units: u128,
    },
    /// Pays the sender the whole base units its units have earned.
    Claim { asset: AssetId },
    /// Locks `units` of the sender's holding in a new offering.
    Offer {
        asset: AssetId,
        units: u128,
        curve: Curve,
    },
    /// Buys `units` from an offering, paying at most `max_cost`.
    Buy {
        offering: u64,
        units: u128,
        max_cost: Amount,
    },
    /// Sells `units` back to a curve offering for at least `min_refund`.
    Sell {
        offering: u64,
        units: u128,
        min_refund: Amount,
    },
    /// The seller ends an offering: its unsold units are released (sales back still refund).
    Close { offering: u64 },
}

impl Encode for Msg {
    fn encode(&self, w: &mut Writer) {
        match self {
            Msg::Issue { asset, supply } => {
                w.u8(0);
                w.value(asset);
                w.u128(*supply);
            }
            Msg::Transfer { asset, to, units } => {
                w.u8(1);
                w.value(asset);
                w.value(to);
                w.u128(*units);
            }
            Msg::Claim { asset } => {
                w.u8(2);
                w.value(asset);
            }
            Msg::Offer {
                asset,
                units,
                curve,
            } => {
                w.u8(3);
                w.value(asset);
                w.u128(*units);
                w.value(curve);
            }
            Msg::Buy {
                offering,
                units,
                max_cost,
            } => {
                w.u8(4);
                w.u64(*offering);
                w.u128(*units);
                w.value(max_cost);
            }
            Msg::Sell {
                offering,
                units,
                min_refund,
            } => {
                w.u8(5);
                w.u64(*offering);
                w.u128(*units);
                w.value(min_refund);
            }
            Msg::Close { offering } => {
                w.u8(6);
                w.u64(*offering);
            }
        }
    }
}

impl Decode for Msg {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Msg::Issue {
                asset: r.value()?,
                supply: r.u128()?,
            },
            1 => Msg::Transfer {
                asset: r.value()?,
                to: r.value()?,
                units: r.u128()?,
            },
            2 => Msg::Claim { asset: r.value()? },
            3 => Msg::Offer {
                asset: r.value()?,
                units: r.u128()?,
                curve: r.value()?,
            },
            4 => Msg::Buy {
                offering: r.u64()?,
                units: r.u128()?,
                max_cost: r.value()?,
            },
            5 => Msg::Sell {
                offering: r.u64()?,
                units: r.u128()?,
                min_refund: r.value()?,
            },
            6 => Msg::Close { offering: r.u64()? },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "shares message",
                })
            }
        })
    }
}

/// An offering's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offering {
    pub asset: AssetId,
    pub seller: Address,
    pub curve: Curve,
    /// Units still for sale (locked in the seller's holding).
    pub units_left: u128,
    /// Units sold and not sold back: the position on the curve.
    pub sold: u128,
    /// What the reserve holds for sales back.
    pub reserve: Amount,
    pub open: bool,
}

impl Encode for Offering {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.asset);
        w.value(&self.seller);
        w.value(&self.curve);
        w.u128(self.units_left);
        w.u128(self.sold);
        w.value(&self.reserve);
        w.bool(self.open);
    }
}

impl Decode for Offering {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Offering {
            asset: r.value()?,
            seller: r.value()?,
            curve: r.value()?,
            units_left: r.u128()?,
            sold: r.u128()?,
            reserve: r.value()?,
            open: r.bool()?,
        })
    }
}

pub fn offering(state: &StateDelta<'_>, id: u64) -> Option<Offering> {
    state.get(&state_key::offering(id))
}

fn unknown_offering(id: u64) -> TxError {
    TxError::new(ErrorCode::UnknownOffering, format!("no offering {id}"))
}

fn overflow(what: String) -> TxError {
    TxError::new(ErrorCode::OfferingOverflow, what)
}

fn offer(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    asset: &AssetId,
    units: u128,
    curve: Curve,
) -> Result<(), TxError> {
    assets::asset(state, asset).ok_or_else(|| assets::unknown(asset))?;
    if matches!(asset, AssetId::Pool(_)) {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            "a pool's weights are not offered",
        ));
    }
    if curve.cost(0, units).is_none() {
        return Err(overflow(format!(
            "{units} units on {curve:?} cost more than fits"
        )));
    }
    assets::set_locked(state, asset, &ctx.sender, units, true)?;
    let id: u64 = state.get(&state_key::next_offering()).unwrap_or(0);
    state.put(state_key::next_offering(), &(id + 1));
    state.put(
        state_key::offering(id),
        &Offering {
            asset: asset.clone(),
            seller: ctx.sender,
            curve,
            units_left: units,
            sold: 0,
            reserve: Amount::ZERO,
            open: true,
        },
    );
    ctx.emit(Event::new(
        "shares.offered",
        &[
            ("offering", id.to_string()),
            ("asset", asset.to_string()),
            ("units", units.to_string()),
        ],
    ));
    Ok(())
}

fn buy(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
    units: u128,
    max_cost: Amount,
) -> Result<(), TxError> {
    let mut o = offering(state, id).ok_or_else(|| unknown_offering(id))?;
    if !o.open || units > o.units_left {
        return Err(TxError::new(
            ErrorCode::OfferingSoldOut,
            format!("offering {id} has {} units for sale", o.units_left),
        ));
    }
    let cost = o
        .curve
        .cost(o.sold, units)
        .ok_or_else(|| overflow(format!("{units} units of offering {id}")))?;
    if cost > max_cost.base_units() {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            format!("{units} units cost {cost} base units, more than the {max_cost} PZA allowed"),
        ));
    }
    let to_reserve = Amount::new(o.curve.reserve_part(cost));
    let to_seller = Amount::new(cost - to_reserve.base_units());
    super::transfer(state, &ctx.sender, &reserve_escrow(), to_reserve)?;
    super::transfer(state, &ctx.sender, &o.seller, to_seller)?;
    assets::move_units(state, &o.asset, &o.seller, &ctx.sender, units, true)?;
    o.units_left -= units;
    o.sold += units;
    o.reserve = o
        .reserve
        .checked_add(to_reserve)
        .ok_or_else(|| overflow(format!("offering {id}'s reserve")))?;
    state.put(state_key::offering(id), &o);
    ctx.emit(Event::new(
        "shares.bought",
        &[
            ("offering", id.to_string()),
            ("buyer", ctx.sender.to_string()),
            ("units", units.to_string()),
            ("cost", cost.to_string()),
        ],
    ));
    Ok(())
}

fn sell(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    id: u64,
    units: u128,
    min_refund: Amount,
) -> Result<(), TxError> {
    let mut o = offering(state, id).ok_or_else(|| unknown_offering(id))?;
    let refund = o.curve.refund(o.sold, units).ok_or_else(|| {
        TxError::new(
            ErrorCode::InvalidMessage,
            format!("offering {id} takes no sale of {units} units back"),
        )
    })?;
    let refund = Amount::new(refund);
    if refund < min_refund {
        return Err(TxError::new(
            ErrorCode::InvalidMessage,
            format!("the refund {refund} PZA is below the {min_refund} PZA asked"),
        ));
    }
    o.reserve = o.reserve.checked_sub(refund).ok_or_else(|| {
        TxError::new(
            ErrorCode::Internal,
            format!("offering {id}'s reserve does not cover {refund} PZA"),
        )
    })?;
    assets::transfer(state, &o.asset, &ctx.sender, &o.seller, units)?;
    if o.open {
        assets::set_locked(state, &o.asset, &o.seller, units, true)?;
        o.units_left += units;
    }
    o.sold -= units;
    super::transfer(state, &reserve_escrow(), &ctx.sender, refund)?;
    state.put(state_key::offering(id), &o);
    ctx.emit(Event::new(
        "shares.sold_back",
        &[
            ("offering", id.to_string()),
            ("seller", ctx.sender.to_string()),
            ("units", units.to_string()),
            ("refund", refund.base_units().to_string()),
        ],
    ));
    Ok(())
}

fn close(state: &mut StateDelta<'_>, ctx: &mut TxContext<'_>, id: u64) -> Result<(), TxError> {
    let mut o = offering(state, id).ok_or_else(|| unknown_offering(id))?;
    if o.seller != ctx.sender {
        return Err(TxError::new(
            ErrorCode::NotAssetOwner,
            format!("only its seller {} may close offering {id}", o.seller),
        ));
    }
    assets::set_locked(state, &o.asset, &o.seller, o.units_left, false)?;
    o.units_left = 0;
    o.open = false;
    state.put(state_key::offering(id), &o);
    ctx.emit(Event::new(
        "shares.offering_closed",
        &[("offering", id.to_string())],
    ));
    Ok(())
}

pub struct Shares;

impl Module for Shares {
    type Msg = Msg;
    type Genesis = ();
    const NAME: &'static str = "shares";

    fn fee_units(msg: &Msg) -> u64 {
        match msg {
            Msg::Issue { .. } | Msg::Offer { .. } => 500,
            _ => 100,
        }
    }

    fn check_stateless(msg: &Msg) -> Result<(), TxError> {
        let zero = match msg {
            Msg::Transfer { units, .. }
            | Msg::Offer { units, .. }
            | Msg::Buy { units, .. }
            | Msg::Sell { units, .. } => *units == 0,
            Msg::Issue { supply, .. } => *supply == 0,
            Msg::Claim { .. } | Msg::Close { .. } => false,
        };
        if zero {
            return Err(TxError::new(
                ErrorCode::InvalidMessage,
                "a share message moves at least one unit",
            ));
        }
        if let Msg::Offer { curve, .. } = msg {
            if !curve.valid() {
                return Err(TxError::new(
                    ErrorCode::RoyaltyOverWhole,
                    "a curve's reserve is at most 10,000 bps",
                ));
            }
        }
        Ok(())
    }

    /// Every rule needs the state the message changes; they are checked in `execute`.
    fn check_stateful(_: &StateDelta<'_>, _: &TxContext<'_>, _: &Msg) -> Result<(), TxError> {
        Ok(())
    }

    fn execute(
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
        msg: &Msg,
    ) -> Result<(), TxError> {
        match msg {
            Msg::Issue { asset, supply } => {
                assets::issue(state, asset, &ctx.sender, *supply)?;
                ctx.emit(Event::new(
                    "shares.issued",
                    &[("asset", asset.to_string()), ("supply", supply.to_string())],
                ));
            }
            Msg::Transfer { asset, to, units } => {
                if matches!(asset, AssetId::Pool(_)) {
                    return Err(TxError::new(
                        ErrorCode::InvalidMessage,
                        "a pool's weights are not transferable",
                    ));
                }
                assets::transfer(state, asset, &ctx.sender, to, *units)?;
                ctx.emit(Event::new(
                    "shares.transfer",
                    &[
                        ("asset", asset.to_string()),
                        ("from", ctx.sender.to_string()),
                        ("to", to.to_string()),
                        ("units", units.to_string()),
                    ],
                ));
            }
            Msg::Claim { asset } => {
                let paid = assets::claim(state, asset, &ctx.sender)?;
                ctx.emit(Event::new(
                    "shares.claimed",
                    &[
                        ("asset", asset.to_string()),
                        ("holder", ctx.sender.to_string()),
                        ("amount", paid.base_units().to_string()),
                    ],
                ));
            }
            Msg::Offer {
                asset,
                units,
                curve,
            } => offer(state, ctx, asset, *units, *curve)?,
            Msg::Buy {
                offering,
                units,
                max_cost,
            } => buy(state, ctx, *offering, *units, *max_cost)?,
            Msg::Sell {
                offering,
                units,
                min_refund,
            } => sell(state, ctx, *offering, *units, *min_refund)?,
            Msg::Close { offering } => close(state, ctx, *offering)?,
        }
        Ok(())
    }

    fn init_chain(_: &mut StateDelta<'_>, _: &()) -> Result<(), GenesisError> {
        Ok(())
    }
}
