//! The app loop driven directly with Malachite's messages, against a real application:
//! - a proposed block reaches consensus only after the application executed it: a block whose
//!   header claims a wrong state root is offered as `Invalid` (the validator votes nil), the
//!   honest block as `Valid`, and a stream from a validator that is not the round's proposer not
//!   at all;
//! - a proposal is rebuilt identically for the same (height, round), across a restart of the
//!   loop and a changed mempool.

mod common;

use common::*;
use malachitebft_app_channel::app::types::core::{Round, Validity};
use malachitebft_app_channel::AppMsg;
use piazza_bft::app::AppLoop;
use piazza_bft::context::ValidatorSet;
use piazza_bft::store::ConsensusStore;
use piazza_bft::{BlockId, Height, KeySigner};
use piazza_codec::Encode;
use piazza_consensus::APP_CHANNEL_CAPACITY;
use tokio::sync::{mpsc, oneshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_a_wrong_state_root_is_refused() {
    let Scene {
        proposer,
        block,
        lying,
        app,
        mut app_loop,
        network,
        ..
    } = scene().await;
    let outsider = validator_key(1);
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
