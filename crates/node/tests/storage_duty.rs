//! The answer to a storage challenge is its holder's duty (`piazza_node::app::priority`): the
//! mempool keeps room for it and reaps it first, as it does for a provider's result or an
//! auditor's move. The same message from anyone else, for another chunk, on a shard without an
//! open challenge or a deal that is not active, is ordinary.

use piazza_codec::Encode;
use piazza_ledger::bank;
use piazza_ledger::storage::{self, BlobRecord, Challenge, ChallengeKind, Deal, DealStatus, Shard};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_mempool::Priority;
use piazza_node::app::priority;
use piazza_primitives::blob::MerklePath;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use std::collections::BTreeMap;

const DEAL: u64 = 4;
const CHUNK: u64 = 2;

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

/// Deal [`DEAL`]: shard 0 held by `holder` with `challenge` open on it, shard 1 by nobody.
fn deal(holder: Address, status: DealStatus, challenge: Option<Challenge>) -> Deal {
    Deal {
        id: DEAL,
        owner: Address([9; 20]),
        blob: BlobRecord {
            id: Hash::of("test/blob", &[b"duty"]),
            len_bytes: 1 << 20,
            k: 1,
            m: 1,
            shard_len: 1 << 20,
            shard_roots: vec![Hash::ZERO; 2],
        },
        epochs: 3,
        price_per_byte_epoch: Amount::new(1),
        escrow: Amount::new(1 << 22),
        paid: Amount::ZERO,
        opened_height: 1,
        epochs_done: 1,
        next_epoch_height: 20,
        end_requested: false,
        status,
        refunded: Amount::ZERO,
        shards: vec![
            Shard {
                provider: Some(holder),
                challenge,
                ..Shard::default()
            },
            Shard::default(),
        ],
    }
}

fn open_challenge() -> Option<Challenge> {
    Some(Challenge {
        kind: ChallengeKind::Epoch,
        chunk_index: CHUNK,
        issued_height: 10,
        deadline_height: 15,
    })
}

fn answer(deal: u64, shard: u16, chunk_index: u64) -> Message {
    Message::Storage(storage::Msg::AnswerChallenge {
        deal,
        shard,
        chunk_index,
        chunk: vec![1; 64],
        path: MerklePath {
            siblings: Vec::new(),
        },
    })
}

fn tx(sender: &SecretKey, messages: Vec<Message>) -> SignedTransaction {
    Transaction {
        chain_id: "piazza-test".into(),
        sender: sender.public_key(),
        nonce: 0,
        max_fee: Amount::pza(1),
        messages,
    }
    .sign(sender)
}

/// The priority of `sender`'s transaction of `messages` in a state holding `deal`.
fn check(deal: &Deal, sender: &SecretKey, messages: Vec<Message>, expect: Priority) {
    let state: BTreeMap<Vec<u8>, Vec<u8>> =
        BTreeMap::from([(storage::state_key::deal(deal.id), deal.to_bytes())]);
    let got = priority(&state, &tx(sender, messages.clone()));
    assert_eq!(
        got,
        expect,
        "{messages:?} from {}",
        sender.public_key().address()
    );
}

#[test]
fn only_the_holders_answer_to_its_open_challenge_is_a_duty() {
    let (holder, other) = (key(1), key(2));
    let active = deal(
        holder.public_key().address(),
        DealStatus::Active,
        open_challenge(),
    );
    check(
        &active,
        &holder,
        vec![answer(DEAL, 0, CHUNK)],
        Priority::Duty,
    );
    // Two answers of the holder's in one transaction (the same challenge, sent twice).
    let both = vec![answer(DEAL, 0, CHUNK), answer(DEAL, 0, CHUNK)];
    check(&active, &holder, both, Priority::Duty);

    check(
        &active,
        &other,
        vec![answer(DEAL, 0, CHUNK)],
        Priority::Ordinary,
    );
    check(
        &active,
        &holder,
        vec![answer(DEAL, 0, CHUNK + 1)],
        Priority::Ordinary,
    );
    check(
        &active,
        &holder,
        vec![answer(DEAL, 1, CHUNK)],
        Priority::Ordinary,
    );
    check(
        &active,
        &holder,
        vec![answer(DEAL, 7, CHUNK)],
        Priority::Ordinary,
    );
    check(
        &active,
        &holder,
        vec![answer(DEAL + 1, 0, CHUNK)],
        Priority::Ordinary,
    );
    let transfer = Message::Bank(bank::Msg::Send {
        to: Address([3; 20]),
        amount: Amount::new(1),
    });
    check(
        &active,
        &holder,
        vec![answer(DEAL, 0, CHUNK), transfer],
        Priority::Ordinary,
    );

    let unchallenged = deal(holder.public_key().address(), DealStatus::Active, None);
    check(
        &unchallenged,
        &holder,
        vec![answer(DEAL, 0, CHUNK)],
        Priority::Ordinary,
    );
    let ended = deal(
        holder.public_key().address(),
        DealStatus::Ended,
        open_challenge(),
    );
    check(
        &ended,
        &holder,
        vec![answer(DEAL, 0, CHUNK)],
        Priority::Ordinary,
    );
}
