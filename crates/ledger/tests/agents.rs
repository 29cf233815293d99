//! Agents: records, paid calls, reputation from settled history, and discovery ranked by the
//! documented score (docs/agents.md), on seeded histories.

mod common;
mod scoped;

use common::Chain;
use piazza_codec::{Decode, Encode};
use piazza_ledger::agents::{self, Agent, Endpoint, History, Profile, Protocol};
use piazza_ledger::bank;
use piazza_ledger::block::TxStatus;
use piazza_ledger::grants::{self, Rate, Scope};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_ledger::ErrorCode;
use piazza_primitives::{Amount, Hash, SecretKey};
use scoped::{block_at, code};

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

fn profile(tags: &[&str], price: Amount) -> Profile {
    Profile {
        description: "ranks documents by relevance".into(),
        endpoints: vec![Endpoint {
            protocol: Protocol::Http,
            url: "http://127.0.0.1:9000/rank".into(),
        }],
        tags: tags.iter().map(|t| t.to_string()).collect(),
        price,
    }
}

fn register(name: &str, tags: &[&str], stake: Amount) -> Message {
    Message::Agents(agents::Msg::Register {
        name: name.into(),
        profile: profile(tags, Amount::pza(1)),
        stake,
        share_asset: None,
    })
}

struct World {
    chain: Chain,
}

impl World {
    fn new(users: &[&SecretKey]) -> World {
        World {
            chain: Chain::new(users, Default::default()),
        }
    }

    fn tx(&self, from: &SecretKey, messages: Vec<Message>) -> SignedTransaction {
        let nonce = bank::account(
            &StateDelta::new(&self.chain.state),
            &from.public_key().address(),
        )
        .nonce;
        Transaction {
            chain_id: "compute".into(),
            sender: from.public_key(),
            nonce,
            max_fee: Amount::pza(1),
            messages,
        }
        .sign(from)
    }

    /// One transaction in its own block; its status (a refusal before inclusion panics).
    fn send(&mut self, from: &SecretKey, message: Message) -> TxStatus {
        let tx = self.tx(from, vec![message]);
        let time_ms = self.chain.height + 1;
        block_at(&mut self.chain, time_ms, &[tx])
            .remove(0)
            .unwrap()
            .0
    }

    fn ok(&mut self, from: &SecretKey, message: Message) {
        let status = self.send(from, message);
        assert_eq!(status, TxStatus::Ok);
    }

    fn empty_blocks(&mut self, n: u64) {
        for _ in 0..n {
            let time_ms = self.chain.height + 1;
            block_at(&mut self.chain, time_ms, &[]);
        }
    }

    fn view(&self) -> StateDelta<'_> {
        StateDelta::new(&self.chain.state)
    }

    fn agent(&self, id: u64) -> Agent {
        agents::agent(&self.view(), id).unwrap()
    }

    fn next_call(&self) -> u64 {
        (0..)
            .find(|id| agents::call(&self.view(), *id).is_none())
            .unwrap()
    }

    /// `payer` calls `agent`, its owner answers, the payer releases and rates it.
    fn paid_call(
        &mut self,
        payer: &SecretKey,
        owner: &SecretKey,
        agent: u64,
        paid: Amount,
        rating: Option<u8>,
    ) {
        let call = self.next_call();
        self.ok(payer, call_msg(agent, paid, 10));
        self.ok(
            owner,
            Message::Agents(agents::Msg::Answer {
                call,
                result_hash: Hash([7; 32]),
            }),
        );
        self.ok(payer, Message::Agents(agents::Msg::Release { call }));
        if let Some(rating) = rating {
            self.ok(payer, Message::Agents(agents::Msg::Rate { call, rating }));
        }
    }

    /// `payer` calls `agent` and nobody answers before the deadline.
    fn missed_call(&mut self, payer: &SecretKey, agent: u64) {
        self.ok(payer, call_msg(agent, Amount::pza(1), 2));
        self.empty_blocks(3);
    }

    /// The module account holds every active stake and every open or answered escrow.
    fn assert_escrow_balanced(&self) {
        let view = self.view();
        let stakes: u128 = (0..)
            .map_while(|id| agents::agent(&view, id))
            .map(|a| a.stake.base_units())
            .sum();
        let escrows: u128 = (0..)
            .map_while(|id| agents::call(&view, id))
            .filter(|c| {
                matches!(
                    c.status,
                    agents::CallStatus::Open | agents::CallStatus::Answered
                )
            })
            .map(|c| c.amount.base_units())
            .sum();
        assert_eq!(
            self.chain.balance(&agents::escrow()).base_units(),
            stakes + escrows
        );
    }
}

fn call_msg(agent: u64, amount: Amount, timeout_blocks: u64) -> Message {
    Message::Agents(agents::Msg::Call {
        agent,
        request_hash: Hash([3; 32]),
        amount,
        timeout_blocks,
    })
}

#[test]
fn discovery_ranks_by_stake_and_settled_reputation() {
    let (a, b, c, d, payer) = (key(1), key(2), key(3), key(4), key(5));
    let mut world = World::new(&[&a, &b, &c, &d, &payer]);
    // 0: a large stake and no history; 1: a small stake and paid, well-rated, settled work;
    // 2: a middling stake and only missed deadlines; 3: another tag altogether.
    world.ok(&a, register("big-stake", &["rank"], Amount::pza(1_000)));
    world.ok(
        &b,
        register("good-work", &["rank", "summarize"], Amount::pza(10)),
    );
    world.ok(&c, register("no-shows", &["rank"], Amount::pza(100)));
    world.ok(
        &d,
        register("elsewhere", &["translate"], Amount::pza(5_000)),
    );
    for _ in 0..5 {
        world.paid_call(&payer, &b, 1, Amount::pza(20), Some(5));
    }
    for _ in 0..5 {
        world.missed_call(&payer, 2);
    }
    world.assert_escrow_balanced();
    assert_eq!(
        world.agent(1).history,
        History {
            completed: 5,
            timeouts: 0,
            paid: Amount::pza(100),
            rating_points: 5 * Amount::pza(100).base_units(),
            rated_paid: Amount::pza(100),
        }
    );
    assert_eq!(world.agent(2).history.timeouts, 5);

    let params = agents::params(&world.view());
    let found = agents::find_by_tag(&world.view(), "rank", 10);
    let order: Vec<u64> = found.iter().map(|(a, _)| a.id).collect();
    assert_eq!(
        order,
        vec![1, 0, 2],
        "work outranks stake; missed deadlines rank last"
    );
    for (agent, score) in &found {
        assert_eq!(*score, agents::score(agent, &params));
    }
    // The documented numbers: stake 1,000 of stake_half 1,000 is 5,000 bps and no reputation;
    // 100 PZA paid of paid_half 100 is experience 5,000, reliability (5+1)/(5+2), rating 5/5.
    assert_eq!(found[1].1, 5_000);
    let reliability = 6 * 10_000 / 7;
    let reputation = 5_000 * (reliability + 10_000) / 20_000;
    assert_eq!(found[0].1, 10 * 10_000 / 1_010 + 2 * reputation);
    assert_eq!(
        found[2].1,
        100 * 10_000 / 1_100,
        "timeouts without paid work add nothing"
    );
    assert_eq!(agents::find_by_tag(&world.view(), "rank", 1).len(), 1);
    let translate = agents::find_by_tag(&world.view(), "translate", 10);
    assert_eq!(translate.len(), 1);
    assert_eq!(translate[0].0.id, 3);

    // A deactivated agent leaves discovery and gets its stake back.
    let before = world.chain.balance(&a.public_key().address());
    world.ok(&a, Message::Agents(agents::Msg::Deactivate { agent: 0 }));
    assert!(world.chain.balance(&a.public_key().address()) > before);
    let order: Vec<u64> = agents::find_by_tag(&world.view(), "rank", 10)
        .iter()
        .map(|(a, _)| a.id)
        .collect();
    assert_eq!(order, vec![1, 2]);
    world.assert_escrow_balanced();
}

#[test]
fn ratings_without_a_settled_payment_change_nothing() {
    let (owner, payer, stranger) = (key(1), key(2), key(3));
    let mut world = World::new(&[&owner, &payer, &stranger]);
    world.ok(&owner, register("ranker", &["rank"], Amount::pza(10)));
    let rate = |call, rating| Message::Agents(agents::Msg::Rate { call, rating });
    let untouched = world.agent(0).history;

    // Open, then answered: not settled yet.
    world.ok(&payer, call_msg(0, Amount::pza(2), 10));
    assert_eq!(
        code(&world.send(&payer, rate(0, 5))),
        Some(ErrorCode::CallClosed)
    );
    world.ok(
        &owner,
        Message::Agents(agents::Msg::Answer {
            call: 0,
            result_hash: Hash([1; 32]),
        }),
    );
    assert_eq!(
        code(&world.send(&payer, rate(0, 1))),
        Some(ErrorCode::CallClosed)
    );
    // Refunded (never answered): nothing was paid.
    world.missed_call(&payer, 0);
    assert_eq!(
        code(&world.send(&payer, rate(1, 1))),
        Some(ErrorCode::CallClosed)
    );
    // A call that never existed.
    assert_eq!(
        code(&world.send(&payer, rate(99, 5))),
        Some(ErrorCode::UnknownCall)
    );
    // The owner paying its own agent: settles, but counts for nothing and cannot be rated.
    world.paid_call(&owner, &owner, 0, Amount::pza(50), None);
    let own = world.next_call() - 1;
    assert_eq!(
        code(&world.send(&owner, rate(own, 5))),
        Some(ErrorCode::NotAgentParty)
    );

    let history = world.agent(0).history;
    assert_eq!(history.rating_points, untouched.rating_points);
    assert_eq!(history.rated_paid, Amount::ZERO);
    assert_eq!(history.completed, 0, "only the self-call settled so far");
    assert_eq!(history.timeouts, 1);

    // Call 0 releases by itself after the window; then only its payer rates it, once.
    world.empty_blocks(agents::params(&world.view()).release_window_blocks);
    assert_eq!(
        agents::call(&world.view(), 0).unwrap().status,
        agents::CallStatus::Settled
    );
    assert_eq!(
        code(&world.send(&stranger, rate(0, 1))),
        Some(ErrorCode::NotAgentParty)
    );
    world.ok(&payer, rate(0, 4));
    assert_eq!(
        code(&world.send(&payer, rate(0, 5))),
        Some(ErrorCode::CallClosed)
    );
    let history = world.agent(0).history;
    assert_eq!(history.completed, 1);
    assert_eq!(history.rated_paid, Amount::pza(2));
    assert_eq!(history.rating_points, 4 * Amount::pza(2).base_units());
    world.assert_escrow_balanced();
}

#[test]
fn hostile_records_and_calls_get_stable_errors() {
    let (owner, other) = (key(1), key(2));
    let mut world = World::new(&[&owner, &other]);
    // Past a bound: the decoder refuses the bytes.
    let long_name = register(
        &"n".repeat(agents::NAME_BYTES_MAX + 1),
        &["rank"],
        Amount::pza(10),
    );
    assert!(Message::from_bytes(&long_name.to_bytes()).is_err());
    let long_description = Message::Agents(agents::Msg::Register {
        name: "x".into(),
        profile: Profile {
            description: "d".repeat(agents::DESCRIPTION_BYTES_MAX + 1),
            ..profile(&["rank"], Amount::ZERO)
        },
        stake: Amount::pza(10),
        share_asset: None,
    });
    assert!(Message::from_bytes(&long_description.to_bytes()).is_err());
    // Inside the bounds but malformed: refused before inclusion.
    for bad in [
        register("x", &["Rank"], Amount::pza(10)),
        register("x", &["b", "a"], Amount::pza(10)),
        register("x", &[], Amount::pza(10)),
        Message::Agents(agents::Msg::Register {
            name: "x".into(),
            profile: Profile {
                endpoints: vec![Endpoint {
                    protocol: Protocol::Mcp,
                    url: "file:///etc/passwd".into(),
                }],
                ..profile(&["rank"], Amount::ZERO)
            },
            stake: Amount::pza(10),
            share_asset: None,
        }),
        Message::Agents(agents::Msg::Register {
            name: "x".into(),
            profile: profile(&["rank"], Amount::ZERO),
            stake: Amount::pza(10),
            share_asset: Some(bank::assets::AssetId::Agent("someone-else".into())),
        }),
        call_msg(0, Amount::pza(1), agents::CALL_TIMEOUT_BLOCKS_MAX + 1),
        Message::Agents(agents::Msg::Rate { call: 0, rating: 0 }),
    ] {
        let tx = world.tx(&owner, vec![bad]);
        let time_ms = world.chain.height + 1;
        assert_eq!(
            block_at(&mut world.chain, time_ms, &[tx])
                .remove(0)
                .unwrap_err(),
            ErrorCode::InvalidMessage
        );
    }
    assert_eq!(
        code(&world.send(&owner, register("x", &["rank"], Amount::pza(1)))),
        Some(ErrorCode::StakeBelowMinimum)
    );
    world.ok(&owner, register("x", &["rank"], Amount::pza(10)));
    assert_eq!(
        code(&world.send(&other, register("x", &["rank"], Amount::pza(10)))),
        Some(ErrorCode::InvalidMessage),
        "names are unique"
    );
    assert_eq!(
        code(&world.send(
            &other,
            Message::Agents(agents::Msg::Deactivate { agent: 0 })
        )),
        Some(ErrorCode::NotAgentParty)
    );
    assert_eq!(
        code(&world.send(&other, call_msg(0, Amount::new(1), 5))),
        Some(ErrorCode::EscrowTooLow),
        "below the agent's price"
    );
    assert_eq!(
        code(&world.send(&other, call_msg(7, Amount::pza(1), 5))),
        Some(ErrorCode::UnknownAgent)
    );
    world.ok(&other, call_msg(0, Amount::pza(1), 5));
    assert_eq!(
        code(&world.send(
            &other,
            Message::Agents(agents::Msg::Answer {
                call: 0,
                result_hash: Hash::ZERO
            })
        )),
        Some(ErrorCode::NotAgentParty),
        "only the agent's owner answers"
    );
    world.assert_escrow_balanced();
}

#[test]
fn a_grantee_pays_only_the_agents_its_grant_names() {
    let (owner, grantee, agent_owner) = (key(1), key(2), key(3));
    let mut world = World::new(&[&owner, &agent_owner]);
    world.ok(
        &agent_owner,
        register("allowed", &["rank"], Amount::pza(10)),
    );
    world.ok(&agent_owner, register("other", &["rank"], Amount::pza(10)));
    let call_kind = call_msg(0, Amount::pza(1), 1).kind();
    world.ok(
        &owner,
        Message::Grants(grants::Msg::Grant {
            grantee: grantee.public_key(),
            scope: Scope {
                kinds: vec![call_kind],
                amount_per_message_max: Amount::pza(5),
                recipients: Some(vec![]),
                agents: Some(vec![0]),
                spend_cap: Amount::pza(20),
                rate: Rate {
                    messages_max: 10,
                    per_blocks: 10,
                },
                expiry_height: 1_000,
            },
        }),
    );
    let as_grantee = |world: &World, agent| {
        let mut tx = world
            .tx(&owner, vec![call_msg(agent, Amount::pza(2), 5)])
            .tx;
        tx.sender = owner.public_key();
        tx.sign_as_grantee(&grantee)
    };
    let allowed = as_grantee(&world, 0);
    let time_ms = world.chain.height + 1;
    let outcome = block_at(&mut world.chain, time_ms, &[allowed]).remove(0);
    assert_eq!(outcome.unwrap().0, TxStatus::Ok);
    assert_eq!(
        agents::call(&world.view(), 0).unwrap().payer,
        owner.public_key().address()
    );
    let other = as_grantee(&world, 1);
    let time_ms = world.chain.height + 1;
    assert_eq!(
        block_at(&mut world.chain, time_ms, &[other])
            .remove(0)
            .unwrap_err(),
        ErrorCode::GrantExceeded
    );
}

/// A call paid over HTTP with x402 (`agents::Msg::PaidCall`): the authorization pays the
/// agent's owner at least its price, settles once, and becomes a settled call its payer (and
/// only its payer) rates.
#[test]
fn an_x402_paid_call_settles_once_and_only_its_payer_rates_it() {
    use piazza_ledger::bank::authorization::TransferAuthorization;
    let (owner, payer, submitter) = (key(1), key(2), key(3));
    let mut world = World::new(&[&owner, &payer, &submitter]);
    world.ok(&owner, register("ranker", &["rank"], Amount::pza(10)));
    let now_s = 1_000_000;
    let authorization = |amount: Amount, to, nonce: u8| TransferAuthorization {
        from: payer.public_key(),
        to,
        amount,
        valid_after: now_s - 10,
        valid_before: now_s + 100,
        nonce: Hash([nonce; 32]),
    };
    let paid_call = |authorization: TransferAuthorization| {
        let signature = authorization.sign(&payer, "compute");
        Message::Agents(agents::Msg::PaidCall {
            agent: 0,
            request_hash: Hash([5; 32]),
            authorization,
            signature,
        })
    };
    let owner_address = owner.public_key().address();
    let settle = |world: &mut World, message: Message| {
        let tx = world.tx(&submitter, vec![message]);
        block_at(&mut world.chain, now_s * 1000, &[tx])
            .remove(0)
            .unwrap()
            .0
    };
    let balance = |world: &World, who: &SecretKey| {
        bank::account(&world.view(), &who.public_key().address())
            .balance
            .base_units()
    };
    let two = Amount::pza(2).base_units();
    let (owner_before, payer_before) = (balance(&world, &owner), balance(&world, &payer));

    // Below the price, or to someone other than the owner: refused, nothing paid.
    let cheap = paid_call(authorization(Amount::new(1), owner_address, 1));
    assert_eq!(
        code(&settle(&mut world, cheap)),
        Some(ErrorCode::EscrowTooLow)
    );
    let elsewhere = paid_call(authorization(
        Amount::pza(1),
        submitter.public_key().address(),
        2,
    ));
    assert_eq!(
        code(&settle(&mut world, elsewhere)),
        Some(ErrorCode::NotAgentParty)
    );
    assert_eq!(balance(&world, &payer), payer_before);

    // Paid: a settled call of the payer, counted in the history.
    let paid = paid_call(authorization(Amount::pza(2), owner_address, 3));
    assert_eq!(settle(&mut world, paid.clone()), TxStatus::Ok);
    let call = agents::call(&world.view(), 0).unwrap();
    assert_eq!(call.status, agents::CallStatus::Settled);
    assert_eq!(call.payer, payer.public_key().address());
    assert_eq!(call.request_hash, Hash([5; 32]));
    assert_eq!(balance(&world, &owner), owner_before + two);
    assert_eq!(balance(&world, &payer), payer_before - two);
    let history = world.agent(0).history;
    assert_eq!((history.completed, history.paid), (1, Amount::pza(2)));

    // The same authorization again: refused; nothing paid twice, no second call.
    assert_eq!(
        code(&settle(&mut world, paid)),
        Some(ErrorCode::AuthorizationRefused)
    );
    assert_eq!(balance(&world, &payer), payer_before - two);
    assert!(agents::call(&world.view(), 1).is_none());
    assert_eq!(world.agent(0).history.completed, 1);

    // The submitter did not pay: it cannot rate; the payer can, once.
    let rate = |rating| Message::Agents(agents::Msg::Rate { call: 0, rating });
    assert_eq!(
        code(&world.send(&submitter, rate(5))),
        Some(ErrorCode::NotAgentParty)
    );
    assert_eq!(world.agent(0).history.rated_paid, Amount::ZERO);
    world.ok(&payer, rate(5));
    let history = world.agent(0).history;
    assert_eq!(history.rated_paid, Amount::pza(2));
    assert_eq!(history.rating_points, 5 * Amount::pza(2).base_units());
    world.assert_escrow_balanced();
}
