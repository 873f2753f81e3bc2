//! The Merkle tree over the log's records (format 2), as the writer keeps it.
//!
//! **Leaves.** Leaf `i` is the record whose `seq` is `i`, and its bytes are the record's
//! line exactly as stored, without the newline: the same bytes the chain hashes, plus the
//! chain hash itself. So a proof carries the line as it is in the file, and a verifier
//! needs no serializer to rebuild it. Every record counts, format-1 records included,
//! which is how a format-1 log continues into format 2 without losing what it proves:
//! the first format-2 checkpoint commits to the whole history, chain and all.
//!
//! **Store.** The tree's hashes live in a C2SP `tlog-tiles` store under `tile/` in the
//! log's directory. Leaf hashes are computed as records are written and kept in memory
//! until the next checkpoint, which first syncs the log, then appends them to the tiles,
//! then signs the root. So the tiles are never ahead of the durable log, and every tree
//! size a checkpoint names has all its tiles on disk before the checkpoint exists, which
//! is what lets readers use them beside the writer ([`TileStore::open_read_only`]).
//!
//! **Checkpoint file.** The newest signed checkpoint note is also kept as `checkpoint`
//! in the directory, where C2SP `tlog-tiles` serves it, for witnesses and for `prove`.

use std::path::{Path, PathBuf};

use super::AuditError;
use super::files::LogFile;
use super::tlog::note_key::check_key_name;
use super::tlog::{Checkpoint, NoteSigner, SignedNote, TileError, TileStore, TreeHash, leaf_hash};
use super::verify::{for_each_line, seq_prefix};
use crate::authz::trust::SigningKey;

/// The newest signed checkpoint note, beside the log.
pub const CHECKPOINT_FILE: &str = "checkpoint";

const CHECKPOINT_MODE: u32 = 0o640;

/// Leaves appended to the tiles at once while catching up with a long log: bounds the
/// memory of a catch-up (32 bytes each) without making it slow.
const CATCH_UP_BATCH: usize = 1 << 16;

/// Why the tree beside the log could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("the audit log's tile store: {0}")]
    Tiles(#[from] TileError),
    #[error(
        "the tile store in {dir} holds {tiles} leaves but the log only {records} records: \
         the log lost records it had synced, or the tiles belong to another log; move \
         {dir}/tile aside (the tiles are rebuilt from the log)",
        dir = .dir.display()
    )]
    AheadOfLog {
        dir: PathBuf,
        tiles: u64,
        records: u64,
    },
    #[error(
        "the log files in {dir} hold {leaves} records in sequence, but the chain resumes \
         at record {records}: run `enforcer audit verify`",
        dir = .dir.display()
    )]
    Short {
        dir: PathBuf,
        leaves: u64,
        records: u64,
    },
    #[error(
        "{path}: line {line} should hold record {expected} but does not: the log is not \
         one sequence, so it has no tree; run `enforcer audit verify`",
        path = .path.display()
    )]
    OutOfSequence {
        path: PathBuf,
        line: usize,
        expected: u64,
    },
    #[error("the audit origin {origin:?} cannot name a checkpoint: {problem}")]
    Origin { origin: String, problem: String },
}

/// The writer's side of the tree: the tiles on disk and the leaves not yet in them.
#[derive(Debug)]
pub(crate) struct LogTree {
    dir: PathBuf,
    origin: String,
    tiles: TileStore,
    pending: Vec<TreeHash>,
}

impl LogTree {
    /// Opens the tiles in `dir` and appends the leaves of every record in `files` that
    /// they lack (all of them, the first time a format-1 log is opened), so that the tree
    /// has exactly `records` leaves.
    pub(crate) fn open(
        dir: &Path,
        origin: String,
        files: &[LogFile],
        records: u64,
    ) -> Result<Self, AuditError> {
        let bad_origin = |problem: String| TreeError::Origin {
            origin: origin.clone(),
            problem,
        };
        Checkpoint::new(&origin, 0, super::tlog::empty_root())
            .map_err(|e| bad_origin(e.to_string()))?;
        check_key_name(&origin).map_err(|e| bad_origin(e.to_string()))?;
        let mut tiles = match TileStore::open(dir) {
            Ok(tiles) => tiles,
            // Tiles are a cache of the log: a store a crash damaged is set aside and
            // rebuilt, not allowed to keep the agent from starting.
            Err(
                e @ (TileError::BadPath { .. }
                | TileError::WrongLength { .. }
                | TileError::Missing { .. }
                | TileError::Ahead { .. }
                | TileError::Mismatch { .. }),
            ) => {
                let aside = dir.join(format!("tile.damaged-{}", std::process::id()));
                tracing::warn!(
                    aside = %aside.display(),
                    "the tiles beside the audit log are damaged ({e}); rebuilding them from \
                     the log"
                );
                std::fs::rename(dir.join("tile"), &aside).map_err(AuditError::io(&aside))?;
                TileStore::open(dir).map_err(TreeError::from)?
            }
            Err(e) => return Err(TreeError::from(e).into()),
        };
        if tiles.size() > records {
            return Err(TreeError::AheadOfLog {
                dir: dir.to_owned(),
                tiles: tiles.size(),
                records,
            }
            .into());
        }
        if tiles.size() < records {
            catch_up(&mut tiles, files)?;
        }
        if tiles.size() != records {
            return Err(TreeError::Short {
                dir: dir.to_owned(),
                leaves: tiles.size(),
                records,
            }
            .into());
        }
        Ok(Self {
            dir: dir.to_owned(),
            origin,
            tiles,
            pending: Vec::new(),
        })
    }

    /// The log's name in its checkpoints.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Adds the record just written (its line without the newline).
    pub(crate) fn push(&mut self, line: &[u8]) {
        self.pending.push(leaf_hash(line));
    }

    /// Writes the pending leaves to the tiles: call only once their records are durable
    /// in the log, so that the tiles never hold a record the log could lose.
    pub(crate) fn commit(&mut self) -> Result<(), AuditError> {
        self.tiles.append(&self.pending).map_err(TreeError::from)?;
        self.pending.clear();
        Ok(())
    }

    /// Signs the head of the committed tree: the note a checkpoint record carries.
    pub(crate) fn sign(&self, key: &SigningKey) -> Result<SignedNote, AuditError> {
        let root = self.tiles.root().map_err(TreeError::from)?;
        let origin_error = |problem: String| TreeError::Origin {
            origin: self.origin.clone(),
            problem,
        };
        let signer = NoteSigner::new(&self.origin, key).map_err(|e| origin_error(e.to_string()))?;
        Checkpoint::new(&self.origin, self.tiles.size(), root)
            .and_then(|checkpoint| checkpoint.sign(&signer))
            .map_err(|e| origin_error(e.to_string()).into())
    }

    /// Publishes `note` as the newest checkpoint, atomically.
    pub(crate) fn publish(&self, note: &SignedNote) -> Result<(), AuditError> {
        let path = self.dir.join(CHECKPOINT_FILE);
        crate::fsutil::replace_atomically(&path, note.to_string().as_bytes(), CHECKPOINT_MODE)
            .map_err(AuditError::io(path))
    }
}

/// Appends to `tiles` the leaf hash of every record from its size on.
fn catch_up(tiles: &mut TileStore, files: &[LogFile]) -> Result<(), AuditError> {
    let from = tiles.size();
    let mut batch = Vec::with_capacity(CATCH_UP_BATCH);
    let mut failed = None;
    for (i, file) in files.iter().enumerate() {
        // A file whose successor starts at or before `from` holds no leaf we need.
        if let Some(next) = files.get(i + 1)
            && first_seq(next)?.is_some_and(|first| first <= from)
        {
            continue;
        }
        let Some(mut seq) = first_seq(file)? else {
            continue;
        };
        let walked = for_each_line(&file.path, |line, bytes| {
            if seq_prefix(bytes) != Some(seq) {
                return Err(TreeError::OutOfSequence {
                    path: file.path.clone(),
                    line,
                    expected: seq,
                });
            }
            if seq >= from {
                batch.push(leaf_hash(bytes));
                if batch.len() == CATCH_UP_BATCH {
                    tiles.append(&batch)?;
                    batch.clear();
                }
            }
            seq += 1;
            Ok(())
        })?;
        if let Err((_, e)) = walked {
            failed = Some(e);
            break;
        }
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    tiles.append(&batch).map_err(TreeError::from)?;
    Ok(())
}

/// The `seq` of a file's first record, if it has one.
pub(crate) fn first_seq(file: &LogFile) -> Result<Option<u64>, AuditError> {
    let mut first = None;
    // Stops after the first line: the error is only the way out of the walk.
    let _ = for_each_line(&file.path, |_, bytes| {
        first = seq_prefix(bytes);
        Err(())
    })?;
    Ok(first)
}
