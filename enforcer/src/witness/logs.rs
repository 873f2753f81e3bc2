//! The logs a witness cosigns for: a file of verifier keys, one per line.
//!
//! ```text
//! # comments and blank lines are ignored
//! enforcer.example/host-a+92875bb1+ARl/ayPhbIUyxqvIOPrNXqeJvgx2spIDNAOb+os9No1h
//! ```
//!
//! A log is known by its origin, and its key's name must be that origin (C2SP
//! `tlog-checkpoint` asks logs to sign under their origin, and the agent does). Several
//! keys under one origin are all trusted, for a log that rotates its key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::audit::tlog::{KeyError, NoteVerifier, NoteVerifiers};

/// Why the trusted logs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("cannot read the witness's log list {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {source}")]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: KeyError,
    },
    #[error(
        "{path} names no log: add one verifier key line (<origin>+<key id>+<base64 key>) per \
         log to cosign for"
    )]
    Empty { path: PathBuf },
}

/// The logs a witness cosigns for, by origin.
#[derive(Debug, Clone, Default)]
pub struct TrustedLogs {
    by_origin: BTreeMap<String, NoteVerifiers>,
}

impl TrustedLogs {
    /// Trusts `key` for the log whose origin is its name.
    pub fn add(&mut self, key: NoteVerifier) -> Result<(), KeyError> {
        self.by_origin
            .entry(key.name().to_owned())
            .or_default()
            .add(key)
    }

    /// Reads the log list at `path`; a list naming no log is refused (the witness would
    /// refuse every request).
    pub fn load(path: &Path) -> Result<Self, LogsError> {
        let text = std::fs::read_to_string(path).map_err(|source| LogsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut logs = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            NoteVerifier::from_vkey(line)
                .and_then(|key| logs.add(key))
                .map_err(|source| LogsError::Line {
                    path: path.to_owned(),
                    line: n + 1,
                    source,
                })?;
        }
        if logs.by_origin.is_empty() {
            return Err(LogsError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(logs)
    }

    /// The keys trusted for the log `origin`, if the witness knows it.
    #[must_use]
    pub fn keys(&self, origin: &str) -> Option<&NoteVerifiers> {
        self.by_origin.get(origin)
    }

    /// The origins of the known logs, in order.
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.by_origin.keys().map(String::as_str)
    }
}
