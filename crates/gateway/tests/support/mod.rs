//! An in-process devnet for the gateway's tests and benchmark: a validator, a provider serving
//! MiniLM (and SmolLM2 when asked and its file is present) and a funded `dev` key in a keystore.
//! [`devnet_on`] also sets the chain's fee and compute parameters, and can leave the provider
//! registered but stopped (jobs are assigned to it and wait) until [`Devnet::start_provider`].

#![allow(dead_code)]

use piazza_keystore::Keystore;
use piazza_ledger::compute;
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::staking::{self, Role};
use piazza_primitives::{Address, Amount, SecretKey};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The devnet's chain id.
pub const CHAIN_ID: &str = "piazza-gateway-test";
/// The devnet's paying key, sealed with the empty password.
pub const DEV_KEY: &str = "dev";
/// Registered at genesis, served by nobody.
pub const UNSERVED_MODEL: &str = "unserved-embedder";
/// The validator's key seed (its account is funded at genesis).
pub const VALIDATOR_SEED: [u8; 32] = [231; 32];
/// The provider's price per unit (input token or generated token), in base units.
pub const PRICE_PER_UNIT: u128 = 1_000;

/// How long the devnet waits for its provider to register.
const PROVIDER_REGISTER_WAIT: Duration = Duration::from_secs(120);

pub struct Devnet {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub keystore_dir: PathBuf,
    /// Whether the generation model is on chain and served.
    pub generation: bool,
    /// A client of the node.
    pub client: piazza_client::Client,
    /// The address of the `dev` keystore key (funded at genesis).
    pub dev: Address,
    /// The provider's address.
    pub provider: Address,
    node: piazza_node::NodeHandle,
    provider_config: piazza_provider::ProviderConfig,
    stop: tokio::sync::watch::Sender<bool>,
    daemon: Option<tokio::task::JoinHandle<Result<(), piazza_provider::ProviderError>>>,
}

pub struct DevnetOptions {
    pub block_interval: Duration,
    pub generation: bool,
    /// Jobs the provider runs at once.
    pub provider_concurrency: usize,
}

/// The chain's parameters and the provider's start, beyond [`DevnetOptions`].
pub struct ChainOptions {
    pub fees: FeeParams,
    pub compute: compute::Params,
    /// Whether the provider's daemon runs from the start; otherwise the provider is only
    /// registered (jobs are assigned to it and wait) until [`Devnet::start_provider`].
    pub provider_runs: bool,
    /// Whether the provider names an endpoint on 127.0.0.1 (where it serves sessions).
    pub session_endpoint: bool,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            fees: FeeParams::default(),
            compute: compute::Params::default(),
            provider_runs: true,
            session_endpoint: false,
        }
    }
}

pub async fn devnet(options: DevnetOptions) -> Devnet {
    devnet_on(options, ChainOptions::default()).await
}

pub async fn devnet_on(options: DevnetOptions, chain: ChainOptions) -> Devnet {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let keystore_dir = dir.path().join("keys");
    let keystore = Keystore::open(&keystore_dir).expect("keystore");
    let dev = keystore.create(DEV_KEY, "").expect("dev key").address;
    let validator = SecretKey::from_seed(VALIDATOR_SEED);
    let provider = SecretKey::from_seed([232; 32]);
    let owner = SecretKey::from_seed([233; 32]).public_key().address();
    let models_dir = piazza_engine::models_dir();
    let minilm = piazza_provider::models::minilm_record(&models_dir, owner)
        .expect("MiniLM under the models directory (scripts/fetch-models.sh)");
    let mut unserved = minilm.clone();
    unserved.name = UNSERVED_MODEL.into();
    let mut models = vec![minilm.clone(), unserved];
    let mut serve = vec![minilm.name.clone()];
    let mut generation = false;
    if options.generation {
        match piazza_provider::models::smollm2_record(&models_dir, owner) {
            Ok(record) => {
                serve.push(record.name.clone());
                models.push(record);
                generation = true;
            }
            Err(e) => eprintln!("devnet: no generation model ({e}); chat is not checked"),
        }
    }
    let mut accounts: Vec<GenesisAccount> = [
        dev,
        validator.public_key().address(),
        provider.public_key().address(),
    ]
    .into_iter()
    .map(|address| GenesisAccount {
        address,
        balance: Amount::pza(1_000_000),
    })
    .collect();
    accounts.sort_by_key(|a| a.address);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let genesis = Genesis {
        chain_id: CHAIN_ID.into(),
        genesis_time_ms: now_ms,
        fees: chain.fees,
        staking: staking::Params::default(),
        accounts,
        bonds: vec![GenesisBond {
            address: validator.public_key().address(),
            role: Role::Validator,
            amount: Amount::pza(10_000),
        }],
        models,
        compute: chain.compute,
        verify: Default::default(),
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    };
    let mut config = piazza_node::NodeConfig::new(
        dir.path().join("node"),
        "127.0.0.1:0".parse().expect("address"),
    );
    config.block_interval = options.block_interval;
    let node = piazza_node::start(config, Some(genesis), validator)
        .await
        .expect("node starts");
    let url = format!("http://{}", node.rpc_addr);
    let provider_config = piazza_provider::ProviderConfig {
        node_url: url.clone(),
        key: provider,
        models_dir,
        serve,
        price_per_unit: Amount::new(PRICE_PER_UNIT),
        capacity: 256,
        stake: Amount::pza(1_000),
        endpoint: if chain.session_endpoint {
            format!("http://127.0.0.1:{}", free_port())
        } else {
            String::new()
        },
        concurrency: options.provider_concurrency,
        threads: 1,
        journal_dir: dir.path().join("journal"),
        poll_interval: Duration::from_millis(10),
        fault: Default::default(),
    };
    let address = provider_config.address();
    let (stop, _) = tokio::sync::watch::channel(false);
    let client = piazza_client::Client::new(&url);
    let mut devnet = Devnet {
        dir,
        url,
        keystore_dir,
        generation,
        client,
        dev,
        provider: address,
        node,
        provider_config,
        stop,
        daemon: None,
    };
    if chain.provider_runs {
        devnet.start_provider();
    } else {
        let served = piazza_provider::load_models(&devnet.client, &devnet.provider_config)
            .await
            .expect("the provider's models load");
        piazza_provider::ensure_registered(&devnet.client, &devnet.provider_config, &served)
            .await
            .expect("the provider registers");
    }
    let started = Instant::now();
    while devnet
        .client
        .provider(&address)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            started.elapsed() < PROVIDER_REGISTER_WAIT,
            "the provider did not register"
        );
        if let Some(daemon) = &devnet.daemon {
            assert!(!daemon.is_finished(), "the provider stopped");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    devnet
}

impl Devnet {
    /// Runs the provider's daemon (once; it serves the jobs already assigned to it).
    pub fn start_provider(&mut self) {
        if self.daemon.is_none() {
            let stopped = self.stop.subscribe();
            self.daemon = Some(tokio::spawn(piazza_provider::run(
                self.provider_config.clone(),
                stopped,
            )));
        }
    }

    /// The account's balance on chain, in base units.
    pub async fn balance(&self, address: &Address) -> u128 {
        self.client
            .account(address)
            .await
            .expect("the node answers")
            .balance
            .parse()
            .expect("a balance in base units")
    }

    /// The account's nonce on chain: how many of its transactions were included.
    pub async fn nonce(&self, address: &Address) -> u64 {
        self.client
            .account(address)
            .await
            .expect("the node answers")
            .nonce
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(daemon) = self.daemon {
            let _ = daemon.await;
        }
        self.node.shutdown().await;
    }
}

/// A port free a moment ago on 127.0.0.1 (the provider registers its endpoint before binding).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A devnet whose provider serves sessions on 127.0.0.1.
pub async fn session_devnet(options: DevnetOptions) -> Devnet {
    devnet_on(
        options,
        ChainOptions {
            session_endpoint: true,
            ..ChainOptions::default()
        },
    )
    .await
}

/// A gateway on 127.0.0.1 in front of `devnet`, paying with its keystore, under `limits`.
pub async fn gateway(
    devnet: &Devnet,
    limits: piazza_gateway::Limits,
) -> piazza_gateway::GatewayHandle {
    let mut config = piazza_gateway::GatewayConfig::new(
        "127.0.0.1:0".parse().expect("address"),
        &devnet.url,
        devnet.dir.path().join("gateway"),
        devnet.keystore_dir.clone(),
    );
    config.limits = limits;
    piazza_gateway::start(config)
        .await
        .expect("the gateway starts")
}

/// Agent `name`, owned by `owner` (which submits its settlements) and priced `price` base
/// units, served by a gateway of its own on 127.0.0.1 whose `/v1/embeddings` is paid per
/// request over x402 (and served with an API key of the `dev` key). Registers the agent with
/// that endpoint, then starts the gateway; returns it and the endpoint.
pub async fn paid_agent(
    devnet: &Devnet,
    name: &str,
    description: &str,
    owner: &SecretKey,
    price: u128,
) -> (piazza_gateway::GatewayHandle, String) {
    use piazza_ledger::agents::{Endpoint, Msg, Profile, Protocol};
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}/v1/embeddings");
    let register = piazza_ledger::tx::Message::Agents(Msg::Register {
        name: name.into(),
        profile: Profile {
            description: description.into(),
            endpoints: vec![Endpoint {
                protocol: Protocol::Http,
                url: endpoint.clone(),
            }],
            tags: vec!["embeddings".into()],
            price: Amount::new(price),
        },
        stake: Amount::pza(10),
        share_asset: None,
    });
    let hash = devnet.client.send_message(owner, register).await.unwrap();
    let receipt = devnet
        .client
        .wait_for_receipt(&hash, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(receipt.status, "ok", "{receipt:?}");
    let data_dir = devnet.dir.path().join(format!("gateway-{name}"));
    let (api_key, _) = piazza_gateway::keys::KeyStore::open(&data_dir)
        .unwrap()
        .create(DEV_KEY, Amount::pza(100))
        .unwrap();
    let mut config = piazza_gateway::GatewayConfig::new(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &devnet.url,
        data_dir,
        devnet.keystore_dir.clone(),
    );
    config.paywall = Some(piazza_gateway::x402::PaywallConfig {
        routes: vec!["/v1/embeddings".into()],
        agent: Some(name.into()),
        price: None,
        pay_to: None,
        submitter: owner.clone(),
        api_key,
    });
    let gateway = piazza_gateway::start(config)
        .await
        .expect("the agent's gateway starts");
    (gateway, endpoint)
}
