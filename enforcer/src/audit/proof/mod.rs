//! Proof of one record: a file a third party checks offline with only the host's public
//! key and their trust store (`enforcer audit prove`, `enforcer proof verify`).
//!
//! A proof holds:
//! - the record, as the line stored in the log (its Merkle leaf);
//! - its inclusion proof in the tree of the newest checkpoint;
//! - that checkpoint, a C2SP signed note from the host key, with any witness
//!   cosignatures;
//! - the signed authorization artifacts the record cites, as the agent accepted them.
//!
//! Checking it ([`check`](mod@check)) proves that the host's log held this record at that
//! size (so whoever saw that checkpoint, or a witness that cosigned it, sees the same
//! record), and, for an allowed exec, who authorized it: the artifact is signed by the
//! trust store's keys, was valid when the decision was made, and grants that digest in
//! that scope. Each way the parts can fail to fit is refused with its own reason
//! ([`ProofError`]).

mod check;
mod make;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use check::{ProofError, ProvenAuthorization, ProvenRecord, verify_proof};
pub use make::{ConsistencyError, Extension, ProveError, Selector, prove, prove_consistency};

/// The proof file's format, named in the file: a reader refuses formats it does not know.
pub const PROOF_FORMAT: &str = "enforcer-audit-proof/v1";

/// Largest proof file read: a record, ~64 hashes, a note and a few artifacts.
pub const MAX_PROOF_BYTES: usize = 16 << 20;

/// The proof file (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofFile {
    /// [`PROOF_FORMAT`].
    pub format: String,
    /// The log's origin: the checkpoint's first line and the host key's name.
    pub origin: String,
    /// The record's leaf index, which is its `seq`.
    pub index: u64,
    /// The record's line as stored in the log, without the newline.
    pub record: String,
    /// The inclusion proof: base64 SHA-256 hashes, from the leaf's sibling upwards.
    pub inclusion: Vec<String>,
    /// The signed checkpoint note the proof leads to, with every signature it had.
    pub checkpoint: String,
    /// The artifacts (DSSE envelope JSON, as accepted) that the record cites.
    #[serde(default)]
    pub artifacts: Vec<String>,
}
