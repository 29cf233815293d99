//! The storage methods on a real node in this process, through the client: providers register,
//! a deal is opened and assigned, each holder reads its open challenge with
//! `piazza_getStorageChallenges`, answers it from the shard's bytes and is paid; the deal, the
//! blob and the providers read back; malformed parameters are refused.

mod common;

use piazza_client::storage::{deal_id, ChallengeInfo};
use piazza_client::ClientError;
use piazza_ledger::storage::BlobRecord;
use piazza_primitives::blob;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

async fn send_ok(t: &common::TestNode, hash: Result<Hash, ClientError>) -> piazza_api::ReceiptInfo {
    let receipt = t
        .client
        .wait_for_receipt(&hash.unwrap(), WAIT)
        .await
        .unwrap();
    assert_eq!(receipt.status, "ok", "{receipt:?}");
    receipt
}

/// Shards of a 2 + 1 blob whose bytes follow the shard's index.
fn shards(len_bytes: u64) -> (BlobRecord, Vec<Vec<u8>>) {
    let shard_len = blob::shard_len(len_bytes, 2).unwrap();
    let shards: Vec<Vec<u8>> = (0..3u8)
        .map(|s| {
            (0..shard_len)
                .map(|i| (i as u8) ^ s.wrapping_mul(37))
                .collect()
        })
        .collect();
    let record = BlobRecord {
        id: Hash::of("test/blob", &[&len_bytes.to_le_bytes()]),
        len_bytes,
        k: 2,
        m: 1,
        shard_len,
        shard_roots: shards.iter().map(|s| blob::root_of(s)).collect(),
    };
    (record, shards)
}

/// The open challenges of `provider`, once it has any.
async fn challenges(t: &common::TestNode, provider: &Address) -> Vec<ChallengeInfo> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open = t.client.storage_challenges(provider).await.unwrap();
        if !open.is_empty() {
            return open;
        }
        assert!(tokio::time::Instant::now() < deadline, "no challenge came");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deal_is_assigned_challenged_answered_and_paid_through_the_storage_methods() {
    let providers: Vec<SecretKey> = (1..=3).map(common::user_key).collect();
    let owner = common::user_key(9);
    let mut users = providers.clone();
    users.push(owner.clone());
    let t = common::start(&users).await;
    let params = t.client.storage_params().await.unwrap();
    for (i, key) in providers.iter().enumerate() {
        let endpoint = format!("http://127.0.0.1:{}", 7000 + i);
        let sent = t
            .client
            .register_storage_provider(key, Amount::pza(200), 1 << 20, &endpoint)
            .await;
        send_ok(&t, sent).await;
    }
    assert_eq!(t.client.storage_providers().await.unwrap().len(), 3);
    let (record, bytes) = shards(3 * blob::CHUNK_BYTES as u64 + 10);
    assert_eq!(t.client.blob(&record.id).await.unwrap(), None);
    let escrow = params.deal_escrow(&record, 2).unwrap();
    let sent = t.client.open_deal(&owner, record.clone(), 2).await;
    let receipt = send_ok(&t, sent).await;
    let id = deal_id(&receipt).unwrap();
    let held = t.client.blob(&record.id).await.unwrap().unwrap();
    assert_eq!(held.deal.id, id);
    assert_eq!(held.blob.shard_roots, record.shard_roots);
    assert_eq!(held.deal.escrow, escrow.base_units().to_string());
    assert_eq!(
        t.client
            .storage_deals(&owner.public_key().address())
            .await
            .unwrap(),
        vec![id]
    );
    // Every provider holds one shard once the next block assigned them.
    let deadline = tokio::time::Instant::now() + WAIT;
    let deal = loop {
        let deal = t.client.storage_deal(id).await.unwrap().unwrap();
        if deal.status == "active" {
            break deal;
        }
        assert!(tokio::time::Instant::now() < deadline, "not assigned");
        tokio::time::sleep(POLL).await;
    };
    for shard in &deal.shards {
        let holder = shard.provider.unwrap();
        assert!(shard
            .endpoint
            .as_deref()
            .unwrap()
            .starts_with("http://127.0.0.1:"));
        let info = t.client.storage_provider(&holder).await.unwrap().unwrap();
        assert_eq!(info.shards.unwrap().len(), 1);
        assert_eq!(info.used_bytes, record.shard_len);
    }
    // The owner says the shards are uploaded: the first epoch starts at the next block and
    // challenges every shard; each holder answers from its bytes.
    let sent = t.client.confirm_upload(&owner, id).await;
    let receipt = send_ok(&t, sent).await;
    assert!(receipt
        .events
        .iter()
        .any(|e| e.kind == "storage.upload_confirmed"));
    for key in &providers {
        let me = key.public_key().address();
        let open = challenges(&t, &me).await;
        assert_eq!(open.len(), 1);
        let c = &open[0];
        assert_eq!((c.deal, c.kind.as_str()), (id, "epoch"));
        assert!(c.answer(&bytes[(usize::from(c.shard) + 1) % 3]).is_none());
        let answer = c.answer(&bytes[usize::from(c.shard)]).unwrap();
        let receipt = send_ok(&t, t.client.send_message(key, answer).await).await;
        assert!(receipt.events.iter().any(|e| e.kind == "storage.proved"));
    }
    let deal = t.client.storage_deal(id).await.unwrap().unwrap();
    let epoch_price =
        record.shard_len as u128 * params.price_per_byte_epoch.parse::<u128>().unwrap();
    assert_eq!(deal.paid, (3 * epoch_price).to_string());
    assert!(deal
        .shards
        .iter()
        .all(|s| s.proven && s.challenge.is_none()));
    // Bad parameters are refused before any state is read.
    let bad: Result<serde_json::Value, _> =
        t.client.call("piazza_getBlob", json!(["not a hash"])).await;
    assert!(matches!(bad, Err(ClientError::Rpc(_))), "{bad:?}");
    let missing: Result<serde_json::Value, _> = t
        .client
        .call("piazza_getStorageChallenges", json!([]))
        .await;
    assert!(matches!(missing, Err(ClientError::Rpc(_))), "{missing:?}");
    assert_eq!(t.client.storage_deal(id + 100).await.unwrap(), None);
}
