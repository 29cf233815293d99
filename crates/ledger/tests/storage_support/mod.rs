//! A chain with storage providers, a blob cut into shards the tests keep in memory, and the
//! messages the storage tests send (shared by `storage.rs` and `storage_escrow.rs`).
#![allow(dead_code)]

use crate::common::*;
use piazza_codec::Encode;
use piazza_ledger::block::{Event, Receipt};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::storage::{self, BlobRecord, Deal};
use piazza_ledger::tx::Message;
use piazza_primitives::blob;
use piazza_primitives::{Address, Amount, Hash, SecretKey};

/// Small epochs so a test runs a deal's life in a few dozen blocks.
pub fn test_params() -> storage::Params {
    storage::Params {
        min_provider_stake: Amount::pza(100),
        price_per_byte_epoch: Amount::new(3),
        epoch_blocks: 4,
        answer_blocks: 2,
        upload_blocks: 2,
        repair_blocks: 3,
        missed_proof_slash: Amount::pza(10),
    }
}

pub const PROVIDER_STAKE: u64 = 200;

pub struct Net {
    pub chain: Chain,
    pub providers: Vec<SecretKey>,
    pub owners: Vec<SecretKey>,
}

/// A blob's shards as its owner would have coded them (any bytes serve: the ledger sees roots).
pub struct Coded {
    pub record: BlobRecord,
    pub shards: Vec<Vec<u8>>,
}

/// A blob of `len_bytes` in `k + m` shards whose bytes follow `seed`.
pub fn coded(len_bytes: u64, k: u16, m: u16, seed: u8) -> Coded {
    let shard_len = blob::shard_len(len_bytes, k).unwrap();
    let shards: Vec<Vec<u8>> = (0..k + m)
        .map(|s| {
            (0..shard_len)
                .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed ^ s as u8))
                .collect()
        })
        .collect();
    Coded {
        record: BlobRecord {
            id: Hash::of("test/blob", &[&[seed], &len_bytes.to_le_bytes()]),
            len_bytes,
            k,
            m,
            shard_len,
            shard_roots: shards.iter().map(|s| blob::root_of(s)).collect(),
        },
        shards,
    }
}

impl Net {
    /// `providers` registered storage providers (each 1 MiB of room) and `owners` funded keys.
    pub fn new(providers: usize, owners: usize) -> Net {
        Net::with_params(providers, owners, test_params())
    }

    pub fn with_params(providers: usize, owners: usize, params: storage::Params) -> Net {
        let providers: Vec<SecretKey> = (0..providers).map(|i| key(1, i)).collect();
        let owners: Vec<SecretKey> = (0..owners).map(|i| key(2, i)).collect();
        let all: Vec<&SecretKey> = providers.iter().chain(owners.iter()).collect();
        let mut chain = Chain::new(&all, Default::default());
        // The genesis document has no storage section yet: the tests set the parameters.
        chain
            .state
            .insert(storage::state_key::params(), params.to_bytes());
        let mut net = Net {
            chain,
            providers,
            owners,
        };
        let txs = (0..net.providers.len())
            .map(|i| {
                let key = net.providers[i].clone();
                net.chain.tx(&key, register_storage(1 << 20))
            })
            .collect();
        let (receipts, _) = net.chain.block(txs);
        assert!(receipts.iter().all(|r| failed(r).is_none()), "{receipts:?}");
        net
    }

    pub fn view(&self) -> StateDelta<'_> {
        StateDelta::new(&self.chain.state)
    }

    pub fn deal(&self, id: u64) -> Deal {
        storage::deal(&self.view(), id).unwrap()
    }

    pub fn bonded(&self, address: &Address) -> Amount {
        staking::bonded(&self.view(), address, Role::Storage)
    }

    pub fn key_of(&self, address: &Address) -> &SecretKey {
        self.providers
            .iter()
            .find(|k| k.public_key().address() == *address)
            .expect("a provider of the test")
    }

    /// Opens a deal for `coded` from owner 0 over `epochs`; returns the receipt.
    pub fn open(&mut self, owner: usize, coded: &Coded, epochs: u64) -> Receipt {
        let key = self.owners[owner].clone();
        self.chain.one(&key, open_deal(&coded.record, epochs)).0
    }

    /// Runs empty blocks up to (and including) `height`; returns the hook events.
    pub fn run_to(&mut self, height: u64) -> Vec<Event> {
        let mut events = Vec::new();
        while self.chain.height < height {
            events.extend(self.chain.block(Vec::new()).1);
        }
        events
    }

    /// The holder's answer to the open challenge on `shard` of `deal`, from the bytes kept.
    pub fn answer(&self, deal: u64, shard: u16, coded: &Coded) -> Message {
        let d = self.deal(deal);
        let challenge = d.shards[usize::from(shard)].challenge.clone().unwrap();
        answer_for(
            deal,
            shard,
            challenge.chunk_index,
            &coded.shards[usize::from(shard)],
        )
    }

    /// Every holder of `deal` with an open challenge answers it correctly, in one block.
    pub fn answer_all(&mut self, deal: u64, coded: &Coded) -> Vec<Receipt> {
        let d = self.deal(deal);
        let mut txs = Vec::new();
        for (index, shard) in d.shards.iter().enumerate() {
            if let (Some(holder), Some(_)) = (shard.provider, &shard.challenge) {
                let message = self.answer(deal, index as u16, coded);
                let key = self.key_of(&holder).clone();
                txs.push(self.chain.tx(&key, message));
            }
        }
        self.chain.block(txs).0
    }
}

/// Key `index` of a family (1: providers, 2: owners).
pub fn key(family: u8, index: usize) -> SecretKey {
    let mut seed = [family; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    SecretKey::from_seed(seed)
}

pub fn register_storage(capacity_bytes: u64) -> Message {
    Message::Storage(storage::Msg::RegisterProvider {
        stake: Amount::pza(PROVIDER_STAKE),
        capacity_bytes,
        endpoint: "http://127.0.0.1:1".into(),
    })
}

pub fn open_deal(record: &BlobRecord, epochs: u64) -> Message {
    Message::Storage(storage::Msg::OpenDeal {
        blob: record.clone(),
        epochs,
    })
}

pub fn answer_for(deal: u64, shard: u16, chunk_index: u64, bytes: &[u8]) -> Message {
    Message::Storage(storage::Msg::AnswerChallenge {
        deal,
        shard,
        chunk_index,
        chunk: blob::chunk(bytes, chunk_index).unwrap().to_vec(),
        path: blob::prove(bytes, chunk_index).unwrap(),
    })
}

/// The sum of an amount attribute over every event of `kind`.
pub fn total(events: &[Event], kind: &str, key: &str) -> u128 {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .filter_map(|e| e.attribute(key))
        .map(|v| v.parse::<u128>().unwrap())
        .sum()
}
