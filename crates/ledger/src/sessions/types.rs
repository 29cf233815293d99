//! The session types both sides of the off-chain protocol sign, and the ledger checks: a
//! client's [`Request`], the provider's [`Receipt`], the client's cumulative [`Voucher`], the
//! Merkle tree a commit posts over its receipts, and the on-chain [`Session`] record.
//!
//! Every signed type signs a domain-separated digest of its canonical encoding, one domain per
//! type, so a signature over one kind can never pass for another.

use crate::compute::JOB_INPUT_BYTES_MAX;
use crate::job::JobParams;
use crate::models::MODEL_NAME_BYTES_MAX;
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash, PublicKey, SecretKey, Signature};
use piazza_trace::merkle;

/// Most receipts one commit may cover (the Merkle tree of one commit).
pub const RECEIPTS_PER_COMMIT_MAX: u64 = 4096;
/// Most sibling hashes in a receipt's inclusion proof: the depth of a full commit's tree.
pub const RECEIPT_PROOF_SIBLINGS_MAX: usize = 16;
/// The Merkle domain of a commit's receipts tree.
pub const RECEIPTS_DOMAIN: &str = "piazza/session-receipts";

const REQUEST_DOMAIN: &str = "piazza/session-request";
const RECEIPT_DOMAIN: &str = "piazza/session-receipt";
const VOUCHER_DOMAIN: &str = "piazza/session-voucher";

/// Why a signed session message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("the signature does not verify under the signer's key")]
    BadSignature,
    #[error("signed by {signer}, which may not sign for this session")]
    WrongSigner { signer: Address },
    #[error("made for session {found}, not session {expected}")]
    WrongSession { expected: u64, found: u64 },
}

/// One request of a session: what the client asks the provider to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub session: u64,
    /// Strictly increasing within a session, from 1.
    pub seq: u64,
    /// At most [`JOB_INPUT_BYTES_MAX`] bytes, as a job's input.
    pub input: Vec<u8>,
    pub params: JobParams,
    /// The most units of work the client pays for on this request.
    pub max_units: u64,
}

/// The provider's signed account of one served request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub session: u64,
    pub seq: u64,
    /// `compute::input_hash` of the request's input.
    pub input_hash: Hash,
    /// `compute::output_hash` of the output streamed.
    pub output_hash: Hash,
    pub trace_root: Hash,
    pub units: u64,
    /// The input's tokens as the provider's run read them (a generation's prompt ids after
    /// the chat template, an embedding's tokens: then equal to `units`). Signed, so a wrong
    /// count is the provider's own statement and usage reports rest on it.
    pub input_units: u64,
    pub price: Amount,
}

/// The client's cumulative payment: everything owed up to and including request `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voucher {
    pub session: u64,
    pub seq: u64,
    pub total: Amount,
}

impl Encode for Request {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.session);
        w.u64(self.seq);
        w.bytes(&self.input);
        w.value(&self.params);
        w.u64(self.max_units);
    }
}

impl Decode for Request {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Request {
            session: r.u64()?,
            seq: r.u64()?,
            input: r.bytes(JOB_INPUT_BYTES_MAX)?,
            params: r.value()?,
            max_units: r.u64()?,
        })
    }
}

impl Encode for Receipt {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.session);
        w.u64(self.seq);
        w.value(&self.input_hash);
        w.value(&self.output_hash);
        w.value(&self.trace_root);
        w.u64(self.units);
        w.u64(self.input_units);
        w.value(&self.price);
    }
}

impl Decode for Receipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Receipt {
            session: r.u64()?,
            seq: r.u64()?,
            input_hash: r.value()?,
            output_hash: r.value()?,
            trace_root: r.value()?,
            units: r.u64()?,
            input_units: r.u64()?,
            price: r.value()?,
        })
    }
}

impl Encode for Voucher {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.session);
        w.u64(self.seq);
        w.value(&self.total);
    }
}

impl Decode for Voucher {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Voucher {
            session: r.u64()?,
            seq: r.u64()?,
            total: r.value()?,
        })
    }
}

/// A body that is signed under its own domain.
trait Signable: Encode {
    const DOMAIN: &'static str;
    fn session_id(&self) -> u64;
}

fn signing_digest<T: Signable>(body: &T) -> [u8; 32] {
    Hash::of(T::DOMAIN, &[&body.to_bytes()]).0
}

/// Declares a signed wrapper: the body, its signer's key and the signature over the body's
/// `signing_bytes()`, with its codec, `sign` and `verify`.
macro_rules! signed {
    ($(#[$doc:meta])* $signed:ident, $field:ident: $body:ty, $domain:expr) => {
        impl Signable for $body {
            const DOMAIN: &'static str = $domain;
            fn session_id(&self) -> u64 {
                self.session
            }
        }

        impl $body {
            /// The digest the signer signs: the canonical encoding under this type's domain.
            pub fn signing_bytes(&self) -> [u8; 32] {
                signing_digest(self)
            }

            pub fn sign(self, key: &SecretKey) -> $signed {
                let signature = key.sign(&self.signing_bytes());
                $signed { $field: self, signer: key.public_key(), signature }
            }
        }

        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $signed {
            pub $field: $body,
            pub signer: PublicKey,
            pub signature: Signature,
        }

        impl $signed {
            /// Whether the signature verifies under `signer` (who may sign is checked apart).
            pub fn verify(&self) -> Result<(), SignatureError> {
                self.signer
                    .verify(&self.$field.signing_bytes(), &self.signature)
                    .map_err(|_| SignatureError::BadSignature)
            }

            /// Verifies the signature, that it is made for `session`, and that `may_sign`
            /// accepts its signer.
            pub fn verify_for(
                &self,
                session: u64,
                may_sign: impl Fn(&PublicKey) -> bool,
            ) -> Result<(), SignatureError> {
                let found = self.$field.session_id();
                if found != session {
                    return Err(SignatureError::WrongSession { expected: session, found });
                }
                if !may_sign(&self.signer) {
                    return Err(SignatureError::WrongSigner { signer: self.signer.address() });
                }
                self.verify()
            }
        }

        impl Encode for $signed {
            fn encode(&self, w: &mut Writer) {
                w.value(&self.$field);
                w.value(&self.signer);
                w.value(&self.signature);
            }
        }

        impl Decode for $signed {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($signed { $field: r.value()?, signer: r.value()?, signature: r.value()? })
            }
        }
    };
}

signed!(
    /// A request signed by the session's owner key or the key it authorised at open.
    SignedRequest, request: Request, REQUEST_DOMAIN
);
signed!(
    /// A receipt signed by the session's assigned provider.
    SignedReceipt, receipt: Receipt, RECEIPT_DOMAIN
);
signed!(
    /// A voucher signed by the session's owner key or the key it authorised at open.
    SignedVoucher, voucher: Voucher, VOUCHER_DOMAIN
);

impl SignedRequest {
    /// Verifies a request for `session`: made for it, signed by its owner or authorised key.
    pub fn verify_session(&self, session: &Session) -> Result<(), SignatureError> {
        self.verify_for(session.id, |key| session.may_pay(key))
    }
}

impl SignedVoucher {
    /// Verifies a voucher for `session`: made for it, signed by its owner or authorised key.
    pub fn verify_session(&self, session: &Session) -> Result<(), SignatureError> {
        self.verify_for(session.id, |key| session.may_pay(key))
    }
}

impl SignedReceipt {
    /// Verifies a receipt for `session`: made for it, signed by its assigned provider.
    pub fn verify_session(&self, session: &Session) -> Result<(), SignatureError> {
        self.verify_for(session.id, |key| session.provider == Some(key.address()))
    }
}

/// The leaf of `receipt` in a commit's receipts tree.
pub fn receipt_leaf(receipt: &Receipt) -> Hash {
    Hash(merkle::leaf_hash(
        RECEIPTS_DOMAIN,
        receipt.seq,
        &receipt.to_bytes(),
    ))
}

fn receipt_leaves(receipts: &[Receipt]) -> Vec<merkle::Hash> {
    receipts.iter().map(|r| receipt_leaf(r).0).collect()
}

/// The root a commit posts over its receipts, in order.
pub fn receipts_root(receipts: &[Receipt]) -> Hash {
    Hash(merkle::root(RECEIPTS_DOMAIN, &receipt_leaves(receipts)))
}

/// The inclusion proof of one receipt in a commit's tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptProof {
    pub siblings: Vec<Hash>,
}

impl Encode for ReceiptProof {
    fn encode(&self, w: &mut Writer) {
        w.seq(&self.siblings);
    }
}

impl Decode for ReceiptProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ReceiptProof {
            siblings: r.seq(RECEIPT_PROOF_SIBLINGS_MAX)?,
        })
    }
}

/// The proof that `receipts[index]` is in `receipts_root(receipts)`; `None` out of range.
pub fn prove_receipt(receipts: &[Receipt], index: usize) -> Option<ReceiptProof> {
    let proof = merkle::prove(&receipt_leaves(receipts), index)?;
    Some(ReceiptProof {
        siblings: proof.siblings.into_iter().map(Hash).collect(),
    })
}

/// Whether `receipt` is receipt `index` of a `count`-receipt commit with root `root`.
pub fn verify_receipt(
    root: &Hash,
    count: u64,
    index: u64,
    receipt: &Receipt,
    proof: &ReceiptProof,
) -> bool {
    let proof = merkle::Proof {
        siblings: proof.siblings.iter().map(|h| h.0).collect(),
    };
    merkle::verify(
        RECEIPTS_DOMAIN,
        &root.0,
        count,
        index,
        &receipt_leaf(receipt).0,
        &proof,
    )
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// Opened and escrowed; waiting for a later block's randomness to assign a provider.
    Pending,
    /// Assigned: the provider serves requests and commits vouchers.
    Open,
    /// Closed by the owner or expired: no new commits; the unspent deposit returns once the
    /// last commit's window has passed.
    Closing,
    /// Settled: nothing is escrowed for it any more.
    Closed,
}

impl Encode for SessionStatus {
    fn encode(&self, w: &mut Writer) {
        w.u8(match self {
            SessionStatus::Pending => 0,
            SessionStatus::Open => 1,
            SessionStatus::Closing => 2,
            SessionStatus::Closed => 3,
        });
    }
}

impl Decode for SessionStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(SessionStatus::Pending),
            1 => Ok(SessionStatus::Open),
            2 => Ok(SessionStatus::Closing),
            3 => Ok(SessionStatus::Closed),
            tag => Err(DecodeError::InvalidTag {
                offset: r.offset().saturating_sub(1),
                tag,
                what: "session status",
            }),
        }
    }
}

/// A session as the ledger stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: u64,
    pub owner: Address,
    /// The key that opened the session; it signs requests and vouchers.
    pub owner_key: PublicKey,
    /// A second key the owner allowed to sign requests and vouchers.
    pub authorised: Option<PublicKey>,
    pub model: String,
    /// The assigned provider (none while pending).
    pub provider: Option<Address>,
    /// What the session escrows now: the open deposit plus top-ups, less what has left it.
    pub deposit: Amount,
    pub max_price_per_unit: Amount,
    pub expiry_height: u64,
    pub opened_height: u64,
    pub status: SessionStatus,
    /// Released from the deposit so far (paid out after commit windows, or moved to jobs).
    pub paid: Amount,
    /// The total of the latest committed voucher.
    pub committed_total: Amount,
    /// The seq of the latest committed voucher.
    pub committed_seq: u64,
    /// The height of the latest commit (0: none).
    pub commit_height: u64,
    /// Units summed over every commit.
    pub committed_units: u64,
    /// Commits made so far (each numbered from 0).
    pub commits: u64,
    /// Commits whose payout has not happened yet.
    pub pending_commits: u64,
    /// When the session started closing (0 while open): commits are still taken for one
    /// challenge window after it, then the unspent deposit returns.
    pub closing_height: u64,
}

impl Session {
    /// Whether `key` may sign this session's requests and vouchers.
    pub fn may_pay(&self, key: &PublicKey) -> bool {
        *key == self.owner_key || self.authorised.as_ref() == Some(key)
    }
}

impl Encode for Session {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.value(&self.owner);
        w.value(&self.owner_key);
        w.option(&self.authorised);
        w.str(&self.model);
        w.option(&self.provider);
        w.value(&self.deposit);
        w.value(&self.max_price_per_unit);
        w.u64(self.expiry_height);
        w.u64(self.opened_height);
        w.value(&self.status);
        w.value(&self.paid);
        w.value(&self.committed_total);
        w.u64(self.committed_seq);
        w.u64(self.commit_height);
        w.u64(self.committed_units);
        w.u64(self.commits);
        w.u64(self.pending_commits);
        w.u64(self.closing_height);
    }
}

impl Decode for Session {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Session {
            id: r.u64()?,
            owner: r.value()?,
            owner_key: r.value()?,
            authorised: r.option()?,
            model: r.string(MODEL_NAME_BYTES_MAX)?,
            provider: r.option()?,
            deposit: r.value()?,
            max_price_per_unit: r.value()?,
            expiry_height: r.u64()?,
            opened_height: r.u64()?,
            status: r.value()?,
            paid: r.value()?,
            committed_total: r.value()?,
            committed_seq: r.u64()?,
            commit_height: r.u64()?,
            committed_units: r.u64()?,
            commits: r.u64()?,
            pending_commits: r.u64()?,
            closing_height: r.u64()?,
        })
    }
}

/// Where a commit's payout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitStatus {
    /// In its challenge window, or waiting for its audits.
    Pending,
    /// Its new money has been paid out (less what moved into jobs).
    Paid,
}

impl Encode for CommitStatus {
    fn encode(&self, w: &mut Writer) {
        w.bool(matches!(self, CommitStatus::Paid));
    }
}

impl Decode for CommitStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(if r.bool()? {
            CommitStatus::Paid
        } else {
            CommitStatus::Pending
        })
    }
}

/// One commit of a session, as the ledger stores it (ids count every session's commits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub id: u64,
    pub session: u64,
    /// Its number among the session's commits, from 0.
    pub index: u64,
    pub provider: Address,
    pub root: Hash,
    /// Receipts under `root`.
    pub count: u64,
    /// Units the provider declares for these receipts.
    pub units: u64,
    /// The seq of the session's previous committed voucher.
    pub from_seq: u64,
    pub voucher_seq: u64,
    pub total: Amount,
    /// New money: `total` less the previously committed total.
    pub amount: Amount,
    /// Part of `amount` moved into compute jobs (revealed or challenged requests).
    pub moved: Amount,
    pub height: u64,
    /// When its challenge window ends and, audits answered, it pays out.
    pub settle_height: u64,
    /// Receipt indexes drawn for audit, sorted.
    pub audited: Vec<u64>,
    /// Audited indexes revealed, sorted.
    pub revealed: Vec<u64>,
    /// The height by which audited receipts must be revealed (0: none drawn yet).
    pub reveal_deadline: u64,
    /// Whether the reveal deadline has been processed (missing reveals slashed).
    pub audits_closed: bool,
    /// Request seqs turned into compute jobs, sorted (each at most once).
    pub adopted_seqs: Vec<u64>,
    /// The compute jobs made from this commit's requests.
    pub jobs: Vec<u64>,
    pub status: CommitStatus,
    /// When its jobs are next looked at for a proven fraud (0: not watched).
    pub fraud_check_height: u64,
    /// Whether its provider already paid the commit's fraud slash (at most once).
    pub fraud_slashed: bool,
}

impl CommitRecord {
    /// Whether an audited receipt still waits for its reveal.
    pub fn audits_open(&self) -> bool {
        !self.audits_closed && self.revealed.len() < self.audited.len()
    }
}

impl Encode for CommitRecord {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.id);
        w.u64(self.session);
        w.u64(self.index);
        w.value(&self.provider);
        w.value(&self.root);
        w.u64(self.count);
        w.u64(self.units);
        w.u64(self.from_seq);
        w.u64(self.voucher_seq);
        w.value(&self.total);
        w.value(&self.amount);
        w.value(&self.moved);
        w.u64(self.height);
        w.u64(self.settle_height);
        w.seq(&self.audited);
        w.seq(&self.revealed);
        w.u64(self.reveal_deadline);
        w.bool(self.audits_closed);
        w.seq(&self.adopted_seqs);
        w.seq(&self.jobs);
        w.value(&self.status);
        w.u64(self.fraud_check_height);
        w.bool(self.fraud_slashed);
    }
}

impl Decode for CommitRecord {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let per_commit = RECEIPTS_PER_COMMIT_MAX as usize;
        Ok(CommitRecord {
            id: r.u64()?,
            session: r.u64()?,
            index: r.u64()?,
            provider: r.value()?,
            root: r.value()?,
            count: r.u64()?,
            units: r.u64()?,
            from_seq: r.u64()?,
            voucher_seq: r.u64()?,
            total: r.value()?,
            amount: r.value()?,
            moved: r.value()?,
            height: r.u64()?,
            settle_height: r.u64()?,
            audited: r.seq(per_commit)?,
            revealed: r.seq(per_commit)?,
            reveal_deadline: r.u64()?,
            audits_closed: r.bool()?,
            adopted_seqs: r.seq(per_commit)?,
            jobs: r.seq(per_commit)?,
            status: r.value()?,
            fraud_check_height: r.u64()?,
            fraud_slashed: r.bool()?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::compute::{input_hash, output_hash};

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    fn request(seq: u64) -> Request {
        Request {
            session: 7,
            seq,
            input: b"hello".to_vec(),
            params: JobParams {
                max_tokens: 16,
                ..JobParams::default()
            },
            max_units: 16,
        }
    }

    fn receipt(seq: u64) -> Receipt {
        Receipt {
            session: 7,
            seq,
            input_hash: input_hash(b"hello"),
            output_hash: output_hash(format!("out {seq}").as_bytes()),
            trace_root: Hash::of("test/trace", &[&seq.to_le_bytes()]),
            units: 10 + seq,
            input_units: 3 + seq,
            price: Amount::new(100 * u128::from(seq)),
        }
    }

    /// An open session of owner key 1 (key 2 authorised) served by `provider`, for tests.
    pub(crate) fn session(provider: &SecretKey) -> Session {
        Session {
            id: 7,
            owner: key(1).public_key().address(),
            owner_key: key(1).public_key(),
            authorised: Some(key(2).public_key()),
            model: "m".into(),
            provider: Some(provider.public_key().address()),
            deposit: Amount::pza(5),
            max_price_per_unit: Amount::new(10),
            expiry_height: 100,
            opened_height: 3,
            status: SessionStatus::Open,
            paid: Amount::ZERO,
            committed_total: Amount::ZERO,
            committed_seq: 0,
            commit_height: 0,
            committed_units: 0,
            commits: 0,
            pending_commits: 0,
            closing_height: 0,
        }
    }

    fn round_trip<T: Encode + Decode + PartialEq + std::fmt::Debug>(value: &T) {
        assert_eq!(&T::from_bytes(&value.to_bytes()).unwrap(), value);
    }

    #[test]
    fn codecs_round_trip() {
        let provider = key(9);
        round_trip(&request(1).sign(&key(1)));
        round_trip(&receipt(2).sign(&provider));
        let voucher = Voucher {
            session: 7,
            seq: 2,
            total: Amount::new(300),
        };
        round_trip(&voucher.sign(&key(2)));
        round_trip(&session(&provider));
        let receipts: Vec<Receipt> = (1..=5).map(receipt).collect();
        round_trip(&prove_receipt(&receipts, 3).unwrap());
    }

    #[test]
    fn oversized_input_and_bad_tags_are_refused() {
        let mut big = request(1);
        big.input = vec![0; JOB_INPUT_BYTES_MAX + 1];
        assert!(Request::from_bytes(&big.to_bytes()).is_err());
        let session = session(&key(9));
        let mut bytes = session.to_bytes();
        // The status byte follows the fixed fields up to `opened_height`.
        let status_at = bytes.len() - (16 * 2 + 8 * 6) - 1;
        assert_eq!(bytes[status_at], 1);
        bytes[status_at] = 4;
        assert!(matches!(
            Session::from_bytes(&bytes),
            Err(DecodeError::InvalidTag { tag: 4, .. })
        ));
        let proof = ReceiptProof {
            siblings: vec![Hash::ZERO; RECEIPT_PROOF_SIBLINGS_MAX + 1],
        };
        assert!(ReceiptProof::from_bytes(&proof.to_bytes()).is_err());
    }

    #[test]
    fn signers_are_checked_against_the_session() {
        let provider = key(9);
        let session = session(&provider);
        assert_eq!(request(1).sign(&key(1)).verify_session(&session), Ok(()));
        assert_eq!(request(1).sign(&key(2)).verify_session(&session), Ok(()));
        assert_eq!(
            request(1).sign(&key(3)).verify_session(&session),
            Err(SignatureError::WrongSigner {
                signer: key(3).public_key().address()
            })
        );
        assert!(matches!(
            request(1).sign(&provider).verify_session(&session),
            Err(SignatureError::WrongSigner { .. })
        ));
        assert_eq!(receipt(1).sign(&provider).verify_session(&session), Ok(()));
        assert!(matches!(
            receipt(1).sign(&key(1)).verify_session(&session),
            Err(SignatureError::WrongSigner { .. })
        ));
        let mut other = request(1);
        other.session = 8;
        assert_eq!(
            other.sign(&key(1)).verify_session(&session),
            Err(SignatureError::WrongSession {
                expected: 7,
                found: 8
            })
        );
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let mut signed = Voucher {
            session: 7,
            seq: 2,
            total: Amount::new(300),
        }
        .sign(&key(1));
        assert_eq!(signed.verify(), Ok(()));
        signed.voucher.total = Amount::new(301);
        assert_eq!(signed.verify(), Err(SignatureError::BadSignature));

        let mut signed = request(1).sign(&key(1));
        signed.request.input.push(b'!');
        assert_eq!(signed.verify(), Err(SignatureError::BadSignature));

        // The prompt count is signed: a receipt restating it no longer verifies.
        let mut signed = receipt(1).sign(&key(9));
        assert_eq!(signed.verify(), Ok(()));
        signed.receipt.input_units += 1;
        assert_eq!(signed.verify(), Err(SignatureError::BadSignature));
    }

    #[test]
    fn domains_separate_the_kinds() {
        // A voucher and a receipt prefix sharing bytes still sign different digests.
        let voucher = Voucher {
            session: 7,
            seq: 1,
            total: Amount::ZERO,
        };
        assert_ne!(
            voucher.signing_bytes(),
            Hash::of(RECEIPT_DOMAIN, &[&voucher.to_bytes()]).0
        );
        assert_ne!(request(1).signing_bytes(), request(2).signing_bytes());
    }

    #[test]
    fn receipt_proofs_verify_and_bind_index_count_and_content() {
        for count in 1..=9u64 {
            let receipts: Vec<Receipt> = (1..=count).map(receipt).collect();
            let root = receipts_root(&receipts);
            for index in 0..count {
                let proof = prove_receipt(&receipts, index as usize).unwrap();
                let r = &receipts[index as usize];
                assert!(verify_receipt(&root, count, index, r, &proof));
                assert!(!verify_receipt(&root, count + 1, index, r, &proof));
                let mut forged = r.clone();
                forged.price = Amount::new(1);
                assert!(!verify_receipt(&root, count, index, &forged, &proof));
                let mut forged = r.clone();
                forged.input_units += 1;
                assert!(!verify_receipt(&root, count, index, &forged, &proof));
                if count > 1 {
                    let wrong = (index + 1) % count;
                    assert!(!verify_receipt(&root, count, wrong, r, &proof));
                }
            }
            assert!(prove_receipt(&receipts, count as usize).is_none());
        }
    }
}
