//! The agent's audit log: every decision the kernel reported, in an append-only JSON Lines
//! file whose records form a SHA3-512 hash chain, with checkpoints signed by the host key.
//!
//! Why a chain and signatures: the log is evidence. Whoever can write the directory can
//! change it, so the log cannot prevent tampering; it can make tampering visible. The chain
//! makes any edit, deletion or reordering of a record break every later link; a signed
//! checkpoint commits to the head of the chain, so rewriting the chain from the edit onward
//! would need the host's private key. `docs/audit.md` describes the format and its limits.
//!
//! - [`record`]: what one record says (decision, gap, checkpoint, start).
//! - [`chain`]: the canonical bytes, the hash, and what a checkpoint signature covers.
//! - [`writer`]: [`AuditLog`], the agent's appender: batching, checkpoints, rotation,
//!   durability.
//! - [`verify`](mod@verify): walks every file and reports the first broken record.
//! - [`query`]: reading, filtering, following and lineage for the CLI.
//! - [`tlog`]: the Merkle tree, proofs, signed notes, checkpoints and tiles of format 2,
//!   independent of how the log is stored.
//! - [`tree`]: the writer's side of the tree: leaves per record, tiles and signed tree
//!   heads at each checkpoint, catching up with a format-1 log.
//! - [`artifacts`]: the signed artifacts the records cite, kept as accepted.
//! - [`proof`](mod@proof): one record proven offline to a third party, and consistency.

pub mod artifacts;
pub mod chain;
pub mod files;
pub mod proof;
pub mod query;
pub mod record;
pub mod replay;
pub mod tlog;
pub mod tree;
pub mod verify;
pub mod writer;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use chain::ChainHash;
pub use record::{AuthorizationChange, Body, Decision, DecisionLabels, Record};
pub use verify::{Problem, ProblemKind, Report, verify_dir};
pub use writer::{AuditLog, AuditOptions};

use std::path::PathBuf;

/// Where the agent keeps its audit log unless told otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/enforcer/audit";

/// Suggested place for the host key that signs checkpoints, as written by
/// `enforcer key generate --out /etc/enforcer/audit-host` (which also writes the `.pub`
/// that `enforcer audit verify --trust` takes).
pub const DEFAULT_HOST_KEY: &str = "/etc/enforcer/audit-host.key";

/// Why the audit log could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "audit log {path} is damaged at line {line}: {problem}. Run `enforcer audit verify` \
         and move the directory aside to start a new log; appending would hide the damage"
    )]
    BrokenTail {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error(
        "audit log directory {path} is in use by another process (its lock file is held): \
         two writers would break the chain"
    )]
    Locked { path: PathBuf },
    #[error("cannot read the boot id from {path}: {problem}")]
    BootId { path: PathBuf, problem: String },
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    #[error(transparent)]
    Archive(#[from] artifacts::ArchiveError),
    #[error("cannot encode an audit record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "an earlier write to the audit log failed, so its last line may be partial; \
         reopen the log (it resumes in a new file)"
    )]
    Poisoned,
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// Where the kernel publishes the current boot's random id.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The current boot's id. Exec ids restart at 1 on every boot, so a record names one
/// exec only together with this id.
pub fn boot_id() -> Result<String, AuditError> {
    let path = PathBuf::from(BOOT_ID_PATH);
    let text = std::fs::read_to_string(&path).map_err(|e| AuditError::BootId {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    let id = text.trim();
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(AuditError::BootId {
            path,
            problem: format!("unexpected content {id:?}"),
        });
    }
    Ok(id.to_owned())
}
