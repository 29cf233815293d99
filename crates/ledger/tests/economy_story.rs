//! The economy end to end on the pure executor: contributors add to a pool (validated by
//! embedding jobs, one duplicate rejected) → the pool's dataset is bought → a model fine-tuned
//! on it is published with lineage (a base model + the dataset) → its shares are sold in an
//! offering → a client pays for a job on it → the provider, the fine-tune's holders, the base
//! model's holders and the pool's contributors each receive exactly their share. And a
//! labelling task with 3 labellers per item, one dishonest.

mod common;
mod economy_common;

use common::{failed, post, register, submit, Chain};
use economy_common::record;
use piazza_ledger::bank::assets::{self, AssetId};
use piazza_ledger::bank::curve::Curve;
use piazza_ledger::bank::shares;
use piazza_ledger::compute::{self, JobStatus};
use piazza_ledger::data::{self, Rule};
use piazza_ledger::models::{self, Lineage, Parent, Source};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::Message;
use piazza_primitives::{Amount, Hash, SecretKey};

fn embedding(values: [f32; 4]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn ok(chain: &mut Chain, key: &SecretKey, message: Message) {
    let (r, _) = chain.one(key, message);
    assert_eq!(failed(&r), None, "{r:?}");
}

fn claimable(chain: &Chain, asset: &AssetId, who: &SecretKey) -> u128 {
    assets::claimable(
        &StateDelta::new(&chain.state),
        asset,
        &who.public_key().address(),
    )
    .base_units()
}

/// Runs an embedding job for `client` on `input` whose result is `output`; returns its id.
fn embed_job(
    chain: &mut Chain,
    client: &SecretKey,
    provider: &SecretKey,
    input: &[u8],
    output: &[u8],
) -> u64 {
    let (r, events) = chain.one(client, submit("embed", input, 40, Amount::new(1_000_000)));
    assert_eq!(failed(&r), None);
    let id: u64 = common::attribute(&r.events, "compute.job_submitted", "job")
        .parse()
        .unwrap_or_else(|_| panic!("{events:?}"));
    chain.block(vec![]);
    ok(chain, provider, post(id, output, 4));
    chain.block(vec![]);
    chain.block(vec![]);
    assert_eq!(chain.job(id).status, JobStatus::Settled);
    id
}

#[test]
fn revenue_follows_provenance_from_a_job_to_every_holder() {
    let keys: Vec<SecretKey> = (1..=11).map(|i| SecretKey::from_seed([i; 32])).collect();
    let [embedder, alice, bob, carol, buyer, base, base_investor, tuner, investor, client, server] =
        &keys[..]
    else {
        unreachable!()
    };
    let mut chain = Chain::new(&keys.iter().collect::<Vec<_>>(), compute::Params::default());
    ok(&mut chain, embedder, register("embed", 1_000));

    // A pool validated by embedding distance, and its dataset 0.
    ok(
        &mut chain,
        alice,
        Message::Data(data::Msg::CreatePool {
            model: "embed".into(),
            dims: 4,
            min_distance_sq: 1_000,
            schema: "text".into(),
            license: "cc-by-4.0".into(),
            price: Amount::new(2_000_000),
        }),
    );
    let pool = AssetId::Pool(0);
    let contribute = |chain: &mut Chain, who: &SecretKey, input: &[u8], out: [f32; 4]| {
        let job = embed_job(chain, who, embedder, input, &embedding(out));
        let (r, _) = chain.one(
            who,
            Message::Data(data::Msg::Contribute {
                pool: 0,
                item: compute::input_hash(input),
                validation_job: job,
            }),
        );
        (failed(&r).map(str::to_string), job)
    };
    assert_eq!(
        contribute(&mut chain, alice, b"a cat", [1.0, 0.0, 0.0, 0.0]).0,
        None
    );
    assert_eq!(
        contribute(&mut chain, bob, b"a dog", [0.0, 1.0, 0.0, 0.0]).0,
        None
    );
    // Carol's item embeds next to Alice's: refused, and the refusal is re-checkable from the
    // job's output (quantized distance 2 · 3² = 18, not above 1 000).
    let (refusal, carol_job) = contribute(&mut chain, carol, b"a kitten", [0.98, 0.02, 0.0, 0.0]);
    assert_eq!(refusal.as_deref(), Some("contribution_rejected"));
    {
        let state = StateDelta::new(&chain.state);
        let output = chain.job(carol_job).result.unwrap().output;
        let quantized = data::quantize(&output).unwrap();
        let alices = data::item(&state, 0, 0).unwrap().embedding;
        assert!(data::distance_sq(&quantized, &alices) <= 1_000);
        assert_eq!(data::pool(&state, 0).unwrap().items, 2);
    }
    // A job is one proof: Bob cannot reuse his, Carol cannot use Bob's.
    let (r, _) = chain.one(
        bob,
        Message::Data(data::Msg::Contribute {
            pool: 0,
            item: compute::input_hash(b"a dog"),
            validation_job: 1,
        }),
    );
    assert_eq!(failed(&r), Some("contribution_rejected"));

    // The pool's dataset is bought: its price goes to the contributors by weight.
    ok(
        &mut chain,
        buyer,
        Message::Data(data::Msg::BuyAccess { dataset: 0 }),
    );
    assert_eq!(claimable(&chain, &pool, alice), 1_000_000);
    assert_eq!(claimable(&chain, &pool, bob), 1_000_000);

    // A base model with shares: 750 with its publisher, 250 with an investor.
    let me = |k: &SecretKey| k.public_key().address();
    ok(
        &mut chain,
        base,
        Message::Models(models::Msg::Register(record(
            "smollm2",
            me(base),
            Lineage::default(),
        ))),
    );
    let base_asset = AssetId::Model("smollm2".into());
    ok(
        &mut chain,
        base,
        Message::Shares(shares::Msg::Issue {
            asset: base_asset.clone(),
            supply: 1_000,
        }),
    );
    ok(
        &mut chain,
        base,
        Message::Shares(shares::Msg::Transfer {
            asset: base_asset.clone(),
            to: me(base_investor),
            units: 250,
        }),
    );
    // The fine-tune, published with lineage: 60 % the base, 40 % the pool's dataset; 30 % of
    // its revenue flows up.
    let lineage = Lineage {
        parents: vec![
            Parent {
                source: Source::Model("smollm2".into()),
                weight_bps: 6_000,
            },
            Parent {
                source: Source::Dataset(0),
                weight_bps: 4_000,
            },
        ],
        royalty_bps: 3_000,
    };
    ok(
        &mut chain,
        tuner,
        Message::Models(models::Msg::Register(record("tuned", me(tuner), lineage))),
    );
    let tuned = AssetId::Model("tuned".into());
    ok(
        &mut chain,
        tuner,
        Message::Shares(shares::Msg::Issue {
            asset: tuned.clone(),
            supply: 100,
        }),
    );
    // An offering: 40 of the 100 units at a fixed price, bought by an investor.
    ok(
        &mut chain,
        tuner,
        Message::Shares(shares::Msg::Offer {
            asset: tuned.clone(),
            units: 40,
            curve: Curve::Fixed { price: 5_000 },
        }),
    );
    let tuner_before = chain.balance(&me(tuner)).base_units();
    ok(
        &mut chain,
        investor,
        Message::Shares(shares::Msg::Buy {
            offering: 0,
            units: 40,
            max_cost: Amount::new(200_000),
        }),
    );
    assert_eq!(
        chain.balance(&me(tuner)).base_units(),
        tuner_before + 200_000
    );

    // A client pays for a job on the fine-tune: 10 units at 1 000 000.
    ok(&mut chain, server, register("tuned", 1_000_000));
    let provider_before = chain.balance(&me(server)).base_units();
    let (r, _) = chain.one(client, submit("tuned", b"hello", 10, Amount::pza(1)));
    assert_eq!(failed(&r), None);
    let job: u64 = common::attribute(&r.events, "compute.job_submitted", "job")
        .parse()
        .unwrap();
    chain.block(vec![]);
    let (r, _) = chain.one(server, post(job, b"hi there", 10));
    assert_eq!(failed(&r), None);
    let post_fee = r.fee_paid.base_units();
    chain.block(vec![]);
    chain.block(vec![]);
    assert_eq!(chain.job(job).status, JobStatus::Settled);

    // price 10 000 000: provider 70 %, model revenue 15 % = 1 500 000, of which 30 % up:
    // 450 000 → base 60 % = 270 000, dataset 40 % = 180 000; the fine-tune keeps 1 050 000.
    assert_eq!(
        chain.balance(&me(server)).base_units() + post_fee,
        provider_before + 7_000_000
    );
    assert_eq!(claimable(&chain, &tuned, tuner), 630_000);
    assert_eq!(claimable(&chain, &tuned, investor), 420_000);
    assert_eq!(claimable(&chain, &base_asset, base), 202_500);
    assert_eq!(claimable(&chain, &base_asset, base_investor), 67_500);
    assert_eq!(claimable(&chain, &pool, alice), 1_000_000 + 90_000);
    assert_eq!(claimable(&chain, &pool, bob), 1_000_000 + 90_000);
    assert_eq!(claimable(&chain, &pool, carol), 0);

    // Claims pay exactly that; a non-holder's claim is refused.
    let before = chain.balance(&me(alice)).base_units();
    let (r, _) = chain.one(
        alice,
        Message::Shares(shares::Msg::Claim {
            asset: pool.clone(),
        }),
    );
    assert_eq!(failed(&r), None);
    assert_eq!(
        chain.balance(&me(alice)).base_units() + r.fee_paid.base_units(),
        before + 1_090_000
    );
    let (r, _) = chain.one(carol, Message::Shares(shares::Msg::Claim { asset: pool }));
    assert_eq!(failed(&r), Some("not_a_holder"));
}

#[test]
fn a_labelling_task_pays_the_honest_and_takes_the_dishonest_stake() {
    let keys: Vec<SecretKey> = (30..34).map(|i| SecretKey::from_seed([i; 32])).collect();
    let [requester, honest1, honest2, dishonest] = &keys[..] else {
        unreachable!()
    };
    let me = |k: &SecretKey| k.public_key().address();
    let mut chain = Chain::new(&keys.iter().collect::<Vec<_>>(), compute::Params::default());
    let (reward, stake) = (Amount::new(1_000_000), Amount::new(5_000_000));
    let items = vec![Hash([1; 32]), Hash([2; 32])];
    ok(
        &mut chain,
        requester,
        Message::Data(data::Msg::CreateLabelTask {
            items: items.clone(),
            k: 3,
            reward_per_label: reward,
            stake,
            rule: Rule::Majority,
            join_blocks: 4,
            label_blocks: 10,
            price: Amount::new(10),
            license: "cc-by-4.0".into(),
        }),
    );
    let start: Vec<u128> = keys
        .iter()
        .map(|k| chain.balance(&me(k)).base_units())
        .collect();
    let mut fees = [0u128; 4];
    let mut send = |chain: &mut Chain, who: usize, msg: data::Msg| {
        let (r, _) = chain.one(&keys[who], Message::Data(msg));
        fees[who] += r.fee_paid.base_units();
        failed(&r).map(str::to_string)
    };
    for who in 1..=3 {
        assert_eq!(
            send(&mut chain, who, data::Msg::JoinLabelTask { task: 0 }),
            None
        );
    }
    // Labels before assignment, and assignment before joining closes, are refused.
    assert_eq!(
        send(&mut chain, 1, data::Msg::AssignLabels { task: 0 }).as_deref(),
        Some("label_closed")
    );
    chain.block(vec![]);
    assert_eq!(
        send(&mut chain, 0, data::Msg::AssignLabels { task: 0 }),
        None
    );
    // A stranger to the task may not label.
    assert_eq!(
        send(
            &mut chain,
            0,
            data::Msg::SubmitLabel {
                task: 0,
                item: 0,
                value: 7
            }
        )
        .as_deref(),
        Some("not_a_labeller")
    );
    for (item, truth) in [(0u16, 7u32), (1, 9)] {
        for who in 1..=3 {
            let value = if who == 3 { truth + 100 } else { truth };
            let label = data::Msg::SubmitLabel {
                task: 0,
                item,
                value,
            };
            assert_eq!(send(&mut chain, who, label), None);
        }
    }
    for _ in 0..4 {
        chain.block(vec![]);
    }
    assert_eq!(
        send(&mut chain, 0, data::Msg::SettleLabelTask { task: 0 }),
        None
    );

    let state = StateDelta::new(&chain.state);
    let task = data::label_task(&state, 0).unwrap();
    assert_eq!(task.phase, data::Phase::Settled);
    let delta = |who: usize| chain.balance(&me(&keys[who])).base_units() + fees[who];
    // Each honest labeller: two agreeing labels paid, stake back.
    for who in [1, 2] {
        assert_eq!(delta(who), start[who] + 2 * reward.base_units());
    }
    // The dishonest one: its stake is lost, nothing earned.
    assert_eq!(delta(3), start[3] - stake.base_units());
    // The requester: back the two rewards nobody earned, plus the lost stake.
    assert_eq!(
        delta(0),
        start[0] + 2 * reward.base_units() + stake.base_units()
    );
    assert_eq!(chain.balance(&data::escrow()), Amount::ZERO);
    // The result is a dataset whose pool lists the honest labellers by their agreeing labels.
    let dataset = task.result.unwrap();
    let record = data::dataset(&state, dataset).unwrap();
    assert_eq!(
        record.blob,
        data::labels_id(&[(items[0], 7), (items[1], 9)])
    );
    let pool = AssetId::Pool(record.pool.unwrap());
    let mut holders = assets::holders(&state, &pool);
    holders.sort();
    let mut honest = vec![me(honest1), me(honest2)];
    honest.sort();
    assert_eq!(holders, honest);
    assert_eq!(assets::holding(&state, &pool, &me(honest1)).units, 2);
    assert_eq!(assets::holding(&state, &pool, &me(dishonest)).units, 0);
    let _ = requester;
}
