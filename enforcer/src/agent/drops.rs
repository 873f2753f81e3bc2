//! How many of the kernel's dropped decisions the audit log already accounts for, kept
//! across agent restarts so that decisions dropped while no agent was reading still
//! become a gap record.
//!
//! The kernel counts drops per map since the map was created. The ledger names the map
//! (boot id and map id) and the count the log has accounted for; a ledger about another
//! map (a reboot, a fresh load) means nothing of the current map's count is accounted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "kernel-drops.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    boot_id: String,
    map_id: u32,
    accounted: u64,
}

/// The ledger file in the audit directory.
#[derive(Debug)]
pub(super) struct DropLedger {
    path: PathBuf,
    boot_id: String,
    map_id: u32,
}

impl DropLedger {
    pub(super) fn new(audit_dir: &Path, boot_id: String, map_id: u32) -> Self {
        Self {
            path: audit_dir.join(FILE),
            boot_id,
            map_id,
        }
    }

    /// How much of this map's count the log accounts for: what the ledger says when it is
    /// about this map, else 0. An unreadable ledger counts as 0, so a doubt becomes a gap
    /// record rather than silence.
    pub(super) fn accounted(&self) -> u64 {
        std::fs::read(&self.path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok())
            .filter(|e| e.boot_id == self.boot_id && e.map_id == self.map_id)
            .map_or(0, |e| e.accounted)
    }

    /// Records that the log accounts for `accounted` drops of this map (write, sync,
    /// rename: a crash leaves the old ledger or the new one).
    pub(super) fn record(&self, accounted: u64) -> std::io::Result<()> {
        let entry = Entry {
            boot_id: self.boot_id.clone(),
            map_id: self.map_id,
            accounted,
        };
        let bytes = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        crate::fsutil::replace_atomically(&self.path, &bytes, 0o640)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_carry_over_only_for_the_same_map() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = DropLedger::new(dir.path(), "boot-a".into(), 7);
        assert_eq!(ledger.accounted(), 0, "no ledger yet");
        ledger.record(42).expect("record");
        assert_eq!(ledger.accounted(), 42);
        assert_eq!(
            DropLedger::new(dir.path(), "boot-a".into(), 8).accounted(),
            0,
            "another map"
        );
        assert_eq!(
            DropLedger::new(dir.path(), "boot-b".into(), 7).accounted(),
            0,
            "another boot"
        );
        std::fs::write(dir.path().join(FILE), b"{not json").expect("write");
        assert_eq!(
            ledger.accounted(),
            0,
            "an unreadable ledger accounts for nothing"
        );
    }
}
