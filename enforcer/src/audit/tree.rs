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
use super::chain::Unsealed;
use super::files::LogFile;
use super::record::Body;
use super::tlog::note_key::check_key_name;
use super::tlog::{
    Checkpoint, NoteSigner, NoteVerifier, NoteVerifiers, SignedNote, TileError, TileStore,
    TreeHash, leaf_hash, tree_root,
};
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
    #[error(
        "the audit log in {dir} no longer matches the tree head it signed at size {size}: \
         a record before it was changed. The agent will not sign over it; run `enforcer \
         audit verify --trust` and move the directory aside to start a new log",
        dir = .dir.display()
    )]
    Diverged { dir: PathBuf, size: u64 },
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
    ///
    /// Before the writer signs anything new, the tree must agree with the last tree head
    /// the log holds that `key` signed: otherwise the next signature would vouch for
    /// whatever the tiles or the older log files were changed to. Tiles that disagree are
    /// rebuilt from the log; a log that still disagrees was changed before that head, and
    /// is refused.
    pub(crate) fn open(
        dir: &Path,
        origin: String,
        files: &[LogFile],
        records: u64,
        key: Option<&SigningKey>,
    ) -> Result<Self, AuditError> {
        let bad_origin = |problem: String| TreeError::Origin {
            origin: origin.clone(),
            problem,
        };
        Checkpoint::new(&origin, 0, super::tlog::empty_root())
            .map_err(|e| bad_origin(e.to_string()))?;
        check_key_name(&origin).map_err(|e| bad_origin(e.to_string()))?;
        let signed = match key {
            Some(key) => last_signed_head(files, key)?,
            None => None,
        };
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
            ) => rebuild(dir, &e.to_string())?,
            Err(e) => return Err(TreeError::from(e).into()),
        };
        let mut rebuilt = false;
        loop {
            fill(&mut tiles, dir, files, records)?;
            let Some((size, root)) = &signed else { break };
            let ours = tree_root(&tiles, *size).map_err(TreeError::from)?;
            if ours == *root {
                break;
            }
            if rebuilt {
                return Err(TreeError::Diverged {
                    dir: dir.to_owned(),
                    size: *size,
                }
                .into());
            }
            tiles = rebuild(
                dir,
                &format!("their tree of {size} records is not the one the log last signed"),
            )?;
            rebuilt = true;
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

    /// Adds the leaf of the record just written.
    pub(crate) fn push(&mut self, leaf: TreeHash) {
        self.pending.push(leaf);
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

/// Brings `tiles` to exactly the `records` records of the log.
fn fill(
    tiles: &mut TileStore,
    dir: &Path,
    files: &[LogFile],
    records: u64,
) -> Result<(), AuditError> {
    if tiles.size() > records {
        return Err(TreeError::AheadOfLog {
            dir: dir.to_owned(),
            tiles: tiles.size(),
            records,
        }
        .into());
    }
    if tiles.size() < records {
        catch_up(tiles, files)?;
    }
    if tiles.size() != records {
        return Err(TreeError::Short {
            dir: dir.to_owned(),
            leaves: tiles.size(),
            records,
        }
        .into());
    }
    Ok(())
}

/// Sets the tile store in `dir` aside (kept for a look) and starts an empty one.
fn rebuild(dir: &Path, why: &str) -> Result<TileStore, AuditError> {
    let aside = dir.join(format!("tile.damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&aside);
    tracing::warn!(
        aside = %aside.display(),
        "the tiles beside the audit log are damaged ({why}); rebuilding them from the log"
    );
    std::fs::rename(dir.join("tile"), &aside).map_err(AuditError::io(&aside))?;
    Ok(TileStore::open(dir).map_err(TreeError::from)?)
}

/// The newest tree head in the log that `key` signed: its size and root. Heads signed by
/// another key (an earlier host key) cannot be told from forgeries and are passed over
/// with a warning.
fn last_signed_head(
    files: &[LogFile],
    key: &SigningKey,
) -> Result<Option<(u64, TreeHash)>, AuditError> {
    for file in files.iter().rev() {
        let mut newest = None;
        let _ = for_each_line(&file.path, |_, bytes| {
            if let Some(note) = note_of(bytes) {
                newest = Some(note);
            }
            Ok::<(), ()>(())
        })?;
        let Some(text) = newest else { continue };
        let head = SignedNote::parse(text.as_bytes())
            .ok()
            .and_then(|note| Checkpoint::parse(note.text()).ok().map(|c| (note, c)));
        let Some((note, head)) = head else {
            tracing::warn!(file = %file.path.display(), "the log's newest tree head is not a checkpoint note");
            return Ok(None);
        };
        let verifier = NoteVerifier::new(head.origin(), key.public_key())
            .and_then(|v| NoteVerifiers::new([v]));
        if verifier.is_ok_and(|keys| note.verify(&keys).is_ok()) {
            return Ok(Some((head.size(), *head.root())));
        }
        tracing::warn!(
            file = %file.path.display(),
            "the log's newest tree head is not signed by this host key (was the key \
             changed?); the tree is not checked against it"
        );
        return Ok(None);
    }
    Ok(None)
}

/// The `note` of a checkpoint record's line, if it has one.
fn note_of(line: &[u8]) -> Option<String> {
    let contains = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
    if !contains(b"\"kind\":\"checkpoint\"") || !contains(b"\"note\":") {
        return None;
    }
    let record = Unsealed::new(line).ok()?.record().ok()?;
    match record.body {
        Body::Checkpoint(checkpoint) => checkpoint.note,
        _ => None,
    }
}

/// The leaf of a stored line, from its bytes as they are (never from the hash it states).
/// A line that cannot be taken apart is damaged, which `audit verify` names; its leaf is
/// the hash of its bytes, as for a format-2 record, so the tree still covers it.
fn leaf_of(line: &[u8]) -> TreeHash {
    Unsealed::new(line).map_or_else(|_| leaf_hash(line), |unsealed| unsealed.leaf(line))
}

/// Appends to `tiles` the leaf hash of every record from its size on.
fn catch_up(tiles: &mut TileStore, files: &[LogFile]) -> Result<(), AuditError> {
    let from = tiles.size();
    let mut batch = Vec::with_capacity(CATCH_UP_BATCH);
    let mut failed = None;
    let firsts = files.iter().map(first_seq).collect::<Result<Vec<_>, _>>()?;
    for (i, file) in files.iter().enumerate() {
        // A file whose successor starts at or before `from` holds no leaf we need.
        if firsts
            .get(i + 1)
            .is_some_and(|next| next.is_some_and(|first| first <= from))
        {
            continue;
        }
        let Some(mut seq) = firsts[i] else {
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
                batch.push(leaf_of(bytes));
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
