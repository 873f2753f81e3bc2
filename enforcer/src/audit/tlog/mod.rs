//! The audit log as a transparency log (format 2): the pieces that do not depend on how
//! the log is stored.
//!
//! - [`merkle`]: the RFC 6962 / RFC 9162 Merkle tree over SHA-256, and [`SubtreeHashes`],
//!   the one question a hash store has to answer.
//! - [`proof`]: inclusion and consistency proofs, made and checked.
//! - [`note_key`] and [`note`]: C2SP `signed-note` with Ed25519 keys, and the `vkey` text
//!   that Go's tools and witnesses exchange keys in.
//! - [`checkpoint`]: C2SP `tlog-checkpoint`, the signed tree head.
//! - [`cosignature`]: C2SP `tlog-cosignature` (Ed25519 `cosignature/v1`), a witness's
//!   timestamped signature on a checkpoint; `crate::witness` asks for and makes them.
//! - [`tiles`]: C2SP `tlog-tiles`, the tree-hash store beside the log that answers
//!   [`SubtreeHashes`] from disk.
//!
//! [`super::tree`] is where the log uses them; `docs/audit.md` describes the format.

pub mod checkpoint;
pub mod cosignature;
pub mod merkle;
pub mod note;
pub mod note_key;
pub mod proof;
mod tile_path;
pub mod tiles;

#[cfg(test)]
mod tests;

pub use checkpoint::{
    Checkpoint, CheckpointError, VerifiedCheckpoint, parse_tree_hash, parse_tree_size,
};
pub use cosignature::{
    COSIGNATURE_V1_TYPE, CosignatureError, CosignatureVerifier, Cosigned, Cosigner,
    cosignature_timestamp, cosigned_by,
};
pub use merkle::{
    CompactRange, SubtreeHashes, TREE_HASH_LEN, TreeHash, empty_root, leaf_hash, node_hash,
    tree_root,
};
pub use note::{NoteError, NoteSignature, SignedNote, VerifiedNote};
pub use note_key::{KeyError, NoteKeyId, NoteSigner, NoteVerifier, NoteVerifiers};
pub use proof::{
    ProveError, VerifyError, consistency_proof, inclusion_proof, root_from_inclusion_proof,
    verify_consistency, verify_inclusion,
};
pub use tiles::{TILE_HEIGHT, TileError, TileStore};
