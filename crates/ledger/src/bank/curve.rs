//! Offering prices as pure integer functions (no state).
//!
//! A fixed-price offering sells every unit at `price`. A linear bonding curve sells the unit
//! at position `k` (units sold before it) for `base + slope · k`; buying `n` units from
//! position `s` costs the exact sum `n · base + slope · (n · s + n(n−1)/2)` — no rounding.
//! Of each purchase, `reserve_bps` is kept in the curve's reserve, rounded up (the issuer
//! receives the rest), and a sale back of `n` units from position `s` refunds
//! `cost(s − n, n) · reserve_bps / 10_000`, rounded down. So the reserve always covers every
//! sale back (the rounding favours it), and buying then selling the same units returns at
//! most what was paid: no value is created.

use super::assets::SUPPLY_MAX;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};

const BPS: u128 = 10_000;

/// How an offering prices its units (in base units of PZA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Curve {
    /// Every unit at one price; no sales back.
    Fixed { price: u128 },
    /// The `k`-th unit sold at `base + slope · k`; sales back are refunded from the reserve.
    Linear {
        base: u128,
        slope: u128,
        reserve_bps: u16,
    },
}

impl Encode for Curve {
    fn encode(&self, w: &mut Writer) {
        match *self {
            Curve::Fixed { price } => {
                w.u8(0);
                w.u128(price);
            }
            Curve::Linear {
                base,
                slope,
                reserve_bps,
            } => {
                w.u8(1);
                w.u128(base);
                w.u128(slope);
                w.u16(reserve_bps);
            }
        }
    }
}

impl Decode for Curve {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            0 => Ok(Curve::Fixed { price: r.u128()? }),
            1 => Ok(Curve::Linear {
                base: r.u128()?,
                slope: r.u128()?,
                reserve_bps: r.u16()?,
            }),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "offering curve",
            }),
        }
    }
}

impl Curve {
    /// The exact price of `n` units bought from position `sold`, or `None` if it does not fit.
    pub fn cost(&self, sold: u128, n: u128) -> Option<u128> {
        if sold > SUPPLY_MAX || n > SUPPLY_MAX {
            return None;
        }
        match *self {
            Curve::Fixed { price } => price.checked_mul(n),
            Curve::Linear { base, slope, .. } => {
                // n · s + n(n−1)/2: one of n, n−1 is even, so the halving is exact.
                let pairs = if n.is_multiple_of(2) {
                    (n / 2).checked_mul(n.saturating_sub(1))
                } else {
                    n.checked_mul(n.saturating_sub(1) / 2)
                }?;
                let steps = n.checked_mul(sold)?.checked_add(pairs)?;
                n.checked_mul(base)?.checked_add(slope.checked_mul(steps)?)
            }
        }
    }

    /// The part of a purchase's `cost` kept in the reserve (rounded up).
    pub fn reserve_part(&self, cost: u128) -> u128 {
        match *self {
            Curve::Fixed { .. } => 0,
            Curve::Linear { reserve_bps, .. } => {
                let bps = reserve_bps as u128;
                // cost · bps / BPS, rounded up, without forming cost · bps.
                let (q, r) = (cost / BPS, cost % BPS);
                q * bps + (r * bps).div_ceil(BPS)
            }
        }
    }

    /// The refund for selling `n` units back when `sold` are out (rounded down), or `None` for
    /// a fixed price or more units than were sold.
    pub fn refund(&self, sold: u128, n: u128) -> Option<u128> {
        match *self {
            Curve::Fixed { .. } => None,
            Curve::Linear { reserve_bps, .. } => {
                let cost = self.cost(sold.checked_sub(n)?, n)?;
                let bps = reserve_bps as u128;
                let (q, r) = (cost / BPS, cost % BPS);
                Some(q * bps + r * bps / BPS)
            }
        }
    }

    /// Whether the curve's parameters are in bounds.
    pub fn valid(&self) -> bool {
        match *self {
            Curve::Fixed { .. } => true,
            Curve::Linear { reserve_bps, .. } => reserve_bps as u128 <= BPS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(base: u128, slope: u128, reserve_bps: u16) -> Curve {
        Curve::Linear {
            base,
            slope,
            reserve_bps,
        }
    }

    #[test]
    fn linear_cost_is_the_sum_of_unit_prices() {
        let curve = linear(7, 3, 10_000);
        for sold in 0..20u128 {
            for n in 0..20u128 {
                let sum: u128 = (sold..sold + n).map(|k| 7 + 3 * k).sum();
                assert_eq!(curve.cost(sold, n), Some(sum), "sold {sold} n {n}");
            }
        }
    }

    #[test]
    fn reserve_covers_refunds_over_any_split() {
        let curve = linear(1_001, 17, 3_333);
        // Bought in chunks of 3, sold back in chunks of 2 and 1: the reserve is never short.
        let mut reserve = 0u128;
        let mut sold = 0u128;
        for _ in 0..10 {
            reserve += curve.reserve_part(curve.cost(sold, 3).unwrap());
            sold += 3;
        }
        while sold > 0 {
            let n = if sold >= 2 { 2 } else { 1 };
            let refund = curve.refund(sold, n).unwrap();
            reserve = reserve.checked_sub(refund).expect("the reserve covers it");
            sold -= n;
        }
    }

    #[test]
    fn overflowing_costs_are_none() {
        assert_eq!(linear(u128::MAX, 1, 0).cost(0, 2), None);
        assert_eq!(Curve::Fixed { price: u128::MAX }.cost(0, 2), None);
        assert_eq!(linear(1, 1, 0).cost(SUPPLY_MAX + 1, 1), None);
    }
}
