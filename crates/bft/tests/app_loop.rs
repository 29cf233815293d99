//! The app loop driven directly with Malachite's messages, against a real application:
//! - a proposed block reaches consensus only after the application executed it: a block whose
//!   header claims a wrong state root is offered as `Invalid` (the validator votes nil), the
//!   honest block as `Valid`, and a stream from a validator that is not the round's proposer not
//!   at all;
//! - a proposal is rebuilt identically for the same (height, round), across a restart of the
//!   loop and a changed mempool.

mod common;

use common::*;
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::core::{Round, Validity};
use malachitebft_app_channel::app::types::{Keypair, PeerId};
use malachitebft_app_channel::AppMsg;
use piazza_bft::app::{block_parts, AppLoop};
use piazza_bft::context::{ProposalFin, ProposalInit, ValidatorAddress, ValidatorSet};
use piazza_bft::store::ConsensusStore;
use piazza_bft::{BlockId, Height, KeySigner};
use piazza_codec::Encode;
use piazza_consensus::APP_CHANNEL_CAPACITY;
use piazza_ledger::block::Block;
use piazza_mempool::MempoolConfig;
use piazza_node::App;
use piazza_primitives::{Hash, SecretKey};
use piazza_store::Store;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

fn open_app(
    dir: &std::path::Path,
    name: &str,
    key: &SecretKey,
    genesis: &piazza_ledger::genesis::Genesis,
) -> Arc<App> {
    let store = Store::open(&dir.join(format!("{name}.redb"))).unwrap();
    Arc::new(App::open(store, Some(genesis), key.clone(), MempoolConfig::default()).unwrap())
}

/// Feeds `block`'s stream for (height 1, `round`) as `proposer` signs it; returns what the app
/// loop offers consensus once the stream is complete.
async fn offer(
    app_loop: &mut AppLoop,
    network: &mpsc::Sender<malachitebft_app_channel::NetworkMsg<piazza_bft::PiazzaContext>>,
    block: &Block,
    round: u32,
    proposer: &SecretKey,
) -> Option<Validity> {
    let signer = KeySigner::new(proposer.clone(), CHAIN_ID.into());
    let round = Round::new(round);
    let init = ProposalInit {
        height: Height(1),
        round,
        pol_round: Round::Nil,
        proposer: ValidatorAddress(proposer.public_key().address()),
    };
    let fin = ProposalFin {
        signature: signer.sign_parts(Height(1), round, &BlockId(block.hash())),
    };
    let parts = block_parts(init, &block.to_bytes(), fin);
    let stream = StreamId::new(bytes::Bytes::from(round.as_i64().to_le_bytes().to_vec()));
    let end = parts.len() as u64;
    let peer_key = Keypair::ed25519_from_bytes(proposer.seed()).unwrap();
    let peer = PeerId::from_bytes(&peer_key.public().to_peer_id().to_bytes()).unwrap();
    let mut offered = None;
    let contents = parts
        .into_iter()
        .map(StreamContent::Data)
        .chain([StreamContent::Fin]);
    for (sequence, content) in contents.enumerate() {
        let (reply, answer) = oneshot::channel();
        let part = StreamMessage::new(stream.clone(), sequence as u64, content);
        let msg = AppMsg::ReceivedProposalPart {
            from: peer,
            published_by: None,
            part,
            reply,
        };
        app_loop.handle(msg, network).await.unwrap();
        let value = answer.await.unwrap();
        assert!(
            value.is_none() || sequence as u64 == end,
            "offered before the stream ended"
        );
        offered = offered.or(value);
    }
    offered.map(|v| v.validity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_a_wrong_state_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let proposer = validator_key(0);
    let outsider = validator_key(1);
    let users = vec![user_key(0)];
    let genesis = genesis(std::slice::from_ref(&proposer), &users);

    // The proposer's application builds block 1 with a transfer in it.
    let proposing = open_app(dir.path(), "proposer", &proposer, &genesis);
    proposing
        .submit(&transfer(&users[0], 0).to_bytes())
        .unwrap();
    let block = proposing
        .propose(1, genesis.genesis_time_ms + 1_000)
        .unwrap();
    assert_eq!(block.txs.len(), 1);
    // The same block claiming another state root, signed again by the proposer.
    let mut lying = block.clone();
    lying.header.state_root = Hash([7; 32]);
    lying.signature = proposer.sign(&lying.header.hash().0);

    // Another node's application, behind its app loop.
    let app = open_app(dir.path(), "validator", &outsider, &genesis);
    let (app_tx, app_rx) = mpsc::channel(APP_CHANNEL_CAPACITY);
    tokio::spawn(app.clone().serve(app_rx));
    let validators = ValidatorSet::from_genesis(&genesis, &[proposer.public_key()]).unwrap();
    let store = ConsensusStore::open(&dir.path().join("consensus.redb")).unwrap();
    let signer = KeySigner::new(outsider.clone(), CHAIN_ID.into());
    let mut app_loop = AppLoop::new(
        CHAIN_ID.into(),
        signer,
        validators,
        local_timeouts(),
        store,
        app_tx,
    );
    let (network, _published) = mpsc::channel(64);
    let (reply, answer) = oneshot::channel();
    app_loop
        .handle(AppMsg::ConsensusReady { reply }, &network)
        .await
        .unwrap();
    assert_eq!(answer.await.unwrap().0, Height(1));

    assert_eq!(
        offer(&mut app_loop, &network, &lying, 0, &proposer).await,
        Some(Validity::Invalid)
    );
    assert_eq!(
        offer(&mut app_loop, &network, &block, 1, &proposer).await,
        Some(Validity::Valid)
    );
    // The honest block, streamed by a validator that is not the round's proposer: not offered.
    assert_eq!(
        offer(&mut app_loop, &network, &block, 2, &outsider).await,
        None
    );
    // Nothing was committed: validation executes without writing.
    assert_eq!(app.head().unwrap().height, 0);
}

/// Asks for this validator's value at (height 1, `round`); returns it and the bytes of every
/// stream message published for it.
async fn get_value(app_loop: &mut AppLoop, round: u32) -> (BlockId, Vec<bytes::Bytes>) {
    use malachitebft_app_channel::app::types::codec::Codec;
    let (network, mut published) = mpsc::channel(64);
    let (reply, answer) = oneshot::channel();
    let msg = AppMsg::GetValue {
        height: Height(1),
        round: Round::new(round),
        timeout: std::time::Duration::from_secs(10),
        reply,
    };
    app_loop.handle(msg, &network).await.unwrap();
    let value = answer.await.unwrap().value;
    drop(network);
    let mut parts = Vec::new();
    while let Some(malachitebft_app_channel::NetworkMsg::PublishProposalPart(part)) =
        published.recv().await
    {
        parts.push(piazza_bft::PiazzaCodec.encode(&part).unwrap());
    }
    (value, parts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_is_rebuilt_identically_for_the_same_height_and_round() {
    let dir = tempfile::tempdir().unwrap();
    let key = validator_key(0);
    let users = vec![user_key(0)];
    let genesis = genesis(std::slice::from_ref(&key), &users);
    let app = open_app(dir.path(), "validator", &key, &genesis);
    let (app_tx, app_rx) = mpsc::channel(APP_CHANNEL_CAPACITY);
    tokio::spawn(app.clone().serve(app_rx));
    let validators = ValidatorSet::from_genesis(&genesis, &[key.public_key()]).unwrap();
    let start = || {
        let store = ConsensusStore::open(&dir.path().join("consensus.redb")).unwrap();
        let signer = KeySigner::new(key.clone(), CHAIN_ID.into());
        AppLoop::new(
            CHAIN_ID.into(),
            signer,
            validators.clone(),
            local_timeouts(),
            store,
            app_tx.clone(),
        )
    };

    let mut app_loop = start();
    let (first, first_parts) = get_value(&mut app_loop, 0).await;
    assert!(
        first_parts.len() >= 3,
        "Init, data, Fin and the end marker are published"
    );
    // The mempool changes and the loop restarts on the same store: the same block, the same
    // bytes on the wire.
    app.submit(&transfer(&users[0], 0).to_bytes()).unwrap();
    drop(app_loop);
    let mut app_loop = start();
    let (again, again_parts) = get_value(&mut app_loop, 0).await;
    assert_eq!(again, first);
    assert_eq!(again_parts, first_parts);
    // Another round is a new proposal, built from the mempool as it is now.
    let (next_round, _) = get_value(&mut app_loop, 1).await;
    assert_ne!(next_round, first);
}
