//! Rewriting a log as a forger would, for the crate's tests and the VM scenarios (feature
//! `testkit`): records changed, the chain re-linked and every hash recomputed. These
//! panic on anything unexpected, as test code does.

use std::path::Path;

use super::chain::{self, HashKind, Unsealed};
use super::record::Record;

/// Rewrites the stored lines `lines` (without newlines) from the first on: `prev` is
/// re-linked, then `edit` may change any record, then the hash is recomputed, so the chain
/// holds again, each record hashed as it was. What it cannot redo without the host key is
/// the signatures `edit` leaves alone.
pub fn rewrite(lines: &mut [String], edit: impl FnMut(&mut Record)) {
    rewrite_as(lines, None, edit);
}

/// [`rewrite`], every record hashed as `kind` when it is given (an older format's log).
pub fn rewrite_as(lines: &mut [String], kind: Option<HashKind>, mut edit: impl FnMut(&mut Record)) {
    let mut head = None;
    let mut sealed = Vec::new();
    for line in lines {
        let unsealed = Unsealed::new(line.as_bytes()).expect("a stored line");
        let kind = kind.unwrap_or_else(|| unsealed.stated.kind());
        let mut record = unsealed.record().expect("a record");
        record.prev = head.unwrap_or_else(|| kind.genesis());
        edit(&mut record);
        head = Some(chain::seal(&record, kind, &mut sealed).expect("seal"));
        *line = String::from_utf8(
            sealed
                .strip_suffix(b"\n")
                .expect("sealed lines end")
                .to_vec(),
        )
        .expect("UTF-8");
    }
}

/// `line` with its hash recomputed (of the kind it states) and nothing else: a forger
/// without the host key covering an edit.
pub fn reseal(line: &str) -> String {
    reseal_with(line, None)
}

/// [`reseal`], hashing as `kind`.
pub fn reseal_as(line: &str, kind: HashKind) -> String {
    reseal_with(line, Some(kind))
}

fn reseal_with(line: &str, kind: Option<HashKind>) -> String {
    let unsealed = Unsealed::new(line.as_bytes()).expect("a stored line");
    let hash = kind
        .unwrap_or_else(|| unsealed.stated.kind())
        .hash(&unsealed.canonical);
    let mut text = String::from_utf8(unsealed.canonical).expect("UTF-8");
    text.pop();
    format!("{text},\"hash\":\"{hash}\"}}")
}

/// `line`'s `prev` member, quotes included.
pub fn prev_member(line: &str) -> &str {
    let start = line.find("\"prev\":\"").expect("a prev member");
    let len = line[start + 8..].find('"').expect("its end") + 9;
    &line[start..start + len]
}

/// [`rewrite`] of a whole log file.
pub fn rewrite_file(path: &Path, edit: impl FnMut(&mut Record)) {
    rewrite_file_as(path, None, edit);
}

/// [`rewrite_as`] of a whole log file.
pub fn rewrite_file_as(path: &Path, kind: Option<HashKind>, edit: impl FnMut(&mut Record)) {
    let text = std::fs::read_to_string(path).expect("read the log file");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    rewrite_as(&mut lines, kind, edit);
    std::fs::write(path, lines.join("\n") + "\n").expect("write the log file");
}

/// Re-signs a checkpoint's chain signature with `key` after `edit` changed it or what
/// comes before it (a forger holding the host key).
pub fn resign(record: &mut Record, key: &crate::authz::trust::SigningKey) {
    if let super::Body::Checkpoint(checkpoint) = &mut record.body {
        checkpoint.signature = None;
    } else {
        return;
    }
    let bytes = serde_json::to_vec(&*record).expect("encode");
    let signature = chain::sign_checkpoint(key, &bytes);
    if let super::Body::Checkpoint(checkpoint) = &mut record.body {
        checkpoint.signature = Some(signature);
    }
}

/// Forges another history of the log file at `path` as a holder of the host key `key`
/// would: its first record changed, every checkpoint re-signed, and the tree heads left
/// out so that the agent signs the forged tree afresh on its next start (the tiles must
/// go too).
pub fn forge_history(path: &Path, key: &crate::authz::trust::SigningKey) {
    rewrite_file(path, |record| {
        if let super::Body::Start(start) = &mut record.body
            && record.seq == 0
        {
            start.previous = super::record::PreviousEnd::Clean;
        }
        if let super::Body::Checkpoint(checkpoint) = &mut record.body {
            checkpoint.note = None;
        }
        resign(record, key);
    });
}
