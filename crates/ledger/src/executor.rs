//! The state transition: a pure function of (state, block, transactions).

use crate::agents::{self, Agents};
use crate::arbitration::{Arbiter, NoArbiter};
use crate::bank::{self, Bank};
use crate::block::{
    tx_root, Block, Event, Receipt, TxStatus, EVENTS_PER_MESSAGE_MAX, EVENTS_PER_TX_MAX,
};
use crate::compute::{self, Compute};
use crate::data;
use crate::error::{ErrorCode, TxError};
use crate::genesis::{FeeParams, Genesis, GenesisError};
use crate::grants;
use crate::models::Models;
use crate::module::{BlockContext, Module, TxContext};
use crate::sessions::{self, Sessions};
use crate::staking::{self, Role, Staking};
use crate::state::{StateDelta, StateRead};
use crate::storage::{self, Storage};
use crate::tx::{check_stateless, Message, SignedTransaction};
use crate::verify::{self, Verify};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Amount, Hash};
use std::collections::BTreeMap;
use thiserror::Error;

/// State writes in key order: `None` deletes.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

mod chain_key {
    pub fn id() -> Vec<u8> {
        b"chain/id".to_vec()
    }
    pub fn fees() -> Vec<u8> {
        b"chain/fees".to_vec()
    }
    pub fn head() -> Vec<u8> {
        b"chain/head".to_vec()
    }
}

/// The last executed block as the state records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub height: u64,
    pub time_ms: u64,
    pub randomness: Hash,
}

impl Encode for ChainHead {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.height);
        w.u64(self.time_ms);
        w.value(&self.randomness);
    }
}

impl Decode for ChainHead {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ChainHead {
            height: r.u64()?,
            time_ms: r.u64()?,
            randomness: r.value()?,
        })
    }
}

/// Why a block cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlockError {
    #[error("block height {got}, expected {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("block for chain `{0}`")]
    WrongChain(String),
    #[error("block time {got} ms is before its parent's {parent} ms")]
    TimeWentBack { parent: u64, got: u64 },
    #[error("bad block signature or randomness proof")]
    BadSignature,
    #[error("proposer {0} is not a bonded validator")]
    NotAValidator(String),
    #[error("transaction root does not match the transactions")]
    WrongTxRoot,
    #[error("transaction {index} cannot be included: {error}")]
    InvalidTx { index: usize, error: TxError },
}

/// The result of executing one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutcome {
    pub writes: Writes,
    pub receipts: Vec<Receipt>,
    /// Events from block hooks (for example matured unbondings).
    pub events: Vec<Event>,
}

pub fn chain_head(state: &dyn StateRead) -> Option<ChainHead> {
    StateDelta::new(state).get(&chain_key::head())
}

pub fn chain_id(state: &dyn StateRead) -> Option<String> {
    state
        .get(&chain_key::id())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The fee a transaction pays.
pub fn fee_for(tx: &SignedTransaction, fees: &FeeParams) -> Result<Amount, TxError> {
    let overflow = || TxError::new(ErrorCode::Overflow, "fee overflows");
    let mut units = fees.tx_base_units;
    for m in &tx.tx.messages {
        units = units.checked_add(m.fee_units()).ok_or_else(overflow)?;
    }
    let bytes = (tx.encoded_len() as u64)
        .checked_mul(fees.byte_units)
        .ok_or_else(overflow)?;
    units = units.checked_add(bytes).ok_or_else(overflow)?;
    fees.unit_price
        .checked_mul(units as u128)
        .ok_or_else(overflow)
}

/// The tokens a transaction's messages move out of the sender's balance, at most.
fn outflow(tx: &SignedTransaction) -> Option<Amount> {
    tx.tx.messages.iter().try_fold(Amount::ZERO, |total, m| {
        total.checked_add(message_outflow(m)?)
    })
}

/// The tokens one message declares it moves out of the sender's balance (a bond that a
/// challenge takes is checked when it executes, and measured then for a grantee).
fn message_outflow(m: &Message) -> Option<Amount> {
    let total = Amount::ZERO;
    match m {
        Message::Bank(bank::Msg::Send { amount, .. })
        | Message::Staking(staking::Msg::Bond { amount, .. })
        | Message::Compute(compute::Msg::RegisterProvider { stake: amount, .. }) => {
            total.checked_add(*amount)
        }
        Message::Compute(compute::Msg::SubmitJob {
            max_price, params, ..
        }) => total.checked_add(max_price.checked_mul(params.copies() as u128)?),
        Message::Verify(verify::Msg::RegisterAuditor { stake: amount, .. }) => {
            total.checked_add(*amount)
        }
        Message::Verify(verify::Msg::Challenge { .. }) => {
            // The bond is checked against the balance when the challenge executes.
            Some(total)
        }
        Message::Verify(_) => Some(total),
        Message::Agents(agents::Msg::Register { stake: amount, .. })
        | Message::Agents(agents::Msg::Call { amount, .. }) => total.checked_add(*amount),
        Message::Agents(_) => Some(total),
        // Moves the authorizer's tokens, not the sender's.
        Message::Bank(bank::Msg::SettleAuthorization { .. }) => Some(total),
        Message::Sessions(sessions::Msg::Open {
            deposit: amount, ..
        })
        | Message::Sessions(sessions::Msg::TopUp { amount, .. }) => total.checked_add(*amount),
        // A challenge's bond is checked against the balance when it executes.
        Message::Sessions(_) => Some(total),
        Message::Storage(storage::Msg::RegisterProvider { stake: amount, .. }) => {
            total.checked_add(*amount)
        }
        // A deal's escrow follows the chain's price; it is measured when it executes.
        Message::Storage(_) => Some(total),
        Message::Staking(staking::Msg::Unbond { .. })
        | Message::Models(_)
        | Message::Compute(_)
        | Message::Grants(_) => Some(total),
        Message::Shares(bank::shares::Msg::Buy { max_cost, .. }) => total.checked_add(*max_cost),
        Message::Shares(_) => Some(total),
        Message::Data(m) => total.checked_add(data::outflow(m)?),
    }
}

/// How a grantee's transaction uses its grant, message by message.
fn grant_uses(tx: &SignedTransaction) -> Result<Vec<grants::Use>, TxError> {
    tx.tx
        .messages
        .iter()
        .map(|m| {
            Ok(grants::Use {
                kind: m.kind(),
                amount: message_outflow(m)
                    .ok_or_else(|| TxError::new(ErrorCode::Overflow, "amounts overflow"))?,
                party: m.party(),
            })
        })
        .collect()
}

/// A grantee's transaction may be included only while its grant covers it: checked before its
/// fee is charged, so a revoked, expired or spent grant keeps it out of the block.
fn check_grant(
    state: &StateDelta<'_>,
    tx: &SignedTransaction,
    height: u64,
    fee: Amount,
) -> Result<(), TxError> {
    if let Some(grantee) = tx.grantee() {
        grants::check(state, &tx.sender(), grantee, height, &grant_uses(tx)?, fee)?;
    }
    Ok(())
}

pub fn fee_params(state: &dyn StateRead) -> FeeParams {
    StateDelta::new(state)
        .get(&chain_key::fees())
        .expect("fee params are written at genesis")
}

/// What admission learned about a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub fee: Amount,
    /// The sender's committed next nonce.
    pub committed_nonce: u64,
}

/// Admission to the mempool: everything [`BlockExecutor::apply_tx`] checks, except that the
/// nonce may run up to `nonce_window` ahead of the account's, and the balance must cover the fee
/// and every amount the messages send or bond. The signature is left to the caller, which checks
/// it after these cheaper checks.
pub fn check_admission(
    state: &dyn StateRead,
    tx: &SignedTransaction,
    nonce_window: u64,
) -> Result<Admission, TxError> {
    let chain = chain_id(state).expect("chain id is written at genesis");
    check_stateless(tx, &chain, true)?;
    let view = StateDelta::new(state);
    let account = bank::account(&view, &tx.sender());
    check_nonce_window(tx.tx.nonce, account.nonce, nonce_window)?;
    let fee = fee_for(tx, &fee_params(state))?;
    if fee > tx.tx.max_fee {
        return Err(fee_too_low(fee, tx.tx.max_fee));
    }
    let next_height = chain_head(state).map_or(1, |head| head.height + 1);
    check_grant(&view, tx, next_height, fee)?;
    // Evidence (up to megabytes) is admitted only while a dispute waits for it.
    if let [Message::Verify(verify::Msg::Arbitrate { job, .. })] = tx.tx.messages.as_slice() {
        let waiting =
            verify::dispute(&view, *job).is_some_and(|d| d.phase != verify::Phase::Bisect);
        if !waiting {
            return Err(TxError::new(
                ErrorCode::NoDispute,
                format!("job {job} has no dispute waiting for evidence"),
            ));
        }
    }
    let needed = outflow(tx)
        .and_then(|o| o.checked_add(fee))
        .ok_or_else(|| TxError::new(ErrorCode::Overflow, "amounts overflow"))?;
    if account.balance < needed {
        return Err(TxError::new(
            ErrorCode::InsufficientFunds,
            format!(
                "{} holds {} PZA, the transaction needs {needed} PZA",
                tx.sender(),
                account.balance
            ),
        ));
    }
    Ok(Admission {
        fee,
        committed_nonce: account.nonce,
    })
}

fn check_nonce_window(nonce: u64, expected: u64, window: u64) -> Result<(), TxError> {
    if nonce < expected {
        return Err(TxError::new(
            ErrorCode::NonceReplayed,
            format!("nonce {nonce} is used; the account's next nonce is {expected}"),
        ));
    }
    if nonce - expected >= window {
        return Err(TxError::new(
            ErrorCode::NonceGap,
            format!("nonce {nonce} is too far ahead of the account's next nonce {expected}"),
        ));
    }
    Ok(())
}

fn fee_too_low(fee: Amount, max_fee: Amount) -> TxError {
    TxError::new(
        ErrorCode::FeeTooLow,
        format!("the fee is {fee} PZA, the transaction allows at most {max_fee} PZA"),
    )
}

/// Writes the genesis state of a chain run by one producer (no validator records).
pub fn init_chain(genesis: &Genesis) -> Result<Writes, GenesisError> {
    init_chain_with_validators(genesis, &[])
}

/// Writes the genesis state of a network (`genesis::NetworkGenesis`): see
/// [`init_chain_with_validators`].
pub fn init_network(genesis: &crate::genesis::NetworkGenesis) -> Result<Writes, GenesisError> {
    init_chain_with_validators(&genesis.genesis, &genesis.validators)
}

/// Writes the genesis state of a network: [`init_chain`] plus the validators' records and
/// their set for height 1 (see [`NetworkGenesis`](crate::genesis::NetworkGenesis)).
pub fn init_chain_with_validators(
    genesis: &Genesis,
    validators: &[staking::validators::GenesisValidator],
) -> Result<Writes, GenesisError> {
    genesis.validate()?;
    let empty = BTreeMap::new();
    let mut state = StateDelta::new(&empty);
    state.put(chain_key::id(), &RawString(genesis.chain_id.clone()));
    state.put(chain_key::fees(), &genesis.fees);
    state.put(
        chain_key::head(),
        &ChainHead {
            height: 0,
            time_ms: genesis.genesis_time_ms,
            randomness: Hash::of("piazza/genesis-randomness", &[genesis.chain_id.as_bytes()]),
        },
    );
    Bank::init_chain(&mut state, &genesis.accounts)?;
    Staking::init_chain(
        &mut state,
        &staking::GenesisState {
            params: genesis.staking.clone(),
            bonds: genesis.bonds.clone(),
            validators: validators.to_vec(),
        },
    )?;
    Models::init_chain(&mut state, &genesis.models)?;
    Compute::init_chain(&mut state, &genesis.compute)?;
    Verify::init_chain(&mut state, &genesis.verify)?;
    Sessions::init_chain(&mut state, &genesis.sessions)?;
    Storage::init_chain(&mut state, &genesis.storage)?;
    Agents::init_chain(&mut state, &genesis.agents)?;
    Ok(state.into_writes())
}

/// A string stored as its bytes, without a length prefix.
struct RawString(String);

impl Encode for RawString {
    fn encode(&self, w: &mut Writer) {
        w.array(self.0.as_bytes())
    }
}

/// Executes one block's transactions in order.
/// `text` cut to at most `bytes_max` bytes at a character boundary (a reason may quote
/// untrusted input at length; the receipt must still decode).
fn cut(mut text: String, bytes_max: usize) -> String {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The order of the modules' `begin_block` hooks: compute assigns queued jobs with this
/// block's randomness, then verify reviews the results compute reported in the previous block
/// (audit draws, redundant groups), so a draw never sees a result of its own block; sessions
/// (above both) then assign opened sessions and draw audits over earlier commits; storage
/// (beside them, on bank and staking only) assigns shards and starts epochs.
pub const BEGIN_BLOCK_ORDER: [&str; 8] = [
    "bank", "staking", "models", "compute", "verify", "sessions", "storage", "agents",
];
/// The order of the `end_block` hooks, top layer first: sessions slash missed reveals and pay
/// out commits, verify ends audits and disputes whose deadline is this block (releasing their
/// holds) before compute settles the jobs whose window ends here, so a job released in this
/// block settles in it.
/// Agents (on bank only) refund calls past their deadline and release answered ones.
pub const END_BLOCK_ORDER: [&str; 8] = [
    "bank", "staking", "models", "storage", "sessions", "verify", "compute", "agents",
];

#[derive(Clone, Copy)]
enum Hook {
    Begin,
    End,
}

fn run_hook(
    module: &str,
    hook: Hook,
    state: &mut StateDelta<'_>,
    block: &BlockContext,
    events: &mut Vec<Event>,
) {
    fn call<M: Module>(
        hook: Hook,
        state: &mut StateDelta<'_>,
        block: &BlockContext,
        events: &mut Vec<Event>,
    ) {
        match hook {
            Hook::Begin => M::begin_block(state, block, events),
            Hook::End => M::end_block(state, block, events),
        }
    }
    match module {
        Bank::NAME => call::<Bank>(hook, state, block, events),
        Staking::NAME => call::<Staking>(hook, state, block, events),
        Models::NAME => call::<Models>(hook, state, block, events),
        Compute::NAME => call::<Compute>(hook, state, block, events),
        Verify::NAME => call::<Verify>(hook, state, block, events),
        Sessions::NAME => call::<Sessions>(hook, state, block, events),
        Storage::NAME => call::<Storage>(hook, state, block, events),
        Agents::NAME => call::<Agents>(hook, state, block, events),
        other => unreachable!("no module named `{other}` has block hooks"),
    }
}

pub struct BlockExecutor<'a> {
    state: StateDelta<'a>,
    arbiter: &'a dyn Arbiter,
    block: BlockContext,
    fees: FeeParams,
    receipts: Vec<Receipt>,
    events: Vec<Event>,
}

impl<'a> BlockExecutor<'a> {
    /// Starts a block and runs every module's `begin_block`.
    pub fn begin(base: &'a dyn StateRead, block: BlockContext) -> Self {
        let mut state = StateDelta::new(base);
        let fees = state
            .get(&chain_key::fees())
            .expect("fee params are written at genesis");
        let mut events = Vec::new();
        for hook in BEGIN_BLOCK_ORDER {
            run_hook(hook, Hook::Begin, &mut state, &block, &mut events);
        }
        BlockExecutor {
            state,
            arbiter: &NoArbiter,
            block,
            fees,
            receipts: Vec::new(),
            events,
        }
    }

    /// Decides this block's disputes with `arbiter` (without one, evidence is rejected).
    pub fn with_arbiter(mut self, arbiter: &'a dyn Arbiter) -> Self {
        self.arbiter = arbiter;
        self
    }

    pub fn block(&self) -> &BlockContext {
        &self.block
    }

    /// Applies one transaction. `Err` means it cannot be included at all (bad signature, nonce,
    /// fee) and nothing changed; `Ok` means it is included, its fee paid and its nonce used,
    /// whether its messages succeeded or not (see the receipt).
    pub fn apply_tx(
        &mut self,
        tx: &SignedTransaction,
        signature_checked: bool,
    ) -> Result<&Receipt, TxError> {
        check_stateless(tx, &self.block.chain_id, signature_checked)?;
        let sender = tx.sender();
        let mut account = bank::account(&self.state, &sender);
        check_nonce_window(tx.tx.nonce, account.nonce, 1)?;
        let fee = fee_for(tx, &self.fees)?;
        if fee > tx.tx.max_fee {
            return Err(fee_too_low(fee, tx.tx.max_fee));
        }
        check_grant(&self.state, tx, self.block.height, fee)?;
        account.balance = account.balance.checked_sub(fee).ok_or_else(|| {
            TxError::new(
                ErrorCode::InsufficientFunds,
                format!(
                    "{sender} holds {} PZA, the fee is {fee} PZA",
                    account.balance
                ),
            )
        })?;
        account.nonce += 1;
        bank::put_account(&mut self.state, &sender, &account);
        bank::credit(&mut self.state, &bank::treasury(), fee)
            .expect("the treasury cannot overflow below the supply");
        if let Some(grantee) = tx.grantee() {
            let messages = u32::try_from(tx.tx.messages.len()).unwrap_or(u32::MAX);
            grants::record(
                &mut self.state,
                &sender,
                grantee,
                self.block.height,
                messages,
                fee,
            )
            .expect("check_grant covered the fee and the messages");
        }

        let checkpoint = self.state.checkpoint();
        let mut ctx = TxContext {
            block: &self.block,
            sender,
            sender_key: tx.tx.sender,
            tx_hash: tx.hash(),
            events: Vec::new(),
            arbiter: self.arbiter,
        };
        let result = match tx.grantee() {
            None => run_messages(&mut self.state, &mut ctx, &tx.tx.messages, None).map(|_| ()),
            Some(grantee) => run_granted(&mut self.state, &mut ctx, tx, grantee),
        };
        let status = match result {
            Ok(()) => {
                self.state.release(checkpoint);
                TxStatus::Ok
            }
            Err(error) => {
                self.state.revert(checkpoint);
                ctx.events.clear();
                TxStatus::Failed {
                    code: error.code.code(),
                    message: cut(error.message, crate::block::FAILURE_MESSAGE_BYTES_MAX),
                }
            }
        };
        debug_assert!(ctx.events.len() <= EVENTS_PER_TX_MAX);
        self.receipts.push(Receipt {
            tx_hash: tx.hash(),
            height: self.block.height,
            index: self.receipts.len() as u32,
            status,
            fee_paid: fee,
            events: ctx.events,
        });
        Ok(self.receipts.last().expect("just pushed"))
    }

    /// Runs every module's `end_block` and returns the block's writes and receipts.
    pub fn finish(mut self) -> BlockOutcome {
        for hook in END_BLOCK_ORDER {
            run_hook(
                hook,
                Hook::End,
                &mut self.state,
                &self.block,
                &mut self.events,
            );
        }
        let head = ChainHead {
            height: self.block.height,
            time_ms: self.block.time_ms,
            randomness: self.block.randomness,
        };
        self.state.put(chain_key::head(), &head);
        BlockOutcome {
            writes: self.state.into_writes(),
            receipts: self.receipts,
            events: self.events,
        }
    }
}

/// Runs the messages in order. With a grant's scope, each message's spend — the larger of what
/// it declares and what it actually took from the sender's balance — must fit the scope's
/// per-message limit; the sum is returned for the grant's cap.
fn run_messages(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    messages: &[Message],
    scope: Option<&grants::Scope>,
) -> Result<Amount, TxError> {
    let mut spent = Amount::ZERO;
    for message in messages {
        let before = ctx.events.len();
        let balance_before = scope.map(|_| bank::account(state, &ctx.sender).balance);
        message.apply(state, ctx)?;
        let emitted = ctx.events.len() - before;
        if emitted > EVENTS_PER_MESSAGE_MAX {
            return Err(TxError::new(
                ErrorCode::TooManyEvents,
                format!("a message emitted {emitted} events; at most {EVENTS_PER_MESSAGE_MAX}"),
            ));
        }
        if let (Some(scope), Some(balance_before)) = (scope, balance_before) {
            let taken = balance_before
                .checked_sub(bank::account(state, &ctx.sender).balance)
                .unwrap_or(Amount::ZERO);
            let declared = message_outflow(message).unwrap_or(taken);
            let used = taken.max(declared);
            grants::check_message_amount(scope, used)?;
            spent = spent
                .checked_add(used)
                .ok_or_else(|| TxError::new(ErrorCode::Overflow, "amounts overflow"))?;
        }
    }
    Ok(spent)
}

/// A grantee's messages: run under the grant's scope, then their spend charged to its cap (a
/// spend past the cap fails the messages; the fee stays charged).
fn run_granted(
    state: &mut StateDelta<'_>,
    ctx: &mut TxContext<'_>,
    tx: &SignedTransaction,
    grantee: &piazza_primitives::PublicKey,
) -> Result<(), TxError> {
    let grant = grants::grant(state, &ctx.sender, grantee)
        .ok_or_else(|| TxError::new(ErrorCode::GrantRefused, "the grant is gone"))?;
    let spent = run_messages(state, ctx, &tx.tx.messages, Some(&grant.scope))?;
    grants::record(state, &ctx.sender, grantee, ctx.block.height, 0, spent)
}

/// Validates a block against the state it builds on and executes it. Every transaction must be
/// includable. The caller checks the parent hash and compares the resulting state root with the
/// header's. `signatures_checked` skips transaction signatures the caller has already verified.
pub fn execute_block(
    base: &dyn StateRead,
    block: &Block,
    signatures_checked: bool,
    arbiter: &dyn Arbiter,
) -> Result<BlockOutcome, BlockError> {
    let header = &block.header;
    let chain = chain_id(base).expect("chain id is written at genesis");
    if header.chain_id != chain {
        return Err(BlockError::WrongChain(header.chain_id.clone()));
    }
    let head = chain_head(base).expect("chain head is written at genesis");
    if header.height != head.height + 1 {
        return Err(BlockError::WrongHeight {
            expected: head.height + 1,
            got: header.height,
        });
    }
    if header.time_ms < head.time_ms {
        return Err(BlockError::TimeWentBack {
            parent: head.time_ms,
            got: header.time_ms,
        });
    }
    let view = StateDelta::new(base);
    if staking::bonded(&view, &header.proposer.address(), Role::Validator).is_zero() {
        return Err(BlockError::NotAValidator(
            header.proposer.address().to_string(),
        ));
    }
    let input = crate::block::randomness_input(&chain, header.height, &head.randomness);
    let randomness = header
        .proposer
        .vrf_verify(&input, &header.randomness_proof)
        .map(|beta| crate::block::randomness_from_output(&beta));
    if block.verify_signature().is_err() || randomness != Ok(header.randomness) {
        return Err(BlockError::BadSignature);
    }
    if tx_root(&block.txs) != header.tx_root {
        return Err(BlockError::WrongTxRoot);
    }
    let checked: Vec<bool> = if signatures_checked {
        vec![true; block.txs.len()]
    } else {
        let refs: Vec<&SignedTransaction> = block.txs.iter().collect();
        crate::tx::verify_signatures(&refs)
            .into_iter()
            .map(|r| r.is_ok())
            .collect()
    };
    let mut executor = BlockExecutor::begin(
        base,
        BlockContext {
            chain_id: chain,
            height: header.height,
            time_ms: header.time_ms,
            randomness: header.randomness,
            proposer: header.proposer,
        },
    )
    .with_arbiter(arbiter);
    for (index, tx) in block.txs.iter().enumerate() {
        executor
            .apply_tx(tx, checked[index])
            .map_err(|error| BlockError::InvalidTx { index, error })?;
    }
    Ok(executor.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_runs_each_hook_once_in_the_documented_order() {
        let mut names = vec![
            Bank::NAME,
            Staking::NAME,
            Models::NAME,
            Compute::NAME,
            Verify::NAME,
            Sessions::NAME,
            Storage::NAME,
            Agents::NAME,
        ];
        names.sort();
        for order in [BEGIN_BLOCK_ORDER, END_BLOCK_ORDER] {
            let mut sorted = order.to_vec();
            sorted.sort();
            assert_eq!(sorted, names);
        }
        let at = |order: [&str; 8], name| order.iter().position(|n| *n == name).unwrap();
        assert!(at(BEGIN_BLOCK_ORDER, "compute") < at(BEGIN_BLOCK_ORDER, "verify"));
        assert!(at(END_BLOCK_ORDER, "verify") < at(END_BLOCK_ORDER, "compute"));
        assert!(at(BEGIN_BLOCK_ORDER, "verify") < at(BEGIN_BLOCK_ORDER, "sessions"));
        assert!(at(END_BLOCK_ORDER, "sessions") < at(END_BLOCK_ORDER, "verify"));
    }
}
