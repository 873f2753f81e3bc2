//! The RFC 6962 / RFC 9162 Merkle tree over SHA-256, and where its hashes come from.
//!
//! A leaf's hash is `SHA-256(0x00 || data)` and an inner node's is
//! `SHA-256(0x01 || left || right)`. The two prefixes keep a leaf from ever being taken for a
//! node (a second-preimage attack on the tree shape). The tree of `n` leaves splits at the
//! largest power of two below `n`, so its left part is always a complete (perfect) subtree.
//!
//! Every hash a proof needs is therefore the root of a *complete* subtree (`2^level` leaves
//! starting at leaf `index << level`), or a right-edge range built from a few of them.
//! [`SubtreeHashes`] asks for exactly that and nothing else, which is what a C2SP
//! `tlog-tiles` store keeps on disk: a store answers in O(1) per hash, and proofs cost
//! O(log² n) reads in the worst case without rereading the log. A plain slice of leaf hashes
//! implements it too, for tests and small trees.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};

/// Length of a tree hash (SHA-256).
pub const TREE_HASH_LEN: usize = 32;

/// A SHA-256 hash in the tree: a leaf hash, an inner node or a root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeHash(pub [u8; TREE_HASH_LEN]);

impl TreeHash {
    /// The hash from exactly 32 bytes, or `None` for any other length.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Standard base64 with padding, as checkpoints write a root hash.
    #[must_use]
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Lowercase hex, as the RFC's and Go's test vectors write hashes.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TreeHash({})", self.to_hex())
    }
}

/// The hash of one log entry: `SHA-256(0x00 || data)`.
#[must_use]
pub fn leaf_hash(data: &[u8]) -> TreeHash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    TreeHash(h.finalize().into())
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`.
#[must_use]
pub fn node_hash(left: &TreeHash, right: &TreeHash) -> TreeHash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    TreeHash(h.finalize().into())
}

/// The root of the empty tree: `SHA-256("")`, with no prefix (RFC 9162 section 2.1.1).
#[must_use]
pub fn empty_root() -> TreeHash {
    TreeHash(Sha256::digest([]).into())
}

/// The highest level a subtree can have: a tree holds at most `u64::MAX` leaves.
pub const MAX_LEVEL: u8 = 63;

/// A source of the hashes of complete subtrees, from which roots and proofs are built.
///
/// A tile store implements this by reading the tile that holds the node; a slice of leaf
/// hashes implements it by hashing (O(2^level) work, fine for tests and small trees).
pub trait SubtreeHashes {
    /// Why a hash could not be read (I/O, a missing tile, a damaged store).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The root of the complete subtree of `2^level` leaves that begins with leaf
    /// `index << level`.
    ///
    /// Callers in this module ask only for subtrees that lie wholly inside the tree they
    /// work on, with `level <= MAX_LEVEL`; a source should still answer anything else
    /// with an error rather than a panic.
    fn subtree(&self, level: u8, index: u64) -> Result<TreeHash, Self::Error>;
}

/// A slice that is too short for the subtree asked of it.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error(
    "the subtree at level {level}, index {index} needs leaves beyond the {leaves} leaf \
     hash(es) given"
)]
pub struct MissingLeaves {
    pub level: u8,
    pub index: u64,
    pub leaves: usize,
}

impl SubtreeHashes for [TreeHash] {
    type Error = MissingLeaves;

    fn subtree(&self, level: u8, index: u64) -> Result<TreeHash, MissingLeaves> {
        let missing = MissingLeaves {
            level,
            index,
            leaves: self.len(),
        };
        let width = 1u64.checked_shl(u32::from(level)).ok_or(missing)?;
        let start = index.checked_mul(width).ok_or(missing)?;
        let end = start.checked_add(width).ok_or(missing)?;
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(missing);
        };
        self.get(start..end).map(complete_root).ok_or(missing)
    }
}

/// The root of a complete subtree given all its leaf hashes (a power-of-two count).
pub(super) fn complete_root(leaves: &[TreeHash]) -> TreeHash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let (left, right) = leaves.split_at(leaves.len() / 2);
            node_hash(&complete_root(left), &complete_root(right))
        }
    }
}

/// `floor(log2(n))` for `n >= 1`: the level of the largest complete subtree in `n` leaves.
#[expect(
    clippy::cast_possible_truncation,
    reason = "63 - leading_zeros of a non-zero u64 is at most 63"
)]
fn floor_log2(n: u64) -> u8 {
    (63 - n.leading_zeros()) as u8
}

/// The largest power of two strictly below `n`, for `n >= 2`: where RFC 6962 splits a tree
/// of `n` leaves.
pub(super) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2, "a tree of {n} leaves does not split");
    1 << (63 - (n - 1).leading_zeros())
}

/// The root of the leaves `start..end` as a tree of its own, where `start` is a multiple
/// of a power of two at least `end - start`.
///
/// That holds for every range that RFC 6962's recursion visits (the whole tree, and each
/// left or right part of a range it visited), and it makes the range a sequence of complete
/// subtrees of decreasing size, one per set bit of `end - start`. Their right-to-left fold is
/// the range's root, because a tree's left part is always the largest complete subtree.
pub(super) fn range_root<S: SubtreeHashes + ?Sized>(
    source: &S,
    start: u64,
    end: u64,
) -> Result<TreeHash, S::Error> {
    if start >= end {
        return Ok(empty_root());
    }
    let mut parts = Vec::with_capacity(64);
    let mut at = start;
    let mut remaining = end - start;
    while remaining != 0 {
        let level = floor_log2(remaining);
        debug_assert_eq!(at % (1 << level), 0, "range {start}..{end} is not aligned");
        parts.push(source.subtree(level, at >> level)?);
        at += 1 << level;
        remaining -= 1 << level;
    }
    Ok(fold_right(&parts))
}

/// The root of complete subtrees that lie side by side, largest first: each is the left
/// part of the tree made of it and everything to its right.
fn fold_right(parts: &[TreeHash]) -> TreeHash {
    let mut parts = parts.iter().rev();
    let Some(mut root) = parts.next().copied() else {
        return empty_root();
    };
    for left in parts {
        root = node_hash(left, &root);
    }
    root
}

/// The root of a tree kept up to date leaf by leaf, in O(log n) memory: the roots of its
/// complete subtrees, one per set bit of its size, largest first.
///
/// What a reader that walks the whole log needs (`audit verify` checks each checkpoint's
/// root against the leaves it read), with no store at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<TreeHash>,
}

impl CompactRange {
    /// Adds the next leaf's hash.
    pub fn push(&mut self, leaf: TreeHash) {
        let mut hash = leaf;
        let mut size = self.size;
        // Each trailing one bit of the size is a complete subtree as large as the one
        // being carried: they merge, like a binary increment.
        while size & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree of all the leaves pushed.
    #[must_use]
    pub fn root(&self) -> TreeHash {
        fold_right(&self.peaks)
    }
}

/// The root of the tree of the first `size` leaves (the tree head at that size).
///
/// O(log size) reads from the source.
pub fn tree_root<S: SubtreeHashes + ?Sized>(source: &S, size: u64) -> Result<TreeHash, S::Error> {
    range_root(source, 0, size)
}
