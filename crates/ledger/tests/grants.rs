//! Scoped session keys: a transaction signed by a grantee acts for its owner only within the
//! grant (kinds, per-message amount, recipients, cap with fees, rate, expiry), and nothing passes
//! after revocation — however the grantee crafts its transactions.

mod common;
mod scoped;

use common::Chain;
use piazza_ledger::agents;
use piazza_ledger::bank;
use piazza_ledger::block::TxStatus;
use piazza_ledger::executor::check_admission;
use piazza_ledger::grants::{self, MessageKind, Rate, Scope};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_ledger::ErrorCode;
use piazza_primitives::{Address, Amount, SecretKey};
use proptest::prelude::*;
use scoped::code;

const SEND: MessageKind = MessageKind {
    module: 1,
    message: 0,
};

const CALL: MessageKind = MessageKind {
    module: agents::MODULE_TAG,
    message: 3,
};

fn register_agent(name: &str) -> Message {
    Message::Agents(agents::Msg::Register {
        name: name.into(),
        profile: agents::Profile {
            description: String::new(),
            endpoints: vec![agents::Endpoint {
                protocol: agents::Protocol::Http,
                url: "http://127.0.0.1:1".into(),
            }],
            tags: vec!["test".into()],
            price: Amount::new(1),
        },
        stake: Amount::pza(10),
        share_asset: None,
    })
}

/// A paid call whose deadline lies past every test's end (no refund lands mid-test).
fn call(agent: u64, amount: u128) -> Message {
    Message::Agents(agents::Msg::Call {
        agent,
        request_hash: piazza_primitives::Hash([1; 32]),
        amount: Amount::new(amount),
        timeout_blocks: agents::CALL_TIMEOUT_BLOCKS_MAX,
    })
}

fn owner() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

fn grantee() -> SecretKey {
    SecretKey::from_seed([2; 32])
}

fn allowed_recipient() -> Address {
    Address([0xa1; 20])
}

fn other_recipient() -> Address {
    Address([0xb2; 20])
}

fn scope(cap: Amount, per_message: Amount, rate: Rate, expiry_height: u64) -> Scope {
    Scope {
        kinds: vec![SEND],
        amount_per_message_max: per_message,
        recipients: Some(vec![allowed_recipient()]),
        agents: None,
        spend_cap: cap,
        rate,
        expiry_height,
    }
}

fn grant(scope: Scope) -> Message {
    Message::Grants(grants::Msg::Grant {
        grantee: grantee().public_key(),
        scope,
    })
}

fn revoke() -> Message {
    Message::Grants(grants::Msg::Revoke {
        grantee: grantee().public_key(),
    })
}

fn send(to: Address, amount: u128) -> Message {
    Message::Bank(bank::Msg::Send {
        to,
        amount: Amount::new(amount),
    })
}

/// A chain where the owner has granted `scope` at height 1.
fn granted(scope: Scope) -> Chain {
    let mut chain = Chain::new(&[&owner()], Default::default());
    let tx = as_owner(&chain, grant(scope));
    assert_eq!(block(&mut chain, &[tx]), vec![Ok(TxStatus::Ok)]);
    chain
}

fn nonce(chain: &Chain) -> u64 {
    bank::account(
        &StateDelta::new(&chain.state),
        &owner().public_key().address(),
    )
    .nonce
}

fn unsigned(chain: &Chain, messages: Vec<Message>) -> Transaction {
    Transaction {
        chain_id: "compute".into(),
        sender: owner().public_key(),
        nonce: nonce(chain),
        max_fee: Amount::pza(1),
        messages,
    }
}

fn as_grantee(chain: &Chain, messages: Vec<Message>) -> SignedTransaction {
    unsigned(chain, messages).sign_as_grantee(&grantee())
}

fn as_owner(chain: &Chain, message: Message) -> SignedTransaction {
    unsigned(chain, vec![message]).sign(&owner())
}

/// Runs one block of `txs` at the next height; returns, per transaction, its status or why it
/// could not be included.
fn block(chain: &mut Chain, txs: &[SignedTransaction]) -> Vec<Result<TxStatus, ErrorCode>> {
    let time_ms = chain.height + 1;
    scoped::block_at(chain, time_ms, txs)
        .into_iter()
        .map(|r| r.map(|(status, _)| status))
        .collect()
}

fn wide_rate() -> Rate {
    Rate {
        messages_max: 1_000,
        per_blocks: 1,
    }
}

#[test]
fn a_grantee_sends_within_its_grant_from_the_owners_account() {
    let mut chain = granted(scope(Amount::pza(10), Amount::pza(5), wide_rate(), 100));
    let before = chain.balance(&owner().public_key().address());
    let tx = as_grantee(&chain, vec![send(allowed_recipient(), 3_000_000_000)]);
    let encoded = piazza_codec::Encode::to_bytes(&tx);
    let decoded = SignedTransaction::decode_bytes(&encoded).unwrap();
    assert_eq!(decoded, tx);
    assert_eq!(decoded.grantee(), Some(&grantee().public_key()));
    check_admission(&chain.state, &tx, 16).unwrap();
    assert_eq!(block(&mut chain, &[tx]), vec![Ok(TxStatus::Ok)]);
    assert_eq!(chain.balance(&allowed_recipient()), Amount::pza(3));
    let spent = before
        .checked_sub(chain.balance(&owner().public_key().address()))
        .unwrap();
    let record = grants::grant(
        &StateDelta::new(&chain.state),
        &owner().public_key().address(),
        &grantee().public_key(),
    )
    .unwrap();
    assert_eq!(record.spent, spent, "the fee and the transfer count");
    assert!(spent > Amount::pza(3));
}

#[test]
fn crafted_signatures_and_envelopes_are_refused() {
    let chain = granted(scope(Amount::pza(10), Amount::pza(5), wide_rate(), 100));
    let tx = as_grantee(&chain, vec![send(allowed_recipient(), 1)]);
    // The grantee's signature presented as the owner's own.
    let stripped = SignedTransaction::new(tx.tx.clone(), tx.signature);
    assert_eq!(
        stripped.verify_signature().unwrap_err().code,
        ErrorCode::BadSignature
    );
    // The owner's own signature presented as a grantee's.
    let own = tx.tx.clone().sign(&owner());
    let wrapped = SignedTransaction::new_as_grantee(own.tx, grantee().public_key(), own.signature);
    assert_eq!(
        wrapped.verify_signature().unwrap_err().code,
        ErrorCode::BadSignature
    );
    // A key with no grant from this sender.
    let stranger = Transaction {
        messages: vec![send(allowed_recipient(), 1)],
        ..tx.tx.clone()
    }
    .sign_as_grantee(&SecretKey::from_seed([9; 32]));
    assert_eq!(
        check_admission(&chain.state, &stranger, 16)
            .unwrap_err()
            .code,
        ErrorCode::GrantRefused
    );
    // A grantee can never grant itself more.
    let escalate = as_grantee(
        &chain,
        vec![grant(scope(
            Amount::pza(1_000),
            Amount::pza(1_000),
            wide_rate(),
            1_000,
        ))],
    );
    assert_eq!(
        check_admission(&chain.state, &escalate, 16)
            .unwrap_err()
            .code,
        ErrorCode::GrantExceeded
    );
    // Truncated envelopes decode to errors, never a panic.
    let bytes = piazza_codec::Encode::to_bytes(&tx);
    for len in [0, 3, 4, 20, 36, 40] {
        assert!(SignedTransaction::decode_bytes(&bytes[..len]).is_err());
    }
}

#[test]
fn a_grant_past_its_bounds_is_refused_when_granted() {
    let mut chain = Chain::new(&[&owner()], Default::default());
    let mut unsorted = scope(Amount::pza(1), Amount::pza(1), wide_rate(), 100);
    unsorted.kinds = vec![
        MessageKind {
            module: 2,
            message: 0,
        },
        SEND,
    ];
    let mut grants_kind = scope(Amount::pza(1), Amount::pza(1), wide_rate(), 100);
    grants_kind.kinds.push(MessageKind {
        module: grants::MODULE_TAG,
        message: 0,
    });
    let no_rate = scope(
        Amount::pza(1),
        Amount::pza(1),
        Rate {
            messages_max: 0,
            per_blocks: 1,
        },
        100,
    );
    for bad in [unsorted, grants_kind, no_rate] {
        let tx = as_owner(&chain, grant(bad));
        assert_eq!(
            check_admission(&chain.state, &tx, 16).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
    }
    let expired = as_owner(
        &chain,
        grant(scope(Amount::pza(1), Amount::pza(1), wide_rate(), 1)),
    );
    let status = block(&mut chain, &[expired]).remove(0).unwrap();
    assert_eq!(
        code(&status),
        Some(ErrorCode::InvalidMessage),
        "already expired"
    );
}

#[test]
fn revocation_stops_the_next_transaction_in_the_same_block() {
    let mut chain = granted(scope(Amount::pza(10), Amount::pza(5), wide_rate(), 100));
    let revoke_tx = as_owner(&chain, revoke());
    let mut late = as_grantee(&chain, vec![send(allowed_recipient(), 1)]);
    late.tx.nonce += 1;
    let late = late.tx.sign_as_grantee(&grantee());
    assert_eq!(
        block(&mut chain, &[revoke_tx, late.clone()]),
        vec![Ok(TxStatus::Ok), Err(ErrorCode::GrantRefused)]
    );
    assert_eq!(
        check_admission(&chain.state, &late, 16).unwrap_err().code,
        ErrorCode::GrantRefused
    );
}

#[test]
fn a_bond_counts_against_the_per_message_limit_and_the_cap() {
    let mut wide = scope(Amount::pza(500), Amount::pza(150), wide_rate(), 100);
    wide.kinds = vec![
        SEND,
        MessageKind {
            module: 2,
            message: 0,
        },
    ];
    let mut chain = granted(wide);
    let bond = |amount| {
        Message::Staking(staking::Msg::Bond {
            role: Role::Provider,
            amount: Amount::pza(amount),
        })
    };
    let too_big = as_grantee(&chain, vec![bond(200)]);
    assert_eq!(
        check_admission(&chain.state, &too_big, 16)
            .unwrap_err()
            .code,
        ErrorCode::GrantExceeded
    );
    let ok = as_grantee(&chain, vec![bond(120)]);
    assert_eq!(block(&mut chain, &[ok]), vec![Ok(TxStatus::Ok)]);
    assert_eq!(
        staking::bonded(
            &StateDelta::new(&chain.state),
            &owner().public_key().address(),
            Role::Provider
        ),
        Amount::pza(120)
    );
}

/// One step of a grantee's (or the owner's) attempts.
#[derive(Debug, Clone)]
enum Step {
    /// Blocks pass with nothing in them.
    Wait(u64),
    /// The grantee sends these transfers (to the allowed recipient or another), these paid
    /// calls (to the allowed agent or another) and perhaps a bond (a kind the grant does not
    /// name), in one transaction.
    Grantee {
        sends: Vec<(bool, u128)>,
        calls: Vec<(bool, u128)>,
        stake: Option<u128>,
    },
    Revoke,
}

fn step() -> impl Strategy<Value = Step> {
    // Mostly transfers to the allowed recipient near the per-message limit, so that caps and
    // rates are reached; now and then a stranger, a bond, a pause or the revocation.
    prop_oneof![
        2 => (0u64..4).prop_map(Step::Wait),
        12 => (
            prop::collection::vec((prop::bool::weighted(0.85), 1u128..3_500_000_000), 1..4),
            prop::collection::vec((prop::bool::weighted(0.8), 1u128..3_500_000_000), 0..2),
            prop::option::weighted(0.1, 100u128..200)
        )
            .prop_map(|(sends, calls, stake)| Step::Grantee { sends, calls, stake }),
        1 => Just(Step::Revoke),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// However the grantee combines messages, no included transaction exceeds the grant's kinds
    /// (staking is not granted), recipients, agents, per-message limit, cap (fees included), rate or
    /// expiry, and nothing passes after revocation.
    #[test]
    fn no_grantee_transaction_exceeds_its_grant(
        steps in prop::collection::vec(step(), 1..32),
        cap in 1_000_000_000u128..20_000_000_000,
        per_message in 1_000_000_000u128..3_000_000_000,
        messages_max in 1u32..8,
        per_blocks in 1u64..5,
        expiry_height in 4u64..60,
    ) {
        let rate = Rate { messages_max, per_blocks };
        let mut chain = Chain::new(&[&owner()], Default::default());
        // Two agents (the owner's own, so nobody else needs funds); the grant pays only the
        // first.
        for name in ["allowed", "other"] {
            let tx = as_owner(&chain, register_agent(name));
            prop_assert_eq!(block(&mut chain, &[tx]), vec![Ok(TxStatus::Ok)]);
        }
        let mut with_calls = scope(Amount::new(cap), Amount::new(per_message), rate, expiry_height);
        with_calls.kinds = vec![SEND, CALL];
        with_calls.agents = Some(vec![0]);
        let tx = as_owner(&chain, grant(with_calls));
        prop_assert_eq!(block(&mut chain, &[tx]), vec![Ok(TxStatus::Ok)]);
        let owner_address = owner().public_key().address();
        let mut spent = 0u128;
        let mut revoked = false;
        // The rate windows as docs/protocol.md states them.
        let (mut window_start, mut window_messages) = (chain.height, 0u32);
        for step in steps {
            match step {
                Step::Wait(blocks) => {
                    for _ in 0..blocks {
                        block(&mut chain, &[]);
                    }
                }
                Step::Revoke => {
                    if !revoked {
                        let tx = as_owner(&chain, revoke());
                        prop_assert_eq!(block(&mut chain, &[tx]), vec![Ok(TxStatus::Ok)]);
                        revoked = true;
                    }
                }
                Step::Grantee { sends, calls, stake } => {
                    let mut messages: Vec<Message> = sends
                        .iter()
                        .map(|(allowed, amount)| {
                            let to = if *allowed { allowed_recipient() } else { other_recipient() };
                            send(to, *amount)
                        })
                        .collect();
                    messages.extend(calls.iter().map(|(allowed, amount)| {
                        call(if *allowed { 0 } else { 1 }, *amount)
                    }));
                    if let Some(stake) = stake {
                        messages.push(Message::Staking(staking::Msg::Bond {
                            role: Role::Provider,
                            amount: Amount::pza(stake as u64),
                        }));
                    }
                    let tx = as_grantee(&chain, messages);
                    let admitted = check_admission(&chain.state, &tx, 16);
                    let before = chain.balance(&owner_address);
                    let height = chain.height + 1;
                    let result = block(&mut chain, std::slice::from_ref(&tx)).remove(0);
                    let after = chain.balance(&owner_address);
                    let outflow = before.base_units() - after.base_units();
                    match result {
                        Err(_) => prop_assert_eq!(outflow, 0),
                        Ok(status) => {
                            prop_assert!(!revoked, "included after revocation");
                            prop_assert!(height < expiry_height, "included after expiry");
                            prop_assert!(admitted.is_ok(), "included but refused at admission");
                            if height >= window_start + per_blocks {
                                window_start = height;
                                window_messages = 0;
                            }
                            window_messages += tx.tx.messages.len() as u32;
                            prop_assert!(window_messages <= messages_max, "rate exceeded");
                            spent += outflow;
                            prop_assert!(spent <= cap, "cap exceeded: {} > {}", spent, cap);
                            if status == TxStatus::Ok {
                                prop_assert!(stake.is_none(), "a kind outside the grant passed");
                                for (allowed, amount) in sends.iter().chain(&calls) {
                                    prop_assert!(*allowed, "paid a recipient or agent outside the grant");
                                    prop_assert!(*amount <= per_message, "per-message limit exceeded");
                                }
                            }
                        }
                    }
                }
            }
        }
        prop_assert_eq!(chain.balance(&other_recipient()), Amount::ZERO);
    }
}
