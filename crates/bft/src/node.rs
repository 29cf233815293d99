//! Starting one validator: Malachite's engine (WAL, libp2p network, value sync, consensus) on
//! Piazza's context and codec, and the app loop between it and the application.

use crate::app::{AppLoop, LoopError};
use crate::codec::PiazzaCodec;
use crate::context::{PiazzaContext, ValidatorAddress, ValidatorSet};
use crate::signing::{KeySigner, KeyVerifier};
use crate::store::{ConsensusStore, StoreError};
use bytesize::ByteSize;
use malachitebft_app_channel::app::config::{
    ConsensusConfig, NodeConfig, P2pConfig, ValuePayload, ValueSyncConfig,
};
use malachitebft_app_channel::app::net::Multiaddr;
use malachitebft_app_channel::app::types::codec::{Codec, ConsensusCodec, SyncCodec};
use malachitebft_app_channel::app::types::core::LinearTimeouts;
use malachitebft_app_channel::app::types::Keypair;
use malachitebft_app_channel::{
    Channels, ConsensusContext, EngineBuilder, EngineHandle, NetworkContext, NetworkIdentity,
    RequestContext, Signer, SyncContext, WalContext,
};
use piazza_consensus::{AppSender, TxGossip};
use piazza_ledger::block::BLOCK_BYTES_MAX;
use piazza_primitives::SecretKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The consensus store's file inside a validator's consensus home.
pub const CONSENSUS_DB_FILE: &str = "consensus.redb";
/// The WAL's file inside a validator's consensus home.
pub const WAL_FILE: &str = "consensus.wal";
/// The most bytes of one sync response and of one libp2p request or response: a block of the
/// largest size with its commit certificate (Malachite's default, 10 MiB, is below a block's
/// 16 MiB bound, so such a block could never be synced).
pub const SYNC_RESPONSE_BYTES_MAX: usize = BLOCK_BYTES_MAX + 1024 * 1024;
/// Capacity of the engine's request channel (state dumps, peer updates).
pub const REQUEST_CHANNEL_CAPACITY: usize = 16;

/// Why a validator did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("io: {0}")]
    Io(String),
    #[error("the engine: {0}")]
    Engine(String),
    #[error("this key is not in the validator set")]
    NotAValidator,
}

/// One validator's consensus configuration.
#[derive(Debug, Clone)]
pub struct BftConfig {
    /// Where the WAL and the consensus store live.
    pub home: PathBuf,
    pub moniker: String,
    pub chain_id: String,
    /// e.g. `/ip4/127.0.0.1/tcp/27000`.
    pub listen_addr: Multiaddr,
    pub persistent_peers: Vec<Multiaddr>,
    pub timeouts: LinearTimeouts,
    pub value_sync: ValueSyncConfig,
    /// The target time of a height, from its start to its block's commit (Malachite's
    /// `HeightParams::target_time`): a decided block is committed no sooner, so an idle
    /// network makes one block per interval. `None`: commit as soon as decided.
    pub block_interval: Option<Duration>,
}

impl BftConfig {
    pub fn new(home: PathBuf, chain_id: String, listen_addr: Multiaddr) -> Self {
        BftConfig {
            home,
            moniker: "piazza".into(),
            chain_id,
            listen_addr,
            persistent_peers: Vec::new(),
            timeouts: LinearTimeouts::default(),
            value_sync: ValueSyncConfig {
                max_response_size: ByteSize::b(SYNC_RESPONSE_BYTES_MAX as u64),
                ..ValueSyncConfig::default()
            },
            block_interval: None,
        }
    }
}

struct EngineConfig {
    moniker: String,
    consensus: ConsensusConfig,
    value_sync: ValueSyncConfig,
}

impl NodeConfig for EngineConfig {
    fn moniker(&self) -> &str {
        &self.moniker
    }
    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }
    fn consensus_mut(&mut self) -> &mut ConsensusConfig {
        &mut self.consensus
    }
    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
    fn value_sync_mut(&mut self) -> &mut ValueSyncConfig {
        &mut self.value_sync
    }
}

/// A running validator.
pub struct BftHandle {
    pub address: ValidatorAddress,
    engine: EngineHandle,
    app_loop: JoinHandle<Result<(), LoopError>>,
    store: Arc<ConsensusStore>,
}

impl BftHandle {
    /// The node's consensus store, shared with the app loop: its JSON-RPC server reads the
    /// commit certificates from it.
    pub fn store(&self) -> Arc<ConsensusStore> {
        self.store.clone()
    }

    /// Stops the engine (its actors and network) and the app loop.
    pub async fn shutdown(self) {
        self.engine.actor.stop(Some("shutdown".into()));
        let _ = self.engine.handle.await;
        self.app_loop.abort();
        let _ = self.app_loop.await;
    }

    /// Whether the app loop has stopped (a fatal error or the engine went away).
    pub fn app_loop_finished(&self) -> bool {
        self.app_loop.is_finished()
    }
}

/// Starts a validator with `key` for a fixed set `validators` (used for a chain whose ledger
/// records no validators; the ledger's sets win where it has them), answering consensus
/// through `app` (the application's end of `piazza_consensus::AppMsg`, e.g.
/// `piazza_node::App::serve`). No transaction gossip: prefer [`start_node`].
pub async fn start(
    config: BftConfig,
    key: SecretKey,
    validators: ValidatorSet,
    app: AppSender,
) -> Result<BftHandle, StartError> {
    let address = ValidatorAddress(key.public_key().address());
    if validators.get(&address).is_none() {
        return Err(StartError::NotAValidator);
    }
    let timeouts = config.timeouts;
    let chain_id = config.chain_id.clone();
    start_engine(config, key, move |signer, store| {
        AppLoop::new(chain_id, signer, validators, timeouts, store, app)
    })
    .await
}

/// Starts a node of a network whose validator set of each height comes from the ledger
/// (`AppMsg::GetValidatorSet`): it votes and proposes at the heights where `key` is in the
/// set and follows the chain at the others. Transactions admitted by the application from
/// clients are gossiped to every node, and peers' reach the application, through `gossip`
/// (`piazza_node::App::gossip`).
pub async fn start_node(
    config: BftConfig,
    key: SecretKey,
    app: AppSender,
    gossip: Option<TxGossip>,
) -> Result<BftHandle, StartError> {
    let timeouts = config.timeouts;
    let chain_id = config.chain_id.clone();
    start_engine(config, key, move |signer, store| {
        AppLoop::from_ledger(chain_id, signer, timeouts, store, app, gossip)
    })
    .await
}

async fn start_engine(
    config: BftConfig,
    key: SecretKey,
    app_loop: impl FnOnce(KeySigner, ConsensusStore) -> AppLoop,
) -> Result<BftHandle, StartError> {
    let engine = build_engine(&config, &key, PiazzaCodec).await?;
    let mut app_loop = app_loop(engine.signer, engine.store);
    app_loop.block_interval = config.block_interval;
    Ok(BftHandle::host(
        engine.address,
        app_loop,
        engine.channels,
        engine.handle,
    ))
}

/// Malachite's engine of one node, started, before a host answers it: the channels the host
/// answers and publishes on, and what an app loop needs (its signer and consensus store).
pub struct Engine {
    pub address: ValidatorAddress,
    pub channels: Channels<PiazzaContext>,
    pub handle: EngineHandle,
    pub signer: KeySigner,
    pub store: ConsensusStore,
}

/// Starts Malachite's engine (WAL, libp2p network, value sync, consensus) for `key` on
/// `config`, its network speaking `net_codec`: Piazza's [`PiazzaCodec`] on every real node (the
/// WAL and sync always do); a test wraps it to play a peer whose messages do not decode.
pub async fn build_engine<N>(
    config: &BftConfig,
    key: &SecretKey,
    net_codec: N,
) -> Result<Engine, StartError>
where
    N: ConsensusCodec<PiazzaContext> + SyncCodec<PiazzaContext>,
{
    let address = ValidatorAddress(key.public_key().address());
    std::fs::create_dir_all(&config.home)
        .map_err(|e| StartError::Io(format!("cannot create {}: {e}", config.home.display())))?;
    let store = ConsensusStore::open(&config.home.join(CONSENSUS_DB_FILE))?;

    let keypair = Keypair::ed25519_from_bytes(key.seed())
        .map_err(|e| StartError::Engine(format!("network key: {e}")))?;
    let peer_id = keypair.public().to_peer_id();
    let signer = KeySigner::new(key.clone(), config.chain_id.clone());
    let proof = signer
        .sign_validator_proof(key.public_key().0.to_vec(), peer_id.to_bytes())
        .await
        .map_err(|e| StartError::Engine(e.to_string()))?;
    let proof_bytes = PiazzaCodec
        .encode(&proof)
        .map_err(|e| StartError::Engine(e.to_string()))?;
    let identity = NetworkIdentity::new_validator(
        config.moniker.clone(),
        keypair,
        address.to_string(),
        proof_bytes,
    );

    let engine_config = EngineConfig {
        moniker: config.moniker.clone(),
        consensus: ConsensusConfig {
            p2p: P2pConfig {
                listen_addr: config.listen_addr.clone(),
                persistent_peers: config.persistent_peers.clone(),
                rpc_max_size: ByteSize::b(SYNC_RESPONSE_BYTES_MAX as u64),
                ..P2pConfig::default()
            },
            value_payload: ValuePayload::ProposalAndParts,
            ..ConsensusConfig::default()
        },
        value_sync: config.value_sync,
    };
    let verifier = KeyVerifier::new(config.chain_id.clone());
    let (channels, handle) = EngineBuilder::new(PiazzaContext, engine_config)
        .with_default_wal(WalContext::new(config.home.join(WAL_FILE), PiazzaCodec))
        .with_default_network(NetworkContext::new(identity, net_codec))
        .with_default_sync(SyncContext::new(PiazzaCodec))
        .with_default_consensus(ConsensusContext::new_validator(
            address,
            Box::new(verifier),
            Box::new(signer.clone()),
        ))
        .with_default_request(RequestContext::new(REQUEST_CHANNEL_CAPACITY))
        .build()
        .await
        .map_err(|e| StartError::Engine(e.to_string()))?;
    Ok(Engine {
        address,
        channels,
        handle,
        signer,
        store,
    })
}

impl BftHandle {
    /// Runs `app_loop` as the host of an engine from [`build_engine`].
    pub fn host(
        address: ValidatorAddress,
        app_loop: AppLoop,
        channels: Channels<PiazzaContext>,
        engine: EngineHandle,
    ) -> BftHandle {
        let store = app_loop.store.clone();
        let app_loop = tokio::spawn(async move {
            let result = app_loop.run(channels).await;
            if let Err(error) = &result {
                tracing::error!(%error, "the consensus app loop stopped");
            }
            result
        });
        BftHandle {
            address,
            engine,
            app_loop,
            store,
        }
    }
}
