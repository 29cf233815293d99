//! A light client: blocks trusted because the network's validators certified them, checked from
//! a trust anchor (the network's genesis) instead of the validator set a node reports.
//!
//! The set of height `H` is the schedule entry in force at `H`, read from the state committed at
//! `H - 1`; a node sends it with the state proof of `staking/validator_schedule` at `H - 1`. Block
//! `H` is trusted when, in order:
//! - its proposer signature holds, it names the anchor's chain and height `H`;
//! - its parent hash is the hash of block `H - 1`, and the set it is given is the one that block
//!   `H - 1`'s state root proves;
//! - its commit certificate holds more than two thirds of that set's power, and
//! - the set is trusted: either block `H - 1` is (sequential), or the certificate's signers hold
//!   more than one third of the power of the closest trusted set below `H` (skipping: at least
//!   one of them is honest, so the block is the network's). When that overlap is too small,
//!   a height half-way is verified first (bisection), at most `steps_max` blocks per height.
//!
//! Invariants: the anchor is never forgotten; at most `trusted_heights_max` heights are kept; a
//! height is trusted only after every check above passed, so a node that forges a validator set
//! and signs its own certificates is refused (its signers hold none of the anchor's power).

use crate::{decode_certificate, verify_commit, verify_state_proof, ClientError};
use piazza_api::{CommitCertificateInfo, ValidatorInfo, ValidatorSetInfo};
use piazza_consensus::certificate::{self, CertifiedPower, Member};
use piazza_ledger::block::Block;
use piazza_ledger::genesis::NetworkGenesis;
use piazza_ledger::staking::state_key;
use piazza_ledger::staking::validators::{self, ActiveValidator};
use piazza_ledger::state::StateDelta;
use piazza_primitives::Hash;
use std::collections::BTreeMap;

/// Heights a light client keeps trusted by default (the anchor and the latest others).
pub const TRUSTED_HEIGHTS_MAX: usize = 64;
/// Blocks a light client checks by default to trust one height (bisection included): enough to
/// halve a gap of 2^32 heights twice over.
pub const VERIFY_STEPS_MAX: usize = 64;

/// What a light client starts from: a chain and the validator set of one of its heights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    pub chain_id: String,
    pub height: u64,
    pub validators: Vec<ActiveValidator>,
}

impl TrustAnchor {
    /// The network's genesis: its chain and the set it schedules for height 1, computed by the
    /// ledger's own genesis (voting power from the bonds, as every node computes it).
    pub fn from_genesis(genesis: &NetworkGenesis) -> Result<TrustAnchor, ClientError> {
        let writes = piazza_ledger::executor::init_network(genesis)
            .map_err(|e| ClientError::Verification(format!("the genesis: {e}")))?;
        let state: BTreeMap<Vec<u8>, Vec<u8>> = writes
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect();
        let set = validators::validator_set(&StateDelta::new(&state), 1).ok_or_else(|| {
            ClientError::Verification(
                "the genesis names no validators: a solo chain has no certificates to check".into(),
            )
        })?;
        Ok(TrustAnchor {
            chain_id: genesis.genesis.chain_id.clone(),
            height: 1,
            validators: set.validators,
        })
    }
}

/// Bounds of a light client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LightConfig {
    pub trusted_heights_max: usize,
    pub steps_max: usize,
}

impl Default for LightConfig {
    fn default() -> Self {
        LightConfig {
            trusted_heights_max: TRUSTED_HEIGHTS_MAX,
            steps_max: VERIFY_STEPS_MAX,
        }
    }
}

/// What the light client asks of a node (a [`crate::Client`], or a fabricated chain in tests).
pub(crate) trait ChainSource {
    /// Block `height` with its proposer signature checked.
    async fn block(&self, height: u64) -> Result<Block, ClientError>;
    async fn validators(&self, height: u64) -> Result<Option<ValidatorSetInfo>, ClientError>;
    async fn certificate(&self, height: u64) -> Result<Option<CommitCertificateInfo>, ClientError>;
}

impl ChainSource for crate::Client {
    async fn block(&self, height: u64) -> Result<Block, ClientError> {
        self.raw_block(height)
            .await?
            .ok_or_else(|| ClientError::Verification(format!("no block at height {height}")))
    }

    async fn validators(&self, height: u64) -> Result<Option<ValidatorSetInfo>, ClientError> {
        crate::Client::validators(self, height).await
    }

    async fn certificate(&self, height: u64) -> Result<Option<CommitCertificateInfo>, ClientError> {
        self.commit_certificate(height).await
    }
}

/// A height the light client trusts: its set and, once checked, its block.
#[derive(Debug, Clone)]
struct Trusted {
    members: Vec<Member>,
    /// (block hash, state root, power of its certificate); `None` for the anchor before its
    /// block is checked.
    block: Option<(Hash, Hash, CertifiedPower)>,
}

/// The trusted heights of one network.
#[derive(Debug)]
pub struct LightClient {
    chain_id: String,
    anchor: u64,
    config: LightConfig,
    trusted: BTreeMap<u64, Trusted>,
}

/// Why one step did not trust its height.
enum Step {
    Refused(ClientError),
    /// The certificate's signers hold too little of the trusted set of this height.
    Bisect(u64),
}

impl From<ClientError> for Step {
    fn from(e: ClientError) -> Step {
        Step::Refused(e)
    }
}

fn members_of(validators: &[ActiveValidator]) -> Vec<Member> {
    validators
        .iter()
        .map(|v| Member {
            public_key: v.consensus_key,
            voting_power: v.voting_power,
        })
        .collect()
}

fn refused(height: u64, what: impl std::fmt::Display) -> ClientError {
    ClientError::Verification(format!("height {height}: {what}"))
}

/// `e`, its text naming `height` when it is a refusal.
fn refused_at(height: u64, e: ClientError) -> ClientError {
    match e {
        ClientError::Verification(text) => refused(height, text),
        other => other,
    }
}

impl LightClient {
    pub fn new(anchor: TrustAnchor, config: LightConfig) -> LightClient {
        let trusted = Trusted {
            members: members_of(&anchor.validators),
            block: None,
        };
        LightClient {
            chain_id: anchor.chain_id,
            anchor: anchor.height,
            config: LightConfig {
                trusted_heights_max: config.trusted_heights_max.max(1),
                steps_max: config.steps_max.max(1),
            },
            trusted: BTreeMap::from([(anchor.height, trusted)]),
        }
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// The heights trusted now, ascending (the anchor first).
    pub fn trusted_heights(&self) -> Vec<u64> {
        self.trusted.keys().copied().collect()
    }

    fn trusted_block(&self, height: u64) -> Option<(Hash, CertifiedPower)> {
        let (hash, _, power) = self.trusted.get(&height)?.block?;
        Some((hash, power))
    }

    /// Trusts block `height` (hash and certified power) by the checks of the module doc.
    pub(crate) async fn verify(
        &mut self,
        source: &impl ChainSource,
        height: u64,
    ) -> Result<(Hash, CertifiedPower), ClientError> {
        if height < self.anchor {
            return Err(refused(
                height,
                format!("below the trust anchor (height {})", self.anchor),
            ));
        }
        let mut pending = vec![height];
        let mut steps = 0;
        while let Some(&target) = pending.last() {
            if self.trusted_block(target).is_some() {
                pending.pop();
                continue;
            }
            steps += 1;
            if steps > self.config.steps_max {
                return Err(refused(
                    height,
                    format!(
                        "not trusted within {} blocks checked",
                        self.config.steps_max
                    ),
                ));
            }
            match self.step(source, target).await {
                Ok(trusted) => {
                    self.remember(target, trusted);
                    pending.pop();
                }
                Err(Step::Bisect(basis)) => pending.push(basis + (target - basis) / 2),
                Err(Step::Refused(e)) => return Err(e),
            }
        }
        self.trusted_block(height)
            .ok_or_else(|| refused(height, "forgotten as soon as trusted"))
    }

    /// The power certifying `block`, refused unless it is the block the network's validators
    /// certified at its height.
    pub(crate) async fn certify(
        &mut self,
        source: &impl ChainSource,
        block: &Block,
    ) -> Result<CertifiedPower, ClientError> {
        let height = block.header.height;
        let (hash, power) = self.verify(source, height).await?;
        if hash != block.hash() {
            return Err(refused(
                height,
                "the block is not the one the network's validators certified",
            ));
        }
        Ok(power)
    }

    fn remember(&mut self, height: u64, trusted: Trusted) {
        self.trusted.insert(height, trusted);
        while self.trusted.len() > self.config.trusted_heights_max {
            let oldest = self
                .trusted
                .keys()
                .copied()
                .find(|h| *h != self.anchor && *h != height);
            match oldest {
                Some(h) => self.trusted.remove(&h),
                None => break,
            };
        }
    }

    /// Checks block `height` against the closest trusted height at or below it.
    async fn step(&self, source: &impl ChainSource, height: u64) -> Result<Trusted, Step> {
        let (&basis_height, basis) = self
            .trusted
            .range(..=height)
            .next_back()
            .ok_or_else(|| refused(height, "no trusted height below"))?;
        let block = source.block(height).await?;
        if block.header.height != height || block.header.chain_id != self.chain_id {
            return Err(refused(
                height,
                format!(
                    "the node sent block {} of chain `{}`, not of `{}`",
                    block.header.height, block.header.chain_id, self.chain_id
                ),
            )
            .into());
        }
        let certificate = source
            .certificate(height)
            .await?
            .ok_or_else(|| refused(height, "the node has no commit certificate for the block"))?;
        let certificate = decode_certificate(&certificate)?;
        // The anchor's own height: its set is trusted as given.
        if basis_height == height {
            let power = verify_commit(&certificate, &block, &basis.members)
                .map_err(|e| refused_at(height, e))?;
            return Ok(Trusted {
                members: basis.members.clone(),
                block: Some((block.hash(), block.header.state_root, power)),
            });
        }
        let parent_height = height - 1;
        let parent = match (basis_height == parent_height, basis.block) {
            (true, Some((hash, state_root, _))) => (hash, state_root),
            _ => {
                let parent = source.block(parent_height).await?;
                (parent.hash(), parent.header.state_root)
            }
        };
        if block.header.parent_hash != parent.0 {
            return Err(refused(height, "its parent hash is not block height - 1's hash").into());
        }
        let members = self.proven_set(source, height, &parent.1).await?;
        let power =
            verify_commit(&certificate, &block, &members).map_err(|e| refused_at(height, e))?;
        let sequential = basis_height == parent_height && basis.block.is_some();
        if !sequential {
            let (signed, total) = trusted_power(&block, &certificate, &basis.members);
            // More than one third of a trusted set: at least one honest signer.
            if 3 * u128::from(signed) <= u128::from(total) {
                return Err(Step::Bisect(basis_height));
            }
        }
        Ok(Trusted {
            members,
            block: Some((block.hash(), block.header.state_root, power)),
        })
    }

    /// The set of `height` as the node sends it, refused unless the state proof it carries is
    /// of `staking/validator_schedule` at `height - 1` against `parent_root` and names the same
    /// set.
    async fn proven_set(
        &self,
        source: &impl ChainSource,
        height: u64,
        parent_root: &Hash,
    ) -> Result<Vec<Member>, ClientError> {
        let info = source
            .validators(height)
            .await?
            .ok_or_else(|| refused(height, "the node names no validator set"))?;
        let proof = info.schedule_proof.as_ref().ok_or_else(|| {
            refused(
                height,
                "the node sent the validator set without its state proof",
            )
        })?;
        if proof.height != height - 1 || proof.state_root != parent_root.to_hex() {
            return Err(refused(
                height,
                "the validator set's proof is not against block height - 1's state root",
            ));
        }
        let key = state_key::validator_schedule();
        let value = verify_state_proof(&key, proof)
            .map_err(|e| refused(height, format!("the validator set's proof: {e}")))?;
        let state: BTreeMap<Vec<u8>, Vec<u8>> = value.map(|v| (key, v)).into_iter().collect();
        let set = validators::validator_set(&StateDelta::new(&state), height)
            .ok_or_else(|| refused(height, "the proven state schedules no validator set"))?;
        if info.validators != validator_infos(&set.validators) {
            return Err(refused(
                height,
                "the validator set the node names is not the one its proof holds",
            ));
        }
        Ok(members_of(&set.validators))
    }
}

/// `validators` as a node names them in `piazza_getValidators`.
fn validator_infos(validators: &[ActiveValidator]) -> Vec<ValidatorInfo> {
    validators
        .iter()
        .map(|v| ValidatorInfo {
            operator: v.operator.to_string(),
            consensus_key: v.consensus_key.to_hex(),
            voting_power: v.voting_power,
        })
        .collect()
}

/// The power of `trusted` whose members validly precommitted `block` in `certificate`, and the
/// set's total; a signer outside `trusted`, twice, or with a bad signature adds nothing.
fn trusted_power(
    block: &Block,
    certificate: &certificate::CommitCertificate,
    trusted: &[Member],
) -> (u64, u64) {
    let members: BTreeMap<_, _> = trusted
        .iter()
        .map(|m| (m.public_key.address(), m))
        .collect();
    let total = trusted
        .iter()
        .map(|m| m.voting_power)
        .fold(0, u64::saturating_add);
    let mut counted = std::collections::BTreeSet::new();
    let mut signed: u64 = 0;
    for entry in &certificate.signatures {
        let Some(member) = members.get(&entry.validator) else {
            continue;
        };
        let vote = certificate::VoteFields {
            kind: certificate::VoteKind::Precommit,
            height: certificate.height,
            round: Some(certificate.round),
            block: Some(certificate.block),
            validator: entry.validator,
        };
        let bytes = certificate::vote_signing_bytes(&block.header.chain_id, &vote);
        if member.public_key.verify(&bytes, &entry.signature).is_ok()
            && counted.insert(entry.validator)
        {
            signed = signed.saturating_add(member.voting_power);
        }
    }
    (signed, total)
}

#[cfg(test)]
mod tests {
    //! Chains built by the ledger itself (genesis, executed blocks, a Merkle state per height,
    //! proposer and precommit signatures), served to the light client as a node would.
    use super::*;
    use piazza_api::{CommitSignatureInfo, StateProofInfo};
    use piazza_ledger::block::{prove_randomness, tx_root, BlockHeader};
    use piazza_ledger::executor::{self, BlockExecutor};
    use piazza_ledger::genesis::{
        FeeParams, Genesis, GenesisAccount, GenesisBond, GenesisValidator,
    };
    use piazza_ledger::module::BlockContext;
    use piazza_ledger::staking::{self, Role};
    use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
    use piazza_merkle::{key_hash, MemoryTreeStore, StateProof, Tree};
    use piazza_primitives::{Amount, SecretKey};

    const CHAIN: &str = "piazza-light-test";
    /// Bond of each genesis validator, and of each validator that joins later (100x more).
    const GENESIS_BOND_PZA: u64 = 10_000;
    const JOINING_BOND_PZA: u64 = 1_000_000;
    /// The height whose block bonds the joining validators; their set signs from
    /// `JOIN_HEIGHT + VALIDATOR_SET_DELAY`.
    const JOIN_HEIGHT: u64 = 3;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    /// A network genesis whose validators are `validators` and which funds `joining` too.
    fn genesis(validators: &[SecretKey], joining: &[SecretKey]) -> NetworkGenesis {
        let funded = |k: &SecretKey| GenesisAccount {
            address: k.public_key().address(),
            balance: Amount::pza(2 * JOINING_BOND_PZA),
        };
        NetworkGenesis {
            genesis: Genesis {
                chain_id: CHAIN.into(),
                genesis_time_ms: 1_000,
                fees: FeeParams::default(),
                staking: staking::Params::default(),
                accounts: validators.iter().chain(joining).map(funded).collect(),
                bonds: validators
                    .iter()
                    .map(|k| GenesisBond {
                        address: k.public_key().address(),
                        role: Role::Validator,
                        amount: Amount::pza(GENESIS_BOND_PZA),
                    })
                    .collect(),
                models: Vec::new(),
                compute: Default::default(),
                verify: Default::default(),
                sessions: Default::default(),
                storage: Default::default(),
                agents: Default::default(),
            },
            validators: validators
                .iter()
                .map(|k| GenesisValidator {
                    consensus_key: k.public_key(),
                })
                .collect(),
        }
    }

    /// What a node serves of a chain: per height (index `height - 1`) the block, its
    /// certificate and its validator set with the schedule's proof at `height - 1`.
    struct Chain {
        blocks: Vec<Block>,
        certificates: Vec<CommitCertificateInfo>,
        sets: Vec<ValidatorSetInfo>,
    }

    /// Executes `heights` blocks on `genesis`; at `JOIN_HEIGHT` every key of `joining` bonds as
    /// a validator. Each block is proposed by its set's first validator and precommitted by
    /// the fewest largest validators holding more than two thirds of the set's power.
    fn build(
        genesis: &NetworkGenesis,
        keys: &[SecretKey],
        joining: &[SecretKey],
        heights: u64,
    ) -> Chain {
        let secret = |address: &piazza_primitives::Address| {
            keys.iter()
                .chain(joining)
                .find(|k| k.public_key().address() == *address)
                .expect("a key of the chain")
                .clone()
        };
        let store = MemoryTreeStore::default();
        let mut state: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut roots = Vec::new();
        let commit = |writes: executor::Writes, version: u64, state: &mut BTreeMap<_, _>| {
            let (root, batch) = Tree::new(&store)
                .put_value_set(
                    writes.iter().map(|(k, v)| (key_hash(k), v.clone())),
                    version,
                )
                .unwrap();
            store.write(batch.node_batch);
            for (k, v) in writes {
                match v {
                    Some(v) => state.insert(k, v),
                    None => state.remove(&k),
                };
            }
            Hash(root.0)
        };
        roots.push(commit(
            executor::init_network(genesis).unwrap(),
            0,
            &mut state,
        ));
        let schedule_key = state_key::validator_schedule();
        let mut chain = Chain {
            blocks: Vec::new(),
            certificates: Vec::new(),
            sets: Vec::new(),
        };
        let mut parent_hash = Hash([0; 32]);
        for height in 1..=heights {
            let set = validators::validator_set(&StateDelta::new(&state), height).unwrap();
            let (value, proof) = Tree::new(&store)
                .get_with_proof(key_hash(&schedule_key), height - 1)
                .unwrap();
            chain.sets.push(ValidatorSetInfo {
                height,
                total_voting_power: set.validators.iter().map(|v| v.voting_power).sum(),
                validators: validator_infos(&set.validators),
                schedule_proof: Some(StateProofInfo {
                    height: height - 1,
                    state_root: roots[height as usize - 1].to_hex(),
                    key: hex::encode(&schedule_key),
                    value: value.map(hex::encode),
                    proof: hex::encode(StateProof::new(proof).to_bytes()),
                }),
            });
            let proposer = secret(&set.validators[0].consensus_key.address());
            let previous = executor::chain_head(&state).unwrap().randomness;
            let (randomness, randomness_proof) =
                prove_randomness(&proposer, CHAIN, height, &previous);
            let time_ms = 1_000 + height * 1_000;
            let txs: Vec<SignedTransaction> = if height == JOIN_HEIGHT {
                joining.iter().map(bond).collect()
            } else {
                Vec::new()
            };
            let outcome = {
                let mut block = BlockExecutor::begin(
                    &state,
                    BlockContext {
                        chain_id: CHAIN.into(),
                        height,
                        time_ms,
                        randomness,
                        proposer: proposer.public_key(),
                    },
                );
                for tx in &txs {
                    assert_eq!(
                        block.apply_tx(tx, false).unwrap().status,
                        piazza_ledger::block::TxStatus::Ok
                    );
                }
                block.finish()
            };
            roots.push(commit(outcome.writes, height, &mut state));
            let header = BlockHeader {
                chain_id: CHAIN.into(),
                height,
                parent_hash,
                time_ms,
                proposer: proposer.public_key(),
                tx_root: tx_root(&txs),
                state_root: roots[height as usize],
                randomness,
                randomness_proof,
            };
            let signature = proposer.sign(&header.hash().0);
            let block = Block {
                header,
                txs,
                signature,
            };
            parent_hash = block.hash();
            chain
                .certificates
                .push(certify(&block, &set.validators, &secret));
            chain.blocks.push(block);
        }
        chain
    }

    fn bond(key: &SecretKey) -> SignedTransaction {
        Transaction {
            chain_id: CHAIN.into(),
            sender: key.public_key(),
            nonce: 0,
            max_fee: Amount::pza(1),
            messages: vec![Message::Staking(staking::Msg::Bond {
                role: Role::Validator,
                amount: Amount::pza(JOINING_BOND_PZA),
            })],
        }
        .sign(key)
    }

    /// Precommits of the fewest largest validators (the set is ordered by power, descending)
    /// that hold more than two thirds of `set`'s power.
    fn certify(
        block: &Block,
        set: &[ActiveValidator],
        secret: &dyn Fn(&piazza_primitives::Address) -> SecretKey,
    ) -> CommitCertificateInfo {
        let total: u64 = set.iter().map(|v| v.voting_power).sum();
        let mut signed = 0;
        let mut signatures = Vec::new();
        for validator in set {
            if certificate::is_quorum(signed, total) {
                break;
            }
            signed += validator.voting_power;
            let address = validator.consensus_key.address();
            let vote = certificate::VoteFields {
                kind: certificate::VoteKind::Precommit,
                height: block.header.height,
                round: Some(0),
                block: Some(block.hash()),
                validator: address,
            };
            let signature = secret(&address).sign(&certificate::vote_signing_bytes(CHAIN, &vote));
            signatures.push(CommitSignatureInfo {
                validator: address.to_string(),
                signature: hex::encode(signature.0),
            });
        }
        CommitCertificateInfo {
            height: block.header.height,
            round: 0,
            block_hash: block.hash().to_hex(),
            signatures,
        }
    }

    fn at<T: Clone>(items: &[T], height: u64) -> Result<T, ClientError> {
        height
            .checked_sub(1)
            .and_then(|i| items.get(i as usize))
            .cloned()
            .ok_or_else(|| ClientError::Verification(format!("no height {height}")))
    }

    impl ChainSource for Chain {
        async fn block(&self, height: u64) -> Result<Block, ClientError> {
            at(&self.blocks, height)
        }
        async fn validators(&self, height: u64) -> Result<Option<ValidatorSetInfo>, ClientError> {
            at(&self.sets, height).map(Some)
        }
        async fn certificate(
            &self,
            height: u64,
        ) -> Result<Option<CommitCertificateInfo>, ClientError> {
            at(&self.certificates, height).map(Some)
        }
    }

    /// How a lying node rewrites the validator set it sends.
    type Forge = fn(&Chain, &mut ValidatorSetInfo);

    /// A chain whose node rewrites the validator set it sends for every height.
    struct Lying<'a> {
        chain: &'a Chain,
        forge: Forge,
    }

    impl ChainSource for Lying<'_> {
        async fn block(&self, height: u64) -> Result<Block, ClientError> {
            self.chain.block(height).await
        }
        async fn validators(&self, height: u64) -> Result<Option<ValidatorSetInfo>, ClientError> {
            let mut set = at(&self.chain.sets, height)?;
            (self.forge)(self.chain, &mut set);
            Ok(Some(set))
        }
        async fn certificate(
            &self,
            height: u64,
        ) -> Result<Option<CommitCertificateInfo>, ClientError> {
            self.chain.certificate(height).await
        }
    }

    struct Network {
        genesis: NetworkGenesis,
        keys: Vec<SecretKey>,
        joining: Vec<SecretKey>,
    }

    /// Four genesis validators; four more join at `JOIN_HEIGHT` with 100x the bond each, so
    /// from `JOIN_HEIGHT + 2` the newcomers alone certify blocks.
    fn network() -> Network {
        let keys: Vec<SecretKey> = (1..=4).map(key).collect();
        let joining: Vec<SecretKey> = (11..=14).map(key).collect();
        Network {
            genesis: genesis(&keys, &joining),
            keys,
            joining,
        }
    }

    fn light(network: &Network, config: LightConfig) -> LightClient {
        LightClient::new(TrustAnchor::from_genesis(&network.genesis).unwrap(), config)
    }

    fn refusal(result: Result<(Hash, CertifiedPower), ClientError>) -> String {
        match result {
            Err(ClientError::Verification(text)) => text,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_chain_across_a_validator_set_change_is_trusted_by_skipping_and_bisection() {
        let net = network();
        let chain = build(&net.genesis, &net.keys, &net.joining, 12);
        let change = JOIN_HEIGHT + validators::VALIDATOR_SET_DELAY;
        assert_eq!(chain.sets[change as usize - 2].validators.len(), 4);
        assert_eq!(chain.sets[change as usize - 1].validators.len(), 8);
        let mut client = light(&net, LightConfig::default());

        // Before the change: one skip from the anchor (the same validators sign).
        let (hash, power) = client.verify(&chain, 4).await.unwrap();
        assert_eq!(hash, chain.blocks[3].hash());
        assert!(certificate::is_quorum(power.signed, power.total));
        assert_eq!(client.trusted_heights(), vec![1, 4]);

        // After it the newcomers alone sign, with none of height 4's power: 12 and the
        // half-ways 8 and 6 fail the overlap, the change's own height 5 follows 4
        // sequentially, then 6, and the new set carries 8 and 12.
        let (hash, _) = client.verify(&chain, 12).await.unwrap();
        assert_eq!(hash, chain.blocks[11].hash());
        assert_eq!(client.trusted_heights(), vec![1, 4, change, 6, 8, 12]);

        // From the anchor alone: 12 and 6 fail the overlap, 3 skips from the anchor, 6 fails
        // again, 4 follows 3, 6 fails again, 5 follows 4, then 6 and 12 pass.
        let mut fresh = light(&net, LightConfig::default());
        fresh.verify(&chain, 12).await.unwrap();
        assert_eq!(fresh.trusted_heights(), vec![1, 3, 4, change, 6, 12]);
    }

    #[tokio::test]
    async fn a_node_forging_the_validator_set_and_its_certificates_is_refused() {
        let net = network();
        // The same chain id and accounts, but validators whose keys are not the genesis's:
        // every block, set proof and certificate is consistent with the forged state.
        let forgers: Vec<SecretKey> = (21..=24).map(key).collect();
        let forged = build(&genesis(&forgers, &net.joining), &forgers, &[], 6);
        let mut client = light(&net, LightConfig::default());
        let text = refusal(client.verify(&forged, 6).await);
        assert!(
            text.contains("height 1: commit certificate: signer"),
            "{text}"
        );
        assert!(text.contains("not in the height's validator set"), "{text}");
        assert_eq!(client.trusted_heights(), vec![1]);
    }

    #[tokio::test]
    async fn a_validator_set_not_proven_by_the_parent_state_root_is_refused() {
        let net = network();
        let chain = build(&net.genesis, &net.keys, &net.joining, 8);
        let checks: [(Forge, &str); 4] = [
            // The proof of an older height (and its root): not block H - 1's.
            (
                |chain, set| {
                    set.schedule_proof = chain.sets[set.height as usize - 2].schedule_proof.clone();
                },
                "not against block height - 1's state root",
            ),
            // Another set's value under the right root: the proof does not hold it.
            (
                |chain, set| {
                    // The genesis schedule (one entry) where a later one is proven, or the
                    // reverse: either way not the value under this root.
                    let other = &chain.sets[if set.height > 6 { 0 } else { 7 }];
                    let value = other.schedule_proof.as_ref().unwrap().value.clone();
                    set.schedule_proof.as_mut().unwrap().value = value;
                },
                "the validator set's proof",
            ),
            // The list the node names is not the proven one.
            (
                |_, set| set.validators[0].voting_power += 1,
                "is not the one its proof holds",
            ),
            (
                |_, set| set.schedule_proof = None,
                "without its state proof",
            ),
        ];
        for (forge, expected) in checks {
            let lying = Lying {
                chain: &chain,
                forge,
            };
            let mut client = light(&net, LightConfig::default());
            let text = refusal(client.verify(&lying, 8).await);
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }

    #[tokio::test]
    async fn a_block_other_than_the_certified_one_is_refused() {
        let net = network();
        let chain = build(&net.genesis, &net.keys, &net.joining, 4);
        let mut client = light(&net, LightConfig::default());
        let power = client.certify(&chain, &chain.blocks[3]).await.unwrap();
        assert!(certificate::is_quorum(power.signed, power.total));
        // The same height, another header, signed by its proposer all the same.
        let proposer = net
            .keys
            .iter()
            .find(|k| k.public_key() == chain.blocks[3].header.proposer)
            .unwrap();
        let mut other = chain.blocks[3].clone();
        other.header.time_ms += 1;
        other.signature = proposer.sign(&other.hash().0);
        let text = match client.certify(&chain, &other).await {
            Err(ClientError::Verification(text)) => text,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            text.contains("not the one the network's validators certified"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_anchor_of_another_chain_or_without_validators_is_refused() {
        let net = network();
        let chain = build(&net.genesis, &net.keys, &net.joining, 2);
        let mut anchor = TrustAnchor::from_genesis(&net.genesis).unwrap();
        assert_eq!(anchor.validators.len(), 4);
        anchor.chain_id = "another-chain".into();
        let mut client = LightClient::new(anchor, LightConfig::default());
        let text = refusal(client.verify(&chain, 2).await);
        assert!(text.contains("not of `another-chain`"), "{text}");
        // A solo chain's genesis (no validators section) schedules no set to start from.
        let mut solo = net.genesis.clone();
        solo.validators.clear();
        assert!(TrustAnchor::from_genesis(&solo).is_err());
        // Nor is a height below the anchor trusted.
        let text = refusal(light(&net, LightConfig::default()).verify(&chain, 0).await);
        assert!(text.contains("below the trust anchor"), "{text}");
    }

    #[tokio::test]
    async fn the_trusted_heights_and_the_steps_are_bounded() {
        let net = network();
        let chain = build(&net.genesis, &net.keys, &net.joining, 12);
        // Three heights kept: the anchor and the two latest.
        let mut client = light(
            &net,
            LightConfig {
                trusted_heights_max: 3,
                steps_max: VERIFY_STEPS_MAX,
            },
        );
        for height in 2..=9 {
            client.verify(&chain, height).await.unwrap();
        }
        assert_eq!(client.trusted_heights(), vec![1, 8, 9]);
        // Bisection to 12 from the anchor checks nine blocks (see the test above); eight are
        // refused.
        let mut client = light(
            &net,
            LightConfig {
                trusted_heights_max: TRUSTED_HEIGHTS_MAX,
                steps_max: 4,
            },
        );
        let text = refusal(client.verify(&chain, 12).await);
        assert!(
            text.contains("not trusted within 4 blocks checked"),
            "{text}"
        );
        let mut client = light(
            &net,
            LightConfig {
                trusted_heights_max: TRUSTED_HEIGHTS_MAX,
                steps_max: 9,
            },
        );
        assert!(client.verify(&chain, 12).await.is_ok());
    }
}
