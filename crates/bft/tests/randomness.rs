//! A block's randomness is the output of its proposer's VRF proof over (chain, height, previous
//! randomness): a validator refuses a proposal whose proof is for another input, by another
//! key, altered, or whose randomness is not the proof's output.

mod common;

use common::*;
use piazza_ledger::block::{prove_randomness, Block};
use piazza_primitives::Hash;

#[test]
fn a_proposal_carries_its_proposers_vrf_output_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let proposer = validator_key(0);
    let other = validator_key(1);
    let genesis = genesis(&[proposer.clone(), other.clone()], &[]);
    let proposing = open_app(dir.path(), "proposer", &proposer, &genesis);
    let validating = open_app(dir.path(), "validator", &other, &genesis);
    let honest = proposing
        .propose(1, genesis.genesis_time_ms + 1_000)
        .unwrap();
    let previous = Hash::of("piazza/genesis-randomness", &[CHAIN_ID.as_bytes()]);
    assert_eq!(
        prove_randomness(&proposer, CHAIN_ID, 1, &previous),
        (honest.header.randomness, honest.header.randomness_proof)
    );

    // Each case changes the header and signs the block again as the proposer.
    let altered = |change: &dyn Fn(&mut Block)| -> Block {
        let mut block = honest.clone();
        change(&mut block);
        block.signature = proposer.sign(&block.header.hash().0);
        block
    };
    let cases: [(&str, Block); 4] = [
        (
            "a proof of the next height's input",
            altered(&|b| {
                (b.header.randomness, b.header.randomness_proof) =
                    prove_randomness(&proposer, CHAIN_ID, 2, &previous)
            }),
        ),
        (
            "another validator's proof of this input",
            altered(&|b| {
                (b.header.randomness, b.header.randomness_proof) =
                    prove_randomness(&other, CHAIN_ID, 1, &previous)
            }),
        ),
        (
            "a proof with one byte changed",
            altered(&|b| b.header.randomness_proof.0[60] ^= 1),
        ),
        (
            "randomness other than the proof's output",
            altered(&|b| b.header.randomness = Hash::of("chosen", &[b"by the proposer"])),
        ),
    ];
    for (what, block) in cases {
        let refused = validating.validate(block).unwrap_err().to_string();
        assert!(refused.contains("randomness proof"), "{what}: {refused}");
    }
    validating.validate(honest.clone()).unwrap();
    validating.commit(honest).unwrap();
    assert_eq!(validating.head().unwrap().height, 1);
}
