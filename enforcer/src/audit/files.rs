//! How log files are named and found: `audit-000001.jsonl`, `audit-000002.jsonl`, ...
//!
//! Numbers, not timestamps, so the order of files is the order of the chain and a
//! missing number is visible on its own.

use std::path::{Path, PathBuf};

use super::AuditError;

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// Name of log file number `n`.
#[must_use]
pub fn name(n: u64) -> String {
    format!("{PREFIX}{n:06}{SUFFIX}")
}

/// The number in a log file's name, if it is one.
#[must_use]
pub fn number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFile {
    pub number: u64,
    pub path: PathBuf,
}

impl LogFile {
    /// The file's name, as records and reports refer to it.
    #[must_use]
    pub fn name(&self) -> String {
        name(self.number)
    }
}

/// The log files in `dir`, in chain order. Other files (the lock, an operator's notes)
/// are ignored. A missing directory is an empty log.
pub fn list(dir: &Path) -> Result<Vec<LogFile>, AuditError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(AuditError::io(dir))?;
        if let Some(number) = entry.file_name().to_str().and_then(number) {
            files.push(LogFile {
                number,
                path: entry.path(),
            });
        }
    }
    files.sort_by_key(|f| f.number);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(name(7), "audit-000007.jsonl");
        assert_eq!(number(&name(7)), Some(7));
        assert_eq!(number("audit-1234567.jsonl"), Some(1_234_567));
        for stranger in [
            "audit-.jsonl",
            "audit-1.json",
            "audit--1.jsonl",
            "lock",
            "audit-1a.jsonl",
        ] {
            assert_eq!(number(stranger), None, "{stranger}");
        }
    }
}
