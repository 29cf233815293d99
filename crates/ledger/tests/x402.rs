//! x402 transfer authorizations: signed by `from`, submitted by anyone, settled at most once
//! and only strictly inside `valid_after < block time < valid_before` (unix seconds).

mod common;
mod scoped;

use common::Chain;
use piazza_ledger::bank::authorization::{
    TransferAuthorization, AUTHORIZATION_LIFETIME_MAX_S, AUTHORIZATION_NONCES_MAX,
};
use piazza_ledger::bank::{self};
use piazza_ledger::block::TxStatus;
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_ledger::ErrorCode;
use piazza_primitives::{Address, Amount, Hash, SecretKey, Signature};
use proptest::prelude::*;
use scoped::{block_at, code};

fn payer() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

fn submitters() -> [SecretKey; 2] {
    [SecretKey::from_seed([2; 32]), SecretKey::from_seed([3; 32])]
}

fn payee() -> Address {
    Address([0xcc; 20])
}

fn chain() -> Chain {
    let [a, b] = submitters();
    Chain::new(&[&payer(), &a, &b], Default::default())
}

fn authorization(
    nonce: u8,
    amount: u128,
    valid_after: u64,
    valid_before: u64,
) -> TransferAuthorization {
    TransferAuthorization {
        from: payer().public_key(),
        to: payee(),
        amount: Amount::new(amount),
        valid_after,
        valid_before,
        nonce: Hash([nonce; 32]),
    }
}

fn settle(authorization: &TransferAuthorization, signature: Signature) -> Message {
    Message::Bank(bank::Msg::SettleAuthorization {
        authorization: authorization.clone(),
        signature,
    })
}

fn submit(chain: &Chain, submitter: &SecretKey, message: Message) -> SignedTransaction {
    let nonce = bank::account(
        &StateDelta::new(&chain.state),
        &submitter.public_key().address(),
    )
    .nonce;
    Transaction {
        chain_id: "compute".into(),
        sender: submitter.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![message],
    }
    .sign(submitter)
}

/// Settles `message` from the first submitter in a block at `time_s`; its status.
fn settle_at(chain: &mut Chain, time_s: u64, message: Message) -> TxStatus {
    let tx = submit(chain, &submitters()[0], message);
    let (status, _) = block_at(chain, time_s * 1000, &[tx]).remove(0).unwrap();
    status
}

#[test]
fn an_authorization_settles_once_inside_its_window() {
    let mut chain = chain();
    let auth = authorization(1, 5_000, 100, 200);
    let signature = auth.sign(&payer(), "compute");
    let before = chain.balance(&payer().public_key().address());
    assert_eq!(
        code(&settle_at(&mut chain, 100, settle(&auth, signature))),
        Some(ErrorCode::AuthorizationRefused),
        "not after valid_after"
    );
    assert_eq!(
        settle_at(&mut chain, 150, settle(&auth, signature)),
        TxStatus::Ok
    );
    assert_eq!(chain.balance(&payee()), Amount::new(5_000));
    assert_eq!(
        before.checked_sub(chain.balance(&payer().public_key().address())),
        Some(Amount::new(5_000)),
        "the payer pays the amount, the submitter the fee"
    );
    assert_eq!(
        code(&settle_at(&mut chain, 151, settle(&auth, signature))),
        Some(ErrorCode::AuthorizationRefused),
        "a replay"
    );
    assert_eq!(
        code(&settle_at(&mut chain, 200, settle(&auth, signature))),
        Some(ErrorCode::AuthorizationRefused),
        "at valid_before"
    );
    assert_eq!(chain.balance(&payee()), Amount::new(5_000));
}

#[test]
fn forged_foreign_and_overlong_authorizations_are_refused() {
    let mut chain = chain();
    let auth = authorization(2, 10, 0, 1_000);
    let other_chain = auth.sign(&payer(), "other-chain");
    let stranger = auth.sign(&submitters()[0], "compute");
    let mut raised = auth.clone();
    raised.amount = Amount::new(1_000_000);
    let signature = auth.sign(&payer(), "compute");
    for (message, why) in [
        (settle(&auth, other_chain), "signed for another chain"),
        (settle(&auth, stranger), "signed by another key"),
        (settle(&raised, signature), "amount changed after signing"),
    ] {
        assert_eq!(
            code(&settle_at(&mut chain, 10, message)),
            Some(ErrorCode::AuthorizationRefused),
            "{why}"
        );
    }
    let long = authorization(3, 10, 0, 10 + AUTHORIZATION_LIFETIME_MAX_S + 1);
    let signature = long.sign(&payer(), "compute");
    assert_eq!(
        code(&settle_at(&mut chain, 10, settle(&long, signature))),
        Some(ErrorCode::AuthorizationRefused),
        "open for longer than the lifetime bound"
    );
    let empty = authorization(4, 10, 5, 6);
    let tx = submit(
        &chain,
        &submitters()[0],
        settle(&empty, empty.sign(&payer(), "compute")),
    );
    assert_eq!(
        block_at(&mut chain, 5_500, &[tx]).remove(0).unwrap_err(),
        ErrorCode::InvalidMessage,
        "an empty window is refused before inclusion"
    );
    assert_eq!(chain.balance(&payee()), Amount::ZERO);
}

#[test]
fn a_full_nonce_list_refuses_until_validity_ends() {
    let mut chain = chain();
    let submitter = &submitters()[0];
    let first = bank::account(
        &StateDelta::new(&chain.state),
        &submitter.public_key().address(),
    )
    .nonce;
    let txs: Vec<SignedTransaction> = (0..AUTHORIZATION_NONCES_MAX as u64)
        .map(|i| {
            let auth = TransferAuthorization {
                nonce: Hash::of("n", &[&i.to_le_bytes()]),
                ..authorization(0, 1, 0, 100)
            };
            let message = settle(&auth, auth.sign(&payer(), "compute"));
            Transaction {
                chain_id: "compute".into(),
                sender: submitter.public_key(),
                nonce: first + i,
                max_fee: Amount::pza(1),
                messages: vec![message],
            }
            .sign(submitter)
        })
        .collect();
    let outcomes = block_at(&mut chain, 10_000, &txs);
    assert!(outcomes.iter().all(|o| matches!(o, Ok((TxStatus::Ok, _)))));
    let next = authorization(9, 1, 0, 1_000);
    let signature = next.sign(&payer(), "compute");
    assert_eq!(
        code(&settle_at(&mut chain, 20, settle(&next, signature))),
        Some(ErrorCode::QueueFull)
    );
    // Once the earlier ones can no longer settle, they are forgotten and there is room.
    assert_eq!(
        settle_at(&mut chain, 100, settle(&next, signature)),
        TxStatus::Ok
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// However often, by whom and when authorizations are submitted, each nonce settles at most
    /// once, never at or after `valid_before` (nor at or before `valid_after`), and the payee
    /// receives exactly what settled.
    #[test]
    fn an_authorization_settles_at_most_once_and_never_after_valid_before(
        windows in prop::collection::vec((0u64..300, 1u64..300, 1u128..1_000), 1..5),
        attempts in prop::collection::vec((0usize..5, 0usize..2, 0u64..60, any::<bool>()), 1..40),
    ) {
        let mut chain = chain();
        let auths: Vec<(TransferAuthorization, Signature)> = windows
            .iter()
            .enumerate()
            .map(|(i, (after, span, amount))| {
                let auth = authorization(i as u8, *amount, *after, after + 1 + span);
                let signature = auth.sign(&payer(), "compute");
                (auth, signature)
            })
            .collect();
        let mut settled = vec![0u32; auths.len()];
        let mut received = 0u128;
        let mut time_s = 0u64;
        for (which, by, advance, twice) in attempts {
            time_s += advance;
            let (auth, signature) = &auths[which % auths.len()];
            let submitter = &submitters()[by];
            let first = submit(&chain, submitter, settle(auth, *signature));
            let mut txs = vec![first.clone()];
            if twice {
                // The same authorization again in the same block, from the same submitter.
                let mut again = first.tx.clone();
                again.nonce += 1;
                txs.push(again.sign(submitter));
            }
            for outcome in block_at(&mut chain, time_s * 1000, &txs) {
                let Ok((TxStatus::Ok, events)) = outcome else { continue };
                prop_assert!(time_s > auth.valid_after && time_s < auth.valid_before,
                    "settled at {} outside ({}, {})", time_s, auth.valid_after, auth.valid_before);
                prop_assert!(events.iter().any(|e| e.kind == "bank.authorization_settled"));
                settled[which % auths.len()] += 1;
                received += auth.amount.base_units();
            }
        }
        prop_assert!(settled.iter().all(|n| *n <= 1), "settled more than once: {:?}", settled);
        prop_assert_eq!(chain.balance(&payee()), Amount::new(received));
    }
}
