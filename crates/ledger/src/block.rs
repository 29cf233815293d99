//! Blocks and receipts.

use crate::error::{ErrorCode, TxError};
pub use crate::event::{Event, EVENTS_PER_MESSAGE_MAX};
use crate::tx::{SignedTransaction, CHAIN_ID_BYTES_MAX};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{
    Amount, Hash, PublicKey, SecretKey, Signature, VrfProof, VRF_OUTPUT_BYTES,
};

/// Longest failure message a receipt keeps (longer ones are cut when the receipt is made).
pub const FAILURE_MESSAGE_BYTES_MAX: usize = 1024;
/// Most transactions in one block.
pub const BLOCK_TXS_MAX: usize = 20_000;
/// Largest encoded block.
pub const BLOCK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most events one transaction may emit: enough for every message at its own bound, so no legal
/// transaction's receipt is ever cut.
pub const EVENTS_PER_TX_MAX: usize = crate::tx::TX_MESSAGES_MAX * EVENTS_PER_MESSAGE_MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub chain_id: String,
    pub height: u64,
    pub parent_hash: Hash,
    /// Milliseconds since the Unix epoch, chosen by the proposer; never decreases.
    pub time_ms: u64,
    pub proposer: PublicKey,
    /// Binary Merkle root over the transaction hashes.
    pub tx_root: Hash,
    /// The state root after executing this block.
    pub state_root: Hash,
    /// `H(beta)`: the chain's randomness for this height, from the output `beta` of
    /// `randomness_proof`.
    pub randomness: Hash,
    /// The proposer's VRF proof (RFC 9381, ECVRF-EDWARDS25519-SHA512-TAI) over the previous
    /// randomness and this height. Every valid proof of one input under one key has the same
    /// output, so the proposer cannot grind the randomness (a signature would not do: a signer
    /// may choose its nonce, and each nonce gives another valid signature).
    pub randomness_proof: VrfProof,
}

impl Encode for BlockHeader {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.chain_id);
        w.u64(self.height);
        w.value(&self.parent_hash);
        w.u64(self.time_ms);
        w.value(&self.proposer);
        w.value(&self.tx_root);
        w.value(&self.state_root);
        w.value(&self.randomness);
        w.value(&self.randomness_proof);
    }
}

impl Decode for BlockHeader {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(BlockHeader {
            chain_id: r.string(CHAIN_ID_BYTES_MAX)?,
            height: r.u64()?,
            parent_hash: r.value()?,
            time_ms: r.u64()?,
            proposer: r.value()?,
            tx_root: r.value()?,
            state_root: r.value()?,
            randomness: r.value()?,
            randomness_proof: r.value()?,
        })
    }
}

impl BlockHeader {
    pub fn hash(&self) -> Hash {
        Hash::of("piazza/block", &[&self.to_bytes()])
    }
}

/// The VRF input of the randomness of `height`.
pub fn randomness_input(chain_id: &str, height: u64, previous: &Hash) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(b"piazza/randomness/v1");
    w.str(chain_id);
    w.u64(height);
    w.value(previous);
    w.into_bytes()
}

/// The randomness of a height, from the VRF output of its proof.
pub fn randomness_from_output(beta: &[u8; VRF_OUTPUT_BYTES]) -> Hash {
    Hash::of("piazza/randomness", &[beta])
}

/// The randomness of `height` and its VRF proof by `key`.
pub fn prove_randomness(
    key: &SecretKey,
    chain_id: &str,
    height: u64,
    previous: &Hash,
) -> (Hash, VrfProof) {
    let input = randomness_input(chain_id, height, previous);
    let proof = key.vrf_prove(&input);
    let beta = key
        .public_key()
        .vrf_verify(&input, &proof)
        .expect("a proof by this key verifies under it");
    (randomness_from_output(&beta), proof)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<SignedTransaction>,
    /// The proposer's signature over the header hash.
    pub signature: Signature,
}

impl Encode for Block {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.header);
        w.seq(&self.txs);
        w.value(&self.signature);
    }
}

impl Decode for Block {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Block {
            header: r.value()?,
            txs: r.seq(BLOCK_TXS_MAX)?,
            signature: r.value()?,
        })
    }
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Decodes untrusted bytes, refusing anything over [`BLOCK_BYTES_MAX`].
    pub fn decode_bytes(bytes: &[u8]) -> Result<Block, DecodeError> {
        if bytes.len() > BLOCK_BYTES_MAX {
            return Err(DecodeError::TooLong {
                offset: 0,
                length: bytes.len(),
                limit: BLOCK_BYTES_MAX,
            });
        }
        Block::from_bytes(bytes)
    }

    pub fn verify_signature(&self) -> Result<(), TxError> {
        self.header
            .proposer
            .verify(&self.hash().0, &self.signature)
            .map_err(|e| TxError::new(ErrorCode::BadSignature, format!("block signature: {e}")))
    }
}

/// Binary Merkle root over leaf hashes: leaves and nodes are domain-separated, an odd node is
/// promoted unchanged, and the empty tree has root `H("piazza/merkle-empty")`.
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::of("piazza/merkle-empty", &[]);
    }
    let mut level: Vec<Hash> = leaves
        .iter()
        .map(|l| Hash::of("piazza/merkle-leaf", &[&l.0]))
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => Hash::of("piazza/merkle-node", &[&left.0, &right.0]),
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    level[0]
}

pub fn tx_root(txs: &[SignedTransaction]) -> Hash {
    let hashes: Vec<Hash> = txs.iter().map(|t| t.hash()).collect();
    merkle_root(&hashes)
}

/// How a committed transaction ended. Its fee is paid and its nonce used either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    Ok,
    Failed { code: u16, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub tx_hash: Hash,
    pub height: u64,
    pub index: u32,
    pub status: TxStatus,
    pub fee_paid: Amount,
    pub events: Vec<Event>,
}

impl Encode for Receipt {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.tx_hash);
        w.u64(self.height);
        w.u32(self.index);
        match &self.status {
            TxStatus::Ok => w.u8(0),
            TxStatus::Failed { code, message } => {
                w.u8(1);
                w.u16(*code);
                w.str(message);
            }
        }
        w.value(&self.fee_paid);
        w.seq(&self.events);
    }
}

impl Decode for Receipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tx_hash = r.value()?;
        let height = r.u64()?;
        let index = r.u32()?;
        let offset = r.offset();
        let status = match r.u8()? {
            0 => TxStatus::Ok,
            1 => TxStatus::Failed {
                code: r.u16()?,
                message: r.string(FAILURE_MESSAGE_BYTES_MAX)?,
            },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "tx status",
                })
            }
        };
        Ok(Receipt {
            tx_hash,
            height,
            index,
            status,
            fee_paid: r.value()?,
            events: r.seq(EVENTS_PER_TX_MAX)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merkle_root_depends_on_order_and_count() {
        let a = Hash::of("t", &[b"a"]);
        let b = Hash::of("t", &[b"b"]);
        let c = Hash::of("t", &[b"c"]);
        assert_ne!(merkle_root(&[a, b]), merkle_root(&[b, a]));
        assert_ne!(merkle_root(&[a, b]), merkle_root(&[a, b, c]));
        assert_ne!(merkle_root(&[a]), a);
        assert_ne!(merkle_root(&[]), merkle_root(&[a]));
    }

    #[test]
    fn randomness_is_verifiable() {
        let key = SecretKey::from_seed([5; 32]);
        let (r, proof) = prove_randomness(&key, "c", 3, &Hash::ZERO);
        let beta = key
            .public_key()
            .vrf_verify(&randomness_input("c", 3, &Hash::ZERO), &proof)
            .unwrap();
        assert_eq!(randomness_from_output(&beta), r);
        assert_ne!(prove_randomness(&key, "c", 4, &Hash::ZERO).0, r);
        let other = SecretKey::from_seed([6; 32]).public_key();
        assert!(other
            .vrf_verify(&randomness_input("c", 3, &Hash::ZERO), &proof)
            .is_err());
    }
}
