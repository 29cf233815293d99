//! The bisection game as a pure state machine: two parties' trace trees, a reveal per party
//! per round, the descent to the first divergent step, and who loses on silence. No state
//! access: the handlers load a [`Dispute`], drive it and store it.

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
    /// The parties ran different token ids (or step counts): the ledger tokenizes the input.
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
    /// A new game between two committed traces over the same number of steps.
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
        let [Some((dl, dr)), Some((cl, cr))] = self.reveals else {
            return Ok(Advance::Waiting);
        };
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
            Phase::Bisect if self.reveals[DEFENDANT].is_none() => DEFENDANT,
            _ => CLAIMANT,
        }
    }

    /// Whether `leaf` at `index` (below the final step) lies in a subtree both parties agreed
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
