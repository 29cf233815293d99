//! Transactions: `{chain_id, sender, nonce, max_fee, messages[]}`, signed over their canonical
//! encoding.

use crate::agents::{self, Agents};
use crate::bank::{self, Bank};
use crate::compute::{self, Compute};
use crate::data;
use crate::error::{refuse_small_order, ErrorCode, TxError};
use crate::grants::{self, Grants};
use crate::models::{self, Models};
use crate::module::{Module, TxContext};
use crate::sessions::{self, Sessions};
use crate::staking::{self, Staking};
use crate::state::StateDelta;
use crate::storage::{self, Storage};
use crate::verify::{self, Verify};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{
    verify_batch, Address, Amount, Hash, KeyError, PublicKey, SecretKey, Signature, Signed,
};

pub use crate::limits::{CHAIN_ID_BYTES_MAX, TX_BYTES_MAX, TX_MESSAGES_MAX};
/// The size class of a transaction whose only message is `verify::Msg::Arbitrate`: a step's
/// inputs and weight slices (or a tokenizer), with room for the envelope.
pub const EVIDENCE_TX_BYTES_MAX: usize = verify::EVIDENCE_BYTES_MAX + 4096;

fn oversized(len: usize, limit: usize) -> TxError {
    TxError::new(
        ErrorCode::OversizedTx,
        format!("transaction is {len} bytes, the limit is {limit}"),
    )
}

/// The size limit of `tx`'s class: evidence-only transactions get [`EVIDENCE_TX_BYTES_MAX`].
pub fn size_limit(tx: &SignedTransaction) -> usize {
    match tx.tx.messages.as_slice() {
        [Message::Verify(verify::Msg::Arbitrate { .. })] => EVIDENCE_TX_BYTES_MAX,
        _ => TX_BYTES_MAX,
    }
}

fn check_size(tx: &SignedTransaction) -> Result<(), TxError> {
    let limit = size_limit(tx);
    if tx.encoded_len() > limit {
        return Err(oversized(tx.encoded_len(), limit));
    }
    Ok(())
}

const SIGN_DOMAIN: &[u8] = b"piazza/tx/v1\0";
/// The domain of a grantee's signature: it signs this, its own public key, then the
/// transaction's canonical bytes, so a grantee signature can never pass as the sender's.
const GRANTEE_SIGN_DOMAIN: &[u8] = b"piazza/tx-grantee/v1\0";
/// The first four bytes of a grantee-signed transaction's encoding. A plain transaction starts
/// with its chain id's length (at most [`CHAIN_ID_BYTES_MAX`]), so the two never collide and a
/// plain transaction's bytes are unchanged.
const GRANTEE_ENVELOPE: u32 = u32::MAX;

/// One action inside a transaction, routed to the module that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Bank(bank::Msg),
    Staking(staking::Msg),
    Models(models::Msg),
    Compute(compute::Msg),
    Verify(verify::Msg),
    Sessions(sessions::Msg),
    Storage(storage::Msg),
    Grants(grants::Msg),
    Agents(agents::Msg),
    Shares(bank::shares::Msg),
    Data(data::Msg),
}

/// Every message goes to its module through these three routes, so the executor and the
/// admission checks never name a module.
impl Message {
    /// The module's rules that need no state.
    pub fn check_stateless(&self) -> Result<(), TxError> {
        match self {
            Message::Bank(m) => Bank::check_stateless(m),
            Message::Staking(m) => Staking::check_stateless(m),
            Message::Models(m) => Models::check_stateless(m),
            Message::Compute(m) => Compute::check_stateless(m),
            Message::Verify(m) => Verify::check_stateless(m),
            Message::Sessions(m) => Sessions::check_stateless(m),
            Message::Storage(m) => Storage::check_stateless(m),
            Message::Grants(m) => Grants::check_stateless(m),
            Message::Agents(m) => Agents::check_stateless(m),
            Message::Shares(m) => bank::shares::Shares::check_stateless(m),
            Message::Data(m) => data::Data::check_stateless(m),
        }
    }

    /// The message's metered cost in fee units, before the per-byte charge.
    pub fn fee_units(&self) -> u64 {
        match self {
            Message::Bank(m) => Bank::fee_units(m),
            Message::Staking(m) => Staking::fee_units(m),
            Message::Models(m) => Models::fee_units(m),
            Message::Compute(m) => Compute::fee_units(m),
            Message::Verify(m) => Verify::fee_units(m),
            Message::Sessions(m) => Sessions::fee_units(m),
            Message::Storage(m) => Storage::fee_units(m),
            Message::Grants(m) => Grants::fee_units(m),
            Message::Agents(m) => Agents::fee_units(m),
            Message::Shares(m) => bank::shares::Shares::fee_units(m),
            Message::Data(m) => data::Data::fee_units(m),
        }
    }

    /// The module's stateful check, then its execution.
    pub fn apply(
        &self,
        state: &mut StateDelta<'_>,
        ctx: &mut TxContext<'_>,
    ) -> Result<(), TxError> {
        fn run<M: Module>(
            state: &mut StateDelta<'_>,
            ctx: &mut TxContext<'_>,
            msg: &M::Msg,
        ) -> Result<(), TxError> {
            M::check_stateful(state, ctx, msg)?;
            M::execute(state, ctx, msg)
        }
        match self {
            Message::Bank(m) => run::<Bank>(state, ctx, m),
            Message::Staking(m) => run::<Staking>(state, ctx, m),
            Message::Models(m) => run::<Models>(state, ctx, m),
            Message::Compute(m) => run::<Compute>(state, ctx, m),
            Message::Verify(m) => run::<Verify>(state, ctx, m),
            Message::Sessions(m) => run::<Sessions>(state, ctx, m),
            Message::Storage(m) => run::<Storage>(state, ctx, m),
            Message::Grants(m) => run::<Grants>(state, ctx, m),
            Message::Agents(m) => run::<Agents>(state, ctx, m),
            Message::Shares(m) => run::<bank::shares::Shares>(state, ctx, m),
            Message::Data(m) => run::<data::Data>(state, ctx, m),
        }
    }
}

impl Message {
    /// The message's kind as a grant names it: its module tag and its own first byte.
    pub fn kind(&self) -> grants::MessageKind {
        let bytes = self.to_bytes();
        grants::MessageKind {
            module: bytes[0],
            message: bytes.get(1).copied().unwrap_or(0),
        }
    }

    /// Whom the message pays, for a grant's recipient and agent lists.
    pub fn party(&self) -> Option<grants::Party> {
        match self {
            Message::Bank(bank::Msg::Send { to, .. }) => Some(grants::Party::Account(*to)),
            Message::Agents(agents::Msg::Call { agent, .. }) => Some(grants::Party::Agent(*agent)),
            _ => None,
        }
    }
}

const TAG_BANK: u8 = 1;
const TAG_STAKING: u8 = 2;
const TAG_MODELS: u8 = 3;
const TAG_COMPUTE: u8 = 4;
const TAG_VERIFY: u8 = 5;
const TAG_SESSIONS: u8 = 6;
const TAG_STORAGE: u8 = storage::MODULE_TAG;
const TAG_GRANTS: u8 = grants::MODULE_TAG;
const TAG_AGENTS: u8 = agents::MODULE_TAG;
const TAG_SHARES: u8 = bank::shares::MODULE_TAG;
const TAG_DATA: u8 = data::MODULE_TAG;

impl Encode for Message {
    fn encode(&self, w: &mut Writer) {
        match self {
            Message::Bank(m) => {
                w.u8(TAG_BANK);
                m.encode(w)
            }
            Message::Staking(m) => {
                w.u8(TAG_STAKING);
                m.encode(w)
            }
            Message::Models(m) => {
                w.u8(TAG_MODELS);
                m.encode(w)
            }
            Message::Compute(m) => {
                w.u8(TAG_COMPUTE);
                m.encode(w)
            }
            Message::Verify(m) => {
                w.u8(TAG_VERIFY);
                m.encode(w)
            }
            Message::Sessions(m) => {
                w.u8(TAG_SESSIONS);
                m.encode(w)
            }
            Message::Storage(m) => {
                w.u8(TAG_STORAGE);
                m.encode(w)
            }
            Message::Grants(m) => {
                w.u8(TAG_GRANTS);
                m.encode(w)
            }
            Message::Agents(m) => {
                w.u8(TAG_AGENTS);
                m.encode(w)
            }
            Message::Shares(m) => {
                w.u8(TAG_SHARES);
                m.encode(w)
            }
            Message::Data(m) => {
                w.u8(TAG_DATA);
                m.encode(w)
            }
        }
    }
}

impl Decode for Message {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.u8()? {
            TAG_BANK => Ok(Message::Bank(r.value()?)),
            TAG_STAKING => Ok(Message::Staking(r.value()?)),
            TAG_MODELS => Ok(Message::Models(r.value()?)),
            TAG_COMPUTE => Ok(Message::Compute(r.value()?)),
            TAG_VERIFY => Ok(Message::Verify(r.value()?)),
            TAG_SESSIONS => Ok(Message::Sessions(r.value()?)),
            TAG_STORAGE => Ok(Message::Storage(r.value()?)),
            TAG_GRANTS => Ok(Message::Grants(r.value()?)),
            TAG_AGENTS => Ok(Message::Agents(r.value()?)),
            TAG_SHARES => Ok(Message::Shares(r.value()?)),
            TAG_DATA => Ok(Message::Data(r.value()?)),
            tag => Err(DecodeError::InvalidTag {
                offset,
                tag,
                what: "message module",
            }),
        }
    }
}

/// The unsigned body of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub chain_id: String,
    pub sender: PublicKey,
    pub nonce: u64,
    pub max_fee: Amount,
    pub messages: Vec<Message>,
}

impl Encode for Transaction {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.chain_id);
        w.value(&self.sender);
        w.u64(self.nonce);
        w.value(&self.max_fee);
        w.seq(&self.messages);
    }
}

impl Decode for Transaction {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Transaction {
            chain_id: r.string(CHAIN_ID_BYTES_MAX)?,
            sender: r.value()?,
            nonce: r.u64()?,
            max_fee: r.value()?,
            messages: r.seq(TX_MESSAGES_MAX)?,
        })
    }
}

impl Transaction {
    pub fn sender_address(&self) -> Address {
        self.sender.address()
    }

    /// The bytes the sender signs: a domain tag and the canonical encoding.
    pub fn sign_bytes(&self) -> Vec<u8> {
        let mut bytes = SIGN_DOMAIN.to_vec();
        bytes.extend_from_slice(&self.to_bytes());
        bytes
    }

    pub fn sign(self, key: &SecretKey) -> SignedTransaction {
        let signature = key.sign(&self.sign_bytes());
        SignedTransaction::new(self, signature)
    }

    /// The bytes a grantee signs to act for the sender: its own domain, the grantee's key and
    /// the canonical encoding.
    pub fn grantee_sign_bytes(&self, grantee: &PublicKey) -> Vec<u8> {
        let mut bytes = GRANTEE_SIGN_DOMAIN.to_vec();
        bytes.extend_from_slice(&grantee.0);
        bytes.extend_from_slice(&self.to_bytes());
        bytes
    }

    /// Signs with a key the sender granted a scope to (`grants::Msg::Grant`): the transaction
    /// acts for the sender's account within that grant, on the sender's nonce sequence.
    pub fn sign_as_grantee(self, key: &SecretKey) -> SignedTransaction {
        let grantee = key.public_key();
        let signature = key.sign(&self.grantee_sign_bytes(&grantee));
        SignedTransaction::new_as_grantee(self, grantee, signature)
    }
}

/// A transaction with its signature, its canonical bytes and its hash. The signature is the
/// sender's own, or (with `grantee`) that of a key the sender granted a scope to; the
/// encoding is `tx ‖ signature`, or `GRANTEE_ENVELOPE ‖ grantee ‖ tx ‖ signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    pub tx: Transaction,
    pub signature: Signature,
    grantee: Option<PublicKey>,
    hash: Hash,
    encoded_len: usize,
}

impl SignedTransaction {
    pub fn new(tx: Transaction, signature: Signature) -> Self {
        Self::with_signer(tx, None, signature)
    }

    /// A transaction signed by `grantee` for its sender (see [`Transaction::sign_as_grantee`]).
    pub fn new_as_grantee(tx: Transaction, grantee: PublicKey, signature: Signature) -> Self {
        Self::with_signer(tx, Some(grantee), signature)
    }

    fn with_signer(tx: Transaction, grantee: Option<PublicKey>, signature: Signature) -> Self {
        let mut signed = SignedTransaction {
            tx,
            signature,
            grantee,
            hash: Hash::ZERO,
            encoded_len: 0,
        };
        let bytes = signed.to_bytes();
        signed.hash = tx_hash(&bytes);
        signed.encoded_len = bytes.len();
        signed
    }

    /// The key a grantee signed with, when the sender did not sign itself.
    pub fn grantee(&self) -> Option<&PublicKey> {
        self.grantee.as_ref()
    }

    /// Decodes untrusted bytes, refusing anything over [`TX_BYTES_MAX`] (or
    /// [`EVIDENCE_TX_BYTES_MAX`] for a transaction that only carries arbitration evidence).
    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, TxError> {
        if bytes.len() > EVIDENCE_TX_BYTES_MAX {
            return Err(oversized(bytes.len(), EVIDENCE_TX_BYTES_MAX));
        }
        // Past the ordinary limit only a well-formed evidence transaction is accepted.
        if bytes.len() > TX_BYTES_MAX {
            return match Self::from_bytes(bytes) {
                Ok(tx) if size_limit(&tx) == EVIDENCE_TX_BYTES_MAX => Ok(tx),
                _ => Err(oversized(bytes.len(), TX_BYTES_MAX)),
            };
        }
        Ok(Self::from_bytes(bytes)?)
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    pub fn sender(&self) -> Address {
        self.tx.sender.address()
    }

    /// The sender's signature, or the grantee's (whether the grantee may act for the sender
    /// is a question for the state: `executor::check_admission` and `BlockExecutor::apply_tx`).
    pub fn verify_signature(&self) -> Result<(), TxError> {
        let (signer, message) = self.signed_bytes();
        signer
            .verify(&message, &self.signature)
            .map_err(bad_signature)
    }

    /// Who signs this transaction (the sender, or the grantee acting for it) and the bytes
    /// it signs.
    fn signed_bytes(&self) -> (&PublicKey, Vec<u8>) {
        match &self.grantee {
            None => (&self.tx.sender, self.tx.sign_bytes()),
            Some(grantee) => (grantee, self.tx.grantee_sign_bytes(grantee)),
        }
    }
}

fn bad_signature(e: KeyError) -> TxError {
    TxError::new(ErrorCode::BadSignature, e.to_string())
}

fn tx_hash(encoded: &[u8]) -> Hash {
    Hash::of("piazza/tx-id", &[encoded])
}

impl Encode for SignedTransaction {
    fn encode(&self, w: &mut Writer) {
        if let Some(grantee) = &self.grantee {
            w.u32(GRANTEE_ENVELOPE);
            w.value(grantee);
        }
        w.value(&self.tx);
        w.value(&self.signature);
    }
}

impl Decode for SignedTransaction {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.offset();
        let grantee = if r.clone().u32()? == GRANTEE_ENVELOPE {
            r.u32()?;
            Some(r.value()?)
        } else {
            None
        };
        let tx: Transaction = r.value()?;
        let signature: Signature = r.value()?;
        let encoded = r.read_since(start);
        Ok(SignedTransaction {
            tx,
            signature,
            grantee,
            hash: tx_hash(encoded),
            encoded_len: encoded.len(),
        })
    }
}

/// Checks that need no state: size, chain id, message count, each message's own rules, a signer
/// key not of small order and the signature (unless the caller has already verified it, for
/// example in a batch).
pub fn check_stateless(
    tx: &SignedTransaction,
    chain_id: &str,
    signature_checked: bool,
) -> Result<(), TxError> {
    check_size(tx)?;
    if tx.tx.chain_id != chain_id {
        return Err(TxError::new(
            ErrorCode::WrongChainId,
            format!(
                "transaction is for chain `{}`, this is `{chain_id}`",
                tx.tx.chain_id
            ),
        ));
    }
    if tx.tx.messages.is_empty() {
        return Err(TxError::new(
            ErrorCode::NoMessages,
            "a transaction needs at least one message",
        ));
    }
    if tx.tx.messages.len() > TX_MESSAGES_MAX {
        return Err(TxError::new(
            ErrorCode::TooManyMessages,
            format!("at most {TX_MESSAGES_MAX} messages"),
        ));
    }
    for message in &tx.tx.messages {
        message.check_stateless()?;
    }
    refuse_small_order(&tx.tx.sender, "the sender's key")?;
    if let Some(grantee) = tx.grantee() {
        refuse_small_order(grantee, "the signing grantee's key")?;
    }
    if !signature_checked {
        tx.verify_signature()?;
    }
    Ok(())
}

/// Verifies many transactions' signatures with batch verification
/// (`piazza_primitives::verify_batch`: about half the work of one by one, and for each
/// transaction exactly the answer of [`SignedTransaction::verify_signature`]), spread over the
/// machine's cores. Returns one result per input, in order.
pub fn verify_signatures(txs: &[&SignedTransaction]) -> Vec<Result<(), TxError>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if threads <= 1 || txs.len() < 64 {
        return verify_batch_of(txs);
    }
    let chunk = txs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = txs
            .chunks(chunk)
            .map(|part| scope.spawn(move || verify_batch_of(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signature verification does not panic"))
            .collect()
    })
}

/// [`verify_signatures`] on one thread.
fn verify_batch_of(txs: &[&SignedTransaction]) -> Vec<Result<(), TxError>> {
    let signed: Vec<(&PublicKey, Vec<u8>)> = txs.iter().map(|t| t.signed_bytes()).collect();
    let items: Vec<Signed<'_>> = signed
        .iter()
        .zip(txs)
        .map(|((key, message), t)| Signed {
            key,
            message,
            signature: &t.signature,
        })
        .collect();
    verify_batch(&items)
        .into_iter()
        .map(|checked| checked.map_err(bad_signature))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SignedTransaction {
        let key = SecretKey::from_seed([3; 32]);
        Transaction {
            chain_id: "test".into(),
            sender: key.public_key(),
            nonce: 4,
            max_fee: Amount::new(1000),
            messages: vec![Message::Bank(bank::Msg::Send {
                to: Address([1; 20]),
                amount: Amount::new(5),
            })],
        }
        .sign(&key)
    }

    #[test]
    fn encoding_round_trips_and_hash_is_of_bytes() {
        let tx = sample();
        let bytes = tx.to_bytes();
        let back = SignedTransaction::decode_bytes(&bytes).unwrap();
        assert_eq!(back, tx);
        assert_eq!(back.hash(), tx_hash(&bytes));
        assert_eq!(back.encoded_len(), bytes.len());
        assert!(check_stateless(&back, "test", false).is_ok());
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let mut tx = sample();
        tx.tx.nonce += 1;
        let tx = SignedTransaction::new(tx.tx, tx.signature);
        assert_eq!(
            check_stateless(&tx, "test", false).unwrap_err().code,
            ErrorCode::BadSignature
        );
        assert_eq!(
            verify_signatures(&[&sample(), &tx])[1]
                .as_ref()
                .unwrap_err()
                .code,
            ErrorCode::BadSignature
        );
        assert!(verify_signatures(&[&sample(), &sample()])
            .iter()
            .all(|r| r.is_ok()));
    }

    #[test]
    fn a_bad_signature_among_many_is_refused_alone() {
        let txs: Vec<SignedTransaction> = (0..150u8)
            .map(|i| {
                let key = SecretKey::from_seed([i; 32]);
                let mut tx = sample().tx;
                tx.sender = key.public_key();
                tx.sign(&key)
            })
            .collect();
        let mut tampered = txs[77].clone().tx;
        tampered.nonce += 1;
        let tampered = SignedTransaction::new(tampered, txs[77].signature);
        let mut refs: Vec<&SignedTransaction> = txs.iter().collect();
        refs[77] = &tampered;
        let checks = verify_signatures(&refs);
        assert_eq!(checks.len(), refs.len());
        for (i, check) in checks.iter().enumerate() {
            assert_eq!(check.is_err(), i == 77, "transaction {i}");
            assert_eq!(*check, refs[i].verify_signature());
        }
    }

    #[test]
    fn wrong_chain_and_oversize_are_refused() {
        assert_eq!(
            check_stateless(&sample(), "other", false).unwrap_err().code,
            ErrorCode::WrongChainId
        );
        let huge = vec![0u8; TX_BYTES_MAX + 1];
        assert_eq!(
            SignedTransaction::decode_bytes(&huge).unwrap_err().code,
            ErrorCode::OversizedTx
        );
        assert_eq!(
            SignedTransaction::decode_bytes(&[1, 2, 3])
                .unwrap_err()
                .code,
            ErrorCode::MalformedBytes
        );
    }
}
