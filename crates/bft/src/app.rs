//! The app loop: answers every Malachite `AppMsg` promptly by talking to Piazza's application over
//! `piazza_consensus::AppMsg` (build a block, commit a decided block, read a stored block) and by
//! keeping the consensus side's own records in [`ConsensusStore`].

use crate::codec::{
    extend_certificate, GOSSIP_BATCH_BYTES_MAX, GOSSIP_TXS_MAX, GOSSIP_TX_BYTES_MAX,
    SYNC_VALUES_MAX,
};
use crate::context::{
    BlockId, Height, PiazzaContext, ProposalFin, ProposalInit, ProposalPart, Validator,
    ValidatorAddress, ValidatorSet,
};
use crate::signing::{KeySigner, KeyVerifier};
use crate::store::{ConsensusStore, StoreError, StoredProposal};
use crate::streams::{Assembled, PartStreams};
use crate::PART_DATA_BYTES_MAX;
use bytes::Bytes;
use malachitebft_app_channel::app::consensus::ProposedValue;
use malachitebft_app_channel::app::engine::host::{Next, SyncedValueOutcome};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, HeightParams, LinearTimeouts, Round, Validity,
};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::LocallyProposedValue;
use malachitebft_app_channel::{AppMsg, Channels, NetworkMsg};
use piazza_codec::Encode;
use piazza_consensus::{AppError, AppMsg as PiazzaMsg, AppSender, Committed, TxGossip};
use piazza_ledger::block::Block;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Why the app loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the application: {0}")]
    App(#[from] AppError),
    #[error("the application stopped")]
    AppGone,
    #[error("the engine's network channel closed")]
    NetworkGone,
    #[error("decided block {0} at height {1} is not stored")]
    MissingDecidedBlock(BlockId, Height),
    #[error("no validator set for height {0}: {1}")]
    NoValidatorSet(Height, String),
}

/// Validator sets kept at once (the current height's and the few after it the ledger knows).
pub const VALIDATOR_SETS_CACHED_MAX: usize = 8;

/// How far past this validator's clock a proposed block's time may be. A later time is refused
/// (the validator votes nil), so a proposer cannot push the chain's clock ahead, which every
/// window counted in time (deadlines, expiries) would follow.
pub const PROPOSAL_TIME_AHEAD_MS_MAX: u64 = 10_000;
/// Peers' transaction batches held while the application's admission queue is full (each at
/// most `GOSSIP_BATCH_BYTES_MAX`, so at most 64 MiB); a batch beyond them is refused.
pub const GOSSIP_HELD_BATCHES_MAX: usize = 64;

/// What the app loop needs to know about the chain and this validator.
pub struct AppLoop {
    pub chain_id: String,
    pub address: ValidatorAddress,
    pub signer: KeySigner,
    pub verifier: KeyVerifier,
    /// The set for a chain whose ledger records no validators (`None`: the ledger's only).
    configured: Option<ValidatorSet>,
    /// Sets by height, as the application answered them (bounded, pruned as heights pass).
    sets: BTreeMap<Height, ValidatorSet>,
    pub timeouts: LinearTimeouts,
    /// Each height's target time (`BftConfig::block_interval`); `None`: no pacing.
    pub block_interval: Option<Duration>,
    /// Shared with the node's JSON-RPC server (`BftHandle::store`), which reads certificates.
    pub store: Arc<ConsensusStore>,
    pub app: AppSender,
    gossip: Option<TxGossip>,
    streams: PartStreams,
    height: Height,
    /// Values of the current height already executed by the application (not executed again).
    validated: BTreeMap<BlockId, Validity>,
    /// The height and time of the last block the application committed: a proposal for the
    /// next height must be later. `None` before the first block (genesis time is the ledger's).
    parent: Option<(Height, u64)>,
}

/// Time for proposing when the clock is unreadable: the ledger raises it to the parent's time.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn stream_id(height: Height, round: Round) -> StreamId {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&height.0.to_le_bytes());
    bytes.extend_from_slice(&round.as_i64().to_le_bytes());
    StreamId::new(Bytes::from(bytes))
}

/// The parts of a block stream: `Init`, the block bytes in chunks, `Fin`. Deterministic, so a
/// restream is byte-identical.
pub fn block_parts(init: ProposalInit, block_bytes: &[u8], fin: ProposalFin) -> Vec<ProposalPart> {
    let mut parts = vec![ProposalPart::Init(init)];
    parts.extend(
        block_bytes
            .chunks(PART_DATA_BYTES_MAX)
            .map(|c| ProposalPart::Data(c.to_vec())),
    );
    parts.push(ProposalPart::Fin(fin));
    parts
}

impl AppLoop {
    /// An app loop whose validator sets come from the ledger, or are `validators` for a chain
    /// whose ledger records none.
    pub fn new(
        chain_id: String,
        signer: KeySigner,
        validators: ValidatorSet,
        timeouts: LinearTimeouts,
        store: ConsensusStore,
        app: AppSender,
    ) -> Self {
        let mut app_loop = Self::from_ledger(chain_id, signer, timeouts, store, app, None);
        app_loop.configured = Some(validators);
        app_loop
    }

    /// An app loop whose validator set of each height comes from the ledger
    /// (`AppMsg::GetValidatorSet`), exchanging transactions with peers through `gossip`.
    pub fn from_ledger(
        chain_id: String,
        signer: KeySigner,
        timeouts: LinearTimeouts,
        store: ConsensusStore,
        app: AppSender,
        gossip: Option<TxGossip>,
    ) -> Self {
        AppLoop {
            address: ValidatorAddress(signer.public_key().address()),
            verifier: KeyVerifier::new(chain_id.clone()),
            chain_id,
            signer,
            configured: None,
            sets: BTreeMap::new(),
            timeouts,
            block_interval: None,
            store: Arc::new(store),
            app,
            gossip,
            streams: PartStreams::new(),
            height: Height(0),
            validated: BTreeMap::new(),
            parent: None,
        }
    }

    /// The validator set of `height`: the ledger's, the configured one for a chain without
    /// validator records, `None` where the ledger cannot know it yet (too far ahead).
    pub async fn validator_set(
        &mut self,
        height: Height,
    ) -> Result<Option<ValidatorSet>, LoopError> {
        if let Some(set) = self.sets.get(&height) {
            return Ok(Some(set.clone()));
        }
        let (reply, answer) = oneshot::channel();
        let msg = PiazzaMsg::GetValidatorSet {
            height: height.0,
            reply,
        };
        let set = match self.ask(msg, answer).await? {
            Ok(Some(members)) => {
                let validators = members
                    .into_iter()
                    .map(|v| Validator::new(v.consensus_key, v.voting_power))
                    .collect();
                ValidatorSet::new(validators)
                    .map_err(|e| LoopError::NoValidatorSet(height, e.to_string()))?
            }
            Ok(None) => match &self.configured {
                Some(set) => set.clone(),
                None => {
                    return Err(LoopError::NoValidatorSet(
                        height,
                        "the ledger records no validators and none are configured".into(),
                    ))
                }
            },
            Err(error) => {
                tracing::debug!(%height, %error, "validator set not known yet");
                return Ok(None);
            }
        };
        while self.sets.len() >= VALIDATOR_SETS_CACHED_MAX {
            self.sets.pop_first();
        }
        self.sets.insert(height, set.clone());
        Ok(Some(set))
    }

    async fn params(&mut self, height: Height) -> Result<HeightParams<PiazzaContext>, LoopError> {
        let set = self.validator_set(height).await?.ok_or_else(|| {
            LoopError::NoValidatorSet(height, "committed state does not determine it".into())
        })?;
        Ok(HeightParams::new(set, self.timeouts, self.block_interval))
    }

    async fn ask<T>(&self, msg: PiazzaMsg, answer: oneshot::Receiver<T>) -> Result<T, LoopError> {
        self.app.send(msg).await.map_err(|_| LoopError::AppGone)?;
        answer.await.map_err(|_| LoopError::AppGone)
    }

    /// Runs until the engine or the application goes away.
    pub async fn run(mut self, mut channels: Channels<PiazzaContext>) -> Result<(), LoopError> {
        let publisher = self.gossip.as_mut().map(|gossip| {
            gossip.remote = hold_batches(gossip.remote.clone(), GOSSIP_HELD_BATCHES_MAX);
            let (_, closed) = mpsc::channel(1);
            let local = std::mem::replace(&mut gossip.local, closed);
            tokio::spawn(publish_transactions(local, channels.network.clone()))
        });
        let result = async {
            while let Some(msg) = channels.consensus.recv().await {
                self.handle(msg, &channels.network).await?;
            }
            Ok(())
        }
        .await;
        if let Some(publisher) = publisher {
            publisher.abort();
        }
        result
    }

    /// Answers one message. An error is fatal for this validator (the store or the application
    /// failed); refusals of peer input are logged and answered.
    pub async fn handle(
        &mut self,
        msg: AppMsg<PiazzaContext>,
        network: &mpsc::Sender<NetworkMsg<PiazzaContext>>,
    ) -> Result<(), LoopError> {
        match msg {
            AppMsg::ConsensusReady { reply } => {
                let next = self.catch_up().await?;
                self.enter_height(next);
                let params = self.params(next).await?;
                let _ = reply.send((next, params));
            }
            AppMsg::StartedRound {
                height,
                round,
                reply_value,
                ..
            } => {
                self.enter_height(height);
                let stored = match round.as_u32() {
                    Some(r) => self.store.proposals_at(height, r)?,
                    None => Vec::new(),
                };
                let mut values = Vec::with_capacity(stored.len());
                for proposal in stored {
                    values.push(self.revalidate(proposal).await?);
                }
                let _ = reply_value.send(values);
            }
            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
                let proposal = self.own_proposal(height, round, timeout).await?;
                self.stream(&proposal, round, Round::Nil, network).await?;
                let _ = reply.send(LocallyProposedValue::new(
                    height,
                    round,
                    proposal.value.value,
                ));
            }
            AppMsg::ExtendVote { reply, .. } => {
                let _ = reply.send(None);
            }
            AppMsg::VerifyVoteExtensions {
                extensions, reply, ..
            } => {
                let _ = reply.send(extensions.into_iter().map(|(a, _)| (a, Ok(()))).collect());
            }
            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                address,
                value_id,
            } => {
                if address == self.address {
                    if let Some(proposal) = self.store.proposal_of(height, &value_id)? {
                        self.stream(&proposal, round, valid_round, network).await?;
                    }
                }
            }
            AppMsg::GetHistoryMinHeight { reply } => {
                let first = self.store.first_decided()?.unwrap_or(Height(1));
                let _ = reply.send(first);
            }
            AppMsg::ReceivedProposalPart {
                from,
                published_by,
                part,
                reply,
            } => {
                let part = match part.content {
                    StreamContent::Data(ProposalPart::Transactions(batch)) => {
                        self.received_transactions(batch, &from);
                        let _ = reply.send(None);
                        return Ok(());
                    }
                    _ => part,
                };
                let peer = published_by.unwrap_or(from).to_bytes();
                let evicted = self.streams.evicted();
                let inserted = self.streams.insert(peer, part, self.height);
                if self.streams.evicted() > evicted {
                    tracing::debug!(
                        %from,
                        evicted = self.streams.evicted() - evicted,
                        "incomplete proposal streams evicted to make room"
                    );
                }
                let value = match inserted {
                    Ok(Some(assembled)) => self.accept_stream(assembled).await?,
                    Ok(None) => None,
                    Err(error) => {
                        tracing::warn!(%from, %error, "proposal part refused");
                        None
                    }
                };
                let _ = reply.send(value);
            }
            AppMsg::Decided {
                certificate, reply, ..
            } => {
                // The block stays in the stored proposals until the application commits it.
                let height = certificate.height;
                if self
                    .store
                    .proposal_of(height, &certificate.value_id)?
                    .is_none()
                {
                    return Err(LoopError::MissingDecidedBlock(certificate.value_id, height));
                }
                self.store.put_certificate(&certificate)?;
                let _ = reply.send(());
            }
            AppMsg::Finalized {
                certificate, reply, ..
            } => {
                let committed = self.finalize(&certificate).await?;
                let next = Height(committed.height + 1);
                self.enter_height(next);
                self.streams.prune_below(next);
                let params = self.params(next).await?;
                let _ = reply.send(Next::Start(next, params));
            }
            AppMsg::GetDecidedValues { range, reply } => {
                let start = range.start().0;
                let end = range
                    .end()
                    .0
                    .min(start.saturating_add(SYNC_VALUES_MAX as u64 - 1));
                let mut values = Vec::new();
                for h in start..=end {
                    let Some(certificate) = self.store.certificate(Height(h))? else {
                        break;
                    };
                    let Some(block_bytes) = self.decided_block(&certificate).await? else {
                        break;
                    };
                    values.push(RawDecidedValue::new(
                        Bytes::from(block_bytes),
                        extend_certificate(certificate),
                    ));
                }
                let _ = reply.send(values);
            }
            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => {
                let outcome = match Block::decode_bytes(&value_bytes) {
                    Err(error) => {
                        tracing::warn!(%height, %error, "synced value does not decode");
                        SyncedValueOutcome::PeerFault
                    }
                    Ok(block) => {
                        // The engine checked the commit certificate against the height's set;
                        // the block itself must pass the checks and, at the current height,
                        // execute to its header's state root.
                        let id = BlockId(block.hash());
                        let mut validity = match self.validator_set(height).await? {
                            Some(set) => self.check_block(&block, height, &set),
                            None => Validity::Invalid,
                        };
                        if validity.is_valid() && height == self.height {
                            validity = self.execute(block, id).await?;
                        }
                        if validity.is_invalid() {
                            tracing::warn!(%height, block = %id, "synced block refused");
                        }
                        let stored = StoredProposal {
                            value: ProposedValue {
                                height,
                                round,
                                valid_round: Round::Nil,
                                proposer,
                                value: id,
                                validity,
                            },
                            block_bytes: value_bytes.to_vec(),
                        };
                        if round.is_defined() {
                            self.store.put_proposal(&stored)?;
                        }
                        SyncedValueOutcome::Verdict(stored.value)
                    }
                };
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }

    /// Commits every decision stored above the application's head (a crash between `Decided`
    /// and `Finalized`), then returns the next height to decide.
    async fn catch_up(&mut self) -> Result<Height, LoopError> {
        let (reply, answer) = oneshot::channel();
        let mut next = self
            .ask(PiazzaMsg::ConsensusReady { reply }, answer)
            .await?;
        while let Some(certificate) = self.store.certificate(Height(next))? {
            let committed = self.finalize(&certificate).await?;
            next = committed.height + 1;
        }
        if next > 1 && self.parent.is_none_or(|(h, _)| h.0 + 1 != next) {
            let (reply, answer) = oneshot::channel();
            let msg = PiazzaMsg::GetDecidedValue {
                height: next - 1,
                reply,
            };
            self.parent = self
                .ask(msg, answer)
                .await?
                .map(|block| (Height(next - 1), block.header.time_ms));
        }
        Ok(Height(next))
    }

    /// The bytes of a decided block: the application's committed block, or the stored
    /// proposal while the application has not committed it yet.
    async fn decided_block(
        &self,
        certificate: &CommitCertificate<PiazzaContext>,
    ) -> Result<Option<Vec<u8>>, LoopError> {
        let (reply, answer) = oneshot::channel();
        let msg = PiazzaMsg::GetDecidedValue {
            height: certificate.height.0,
            reply,
        };
        if let Some(block) = self.ask(msg, answer).await? {
            if block.hash() == certificate.value_id.0 {
                return Ok(Some(block.to_bytes()));
            }
        }
        let proposal = self
            .store
            .proposal_of(certificate.height, &certificate.value_id)?;
        Ok(proposal.map(|p| p.block_bytes))
    }

    async fn commit(&mut self, block_bytes: &[u8]) -> Result<Committed, LoopError> {
        let block = Block::decode_bytes(block_bytes).map_err(StoreError::Corrupt)?;
        let parent = (Height(block.header.height), block.header.time_ms);
        let (reply, answer) = oneshot::channel();
        let msg = PiazzaMsg::Decided {
            block: Box::new(block),
            reply,
        };
        let committed = self.ask(msg, answer).await??;
        self.parent = Some(parent);
        Ok(committed)
    }

    async fn finalize(
        &mut self,
        certificate: &CommitCertificate<PiazzaContext>,
    ) -> Result<Committed, LoopError> {
        let height = certificate.height;
        let proposal = self
            .store
            .proposal_of(height, &certificate.value_id)?
            .ok_or(LoopError::MissingDecidedBlock(certificate.value_id, height))?;
        let committed = self.commit(&proposal.block_bytes).await?;
        // Committed by the application: its store holds the block from now on.
        self.store.prune_proposals(height)?;
        Ok(committed)
    }

    /// This validator's proposal for (`height`, `round`): the stored one if it proposed there
    /// before (a restart), otherwise a new block from the application, stored before use.
    async fn own_proposal(
        &self,
        height: Height,
        round: Round,
        timeout: Duration,
    ) -> Result<StoredProposal, LoopError> {
        if let Some(r) = round.as_u32() {
            let stored = self.store.proposals_at(height, r)?;
            if let Some(own) = stored
                .into_iter()
                .find(|p| p.value.proposer == self.address)
            {
                return Ok(own);
            }
        }
        let (reply, answer) = oneshot::channel();
        let msg = PiazzaMsg::GetValue {
            height: height.0,
            time_ms: self.proposal_time_ms(height),
            reply,
        };
        let block = match tokio::time::timeout(timeout, self.ask(msg, answer)).await {
            Ok(block) => block??,
            Err(_) => {
                return Err(AppError(
                    "building a block took longer than the propose timeout".into(),
                )
                .into())
            }
        };
        let proposal = StoredProposal {
            value: ProposedValue {
                height,
                round,
                valid_round: Round::Nil,
                proposer: self.address,
                value: BlockId(block.hash()),
                validity: Validity::Valid,
            },
            block_bytes: block.to_bytes(),
        };
        self.store.put_proposal(&proposal)?;
        Ok(proposal)
    }

    async fn stream(
        &self,
        proposal: &StoredProposal,
        round: Round,
        pol_round: Round,
        network: &mpsc::Sender<NetworkMsg<PiazzaContext>>,
    ) -> Result<(), LoopError> {
        let height = proposal.value.height;
        let id = proposal.value.value;
        let init = ProposalInit {
            height,
            round,
            pol_round,
            proposer: self.address,
        };
        let fin = ProposalFin {
            signature: self.signer.sign_parts(height, round, &id),
        };
        let stream_id = stream_id(height, round);
        let parts = block_parts(init, &proposal.block_bytes, fin);
        let end = parts.len() as u64;
        let messages = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| StreamMessage::new(stream_id.clone(), i as u64, StreamContent::Data(p)))
            .chain(std::iter::once(StreamMessage::new(
                stream_id.clone(),
                end,
                StreamContent::Fin,
            )));
        for msg in messages {
            network
                .send(NetworkMsg::PublishProposalPart(msg))
                .await
                .map_err(|_| LoopError::NetworkGone)?;
        }
        Ok(())
    }

    /// Checks a complete stream: from the round's proposer, signed by it, a block that decodes.
    /// Returns the value to give consensus (valid or not), or `None` for a stream not to trust.
    async fn accept_stream(
        &mut self,
        stream: Assembled,
    ) -> Result<Option<ProposedValue<PiazzaContext>>, LoopError> {
        let init = &stream.init;
        let Some(set) = self.validator_set(init.height).await? else {
            tracing::warn!(height = %init.height, "proposal stream for a height whose validator set is not known yet");
            return Ok(None);
        };
        let expected = set.proposer(init.height, init.round);
        if expected.address != init.proposer {
            tracing::warn!(height = %init.height, round = %init.round, proposer = %init.proposer, "proposal stream from a validator that is not the round's proposer");
            return Ok(None);
        }
        let block = match Block::decode_bytes(&stream.block_bytes) {
            Ok(block) => block,
            Err(error) => {
                tracing::warn!(height = %init.height, %error, "proposed block does not decode");
                return Ok(None);
            }
        };
        let id = BlockId(block.hash());
        if !self.verifier.verify_parts(
            &expected.public_key,
            init.height,
            init.round,
            &id,
            &stream.fin.signature,
        ) {
            tracing::warn!(height = %init.height, round = %init.round, "proposal stream with a bad signature");
            return Ok(None);
        }
        let mut validity = self.check_block(&block, init.height, &set);
        // A block of the current height executes now; one of a later height when its height
        // starts (its parent is not committed yet), offered to consensus from `StartedRound`.
        let current = init.height == self.height;
        if validity.is_valid() && current {
            validity = self.execute_proposal(block, id).await?;
        }
        let proposal = StoredProposal {
            value: ProposedValue {
                height: init.height,
                round: init.round,
                valid_round: init.pol_round,
                proposer: init.proposer,
                value: id,
                validity,
            },
            block_bytes: stream.block_bytes,
        };
        if init.round.is_defined() {
            self.store.put_proposal(&proposal)?;
        }
        Ok(current.then_some(proposal.value))
    }

    fn enter_height(&mut self, height: Height) {
        if height != self.height {
            self.validated.clear();
        }
        self.height = height;
        self.sets.retain(|h, _| *h >= height);
    }

    /// Hands a peer's batch of transactions to the application (bounded: while the application
    /// is busy, up to `GOSSIP_HELD_BATCHES_MAX` batches wait in order (see [`hold_batches`]);
    /// beyond them a batch is refused, and stays in the mempools of the nodes that have it).
    fn received_transactions(&self, batch: Vec<Vec<u8>>, from: &impl std::fmt::Display) {
        let Some(gossip) = &self.gossip else {
            return;
        };
        let count = batch.len();
        if let Err(error) = gossip.remote.try_send(batch) {
            tracing::warn!(%from, count, %error, "gossiped transactions refused: the queue to the application is full");
        }
    }

    /// The time this validator proposes at `height`: its clock, raised past the parent's time
    /// (the time of a proposal must be after its parent's).
    fn proposal_time_ms(&self, height: Height) -> u64 {
        match self.parent {
            Some((parent, time_ms)) if parent.0 + 1 == height.0 => {
                now_ms().max(time_ms.saturating_add(1))
            }
            _ => now_ms(),
        }
    }

    /// Why a proposed block's time is refused: not after its parent's (when the parent is the
    /// last committed block), or more than `PROPOSAL_TIME_AHEAD_MS_MAX` past this clock.
    pub fn check_time(&self, block: &Block) -> Result<(), String> {
        let time_ms = block.header.time_ms;
        if let Some((parent, parent_ms)) = self.parent {
            if parent.0 + 1 == block.header.height && time_ms <= parent_ms {
                return Err(format!(
                    "its time {time_ms} ms is not after its parent's, {parent_ms} ms"
                ));
            }
        }
        let now = now_ms();
        if time_ms > now.saturating_add(PROPOSAL_TIME_AHEAD_MS_MAX) {
            return Err(format!(
                "its time {time_ms} ms is {} ms ahead of this validator's clock (at most {PROPOSAL_TIME_AHEAD_MS_MAX})",
                time_ms - now
            ));
        }
        Ok(())
    }

    /// A proposal of the current height: its time checked, then executed by the application.
    async fn execute_proposal(&mut self, block: Block, id: BlockId) -> Result<Validity, LoopError> {
        if let Some(validity) = self.validated.get(&id) {
            return Ok(*validity);
        }
        if let Err(reason) = self.check_time(&block) {
            tracing::warn!(height = block.header.height, block = %id, %reason, "proposed block refused");
            self.validated.insert(id, Validity::Invalid);
            return Ok(Validity::Invalid);
        }
        self.execute(block, id).await
    }

    /// Has the application execute another validator's block of the current height (once per
    /// block); a block it refuses is `Invalid`.
    async fn execute(&mut self, block: Block, id: BlockId) -> Result<Validity, LoopError> {
        if let Some(validity) = self.validated.get(&id) {
            return Ok(*validity);
        }
        let height = block.header.height;
        let (reply, answer) = oneshot::channel();
        let msg = PiazzaMsg::ValidateValue {
            block: Box::new(block),
            reply,
        };
        let validity = match self.ask(msg, answer).await? {
            Ok(()) => Validity::Valid,
            Err(error) => {
                tracing::warn!(height, %error, "proposed block refused");
                Validity::Invalid
            }
        };
        self.validated.insert(id, validity);
        Ok(validity)
    }

    /// A stored proposal as consensus gets it at the start of a round: another validator's
    /// block that passed the structural checks is executed first (it may have arrived before
    /// its height started).
    async fn revalidate(
        &mut self,
        mut proposal: StoredProposal,
    ) -> Result<ProposedValue<PiazzaContext>, LoopError> {
        let own = proposal.value.proposer == self.address;
        if own || proposal.value.validity.is_invalid() {
            return Ok(proposal.value);
        }
        let block = Block::decode_bytes(&proposal.block_bytes).map_err(StoreError::Corrupt)?;
        let validity = self.execute_proposal(block, proposal.value.value).await?;
        if validity != proposal.value.validity {
            proposal.value.validity = validity;
            self.store.put_proposal(&proposal)?;
        }
        Ok(proposal.value)
    }

    /// The checks a block passes before it is executed: its height and chain, a proposer that
    /// is a validator of `set` (the height's) and its signature on the header.
    pub fn check_block(&self, block: &Block, height: Height, set: &ValidatorSet) -> Validity {
        let header = &block.header;
        let proposer = ValidatorAddress(header.proposer.address());
        let ok = header.height == height.0
            && header.chain_id == self.chain_id
            && set.get(&proposer).is_some()
            && header
                .proposer
                .verify(&header.hash().0, &block.signature)
                .is_ok();
        Validity::from_bool(ok)
    }
}

/// A sender in front of `to` that holds up to `capacity` batches while `to` is full and hands
/// them on in order as it drains (back-pressure instead of refusal); `try_send` on it refuses
/// only when those are taken too. The forwarding task ends when every sender is dropped or `to`
/// closes.
pub fn hold_batches(to: mpsc::Sender<Vec<Vec<u8>>>, capacity: usize) -> mpsc::Sender<Vec<Vec<u8>>> {
    let (held, mut waiting) = mpsc::channel::<Vec<Vec<u8>>>(capacity);
    tokio::spawn(async move {
        while let Some(batch) = waiting.recv().await {
            if to.send(batch).await.is_err() {
                return;
            }
        }
    });
    held
}

/// Publishes the transactions the application admitted from clients, in batches of what is
/// waiting (at most `GOSSIP_TXS_MAX` transactions, adding while under `GOSSIP_BATCH_BYTES_MAX`),
/// each batch a one-message stream of its own on the proposal-part gossip. A transaction over
/// `GOSSIP_TX_BYTES_MAX` is not gossiped (it stays in this node's mempool).
async fn publish_transactions(
    mut local: mpsc::Receiver<Vec<u8>>,
    network: mpsc::Sender<NetworkMsg<PiazzaContext>>,
) {
    let mut batches: u64 = 0;
    while let Some(first) = local.recv().await {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(tx) = next.take() {
            if tx.len() > GOSSIP_TX_BYTES_MAX {
                tracing::debug!(
                    bytes = tx.len(),
                    "a transaction too large to gossip stays local"
                );
            } else {
                bytes += tx.len();
                batch.push(tx);
            }
            if batch.len() < GOSSIP_TXS_MAX && bytes < GOSSIP_BATCH_BYTES_MAX {
                next = local.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        batches += 1;
        let mut id = b"piazza/tx/".to_vec();
        id.extend_from_slice(&batches.to_le_bytes());
        let msg = StreamMessage::new(
            StreamId::new(Bytes::from(id)),
            0,
            StreamContent::Data(ProposalPart::Transactions(batch)),
        );
        if network
            .send(NetworkMsg::PublishProposalPart(msg))
            .await
            .is_err()
        {
            return;
        }
    }
}
