//! The bisection game's properties: it ends within its bound of rounds, it stops at the first
//! step where the traces differ, every input of that step is provable against the agreed
//! subtrees (and nothing else is), and the honest side wins whatever the adversary plays.

use piazza_ledger::verify::{Dispute, Party, Phase, CLAIMANT, DEFENDANT};
use piazza_primitives::{Address, Amount, Hash};
use piazza_trace::merkle;
use piazza_trace::trace::{Trace, TRACE_DOMAIN};
use piazza_trace::tree;
use proptest::prelude::*;

fn leaves(n: usize, seed: u64) -> Vec<[u8; 32]> {
    (0..n)
        .map(|i| {
            merkle::leaf_hash(
                TRACE_DOMAIN,
                i as u64,
                &[&seed.to_le_bytes()[..], &[1]].concat(),
            )
        })
        .collect()
}

fn party(byte: u8, leaves: &[[u8; 32]]) -> Party {
    Party {
        address: Address([byte; 20]),
        job: 0,
        root: Hash(Trace::from_leaves(leaves.to_vec()).root),
        step_count: leaves.len() as u64,
        ids: Hash::ZERO,
        bond: Amount::ZERO,
        is_provider: byte == 1,
    }
}

/// What the adversary does in a round.
#[derive(Debug, Clone)]
enum Play {
    /// Reveal its true children.
    Truth,
    /// Reveal some other pair (refused unless it happens to be the truth).
    Garbage([u8; 32], [u8; 32]),
    /// Reveal the honest party's children (refused unless they are its own).
    CopyHonest,
    /// Say nothing until the deadline.
    Silent,
}

fn play() -> impl Strategy<Value = Play> {
    prop_oneof![
        6 => Just(Play::Truth),
        1 => (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| Play::Garbage(a, b)),
        1 => Just(Play::CopyHonest),
        1 => Just(Play::Silent),
    ]
}

fn children_at(levels: &[Vec<[u8; 32]>], dispute: &Dispute, count: u64) -> (Hash, Hash) {
    let node = if dispute.round == 0 {
        tree::top(count).unwrap()
    } else {
        dispute.node
    };
    let (l, r) = tree::children(levels, node).unwrap();
    (Hash(l), Hash(r))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_honest_side_wins_whatever_the_adversary_plays(
        n in 2usize..400,
        seed in any::<u64>(),
        wrong in proptest::collection::btree_set(0usize..400, 1..8),
        adversary_defends in any::<bool>(),
        plays in proptest::collection::vec(play(), 40),
    ) {
        let honest = leaves(n, seed);
        let mut bad = honest.clone();
        let wrong: Vec<usize> = wrong.into_iter().filter(|i| *i < n).collect();
        prop_assume!(!wrong.is_empty());
        for &i in &wrong {
            bad[i] = merkle::leaf_hash(TRACE_DOMAIN, i as u64, b"a different output");
        }
        let first_wrong = wrong[0];
        let (honest_levels, bad_levels) = (tree::levels(&honest), tree::levels(&bad));
        let (honest_side, adversary_side) = if adversary_defends {
            (CLAIMANT, DEFENDANT)
        } else {
            (DEFENDANT, CLAIMANT)
        };
        let mut parties = [party(1, &honest), party(2, &honest)];
        parties[adversary_side] = party(1 + adversary_side as u8, &bad);
        parties[honest_side] = party(1 + honest_side as u8, &honest);
        let [d, c] = parties;
        let mut dispute = Dispute::open(7, d, c, 1, 10);
        let count = n as u64;
        let mut rounds = 0u32;
        let mut plays = plays.into_iter();
        // Rounds until the final step or a silence.
        let silent = loop {
            if matches!(dispute.phase, Phase::Step { .. }) {
                break None;
            }
            prop_assert!(rounds <= tree::rounds_max(count), "more rounds than the bound");
            // The honest party always answers truthfully, first or second at random.
            let honest_move = children_at(&honest_levels, &dispute, count);
            let adversary_move = match plays.next().unwrap_or(Play::Truth) {
                Play::Truth => Some(children_at(&bad_levels, &dispute, count)),
                Play::Garbage(a, b) => Some((Hash(a), Hash(b))),
                Play::CopyHonest => Some(honest_move),
                Play::Silent => None,
            };
            let truth = children_at(&bad_levels, &dispute, count);
            let before = dispute.round;
            dispute.reveal(honest_side, honest_move.0, honest_move.1).unwrap();
            let accepted = match adversary_move {
                Some((l, r)) => {
                    let result = dispute.reveal(adversary_side, l, r);
                    // Only its true children are ever accepted.
                    prop_assert_eq!(result.is_ok(), (l, r) == truth);
                    result.is_ok()
                }
                None => false,
            };
            if !accepted {
                break Some(adversary_side);
            }
            prop_assert_eq!(dispute.round, before + 1);
            rounds += 1;
        };
        match silent {
            Some(side) => {
                // A silent or lying adversary is the one the deadline condemns.
                prop_assert_eq!(dispute.timeout_loser(), side);
            }
            None => {
                let Phase::Step { step, leaves } = dispute.phase.clone() else { unreachable!() };
                prop_assert!(rounds <= tree::rounds_max(count));
                // The game stops exactly at the first differing step.
                prop_assert_eq!(step as usize, first_wrong);
                prop_assert_eq!(leaves[honest_side].0, honest[first_wrong]);
                prop_assert_eq!(leaves[adversary_side].0, bad[first_wrong]);
                let trace = Trace::from_leaves(honest.clone());
                for j in 0..first_wrong {
                    // Every earlier step opens against the agreed subtrees with a proof from
                    // either tree...
                    let proof = trace.proof(j).unwrap();
                    let siblings: Vec<Hash> = proof.siblings.iter().map(|s| Hash(*s)).collect();
                    prop_assert!(dispute.leaf_agreed(j as u64, &Hash(honest[j]), &siblings));
                    let bad_proof = Trace::from_leaves(bad.clone()).proof(j).unwrap();
                    let bad_siblings: Vec<Hash> = bad_proof.siblings.iter().map(|s| Hash(*s)).collect();
                    prop_assert!(dispute.leaf_agreed(j as u64, &Hash(bad[j]), &bad_siblings));
                    // ...and no other value does.
                    let forged = merkle::leaf_hash(TRACE_DOMAIN, j as u64, b"forged");
                    prop_assert!(!dispute.leaf_agreed(j as u64, &Hash(forged), &siblings));
                }
                // The disputed step itself and later ones are not agreed.
                let proof = trace.proof(first_wrong).unwrap();
                let siblings: Vec<Hash> = proof.siblings.iter().map(|s| Hash(*s)).collect();
                prop_assert!(!dispute.leaf_agreed(first_wrong as u64, &Hash(honest[first_wrong]), &siblings));
                // The ledger's re-execution yields the honest leaf, so the adversary loses;
                // unanswered, the deadline rules against the claimant, never an honest
                // defendant.
                if adversary_side == CLAIMANT {
                    prop_assert_eq!(dispute.timeout_loser(), CLAIMANT);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Length disputes: the adversary's run has another step count (and maybe wrong steps
    /// below the common count). Only its true reveals are accepted, silence where it must
    /// reveal condemns it, and the game ends at the first differing common step or, when the
    /// common steps all agree, at the length decision with every common step agreed.
    #[test]
    fn length_disputes_end_at_the_first_difference_or_the_agreed_prefix(
        honest_count in 2usize..300,
        adversary_count in 2usize..300,
        seed in any::<u64>(),
        wrong in proptest::collection::btree_set(0usize..300, 0..4),
        adversary_defends in any::<bool>(),
        plays in proptest::collection::vec(play(), 80),
    ) {
        prop_assume!(honest_count != adversary_count);
        let longest = leaves(honest_count.max(adversary_count), seed);
        let honest = longest[..honest_count].to_vec();
        let mut bad = longest[..adversary_count].to_vec();
        let common = honest_count.min(adversary_count);
        for &i in wrong.iter().filter(|i| **i < adversary_count) {
            bad[i] = merkle::leaf_hash(TRACE_DOMAIN, i as u64, b"a different output");
        }
        let first_wrong = wrong.iter().copied().find(|&i| i < common);
        let (honest_side, adversary_side) = if adversary_defends {
            (CLAIMANT, DEFENDANT)
        } else {
            (DEFENDANT, CLAIMANT)
        };
        let traces = if adversary_defends { [&bad, &honest] } else { [&honest, &bad] };
        let levels = traces.map(|t| tree::levels(t));
        let mut dispute = Dispute::open(7, party(1, traces[0]), party(2, traces[1]), 1, 10);
        let own_node = |d: &Dispute, side: usize| if d.round == 0 {
            tree::top(traces[side].len() as u64).unwrap()
        } else {
            d.node
        };
        let mut plays = plays.into_iter();
        let mut rounds = 0u32;
        let silent = loop {
            if dispute.phase != Phase::Bisect {
                break None;
            }
            prop_assert!(rounds <= 2 + tree::rounds_max(longest.len() as u64));
            let before = dispute.round;
            if dispute.must_reveal(honest_side) {
                let (l, r) = tree::children(&levels[honest_side], own_node(&dispute, honest_side)).unwrap();
                dispute.reveal(honest_side, Hash(l), Hash(r)).unwrap();
            }
            if dispute.round == before && dispute.must_reveal(adversary_side) {
                let node = own_node(&dispute, adversary_side);
                let (tl, tr) = tree::children(&levels[adversary_side], node).unwrap();
                let truth = (Hash(tl), Hash(tr));
                let answer = match plays.next().unwrap_or(Play::Truth) {
                    Play::Truth => Some(truth),
                    Play::Garbage(a, b) => Some((Hash(a), Hash(b))),
                    Play::CopyHonest => tree::children(&levels[honest_side], own_node(&dispute, honest_side))
                        .map(|(l, r)| (Hash(l), Hash(r))),
                    Play::Silent => None,
                };
                let accepted = match answer {
                    Some((l, r)) => {
                        let result = dispute.reveal(adversary_side, l, r);
                        prop_assert_eq!(result.is_ok(), (l, r) == truth);
                        result.is_ok()
                    }
                    None => false,
                };
                if !accepted {
                    break Some(adversary_side);
                }
            }
            prop_assert!(dispute.round > before, "a round with every reveal in moves on");
            rounds += 1;
        };
        match (silent, dispute.phase.clone()) {
            (Some(side), _) => prop_assert_eq!(dispute.timeout_loser(), side),
            (None, Phase::Step { step, leaves }) => {
                prop_assert_eq!(Some(step as usize), first_wrong);
                prop_assert_eq!(leaves[honest_side].0, honest[step as usize]);
            }
            (None, Phase::Input) => {
                prop_assert_eq!(first_wrong, None);
                let trace = Trace::from_leaves(honest.clone());
                for (j, leaf) in honest.iter().enumerate().take(common) {
                    let siblings: Vec<Hash> = trace.proof(j).unwrap().siblings.into_iter().map(Hash).collect();
                    prop_assert!(dispute.leaf_agreed(j as u64, &Hash(*leaf), &siblings));
                }

                // Unanswered, the length decision's deadline rules against the claimant.
                prop_assert_eq!(dispute.timeout_loser(), CLAIMANT);
            }
            (None, Phase::Bisect) => unreachable!("the loop ends past the rounds"),
        }
    }
}
