//! The ledger's Merkle tree as the store keeps it: the hash of every perfect
//! subtree (2^level leaves starting at a multiple of 2^level) is stored once,
//! when its last leaf is appended, so that any root, inclusion proof or
//! consistency proof is a fold of O(log n) stored hashes and never rereads
//! entries.
//!
//! A range of leaves `[lo, hi)` in the RFC's recursion always starts at a
//! multiple of the largest power of two not above its length, so its hash
//! is the right fold of its [`pieces`]: the perfect subtrees it splits into,
//! largest first. [`inclusion_plan`] and [`consistency_plan`] follow
//! [`super::merkle`]'s PATH and PROOF over ranges instead of slices; the
//! tests check every proof they give against those.

use super::merkle::{Hash, empty_root, node_hash};

/// A perfect subtree: the `2^level` leaves from `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

/// The perfect subtrees `[lo, hi)` splits into, left to right.
pub fn pieces(lo: u64, hi: u64) -> Vec<NodeId> {
    let mut pieces = Vec::new();
    let mut at = lo;
    while at < hi {
        let mut level = 63 - (hi - at).leading_zeros();
        while !at.is_multiple_of(1 << level) {
            level -= 1;
        }
        pieces.push(NodeId {
            level: level as u8,
            index: at >> level,
        });
        at += 1 << level;
    }
    pieces
}

/// The hash of a range from the hashes of its [`pieces`], in order.
pub fn fold(hashes: &[Hash]) -> Hash {
    match hashes.split_last() {
        None => empty_root(),
        Some((last, rest)) => rest
            .iter()
            .rev()
            .fold(*last, |right, left| node_hash(left, &right)),
    }
}

/// The right edge of a tree: the hashes of [`pieces`]`(0, size)`, enough to
/// append leaves and compute the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The nodes whose hashes make the frontier of a tree of `size`.
    pub fn ids(size: u64) -> Vec<NodeId> {
        pieces(0, size)
    }

    /// The frontier of a tree of `size`, from the hashes of [`Frontier::ids`].
    /// `None` if there are not as many hashes as ids.
    pub fn new(size: u64, hashes: Vec<Hash>) -> Option<Frontier> {
        (hashes.len() == Frontier::ids(size).len()).then_some(Frontier { size, hashes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf; returns the nodes it completes, the leaf first.
    pub fn append(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let mut completed = vec![(
            NodeId {
                level: 0,
                index: self.size,
            },
            leaf,
        )];
        let (mut hash, mut index, mut level) = (leaf, self.size, 0u8);
        while index & 1 == 1 {
            let left = self.hashes.pop().expect("a set bit has its subtree");
            hash = node_hash(&left, &hash);
            index >>= 1;
            level += 1;
            completed.push((NodeId { level, index }, hash));
        }
        self.hashes.push(hash);
        self.size += 1;
        completed
    }

    /// The root of the tree (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        fold(&self.hashes)
    }
}

/// The ranges whose hashes make the inclusion proof of leaf `index` in the
/// tree of `size`, nearest first. `None` if the leaf is not in the tree.
pub fn inclusion_plan(index: u64, size: u64) -> Option<Vec<(u64, u64)>> {
    fn path(index: u64, lo: u64, hi: u64, plan: &mut Vec<(u64, u64)>) {
        if hi - lo <= 1 {
            return;
        }
        let k = split(hi - lo);
        if index < lo + k {
            path(index, lo, lo + k, plan);
            plan.push((lo + k, hi));
        } else {
            path(index, lo + k, hi, plan);
            plan.push((lo, lo + k));
        }
    }
    (index < size).then(|| {
        let mut plan = Vec::new();
        path(index, 0, size, &mut plan);
        plan
    })
}

/// The ranges whose hashes make the consistency proof from the tree of
/// `old_size` to the tree of `new_size`. `None` if the sizes are out of order.
pub fn consistency_plan(old_size: u64, new_size: u64) -> Option<Vec<(u64, u64)>> {
    fn subproof(m: u64, lo: u64, hi: u64, whole: bool, plan: &mut Vec<(u64, u64)>) {
        if m == hi - lo {
            if !whole {
                plan.push((lo, hi));
            }
            return;
        }
        let k = split(hi - lo);
        if m <= k {
            subproof(m, lo, lo + k, whole, plan);
            plan.push((lo + k, hi));
        } else {
            subproof(m - k, lo + k, hi, false, plan);
            plan.push((lo, lo + k));
        }
    }
    (old_size <= new_size).then(|| {
        let mut plan = Vec::new();
        if old_size > 0 {
            subproof(old_size, 0, new_size, true, &mut plan);
        }
        plan
    })
}

/// Every stored node a plan reads, each once.
pub fn nodes_of(plan: &[(u64, u64)]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = plan.iter().flat_map(|&(lo, hi)| pieces(lo, hi)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The proof a plan describes, from the stored hashes `lookup` finds. The
/// node it cannot find, if one is missing.
pub fn assemble(
    plan: &[(u64, u64)],
    mut lookup: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, NodeId> {
    plan.iter()
        .map(|&(lo, hi)| {
            let hashes = pieces(lo, hi)
                .into_iter()
                .map(|id| lookup(id).ok_or(id))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(fold(&hashes))
        })
        .collect()
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::evidence::merkle::{self, leaf_hash};

    /// Every root, inclusion and consistency proof of every tree up to 70
    /// leaves, from stored nodes, equals the one the RFC's recursive
    /// definitions give over the leaves.
    #[test]
    fn proofs_from_stored_nodes_equal_the_rfc_definitions() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut stored = BTreeMap::new();
        let mut frontier = Frontier::new(0, vec![]).unwrap();
        assert_eq!(frontier.root(), merkle::empty_root());
        for (n, leaf) in leaves.iter().enumerate() {
            stored.extend(frontier.append(*leaf));
            let size = n as u64 + 1;
            let tree = &leaves[..=n];
            assert_eq!(frontier.size(), size);
            assert_eq!(frontier.root(), merkle::root(tree), "root of {size}");
            let ids = Frontier::ids(size);
            let again = Frontier::new(size, ids.iter().map(|id| stored[id]).collect()).unwrap();
            assert_eq!(again, frontier, "the frontier reloads from stored nodes");
            for index in 0..size {
                let plan = inclusion_plan(index, size).unwrap();
                let proof = assemble(&plan, |id| stored.get(&id).copied()).unwrap();
                assert_eq!(
                    Some(proof),
                    merkle::inclusion_proof(index as usize, tree),
                    "inclusion of {index} in {size}"
                );
            }
            for old in 0..=size {
                let plan = consistency_plan(old, size).unwrap();
                let proof = assemble(&plan, |id| stored.get(&id).copied()).unwrap();
                assert_eq!(
                    Some(proof),
                    merkle::consistency_proof(old as usize, tree),
                    "consistency {old} → {size}"
                );
            }
        }
        // 70 leaves store 70 leaf hashes and 35 + 17 + 8 + 4 + 2 + 1 nodes.
        assert_eq!(stored.len(), 70 + 67);
    }

    #[test]
    fn pieces_and_plans_at_the_edges() {
        assert_eq!(pieces(0, 0), vec![]);
        assert_eq!(
            pieces(0, 13),
            vec![
                NodeId { level: 3, index: 0 },
                NodeId { level: 2, index: 2 },
                NodeId {
                    level: 0,
                    index: 12
                },
            ]
        );
        assert_eq!(inclusion_plan(5, 5), None);
        assert_eq!(inclusion_plan(0, 1), Some(vec![]));
        assert_eq!(consistency_plan(6, 5), None);
        assert_eq!(consistency_plan(0, 5), Some(vec![]));
        assert_eq!(consistency_plan(5, 5), Some(vec![]));
        assert_eq!(
            inclusion_plan(6, 7),
            Some(vec![(4, 6), (0, 4)]),
            "RFC 9162's example: d6 is proven by k and g"
        );
        assert_eq!(
            nodes_of(&inclusion_plan(999_999, 1_000_000).unwrap()).len(),
            12,
            "a proof at a million entries reads a dozen stored nodes"
        );
        let missing = NodeId { level: 1, index: 2 };
        assert_eq!(
            assemble(&[(4, 6)], |id| (id != missing).then_some([0; 32])),
            Err(missing)
        );
    }
}
