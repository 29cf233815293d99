//! In-process validators for the tests and the benchmark: each with its own data directory,
//! application (`piazza_node::App`), consensus home and a libp2p port on 127.0.0.1.
#![allow(dead_code)]

use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::core::{LinearTimeouts, Round, Validity};
use malachitebft_app_channel::app::types::{Keypair, PeerId};
use malachitebft_app_channel::AppMsg;
use piazza_bft::app::{block_parts, AppLoop};
use piazza_bft::context::{ProposalFin, ProposalInit, ValidatorAddress};
use piazza_bft::{BftConfig, BftHandle};
use piazza_bft::{BlockId, Height, KeySigner};
use piazza_codec::Encode;
use piazza_consensus::APP_CHANNEL_CAPACITY;
use piazza_ledger::bank;
use piazza_ledger::block::Block;
use piazza_ledger::genesis::{
    FeeParams, Genesis, GenesisAccount, GenesisBond, GenesisValidator, NetworkGenesis,
};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_mempool::MempoolConfig;
use piazza_node::App;
use piazza_primitives::{Address, Amount, SecretKey};
use piazza_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub const CHAIN_ID: &str = "piazza-bft-test";
/// Bound on every wait in the tests: far above what the work needs, so only a stall trips it.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn validator_key(i: usize) -> SecretKey {
    let mut seed = [0x5a; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SecretKey::from_seed(seed)
}

pub fn user_key(i: usize) -> SecretKey {
    let mut seed = [0x11; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SecretKey::from_seed(seed)
}

/// One genesis for all: validators bonded with 1,000 PZA each, users funded.
pub fn genesis(validators: &[SecretKey], users: &[SecretKey]) -> Genesis {
    let funded = |keys: &[SecretKey], pza: u64| -> Vec<GenesisAccount> {
        keys.iter()
            .map(|k| GenesisAccount {
                address: k.public_key().address(),
                balance: Amount::pza(pza),
            })
            .collect()
    };
    let mut accounts = funded(validators, 10_000);
    accounts.extend(funded(users, 1_000));
    let bonds = validators
        .iter()
        .map(|k| GenesisBond {
            address: k.public_key().address(),
            role: Role::Validator,
            amount: Amount::pza(1_000),
        })
        .collect();
    Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: 1_700_000_000_000,
        fees: FeeParams::default(),
        staking: staking::Params::default(),
        accounts,
        bonds,
        models: vec![],
        compute: Default::default(),
        verify: Default::default(),
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    }
}

/// The genesis of a network: [`genesis`] with every validator's consensus key named, so the
/// ledger gives the set of each height; `others` are funded with 10,000 PZA each (enough to
/// bond as a validator later).
pub fn network_genesis(validators: &[SecretKey], others: &[SecretKey]) -> NetworkGenesis {
    let mut genesis = genesis(validators, &[]);
    genesis
        .accounts
        .extend(others.iter().map(|k| GenesisAccount {
            address: k.public_key().address(),
            balance: Amount::pza(10_000),
        }));
    NetworkGenesis {
        genesis,
        validators: validators
            .iter()
            .map(|k| GenesisValidator {
                consensus_key: k.public_key(),
            })
            .collect(),
    }
}

/// A transaction of `key` with `nonce` carrying `message`.
pub fn signed(key: &SecretKey, nonce: u64, message: Message) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN_ID.into(),
        sender: key.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![message],
    }
    .sign(key)
}

pub fn transfer(key: &SecretKey, nonce: u64) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN_ID.into(),
        sender: key.public_key(),
        nonce,
        max_fee: Amount::pza(1),
        messages: vec![Message::Bank(bank::Msg::Send {
            to: Address([9; 20]),
            amount: Amount::new(1),
        })],
    }
    .sign(key)
}

/// Timeouts for validators on one machine: short, so a missed round costs little.
pub fn local_timeouts() -> LinearTimeouts {
    LinearTimeouts {
        propose: Duration::from_millis(1_000),
        propose_delta: Duration::from_millis(200),
        prevote: Duration::from_millis(300),
        prevote_delta: Duration::from_millis(100),
        precommit: Duration::from_millis(300),
        precommit_delta: Duration::from_millis(100),
        rebroadcast: Duration::from_millis(2_000),
        ..LinearTimeouts::default()
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the engine to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn multiaddr(port: u16) -> malachitebft_app_channel::app::net::Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

/// The addresses of every node of `ports` but node `index`.
pub fn peers_of(ports: &[u16], index: usize) -> Vec<malachitebft_app_channel::app::net::Multiaddr> {
    ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, p)| multiaddr(*p))
        .collect()
}

pub struct TestValidator {
    pub app: Arc<App>,
    pub bft: Option<BftHandle>,
    pub port: u16,
}

impl TestValidator {
    pub fn height(&self) -> u64 {
        self.app.head().unwrap().height
    }

    pub async fn stop(&mut self) {
        if let Some(bft) = self.bft.take() {
            bft.shutdown().await;
        }
    }
}

/// Starts node `index` of `keys` with its data under `dir`, peering with `ports`: a validator
/// at the heights where the ledger's set holds its key, a follower at the others.
pub async fn start_validator(
    dir: &std::path::Path,
    keys: &[SecretKey],
    index: usize,
    genesis: &NetworkGenesis,
    ports: &[u16],
) -> TestValidator {
    start_validator_with(dir, keys, index, genesis, ports, Options::default()).await
}

/// Rewrites a block this validator proposes (a hostile validator in a test); gets its key.
pub type Tamper = fn(Block, &SecretKey) -> Block;

/// How a test validator departs from the defaults.
#[derive(Default)]
pub struct Options {
    /// Every block the node proposes passes through this between its application and consensus.
    pub tamper: Option<Tamper>,
    /// Each height committed no sooner than this after it started (`BftConfig::block_interval`).
    pub block_interval: Option<Duration>,
}

/// [`start_validator`] with `options`.
pub async fn start_validator_with(
    dir: &std::path::Path,
    keys: &[SecretKey],
    index: usize,
    genesis: &NetworkGenesis,
    ports: &[u16],
    options: Options,
) -> TestValidator {
    let key = keys[index].clone();
    let data = dir.join(format!("validator-{index}"));
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::open(&data.join("chain.redb")).unwrap();
    let app = Arc::new(
        App::open_network(store, Some(genesis), key.clone(), MempoolConfig::default()).unwrap(),
    );
    let gossip = app.gossip();
    let (mut app_tx, app_rx) = tokio::sync::mpsc::channel(APP_CHANNEL_CAPACITY);
    tokio::spawn(app.clone().serve(app_rx));
    if let Some(tamper) = options.tamper {
        app_tx = interpose(app_tx, key.clone(), tamper);
    }
    let mut config = BftConfig::new(
        data.join("consensus"),
        CHAIN_ID.into(),
        multiaddr(ports[index]),
    );
    config.moniker = format!("validator-{index}");
    config.timeouts = local_timeouts();
    config.block_interval = options.block_interval;
    config.persistent_peers = peers_of(ports, index);
    let bft = piazza_bft::start_node(config, key, app_tx, gossip)
        .await
        .unwrap();
    TestValidator {
        app,
        bft: Some(bft),
        port: ports[index],
    }
}

/// A channel that forwards every consensus request to `app`, passing the blocks it builds
/// through `tamper` on their way back.
fn interpose(
    app: piazza_consensus::AppSender,
    key: SecretKey,
    tamper: Tamper,
) -> piazza_consensus::AppSender {
    use piazza_consensus::AppMsg as PiazzaMsg;
    let (tx, mut rx) = mpsc::channel::<PiazzaMsg>(APP_CHANNEL_CAPACITY);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let msg = match msg {
                PiazzaMsg::GetValue {
                    height,
                    time_ms,
                    reply,
                } => {
                    let (inner, answer) = oneshot::channel();
                    let ask = PiazzaMsg::GetValue {
                        height,
                        time_ms,
                        reply: inner,
                    };
                    if app.send(ask).await.is_err() {
                        return;
                    }
                    let key = key.clone();
                    tokio::spawn(async move {
                        if let Ok(built) = answer.await {
                            let _ = reply.send(built.map(|b| tamper(b, &key)));
                        }
                    });
                    continue;
                }
                other => other,
            };
            if app.send(msg).await.is_err() {
                return;
            }
        }
    });
    tx
}

/// Starts validator `index` again once its previous application (`previous`) has closed its
/// store (the engine's app loop and the serving task drop it shortly after a stop).
pub async fn start_validator_after(
    dir: &std::path::Path,
    keys: &[SecretKey],
    index: usize,
    genesis: &NetworkGenesis,
    ports: &[u16],
    previous: std::sync::Weak<App>,
) -> TestValidator {
    let closed = wait_until(Duration::from_secs(10), || previous.strong_count() == 0).await;
    assert!(closed, "the stopped validator's application is still open");
    start_validator(dir, keys, index, genesis, ports).await
}

/// Waits (polling every 20 ms) until `done` holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// The block hash and state root of every validator at `height` (all must have reached it).
pub fn roots_at(
    validators: &[&TestValidator],
    height: u64,
) -> Vec<(piazza_primitives::Hash, piazza_primitives::Hash)> {
    validators
        .iter()
        .map(|v| {
            let block = v.app.store().block(height).unwrap().unwrap();
            (block.hash(), block.header.state_root)
        })
        .collect()
}

/// Every validator reaches `margin` heights beyond the highest one now, with the same block.
pub async fn agree_beyond(validators: &[&TestValidator], margin: u64) {
    let target = validators.iter().map(|v| v.height()).max().unwrap() + margin;
    let reached = wait_until(WAIT, || validators.iter().all(|v| v.height() >= target)).await;
    assert!(
        reached,
        "heights: {:?}",
        validators.iter().map(|v| v.height()).collect::<Vec<_>>()
    );
    let roots = roots_at(validators, target);
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "validators disagree: {roots:?}"
    );
}

pub fn open_app(
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
pub async fn offer(
    app_loop: &mut AppLoop,
    network: &mpsc::Sender<malachitebft_app_channel::NetworkMsg<piazza_bft::PiazzaContext>>,
    block: &Block,
    round: u32,
    proposer: &SecretKey,
) -> Option<Validity> {
    offer_at(app_loop, network, block, Height(1), round, proposer).await
}

/// [`offer`] at `height`.
pub async fn offer_at(
    app_loop: &mut AppLoop,
    network: &mpsc::Sender<malachitebft_app_channel::NetworkMsg<piazza_bft::PiazzaContext>>,
    block: &Block,
    height: Height,
    round: u32,
    proposer: &SecretKey,
) -> Option<Validity> {
    let signer = KeySigner::new(proposer.clone(), CHAIN_ID.into());
    let round = Round::new(round);
    let init = ProposalInit {
        height,
        round,
        pol_round: Round::Nil,
        proposer: ValidatorAddress(proposer.public_key().address()),
    };
    let fin = ProposalFin {
        signature: signer.sign_parts(height, round, &BlockId(block.hash())),
    };
    let parts = block_parts(init, &block.to_bytes(), fin);
    let mut stream_id = height.0.to_le_bytes().to_vec();
    stream_id.extend_from_slice(&round.as_i64().to_le_bytes());
    let stream = StreamId::new(bytes::Bytes::from(stream_id));
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

/// Block 1 of a one-validator chain (a transfer in it) built by the proposer's application, the
/// same block claiming another state root (signed again by the proposer), and another node's
/// application behind an app loop that has started height 1.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub proposer: SecretKey,
    pub block: Block,
    pub lying: Block,
    pub app: Arc<App>,
    pub app_loop: AppLoop,
    pub network: mpsc::Sender<malachitebft_app_channel::NetworkMsg<piazza_bft::PiazzaContext>>,
    _published: mpsc::Receiver<malachitebft_app_channel::NetworkMsg<piazza_bft::PiazzaContext>>,
}

/// An app loop of validator `key` over `app` (served from now on), in a set where `proposer`
/// alone holds power, after `ConsensusReady`: the loop, its network channel and the height it
/// starts at.
pub async fn ready_loop(
    dir: &std::path::Path,
    app: &Arc<App>,
    key: &SecretKey,
    genesis: &Genesis,
    proposer: &SecretKey,
) -> (
    AppLoop,
    mpsc::Sender<malachitebft_app_channel::NetworkMsg<piazza_bft::PiazzaContext>>,
    mpsc::Receiver<malachitebft_app_channel::NetworkMsg<piazza_bft::PiazzaContext>>,
    Height,
) {
    let (app_tx, app_rx) = mpsc::channel(APP_CHANNEL_CAPACITY);
    tokio::spawn(app.clone().serve(app_rx));
    let validators =
        piazza_bft::ValidatorSet::from_genesis(genesis, &[proposer.public_key()]).unwrap();
    let store = piazza_bft::store::ConsensusStore::open(&dir.join("consensus.redb")).unwrap();
    let mut app_loop = AppLoop::new(
        CHAIN_ID.into(),
        KeySigner::new(key.clone(), CHAIN_ID.into()),
        validators,
        local_timeouts(),
        store,
        app_tx,
    );
    let (network, published) = mpsc::channel(64);
    let (reply, answer) = oneshot::channel();
    app_loop
        .handle(AppMsg::ConsensusReady { reply }, &network)
        .await
        .unwrap();
    let next = answer.await.unwrap().0;
    (app_loop, network, published, next)
}

pub async fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let proposer = validator_key(0);
    let other = validator_key(1);
    let users = vec![user_key(0)];
    let genesis = genesis(std::slice::from_ref(&proposer), &users);
    let proposing = open_app(dir.path(), "proposer", &proposer, &genesis);
    proposing
        .submit(&transfer(&users[0], 0).to_bytes())
        .unwrap();
    let block = proposing
        .propose(1, genesis.genesis_time_ms + 1_000)
        .unwrap();
    assert_eq!(block.txs.len(), 1);
    let mut lying = block.clone();
    lying.header.state_root = piazza_primitives::Hash([7; 32]);
    lying.signature = proposer.sign(&lying.header.hash().0);

    let app = open_app(dir.path(), "other", &other, &genesis);
    let (app_loop, network, published, next) =
        ready_loop(dir.path(), &app, &other, &genesis, &proposer).await;
    assert_eq!(next, Height(1));
    Scene {
        dir,
        proposer,
        block,
        lying,
        app,
        app_loop,
        network,
        _published: published,
    }
}
