//! The transaction, block and receipt decoders over a corpus of mutated inputs: no panic, and
//! whatever decodes re-encodes to exactly the same bytes (the encoding is canonical).
//! The same checks run under libFuzzer in `fuzz/` (`cargo fuzz run decode_tx`).

use piazza_codec::{Decode, Encode};
use piazza_ledger::bank;
use piazza_ledger::block::{
    prove_randomness, tx_root, Block, BlockHeader, Event, Receipt, TxStatus,
};
use piazza_ledger::staking::{self, Role};
use piazza_ledger::tx::{Message, SignedTransaction, Transaction};
use piazza_primitives::{Address, Amount, Hash, SecretKey};

/// A small deterministic generator (SplitMix64) so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed_txs() -> Vec<SignedTransaction> {
    let key = SecretKey::from_seed([9; 32]);
    let messages = vec![
        vec![Message::Bank(bank::Msg::Send {
            to: Address([1; 20]),
            amount: Amount::pza(3),
        })],
        vec![Message::Staking(staking::Msg::Bond {
            role: Role::Provider,
            amount: Amount::pza(100),
        })],
        vec![
            Message::Staking(staking::Msg::Unbond {
                role: Role::Storage,
                amount: Amount::new(1),
            }),
            Message::Bank(bank::Msg::Send {
                to: Address([2; 20]),
                amount: Amount::new(u128::MAX),
            }),
        ],
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Transaction {
                chain_id: "fuzz".into(),
                sender: key.public_key(),
                nonce: i as u64,
                max_fee: Amount::pza(1),
                messages: m,
            }
            .sign(&key)
        })
        .collect()
}

fn seed_block() -> Block {
    let key = SecretKey::from_seed([8; 32]);
    let txs = seed_txs();
    let (randomness, randomness_proof) = prove_randomness(&key, "fuzz", 1, &Hash::ZERO);
    let header = BlockHeader {
        chain_id: "fuzz".into(),
        height: 1,
        parent_hash: Hash::ZERO,
        time_ms: 5,
        proposer: key.public_key(),
        tx_root: tx_root(&txs),
        state_root: Hash([3; 32]),
        randomness,
        randomness_proof,
    };
    let signature = key.sign(&header.hash().0);
    Block {
        header,
        txs,
        signature,
    }
}

fn seed_receipt() -> Receipt {
    Receipt {
        tx_hash: Hash([4; 32]),
        height: 7,
        index: 2,
        status: TxStatus::Failed {
            code: 7,
            message: "insufficient".into(),
        },
        fee_paid: Amount::new(10),
        events: vec![Event::new(
            "bank.transfer",
            &[("from", "a".into()), ("to", "b".into())],
        )],
    }
}

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
            2 => out.truncate(rng.below(out.len() + 1)),
            3 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
            4 if out.len() >= 4 => {
                // Overwrite what may be a length prefix with a huge or off-by-one value.
                let i = rng.below(out.len() - 3);
                let value: u32 = [u32::MAX, 0x8000_0000, 65_536, rng.next() as u32][rng.below(4)];
                out[i..i + 4].copy_from_slice(&value.to_le_bytes());
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = rng.below(64);
                out = (0..n).map(|_| rng.next() as u8).collect();
            }
        }
    }
    out
}

fn check<T: Decode + Encode>(bytes: &[u8], decode: impl Fn(&[u8]) -> Option<T>) -> bool {
    match decode(bytes) {
        Some(value) => {
            assert_eq!(
                value.to_bytes(),
                bytes,
                "a decoded value must re-encode to the same bytes"
            );
            true
        }
        None => false,
    }
}

#[test]
fn mutated_inputs_never_panic_and_decode_canonically() {
    let corpus: Vec<Vec<u8>> = seed_txs()
        .iter()
        .map(|t| t.to_bytes())
        .chain([seed_block().to_bytes(), seed_receipt().to_bytes()])
        .collect();
    let mut rng = Rng(0x5eed);
    let mut decoded = [0usize; 3];
    for round in 0..30_000 {
        let input = mutate(&mut rng, &corpus[round % corpus.len()], &corpus);
        decoded[0] += check(&input, |b| SignedTransaction::decode_bytes(b).ok()) as usize;
        decoded[1] += check(&input, |b| Block::decode_bytes(b).ok()) as usize;
        decoded[2] += check(&input, |b| Receipt::from_bytes(b).ok()) as usize;
    }
    // Some mutations (a flipped amount bit, say) still decode: the corpus reaches past the
    // first length check.
    assert!(decoded.iter().all(|n| *n > 0), "decoded counts {decoded:?}");
    for seed in &corpus[..3] {
        let tx = SignedTransaction::decode_bytes(seed).unwrap();
        assert_eq!(
            tx.hash(),
            SignedTransaction::new(tx.tx.clone(), tx.signature).hash()
        );
    }
}
