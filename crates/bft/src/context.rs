//! Piazza's Malachite `Context`: heights, validator addresses, the validator set, block values,
//! proposals, proposal parts, votes and deterministic, power-weighted proposer selection.

use crate::signing::PiazzaSigning;
use malachitebft_app_channel::app::types::core::{
    self as mcore, LinearTimeouts, NilOrVal, Round, SignedExtension, VoteType, VotingPower,
};
use piazza_ledger::genesis::Genesis;
use piazza_ledger::staking::Role;
use piazza_primitives::{Address, Hash, PublicKey, Signature};
use std::fmt;

/// The most validators a set may hold (bounds every certificate and vote buffer); a client's
/// certificate check applies the same bound.
pub use piazza_consensus::certificate::VALIDATORS_MAX;
/// The most voting power a whole set may hold, so that Malachite's threshold arithmetic
/// (`3 × power`) never overflows a `u64`.
pub const TOTAL_VOTING_POWER_MAX: u64 = u64::MAX / 4;

/// A block height (1 is the first block after genesis).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl mcore::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: Piazza's 20-byte account address of its consensus key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorAddress(pub Address);

impl fmt::Display for ValidatorAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl mcore::Address for ValidatorAddress {}

/// What consensus decides: the hash of a block. The block itself travels as proposal parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub Hash);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl mcore::Value for BlockId {
    type Id = BlockId;
    fn id(&self) -> BlockId {
        *self
    }
}

/// A validator: its address, consensus key and voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub address: ValidatorAddress,
    pub public_key: PublicKey,
    pub voting_power: VotingPower,
}

impl Validator {
    pub fn new(public_key: PublicKey, voting_power: VotingPower) -> Self {
        Validator {
            address: ValidatorAddress(public_key.address()),
            public_key,
            voting_power,
        }
    }
}

impl mcore::Validator<PiazzaContext> for Validator {
    fn address(&self) -> &ValidatorAddress {
        &self.address
    }
    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
    fn voting_power(&self) -> VotingPower {
        self.voting_power
    }
}

/// Why a validator set is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    #[error("a validator set needs 1..={VALIDATORS_MAX} validators, got {0}")]
    Count(usize),
    #[error("validator {0} has no voting power")]
    NoPower(ValidatorAddress),
    #[error("validator {0} appears twice")]
    Duplicate(ValidatorAddress),
    #[error("validator {0}'s address is not its key's address")]
    AddressMismatch(ValidatorAddress),
    #[error("the total voting power exceeds {TOTAL_VOTING_POWER_MAX}")]
    TooMuchPower,
}

/// The validators of one height, sorted by address (the order every node agrees on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_voting_power: VotingPower,
}

impl ValidatorSet {
    /// Checks and sorts `validators`: 1..=`VALIDATORS_MAX` distinct validators with power.
    pub fn new(mut validators: Vec<Validator>) -> Result<Self, ValidatorSetError> {
        if validators.is_empty() || validators.len() > VALIDATORS_MAX {
            return Err(ValidatorSetError::Count(validators.len()));
        }
        validators.sort_by_key(|v| v.address);
        let mut total: u64 = 0;
        for (i, v) in validators.iter().enumerate() {
            if v.voting_power == 0 {
                return Err(ValidatorSetError::NoPower(v.address));
            }
            if v.address.0 != v.public_key.address() {
                return Err(ValidatorSetError::AddressMismatch(v.address));
            }
            if i > 0 && validators[i - 1].address == v.address {
                return Err(ValidatorSetError::Duplicate(v.address));
            }
            total = total
                .checked_add(v.voting_power)
                .filter(|t| *t <= TOTAL_VOTING_POWER_MAX)
                .ok_or(ValidatorSetError::TooMuchPower)?;
        }
        Ok(ValidatorSet {
            validators,
            total_voting_power: total,
        })
    }

    /// The set at genesis: each key in `keys` whose address genesis bonds as a validator, with
    /// one unit of voting power per whole PZA bonded. The ledger records no consensus keys yet,
    /// so the keys come from the network's configuration; a key without a bond is refused.
    pub fn from_genesis(genesis: &Genesis, keys: &[PublicKey]) -> Result<Self, ValidatorSetError> {
        let unit = 10u128.pow(piazza_primitives::PZA_DECIMALS);
        let mut validators = Vec::with_capacity(keys.len());
        for key in keys {
            let address = key.address();
            let bonded: u128 = genesis
                .bonds
                .iter()
                .filter(|b| b.address == address && b.role == Role::Validator)
                .map(|b| b.amount.base_units())
                .fold(0u128, u128::saturating_add);
            let power =
                u64::try_from(bonded / unit).map_err(|_| ValidatorSetError::TooMuchPower)?;
            validators.push(Validator::new(*key, power));
        }
        ValidatorSet::new(validators)
    }

    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    pub fn get(&self, address: &ValidatorAddress) -> Option<&Validator> {
        self.validators
            .binary_search_by_key(address, |v| v.address)
            .ok()
            .map(|i| &self.validators[i])
    }

    /// The proposer of (`height`, `round`): a draw weighted by voting power from a hash of the
    /// height and round, the same on every node.
    pub fn proposer(&self, height: Height, round: Round) -> &Validator {
        let seed = Hash::of(
            "piazza/bft/proposer",
            &[&height.0.to_le_bytes(), &round.as_i64().to_le_bytes()],
        );
        let mut wide = [0u8; 16];
        wide.copy_from_slice(&seed.0[..16]);
        // A 128-bit draw reduced modulo a power below 2^62: the bias is below 2^-66.
        let mut ticket = (u128::from_le_bytes(wide) % u128::from(self.total_voting_power)) as u64;
        for v in &self.validators {
            if ticket < v.voting_power {
                return v;
            }
            ticket -= v.voting_power;
        }
        unreachable!("a ticket below the total power always lands on a validator")
    }
}

impl mcore::ValidatorSet<PiazzaContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> VotingPower {
        self.total_voting_power
    }
    fn get_by_address(&self, address: &ValidatorAddress) -> Option<&Validator> {
        self.get(address)
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// A proposal: the proposer signs (height, round, block id, proof-of-lock round).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: BlockId,
    pub pol_round: Round,
    pub proposer: ValidatorAddress,
}

impl mcore::Proposal<PiazzaContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &BlockId {
        &self.value
    }
    fn take_value(self) -> BlockId {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &ValidatorAddress {
        &self.proposer
    }
}

/// The first part of a proposed block's stream: who proposes what, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalInit {
    pub height: Height,
    pub round: Round,
    pub pol_round: Round,
    pub proposer: ValidatorAddress,
}

/// The last part: the proposer's signature over (height, round, block id), which authenticates
/// the whole stream (the engine does not sign parts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalFin {
    pub signature: Signature,
}

/// A block streamed as `Init`, `Data`… (the canonical block bytes in order), `Fin`; or, in a
/// stream of its own (one message), a batch of gossiped transactions: Malachite's proposal-part
/// gossip carries them between nodes, and the app loop hands them to the application's mempool
/// instead of a block stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalPart {
    Init(ProposalInit),
    Data(Vec<u8>),
    Fin(ProposalFin),
    /// Canonical bytes of signed transactions, each decoded (bounded) by the application.
    Transactions(Vec<Vec<u8>>),
}

impl mcore::ProposalPart<PiazzaContext> for ProposalPart {
    fn is_first(&self) -> bool {
        matches!(self, ProposalPart::Init(_))
    }
    fn is_last(&self) -> bool {
        matches!(self, ProposalPart::Fin(_))
    }
}

/// A prevote or precommit for a block id or nil.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub vote_type: VoteType,
    pub height: Height,
    pub round: Round,
    pub value: NilOrVal<BlockId>,
    pub validator: ValidatorAddress,
    pub extension: Option<SignedExtension<PiazzaContext>>,
}

impl mcore::Vote<PiazzaContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &ValidatorAddress {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedExtension<PiazzaContext>> {
        self.extension.as_ref()
    }
    fn take_extension(&mut self) -> Option<SignedExtension<PiazzaContext>> {
        self.extension.take()
    }
    fn extend(self, extension: SignedExtension<PiazzaContext>) -> Self {
        Vote {
            extension: Some(extension),
            ..self
        }
    }
}

/// Piazza's Malachite context. Stateless: the validator set arrives with each height.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PiazzaContext;

impl mcore::Context for PiazzaContext {
    type Address = ValidatorAddress;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = BlockId;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = PiazzaSigning;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        validator_set.proposer(height, round)
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockId,
        pol_round: Round,
        address: ValidatorAddress,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: ValidatorAddress,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Prevote,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: ValidatorAddress,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Precommit,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }
}
