//! The tree and its proofs: RFC 6962 vectors, then every proof of every tree up to 64 leaves.

use std::cell::Cell;

use crate::audit::tlog::merkle::{MissingLeaves, SubtreeHashes, split_point};
use crate::audit::tlog::proof::{consistency_shape, inclusion_shape};
use crate::audit::tlog::{
    CompactRange, ProveError, TreeHash, VerifyError, consistency_proof, empty_root,
    inclusion_proof, leaf_hash, node_hash, root_from_inclusion_proof, tree_root,
    verify_consistency, verify_inclusion,
};

fn h(hex_text: &str) -> TreeHash {
    TreeHash::from_slice(&hex::decode(hex_text).expect("test vector is hex"))
        .expect("test vector is 32 bytes")
}

// The eight leaves and the roots of the trees of their first 1..=8 leaves used by
// Certificate Transparency's and transparency-dev/merkle's tests (proof/verify_test.go).
const KAT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const KAT_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn kat_leaves() -> Vec<TreeHash> {
    KAT_LEAVES
        .iter()
        .map(|d| leaf_hash(&hex::decode(d).expect("hex")))
        .collect()
}

fn kat_root(size: u64) -> TreeHash {
    h(KAT_ROOTS[usize::try_from(size).expect("small") - 1])
}

/// RFC 6962's MTH, written straight from its recursive definition, as a second opinion
/// on `tree_root`'s subtree decomposition.
fn reference_root(leaves: &[TreeHash]) -> TreeHash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = usize::try_from(split_point(u64::try_from(n).expect("small"))).expect("small");
            node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

#[test]
fn hashes_have_the_rfc_prefixes() {
    assert_eq!(
        empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    // The one-leaf tree's root is the hash of the empty leaf, SHA-256(0x00).
    assert_eq!(leaf_hash(b""), h(KAT_ROOTS[0]));
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    let mut both = vec![0x01];
    both.extend_from_slice(&a.0);
    both.extend_from_slice(&b.0);
    assert_eq!(node_hash(&a, &b), {
        use sha2::Digest as _;
        TreeHash(sha2::Sha256::digest(&both).into())
    });
}

#[test]
fn roots_of_the_rfc6962_tree_match_the_published_ones() {
    let leaves = kat_leaves();
    assert_eq!(tree_root(&leaves[..], 0).expect("root"), empty_root());
    for size in 1..=8u64 {
        let root = tree_root(&leaves[..], size).expect("root");
        assert_eq!(root, kat_root(size), "root of the first {size} leaves");
    }
}

#[test]
fn inclusion_proofs_match_the_published_ones() {
    let leaves = kat_leaves();
    // (leaf index, tree size, proof); the Go tests number leaves from 1.
    let vectors: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
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
    for (index, size, want) in vectors {
        let want: Vec<TreeHash> = want.iter().map(|x| h(x)).collect();
        let got = inclusion_proof(&leaves[..], index, size).expect("prove");
        assert_eq!(got, want, "inclusion proof of leaf {index} in {size}");
        let leaf = leaves[usize::try_from(index).expect("small")];
        verify_inclusion(&leaf, index, size, &want, &kat_root(size))
            .unwrap_or_else(|e| panic!("leaf {index} in {size}: {e}"));
    }
}

#[test]
fn consistency_proofs_match_the_published_ones() {
    let leaves = kat_leaves();
    let vectors: [(u64, u64, &[&str]); 5] = [
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
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (old, new, want) in vectors {
        let want: Vec<TreeHash> = want.iter().map(|x| h(x)).collect();
        let got = consistency_proof(&leaves[..], old, new).expect("prove");
        assert_eq!(got, want, "consistency proof {old} -> {new}");
        verify_consistency(old, new, &kat_root(old), &kat_root(new), &want)
            .unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));
    }
}

/// Leaf hashes of a tree of `n` distinct leaves.
fn leaves(n: u64) -> Vec<TreeHash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

/// One bit of `hash` flipped; `which` picks the bit so that different positions are hit.
fn flip(hash: &TreeHash, which: usize) -> TreeHash {
    let mut out = *hash;
    out.0[(which / 8) % 32] ^= 1 << (which % 8);
    out
}

const MAX_N: u64 = 64;

#[test]
fn every_root_up_to_64_leaves_matches_the_rfc_definition() {
    let all = leaves(MAX_N);
    for n in 0..=MAX_N {
        let prefix = &all[..usize::try_from(n).expect("small")];
        assert_eq!(
            tree_root(prefix, n).expect("root"),
            reference_root(prefix),
            "root of {n} leaves"
        );
    }
}

/// The running root a verifier keeps while it reads the log equals the tree's root at
/// every size, including the published RFC 6962 ones.
#[test]
fn a_compact_range_has_the_root_of_every_prefix() {
    let all = leaves(MAX_N);
    let mut range = CompactRange::default();
    assert_eq!(range.root(), empty_root());
    for (n, leaf) in (1..).zip(&all) {
        range.push(*leaf);
        assert_eq!(range.size(), n);
        let prefix = &all[..usize::try_from(n).expect("small")];
        assert_eq!(range.root(), reference_root(prefix), "root of {n} leaves");
    }
    let mut kat = CompactRange::default();
    for (n, leaf) in (1..).zip(kat_leaves()) {
        kat.push(leaf);
        assert_eq!(kat.root(), kat_root(n), "published root of {n} leaves");
    }
}

#[test]
fn every_inclusion_proof_up_to_64_leaves_verifies_and_no_altered_one_does() {
    let all = leaves(MAX_N);
    let roots: Vec<TreeHash> = (0..=MAX_N)
        .map(|n| tree_root(&all[..], n).expect("root"))
        .collect();
    let root = |n: u64| roots[usize::try_from(n).expect("small")];
    for n in 1..=MAX_N {
        // The source holds only the tree's own leaves: a read past them would fail.
        let source = &all[..usize::try_from(n).expect("small")];
        for i in 0..n {
            let leaf = all[usize::try_from(i).expect("small")];
            let proof = inclusion_proof(source, i, n).expect("prove");
            assert_eq!(proof.len(), inclusion_shape(i, n).len());
            verify_inclusion(&leaf, i, n, &proof, &root(n))
                .unwrap_or_else(|e| panic!("leaf {i} of {n}: {e}"));

            for (k, p) in proof.iter().enumerate() {
                let mut bad = proof.clone();
                bad[k] = flip(p, k * 37 + usize::try_from(i).expect("small"));
                assert!(
                    matches!(
                        verify_inclusion(&leaf, i, n, &bad, &root(n)),
                        Err(VerifyError::RootMismatch { .. })
                    ),
                    "leaf {i} of {n}: proof hash {k} altered"
                );
            }
            assert!(verify_inclusion(&flip(&leaf, 3), i, n, &proof, &root(n)).is_err());
            assert!(verify_inclusion(&leaf, i, n, &proof, &flip(&root(n), 9)).is_err());
            for other in [i.wrapping_sub(1), i + 1, i ^ 1, i ^ 2, 0, n - 1] {
                if other == i || other >= n {
                    continue;
                }
                assert!(
                    verify_inclusion(&leaf, other, n, &proof, &root(n)).is_err(),
                    "leaf {i} of {n} verified as leaf {other}"
                );
            }
            // A claim about another size must match that size's root, and does not.
            for size in [n - 1, n + 1, n / 2, n * 2, i + 1, MAX_N] {
                if size == n || size <= i || size > MAX_N {
                    continue;
                }
                assert!(
                    verify_inclusion(&leaf, i, size, &proof, &root(size)).is_err(),
                    "leaf {i}: proof for size {n} verified at size {size}"
                );
            }
            let mut longer = proof.clone();
            longer.push(root(n));
            assert_eq!(
                verify_inclusion(&leaf, i, n, &longer, &root(n)),
                Err(VerifyError::WrongLength {
                    got: proof.len() + 1,
                    expected: proof.len()
                })
            );
            if let Some((_, shorter)) = proof.split_last() {
                assert!(matches!(
                    verify_inclusion(&leaf, i, n, shorter, &root(n)),
                    Err(VerifyError::WrongLength { .. })
                ));
            }
        }
        assert_eq!(
            verify_inclusion(&all[0], n, n, &[], &root(n)),
            Err(VerifyError::IndexOutOfRange { index: n, size: n })
        );
    }
}

/// Why no proof verifies at another index: in a tree of a given size, every leaf's proof
/// has its own shape, so the same hashes fold differently.
#[test]
fn every_leaf_of_a_tree_has_its_own_proof_shape() {
    for n in 1..=1024u64 {
        let shapes: std::collections::HashSet<_> = (0..n).map(|i| inclusion_shape(i, n)).collect();
        assert_eq!(
            shapes.len() as u64,
            n,
            "two leaves of {n} share a proof shape"
        );
    }
}

#[test]
fn every_consistency_proof_up_to_64_leaves_verifies_and_no_altered_one_does() {
    let all = leaves(MAX_N);
    let roots: Vec<TreeHash> = (0..=MAX_N)
        .map(|n| tree_root(&all[..], n).expect("root"))
        .collect();
    let root = |n: u64| roots[usize::try_from(n).expect("small")];
    for n in 0..=MAX_N {
        let source = &all[..usize::try_from(n).expect("small")];
        for m in 0..=n {
            let proof = consistency_proof(source, m, n).expect("prove");
            verify_consistency(m, n, &root(m), &root(n), &proof)
                .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
            if 0 < m && m < n {
                let seeded = usize::from(!m.is_power_of_two());
                assert_eq!(proof.len(), consistency_shape(m, n).len() + seeded);
            } else {
                assert!(proof.is_empty(), "{m} -> {n} needs no hashes");
            }

            for (k, p) in proof.iter().enumerate() {
                let mut bad = proof.clone();
                bad[k] = flip(p, k * 41 + usize::try_from(m).expect("small"));
                assert!(
                    verify_consistency(m, n, &root(m), &root(n), &bad).is_err(),
                    "{m} -> {n}: proof hash {k} altered"
                );
            }
            assert!(verify_consistency(m, n, &flip(&root(m), 1), &root(n), &proof).is_err());
            // From the empty tree, any newer root is consistent: nothing to compare it with.
            if m != 0 {
                assert!(verify_consistency(m, n, &root(m), &flip(&root(n), 2), &proof).is_err());
            }
            // Every tree extends the empty one and itself with an empty proof, so from size
            // 0, and to the same size by an empty proof, are no wrong claims.
            for other in [m.wrapping_sub(1), m + 1, m ^ 2, m / 2, m * 2] {
                if other != m && other != 0 && other <= n && !(other == n && proof.is_empty()) {
                    assert!(
                        verify_consistency(other, n, &root(other), &root(n), &proof).is_err(),
                        "{m} -> {n}: proof verified from size {other}"
                    );
                }
            }
            for other in [n.wrapping_sub(1), n + 1, n * 2] {
                if other != n && other >= m && other <= MAX_N && m != 0 {
                    assert!(
                        verify_consistency(m, other, &root(m), &root(other), &proof).is_err(),
                        "{m} -> {n}: proof verified to size {other}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_rewritten_history_is_not_consistent() {
    let all = leaves(MAX_N);
    for n in 2..=MAX_N {
        for m in 1..n {
            // Rewrite one leaf the old tree covers, and prove from the rewritten log.
            for j in [0, m - 1] {
                let mut forged = all[..usize::try_from(n).expect("small")].to_vec();
                forged[usize::try_from(j).expect("small")] = leaf_hash(b"rewritten");
                let proof = consistency_proof(&forged[..], m, n).expect("prove");
                let old_root = tree_root(&all[..], m).expect("root");
                let forged_root = tree_root(&forged[..], n).expect("root");
                assert!(
                    verify_consistency(m, n, &old_root, &forged_root, &proof).is_err(),
                    "{m} -> {n} with leaf {j} rewritten"
                );
            }
        }
    }
}

#[test]
fn trivial_consistency_checks_the_roots_it_is_given() {
    let all = leaves(4);
    let r4 = tree_root(&all[..], 4).expect("root");
    let r3 = tree_root(&all[..], 3).expect("root");
    assert_eq!(verify_consistency(4, 4, &r4, &r4, &[]), Ok(()));
    assert!(matches!(
        verify_consistency(4, 4, &r3, &r4, &[]),
        Err(VerifyError::NewRootMismatch { .. })
    ));
    assert_eq!(
        verify_consistency(4, 4, &r4, &r4, &[r3]),
        Err(VerifyError::WrongLength {
            got: 1,
            expected: 0
        })
    );
    assert_eq!(verify_consistency(0, 4, &empty_root(), &r4, &[]), Ok(()));
    assert!(matches!(
        verify_consistency(0, 4, &r3, &r4, &[]),
        Err(VerifyError::OldRootMismatch { .. })
    ));
    assert_eq!(
        verify_consistency(5, 4, &r4, &r4, &[]),
        Err(VerifyError::OldLarger { old: 5, new: 4 })
    );
    assert!(matches!(
        verify_consistency(3, 4, &r3, &r4, &[]),
        Err(VerifyError::WrongLength { got: 0, .. })
    ));
}

#[test]
fn provers_refuse_impossible_requests_and_report_a_short_source() {
    let all = leaves(8);
    assert!(matches!(
        inclusion_proof(&all[..], 8, 8),
        Err(ProveError::IndexOutOfRange { index: 8, size: 8 })
    ));
    assert!(matches!(
        consistency_proof(&all[..], 9, 8),
        Err(ProveError::OldLarger { old: 9, new: 8 })
    ));
    // Asking about a tree larger than the source holds fails with the source's error.
    let err = inclusion_proof(&all[..], 0, 9).expect_err("9 leaves from 8");
    let ProveError::Source(source) = err else {
        panic!("expected a source error, got {err:?}");
    };
    assert!(source.downcast_ref::<MissingLeaves>().is_some(), "{source}");
    assert!(tree_root(&all[..], 9).is_err());
    // Absurd coordinates are an error, not a panic or an overflow.
    assert!(all[..].subtree(63, u64::MAX).is_err());
    assert!(all[..].subtree(200, 0).is_err());
    assert!(root_from_inclusion_proof(&all[0], u64::MAX, u64::MAX, &[]).is_err());
}

/// A store of every complete subtree's hash, level by level, as tiles hold them; it counts
/// reads, to show that proofs from such a store read O(log² n) hashes and no leaves.
struct LevelStore {
    levels: Vec<Vec<TreeHash>>,
    reads: Cell<usize>,
}

impl LevelStore {
    fn new(leaves: Vec<TreeHash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|l| l.len() >= 2) {
            let above = below
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(above);
        }
        Self {
            levels,
            reads: Cell::new(0),
        }
    }
}

impl SubtreeHashes for LevelStore {
    type Error = MissingLeaves;

    fn subtree(&self, level: u8, index: u64) -> Result<TreeHash, MissingLeaves> {
        self.reads.set(self.reads.get() + 1);
        let missing = MissingLeaves {
            level,
            index,
            leaves: self.levels[0].len(),
        };
        let row = self.levels.get(usize::from(level)).ok_or(missing)?;
        row.get(usize::try_from(index).map_err(|_| missing)?)
            .copied()
            .ok_or(missing)
    }
}

#[test]
fn a_store_of_subtree_hashes_serves_the_same_proofs_in_few_reads() {
    let n = 5_000u64;
    let all = leaves(n);
    let store = LevelStore::new(all.clone());
    let root = tree_root(&store, n).expect("root");
    assert_eq!(root, tree_root(&all[..], n).expect("root"));
    for (i, size) in [(0, n), (4_321, n), (n - 1, n), (77, 1_025)] {
        store.reads.set(0);
        let proof = inclusion_proof(&store, i, size).expect("prove");
        assert!(store.reads.get() <= 13 * 13, "{} reads", store.reads.get());
        assert_eq!(proof, inclusion_proof(&all[..], i, size).expect("prove"));
    }
    for (m, size) in [(1, n), (3_333, n), (4_096, n), (n - 1, n)] {
        store.reads.set(0);
        let proof = consistency_proof(&store, m, size).expect("prove");
        assert!(store.reads.get() <= 13 * 13, "{} reads", store.reads.get());
        assert_eq!(proof, consistency_proof(&all[..], m, size).expect("prove"));
        let old_root = tree_root(&store, m).expect("root");
        verify_consistency(m, size, &old_root, &root, &proof).expect("verifies");
    }
}
