//! The whole storage protocol in one process: the ledger's executor makes the blocks (the
//! `storage` module assigns, challenges, pays, slashes and repairs), eight storage providers
//! each run the real shard service on 127.0.0.1 and the real daemon pass, and an owner puts a
//! blob through a deal. Shows: epochs pass with proofs (and pay); with `m` providers gone (one
//! killed, one that deleted its shard) the blob still comes back equal; the two are slashed;
//! repairs put all `k + m` shards back on live providers, proven. Also measures the bytes a
//! challenge answer and an epoch put on chain.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use piazza_blob::erasure;
use piazza_blob::store::{ShardKey, ShardStore};
use piazza_codec::Encode;
use piazza_ledger::block::{Receipt, TxStatus};
use piazza_ledger::executor::{init_chain, BlockExecutor};
use piazza_ledger::genesis::Genesis;
use piazza_ledger::module::BlockContext;
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::storage::{self, BlobRecord, Deal, DealStatus};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use piazza_storage_daemon::daemon::{
    self, Answer, ChainAssignments, Challenge, Daemon, DaemonConfig, Duty, StorageChain,
};
use piazza_storage_daemon::fetch::{self, Holder};
use piazza_storage_daemon::rpc::{answer_message, manifest_of};
use piazza_storage_daemon::server::{ServerHandle, ServerLimits};
use piazza_storage_daemon::service::ShardService;

const CHAIN_ID: &str = "storage-e2e";
const PROVIDERS: usize = 8;
const K: u16 = 4;
const M: u16 = 2;
/// Enough blocks for every step below several times over; a step that needs more fails.
const BLOCKS_MAX: u64 = 400;

/// The executor as a chain, with a pool of transactions for the next block.
struct Ledger {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    height: u64,
    validator: SecretKey,
    nonces: BTreeMap<Address, u64>,
    pool: Vec<SignedTransaction>,
    receipts: Vec<Receipt>,
    /// Encoded bytes of every answer transaction included, by height.
    answer_bytes: BTreeMap<u64, Vec<usize>>,
}

impl Ledger {
    fn new(funded: &[&SecretKey], params: storage::Params) -> Ledger {
        let validator = SecretKey::from_seed([99; 32]);
        let mut accounts: Vec<serde_json::Value> = funded
            .iter()
            .map(|k| serde_json::json!({"address": k.public_key().address(), "balance": Amount::pza(10_000)}))
            .collect();
        let validator_address = validator.public_key().address();
        accounts.push(
            serde_json::json!({"address": validator_address, "balance": Amount::pza(10_000)}),
        );
        let genesis: Genesis = serde_json::from_value(serde_json::json!({
            "chain_id": CHAIN_ID,
            "genesis_time_ms": 0,
            "accounts": accounts,
            "bonds": [{"address": validator_address, "role": "validator", "amount": Amount::pza(1_000)}],
        }))
        .expect("genesis");
        let mut state: BTreeMap<Vec<u8>, Vec<u8>> = init_chain(&genesis)
            .expect("init_chain")
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        state.insert(storage::state_key::params(), params.to_bytes());
        Ledger {
            state,
            height: 0,
            validator,
            nonces: BTreeMap::new(),
            pool: Vec::new(),
            receipts: Vec::new(),
            answer_bytes: BTreeMap::new(),
        }
    }

    fn view(&self) -> StateDelta<'_> {
        StateDelta::new(&self.state)
    }

    fn send(&mut self, key: &SecretKey, messages: Vec<Message>) {
        let nonce = self.nonces.entry(key.public_key().address()).or_default();
        let tx = Transaction {
            chain_id: CHAIN_ID.into(),
            sender: key.public_key(),
            nonce: *nonce,
            max_fee: Amount::pza(1),
            messages,
        }
        .sign(key);
        *nonce += 1;
        self.pool.push(tx);
    }

    fn block(&mut self) {
        self.height += 1;
        let context = BlockContext {
            chain_id: CHAIN_ID.into(),
            height: self.height,
            time_ms: self.height * 1_000,
            randomness: Hash::of("e2e/randomness", &[&self.height.to_le_bytes()]),
            proposer: self.validator.public_key(),
        };
        let txs = std::mem::take(&mut self.pool);
        let outcome = {
            let mut executor = BlockExecutor::begin(&self.state, context);
            for tx in &txs {
                executor.apply_tx(tx, false).expect("admissible");
            }
            executor.finish()
        };
        for (k, v) in outcome.writes {
            match v {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        for (tx, receipt) in txs.iter().zip(&outcome.receipts) {
            if let TxStatus::Failed { code, message } = &receipt.status {
                panic!("tx failed at {}: {code} {message}", self.height);
            }
            let answers = tx
                .tx
                .messages
                .iter()
                .filter(|m| matches!(m, Message::Storage(storage::Msg::AnswerChallenge { .. })))
                .count();
            if answers == 1 && tx.tx.messages.len() == 1 {
                let bytes = tx.to_bytes().len();
                self.answer_bytes
                    .entry(self.height)
                    .or_default()
                    .push(bytes);
            }
        }
        self.receipts.extend(outcome.receipts);
    }

    fn deal(&self, id: u64) -> Deal {
        storage::deal(&self.view(), id).expect("deal")
    }

    fn bonded(&self, address: &Address) -> Amount {
        staking::bonded(&self.view(), address, Role::Storage)
    }
}

/// One provider's view of the shared ledger.
struct LedgerChain {
    ledger: Arc<Mutex<Ledger>>,
    key: SecretKey,
}

impl LedgerChain {
    fn duty_of(&self, view: &StateDelta<'_>, deal: &Deal, shard: u16) -> Option<Duty> {
        let me = self.key.public_key().address();
        let held = deal.shards.get(usize::from(shard))?;
        if held.provider != Some(me) || deal.status != DealStatus::Active {
            return None;
        }
        let holders = deal
            .shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let endpoint = storage::provider(view, &s.provider?)?.endpoint;
                Some(Holder {
                    index: i as u16,
                    endpoint,
                })
            })
            .collect();
        Some(Duty {
            deal: deal.id,
            shard,
            manifest: manifest_of(&deal.blob),
            challenge: held.challenge.as_ref().map(|c| Challenge {
                chunk_index: c.chunk_index,
                issued_height: c.issued_height,
                deadline_height: c.deadline_height,
            }),
            holders,
        })
    }
}

#[async_trait::async_trait]
impl StorageChain for LedgerChain {
    async fn duties(&self) -> Result<Vec<Duty>, String> {
        let ledger = self.ledger.lock().unwrap();
        let view = ledger.view();
        let me = self.key.public_key().address();
        Ok(storage::provider_shards(&view, &me)
            .into_iter()
            .filter_map(|r| self.duty_of(&view, &storage::deal(&view, r.deal)?, r.shard))
            .collect())
    }

    async fn duty(&self, deal: u64, shard: u16) -> Result<Option<Duty>, String> {
        let ledger = self.ledger.lock().unwrap();
        let view = ledger.view();
        Ok(storage::deal(&view, deal).and_then(|d| self.duty_of(&view, &d, shard)))
    }

    async fn answer(&self, answers: Vec<Answer>) -> Result<(), String> {
        let messages = answers.into_iter().map(answer_message).collect();
        self.ledger.lock().unwrap().send(&self.key, messages);
        Ok(())
    }
}

struct Provider {
    address: Address,
    store: Arc<ShardStore>,
    daemon: Daemon<LedgerChain>,
    handle: Option<ServerHandle>,
    _dir: tempfile::TempDir,
}

impl Provider {
    fn live(&self) -> bool {
        self.handle.is_some()
    }
}

/// Daemon passes of the live providers, then one block.
async fn step(ledger: &Arc<Mutex<Ledger>>, providers: &mut [Provider]) {
    for p in providers.iter_mut().filter(|p| p.live()) {
        let report = p.daemon.pass().await.expect("pass");
        for failure in report.failures {
            eprintln!("{}: {failure}", p.address);
        }
    }
    ledger.lock().unwrap().block();
}

/// Steps until `done` holds; fails past [`BLOCKS_MAX`].
async fn until(
    ledger: &Arc<Mutex<Ledger>>,
    providers: &mut [Provider],
    what: &str,
    done: impl Fn(&Ledger) -> bool,
) {
    loop {
        if done(&ledger.lock().unwrap()) {
            return;
        }
        {
            let l = ledger.lock().unwrap();
            assert!(
                l.height < BLOCKS_MAX,
                "not reached within {BLOCKS_MAX} blocks: {what}; deals: {:?}",
                (0..4)
                    .filter_map(|id| storage::deal(&l.view(), id))
                    .collect::<Vec<_>>()
            );
        }
        step(ledger, providers).await;
    }
}

fn holders_of(ledger: &Ledger, deal: u64) -> Vec<Holder> {
    let d = ledger.deal(deal);
    d.shards
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Some(Holder {
                index: i as u16,
                endpoint: storage::provider(&ledger.view(), &s.provider?)?.endpoint,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_prove_lose_m_get_repair_and_slash() {
    let params = storage::Params {
        min_provider_stake: Amount::pza(100),
        price_per_byte_epoch: Amount::new(1),
        epoch_blocks: 6,
        answer_blocks: 3,
        upload_blocks: 3,
        repair_blocks: 5,
        missed_proof_slash: Amount::pza(10),
    };
    let keys: Vec<SecretKey> = (0..PROVIDERS)
        .map(|i| SecretKey::from_seed([20 + i as u8; 32]))
        .collect();
    let owner = SecretKey::from_seed([70; 32]);
    let funded: Vec<&SecretKey> = keys.iter().chain([&owner]).collect();
    let ledger = Arc::new(Mutex::new(Ledger::new(&funded, params)));

    // Eight storage providers: a shard service each, registered at its address.
    let mut providers = Vec::new();
    for key in &keys {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ShardStore::open(dir.path(), 64 << 20).unwrap());
        let chain = Arc::new(LedgerChain {
            ledger: Arc::clone(&ledger),
            key: key.clone(),
        });
        let assignments = Arc::new(ChainAssignments(Arc::clone(&chain)));
        let service = ShardService::new(Arc::clone(&store), assignments, ServerLimits::default());
        let handle = service.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        ledger.lock().unwrap().send(
            key,
            vec![Message::Storage(storage::Msg::RegisterProvider {
                stake: Amount::pza(200),
                capacity_bytes: 64 << 20,
                endpoint: handle.url(),
            })],
        );
        let daemon = Daemon::new(chain, Arc::clone(&store), DaemonConfig::default());
        providers.push(Provider {
            address: key.public_key().address(),
            store,
            daemon,
            handle: Some(handle),
            _dir: dir,
        });
    }
    ledger.lock().unwrap().block();

    // The owner codes a blob and opens a deal for it.
    let data: Vec<u8> = (0..1_500_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let encoded = erasure::encode(&data, K, M).unwrap();
    let record = BlobRecord {
        id: encoded.id,
        len_bytes: encoded.layout.len_bytes,
        k: K,
        m: M,
        shard_len: encoded.layout.shard_len,
        shard_roots: encoded.roots.clone(),
    };
    let epochs = 12;
    ledger.lock().unwrap().send(
        &owner,
        vec![Message::Storage(storage::Msg::OpenDeal {
            blob: record,
            epochs,
        })],
    );
    ledger.lock().unwrap().block();
    let deal_id = storage::deal_of_blob(&ledger.lock().unwrap().view(), &encoded.id).unwrap();
    until(&ledger, &mut providers, "deal assigned", |l| {
        l.deal(deal_id).status == DealStatus::Active
    })
    .await;

    // Upload each shard to the provider the chain assigned it to.
    let http = fetch::http_client();
    let holders = holders_of(&ledger.lock().unwrap(), deal_id);
    assert_eq!(holders.len(), usize::from(K + M));
    for holder in &holders {
        let shard = encoded.shards[usize::from(holder.index)].clone();
        fetch::put_shard(&http, &holder.endpoint, deal_id, holder.index, shard)
            .await
            .unwrap();
    }

    // Two epochs pass with every holder proving its shard, and being paid for it.
    until(&ledger, &mut providers, "two epochs proven", |l| {
        let d = l.deal(deal_id);
        d.epochs_done >= 3 && d.shards.iter().all(|s| s.proven && s.challenge.is_none())
    })
    .await;
    let paid_before = ledger.lock().unwrap().deal(deal_id).paid;
    assert!(paid_before > Amount::ZERO);
    let all_answers: Vec<usize> = ledger
        .lock()
        .unwrap()
        .answer_bytes
        .values()
        .flatten()
        .copied()
        .collect();
    assert!(!all_answers.is_empty());

    // m providers go: holder of shard 0 is killed (its server and daemon stop), the holder of
    // shard 1 deletes its shard and keeps running without rebuilding it.
    let address_of =
        |index: u16, l: &Ledger| l.deal(deal_id).shards[usize::from(index)].provider.unwrap();
    let (killed, deleter) = {
        let l = ledger.lock().unwrap();
        (address_of(0, &l), address_of(1, &l))
    };
    let stake_before = {
        let l = ledger.lock().unwrap();
        (l.bonded(&killed), l.bonded(&deleter))
    };
    for p in providers.iter_mut() {
        if p.address == killed {
            p.handle.take().unwrap().abort();
        }
        if p.address == deleter {
            let key = ShardKey {
                blob: encoded.id,
                index: 1,
            };
            assert!(p.store.remove(&key).unwrap());
            p.daemon.config.rebuild = false;
        }
    }
    // The blob still comes back from the other k holders, equal to the original.
    let holders = holders_of(&ledger.lock().unwrap(), deal_id);
    let manifest = encoded.manifest();
    assert_eq!(
        fetch::get_blob(&http, &manifest, &holders).await.unwrap(),
        data
    );

    // The next challenges catch both: slashed, and their shards repaired elsewhere.
    until(&ledger, &mut providers, "both slashed", |l| {
        l.bonded(&killed) < stake_before.0 && l.bonded(&deleter) < stake_before.1
    })
    .await;
    // The deleter, slashed, keeps running and rebuilds what it is given from now on (the
    // killed one stays down: a repair drawn for it is missed and drawn again).
    for p in providers.iter_mut().filter(|p| p.address == deleter) {
        p.daemon.config.rebuild = true;
    }
    let live: Vec<Address> = providers
        .iter()
        .filter(|p| p.live())
        .map(|p| p.address)
        .collect();
    until(
        &ledger,
        &mut providers,
        "all k+m shards on live providers, proven",
        |l| {
            l.deal(deal_id).shards.iter().all(|s| {
                s.provider.is_some_and(|p| live.contains(&p)) && s.proven && s.challenge.is_none()
            })
        },
    )
    .await;
    // Every shard is on disk at its live holder, equal to the original.
    let d = ledger.lock().unwrap().deal(deal_id);
    for (index, shard) in d.shards.iter().enumerate() {
        let holder = providers
            .iter()
            .find(|p| Some(p.address) == shard.provider)
            .unwrap();
        let key = ShardKey {
            blob: encoded.id,
            index: index as u16,
        };
        assert_eq!(holder.store.get(&key).unwrap().1, encoded.shards[index]);
    }
    assert!(d.paid > paid_before);
    // And the blob comes back from the repaired set alone.
    let holders = holders_of(&ledger.lock().unwrap(), deal_id);
    assert_eq!(
        fetch::get_blob(&http, &manifest, &holders).await.unwrap(),
        data
    );

    // Bytes on chain: one answer transaction, and one epoch of k + m answers.
    let l = ledger.lock().unwrap();
    let per_answer = l.answer_bytes.values().flatten().max().copied().unwrap();
    println!(
        "chunks per shard {}, answer transaction {} bytes, one epoch ({} shards) {} bytes, heights {}",
        storage::BlobRecord::chunks_per_shard(&d.blob),
        per_answer,
        K + M,
        per_answer * usize::from(K + M),
        l.height
    );
}

#[test]
fn a_full_batch_of_answers_fits_one_transaction() {
    use piazza_primitives::blob::{MerklePath, CHUNK_BYTES, MERKLE_PATH_SIBLINGS_MAX};
    let key = SecretKey::from_seed([1; 32]);
    let answer = Message::Storage(storage::Msg::AnswerChallenge {
        deal: u64::MAX,
        shard: u16::MAX,
        chunk_index: u64::MAX,
        chunk: vec![0xff; CHUNK_BYTES],
        path: MerklePath {
            siblings: vec![Hash([0xff; 32]); MERKLE_PATH_SIBLINGS_MAX],
        },
    });
    let tx = |answers: usize| {
        Transaction {
            chain_id: "a-long-chain-id-of-sixty-four-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxx".into(),
            sender: key.public_key(),
            nonce: u64::MAX,
            max_fee: Amount::pza(1),
            messages: vec![answer.clone(); answers],
        }
        .sign(&key)
        .to_bytes()
        .len()
    };
    let max = piazza_ledger::limits::TX_BYTES_MAX;
    assert!(tx(daemon::ANSWERS_PER_TX_MAX) <= max);
    // The bound is tight: one more worst-case answer overflows it.
    assert!(tx(daemon::ANSWERS_PER_TX_MAX + 1) > max);
}
