//! The Merkle tree of RFC 9162 §2.1 over the ledger's entries: a leaf is
//! SHA-256(0x00 ‖ entry), an interior node SHA-256(0x01 ‖ left ‖ right), the
//! tree of n leaves splits at the largest power of two below n. Proofs are
//! made from the leaves' hashes by the RFC's recursive definitions (§2.1.3.1
//! PATH, §2.1.4.1 PROOF) and checked by its iterative algorithms (§2.1.3.2,
//! §2.1.4.2), so a verifier needs no tree, only the hashes it is given.

use ring::digest::{Context, SHA256};

/// A SHA-256 hash: a leaf's, a node's or a root.
pub type Hash = [u8; 32];

/// Why a proof does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("a tree of {new_size} cannot extend one of {old_size}")]
    SizesOutOfOrder { old_size: u64, new_size: u64 },
    #[error("the proof has {0} hashes, not as many as the tree sizes need")]
    WrongLength(usize),
    #[error("the proof does not lead to the root")]
    RootMismatch,
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    let mut hash = [0; 32];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// The hash of a leaf holding `entry`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0x00], entry])
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The largest power of two smaller than `n` (n ≥ 2): where a tree splits.
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH: the root of the tree over `leaves` (their hashes).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// PATH: the inclusion proof of leaf `index` in the tree over `leaves`,
/// nearest sibling first. `None` if the index is not in the tree.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    (index < leaves.len()).then(|| {
        let mut proof = Vec::new();
        path(index, leaves, &mut proof);
        proof
    })
}

fn path(index: usize, leaves: &[Hash], proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if index < k {
        path(index, &leaves[..k], proof);
        proof.push(root(&leaves[k..]));
    } else {
        path(index - k, &leaves[k..], proof);
        proof.push(root(&leaves[..k]));
    }
}

/// PROOF: the consistency proof that the tree of the first `old_size`
/// leaves is a prefix of the tree over `leaves`. `None` if `old_size` is
/// larger than the tree.
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    (old_size <= leaves.len()).then(|| {
        let mut proof = Vec::new();
        if old_size > 0 {
            subproof(old_size, leaves, true, &mut proof);
        }
        proof
    })
}

fn subproof(m: usize, leaves: &[Hash], whole: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            proof.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], whole, proof);
        proof.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(root(&leaves[..k]));
    }
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root` (RFC 9162
/// §2.1.4.2). Any tree extends the empty one.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength(proof.len()));
        }
        return if old_size == 0 || old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // A power-of-two old tree is itself a node of the new one: its root
    // starts the path.
    let mut path = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength(proof.len()));
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength(proof.len()));
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength(proof.len()));
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::hex;

    /// The entries of the Certificate Transparency reference tree
    /// (RFC 6962's test data, the same hashing as RFC 9162).
    const ENTRIES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    /// Its published roots for sizes 0 to 8.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves() -> Vec<Hash> {
        ENTRIES.iter().map(|entry| leaf_hash(entry)).collect()
    }

    fn unhex(text: &str) -> Hash {
        let mut hash = [0; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
        }
        hash
    }

    fn hexes(hashes: &[Hash]) -> Vec<String> {
        hashes.iter().map(|h| hex(h)).collect()
    }

    #[test]
    fn roots_match_the_published_ones_for_every_size() {
        let leaves = leaves();
        for (size, expected) in ROOTS.iter().enumerate() {
            assert_eq!(hex(&root(&leaves[..size])), *expected, "size {size}");
        }
    }

    #[test]
    fn inclusion_proofs_match_the_published_ones_and_verify() {
        let leaves = leaves();
        // (leaf index, tree size, proof)
        let published: [(usize, usize, &[&str]); 4] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, expected) in published {
            let proof = inclusion_proof(index, &leaves[..size]).unwrap();
            assert_eq!(hexes(&proof), expected, "leaf {index} of {size}");
            let root = unhex(ROOTS[size]);
            assert_eq!(
                verify_inclusion(index as u64, size as u64, &leaves[index], &proof, &root),
                Ok(())
            );
        }
        assert_eq!(inclusion_proof(8, &leaves), None);
    }

    #[test]
    fn consistency_proofs_match_the_published_ones_and_verify() {
        let leaves = leaves();
        let published: [(usize, usize, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, expected) in published {
            let proof = consistency_proof(old, &leaves[..new]).unwrap();
            assert_eq!(hexes(&proof), expected, "{old} -> {new}");
            let (old_root, new_root) = (unhex(ROOTS[old]), unhex(ROOTS[new]));
            assert_eq!(
                verify_consistency(old as u64, new as u64, &old_root, &new_root, &proof),
                Ok(())
            );
        }
        assert_eq!(consistency_proof(9, &leaves), None);
    }

    /// Every leaf of every tree up to 40 leaves, and every pair of sizes:
    /// the proofs made by the recursive definitions verify with the
    /// iterative algorithms, and a changed leaf, root, index or proof hash
    /// does not.
    #[test]
    fn every_proof_of_every_small_tree_verifies_and_any_change_is_caught() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let roots: Vec<Hash> = (0..=leaves.len()).map(|n| root(&leaves[..n])).collect();
        for n in 1..=leaves.len() {
            let tree = &leaves[..n];
            for i in 0..n {
                let proof = inclusion_proof(i, tree).unwrap();
                let (i, size) = (i as u64, n as u64);
                assert_eq!(
                    verify_inclusion(i, size, &tree[i as usize], &proof, &roots[n]),
                    Ok(())
                );
                let other = leaf_hash(b"not in the log");
                assert_eq!(
                    verify_inclusion(i, size, &other, &proof, &roots[n]),
                    Err(ProofError::RootMismatch)
                );
                if n > 1 {
                    let elsewhere = (i + 1) % size;
                    assert!(
                        verify_inclusion(elsewhere, size, &tree[i as usize], &proof, &roots[n])
                            .is_err(),
                        "leaf {i} of {n} proven at {elsewhere}"
                    );
                }
            }
            for m in 0..=n {
                let proof = consistency_proof(m, tree).unwrap();
                let (old, new) = (m as u64, n as u64);
                assert_eq!(
                    verify_consistency(old, new, &roots[m], &roots[n], &proof),
                    Ok(()),
                    "{m} -> {n}"
                );
                if m > 0 && m < n {
                    let rewritten = node_hash(&roots[m], &roots[m]);
                    assert_eq!(
                        verify_consistency(old, new, &rewritten, &roots[n], &proof),
                        Err(ProofError::RootMismatch)
                    );
                    let mut tampered = proof.clone();
                    tampered[0][0] ^= 1;
                    assert_eq!(
                        verify_consistency(old, new, &roots[m], &roots[n], &tampered),
                        Err(ProofError::RootMismatch)
                    );
                }
            }
        }
    }

    #[test]
    fn impossible_requests_are_named() {
        let leaf = leaf_hash(b"x");
        assert_eq!(
            verify_inclusion(3, 3, &leaf, &[], &leaf),
            Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert_eq!(
            verify_consistency(5, 4, &leaf, &leaf, &[]),
            Err(ProofError::SizesOutOfOrder {
                old_size: 5,
                new_size: 4
            })
        );
        // A proof one hash too long for the sizes.
        let leaves: Vec<Hash> = (0u8..4).map(|i| leaf_hash(&[i])).collect();
        let mut proof = inclusion_proof(1, &leaves).unwrap();
        proof.push(leaf);
        assert_eq!(
            verify_inclusion(1, 4, &leaves[1], &proof, &root(&leaves)),
            Err(ProofError::WrongLength(3))
        );
    }
}
