//! What the storage hooks cost: a chain keeping `DEALS` deals of 4 + 2 one-chunk shards, timed
//! block by block (opening, assignment, an epoch's challenges, the answers) and the storage
//! state it holds. Prints numbers; asserts only what the blocks did (every shard challenged, every answer
//! paid), never a time.

mod common;
mod storage_support;

use common::*;
use piazza_ledger::storage;
use piazza_primitives::Hash;
use std::time::Instant;
use storage_support::*;

const DEALS: usize = 256;
const PROVIDERS: usize = 12;

#[test]
fn storage_hooks_at_load_print_their_cost() {
    let owners = DEALS.div_ceil(storage::DEALS_PER_OWNER_MAX);
    let mut net = Net::new(PROVIDERS, owners);
    let mut blobs = Vec::new();
    let mut txs = Vec::new();
    for i in 0..DEALS {
        let mut c = coded(4 * 4096, 4, 2, i as u8);
        c.record.id = Hash::of("test/load", &[&(i as u64).to_le_bytes()]);
        let key = net.owners[i / storage::DEALS_PER_OWNER_MAX].clone();
        txs.push(net.chain.tx(&key, open_deal(&c.record, 100)));
        blobs.push(c);
    }
    let started = Instant::now();
    let (receipts, _) = net.chain.block(txs);
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(receipts.iter().all(|r| failed(r).is_none()));
    let started = Instant::now();
    let (_, events) = net.chain.block(Vec::new());
    let assign_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "storage.shard_assigned")
            .count(),
        DEALS * 6
    );
    let first_epoch = net.chain.height + test_params().upload_blocks;
    net.run_to(first_epoch - 1);
    let started = Instant::now();
    let (_, events) = net.chain.block(Vec::new());
    let epoch_ms = started.elapsed().as_secs_f64() * 1e3;
    let challenged: usize = events
        .iter()
        .filter(|e| e.kind == "storage.epoch")
        .map(|e| e.attribute("challenges").unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(challenged, DEALS * 6);
    let mut answers = Vec::new();
    for (id, c) in blobs.iter().enumerate() {
        let d = net.deal(id as u64);
        for (index, shard) in d.shards.iter().enumerate() {
            let message = net.answer(id as u64, index as u16, c);
            let key = net.key_of(&shard.provider.unwrap()).clone();
            answers.push(net.chain.tx(&key, message));
        }
    }
    let answer_bytes: usize = answers.iter().map(|t| t.encoded_len()).sum();
    let started = Instant::now();
    let (receipts, _) = net.chain.block(answers);
    let answers_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(receipts.iter().all(|r| failed(r).is_none()));
    let state_bytes: usize = net
        .chain
        .state
        .iter()
        .filter(|(k, _)| k.starts_with(b"storage/"))
        .map(|(k, v)| k.len() + v.len())
        .sum();
    println!(
        "storage load: {DEALS} deals of 4+2 shards on {PROVIDERS} providers: open block \
         {open_ms:.1} ms, assignment block {assign_ms:.1} ms, epoch block ({challenged} \
         challenges) {epoch_ms:.1} ms, answers block ({} answers, {answer_bytes} bytes) \
         {answers_ms:.1} ms; storage state {state_bytes} bytes ({} per deal)",
        DEALS * 6,
        state_bytes / DEALS
    );
}
