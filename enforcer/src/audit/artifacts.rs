//! The signed artifacts the log's authorization records cite, kept beside the log as the
//! agent accepted them, so that a proof can carry them.
//!
//! Each is stored once, under `artifacts/<id>` in the log's directory, where `<id>` is
//! its identity (SHA3-512 of its payload, 128 hex characters). The name is checked against
//! the bytes before they are stored, and a reader checks it again: a file can only be
//! the artifact its name says. So the archive needs no signature of its own; the
//! artifact's signatures are checked by whoever uses it, against their own trust store.

use std::path::{Path, PathBuf};

use crate::authz::artifact::{ArtifactId, Envelope};

/// The archive's directory, inside the log's.
pub const ARTIFACTS_DIR: &str = "artifacts";

const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

/// Why an artifact could not be kept or found.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("artifact archive {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not artifact {id}: its payload hashes to {actual}", .path.display())]
    Mismatch {
        path: PathBuf,
        id: String,
        actual: String,
    },
    #[error("the bytes given as artifact {id} are not an artifact envelope: {problem}")]
    NotAnArtifact { id: String, problem: String },
    #[error(
        "no artifact with id {prefix}… is kept in {}: it was accepted before this agent \
         kept artifacts, or the archive was pruned",
        .dir.display()
    )]
    Unknown { dir: PathBuf, prefix: String },
    #[error("artifact id prefix {prefix:?} is ambiguous in {}", .dir.display())]
    Ambiguous { dir: PathBuf, prefix: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_owned();
    move |source| ArchiveError::Io { path, source }
}

fn not_an_artifact(id: &str) -> impl FnOnce(crate::authz::artifact::ArtifactError) -> ArchiveError {
    let id = id.to_owned();
    move |e| ArchiveError::NotAnArtifact {
        id,
        problem: e.to_string(),
    }
}

/// The artifacts kept beside the log in `dir`.
#[derive(Clone, Debug)]
pub struct Archive {
    dir: PathBuf,
}

impl Archive {
    #[must_use]
    pub fn new(log_dir: &Path) -> Self {
        Self {
            dir: log_dir.join(ARTIFACTS_DIR),
        }
    }

    /// Keeps `bytes` as artifact `id`, once: a second call for the same id does nothing.
    pub fn keep(&self, id: &ArtifactId, bytes: &[u8]) -> Result<(), ArchiveError> {
        let path = self.dir.join(id.to_string());
        if path.exists() {
            return Ok(());
        }
        let envelope = Envelope::parse(bytes).map_err(not_an_artifact(&id.to_string()))?;
        if envelope.id() != *id {
            return Err(ArchiveError::Mismatch {
                path,
                id: id.to_string(),
                actual: envelope.id().to_string(),
            });
        }
        crate::fsutil::create_dir_durably(&self.dir, DIR_MODE).map_err(io(&self.dir))?;
        crate::fsutil::replace_atomically(&path, bytes, FILE_MODE).map_err(io(&path))
    }

    /// The artifact whose id starts with `prefix` (hex; decisions cite 16 bytes of it),
    /// checked against its name.
    pub fn find(&self, prefix: &str) -> Result<(ArtifactId, Vec<u8>), ArchiveError> {
        let unknown = || ArchiveError::Unknown {
            dir: self.dir.clone(),
            prefix: prefix.to_owned(),
        };
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 128
            && prefix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !prefix_ok {
            return Err(unknown());
        }
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut found = None;
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == 128 && name.starts_with(prefix) {
                if found.is_some() {
                    return Err(ArchiveError::Ambiguous {
                        dir: self.dir.clone(),
                        prefix: prefix.to_owned(),
                    });
                }
                found = Some(entry.path());
            }
        }
        let path = found.ok_or_else(unknown)?;
        let bytes = crate::authz::verify::read_artifact(&path).map_err(not_an_artifact(prefix))?;
        let envelope = Envelope::parse(&bytes).map_err(not_an_artifact(prefix))?;
        let id = envelope.id();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if id.to_string() != name {
            return Err(ArchiveError::Mismatch {
                path: path.clone(),
                id: name.to_owned(),
                actual: id.to_string(),
            });
        }
        Ok((id, bytes))
    }
}
