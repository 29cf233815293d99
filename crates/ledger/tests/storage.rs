//! The storage module on the pure executor: deals, epoch challenges and their answers (right,
//! wrong chunk, wrong path, late), slashing, repair and its fee, refunds, errors and bounds,
//! and the bytes a challenge puts on chain.

mod common;
mod storage_support;

use common::*;
use piazza_codec::Encode;
use piazza_ledger::bank;
use piazza_ledger::block::Event;
use piazza_ledger::storage::{self, ChallengeKind, DealStatus};
use piazza_ledger::tx::{Message, Transaction};
use piazza_primitives::blob::{self, MerklePath, CHUNK_BYTES};
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use storage_support::*;

/// A blob whose shards end in a short chunk: 2 × 9,192 bytes in k = 2 → shards of 9,216 bytes
/// (4,096 + 4,096 + 1,024).
const LEN: u64 = 2 * (2 * CHUNK_BYTES as u64 + 1000);

/// Heights of the test parameters: opened at 2, assigned at 3, epochs at 5, 9, 13, …
const OPEN_AT: u64 = 2;
const FIRST_EPOCH: u64 = 5;
const EPOCH: u64 = 4;
const ANSWER: u64 = 2;

fn kinds(events: &[Event], kind: &str) -> Vec<Event> {
    events.iter().filter(|e| e.kind == kind).cloned().collect()
}

/// A network of 5 providers and one owner with a 2 + 1 deal over `epochs`, assigned.
fn deal_net(epochs: u64) -> (Net, Coded) {
    let mut net = Net::new(5, 1);
    let coded = coded(LEN, 2, 1, 1);
    assert_eq!(coded.record.shard_len, 9216);
    assert_eq!(net.chain.height + 1, OPEN_AT);
    let receipt = net.open(0, &coded, epochs);
    assert_eq!(failed(&receipt), None, "{receipt:?}");
    let events = net.run_to(OPEN_AT + 1);
    assert_eq!(kinds(&events, "storage.shard_assigned").len(), 3);
    (net, coded)
}

fn epoch_price(coded: &Coded) -> u128 {
    u128::from(coded.record.shard_len) * test_params().price_per_byte_epoch.base_units()
}

#[test]
fn honest_holders_are_paid_every_epoch_and_the_deal_ends_paid_in_full() {
    let (mut net, coded) = deal_net(2);
    let d = net.deal(0);
    assert_eq!(d.status, DealStatus::Active);
    assert_eq!(d.escrow.base_units(), 2 * 3 * epoch_price(&coded));
    let holders: Vec<Address> = d.shards.iter().map(|s| s.provider.unwrap()).collect();
    let mut distinct = holders.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "one deal's shards go to distinct providers"
    );
    let before: Vec<Amount> = holders.iter().map(|h| net.chain.balance(h)).collect();
    let mut fees = [Amount::ZERO; 3];
    for epoch in 0..2 {
        let events = net.run_to(FIRST_EPOCH + epoch * EPOCH);
        assert_eq!(attribute(&events, "storage.epoch", "challenges"), "3");
        for receipt in net.answer_all(0, &coded) {
            assert_eq!(failed(&receipt), None, "{receipt:?}");
            assert_eq!(
                attribute(&receipt.events, "storage.proved", "kind"),
                "epoch"
            );
            let holder: Address = attribute(&receipt.events, "storage.proved", "provider")
                .parse()
                .unwrap();
            let at = holders.iter().position(|h| *h == holder).unwrap();
            fees[at] = fees[at].checked_add(receipt.fee_paid).unwrap();
        }
    }
    let events = net.run_to(FIRST_EPOCH + 2 * EPOCH);
    assert_eq!(
        attribute(&events, "storage.deal_ended", "reason"),
        "expired"
    );
    assert_eq!(attribute(&events, "storage.deal_ended", "refunded"), "0");
    let d = net.deal(0);
    assert_eq!(
        (d.status, d.paid, d.refunded),
        (DealStatus::Ended, d.escrow, Amount::ZERO)
    );
    for (at, holder) in holders.iter().enumerate() {
        let gained = net.chain.balance(holder).base_units() + fees[at].base_units()
            - before[at].base_units();
        assert_eq!(
            gained,
            2 * epoch_price(&coded),
            "two epochs paid to {holder}"
        );
        assert!(storage::provider_shards(&net.view(), holder).is_empty());
        assert_eq!(
            storage::provider(&net.view(), holder).unwrap().used_bytes,
            0
        );
    }
    assert_eq!(net.chain.balance(&storage::escrow()), Amount::ZERO);
    assert_eq!(storage::deal_of_blob(&net.view(), &coded.record.id), None);
}

/// One way to spoil shard 0's answer.
type Tamper = fn(&mut Spoiled, &Coded, u64);

/// The chunk and path an answer carries.
struct Spoiled {
    chunk: Vec<u8>,
    path: MerklePath,
}

fn flip_chunk_byte(answer: &mut Spoiled, _: &Coded, _: u64) {
    answer.chunk[0] ^= 1;
}

fn flip_sibling(answer: &mut Spoiled, _: &Coded, _: u64) {
    answer.path.siblings[0].0[3] ^= 0x10;
}

fn drop_sibling(answer: &mut Spoiled, _: &Coded, _: u64) {
    answer.path.siblings.pop();
}

fn other_chunk(answer: &mut Spoiled, coded: &Coded, index: u64) {
    let other = (index + 1) % 3;
    answer.chunk = blob::chunk(&coded.shards[0], other).unwrap().to_vec();
    answer.path = blob::prove(&coded.shards[0], other).unwrap();
}

/// Shard 0's holder proves epoch 1, then spoils its epoch-2 answer with `tamper`: it is
/// slashed (the slash becomes the shard's bounty), unpaid, and the shard goes to another
/// provider, which proves the rebuilt shard and is paid the bounty.
fn check_wrong_answer(tamper: Tamper) {
    let (mut net, coded) = deal_net(3);
    net.run_to(FIRST_EPOCH);
    net.answer_all(0, &coded);
    net.run_to(FIRST_EPOCH + EPOCH);
    let d = net.deal(0);
    let holder = d.shards[0].provider.unwrap();
    let challenge = d.shards[0].challenge.clone().unwrap();
    let mut spoiled = Spoiled {
        chunk: blob::chunk(&coded.shards[0], challenge.chunk_index)
            .unwrap()
            .to_vec(),
        path: blob::prove(&coded.shards[0], challenge.chunk_index).unwrap(),
    };
    tamper(&mut spoiled, &coded, challenge.chunk_index);
    let bond = net.bonded(&holder);
    let balance = net.chain.balance(&holder);
    let key = net.key_of(&holder).clone();
    let (receipt, _) = net.chain.one(
        &key,
        Message::Storage(storage::Msg::AnswerChallenge {
            deal: 0,
            shard: 0,
            chunk_index: challenge.chunk_index,
            chunk: spoiled.chunk,
            path: spoiled.path,
        }),
    );
    assert_eq!(
        failed(&receipt),
        None,
        "a wrong answer is recorded, not refused"
    );
    let slash = test_params().missed_proof_slash;
    assert_eq!(
        attribute(&receipt.events, "storage.shard_failed", "reason"),
        "wrong_answer"
    );
    assert_eq!(
        attribute(&receipt.events, "storage.shard_failed", "slashed"),
        slash.base_units().to_string()
    );
    assert_eq!(net.bonded(&holder), bond.checked_sub(slash).unwrap());
    assert_eq!(
        net.chain.balance(&holder),
        balance.checked_sub(receipt.fee_paid).unwrap(),
        "no pay for a wrong answer"
    );
    let d = net.deal(0);
    assert_eq!((d.shards[0].provider, d.shards[0].bounty), (None, slash));
    assert!(storage::provider_shards(&net.view(), &holder).is_empty());
    // The next block's randomness picks the repairer among providers holding no shard of it.
    let (_, events) = net.chain.block(Vec::new());
    assert_eq!(
        attribute(&events, "storage.shard_assigned", "repair"),
        "true"
    );
    let d = net.deal(0);
    let repairer = d.shards[0].provider.unwrap();
    assert!(!d.shards[1..].iter().any(|s| s.provider == Some(repairer)));
    assert_eq!(
        d.shards[0].challenge.as_ref().unwrap().kind,
        ChallengeKind::Repair
    );
    let before = net.chain.balance(&repairer);
    let message = net.answer(0, 0, &coded);
    let key = net.key_of(&repairer).clone();
    let (receipt, _) = net.chain.one(&key, message);
    assert_eq!(failed(&receipt), None);
    assert_eq!(
        attribute(&receipt.events, "storage.proved", "kind"),
        "repair"
    );
    assert_eq!(
        net.chain.balance(&repairer),
        before
            .checked_add(slash)
            .unwrap()
            .checked_sub(receipt.fee_paid)
            .unwrap(),
        "the repairer is paid the bounty"
    );
    let d = net.deal(0);
    assert!(d.shards[0].proven && d.shards[0].bounty.is_zero());
}

#[test]
fn a_wrong_chunk_slashes_and_the_repair_is_paid() {
    check_wrong_answer(flip_chunk_byte);
}

#[test]
fn another_chunk_of_the_shard_is_a_wrong_answer() {
    check_wrong_answer(other_chunk);
}

#[test]
fn a_wrong_path_slashes_and_the_repair_is_paid() {
    check_wrong_answer(flip_sibling);
}

#[test]
fn a_truncated_path_slashes_and_the_repair_is_paid() {
    check_wrong_answer(drop_sibling);
}

#[test]
fn an_answer_at_the_deadline_counts_and_a_late_one_is_refused_after_the_slash() {
    let (mut net, coded) = deal_net(3);
    net.run_to(FIRST_EPOCH);
    net.answer_all(0, &coded);
    let epoch2 = FIRST_EPOCH + EPOCH;
    net.run_to(epoch2 + ANSWER - 1);
    let d = net.deal(0);
    // Shard 1 answers in the deadline's own block; shards 0 and 2 never do.
    let on_time = net.answer(0, 1, &coded);
    let key1 = net.key_of(&d.shards[1].provider.unwrap()).clone();
    let late = net.answer(0, 0, &coded);
    let holder0 = d.shards[0].provider.unwrap();
    let key0 = net.key_of(&holder0).clone();
    let tx = net.chain.tx(&key1, on_time);
    let (receipts, events) = net.chain.block(vec![tx]);
    assert_eq!(net.chain.height, epoch2 + ANSWER);
    assert_eq!(failed(&receipts[0]), None);
    let failures = kinds(&events, "storage.shard_failed");
    assert_eq!(failures.len(), 2, "{events:?}");
    assert!(failures
        .iter()
        .all(|e| e.attribute("reason") == Some("missed")
            && e.attribute("slashed") == Some("10000000000")));
    let (receipt, _) = net.chain.one(&key0, late);
    assert_eq!(failed(&receipt), Some("not_shard_holder"));
    assert_eq!(
        net.bonded(&holder0),
        Amount::pza(PROVIDER_STAKE)
            .checked_sub(test_params().missed_proof_slash)
            .unwrap()
    );
}

#[test]
fn a_holder_that_never_proved_its_shard_is_not_slashed() {
    let (mut net, _coded) = deal_net(3);
    let holders: Vec<Address> = net
        .deal(0)
        .shards
        .iter()
        .map(|s| s.provider.unwrap())
        .collect();
    let events = net.run_to(FIRST_EPOCH + ANSWER);
    let failures = kinds(&events, "storage.shard_failed");
    assert_eq!(failures.len(), 3);
    assert!(failures.iter().all(|e| e.attribute("slashed") == Some("0")));
    for holder in &holders {
        assert_eq!(net.bonded(holder), Amount::pza(PROVIDER_STAKE));
    }
    // Each shard is offered to another provider at once.
    let (_, events) = net.chain.block(Vec::new());
    assert_eq!(kinds(&events, "storage.shard_assigned").len(), 3);
}

#[test]
fn ending_early_refunds_what_was_not_paid() {
    let (mut net, coded) = deal_net(5);
    let owner = net.owners[0].clone();
    let owner_address = owner.public_key().address();
    net.run_to(FIRST_EPOCH);
    net.answer_all(0, &coded);
    let before = net.chain.balance(&owner_address);
    let (receipt, _) = net
        .chain
        .one(&owner, Message::Storage(storage::Msg::EndDeal { deal: 0 }));
    assert_eq!(failed(&receipt), None);
    let events = net.run_to(FIRST_EPOCH + EPOCH);
    assert_eq!(attribute(&events, "storage.deal_ended", "reason"), "ended");
    let d = net.deal(0);
    assert_eq!(d.paid.base_units(), 3 * epoch_price(&coded));
    assert_eq!(d.refunded.base_units(), 2 * 3 * epoch_price(&coded) * 2);
    assert_eq!(
        net.chain.balance(&owner_address),
        before
            .checked_add(d.refunded)
            .unwrap()
            .checked_sub(receipt.fee_paid)
            .unwrap()
    );
    assert_eq!(net.chain.balance(&storage::escrow()), Amount::ZERO);
}

#[test]
fn expiry_refunds_missed_epochs_and_sends_unpaid_bounties_to_the_treasury() {
    let (mut net, coded) = deal_net(2);
    net.run_to(FIRST_EPOCH);
    net.answer_all(0, &coded);
    net.run_to(FIRST_EPOCH + EPOCH);
    // Epoch 2: only shard 0 answers; shards 1 and 2 are slashed and queued for repair.
    let d = net.deal(0);
    let message = net.answer(0, 0, &coded);
    let key = net.key_of(&d.shards[0].provider.unwrap()).clone();
    net.chain.one(&key, message);
    let treasury = net.chain.balance(&bank::treasury());
    let events = net.run_to(FIRST_EPOCH + 2 * EPOCH);
    assert_eq!(kinds(&events, "storage.shard_failed").len(), 2);
    let d = net.deal(0);
    assert_eq!(d.status, DealStatus::Ended);
    assert_eq!(d.paid.base_units(), 4 * epoch_price(&coded));
    assert_eq!(d.refunded.base_units(), 2 * epoch_price(&coded));
    assert_eq!(d.paid.checked_add(d.refunded).unwrap(), d.escrow);
    let bounties = 2 * test_params().missed_proof_slash.base_units();
    assert_eq!(
        attribute(&events, "storage.deal_ended", "bounties_to_treasury"),
        bounties.to_string()
    );
    assert_eq!(
        net.chain.balance(&bank::treasury()).base_units(),
        treasury.base_units() + bounties
    );
    assert_eq!(net.chain.balance(&storage::escrow()), Amount::ZERO);
}

/// A message that fails with `code` when `who` sends it.
fn check_refused(net: &mut Net, who: &SecretKey, message: Message, code: &str) {
    let (receipt, _) = net.chain.one(who, message);
    assert_eq!(failed(&receipt), Some(code), "{receipt:?}");
}

#[test]
fn refusals_carry_stable_codes() {
    let (mut net, coded) = deal_net(3);
    let owner = net.owners[0].clone();
    let stranger = net.providers[0].clone();
    let d = net.deal(0);
    let holder = net.key_of(&d.shards[0].provider.unwrap()).clone();
    let outsider = net
        .providers
        .iter()
        .find(|k| {
            !d.shards
                .iter()
                .any(|s| s.provider == Some(k.public_key().address()))
        })
        .unwrap()
        .clone();
    // No challenge is open before the first epoch.
    let early = answer_for(0, 0, 0, &coded.shards[0]);
    check_refused(&mut net, &holder, early, "challenge_closed");
    net.run_to(FIRST_EPOCH);
    let answer = net.answer(0, 0, &coded);
    check_refused(&mut net, &outsider, answer.clone(), "not_shard_holder");
    let (receipt, _) = net.chain.one(&holder, answer.clone());
    assert_eq!(failed(&receipt), None);
    check_refused(&mut net, &holder, answer, "challenge_closed");
    check_refused(&mut net, &owner, open_deal(&coded.record, 1), "blob_kept");
    let end = |deal| Message::Storage(storage::Msg::EndDeal { deal });
    check_refused(&mut net, &stranger, end(0), "not_deal_owner");
    check_refused(&mut net, &owner, end(9), "unknown_deal");
    check_refused(
        &mut net,
        &holder,
        register_storage(1 << 20),
        "storage_provider_exists",
    );
    check_refused(
        &mut net,
        &holder,
        Message::Storage(storage::Msg::ExitProvider),
        "storage_provider_busy",
    );
    let update = |capacity_bytes| {
        Message::Storage(storage::Msg::UpdateProvider {
            capacity_bytes,
            endpoint: "http://127.0.0.1:2".into(),
        })
    };
    check_refused(&mut net, &owner, update(1), "not_a_storage_provider");
    check_refused(&mut net, &holder, update(1), "storage_provider_busy");
    // More shards than providers.
    let wide = coded_wide();
    check_refused(&mut net, &owner, open_deal(&wide.record, 1), "no_provider");
    // Stake below the minimum.
    let poor = SecretKey::from_seed([200; 32]);
    let (receipt, _) = net.chain.one(
        &owner,
        Message::Bank(bank::Msg::Send {
            to: poor.public_key().address(),
            amount: Amount::pza(50),
        }),
    );
    assert_eq!(failed(&receipt), None);
    check_refused(
        &mut net,
        &poor,
        Message::Storage(storage::Msg::RegisterProvider {
            stake: Amount::ZERO,
            capacity_bytes: 1,
            endpoint: "http://127.0.0.1:3".into(),
        }),
        "stake_below_minimum",
    );
}

fn coded_wide() -> Coded {
    coded(6 * 64, 4, 2, 9)
}

#[test]
fn malformed_records_and_answers_are_invalid_before_any_state() {
    let good = coded(LEN, 2, 1, 1).record;
    let cases: Vec<(&str, storage::BlobRecord, u64, &str)> = vec![
        (
            "no parity",
            storage::BlobRecord {
                m: 0,
                shard_roots: vec![Hash::ZERO; 2],
                ..good.clone()
            },
            1,
            "bad_blob_record",
        ),
        (
            "no data",
            storage::BlobRecord {
                k: 0,
                ..good.clone()
            },
            1,
            "bad_blob_record",
        ),
        (
            "a root missing",
            storage::BlobRecord {
                shard_roots: vec![Hash::ZERO; 2],
                ..good.clone()
            },
            1,
            "bad_blob_record",
        ),
        (
            "shard length",
            storage::BlobRecord {
                shard_len: good.shard_len + 64,
                ..good.clone()
            },
            1,
            "bad_blob_record",
        ),
        (
            "empty",
            storage::BlobRecord {
                len_bytes: 0,
                shard_len: 0,
                ..good.clone()
            },
            1,
            "bad_blob_record",
        ),
        (
            "too large",
            storage::BlobRecord {
                len_bytes: storage::BLOB_BYTES_MAX + 1,
                shard_len: blob::shard_len(storage::BLOB_BYTES_MAX + 1, 2).unwrap(),
                ..good.clone()
            },
            1,
            "bad_blob_record",
        ),
        (
            "too many shards",
            storage::BlobRecord {
                k: 30,
                m: 3,
                shard_roots: vec![Hash::ZERO; 33],
                shard_len: blob::shard_len(LEN, 30).unwrap(),
                ..good.clone()
            },
            1,
            "bad_blob_record",
        ),
        ("no epochs", good.clone(), 0, "invalid_message"),
        (
            "too many epochs",
            good.clone(),
            storage::DEAL_EPOCHS_MAX + 1,
            "invalid_message",
        ),
    ];
    for (what, record, epochs, code) in cases {
        let refused = open_deal(&record, epochs).check_stateless().unwrap_err();
        assert_eq!(refused.code.name(), code, "{what}");
    }
    assert!(open_deal(&good, 1).check_stateless().is_ok());
    let empty = Message::Storage(storage::Msg::AnswerChallenge {
        deal: 0,
        shard: 0,
        chunk_index: 0,
        chunk: Vec::new(),
        path: MerklePath::default(),
    });
    assert_eq!(
        empty.check_stateless().unwrap_err().code.name(),
        "invalid_message"
    );
}

#[test]
fn an_owners_deal_list_is_bounded() {
    let mut net = Net::new(3, 1);
    let owner = net.owners[0].clone();
    let txs = (0..storage::DEALS_PER_OWNER_MAX)
        .map(|i| {
            let record = coded(64, 2, 1, i as u8).record;
            net.chain.tx(&owner, open_deal(&record, 1))
        })
        .collect();
    let (receipts, _) = net.chain.block(txs);
    assert!(receipts.iter().all(|r| failed(r).is_none()));
    let one_more = coded(64, 2, 1, 255).record;
    check_refused(&mut net, &owner, open_deal(&one_more, 1), "queue_full");
}

#[test]
fn the_chains_deals_and_providers_are_bounded() {
    let owners = storage::ACTIVE_DEALS_MAX / storage::DEALS_PER_OWNER_MAX;
    let mut net = Net::new(3, owners + 1);
    let mut seed = 0u64;
    for owner in 0..owners {
        let key = net.owners[owner].clone();
        let txs = (0..storage::DEALS_PER_OWNER_MAX)
            .map(|_| {
                seed += 1;
                let mut record = coded(64, 2, 1, 0).record;
                record.id = Hash::of("test/bound", &[&seed.to_le_bytes()]);
                net.chain.tx(&key, open_deal(&record, 1_000))
            })
            .collect();
        let (receipts, _) = net.chain.block(txs);
        assert!(receipts.iter().all(|r| failed(r).is_none()));
    }
    let last = net.owners[owners].clone();
    let one_more = coded(64, 2, 1, 7).record;
    check_refused(&mut net, &last, open_deal(&one_more, 1), "queue_full");
    // The registry: room for `STORAGE_PROVIDERS_MAX`, not one more.
    let mut net = Net::new(storage::STORAGE_PROVIDERS_MAX, 0);
    let extra = key(3, 0);
    let funder = net.providers[0].clone();
    let (receipt, _) = net.chain.one(
        &funder,
        Message::Bank(bank::Msg::Send {
            to: extra.public_key().address(),
            amount: Amount::pza(1_000),
        }),
    );
    assert_eq!(failed(&receipt), None);
    check_refused(&mut net, &extra, register_storage(1 << 20), "queue_full");
}

#[test]
fn a_full_provider_is_left_out_and_a_deal_nobody_can_take_is_refunded() {
    let mut net = Net::new(3, 1);
    let owner = net.owners[0].clone();
    let address = owner.public_key().address();
    // Shards of 64 KiB: more than every provider's room once it shrinks to 1 KiB.
    for key in net.providers.clone() {
        let update = Message::Storage(storage::Msg::UpdateProvider {
            capacity_bytes: 1024,
            endpoint: "http://127.0.0.1:4".into(),
        });
        assert_eq!(failed(&net.chain.one(&key, update).0), None);
    }
    let big = coded(2 * 65_536, 2, 1, 3);
    let before = net.chain.balance(&address);
    let receipt = net.open(0, &big, 1);
    assert_eq!(failed(&receipt), None);
    let (_, events) = net.chain.block(Vec::new());
    assert_eq!(
        attribute(&events, "storage.deal_ended", "reason"),
        "unassigned"
    );
    assert_eq!(
        net.chain.balance(&address),
        before.checked_sub(receipt.fee_paid).unwrap()
    );
}

/// Bytes on chain for storage proofs: one answer transaction per held shard per epoch (the
/// challenges themselves are drawn by the block hooks from the header's randomness and cost
/// no transaction bytes). Printed for a 100 MB blob in 4 + 2 shards.
#[test]
fn bytes_on_chain_per_challenge_and_per_epoch() {
    let len_bytes: u64 = 100_000_000;
    let (k, m) = (4u16, 2u16);
    let shard_len = blob::shard_len(len_bytes, k).unwrap();
    let chunks = blob::chunk_count(shard_len);
    let depth = 64 - (chunks - 1).leading_zeros() as usize;
    let key = SecretKey::from_seed([1; 32]);
    let tx = Transaction {
        chain_id: "piazza-devnet".into(),
        sender: key.public_key(),
        nonce: 1_000,
        max_fee: Amount::pza(1),
        messages: vec![Message::Storage(storage::Msg::AnswerChallenge {
            deal: 12,
            shard: 3,
            chunk_index: chunks / 2,
            chunk: vec![7; CHUNK_BYTES],
            path: MerklePath {
                siblings: vec![Hash::ZERO; depth],
            },
        })],
    }
    .sign(&key);
    let per_challenge = tx.encoded_len();
    // The transaction's envelope (chain id, sender, nonce, fee, signature) plus the message:
    // module and message tags, deal, shard, chunk index, the chunk and its path, each length
    // prefixed.
    let message_bytes = tx.tx.messages[0].to_bytes().len();
    let envelope = Transaction {
        messages: Vec::new(),
        ..tx.tx.clone()
    }
    .sign(&key)
    .encoded_len();
    assert_eq!(
        message_bytes,
        1 + 1 + 8 + 2 + 8 + 4 + CHUNK_BYTES + 4 + 32 * depth
    );
    assert_eq!(per_challenge, envelope + message_bytes);
    assert!(per_challenge < piazza_ledger::tx::TX_BYTES_MAX);
    let per_epoch = per_challenge * usize::from(k + m);
    println!(
        "storage proofs: {len_bytes}-byte blob, k+m = {k}+{m}, shards of {shard_len} bytes \
         ({chunks} chunks, {depth} siblings): {per_challenge} bytes on chain per challenge, \
         {per_epoch} bytes per deal per epoch"
    );
}

#[test]
fn the_most_answers_a_transaction_has_room_for_fit_at_their_largest() {
    assert_eq!(storage::ANSWERS_PER_TX_MAX, 11);
    let key = SecretKey::from_seed([2; 32]);
    let answer = Message::Storage(storage::Msg::AnswerChallenge {
        deal: u64::MAX,
        shard: u16::MAX,
        chunk_index: u64::MAX,
        chunk: vec![1; CHUNK_BYTES],
        path: MerklePath {
            siblings: vec![Hash::ZERO; blob::MERKLE_PATH_SIBLINGS_MAX],
        },
    });
    assert_eq!(answer.to_bytes().len(), storage::ANSWER_BYTES_MAX);
    let tx = |count: usize| {
        Transaction {
            chain_id: "c".repeat(piazza_ledger::tx::CHAIN_ID_BYTES_MAX),
            sender: key.public_key(),
            nonce: u64::MAX,
            max_fee: Amount::new(u128::MAX),
            messages: vec![answer.clone(); count],
        }
        .sign_as_grantee(&key)
    };
    let most = tx(storage::ANSWERS_PER_TX_MAX);
    assert!(most.encoded_len() <= piazza_ledger::tx::TX_BYTES_MAX);
    assert!(most.encoded_len() + storage::ANSWER_BYTES_MAX > piazza_ledger::tx::TX_BYTES_MAX);
    assert!(tx(storage::ANSWERS_PER_TX_MAX + 1).encoded_len() > piazza_ledger::tx::TX_BYTES_MAX);
}

#[test]
fn a_repair_never_goes_back_to_the_provider_that_failed_the_shard() {
    // Three providers for a 2 + 1 deal: once one fails its shard, it is the only provider
    // holding no shard of the deal, so only the exclusion keeps the shard from it.
    let mut net = Net::new(3, 1);
    let coded = coded(LEN, 2, 1, 1);
    assert_eq!(failed(&net.open(0, &coded, 3)), None);
    net.run_to(FIRST_EPOCH);
    net.answer_all(0, &coded);
    net.run_to(FIRST_EPOCH + EPOCH);
    let failing = net.deal(0).shards[0].provider.unwrap();
    let mut answers = Vec::new();
    for shard in 1..3 {
        let message = net.answer(0, shard, &coded);
        let holder = net.deal(0).shards[usize::from(shard)].provider.unwrap();
        answers.push(net.chain.tx(&net.key_of(&holder).clone(), message));
    }
    let (receipts, _) = net.chain.block(answers);
    assert!(receipts.iter().all(|r| failed(r).is_none()));
    let events = net.run_to(FIRST_EPOCH + EPOCH + ANSWER);
    assert_eq!(
        attribute(&events, "storage.shard_failed", "provider"),
        failing.to_string()
    );
    // The repair draw finds nobody, now and at the next epoch's retry.
    let events = net.run_to(FIRST_EPOCH + 2 * EPOCH + 1);
    assert_eq!(net.deal(0).shards[0].provider, None);
    assert!(
        kinds(&events, "storage.shard_assigned").is_empty(),
        "{events:?}"
    );
    assert!(
        kinds(&events, "storage.repair_waiting").len() >= 2,
        "{events:?}"
    );
    assert!(storage::provider_shards(&net.view(), &failing).is_empty());
}

#[test]
fn a_confirmed_upload_starts_the_first_epoch_at_the_next_block() {
    // A long upload window: without a confirmation the first epoch is 20 blocks away.
    let params = storage::Params {
        upload_blocks: 20,
        ..test_params()
    };
    let mut net = Net::with_params(5, 2, params);
    let coded = coded(LEN, 2, 1, 1);
    let receipt = net.open(0, &coded, 3);
    assert_eq!(failed(&receipt), None, "{receipt:?}");
    let events = net.run_to(OPEN_AT + 1);
    assert_eq!(kinds(&events, "storage.shard_assigned").len(), 3);
    let scheduled = net.deal(0).next_epoch_height;
    assert_eq!(scheduled, OPEN_AT + 1 + 20);

    let (owner, stranger) = (net.owners[0].clone(), net.owners[1].clone());
    let confirm = Message::Storage(storage::Msg::ConfirmUpload { deal: 0 });
    check_refused(&mut net, &stranger, confirm.clone(), "not_deal_owner");
    check_refused(
        &mut net,
        &owner,
        Message::Storage(storage::Msg::ConfirmUpload { deal: 9 }),
        "unknown_deal",
    );
    let (receipt, _) = net.chain.one(&owner, confirm.clone());
    assert_eq!(failed(&receipt), None, "{receipt:?}");
    let confirmed_at = net.chain.height;
    let first = net.deal(0).next_epoch_height;
    assert_eq!(first, confirmed_at + 1);
    assert_eq!(
        attribute(
            &receipt.events,
            "storage.upload_confirmed",
            "first_epoch_height"
        ),
        first.to_string()
    );
    // The first epoch challenges every shard in the next block; a second confirmation there
    // is refused: the epochs have started.
    let (receipt, events) = net.chain.one(&owner, confirm);
    assert_eq!(net.chain.height, first);
    assert_eq!(failed(&receipt), Some("deal_started"), "{receipt:?}");
    let epoch = kinds(&events, "storage.epoch");
    assert_eq!(epoch.len(), 1);
    assert_eq!(epoch[0].attribute("epoch"), Some("1"));
    assert_eq!(epoch[0].attribute("challenges"), Some("3"));
    net.answer_all(0, &coded);
    let events = net.run_to(first + ANSWER);
    assert!(kinds(&events, "storage.shard_failed").is_empty());
    let d = net.deal(0);
    assert!(d.shards.iter().all(|s| s.proven));
    // The epochs go on from the new height; the old one holds nothing.
    assert_eq!(d.epochs_done, 1);
    assert_eq!(d.next_epoch_height, first + EPOCH);
    assert!(first + EPOCH < scheduled);
}
