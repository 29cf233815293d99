//! The app loop: answers every Malachite `AppMsg` promptly by talking to Piazza's application over
//! `piazza_consensus::AppMsg` (build a block, commit a decided block, read a stored block) and by
//! keeping the consensus side's own records in [`ConsensusStore`].

use crate::codec::{extend_certificate, SYNC_VALUES_MAX};
use crate::context::{
    BlockId, Height, PiazzaContext, ProposalFin, ProposalInit, ProposalPart, ValidatorAddress,
    ValidatorSet,
};
use crate::signing::{KeySigner, KeyVerifier};
use crate::store::{ConsensusStore, Decision, StoreError, StoredProposal};
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
use piazza_consensus::{AppError, AppMsg as PiazzaMsg, AppSender, Committed};
use piazza_ledger::block::Block;
use std::collections::BTreeMap;
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
}

/// What the app loop needs to know about the chain and this validator.
pub struct AppLoop {
    pub chain_id: String,
    pub address: ValidatorAddress,
    pub signer: KeySigner,
    pub verifier: KeyVerifier,
    pub validators: ValidatorSet,
    pub timeouts: LinearTimeouts,
    pub store: ConsensusStore,
    pub app: AppSender,
    streams: PartStreams,
    height: Height,
    /// Values of the current height already executed by the application (not executed again).
    validated: BTreeMap<BlockId, Validity>,
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
    pub fn new(
        chain_id: String,
        signer: KeySigner,
        validators: ValidatorSet,
        timeouts: LinearTimeouts,
        store: ConsensusStore,
        app: AppSender,
    ) -> Self {
        AppLoop {
            address: ValidatorAddress(signer.public_key().address()),
            verifier: KeyVerifier::new(chain_id.clone()),
            chain_id,
            signer,
            validators,
            timeouts,
            store,
            app,
            streams: PartStreams::new(),
            height: Height(0),
            validated: BTreeMap::new(),
        }
    }

    fn params(&self) -> HeightParams<PiazzaContext> {
        HeightParams::new(self.validators.clone(), self.timeouts, None)
    }

    async fn ask<T>(&self, msg: PiazzaMsg, answer: oneshot::Receiver<T>) -> Result<T, LoopError> {
        self.app.send(msg).await.map_err(|_| LoopError::AppGone)?;
        answer.await.map_err(|_| LoopError::AppGone)
    }

    /// Runs until the engine or the application goes away.
    pub async fn run(mut self, mut channels: Channels<PiazzaContext>) -> Result<(), LoopError> {
        while let Some(msg) = channels.consensus.recv().await {
            self.handle(msg, &channels.network).await?;
        }
        Ok(())
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
                let _ = reply.send((next, self.params()));
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
                let peer = published_by.unwrap_or(from).to_bytes();
                let value = match self.streams.insert(peer, part, self.height) {
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
                let height = certificate.height;
                let proposal = self
                    .store
                    .proposal_of(height, &certificate.value_id)?
                    .ok_or(LoopError::MissingDecidedBlock(certificate.value_id, height))?;
                self.store.put_decided(&Decision {
                    certificate,
                    block_bytes: proposal.block_bytes,
                })?;
                let _ = reply.send(());
            }
            AppMsg::Finalized {
                certificate, reply, ..
            } => {
                let committed = self.finalize(&certificate).await?;
                let next = Height(committed.height + 1);
                self.enter_height(next);
                self.streams.prune_below(next);
                let _ = reply.send(Next::Start(next, self.params()));
            }
            AppMsg::GetDecidedValues { range, reply } => {
                let start = range.start().0;
                let end = range
                    .end()
                    .0
                    .min(start.saturating_add(SYNC_VALUES_MAX as u64 - 1));
                let mut values = Vec::new();
                for h in start..=end {
                    let Some(decision) = self.store.decided(Height(h))? else {
                        break;
                    };
                    values.push(RawDecidedValue::new(
                        Bytes::from(decision.block_bytes),
                        extend_certificate(decision.certificate),
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
                        let validity = self.check_block(&block, height);
                        let stored = StoredProposal {
                            value: ProposedValue {
                                height,
                                round,
                                valid_round: Round::Nil,
                                proposer,
                                value: BlockId(block.hash()),
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
    async fn catch_up(&self) -> Result<Height, LoopError> {
        let (reply, answer) = oneshot::channel();
        let mut next = self
            .ask(PiazzaMsg::ConsensusReady { reply }, answer)
            .await?;
        while let Some(decision) = self.store.decided(Height(next))? {
            let committed = self.commit(&decision.block_bytes).await?;
            next = committed.height + 1;
        }
        Ok(Height(next))
    }

    async fn commit(&self, block_bytes: &[u8]) -> Result<Committed, LoopError> {
        let block = Block::decode_bytes(block_bytes).map_err(StoreError::Corrupt)?;
        let (reply, answer) = oneshot::channel();
        let msg = PiazzaMsg::Decided {
            block: Box::new(block),
            reply,
        };
        Ok(self.ask(msg, answer).await??)
    }

    async fn finalize(
        &self,
        certificate: &CommitCertificate<PiazzaContext>,
    ) -> Result<Committed, LoopError> {
        let height = certificate.height;
        let decision = self
            .store
            .decided(height)?
            .ok_or(LoopError::MissingDecidedBlock(certificate.value_id, height))?;
        let committed = self.commit(&decision.block_bytes).await?;
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
            time_ms: now_ms(),
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
        let expected = self.validators.proposer(init.height, init.round);
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
        let mut validity = self.check_block(&block, init.height);
        // A block of the current height executes now; one of a later height when its height
        // starts (its parent is not committed yet), offered to consensus from `StartedRound`.
        let current = init.height == self.height;
        if validity.is_valid() && current {
            validity = self.execute(block, id).await?;
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
        let validity = self.execute(block, proposal.value.value).await?;
        if validity != proposal.value.validity {
            proposal.value.validity = validity;
            self.store.put_proposal(&proposal)?;
        }
        Ok(proposal.value)
    }

    /// The checks a block passes before it is executed: its height and chain, a proposer that
    /// is a validator and its signature on the header.
    pub fn check_block(&self, block: &Block, height: Height) -> Validity {
        let header = &block.header;
        let proposer = ValidatorAddress(header.proposer.address());
        let ok = header.height == height.0
            && header.chain_id == self.chain_id
            && self.validators.get(&proposer).is_some()
            && header
                .proposer
                .verify(&header.hash().0, &block.signature)
                .is_ok();
        Validity::from_bool(ok)
    }
}
