//! Making a proof on the host: find the record, prove it into the newest checkpoint from
//! the tiles, and attach the artifacts it cites from the archive.

use std::path::{Path, PathBuf};

use super::{PROOF_FORMAT, ProofFile};
use crate::audit::AuditError;
use crate::audit::artifacts::{Archive, ArchiveError};
use crate::audit::chain::Unsealed;
use crate::audit::files::{self, LogFile};
use crate::audit::record::{Body, Record};
use crate::audit::tlog::{self, SignedNote, TileStore, inclusion_proof};
use crate::audit::tree::{CHECKPOINT_FILE, first_seq};
use crate::audit::verify::{for_each_line, seq_prefix};
use crate::witness::COSIGNED_FILE;

/// Which record to prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// The record with this `seq`.
    Seq(u64),
    /// The exec decision of `exec_id` in boot `boot_id` (the `bprm_check_security` one
    /// when the exec has several records).
    Exec { boot_id: String, exec_id: u64 },
    /// The newest record of the agent taking up the artifact whose id starts with this
    /// hex (`accepted`, `in-force` or `break-glass`).
    Artifact(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seq(seq) => write!(f, "record seq {seq}"),
            Self::Exec { boot_id, exec_id } => write!(f, "exec {boot_id}:{exec_id}"),
            Self::Artifact(id) => write!(f, "the acceptance of artifact {id}"),
        }
    }
}

/// Why no proof could be made.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(
        "{} has no signed checkpoint ({problem}): the log is format 1, or the agent has no \
         host key; a proof needs a signed tree head",
        .path.display()
    )]
    NoCheckpoint { path: PathBuf, problem: String },
    #[error("{what} is not in the audit log in {}", .dir.display())]
    NotFound { what: String, dir: PathBuf },
    #[error(
        "record seq {seq} is newer than the newest checkpoint (tree size {size}); it will be \
         covered by the next one (the agent checkpoints at least every minute while it \
         writes, and at shutdown)"
    )]
    NotYetCheckpointed { seq: u64, size: u64 },
    #[error("the tree beside the log: {0}")]
    Tiles(#[from] tlog::TileError),
    #[error("the inclusion proof: {0}")]
    Inclusion(#[from] tlog::ProveError),
    #[error("the artifact record seq {seq} cites: {source}")]
    Artifact {
        seq: u64,
        #[source]
        source: ArchiveError,
    },
}

/// Makes the proof of the record `selector` names, in the log in `dir`, against the
/// newest checkpoint. Reads the log and the tiles only: safe beside the running agent.
pub fn prove(dir: &Path, selector: &Selector) -> Result<ProofFile, ProveError> {
    let (note, head) = read_checkpoint(&dir.join(CHECKPOINT_FILE))?;
    let files = files::list(dir)?;
    let (index, line, record) = find(&files, selector)?.ok_or_else(|| ProveError::NotFound {
        what: selector.to_string(),
        dir: dir.to_owned(),
    })?;
    // The newest checkpoint with witness cosignatures, when it covers the record: the
    // proof then carries them.
    if index >= head.size() {
        return Err(ProveError::NotYetCheckpointed {
            seq: index,
            size: head.size(),
        });
    }
    // The newest checkpoint with witness cosignatures, when it covers the record and its
    // tiles are still there (a rebuild keeps only the newest sizes'): the proof then
    // carries the cosignatures.
    let cosigned = read_checkpoint(&dir.join(COSIGNED_FILE))
        .ok()
        .filter(|(_, c)| index < c.size() && c.origin() == head.origin())
        .and_then(|(note, c)| {
            let tiles = TileStore::open_read_only(dir, c.size()).ok()?;
            Some((note, c, tiles))
        });
    let (note, head, tiles) = match cosigned {
        Some(found) => found,
        None => {
            let tiles = TileStore::open_read_only(dir, head.size())?;
            (note, head, tiles)
        }
    };
    let inclusion = inclusion_proof(&tiles, index, head.size())?
        .iter()
        .map(tlog::TreeHash::to_base64)
        .collect();

    let cited = match &record.body {
        Body::Decision(d) => d.auth_id.clone(),
        Body::Authorization(a) => Some(a.id.clone()),
        _ => None,
    };
    let archive = Archive::new(dir);
    let artifacts = cited
        .map(|prefix| {
            let (_, bytes) = archive
                .find(&prefix)
                .map_err(|source| ProveError::Artifact { seq: index, source })?;
            // Envelopes are JSON text; the archive refuses anything else.
            String::from_utf8(bytes).map_err(|_| ProveError::Artifact {
                seq: index,
                source: ArchiveError::NotAnArtifact {
                    id: prefix.clone(),
                    problem: "not UTF-8".into(),
                },
            })
        })
        .transpose()?
        .into_iter()
        .collect();
    Ok(ProofFile {
        format: PROOF_FORMAT.to_owned(),
        origin: head.origin().to_owned(),
        index,
        record: line,
        inclusion,
        checkpoint: note.to_string(),
        artifacts,
    })
}

/// A signed checkpoint note kept beside the log, and the checkpoint it holds.
fn read_checkpoint(path: &Path) -> Result<(SignedNote, tlog::Checkpoint), ProveError> {
    let no_checkpoint = |problem: String| ProveError::NoCheckpoint {
        path: path.to_owned(),
        problem,
    };
    let text = std::fs::read(path).map_err(|e| no_checkpoint(e.to_string()))?;
    let note = SignedNote::parse(&text).map_err(|e| no_checkpoint(e.to_string()))?;
    let head = tlog::Checkpoint::parse(note.text()).map_err(|e| no_checkpoint(e.to_string()))?;
    Ok((note, head))
}

/// The record `selector` names: its index, line and content. Skips the files that end
/// before a wanted `seq`.
fn find(
    files: &[LogFile],
    selector: &Selector,
) -> Result<Option<(u64, String, Record)>, AuditError> {
    let mut found = None;
    for (i, file) in files.iter().enumerate() {
        if let Selector::Seq(seq) = selector
            && let Some(next) = files.get(i + 1)
            && first_seq(next)?.is_some_and(|first| first <= *seq)
        {
            continue;
        }
        let walked = for_each_line(&file.path, |_, bytes| {
            let Some(seq) = seq_prefix(bytes) else {
                return Ok(());
            };
            if !quick_match(selector, seq, bytes) {
                return Ok(());
            }
            let Some(record) = Unsealed::new(bytes).ok().and_then(|u| u.record().ok()) else {
                return Ok(());
            };
            if matches(selector, &record) {
                let line = String::from_utf8_lossy(bytes).into_owned();
                let exact = is_exact(selector, &record);
                // The first candidate of an exec, the newest acceptance of an artifact.
                if found.is_none() || matches!(selector, Selector::Artifact(_)) {
                    found = Some((seq, line, record));
                }
                // Stop at an exact match; otherwise keep the newest candidate.
                if exact {
                    return Err(());
                }
            }
            Ok(())
        })?;
        if walked.is_err() {
            break;
        }
    }
    Ok(found)
}

/// A cheap look at the bytes, so that only candidate lines are parsed.
fn quick_match(selector: &Selector, seq: u64, bytes: &[u8]) -> bool {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    match selector {
        Selector::Seq(wanted) => seq == *wanted,
        Selector::Exec { exec_id, .. } => contains(format!("\"exec_id\":{exec_id},").as_bytes()),
        Selector::Artifact(prefix) => contains(format!("\"id\":\"{prefix}").as_bytes()),
    }
}

fn matches(selector: &Selector, record: &Record) -> bool {
    match (selector, &record.body) {
        (Selector::Seq(seq), _) => record.seq == *seq,
        (Selector::Exec { boot_id, exec_id }, Body::Decision(d)) => {
            d.boot_id == *boot_id && d.exec_id == *exec_id
        }
        (Selector::Artifact(prefix), Body::Authorization(a)) => {
            a.id.starts_with(prefix.as_str())
                && matches!(a.change.as_str(), "accepted" | "in-force" | "break-glass")
                // Only signed artifacts are kept beside the log and can be proven.
                && matches!(a.artifact.as_str(), "bundle" | "break-glass")
        }
        _ => false,
    }
}

/// Whether a match is the one wanted, not just a candidate: an exec's own decision (the
/// `bprm_check_security` one), and any record by `seq`.
fn is_exact(selector: &Selector, record: &Record) -> bool {
    match (selector, &record.body) {
        (Selector::Seq(_), _) => true,
        (Selector::Exec { .. }, Body::Decision(d)) => d.hook == "bprm_check_security",
        _ => false,
    }
}

/// That the log today extends an older checkpoint: both tree heads and the consistency
/// proof between them, checked.
#[derive(Clone, Debug)]
pub struct Extension {
    pub old: tlog::Checkpoint,
    pub new: tlog::Checkpoint,
    /// The newest checkpoint note, as published beside the log.
    pub new_note: SignedNote,
    /// RFC 9162 consistency proof from `old` to `new`.
    pub proof: Vec<tlog::TreeHash>,
}

/// Why the log could not be shown to extend a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ConsistencyError {
    #[error(transparent)]
    Prove(#[from] ProveError),
    #[error("the old checkpoint: {0}")]
    Old(tlog::CheckpointError),
    #[error("the old checkpoint is of {old:?}, this log is {new:?}")]
    OtherLog { old: String, new: String },
    #[error(
        "the old checkpoint (size {old}) is larger than the log's newest (size {new}): the \
         log was cut back, or the checkpoint is from another history"
    )]
    Shrunk { old: u64, new: u64 },
    #[error(
        "the log does not extend the old checkpoint: {0}. The log's history was rewritten \
         after that checkpoint, or the checkpoint is from another history"
    )]
    Inconsistent(tlog::VerifyError),
}

/// Proves that the log in `dir` extends `old` (a signed checkpoint note's bytes; its
/// signatures are the caller's business) and checks the proof.
pub fn prove_consistency(dir: &Path, old: &[u8]) -> Result<Extension, ConsistencyError> {
    let old_note = SignedNote::parse(old).map_err(|e| ConsistencyError::Old(e.into()))?;
    let old = tlog::Checkpoint::parse(old_note.text()).map_err(ConsistencyError::Old)?;
    let (new_note, new) = read_checkpoint(&dir.join(CHECKPOINT_FILE))?;
    if old.origin() != new.origin() {
        return Err(ConsistencyError::OtherLog {
            old: old.origin().to_owned(),
            new: new.origin().to_owned(),
        });
    }
    if old.size() > new.size() {
        return Err(ConsistencyError::Shrunk {
            old: old.size(),
            new: new.size(),
        });
    }
    let tiles = TileStore::open_read_only(dir, new.size()).map_err(ProveError::from)?;
    let proof =
        tlog::consistency_proof(&tiles, old.size(), new.size()).map_err(ProveError::from)?;
    tlog::verify_consistency(old.size(), new.size(), old.root(), new.root(), &proof)
        .map_err(ConsistencyError::Inconsistent)?;
    Ok(Extension {
        old,
        new,
        new_note,
        proof,
    })
}
