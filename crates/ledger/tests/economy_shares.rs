//! Share assets, offerings and royalties along lineage: exactness properties over random
//! payments, transfers, claims, curves and lineage graphs, and the refusals hostile messages
//! get (with their stable codes).

mod common;
mod economy_common;

use common::{failed, Chain};
use economy_common::record;
use piazza_ledger::bank::assets::{self, AssetId, SCALE};
use piazza_ledger::bank::curve::Curve;
use piazza_ledger::bank::{self, shares};
use piazza_ledger::compute;
use piazza_ledger::models::{self, Lineage, ModelRecord, Parent, Source};
use piazza_ledger::module::Module;
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_primitives::{Address, Amount, SecretKey};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn addr(i: u8) -> Address {
    Address([i; 20])
}

const PAYER: Address = Address([0xaa; 20]);

/// The exactness invariant: what the share escrow holds, times SCALE, is every holding's
/// earned-and-unclaimed amount plus every asset's carry — to the unit.
fn check_escrow_exact(state: &StateDelta<'_>, ids: &[AssetId]) {
    let mut scaled = 0u128;
    for id in ids {
        let Some(asset) = assets::asset(state, id) else {
            continue;
        };
        scaled += asset.carry_scaled;
        for holder in assets::holders(state, id) {
            scaled += assets::owed_scaled(state, id, &holder).unwrap();
        }
    }
    let escrow = bank::account(state, &assets::escrow()).balance.base_units();
    assert_eq!(
        escrow * SCALE,
        scaled,
        "escrow {escrow} vs owed and carried"
    );
}

#[derive(Debug, Clone)]
enum Step {
    Pay(u128),
    Transfer { from: u8, to: u8, units: u128 },
    Claim(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u128..1_000_000_000).prop_map(Step::Pay),
        (0u8..5, 0u8..5, 1u128..400).prop_map(|(from, to, units)| Step::Transfer {
            from,
            to,
            units
        }),
        (0u8..6).prop_map(Step::Claim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random payments, transfers and claims: every unit paid is claimed or still owed/carried
    /// (exactly), and no holder ever claims more than its pro-rata share of what each payment
    /// distributed.
    #[test]
    fn accumulator_is_exact_and_claims_never_exceed_earnings(
        supply in 1u128..1_000,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        run_shares(supply, steps)?;
    }

    /// On a linear curve, in any state others left it in, a buy followed by the sale back of
    /// the same units never returns more than was paid; and once every buyer has sold back,
    /// the buyers together got back at most what they paid (no value created) and the reserve
    /// covered every sale.
    #[test]
    fn curve_buy_then_sell_never_profits(
        base in 0u128..1_000_000,
        slope in 0u128..10_000,
        reserve_bps in 0u16..=10_000,
        buys in proptest::collection::vec((0usize..3, 1u128..50), 0..10),
        round_trip in 1u128..50,
    ) {
        let keys: Vec<SecretKey> = (0..5).map(|i| SecretKey::from_seed([40 + i; 32])).collect();
        let mut chain = Chain::new(&keys.iter().collect::<Vec<_>>(), compute::Params::default());
        let seller = &keys[4];
        let asset = own_model(&mut chain, seller, "curve", 10_000);
        let curve = Curve::Linear { base, slope, reserve_bps };
        let (r, _) = chain.one(seller, Message::Shares(shares::Msg::Offer { asset, units: 10_000, curve }));
        prop_assert_eq!(failed(&r), None);
        let balance = |chain: &Chain, who: usize| chain.balance(&keys[who].public_key().address()).base_units();
        let before: Vec<u128> = (0..4).map(|who| balance(&chain, who)).collect();
        let mut fees = [0u128; 4];
        let act = |chain: &mut Chain, fees: &mut [u128; 4], who: usize, msg: shares::Msg| -> Result<(), TestCaseError> {
            let (r, _) = chain.one(&keys[who], Message::Shares(msg));
            fees[who] += r.fee_paid.base_units();
            prop_assert_eq!(failed(&r), None);
            Ok(())
        };
        let buy = |units| shares::Msg::Buy { offering: 0, units, max_cost: Amount::pza(5_000) };
        let sell = |units| shares::Msg::Sell { offering: 0, units, min_refund: Amount::ZERO };
        let mut bought = [0u128; 3];
        for (who, units) in buys {
            act(&mut chain, &mut fees, who, buy(units))?;
            bought[who] += units;
        }
        act(&mut chain, &mut fees, 3, buy(round_trip))?;
        act(&mut chain, &mut fees, 3, sell(round_trip))?;
        prop_assert!(balance(&chain, 3) + fees[3] <= before[3], "the round trip profited");
        for (who, units) in bought.iter().enumerate() {
            if *units > 0 {
                act(&mut chain, &mut fees, who, sell(*units))?;
            }
        }
        let after: u128 = (0..4).map(|who| balance(&chain, who) + fees[who]).sum();
        prop_assert!(after <= before.iter().sum::<u128>(), "buyers gained {after}");
        let o = shares::offering(&StateDelta::new(&chain.state), 0).unwrap();
        prop_assert_eq!(o.sold, 0);
        prop_assert_eq!(o.units_left, 10_000);
        // What stays in the reserve is exactly the escrow's balance.
        prop_assert_eq!(chain.balance(&shares::reserve_escrow()), o.reserve);
    }
}

/// Plays `steps` on an asset of `supply` units held at first by `addr(0)`, checking after each
/// step that the escrow is exact and the supply whole, and at the end that no holder got more
/// than its pro-rata share of what each payment distributed: the payment itself plus the carry
/// it redistributed (earlier payments' remainders and the fractions of emptied holdings, each
/// under one base unit, go to whoever holds units at the next payment).
fn run_shares(supply: u128, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let base = BTreeMap::new();
    let mut state = StateDelta::new(&base);
    let id = AssetId::Model("m".into());
    bank::mint(&mut state, &PAYER, Amount::pza(1_000_000)).unwrap();
    assets::register(&mut state, &id, addr(0), None).unwrap();
    assets::issue(&mut state, &id, &addr(0), supply).unwrap();
    // Pro-rata shares of what each payment distributed, times `SCALE · supply` (exact: the
    // supply is fixed).
    let mut distributed_share: BTreeMap<Address, u128> = BTreeMap::new();
    let mut claimed: BTreeMap<Address, u128> = BTreeMap::new();
    for step in steps {
        match step {
            Step::Pay(amount) => {
                let carry = assets::asset(&state, &id).unwrap().carry_scaled;
                for h in assets::holders(&state, &id) {
                    let units = assets::holding(&state, &id, &h).units;
                    *distributed_share.entry(h).or_default() += (amount * SCALE + carry) * units;
                }
                assets::pay(&mut state, &PAYER, &id, Amount::new(amount), &PAYER).unwrap();
            }
            Step::Transfer { from, to, units } => {
                let _ = assets::transfer(&mut state, &id, &addr(from), &addr(to), units);
            }
            Step::Claim(who) => match assets::claim(&mut state, &id, &addr(who)) {
                Ok(paid) => *claimed.entry(addr(who)).or_default() += paid.base_units(),
                Err(e) => prop_assert_eq!(e.code.name(), "not_a_holder"),
            },
        }
        check_escrow_exact(&state, std::slice::from_ref(&id));
        let held: u128 = assets::holders(&state, &id)
            .iter()
            .map(|h| assets::holding(&state, &id, h).units)
            .sum();
        prop_assert_eq!(held, supply);
    }
    for (holder, paid) in &claimed {
        let owed = assets::owed_scaled(&state, &id, holder).unwrap_or(0);
        let share = distributed_share.get(holder).copied().unwrap_or(0);
        prop_assert!(
            (paid * SCALE + owed) * supply <= share,
            "{holder}: {paid} claimed + {owed}/2^32 owed > {share}/(2^32 · {supply})"
        );
    }
    // Everything paid in is out with a holder or still in the escrow, to the unit.
    let paid_in =
        Amount::pza(1_000_000).base_units() - bank::account(&state, &PAYER).balance.base_units();
    let out: u128 = claimed.values().sum();
    prop_assert_eq!(
        paid_in,
        out + bank::account(&state, &assets::escrow())
            .balance
            .base_units()
    );
    Ok(())
}

/// A case random steps found: holder 3 ends 2/150 of a base unit above its share of the
/// payments alone, because holder 0's emptied fraction and the payments' remainders were
/// carried to the holders of the next payment. It stays within its share of what each payment
/// distributed.
#[test]
fn carried_fractions_go_to_the_next_payments_holders() {
    use Step::*;
    let steps = vec![
        Transfer {
            from: 0,
            to: 3,
            units: 148,
        },
        Pay(375_175_917),
        Transfer {
            from: 0,
            to: 1,
            units: 2,
        },
        Claim(0),
        Claim(3),
        Pay(189_212_695),
        Pay(53_192_180),
        Pay(337_675_534),
    ];
    run_shares(150, steps).unwrap();
}

/// Registers a model owned by `key` and issues `supply` units of its share asset.
fn own_model(chain: &mut Chain, key: &SecretKey, name: &str, supply: u128) -> AssetId {
    let owner = key.public_key().address();
    let (r, _) = chain.one(
        key,
        Message::Models(models::Msg::Register(record(
            name,
            owner,
            Lineage::default(),
        ))),
    );
    assert_eq!(failed(&r), None);
    let asset = AssetId::Model(name.into());
    let (r, _) = chain.one(
        key,
        Message::Shares(shares::Msg::Issue {
            asset: asset.clone(),
            supply,
        }),
    );
    assert_eq!(failed(&r), None);
    asset
}

/// One model of a random graph: parents (model or dataset, which one, weight), royalty and
/// the share supply it issues (if any).
type GraphModel = (Vec<(bool, usize, u16)>, u16, Option<u128>);

/// A random lineage graph within the bounds: model `i` may name earlier models and datasets.
#[derive(Debug, Clone)]
struct Graph {
    /// Per model: its parents (indexes into earlier models, or datasets), weights, royalty.
    models: Vec<GraphModel>,
}

fn graph() -> impl Strategy<Value = Graph> {
    let model = (
        proptest::collection::vec((any::<bool>(), 0usize..64, 1u16..100), 0..=4),
        0u16..=10_000,
        proptest::option::of(1u128..500),
    );
    proptest::collection::vec(model, 1..12).prop_map(|models| Graph { models })
}

const DATASETS: u64 = 3;

/// Builds the graph's records in order, skipping any the registration checks refuse (too
/// deep), and returns the registered names.
fn build(state: &mut StateDelta<'_>, graph: &Graph) -> Vec<String> {
    for d in 0..DATASETS {
        assets::register(state, &AssetId::Dataset(d), addr(200 + d as u8), None).unwrap();
        assets::issue(state, &AssetId::Dataset(d), &addr(200 + d as u8), 7).unwrap();
        assets::transfer(
            state,
            &AssetId::Dataset(d),
            &addr(200 + d as u8),
            &addr(210),
            3,
        )
        .unwrap();
    }
    let mut names: Vec<String> = Vec::new();
    for (i, (parents, royalty, supply)) in graph.models.iter().enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        let mut list: Vec<Parent> = parents
            .iter()
            .filter_map(|(is_model, at, w)| {
                let source = if *is_model && !names.is_empty() {
                    Source::Model(names[at % names.len()].clone())
                } else {
                    Source::Dataset(*at as u64 % DATASETS)
                };
                seen.insert(source.clone()).then_some(Parent {
                    source,
                    weight_bps: *w,
                })
            })
            .collect();
        // Weights that sum to the whole: the last parent takes the rest.
        let head: u16 = list.iter().rev().skip(1).map(|p| p.weight_bps).sum();
        if let Some(last) = list.last_mut() {
            last.weight_bps = 10_000 - head;
        }
        let royalty = if list.is_empty() { 0 } else { *royalty };
        let name = format!("m{i}");
        let owner = addr(i as u8 + 1);
        let lineage = Lineage {
            parents: std::mem::take(&mut list),
            royalty_bps: royalty,
        };
        let rec = record(&name, owner, lineage);
        if models::Models::init_chain(state, std::slice::from_ref(&rec)).is_err() {
            continue;
        }
        if let Some(supply) = supply {
            let id = AssetId::Model(name.clone());
            assets::issue(state, &id, &owner, *supply).unwrap();
            assets::transfer(state, &id, &owner, &addr(100 + i as u8), supply / 2).unwrap();
        }
        names.push(name);
    }
    names
}

fn every_asset(names: &[String]) -> Vec<AssetId> {
    names
        .iter()
        .map(|n| AssetId::Model(n.clone()))
        .chain((0..DATASETS).map(AssetId::Dataset))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random lineage graphs within the bounds and random payments to random models: the payer's
    /// loss equals what owners and the treasury received plus the share escrow's growth, to the
    /// unit; the escrow is exactly what holders are owed plus carries; claims empty it exactly.
    #[test]
    fn royalties_conserve_every_unit(
        graph in graph(),
        payments in proptest::collection::vec((0usize..64, 1u128..10_000_000_000), 1..20),
    ) {
        let base = BTreeMap::new();
        let mut state = StateDelta::new(&base);
        let start = Amount::pza(1_000_000);
        bank::mint(&mut state, &PAYER, start).unwrap();
        let names = build(&mut state, &graph);
        prop_assume!(!names.is_empty());
        let ids = every_asset(&names);
        let mut paid = 0u128;
        for (at, amount) in payments {
            compute::pay_model_revenue(&mut state, &PAYER, &names[at % names.len()], Amount::new(amount));
            paid += amount;
            check_escrow_exact(&state, &ids);
        }
        prop_assert_eq!(bank::account(&state, &PAYER).balance.base_units(), start.base_units() - paid);
        // Every account other than the payer and the escrow was paid directly.
        let direct: u128 = (0..=255u8)
            .map(|i| bank::account(&state, &addr(i)).balance.base_units())
            .sum::<u128>()
            - bank::account(&state, &PAYER).balance.base_units()
            + bank::account(&state, &bank::treasury()).balance.base_units();
        let escrow = bank::account(&state, &assets::escrow()).balance.base_units();
        prop_assert_eq!(direct + escrow, paid);
        // Every holder claims: the escrow ends with only fractions and carries (< 1 unit each).
        for id in &ids {
            for h in assets::holders(&state, id) {
                assets::claim(&mut state, id, &h).unwrap();
            }
        }
        check_escrow_exact(&state, &ids);
        // Each holder keeps a fraction under one unit, each asset a carry under one unit.
        let bound: usize = ids.iter().map(|id| assets::holders(&state, id).len() + 1).sum();
        let left = bank::account(&state, &assets::escrow()).balance.base_units();
        prop_assert!(left < bound as u128, "{left} left in the escrow, bound {bound}");
    }
}

/// Names each hostile lineage and the stable code it gets.
#[test]
fn hostile_lineage_is_refused_with_stable_codes() {
    let key = SecretKey::from_seed([7; 32]);
    let mut chain = Chain::new(&[&key], compute::Params::default());
    let me = key.public_key().address();
    let parent = |name: &str, w: u16| Parent {
        source: Source::Model(name.into()),
        weight_bps: w,
    };
    let check = |chain: &mut Chain, rec: ModelRecord, code: &str| {
        let (r, _) = chain.one(&key, Message::Models(models::Msg::Register(rec)));
        assert_eq!(failed(&r), Some(code));
    };
    // A chain at the depth bound: base ← d1 ← d2 ← d3 ← d4.
    let (r, _) = chain.one(
        &key,
        Message::Models(models::Msg::Register(record("d0", me, Lineage::default()))),
    );
    assert_eq!(failed(&r), None);
    for i in 1..=models::lineage::MAX_DEPTH {
        let lineage = Lineage {
            parents: vec![parent(&format!("d{}", i - 1), 10_000)],
            royalty_bps: 1_000,
        };
        let (r, _) = chain.one(
            &key,
            Message::Models(models::Msg::Register(record(&format!("d{i}"), me, lineage))),
        );
        assert_eq!(failed(&r), None, "depth {i}");
    }
    let one = |name: &str, royalty_bps| Lineage {
        parents: vec![parent(name, 10_000)],
        royalty_bps,
    };
    check(
        &mut chain,
        record("deep", me, one("d4", 1)),
        "lineage_too_deep",
    );
    check(
        &mut chain,
        record("orphan", me, one("nobody", 1)),
        "unknown_model",
    );
    let data = Lineage {
        parents: vec![Parent {
            source: Source::Dataset(999),
            weight_bps: 10_000,
        }],
        royalty_bps: 1,
    };
    check(&mut chain, record("nodata", me, data), "unknown_dataset");
    // Refused before any state is read (the transaction is invalid).
    let stateless = |rec: ModelRecord, code: &str| {
        let err = models::Models::check_stateless(&models::Msg::Register(rec)).unwrap_err();
        assert_eq!(err.code.name(), code);
    };
    let wide = Lineage {
        parents: (0..5).map(|i| parent(&format!("d{i}"), 2_000)).collect(),
        royalty_bps: 1,
    };
    stateless(record("wide", me, wide), "lineage_too_wide");
    stateless(record("selfish", me, one("selfish", 1)), "lineage_cycle");
    stateless(
        record("greedy", me, one("d0", 10_001)),
        "royalty_over_whole",
    );
    let half = Lineage {
        parents: vec![parent("d0", 5_000), parent("d1", 4_000)],
        royalty_bps: 1,
    };
    stateless(record("short", me, half), "lineage_weights");
    let twice = Lineage {
        parents: vec![parent("d0", 5_000), parent("d0", 5_000)],
        royalty_bps: 1,
    };
    stateless(record("twice", me, twice), "lineage_weights");
    let idle = Lineage {
        parents: vec![],
        royalty_bps: 1,
    };
    stateless(record("idle", me, idle), "lineage_weights");
    // A name that reappears below its own parents (a retired name registered again) is a cycle.
    let state = StateDelta::new(&chain.state);
    let err = models::lineage::depth(&state, "d0", &one("d2", 1)).unwrap_err();
    assert_eq!(err.code.name(), "lineage_cycle");
}

#[test]
fn hostile_share_messages_are_refused_with_stable_codes() {
    let owner = SecretKey::from_seed([8; 32]);
    let stranger = SecretKey::from_seed([9; 32]);
    let mut chain = Chain::new(&[&owner, &stranger], compute::Params::default());
    let asset = own_model(&mut chain, &owner, "mine", 1_000);
    let cases: Vec<(&SecretKey, shares::Msg, &str)> = vec![
        (
            &stranger,
            shares::Msg::Claim {
                asset: asset.clone(),
            },
            "not_a_holder",
        ),
        (
            &stranger,
            shares::Msg::Issue {
                asset: AssetId::Model("chat".into()),
                supply: 5,
            },
            "not_asset_owner",
        ),
        (
            &owner,
            shares::Msg::Issue {
                asset: asset.clone(),
                supply: 5,
            },
            "asset_exists",
        ),
        (
            &owner,
            shares::Msg::Offer {
                asset: asset.clone(),
                units: 1_000,
                curve: Curve::Fixed { price: u128::MAX },
            },
            "offering_overflow",
        ),
        (
            &owner,
            shares::Msg::Offer {
                asset: asset.clone(),
                units: 1_000,
                curve: Curve::Linear {
                    base: 1,
                    slope: u128::MAX / 1_000,
                    reserve_bps: 0,
                },
            },
            "offering_overflow",
        ),
        (
            &stranger,
            shares::Msg::Transfer {
                asset: asset.clone(),
                to: stranger.public_key().address(),
                units: 1,
            },
            "insufficient_shares",
        ),
        (
            &stranger,
            shares::Msg::Buy {
                offering: 77,
                units: 1,
                max_cost: Amount::pza(1),
            },
            "unknown_offering",
        ),
        (
            &owner,
            shares::Msg::Claim {
                asset: AssetId::Dataset(12345),
            },
            "unknown_asset",
        ),
    ];
    for (key, msg, code) in cases {
        let (r, _) = chain.one(key, Message::Shares(msg.clone()));
        assert_eq!(failed(&r), Some(code), "{msg:?}");
    }
    // A fixed offering sells out and then refuses.
    let (r, _) = chain.one(
        &owner,
        Message::Shares(shares::Msg::Offer {
            asset: asset.clone(),
            units: 10,
            curve: Curve::Fixed { price: 1_000 },
        }),
    );
    assert_eq!(failed(&r), None);
    let buy = |units| {
        Message::Shares(shares::Msg::Buy {
            offering: 0,
            units,
            max_cost: Amount::pza(1),
        })
    };
    assert_eq!(failed(&chain.one(&stranger, buy(10)).0), None);
    assert_eq!(
        failed(&chain.one(&stranger, buy(1)).0),
        Some("offering_sold_out")
    );
    // Locked units do not move: all 990 free units transfer, one more does not.
    let send = |units| {
        Message::Shares(shares::Msg::Transfer {
            asset: asset.clone(),
            to: Address([3; 20]),
            units,
        })
    };
    assert_eq!(
        failed(&chain.one(&owner, send(991)).0),
        Some("insufficient_shares")
    );
    assert_eq!(failed(&chain.one(&owner, send(990)).0), None);
}
