//! A hostile validator on a live network of four, each of its attacks refused (and logged) by
//! the three honest ones, which keep finalizing:
//! - its consensus messages (votes, proposals) are bytes that do not decode;
//! - it gossips stream messages that do not decode (a part over `PART_DATA_BYTES_MAX`, a batch
//!   of more than `GOSSIP_TXS_MAX` transactions);
//! - it streams a proposal larger than the largest block;
//! - it streams a signed block for a round whose proposer it is not.
//!
//! None of its blocks is ever final.

mod common;

use bytes::Bytes;
use common::*;
use malachitebft_app_channel::app::consensus::{LivenessMsg, SignedConsensusMsg};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::codec::{Codec, HasEncodedLen};
use malachitebft_app_channel::app::types::core::{Round, ValidatorProof};
use malachitebft_app_channel::app::types::sync::{Request, Response, Status};
use malachitebft_app_channel::NetworkMsg;
use piazza_bft::app::{block_parts, AppLoop};
use piazza_bft::codec::{GOSSIP_TXS_MAX, PART_DATA_BYTES_MAX};
use piazza_bft::context::{ProposalFin, ProposalInit, ValidatorAddress, ValidatorSet};
use piazza_bft::{BftConfig, BftHandle, Height, KeySigner, PiazzaCodec, PiazzaContext};
use piazza_codec::{DecodeError, Encode};
use piazza_consensus::APP_CHANNEL_CAPACITY;
use piazza_ledger::block::BLOCK_BYTES_MAX;
use piazza_ledger::genesis::NetworkGenesis;
use piazza_mempool::MempoolConfig;
use piazza_node::App;
use piazza_primitives::SecretKey;
use piazza_store::Store;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the honest nodes log when they refuse each attack.
const UNDECODABLE_VOTE: &str = "Failed to decode consensus message";
const UNDECODABLE_PART: &str = "Failed to decode stream message";
const OVERSIZED: &str = "more data than the largest block";
const WRONG_PROPOSER: &str = "not the round's proposer";
const REFUSALS: [&str; 4] = [
    UNDECODABLE_VOTE,
    UNDECODABLE_PART,
    OVERSIZED,
    WRONG_PROPOSER,
];

/// Each height's target time: slow enough that a stream for the next height arrives before it.
const BLOCK_INTERVAL: Duration = Duration::from_millis(400);
/// Pause between two tries of an attack.
const ATTACK_PAUSE: Duration = Duration::from_millis(300);
/// Pause between two tries of the 16 MiB attack (its partial streams are dropped as heights pass).
const OVERSIZED_PAUSE: Duration = Duration::from_millis(2_000);

/// The refusals seen in the log so far (only which ones: nothing else is kept).
static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// A log writer that notes which refusals a line names and keeps nothing else.
struct Watch;

impl std::io::Write for Watch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        let mut seen = SEEN.lock().unwrap();
        for refusal in REFUSALS {
            if line.contains(refusal) {
                seen.insert(refusal);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn seen() -> BTreeSet<&'static str> {
    SEEN.lock().unwrap().clone()
}

/// The hostile node's network codec: Piazza's, except that every consensus message it sends
/// (its votes and proposals) has a first byte that is no message tag.
#[derive(Clone, Copy)]
struct Garbling;

macro_rules! piazza_codec {
    ($t:ty) => {
        impl Codec<$t> for Garbling {
            type Error = DecodeError;
            fn decode(&self, bytes: Bytes) -> Result<$t, DecodeError> {
                PiazzaCodec.decode(bytes)
            }
            fn encode(&self, msg: &$t) -> Result<Bytes, DecodeError> {
                PiazzaCodec.encode(msg)
            }
        }
    };
}

piazza_codec!(piazza_bft::ProposalPart);
piazza_codec!(LivenessMsg<PiazzaContext>);
piazza_codec!(StreamMessage<piazza_bft::ProposalPart>);
piazza_codec!(ValidatorProof<PiazzaContext>);
piazza_codec!(Status<PiazzaContext>);
piazza_codec!(Request<PiazzaContext>);
piazza_codec!(Response<PiazzaContext>);

impl HasEncodedLen<Response<PiazzaContext>> for Garbling {
    fn encoded_len(&self, msg: &Response<PiazzaContext>) -> Result<usize, DecodeError> {
        PiazzaCodec.encoded_len(msg)
    }
}

impl Codec<SignedConsensusMsg<PiazzaContext>> for Garbling {
    type Error = DecodeError;
    fn decode(&self, bytes: Bytes) -> Result<SignedConsensusMsg<PiazzaContext>, DecodeError> {
        PiazzaCodec.decode(bytes)
    }
    fn encode(&self, msg: &SignedConsensusMsg<PiazzaContext>) -> Result<Bytes, DecodeError> {
        let mut bytes = PiazzaCodec.encode(msg)?.to_vec();
        bytes[0] = 0xff;
        Ok(Bytes::from(bytes))
    }
}

/// The hostile validator: an honest app loop behind the garbling codec, and the engine's
/// network channel for the attacks it publishes itself.
struct Hostile {
    key: SecretKey,
    app: Arc<App>,
    bft: BftHandle,
    network: mpsc::Sender<NetworkMsg<PiazzaContext>>,
    streams: u64,
}

async fn start_hostile(
    dir: &std::path::Path,
    keys: &[SecretKey],
    index: usize,
    genesis: &NetworkGenesis,
    ports: &[u16],
) -> Hostile {
    let key = keys[index].clone();
    let data = dir.join(format!("hostile-{index}"));
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::open(&data.join("chain.redb")).unwrap();
    let app = Arc::new(
        App::open_network(store, Some(genesis), key.clone(), MempoolConfig::default()).unwrap(),
    );
    let (app_tx, app_rx) = mpsc::channel(APP_CHANNEL_CAPACITY);
    tokio::spawn(app.clone().serve(app_rx));
    let mut config = BftConfig::new(
        data.join("consensus"),
        CHAIN_ID.into(),
        multiaddr(ports[index]),
    );
    config.moniker = format!("hostile-{index}");
    config.timeouts = local_timeouts();
    config.persistent_peers = peers_of(ports, index);
    let engine = piazza_bft::build_engine(&config, &key, Garbling)
        .await
        .unwrap();
    let network = engine.channels.network.clone();
    let mut app_loop = AppLoop::from_ledger(
        CHAIN_ID.into(),
        engine.signer,
        config.timeouts,
        engine.store,
        app_tx,
        None,
    );
    app_loop.block_interval = Some(BLOCK_INTERVAL);
    let bft = BftHandle::host(engine.address, app_loop, engine.channels, engine.handle);
    Hostile {
        key,
        app,
        bft,
        network,
        streams: 0,
    }
}

impl Hostile {
    /// Publishes `contents` as one stream of its own.
    async fn publish(&mut self, contents: Vec<StreamContent<piazza_bft::ProposalPart>>) {
        self.streams += 1;
        let mut id = b"hostile/".to_vec();
        id.extend_from_slice(&self.streams.to_le_bytes());
        let id = StreamId::new(Bytes::from(id));
        for (sequence, content) in contents.into_iter().enumerate() {
            let msg = StreamMessage::new(id.clone(), sequence as u64, content);
            self.network
                .send(NetworkMsg::PublishProposalPart(msg))
                .await
                .unwrap();
        }
    }

    fn address(&self) -> ValidatorAddress {
        ValidatorAddress(self.key.public_key().address())
    }

    /// Parts that do not decode: too long a data part, too many transactions in a batch.
    async fn undecodable(&mut self) {
        use piazza_bft::ProposalPart::{Data, Transactions};
        let long = Data(vec![0; PART_DATA_BYTES_MAX + 1]);
        self.publish(vec![StreamContent::Data(long)]).await;
        let many = Transactions(vec![vec![1]; GOSSIP_TXS_MAX + 1]);
        self.publish(vec![StreamContent::Data(many)]).await;
    }

    /// A proposal for `height` larger than the largest block, in parts that each decode.
    async fn oversized(&mut self, height: u64) {
        let init = ProposalInit {
            height: Height(height),
            round: Round::new(0),
            pol_round: Round::Nil,
            proposer: self.address(),
        };
        let chunks = BLOCK_BYTES_MAX / PART_DATA_BYTES_MAX + 1;
        let mut parts = vec![StreamContent::Data(piazza_bft::ProposalPart::Init(init))];
        parts.extend((0..chunks).map(|_| {
            StreamContent::Data(piazza_bft::ProposalPart::Data(vec![0; PART_DATA_BYTES_MAX]))
        }));
        self.publish(parts).await;
    }

    /// A real block of its own, signed, for a round of the next height another validator leads.
    async fn wrong_proposer(&mut self, set: &ValidatorSet) {
        let head = self.app.head().unwrap().height;
        // Refused only when the head moved meanwhile; the caller tries again.
        let Ok(block) = self.app.propose(head + 1, now_ms()) else {
            return;
        };
        let block_height = Height(block.header.height);
        let round = (0..64u32)
            .map(Round::new)
            .find(|r| set.proposer(block_height, *r).address != self.address())
            .unwrap();
        let signer = KeySigner::new(self.key.clone(), CHAIN_ID.into());
        let init = ProposalInit {
            height: block_height,
            round,
            pol_round: Round::Nil,
            proposer: self.address(),
        };
        let fin = ProposalFin {
            signature: signer.sign_parts(block_height, round, &piazza_bft::BlockId(block.hash())),
        };
        let contents = block_parts(init, &block.to_bytes(), fin)
            .into_iter()
            .map(StreamContent::Data)
            .chain([StreamContent::Fin])
            .collect();
        self.publish(contents).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_honest_validators_refuse_a_hostile_peer_and_keep_finalizing() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| Watch)
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<_> = (0..4).map(validator_key).collect();
    let genesis = network_genesis(&keys, &[]);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let mut honest = Vec::new();
    for i in 0..3 {
        let options = Options {
            block_interval: Some(BLOCK_INTERVAL),
            ..Options::default()
        };
        honest.push(start_validator_with(dir.path(), &keys, i, &genesis, &ports, options).await);
    }
    let mut hostile = start_hostile(dir.path(), &keys, 3, &genesis, &ports).await;
    let set = ValidatorSet::new(
        keys.iter()
            .map(|k| piazza_bft::Validator::new(k.public_key(), 1_000))
            .collect(),
    )
    .unwrap();

    let nodes: Vec<&TestValidator> = honest.iter().collect();
    agree_beyond(&nodes, 2).await;
    // Each attack until its refusal is logged (gossip may drop a burst of parts when a send
    // queue is full; the next try gets through). The oversized one waits longer between tries:
    // each is 16 MiB.
    let start = std::time::Instant::now();
    let next = |nodes: &[&TestValidator]| nodes.iter().map(|n| n.height()).max().unwrap() + 1;
    while !seen().contains(WRONG_PROPOSER) && start.elapsed() < WAIT {
        hostile.wrong_proposer(&set).await;
        tokio::time::sleep(ATTACK_PAUSE).await;
    }
    while !seen().contains(UNDECODABLE_PART) && start.elapsed() < WAIT {
        hostile.undecodable().await;
        tokio::time::sleep(ATTACK_PAUSE).await;
    }
    while !seen().contains(OVERSIZED) && start.elapsed() < WAIT {
        hostile.oversized(next(&nodes)).await;
        tokio::time::sleep(OVERSIZED_PAUSE).await;
    }
    assert_eq!(
        seen(),
        BTreeSet::from(REFUSALS),
        "every attack is refused and logged"
    );
    // The honest three hold three quarters of the power: they go on, on one chain.
    agree_beyond(&nodes, 3).await;

    let head = nodes.iter().map(|n| n.height()).min().unwrap();
    let led = (1..=head)
        .filter(|h| set.proposer(Height(*h), Round::new(0)).address == hostile.address())
        .count();
    assert!(
        led > 0,
        "the hostile validator never led a round in 1..={head}"
    );
    let proposer = hostile.key.public_key();
    for height in 1..=head {
        let block = nodes[0].app.store().block(height).unwrap().unwrap();
        assert_ne!(
            block.header.proposer, proposer,
            "a block of the hostile validator was finalized at {height}"
        );
    }
    hostile.bft.shutdown().await;
    for node in &mut honest {
        node.stop().await;
    }
}
