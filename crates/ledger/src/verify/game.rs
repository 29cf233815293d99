//! The bisection game as a pure state machine: two parties' trace trees, a reveal per party
//! per round, the descent to the first divergent step, and who loses on silence. No state
//! access: the handlers load a [`Dispute`], drive it and store it.
//!
//! A **length dispute** (same token ids, different step counts: one generation stopped where
//! the other went on) is played over the steps both traces have, `common` = the smaller count.
//! Every node of a trace tree that covers only steps below `common` is a full subtree, the
//! same function of the same leaves in both trees; those left of step `common` tile the common
//! prefix ([`prefix_nodes`]). After round 0 the game **walks** down the path to leaf `common`
//! from the top of the larger tree: at each node a party reveals its two children (a party
//! whose tree has a single child there, or no node yet above its own top, reveals nothing: its
//! node's hash is its child's); where the path turns right, the left children are the next
//! prefix subtree, compared. The first that differs is bisected as usual; when all agree, the
//! common prefix is agreed and the ledger decides the length from its last sample
//! ([`Phase::Input`] with different counts: end of sequence, a stop sequence, `max_tokens`).

use crate::error::{ErrorCode, TxError};
use piazza_codec::{Decode, DecodeError, Encode, Reader, Writer};
use piazza_primitives::{Address, Amount, Hash};
use piazza_trace::tree::{self, Node};

/// Agreed subtrees a game can collect: one per level.
const AGREED_MAX: usize = 64;

/// One side of a dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub address: Address,
    /// The job whose result this party posted (for a challenger: the disputed job).
    pub job: u64,
    pub root: Hash,
    pub step_count: u64,
    /// Commitment to the token ids the party's run used.
    pub ids: Hash,
    /// A challenger's bond (zero for a provider, whose stake is at risk instead).
    pub bond: Amount,
    pub is_provider: bool,
}

impl Encode for Party {
    fn encode(&self, w: &mut Writer) {
        w.value(&self.address);
        w.u64(self.job);
        w.value(&self.root);
        w.u64(self.step_count);
        w.value(&self.ids);
        w.value(&self.bond);
        w.bool(self.is_provider);
    }
}

impl Decode for Party {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Party {
            address: r.value()?,
            job: r.u64()?,
            root: r.value()?,
            step_count: r.u64()?,
            ids: r.value()?,
            bond: r.value()?,
            is_provider: r.bool()?,
        })
    }
}

/// Where a dispute stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Rounds of the bisection game.
    Bisect,
    /// The parties ran different token ids: the ledger tokenizes the input. With equal ids and
    /// different step counts (a length dispute whose common prefix is agreed): the ledger reads
    /// the agreed samples and decides where the generation stops.
    Input,
    /// The first divergent step is found; the ledger re-executes it.
    Step { step: u64, leaves: [Hash; 2] },
}

impl Encode for Phase {
    fn encode(&self, w: &mut Writer) {
        match self {
            Phase::Bisect => w.u8(0),
            Phase::Input => w.u8(1),
            Phase::Step { step, leaves } => {
                w.u8(2);
                w.u64(*step);
                w.value(&leaves[0]);
                w.value(&leaves[1]);
            }
        }
    }
}

impl Decode for Phase {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        Ok(match r.u8()? {
            0 => Phase::Bisect,
            1 => Phase::Input,
            2 => Phase::Step {
                step: r.u64()?,
                leaves: [r.value()?, r.value()?],
            },
            tag => {
                return Err(DecodeError::InvalidTag {
                    offset,
                    tag,
                    what: "dispute phase",
                })
            }
        })
    }
}

/// Index of the defendant and the claimant in [`Dispute::parties`].
pub const DEFENDANT: usize = 0;
pub const CLAIMANT: usize = 1;

/// The game state; every field is public state, readable by both parties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    /// The defendant's job (the key).
    pub job: u64,
    pub parties: [Party; 2],
    pub round: u32,
    /// The node this round is about.
    pub node: Node,
    /// Each party's hash of `node` (unused at the top, which is checked against the root).
    pub nodes: [Hash; 2],
    /// This round's reveals (left, right), by party.
    pub reveals: [Option<(Hash, Hash)>; 2],
    /// Subtrees both revealed with equal hashes: (level, index, hash).
    pub agreed: Vec<(u32, u64, Hash)>,
    pub phase: Phase,
    pub deadline: u64,
    pub opened_height: u64,
}

fn encode_node(w: &mut Writer, node: &Node) {
    w.u32(node.level);
    w.u64(node.index);
}

fn encode_pair(w: &mut Writer, pair: &Option<(Hash, Hash)>) {
    match pair {
        None => w.u8(0),
        Some((left, right)) => {
            w.u8(1);
            w.value(left);
            w.value(right);
        }
    }
}

fn decode_pair(r: &mut Reader<'_>) -> Result<Option<(Hash, Hash)>, DecodeError> {
    let offset = r.offset();
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some((r.value()?, r.value()?))),
        tag => Err(DecodeError::InvalidTag {
            offset,
            tag,
            what: "reveal",
        }),
    }
}

impl Encode for Dispute {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.job);
        w.value(&self.parties[0]);
        w.value(&self.parties[1]);
        w.u32(self.round);
        encode_node(w, &self.node);
        w.value(&self.nodes[0]);
        w.value(&self.nodes[1]);
        encode_pair(w, &self.reveals[0]);
        encode_pair(w, &self.reveals[1]);
        w.len(self.agreed.len());
        for (level, index, hash) in &self.agreed {
            w.u32(*level);
            w.u64(*index);
            w.value(hash);
        }
        w.value(&self.phase);
        w.u64(self.deadline);
        w.u64(self.opened_height);
    }
}

impl Decode for Dispute {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Dispute {
            job: r.u64()?,
            parties: [r.value()?, r.value()?],
            round: r.u32()?,
            node: Node {
                level: r.u32()?,
                index: r.u64()?,
            },
            nodes: [r.value()?, r.value()?],
            reveals: [decode_pair(r)?, decode_pair(r)?],
            agreed: {
                let n = r.len(AGREED_MAX)?;
                (0..n)
                    .map(|_| Ok((r.u32()?, r.u64()?, r.value()?)))
                    .collect::<Result<_, DecodeError>>()?
            },
            phase: r.value()?,
            deadline: r.u64()?,
            opened_height: r.u64()?,
        })
    }
}

/// What a round's reveal did to the game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Waiting for the other party's reveal.
    Waiting,
    /// Both revealed; the game moved to a new node (or to the final step).
    Moved,
}

impl Dispute {
    /// A new game between two committed traces (their step counts are stated by round 0; when
    /// they differ over the same ids, round 0 starts the walk of a length dispute).
    pub fn open(job: u64, defendant: Party, claimant: Party, height: u64, deadline: u64) -> Self {
        let count = claimant.step_count;
        let node = tree::top(count)
            .map(|top| tree::settle(count, top))
            .unwrap_or(Node { level: 0, index: 0 });
        Dispute {
            job,
            parties: [defendant, claimant],
            round: 0,
            node,
            nodes: [Hash::ZERO; 2],
            reveals: [None, None],
            agreed: Vec::new(),
            phase: Phase::Bisect,
            deadline,
            opened_height: height,
        }
    }

    /// The steps both traces have: the smaller step count (a count not yet stated is 0).
    pub fn common_steps(&self) -> u64 {
        self.parties[DEFENDANT]
            .step_count
            .min(self.parties[CLAIMANT].step_count)
    }

    /// Whether this is a length dispute: both counts stated, and different.
    pub fn is_length_dispute(&self) -> bool {
        let [a, b] = &self.parties;
        a.step_count != 0 && b.step_count != 0 && a.step_count != b.step_count
    }

    /// Whether the game is walking the path to leaf [`Dispute::common_steps`] (a length
    /// dispute past round 0 whose prefix subtrees have all agreed so far): the node is on that
    /// path, where a bisection inside a differing subtree is always left of it.
    pub fn is_walking(&self) -> bool {
        self.phase == Phase::Bisect
            && self.round > 0
            && self.is_length_dispute()
            && self.node.level < 64
            && self.node.index == self.common_steps() >> self.node.level
    }

    /// Whether party `side` reveals at the current node: always in a bisection round; on the
    /// walk, only where its own tree has two children.
    pub fn must_reveal(&self, side: usize) -> bool {
        if !self.is_walking() {
            return true;
        }
        tree::has_two_children(self.parties[side].step_count, self.node)
    }

    /// Checks party `side`'s reveal of the current node's children against its commitment
    /// and records it; when both have revealed, descends. Pure: the property tests drive it.
    pub fn reveal(&mut self, side: usize, left: Hash, right: Hash) -> Result<Advance, TxError> {
        if self.phase != Phase::Bisect {
            return Err(TxError::new(
                ErrorCode::WrongRound,
                "the dispute is past its bisection rounds",
            ));
        }
        if self.reveals[side].is_some() {
            return Err(TxError::new(
                ErrorCode::WrongRound,
                format!("round {} is already revealed by this party", self.round),
            ));
        }
        if !self.must_reveal(side) {
            return Err(TxError::new(
                ErrorCode::WrongRound,
                format!(
                    "this party's tree has one child at level {} of round {}: nothing to reveal",
                    self.node.level, self.round
                ),
            ));
        }
        let party = &self.parties[side];
        let parent = tree::node_hash(&left.0, &right.0);
        let fits = if self.round == 0 {
            tree::root_from_top(party.step_count, &parent) == party.root.0
        } else {
            parent == self.nodes[side].0
        };
        if !fits {
            return Err(TxError::new(
                ErrorCode::BadReveal,
                format!(
                    "the children do not hash to the party's {} at level {}",
                    if self.round == 0 { "root" } else { "node" },
                    self.node.level
                ),
            ));
        }
        self.reveals[side] = Some((left, right));
        if self.is_walking() {
            return self.walk();
        }
        let [Some((dl, dr)), Some((cl, cr))] = self.reveals else {
            return Ok(Advance::Waiting);
        };
        if self.round == 0 && self.is_length_dispute() {
            // Both tops are proven: walk from the top of the larger tree, where each party's
            // node is its own top (a smaller tree's top stands for its missing ancestors).
            let larger = self.parties[DEFENDANT]
                .step_count
                .max(self.parties[CLAIMANT].step_count);
            let top = tree::top(larger).ok_or_else(|| {
                TxError::new(ErrorCode::Internal, "a stated count has no tree top")
            })?;
            self.nodes = [
                Hash(tree::node_hash(&dl.0, &dr.0)),
                Hash(tree::node_hash(&cl.0, &cr.0)),
            ];
            self.node = top;
            self.round = 1;
            self.reveals = [None, None];
            self.walk()?;
            return Ok(Advance::Moved);
        }
        let count = self.parties[CLAIMANT].step_count;
        let go_right = dl == cl;
        if go_right {
            if self.agreed.len() >= AGREED_MAX {
                return Err(TxError::new(
                    ErrorCode::Internal,
                    "too many agreed subtrees",
                ));
            }
            let left_child = tree::child(self.node, false);
            self.agreed.push((left_child.level, left_child.index, dl));
            self.nodes = [dr, cr];
        } else {
            self.nodes = [dl, cl];
        }
        self.node = tree::settle(count, tree::child(self.node, go_right));
        self.round += 1;
        self.reveals = [None, None];
        if self.node.level == 0 {
            self.phase = Phase::Step {
                step: self.node.index,
                leaves: self.nodes,
            };
        }
        Ok(Advance::Moved)
    }

    /// Who loses when the current deadline passes: in a round, the defendant if it has not
    /// revealed, else the claimant; after the rounds, the claimant (a result stands until it
    /// is proven wrong).
    pub fn timeout_loser(&self) -> usize {
        match self.phase {
            Phase::Bisect if self.reveals[DEFENDANT].is_none() && self.must_reveal(DEFENDANT) => {
                DEFENDANT
            }
            _ => CLAIMANT,
        }
    }

    /// Takes the walk down as far as the reveals in hand allow: through nodes where no party
    /// has two children, comparing the prefix subtree wherever the path turns right. Stops at
    /// a node where a party must still reveal, at the first differing prefix subtree (which
    /// the bisection then enters) or when the whole common prefix is agreed.
    fn walk(&mut self) -> Result<Advance, TxError> {
        let common = self.common_steps();
        let mut moved = false;
        loop {
            if (0..2).any(|side| self.must_reveal(side) && self.reveals[side].is_none()) {
                return Ok(if moved {
                    Advance::Moved
                } else {
                    Advance::Waiting
                });
            }
            // A party that revealed nothing here has a single child: its node's hash.
            let children: [(Hash, Option<Hash>); 2] = [0, 1].map(|side| match self.reveals[side] {
                Some((left, right)) => (left, Some(right)),
                None => (self.nodes[side], None),
            });
            let level = self.node.level;
            let toward = tree::child(self.node, (common >> (level - 1)) & 1 == 1);
            self.reveals = [None, None];
            if !moved {
                self.round += 1;
                moved = true;
            }
            if toward.index & 1 == 0 {
                self.nodes = [children[0].0, children[1].0];
                self.node = toward;
                continue;
            }
            // The path turns right: the left child is the next prefix subtree.
            let subtree = tree::child(self.node, false);
            let [(defendant, _), (claimant, _)] = children;
            if defendant != claimant {
                self.nodes = [defendant, claimant];
                self.node = subtree;
                if subtree.level == 0 {
                    self.phase = Phase::Step {
                        step: subtree.index,
                        leaves: self.nodes,
                    };
                }
                return Ok(Advance::Moved);
            }
            if self.agreed.len() >= AGREED_MAX {
                return Err(TxError::new(
                    ErrorCode::Internal,
                    "too many agreed subtrees",
                ));
            }
            self.agreed.push((subtree.level, subtree.index, defendant));
            if common & ((1u64 << subtree.level) - 1) == 0 {
                // Every step both traces have is agreed.
                self.phase = Phase::Input;
                return Ok(Advance::Moved);
            }
            let [(_, Some(defendant)), (_, Some(claimant))] = children else {
                return Err(TxError::new(
                    ErrorCode::Internal,
                    "a prefix continues right of a node with one child",
                ));
            };
            self.nodes = [defendant, claimant];
            self.node = toward;
        }
    }

    /// Whether `leaf` at `index` (below the final step, or below the common step count of a
    /// length dispute whose prefix is agreed) lies in a subtree both parties agreed
    /// on, through the first siblings of its Merkle path.
    pub fn leaf_agreed(&self, index: u64, leaf: &Hash, siblings: &[Hash]) -> bool {
        let Some((level, _, subtree)) = self
            .agreed
            .iter()
            .find(|(level, node, _)| *level < 64 && index >> level == *node)
        else {
            return false;
        };
        let level = *level as usize;
        if siblings.len() < level {
            return false;
        }
        let mut node = leaf.0;
        let mut position = index;
        for sibling in &siblings[..level] {
            node = if position.is_multiple_of(2) {
                tree::node_hash(&node, &sibling.0)
            } else {
                tree::node_hash(&sibling.0, &node)
            };
            position /= 2;
        }
        node == subtree.0
    }
}

/// The full subtrees that tile steps `0..count`, left to right: one per set bit of `count`,
/// largest first. In two trees with at least `count` leaves they are the same nodes over the
/// same leaves, so they have the same hashes exactly when those leaves agree.
pub fn prefix_nodes(count: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if count >> level & 1 == 1 {
            nodes.push(Node {
                level,
                index: start >> level,
            });
            start += 1 << level;
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_trace::merkle;
    use piazza_trace::trace::{Trace, TRACE_DOMAIN};

    /// `n` leaves; those at `changed` positions hold a different output.
    fn leaves(n: u64, changed: &[u64]) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| {
                let output: &[u8] = if changed.contains(&i) {
                    b"other"
                } else {
                    b"same"
                };
                merkle::leaf_hash(TRACE_DOMAIN, i, output)
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

    /// Both parties play truthfully until the rounds end; returns the game and its rounds.
    fn play(defendant: &[[u8; 32]], claimant: &[[u8; 32]]) -> (Dispute, u32) {
        let traces = [defendant, claimant];
        let levels = traces.map(tree::levels);
        let mut dispute = Dispute::open(0, party(1, defendant), party(2, claimant), 1, 10);
        let mut rounds = 0;
        while dispute.phase == Phase::Bisect {
            for side in [DEFENDANT, CLAIMANT] {
                if !dispute.must_reveal(side) || dispute.phase != Phase::Bisect {
                    continue;
                }
                let node = if dispute.round == 0 {
                    tree::top(traces[side].len() as u64).unwrap()
                } else {
                    dispute.node
                };
                let (left, right) = tree::children(&levels[side], node).unwrap();
                dispute.reveal(side, Hash(left), Hash(right)).unwrap();
            }
            rounds += 1;
            assert!(rounds <= 70, "the game does not end");
        }
        (dispute, rounds)
    }

    #[test]
    fn prefix_nodes_tile_the_prefix_with_full_subtrees() {
        for count in 1..300u64 {
            let nodes = prefix_nodes(count);
            let mut next = 0;
            for node in &nodes {
                assert_eq!(node.index << node.level, next, "count {count}");
                next += 1 << node.level;
            }
            assert_eq!(next, count);
            assert_eq!(nodes.len() as u32, count.count_ones());
        }
    }

    /// Counts that differ over the same outputs: the walk agrees the whole common prefix and
    /// hands the length to the ledger, whichever side is longer, within its bound of rounds.
    #[test]
    fn a_length_dispute_over_agreeing_outputs_reaches_the_length_decision() {
        for shorter in 2..70u64 {
            for longer in [shorter + 1, shorter + 2, shorter + 7, 2 * shorter + 5, 200] {
                if longer <= shorter {
                    continue;
                }
                for defendant_longer in [false, true] {
                    let (d, c) = if defendant_longer {
                        (leaves(longer, &[]), leaves(shorter, &[]))
                    } else {
                        (leaves(shorter, &[]), leaves(longer, &[]))
                    };
                    let (dispute, rounds) = play(&d, &c);
                    let case =
                        format!("{shorter} vs {longer}, defendant longer {defendant_longer}");
                    assert_eq!(dispute.phase, Phase::Input, "{case}");
                    assert!(
                        rounds <= 2 + tree::rounds_max(longer),
                        "{case}: {rounds} rounds"
                    );
                    let trace = Trace::from_leaves(d.clone());
                    for step in 0..shorter {
                        let siblings: Vec<Hash> = trace
                            .proof(step as usize)
                            .unwrap()
                            .siblings
                            .into_iter()
                            .map(Hash)
                            .collect();
                        let leaf = Hash(d[step as usize]);
                        assert!(dispute.leaf_agreed(step, &leaf, &siblings), "{case}");
                        let forged = Hash(merkle::leaf_hash(TRACE_DOMAIN, step, b"forged"));
                        assert!(!dispute.leaf_agreed(step, &forged, &siblings), "{case}");
                    }
                    // Nothing past the common prefix is agreed.
                    let longest = if defendant_longer { &d } else { &c };
                    let siblings: Vec<Hash> = Trace::from_leaves(longest.clone())
                        .proof(shorter as usize)
                        .unwrap()
                        .siblings
                        .into_iter()
                        .map(Hash)
                        .collect();
                    let next = Hash(longest[shorter as usize]);
                    assert!(!dispute.leaf_agreed(shorter, &next, &siblings), "{case}");
                }
            }
        }
    }

    /// A difference inside the common prefix is found exactly, as in a game over equal counts.
    #[test]
    fn a_length_dispute_finds_the_first_difference_in_the_common_prefix() {
        for shorter in 2..40u64 {
            for longer in [shorter + 1, shorter + 9] {
                for first in 0..shorter {
                    let d = leaves(longer, &[first, first + 1]);
                    let c = leaves(shorter, &[]);
                    let (dispute, rounds) = play(&d, &c);
                    assert!(rounds <= 2 + tree::rounds_max(longer), "{rounds} rounds");
                    let Phase::Step {
                        step,
                        leaves: found,
                    } = dispute.phase
                    else {
                        panic!("{shorter} vs {longer}, first {first}: {:?}", dispute.phase);
                    };
                    assert_eq!(step, first);
                    assert_eq!(found, [Hash(d[first as usize]), Hash(c[first as usize])]);
                }
            }
        }
    }

    /// On the walk a party reveals only where its tree has two children, and a silent one
    /// loses at the deadline.
    #[test]
    fn on_the_walk_only_parties_with_two_children_reveal_and_silence_loses() {
        let (short, long) = (leaves(5, &[]), leaves(8, &[]));
        let mut dispute = Dispute::open(0, party(1, &short), party(2, &long), 1, 10);
        for (side, trace) in [(DEFENDANT, &short), (CLAIMANT, &long)] {
            let top = tree::top(trace.len() as u64).unwrap();
            let (l, r) = tree::children(&tree::levels(trace), top).unwrap();
            dispute.reveal(side, Hash(l), Hash(r)).unwrap();
        }
        assert!(dispute.is_walking());
        assert_eq!(dispute.round, 1);
        // Round 1 is at the top of the 8-leaf tree (level 3); the 5-leaf tree is 4 levels
        // high too, so both reveal; the defendant is silent.
        assert_eq!(dispute.node, Node { level: 3, index: 0 });
        assert!(dispute.must_reveal(DEFENDANT) && dispute.must_reveal(CLAIMANT));
        assert_eq!(dispute.timeout_loser(), DEFENDANT);
        let (l, r) = tree::children(&tree::levels(&short), dispute.node).unwrap();
        dispute.reveal(DEFENDANT, Hash(l), Hash(r)).unwrap();
        assert_eq!(dispute.timeout_loser(), CLAIMANT);
        let (l, r) = tree::children(&tree::levels(&long), dispute.node).unwrap();
        dispute.reveal(CLAIMANT, Hash(l), Hash(r)).unwrap();
        // Leaves 0..4 agreed; the path to leaf 5 goes on at (2, 1), where the 5-leaf tree has
        // one child (leaf 4, promoted): only the claimant reveals.
        assert_eq!(dispute.node, Node { level: 2, index: 1 });
        assert!(!dispute.must_reveal(DEFENDANT) && dispute.must_reveal(CLAIMANT));
        let refused = dispute
            .reveal(DEFENDANT, Hash::ZERO, Hash::ZERO)
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::WrongRound);
        assert_eq!(dispute.timeout_loser(), CLAIMANT);
    }
}
