//! The shape of a trace tree, as the bisection game walks it.
//!
//! The trace root ([`crate::trace`]) is built level by level: level 0 holds the `n` leaf
//! hashes; level `l + 1` pairs level `l` left to right with [`node_hash`], an unpaired last node
//! moving up unchanged; the root binds the count: [`root_from_top`]`(n, top)`. Node `(l, p)`
//! covers leaves `p·2^l .. min((p+1)·2^l, n)`.
//!
//! The game starts at the top and, at every node with two children, has both parties reveal
//! the children of their own node; it descends into the left child when the left children
//! differ, else into the right one. Every leaf left of the final leaf then lies in a subtree
//! both parties revealed with equal hashes, so they agree on all of them.

use crate::merkle;
pub use crate::merkle::Hash;
use crate::trace::TRACE_DOMAIN;

/// A node: `level` 0 is the leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub level: u32,
    pub index: u64,
}

/// Most leaves a trace may have (2^32): bounds the levels at 32 and every index.
pub const LEAVES_MAX: u64 = 1 << 32;

/// `H(node ‖ left ‖ right)`, as the trace tree combines two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    merkle::node_hash(left, right)
}

/// The trace root of an `n`-leaf tree whose top node is `top`.
pub fn root_from_top(leaf_count: u64, top: &Hash) -> Hash {
    merkle::root_hash(TRACE_DOMAIN, leaf_count, top)
}

/// Nodes per level, from the leaves (`n`) up to the top (1). Empty for `n == 0`.
pub fn widths(leaf_count: u64) -> Vec<u64> {
    let mut widths = Vec::new();
    let mut width = leaf_count;
    while width > 0 {
        widths.push(width);
        if width == 1 {
            break;
        }
        width = width.div_ceil(2);
    }
    widths
}

/// The top node of an `n`-leaf tree (`None` for an empty or oversized tree).
pub fn top(leaf_count: u64) -> Option<Node> {
    if leaf_count == 0 || leaf_count > LEAVES_MAX {
        return None;
    }
    Some(Node {
        level: widths(leaf_count).len() as u32 - 1,
        index: 0,
    })
}

/// Whether `node` has two children (a round is played there); `false` for leaves and for
/// promoted nodes, which equal their single child.
pub fn has_two_children(leaf_count: u64, node: Node) -> bool {
    if node.level == 0 {
        return false;
    }
    let widths = widths(leaf_count);
    match widths.get(node.level as usize - 1) {
        Some(&below) => node.index * 2 + 1 < below,
        None => false,
    }
}

/// Go down from `node` through promoted nodes (whose hash is their only child's) until a leaf
/// or a node with two children.
pub fn settle(leaf_count: u64, mut node: Node) -> Node {
    while node.level > 0 && !has_two_children(leaf_count, node) {
        node = Node {
            level: node.level - 1,
            index: node.index * 2,
        };
    }
    node
}

/// The child of `node` the game descends into.
pub fn child(node: Node, right: bool) -> Node {
    Node {
        level: node.level - 1,
        index: node.index * 2 + u64::from(right),
    }
}

/// How many rounds a game over an `n`-leaf tree plays at most: one per level with two
/// children on the way down, so at most `ceil(log2 n)`.
pub fn rounds_max(leaf_count: u64) -> u32 {
    widths(leaf_count).len().saturating_sub(1) as u32
}

/// Every level of the tree over `leaves`, from the leaves up (what a party keeps to answer
/// rounds).
pub fn levels(leaves: &[Hash]) -> Vec<Vec<Hash>> {
    let mut levels = vec![leaves.to_vec()];
    while levels.last().is_some_and(|level| level.len() > 1) {
        let above = merkle::parent_level(levels.last().expect("non-empty"));
        levels.push(above);
    }
    levels
}

/// The hashes of `node`'s two children in a tree given by its [`levels`].
pub fn children(levels: &[Vec<Hash>], node: Node) -> Option<(Hash, Hash)> {
    let below = levels.get(node.level.checked_sub(1)? as usize)?;
    let left = usize::try_from(node.index.checked_mul(2)?).ok()?;
    Some((*below.get(left)?, *below.get(left + 1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize, salt: u8) -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(TRACE_DOMAIN, i as u64, &[salt, i as u8]))
            .collect()
    }

    #[test]
    fn levels_agree_with_the_trace_root() {
        for n in 1..70 {
            let leaves = leaves(n, 0);
            let levels = levels(&leaves);
            let top = levels.last().unwrap()[0];
            assert_eq!(
                root_from_top(n as u64, &top),
                merkle::root(TRACE_DOMAIN, &leaves)
            );
            assert_eq!(levels.len(), widths(n as u64).len());
            for (level, width) in levels.iter().zip(widths(n as u64)) {
                assert_eq!(level.len() as u64, width);
            }
        }
    }

    /// Walking down by first differing child reaches the first differing leaf, in at most
    /// `rounds_max` rounds, for every tree size and differing position.
    #[test]
    fn the_walk_finds_the_first_difference() {
        for n in 1..40usize {
            for first in 0..n {
                let honest = leaves(n, 0);
                let mut other = honest.clone();
                for leaf in other.iter_mut().skip(first).step_by(3) {
                    *leaf = merkle::leaf_hash(TRACE_DOMAIN, 0, b"wrong");
                }
                let (a, b) = (levels(&honest), levels(&other));
                let mut node = settle(n as u64, top(n as u64).unwrap());
                let mut rounds = 0;
                while node.level > 0 {
                    let (left_a, _) = children(&a, node).unwrap();
                    let (left_b, _) = children(&b, node).unwrap();
                    node = settle(n as u64, child(node, left_a == left_b));
                    rounds += 1;
                }
                assert_eq!(node.index as usize, first, "n {n}");
                assert!(rounds <= rounds_max(n as u64));
            }
        }
    }
}
