//! Inclusion and consistency proofs (RFC 9162 sections 2.1.3 and 2.1.4).
//!
//! Generation follows the RFC's recursive definitions (PATH and SUBPROOF) as loops over
//! leaf ranges, reading hashes from a [`SubtreeHashes`] source. Verification follows the
//! RFC's iterative algorithms. Both sides share one description of the proof's shape
//! (`inclusion_shape`, `consistency_shape`): which side each proof hash sits on. That
//! lets a verifier tell a proof of the wrong length apart from one with a wrong hash, and
//! say so.

use super::merkle::{SubtreeHashes, TreeHash, empty_root, node_hash, range_root, split_point};

/// Why a proof could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error(
        "a tree of {new} leaves cannot extend one of {old}: consistency is proven from the \
         older (smaller) tree to the newer"
    )]
    OldLarger { old: u64, new: u64 },
    #[error("cannot read a tree hash: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn source_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> ProveError {
    ProveError::Source(Box::new(e))
}

/// Why a proof does not verify. Each variant names a different thing that is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error(
        "the proof has {got} hash(es), but one for this leaf index and tree size has \
         {expected}: it was made for another position or size"
    )]
    WrongLength { got: usize, expected: usize },
    #[error(
        "the proof leads to root {computed}, not to the expected {expected}: the entry, \
         the proof or the tree head is not what it claims"
    )]
    RootMismatch {
        computed: TreeHash,
        expected: TreeHash,
    },
    #[error(
        "a tree of {new} leaves cannot extend one of {old}: the newer tree head is smaller \
         (the log was cut back)"
    )]
    OldLarger { old: u64, new: u64 },
    #[error(
        "the proof does not lead to the older tree head (it gives {computed}, the older \
         head is {expected}): the older tree is not a prefix of the newer one"
    )]
    OldRootMismatch {
        computed: TreeHash,
        expected: TreeHash,
    },
    #[error(
        "the proof does not lead to the newer tree head (it gives {computed}, the newer \
         head is {expected}): the newer tree does not extend the older one"
    )]
    NewRootMismatch {
        computed: TreeHash,
        expected: TreeHash,
    },
}

/// Where a proof hash sits relative to the hash computed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Side {
    /// The proof hash is the left sibling: `node(proof, acc)`.
    Left,
    /// The proof hash is the right sibling: `node(acc, proof)`.
    Right,
}

/// Shifts `a` and `b` right together until `a` is odd or zero (a step both RFC 9162
/// verifiers take when the path climbs past right-edge nodes that have no sibling).
fn shift_while_even(a: &mut u64, b: &mut u64) {
    while *a & 1 == 0 && *a != 0 {
        *a >>= 1;
        *b >>= 1;
    }
}

/// The shape of the inclusion proof of leaf `index` in a tree of `size > index` leaves, in
/// proof order (leaf to root). RFC 9162 section 2.1.3.2 with `fn = index`,
/// `sn = size - 1`.
pub(super) fn inclusion_shape(index: u64, size: u64) -> Vec<Side> {
    debug_assert!(index < size);
    climb(index, size - 1)
}

/// The shape of the consistency proof from `old` to `new` leaves (`0 < old < new`), for
/// the proof hashes after the one the verifier starts from. RFC 9162 section 2.1.4.2:
/// `fn = old - 1`, `sn = new - 1`, shifted past the right-edge nodes the old tree
/// completes; a `Left` hash then feeds both the old and the new root, a `Right` hash only
/// the new one.
pub(super) fn consistency_shape(old: u64, new: u64) -> Vec<Side> {
    debug_assert!(0 < old && old < new);
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    climb(fn_, sn)
}

/// The loop both RFC 9162 verifiers share: from node `fn_` on the path towards the root of
/// a tree whose last node is `sn` at the same level, one `Side` per proof hash.
fn climb(mut fn_: u64, mut sn: u64) -> Vec<Side> {
    let mut shape = Vec::with_capacity(64);
    while sn != 0 {
        if fn_ & 1 == 1 || fn_ == sn {
            shape.push(Side::Left);
            shift_while_even(&mut fn_, &mut sn);
        } else {
            shape.push(Side::Right);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    shape
}

/// The inclusion proof (audit path) of leaf `index` in the tree of the first `size`
/// leaves: RFC 6962's `PATH(m, D[0:n])`, leaf to root.
pub fn inclusion_proof<S: SubtreeHashes + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<TreeHash>, ProveError> {
    if index >= size {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    // Walk from the root down to the leaf; each step records the sibling range's root.
    let mut path = Vec::with_capacity(64);
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            path.push(range_root(source, mid, hi).map_err(source_error)?);
            hi = mid;
        } else {
            path.push(range_root(source, lo, mid).map_err(source_error)?);
            lo = mid;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof that the tree of the first `new` leaves extends the tree of the
/// first `old`: RFC 6962's `PROOF(m, D[0:n]) = SUBPROOF(m, D[0:n], true)`, leaf to root.
///
/// Empty when `old` is 0 or equals `new`: those cases need no hashes.
pub fn consistency_proof<S: SubtreeHashes + ?Sized>(
    source: &S,
    old: u64,
    new: u64,
) -> Result<Vec<TreeHash>, ProveError> {
    if old > new {
        return Err(ProveError::OldLarger { old, new });
    }
    let mut path = Vec::with_capacity(64);
    if old == 0 || old == new {
        return Ok(path);
    }
    // SUBPROOF(m, D[lo:hi], whole): `m` counts the old tree's leaves inside lo..hi, and
    // `whole` says that lo..hi still starts at leaf 0 on the left spine, where the old
    // root itself is known to the verifier and need not be sent.
    let (mut lo, mut hi, mut m, mut whole) = (0, new, old, true);
    loop {
        if m == hi - lo {
            if !whole {
                path.push(range_root(source, lo, hi).map_err(source_error)?);
            }
            break;
        }
        let k = split_point(hi - lo);
        if m <= k {
            path.push(range_root(source, lo + k, hi).map_err(source_error)?);
            hi = lo + k;
        } else {
            path.push(range_root(source, lo, lo + k).map_err(source_error)?);
            lo += k;
            m -= k;
            whole = false;
        }
    }
    path.reverse();
    Ok(path)
}

/// The root that an inclusion proof leads to, without comparing it to anything.
pub fn root_from_inclusion_proof(
    leaf: &TreeHash,
    index: u64,
    size: u64,
    proof: &[TreeHash],
) -> Result<TreeHash, VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let shape = inclusion_shape(index, size);
    if proof.len() != shape.len() {
        return Err(VerifyError::WrongLength {
            got: proof.len(),
            expected: shape.len(),
        });
    }
    Ok(shape
        .iter()
        .zip(proof)
        .fold(*leaf, |acc, (side, p)| match side {
            Side::Left => node_hash(p, &acc),
            Side::Right => node_hash(&acc, p),
        }))
}

/// Checks that `leaf` is leaf number `index` of the tree of `size` leaves whose root is
/// `root`.
pub fn verify_inclusion(
    leaf: &TreeHash,
    index: u64,
    size: u64,
    proof: &[TreeHash],
    root: &TreeHash,
) -> Result<(), VerifyError> {
    let computed = root_from_inclusion_proof(leaf, index, size, proof)?;
    if computed != *root {
        return Err(VerifyError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// Checks that the tree of `new` leaves with root `new_root` extends (has as its first
/// `old` leaves) the tree of `old` leaves with root `old_root`.
///
/// Sizes equal: the proof must be empty and the roots equal. Old size 0: the proof must be
/// empty and the old root must be the empty tree's (every tree extends the empty one).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &TreeHash,
    new_root: &TreeHash,
    proof: &[TreeHash],
) -> Result<(), VerifyError> {
    if old > new {
        return Err(VerifyError::OldLarger { old, new });
    }
    if old == 0 || old == new {
        if !proof.is_empty() {
            return Err(VerifyError::WrongLength {
                got: proof.len(),
                expected: 0,
            });
        }
        if old == 0 && *old_root != empty_root() {
            return Err(VerifyError::OldRootMismatch {
                computed: empty_root(),
                expected: *old_root,
            });
        }
        // Two heads of the same size with different roots: two histories (a fork).
        if old == new && old_root != new_root {
            return Err(VerifyError::NewRootMismatch {
                computed: *old_root,
                expected: *new_root,
            });
        }
        return Ok(());
    }
    let shape = consistency_shape(old, new);
    // When the old tree is a complete subtree, its root is the first node of the path and
    // the proof leaves it out (the verifier has it); otherwise the proof starts with it.
    let old_is_complete = old.is_power_of_two();
    let expected = shape.len() + usize::from(!old_is_complete);
    if proof.len() != expected {
        return Err(VerifyError::WrongLength {
            got: proof.len(),
            expected,
        });
    }
    let (seed, rest) = match proof.split_first() {
        Some((first, rest)) if !old_is_complete => (*first, rest),
        _ => (*old_root, proof),
    };
    let (mut fr, mut sr) = (seed, seed);
    for (side, c) in shape.iter().zip(rest) {
        match side {
            Side::Left => {
                fr = node_hash(c, &fr);
                sr = node_hash(c, &sr);
            }
            Side::Right => sr = node_hash(&sr, c),
        }
    }
    if fr != *old_root {
        return Err(VerifyError::OldRootMismatch {
            computed: fr,
            expected: *old_root,
        });
    }
    if sr != *new_root {
        return Err(VerifyError::NewRootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(())
}
