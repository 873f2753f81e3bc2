//! What a witness remembers: for each log, the latest checkpoint it cosigned.
//!
//! That one checkpoint per log is all the protocol needs: a new one is cosigned only if it
//! extends it. Losing it would let the log be rolled back or forked past the witness, so
//! the state lives in one file, `<state dir>/witness-state.json`, replaced atomically
//! (write, fsync, rename, fsync the directory) before a cosignature leaves the witness,
//! and a file that cannot be read is an error at start, never an empty start.
//!
//! The file holds each log's cosigned note (log signature and the witness's cosignature),
//! not just its size and root: it is evidence of what the log signed, and the size and
//! root are read back from it, so the two can never disagree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::tlog::{Checkpoint, CheckpointError, SignedNote, TreeHash};

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "witness-state.json";

/// The format of the state file; a newer one is refused rather than misread.
const VERSION: u32 = 1;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the witness state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the witness state {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the witness state {path} is corrupt ({problem}); the witness will not start \
         without it, because an empty start would let every log roll back past it. \
         Restore it from a backup"
    )]
    Corrupt { path: PathBuf, problem: String },
    #[error("cannot write the witness state {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The latest checkpoint a witness cosigned for one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    pub checkpoint: Checkpoint,
    /// The note as cosigned: the log's signature(s) and the witness's cosignature.
    pub note: SignedNote,
    /// The time the witness's cosignature states, seconds since the Epoch.
    pub cosigned_at: u64,
}

impl LogState {
    #[must_use]
    pub fn size(&self) -> u64 {
        self.checkpoint.size()
    }

    #[must_use]
    pub fn root(&self) -> &TreeHash {
        self.checkpoint.root()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    logs: BTreeMap<String, LogRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogRecord {
    cosigned_at: u64,
    /// The cosigned note as text.
    note: String,
}

/// Every log's latest cosigned checkpoint, and the file it lives in.
#[derive(Debug)]
pub struct WitnessState {
    path: PathBuf,
    logs: BTreeMap<String, LogState>,
}

impl WitnessState {
    /// Opens the state in `dir`, creating the directory (owner-only) and an empty state
    /// on first use. A state file that exists but cannot be read whole is an error.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        crate::fsutil::create_dir_durably(dir, 0o700).map_err(|source| StateError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = Self {
                    path,
                    logs: BTreeMap::new(),
                };
                // Written at once, so that from now on a missing file is noticed as
                // a change rather than taken for a first start.
                state.persist(&state.logs)?;
                return Ok(state);
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let logs = parse(&bytes).map_err(|problem| StateError::Corrupt {
            path: path.clone(),
            problem,
        })?;
        Ok(Self { path, logs })
    }

    /// The file the state lives in.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The latest checkpoint cosigned for `origin`, if any.
    #[must_use]
    pub fn get(&self, origin: &str) -> Option<&LogState> {
        self.logs.get(origin)
    }

    /// Every log's latest cosigned checkpoint, by origin.
    pub fn logs(&self) -> impl Iterator<Item = &LogState> {
        self.logs.values()
    }

    /// Records `log` as its origin's latest cosigned checkpoint, durably: when this
    /// returns `Ok`, the file says so; when it fails, neither the file nor this state
    /// changed.
    pub fn set(&mut self, log: LogState) -> Result<(), StateError> {
        let mut next = self.logs.clone();
        next.insert(log.checkpoint.origin().to_owned(), log);
        self.persist(&next)?;
        self.logs = next;
        Ok(())
    }

    /// Writes `logs` as the state file, replacing the old one atomically.
    fn persist(&self, logs: &BTreeMap<String, LogState>) -> Result<(), StateError> {
        let file = StateFile {
            version: VERSION,
            logs: logs
                .iter()
                .map(|(origin, log)| {
                    let record = LogRecord {
                        cosigned_at: log.cosigned_at,
                        note: log.note.to_string(),
                    };
                    (origin.clone(), record)
                })
                .collect(),
        };
        let write_err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| write_err(e.into()))?;
        bytes.push(b'\n');
        crate::fsutil::replace_atomically(&self.path, &bytes, 0o600).map_err(write_err)
    }
}

/// Reads the state file's bytes; the error says what is wrong.
fn parse(bytes: &[u8]) -> Result<BTreeMap<String, LogState>, String> {
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!(
            "format version {}, this witness reads version {VERSION}",
            file.version
        ));
    }
    file.logs
        .into_iter()
        .map(|(origin, record)| {
            let bad = |e: CheckpointError| format!("log {origin:?}: {e}");
            let note = SignedNote::parse(record.note.as_bytes()).map_err(|e| bad(e.into()))?;
            let checkpoint = Checkpoint::parse(note.text()).map_err(bad)?;
            if checkpoint.origin() != origin {
                return Err(format!(
                    "log {origin:?} holds a checkpoint of {:?}",
                    checkpoint.origin()
                ));
            }
            let log = LogState {
                checkpoint,
                note,
                cosigned_at: record.cosigned_at,
            };
            Ok((origin, log))
        })
        .collect()
}
