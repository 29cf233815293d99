//! An in-process chain for the dispute players: the ledger's executor driven block by block,
//! with the node's own arbiter, from a seed. No socket, no sleep, no clock: a block is made
//! when the scenario says, its time is `height × BLOCK_INTERVAL_MS` and its randomness a hash
//! of (seed, height), so the same seed replays the same chain to the byte.
//!
//! [`World`] puts one provider, one auditor and one client on that chain. Each [`World::step`]
//! lets the provider post results for its assigned jobs, lets each party's
//! [`Player`] make its moves (through the same `dispute::play` the daemons run), then makes one
//! block. [`SessionPlay`] runs a session between the client and the provider with both ends'
//! channels (requests, receipts, vouchers, commits, reveals, the owner's challenges).
#![allow(dead_code)]

use piazza_arbiter::JobRun;
use piazza_ledger::bank::{self, Account};
use piazza_ledger::block::{Event, TxStatus};
use piazza_ledger::compute::{self, JobStatus, Offer};
use piazza_ledger::executor::{check_admission, init_chain, BlockExecutor};
use piazza_ledger::genesis::{FeeParams, Genesis, GenesisAccount, GenesisBond};
use piazza_ledger::job::JobParams;
use piazza_ledger::module::BlockContext;
use piazza_ledger::sessions::{self, Receipt, Request, SignedReceipt, SignedRequest};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::state::StateDelta;
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_ledger::verify;
use piazza_node::arbitration::EngineArbiter;
use piazza_primitives::{Address, Amount, Hash, SecretKey};
use piazza_provider::chain::{self, Chain, DisputeView, JobView, PostedResult, Side, Tasks};
use piazza_provider::dispute::{self, Fault, Player};
use piazza_provider::models::{self, LoadedModel};
use piazza_provider::ProviderError;
use piazza_session::{ClientChannel, ProviderChannel, Served, Terms};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

pub const CHAIN_ID: &str = "provider-sim";
/// A block's time is its height times this.
pub const BLOCK_INTERVAL_MS: u64 = 1_000;
/// Transactions waiting for the next block; one more is refused. A scenario sends a few per
/// block (a result, a reveal from each side, evidence).
pub const PENDING_TXS_MAX: usize = 8;
/// Nonces a sender may run ahead of its committed one.
pub const NONCE_WINDOW: u64 = 16;
/// Blocks a scenario may run before it is declared stuck.
pub const SCENARIO_BLOCKS_MAX: u64 = 200;
/// Threads per recorded run.
pub const THREADS: usize = 1;
/// The fee ceiling of every transaction (evidence pays by the byte).
pub const MAX_FEE: Amount = Amount::pza(50);

/// The ledger's executor as a chain, one block when asked.
pub struct Sim {
    seed: u64,
    validator: SecretKey,
    inner: Mutex<Inner>,
}

struct Inner {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    height: u64,
    pending: Vec<SignedTransaction>,
    /// The next nonce each sender signs with (its committed nonce plus what is pending).
    next_nonce: BTreeMap<Address, u64>,
    /// Every event, with its block's height: transactions' first, then the block hooks'.
    events: Vec<(u64, Event)>,
    /// Transactions accepted but not includable when their block was made, with the reason.
    dropped: Vec<String>,
    /// Submissions refused because the pending queue was full.
    refused_full: u64,
    /// The fees each sender's included transactions paid.
    fees_paid: BTreeMap<Address, Amount>,
}

impl Sim {
    pub fn new(seed: u64, genesis: &Genesis, validator: SecretKey) -> Sim {
        let state = init_chain(genesis)
            .expect("a valid genesis")
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        Sim {
            seed,
            validator,
            inner: Mutex::new(Inner {
                state,
                height: 0,
                pending: Vec::new(),
                next_nonce: BTreeMap::new(),
                events: Vec::new(),
                dropped: Vec::new(),
                refused_full: 0,
                fees_paid: BTreeMap::new(),
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the sim lock is never held across a panic")
    }

    /// `key`'s view of this chain (its writes are signed with `key`).
    pub fn party(&self, key: &SecretKey) -> Party<'_> {
        Party {
            sim: self,
            key: key.clone(),
        }
    }

    /// Reads the committed state.
    pub fn read<T>(&self, f: impl FnOnce(&StateDelta<'_>) -> T) -> T {
        let inner = self.inner();
        f(&StateDelta::new(&inner.state))
    }

    pub fn height(&self) -> u64 {
        self.inner().height
    }

    /// Signs `messages` with `key`'s next nonce and queues them for the next block; refuses
    /// what the chain would not admit, and anything once the queue is full.
    pub fn submit(&self, key: &SecretKey, messages: Vec<Message>) -> Result<Hash, ProviderError> {
        let mut inner = self.inner();
        if inner.pending.len() >= PENDING_TXS_MAX {
            inner.refused_full += 1;
            return Err(ProviderError::Config(format!(
                "the pending queue is full ({PENDING_TXS_MAX} transactions)"
            )));
        }
        let sender = key.public_key().address();
        let committed = bank::account(&StateDelta::new(&inner.state), &sender).nonce;
        let nonce = *inner.next_nonce.get(&sender).unwrap_or(&committed);
        let tx = Transaction {
            chain_id: CHAIN_ID.into(),
            sender: key.public_key(),
            nonce,
            max_fee: MAX_FEE,
            messages,
        }
        .sign(key);
        check_admission(&inner.state, &tx, NONCE_WINDOW)
            .map_err(|e| ProviderError::Config(format!("refused: {e}")))?;
        inner.next_nonce.insert(sender, nonce + 1);
        let hash = tx.hash();
        inner.pending.push(tx);
        Ok(hash)
    }

    /// Makes one block of every pending transaction, in arrival order; returns its height.
    pub fn block(&self) -> u64 {
        let mut inner = self.inner();
        let height = inner.height + 1;
        let context = BlockContext {
            chain_id: CHAIN_ID.into(),
            height,
            time_ms: height * BLOCK_INTERVAL_MS,
            randomness: Hash::of(
                "piazza/provider-sim/randomness",
                &[&self.seed.to_le_bytes(), &height.to_le_bytes()],
            ),
            proposer: self.validator.public_key(),
        };
        let pending = std::mem::take(&mut inner.pending);
        let mut dropped = Vec::new();
        let mut fees = Vec::new();
        let outcome = {
            let mut executor =
                BlockExecutor::begin(&inner.state, context).with_arbiter(&EngineArbiter);
            for tx in &pending {
                match executor.apply_tx(tx, false) {
                    Ok(receipt) => fees.push((tx.sender(), receipt.fee_paid)),
                    Err(e) => dropped.push((tx.sender(), format!("{}: {e}", tx.hash()))),
                }
            }
            executor.finish()
        };
        for (sender, fee) in fees {
            let paid = inner.fees_paid.entry(sender).or_insert(Amount::ZERO);
            *paid = paid.checked_add(fee).expect("fees fit the supply");
        }
        for (sender, reason) in dropped {
            // Its later nonces are read again from the chain.
            inner.next_nonce.remove(&sender);
            inner.dropped.push(reason);
        }
        for (key, value) in outcome.writes {
            match value {
                Some(value) => inner.state.insert(key, value),
                None => inner.state.remove(&key),
            };
        }
        let mut events: Vec<(u64, Event)> = Vec::new();
        for receipt in outcome.receipts {
            if let TxStatus::Failed { code, message } = &receipt.status {
                inner
                    .dropped
                    .push(format!("{} failed ({code}): {message}", receipt.tx_hash));
            }
            events.extend(receipt.events.into_iter().map(|e| (height, e)));
        }
        events.extend(outcome.events.into_iter().map(|e| (height, e)));
        inner.events.extend(events);
        inner.height = height;
        height
    }

    /// Every event so far, with its block's height.
    pub fn events(&self) -> Vec<(u64, Event)> {
        self.inner().events.clone()
    }

    /// The first event of `kind` about `job`.
    pub fn event(&self, kind: &str, job: u64) -> Option<Event> {
        let job = job.to_string();
        self.inner()
            .events
            .iter()
            .find(|(_, e)| e.kind == kind && e.attribute("job") == Some(job.as_str()))
            .map(|(_, e)| e.clone())
    }

    /// The fees `sender`'s included transactions have paid so far.
    pub fn fees_paid(&self, sender: &Address) -> Amount {
        self.inner()
            .fees_paid
            .get(sender)
            .copied()
            .unwrap_or(Amount::ZERO)
    }

    /// Submissions refused so far because the pending queue was full.
    pub fn refused_full(&self) -> u64 {
        self.inner().refused_full
    }

    /// Transactions waiting for the next block.
    pub fn pending(&self) -> usize {
        self.inner().pending.len()
    }

    /// Failed and undeliverable transactions, with their reasons.
    pub fn refusals(&self) -> Vec<String> {
        self.inner().dropped.clone()
    }

    /// One hash of the whole committed state and event log: two runs of a seed agree on it
    /// exactly when they made the same chain.
    pub fn digest(&self) -> Hash {
        let inner = self.inner();
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for (key, value) in &inner.state {
            parts.push(key.clone());
            parts.push(value.clone());
        }
        for (height, event) in &inner.events {
            parts.push(height.to_le_bytes().to_vec());
            parts.push(event.kind.as_bytes().to_vec());
            for (name, value) in &event.attributes {
                parts.push(name.as_bytes().to_vec());
                parts.push(value.as_bytes().to_vec());
            }
        }
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Hash::of("piazza/provider-sim/digest", &parts)
    }

    /// The ledger's books balance: accounts sum to the supply, and the staking pool holds
    /// exactly what `stakers` have bonded or are unbonding.
    pub fn check_books(&self, stakers: &[Address]) -> Result<(), String> {
        use piazza_codec::Decode;
        let inner = self.inner();
        let view = StateDelta::new(&inner.state);
        let supply = bank::supply(&view);
        let account_key = bank::state_key::account(&Address([0; 20]));
        let prefix = &account_key[..account_key.len() - 20];
        let mut sum = Amount::ZERO;
        for (key, value) in inner.state.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) {
                break;
            }
            let account = Account::from_bytes(value).map_err(|e| e.to_string())?;
            sum = sum
                .checked_add(account.balance)
                .ok_or("balances overflow")?;
        }
        if sum != supply {
            return Err(format!("accounts hold {sum}, the supply is {supply}"));
        }
        let mut staked = Amount::ZERO;
        for address in stakers {
            for role in Role::ALL {
                staked = staked
                    .checked_add(staking::bonded(&view, address, role))
                    .ok_or("stake overflows")?;
            }
            staked = staked
                .checked_add(staking::unbonding(&view, address))
                .ok_or("stake overflows")?;
        }
        let pool = bank::account(&view, &staking::pool()).balance;
        if pool != staked {
            return Err(format!(
                "the staking pool holds {pool}, the stakers {staked}"
            ));
        }
        Ok(())
    }
}

/// One party's view of a [`Sim`]: the player's reads, and its writes signed with its key.
pub struct Party<'a> {
    sim: &'a Sim,
    key: SecretKey,
}

impl Chain for Party<'_> {
    async fn job(&self, id: u64) -> Result<Option<JobView>, ProviderError> {
        Ok(self.sim.read(|view| compute::job(view, id)).map(job_view))
    }

    async fn tasks(&self, me: &Address) -> Result<Tasks, ProviderError> {
        Ok(self.sim.read(|view| tasks_view(view, me)))
    }

    async fn height(&self) -> Result<u64, ProviderError> {
        Ok(self.sim.height())
    }

    async fn submit(&self, messages: Vec<Message>) -> Result<Hash, ProviderError> {
        self.sim.submit(&self.key, messages)
    }
}

fn job_view(job: compute::Job) -> JobView {
    let spec = piazza_node::arbitration::job_spec(&piazza_ledger::arbitration::Job {
        input: job.input,
        params: job.params,
    });
    JobView {
        model: job.model,
        spec,
        result: job.result.map(|r| PostedResult {
            output_hash: r.output_hash,
            trace_root: r.trace_root,
            output: r.output,
            input_units: r.input_units,
        }),
    }
}

fn tasks_view(view: &StateDelta<'_>, me: &Address) -> Tasks {
    let mut tasks = Tasks::default();
    for job in verify::tasks(view, me) {
        if let Some(d) = verify::dispute(view, job) {
            tasks.disputes.push(dispute_view(&d));
        } else if let Some(verify::Hold::Audit { auditor, .. }) = verify::hold(view, job) {
            if auditor == *me {
                tasks.audits.push(job);
            }
        }
    }
    tasks
}

fn dispute_view(d: &verify::Dispute) -> DisputeView {
    let side = |index: usize| Side {
        address: d.parties[index].address,
        job: d.parties[index].job,
        step_count: d.parties[index].step_count,
        ids: d.parties[index].ids,
        revealed: d.reveals[index].is_some(),
    };
    DisputeView {
        job: d.job,
        sides: [side(verify::DEFENDANT), side(verify::CLAIMANT)],
        round: d.round,
        node: d.node,
        phase: match d.phase {
            verify::Phase::Bisect => chain::Phase::Bisect,
            verify::Phase::Input => chain::Phase::Input,
            verify::Phase::Step { step, .. } => chain::Phase::Step { step },
        },
    }
}

/// MiniLM, loaded once per test process.
pub fn minilm() -> LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            LoadedModel::Embedding(Arc::new(
                piazza_engine::Embedder::load(piazza_engine::models_dir().join("minilm"))
                    .expect("MiniLM is fetched (scripts/fetch-models.sh)"),
            ))
        })
        .clone()
}

/// SmolLM2, loaded once per test process.
pub fn smollm2() -> LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = piazza_engine::models_dir()
                .join("smollm2")
                .join(models::SMOLLM2_FILE);
            LoadedModel::Generation(Arc::new(
                piazza_llm::Generator::load(path)
                    .expect("SmolLM2 is fetched (scripts/fetch-models.sh)"),
            ))
        })
        .clone()
}

/// Tokens a generation job of the harness may generate.
pub const GENERATION_TOKENS: u32 = 4;

/// The model a world's job runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SimModel {
    /// MiniLM embeddings.
    #[default]
    MiniLm,
    /// SmolLM2 chat generation of [`GENERATION_TOKENS`] tokens.
    SmolLm2,
}

impl SimModel {
    pub fn name(self) -> &'static str {
        match self {
            SimModel::MiniLm => models::MINILM,
            SimModel::SmolLm2 => models::SMOLLM2,
        }
    }

    pub fn loaded(self) -> LoadedModel {
        match self {
            SimModel::MiniLm => minilm(),
            SimModel::SmolLm2 => smollm2(),
        }
    }

    /// The chain's record of this model.
    fn record(self, owner: Address) -> piazza_ledger::models::ModelRecord {
        let dir = piazza_engine::models_dir();
        match self {
            SimModel::MiniLm => models::minilm_record(&dir, owner),
            SimModel::SmolLm2 => models::smollm2_record(&dir, owner),
        }
        .expect("the model is fetched (scripts/fetch-models.sh)")
    }

    /// The job's parameters.
    pub fn params(self) -> JobParams {
        match self {
            SimModel::MiniLm => JobParams::default(),
            SimModel::SmolLm2 => JobParams {
                max_tokens: GENERATION_TOKENS,
                chat: true,
                ..JobParams::default()
            },
        }
    }
}

/// A genesis with MiniLM registered (owned by the validator), `validator` bonded and every
/// key in `funded` (and the validator) holding 10,000 PZA; default module parameters.
pub fn minilm_genesis(chain_id: &str, validator: &SecretKey, funded: &[&SecretKey]) -> Genesis {
    model_genesis(SimModel::MiniLm, chain_id, validator, funded)
}

/// [`minilm_genesis`] with `model` registered instead.
pub fn model_genesis(
    model: SimModel,
    chain_id: &str,
    validator: &SecretKey,
    funded: &[&SecretKey],
) -> Genesis {
    let validator_address = validator.public_key().address();
    let record = model.record(validator_address);
    Genesis {
        chain_id: chain_id.into(),
        genesis_time_ms: 0,
        fees: FeeParams::default(),
        staking: staking::Params::default(),
        accounts: std::iter::once(validator)
            .chain(funded.iter().copied())
            .map(|k| GenesisAccount {
                address: k.public_key().address(),
                balance: Amount::pza(10_000),
            })
            .collect(),
        bonds: vec![GenesisBond {
            address: validator_address,
            role: Role::Validator,
            amount: Amount::pza(1_000),
        }],
        models: vec![record],
        compute: compute::Params::default(),
        verify: verify::Params::default(),
        sessions: Default::default(),
        storage: Default::default(),
        agents: Default::default(),
    }
}

/// Who plays, and how.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub seed: u64,
    /// The provider's deliberate misbehaviour (none: honest).
    pub provider_fault: Fault,
    /// The auditor's deliberate misbehaviour (none: honest).
    pub auditor_fault: Fault,
    /// The auditor never runs (its audits time out).
    pub auditor_offline: bool,
    /// What the job runs on.
    pub model: SimModel,
}

/// One daemon: its key, its player, and (for a provider) the jobs it has posted.
pub struct Actor {
    pub key: SecretKey,
    pub player: Player,
    pub fault: Fault,
    posted: BTreeSet<u64>,
}

impl Actor {
    fn new(key: SecretKey, fault: Fault, model: SimModel) -> Actor {
        let models = Arc::new(BTreeMap::from([(model.name().to_string(), model.loaded())]));
        Actor {
            player: Player::new(key.public_key().address(), models, THREADS, fault.clone()),
            key,
            fault,
            posted: BTreeSet::new(),
        }
    }

    pub fn address(&self) -> Address {
        self.key.public_key().address()
    }
}

/// A provider, an auditor and a client on a [`Sim`] with every result audited.
pub struct World {
    pub sim: Sim,
    pub provider: Actor,
    pub auditor: Actor,
    pub user: SecretKey,
    pub setup: Setup,
    /// The client's own player (honest), once it disputes what it was served.
    pub client: Option<Actor>,
}

/// How a job's story ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: JobStatus,
    /// Blocks from the job's submission to its end.
    pub blocks: u64,
}

impl World {
    pub fn new(setup: Setup) -> World {
        let key = |n: u8| SecretKey::from_seed([n; 32]);
        let (validator, provider, auditor, user) = (key(41), key(42), key(43), key(44));
        let genesis = Genesis {
            compute: compute::Params {
                challenge_window_blocks: 2,
                job_deadline_blocks: 20,
                ..compute::Params::default()
            },
            verify: verify::Params {
                audit_rate_bps: 10_000,
                new_provider_audit_rate_bps: 10_000,
                audit_blocks: 6,
                round_blocks: 4,
                arbitration_blocks: 6,
                ..verify::Params::default()
            },
            ..model_genesis(
                setup.model,
                CHAIN_ID,
                &validator,
                &[&provider, &auditor, &user],
            )
        };
        let world = World {
            sim: Sim::new(setup.seed, &genesis, validator),
            provider: Actor::new(provider, setup.provider_fault.clone(), setup.model),
            auditor: Actor::new(auditor, setup.auditor_fault.clone(), setup.model),
            user,
            setup,
            client: None,
        };
        world.register();
        world
    }

    fn register(&self) {
        let offer = Offer {
            models: vec![self.setup.model.name().into()],
            price_per_unit: Amount::new(1_000),
            capacity: 4,
            endpoint: String::new(),
            units_per_block: 1_000_000,
        };
        let registrations = [
            (
                &self.provider.key,
                Message::Compute(compute::Msg::RegisterProvider {
                    offer,
                    stake: Amount::pza(1_000),
                }),
            ),
            (
                &self.auditor.key,
                Message::Verify(verify::Msg::RegisterAuditor {
                    models: vec![self.setup.model.name().into()],
                    stake: Amount::pza(1_000),
                }),
            ),
        ];
        for (key, message) in registrations {
            self.sim
                .submit(key, vec![message])
                .expect("registration admitted");
        }
        self.sim.block();
        assert_eq!(self.sim.refusals(), Vec::<String>::new(), "registrations");
    }

    /// The client submits a job for `text` on the world's model; returns its id once it is on chain.
    pub fn submit_job(&self, text: &str) -> u64 {
        let message = Message::Compute(compute::Msg::SubmitJob {
            model: self.setup.model.name().into(),
            input: text.as_bytes().to_vec(),
            params: self.setup.model.params(),
            max_units: 256,
            max_price: Amount::new(256_000),
        });
        self.sim
            .submit(&self.user, vec![message])
            .expect("job admitted");
        let height = self.sim.block();
        let submitted = self
            .sim
            .events()
            .into_iter()
            .rev()
            .find(|(h, e)| *h == height && e.kind == "compute.job_submitted")
            .unwrap_or_else(|| panic!("no job submitted: {:?}", self.sim.refusals()));
        submitted
            .1
            .attribute("job")
            .expect("a job id")
            .parse()
            .expect("a numeric job id")
    }

    /// The client fills the pending queue with transfers to itself; returns how many it sent.
    pub fn fill_pending(&self) -> usize {
        let me = self.user.public_key().address();
        let mut sent = 0;
        while self.sim.pending() < PENDING_TXS_MAX {
            let transfer = Message::Bank(bank::Msg::Send {
                to: me,
                amount: Amount::new(1),
            });
            self.sim
                .submit(&self.user, vec![transfer])
                .expect("room in the queue");
            sent += 1;
        }
        sent
    }

    /// Both daemons crash and start again: fresh players that remember no run and no move
    /// (what a restarted process knows is what the chain tells it).
    pub fn restart_players(&mut self) {
        for actor in [&mut self.provider, &mut self.auditor] {
            *actor = Actor::new(actor.key.clone(), actor.fault.clone(), self.setup.model);
        }
    }

    /// Whether job `id` has an open dispute.
    pub fn disputed(&self, id: u64) -> bool {
        self.sim.read(|view| verify::dispute(view, id).is_some())
    }

    /// The provider posts a result for each job newly assigned to it.
    fn serve(&mut self) {
        let me = self.provider.address();
        let assigned = self.sim.read(|view| compute::assigned_jobs(view, &me));
        for id in assigned {
            if !self.provider.posted.insert(id) {
                continue;
            }
            let job = self
                .sim
                .read(|view| compute::job(view, id))
                .expect("an assigned job exists");
            let view = job_view(job);
            let run = dispute::run_with_fault(
                &self.setup.model.loaded(),
                &view.spec,
                THREADS,
                &self.provider.fault,
            )
            .expect("MiniLM runs the job");
            let message = Message::Compute(compute::Msg::PostResult {
                job: id,
                output: run.output.clone(),
                output_hash: compute::output_hash(&run.output),
                trace_root: Hash(run.trace_root),
                work_units: run.work_units,
                // Stated, recorded, not billed: nothing here depends on it.
                input_units: 0,
            });
            self.sim
                .submit(&self.provider.key, vec![message])
                .expect("result admitted");
        }
    }

    /// One round of every daemon, then one block.
    pub async fn step(&mut self) {
        self.serve();
        let me = self.provider.address();
        dispute::play(
            &self.sim.party(&self.provider.key),
            &self.provider.player,
            &me,
        )
        .await;
        if !self.setup.auditor_offline {
            let me = self.auditor.address();
            dispute::play(
                &self.sim.party(&self.auditor.key),
                &self.auditor.player,
                &me,
            )
            .await;
        }
        if let Some(client) = &self.client {
            dispute::play(
                &self.sim.party(&client.key),
                &client.player,
                &client.address(),
            )
            .await;
        }
        self.sim.block();
    }

    /// Steps until job `id` has ended (settled, failed or expired, with no audit or dispute
    /// left); panics after [`SCENARIO_BLOCKS_MAX`] blocks.
    pub async fn run_to_end(&mut self, id: u64) -> Outcome {
        let start = self.sim.height();
        while self.sim.height() - start < SCENARIO_BLOCKS_MAX {
            self.step().await;
            let (job, held) = self.sim.read(|view| {
                (
                    compute::job(view, id).expect("the job exists"),
                    verify::holds(view, id) || verify::dispute(view, id).is_some(),
                )
            });
            let ended = matches!(
                job.status,
                JobStatus::Settled | JobStatus::Failed | JobStatus::Expired
            );
            if ended && !held {
                return Outcome {
                    status: job.status,
                    blocks: self.sim.height() - start,
                };
            }
        }
        panic!(
            "job {id} did not end within {SCENARIO_BLOCKS_MAX} blocks; refusals: {:?}",
            self.sim.refusals()
        );
    }

    pub fn provider_stake(&self) -> Amount {
        let me = self.provider.address();
        self.sim
            .read(|view| staking::bonded(view, &me, Role::Provider))
    }

    pub fn auditor_stake(&self) -> Amount {
        let me = self.auditor.address();
        self.sim
            .read(|view| staking::bonded(view, &me, Role::Auditor))
    }

    pub fn balance(&self, address: &Address) -> Amount {
        self.sim.read(|view| bank::account(view, address).balance)
    }

    /// The books balance for this world's stakers.
    pub fn check_books(&self) -> Result<(), String> {
        let validator = self.sim.validator.public_key().address();
        self.sim
            .check_books(&[validator, self.provider.address(), self.auditor.address()])
    }

    /// The value of `name` in the first event of `kind` about `job`.
    pub fn attribute(&self, kind: &str, job: u64, name: &str) -> String {
        let event = self
            .sim
            .event(kind, job)
            .unwrap_or_else(|| panic!("no {kind} for job {job}; events: {:?}", self.sim.events()));
        event
            .attribute(name)
            .unwrap_or_else(|| panic!("no {name} in {event:?}"))
            .to_string()
    }
}

/// The price per unit the world's provider asks (its offer's).
pub const PRICE_PER_UNIT: Amount = Amount::new(1_000);

/// A session between the world's client and provider, with both ends' channels: the client
/// signs requests and vouchers, the provider runs, signs receipts and commits, as the client
/// library and the provider's endpoint do, without HTTP.
pub struct SessionPlay {
    pub id: u64,
    pub client: ClientChannel,
    pub provider: ProviderChannel,
    /// Every request served, by seq (what the provider stores to answer audits).
    pub requests: BTreeMap<u64, SignedRequest>,
    /// Every signed receipt, by seq (what the client keeps as evidence).
    pub receipts: BTreeMap<u64, SignedReceipt>,
    /// The receipts under each commit that landed, by commit id.
    pub commits: BTreeMap<u64, Vec<Receipt>>,
}

/// A fault from its `--fault` spelling.
pub fn fault(spec: &str) -> Fault {
    spec.parse().expect("a known fault")
}

/// The step count of an honest MiniLM run of `text` (where `first|middle|last` land).
pub fn steps(text: &str) -> u64 {
    piazza_arbiter::run_job(
        &minilm(),
        &piazza_arbiter::JobSpec::embedding(text.into()),
        THREADS,
        None,
    )
    .expect("MiniLM runs")
    .step_count()
}

impl World {
    /// The number `name` of the event `kind` made at `height` (about session `session`, if
    /// given); panics with the refusals when there is none.
    fn number_at(&self, height: u64, kind: &str, name: &str, session: Option<u64>) -> u64 {
        let session = session.map(|id| id.to_string());
        let (_, event) = self
            .sim
            .events()
            .into_iter()
            .find(|(h, e)| {
                *h == height
                    && e.kind == kind
                    && session
                        .as_deref()
                        .is_none_or(|id| e.attribute("session") == Some(id))
            })
            .unwrap_or_else(|| panic!("no {kind}: {:?}", self.sim.refusals()));
        event
            .attribute(name)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number {name} in {event:?}"))
    }

    /// The client opens a session on the world's model escrowing `deposit`; returns it once a
    /// provider is assigned (the world has one).
    pub fn open_session(&self, deposit: Amount, expiry_blocks: u64) -> SessionPlay {
        let open = Message::Sessions(sessions::Msg::Open {
            model: self.setup.model.name().into(),
            owner_key: self.user.public_key(),
            authorised: None,
            deposit,
            max_price_per_unit: PRICE_PER_UNIT,
            expiry_blocks,
        });
        self.sim
            .submit(&self.user, vec![open])
            .expect("open admitted");
        let height = self.sim.block();
        let id = self.number_at(height, "sessions.opened", "session", None);
        let start = self.sim.height();
        let terms = loop {
            let record = self
                .sim
                .read(|view| sessions::session(view, id))
                .expect("the session exists");
            if let Some(terms) = Terms::of(&record) {
                break terms;
            }
            assert!(
                self.sim.height() - start < SCENARIO_BLOCKS_MAX,
                "session {id} was never assigned"
            );
            self.sim.block();
        };
        assert_eq!(terms.provider, self.provider.address());
        SessionPlay {
            id,
            client: ClientChannel::new(terms.clone(), self.user.clone()).expect("the owner's key"),
            provider: ProviderChannel::new(terms, self.provider.address())
                .expect("an assigned session"),
            requests: BTreeMap::new(),
            receipts: BTreeMap::new(),
            commits: BTreeMap::new(),
        }
    }

    /// One request of `text` through `session`: the client signs it, the provider runs it with
    /// `fault` (the job path's fault injection) and signs the receipt of that run, the client
    /// checks the receipt against the answer and pays it with a voucher the provider takes.
    /// Returns the request's seq.
    pub fn serve_session(&self, session: &mut SessionPlay, text: &str, fault: &Fault) -> u64 {
        let request = session
            .client
            .request(text.as_bytes().to_vec(), self.setup.model.params(), 256)
            .expect("the request fits the deposit");
        session
            .provider
            .admit(&request)
            .expect("the provider admits the request");
        let run = self.run_request(&request.request, fault);
        let receipt = session
            .provider
            .complete(Served {
                output: &run.output,
                trace_root: Hash(run.trace_root),
                units: run.work_units,
                input_units: run.ids.len() as u64,
                price_per_unit: PRICE_PER_UNIT,
            })
            .expect("a receipt for the request in flight")
            .sign(&self.provider.key);
        let voucher = session
            .client
            .accept(&receipt, &run.output)
            .expect("the client accepts the receipt of the answer it got");
        session
            .provider
            .pay(&voucher)
            .expect("the provider takes the voucher");
        let seq = request.request.seq;
        session.requests.insert(seq, request);
        session.receipts.insert(seq, receipt);
        seq
    }

    /// `request` run on the world's model as a job of it would be, with `fault`.
    fn run_request(&self, request: &Request, fault: &Fault) -> JobRun {
        let spec = piazza_node::arbitration::job_spec(&piazza_ledger::arbitration::Job {
            input: request.input.clone(),
            params: request.params.clone(),
        });
        dispute::run_with_fault(&self.setup.model.loaded(), &spec, THREADS, fault)
            .expect("the model runs the request")
    }

    /// The owner's challenge of request `seq`'s receipt in `commit`, with the trace of its own
    /// honest run of the request; from now on the client plays its disputes (honestly).
    pub fn owner_challenge(&mut self, session: &SessionPlay, commit: u64, seq: u64) -> Message {
        let request = session.requests[&seq].clone();
        let run = self.run_request(&request.request, &Fault::default());
        self.client = Some(Actor::new(
            self.user.clone(),
            Fault::default(),
            self.setup.model,
        ));
        Message::Sessions(sessions::Msg::Challenge {
            session: session.id,
            commit,
            receipt: Box::new(session.receipts[&seq].clone()),
            request: Box::new(request),
            trace_root: Hash(run.trace_root),
            step_count: run.step_count(),
            ids: Hash(run.ids_commitment()),
        })
    }

    /// The provider commits every paid receipt of `session`; returns the commit's id once it
    /// is on chain.
    pub fn commit_session(&self, session: &mut SessionPlay) -> u64 {
        let commit = session.provider.commit().expect("paid receipts to commit");
        let message = Message::Sessions(sessions::Msg::Commit {
            session: session.id,
            root: commit.root,
            count: commit.count,
            units: commit.units,
            voucher: commit.voucher.clone(),
        });
        self.sim
            .submit(&self.provider.key, vec![message])
            .expect("commit admitted");
        let height = self.sim.block();
        let commit_id = self.number_at(height, "sessions.committed", "commit", Some(session.id));
        session.provider.committed(commit.voucher.voucher.seq);
        session.commits.insert(commit_id, commit.receipts);
        commit_id
    }

    /// Commit `id` as the chain holds it.
    pub fn commit_record(&self, id: u64) -> sessions::CommitRecord {
        self.sim
            .read(|view| sessions::commit(view, id))
            .expect("the commit exists")
    }

    /// The provider's reveal of receipt `index` of `commit`, as its daemon makes it (the stored
    /// receipt, its proof, the stored request).
    pub fn reveal(&self, session: &SessionPlay, commit: u64, index: u64) -> Message {
        let receipts = &session.commits[&commit];
        let at = usize::try_from(index).expect("an index of the commit");
        let receipt = receipts[at].clone();
        Message::Sessions(sessions::Msg::Reveal {
            session: session.id,
            commit,
            index,
            request: Box::new(session.requests[&receipt.seq].clone()),
            proof: sessions::prove_receipt(receipts, at).expect("the receipt is in the commit"),
            receipt: Box::new(receipt),
        })
    }

    /// The provider answers every audit drawn on `commit` not yet answered, as its daemon does
    /// (the stored receipt, its proof, the stored request); returns the jobs the reveals
    /// became, once on chain.
    pub fn reveal_audited(&self, session: &SessionPlay, commit: u64) -> Vec<u64> {
        let record = self.commit_record(commit);
        let owed: Vec<u64> = record
            .audited
            .iter()
            .copied()
            .filter(|i| !record.revealed.contains(i))
            .collect();
        for &index in &owed {
            self.sim
                .submit(
                    &self.provider.key,
                    vec![self.reveal(session, commit, index)],
                )
                .expect("reveal admitted");
        }
        self.sim.block();
        let after = self.commit_record(commit);
        assert_eq!(
            after.revealed.len(),
            record.revealed.len() + owed.len(),
            "every reveal landed: {:?}",
            self.sim.refusals()
        );
        after.jobs[record.jobs.len()..].to_vec()
    }
}
