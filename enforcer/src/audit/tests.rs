//! Tamper detection, rotation, resumption and queries, end to end through real files.

use std::path::{Path, PathBuf};

use enforcer_common::{EVENT_PATH_LEN, ExecEvent, decision, hook, reason};
use proptest::prelude::*;

use super::chain::{HashKind, Unsealed};
use super::query::{self, Filter, Step};
use super::record::{Body, PreviousEnd};
use super::testkit::{prev_member, reseal, reseal_as, resign, rewrite, rewrite_file_as};
use super::verify::{ProblemKind, Report, verify_dir};
use super::writer::{AuditLog, AuditOptions};
use super::{AuditError, DecisionLabels, files};
use crate::authz::trust::SigningKey;

const BOOT: &str = "0f0e0d0c-0b0a-4908-8706-050403020100";

fn key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

fn opts() -> AuditOptions {
    AuditOptions {
        checkpoint_every: 5,
        boot_id: Some(BOOT.into()),
        ..AuditOptions::default()
    }
}

fn event(exec_id: u64, parent_exec_id: u64, verdict: u32) -> ExecEvent {
    let mut path = [0u8; EVENT_PATH_LEN];
    let name = format!("/usr/bin/tool-{exec_id}");
    path[..name.len()].copy_from_slice(name.as_bytes());
    let granted = verdict == decision::ALLOW;
    ExecEvent {
        boot_ns: 1_000_000 + exec_id,
        cgroup_id: 4242,
        scope_id: 4241,
        auth_serial: if granted { 17 } else { 0 },
        exec_id,
        parent_exec_id,
        pid: 300 + u32::try_from(exec_id).expect("small"),
        tgid: 200 + u32::try_from(exec_id).expect("small"),
        ppid: 100,
        uid: 1000,
        gid: 1001,
        decision: verdict,
        reason: if granted {
            reason::GRANTED
        } else {
            reason::NOT_GRANTED
        },
        hook: hook::BPRM_CHECK_SECURITY,
        digest: [0xab; 32],
        auth_id: if granted { [0xcd; 16] } else { [0; 16] },
        detail: 0,
        path,
    }
}

const LABELS: DecisionLabels<'static> = DecisionLabels {
    scope: Some("/governed/app"),
    grant_name: Some("tool"),
};

/// A closed log of `decisions` decisions (every third denied) and one gap.
fn write_log(dir: &Path, decisions: u64, opts: AuditOptions) {
    let mut log = AuditLog::open(dir, Some(key()), opts).expect("open");
    append(&mut log, 1, decisions);
    log.close().expect("close");
}

fn append(log: &mut AuditLog, from: u64, count: u64) {
    for exec in from..from + count {
        let verdict = if exec % 3 == 0 {
            decision::DENY
        } else {
            decision::ALLOW
        };
        let labels = if exec % 2 == 0 {
            LABELS
        } else {
            DecisionLabels::default()
        };
        log.append_decision(&event(exec, exec - 1, verdict), &labels)
            .expect("append");
        if exec == from + 2 {
            log.append_gap(3).expect("gap");
        }
    }
}

/// A closed log of `decisions` decisions in one file: its directory and that file.
fn closed_log(decisions: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), decisions, opts());
    let path = first_file(dir.path());
    (dir, path)
}

fn verify(dir: &Path) -> Report {
    verify_dir(dir, Some(&key().public_key())).expect("verify")
}

fn first_file(dir: &Path) -> PathBuf {
    dir.join(files::name(1))
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}

/// The index of the first of `lines` that contains `needle`.
#[track_caller]
fn first_line_with(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line holds {needle}"))
}

#[track_caller]
fn assert_problem(report: &Report, file: &Path, line: usize) -> ProblemKind {
    let problem = report
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("not detected: {report:?}"));
    assert_eq!(
        (problem.file.as_path(), problem.line),
        (file, line),
        "{problem}"
    );
    problem.kind.clone()
}

#[test]
fn an_untouched_log_verifies_and_every_record_is_covered() {
    let (dir, _) = closed_log(12);
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.decisions, 12);
    assert_eq!((report.gaps, report.lost), (1, 3));
    assert!(report.checkpoints.verified >= 3, "{report:?}");
    assert_eq!(report.uncovered(), 0);
    assert!(report.ends_with_shutdown);
    assert_eq!(report.head.map(|(seq, _)| seq + 1), Some(report.records));
}

/// The summary counts every kind of record it finds: the demo once printed
/// "0 authorization change(s)" for a log that held six.
#[test]
fn the_summary_counts_authorization_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), Some(key()), opts()).expect("open");
    for change in ["in-force", "accepted", "withdrawn", "break-glass"] {
        log.append_authorization(super::AuthorizationChange {
            change: change.into(),
            artifact: "bundle".into(),
            id: "ab".repeat(64),
            issuer: "security-team".into(),
            bundle_id: Some("tools".into()),
            serial: Some(1),
            scopes: vec!["/governed/app".into()],
            not_after: None,
            pids: Vec::new(),
            detail: None,
            boot_ns: None,
        })
        .expect("append");
    }
    append(&mut log, 1, 2);
    log.close().expect("close");
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.decisions, report.authorizations), (2, 4));
}

/// Every record kind's every field, altered in place, is reported at that record.
#[test]
fn altering_any_field_of_any_record_is_detected_at_that_record() {
    let (dir, path) = closed_log(6);
    let original = read_lines(&path);
    let mut fields_altered = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for (index, line) in original.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).expect("json");
        let object = value.as_object().expect("object");
        kinds.insert(object["kind"].as_str().expect("kind").to_owned());
        for (field, value) in object {
            let altered = alter_field(line, field, value);
            assert_ne!(&altered, line, "{field}");
            let mut lines = original.clone();
            lines[index] = altered;
            write_lines(&path, &lines);
            let kind = assert_problem(&verify(dir.path()), &path, index + 1);
            assert!(
                matches!(kind, ProblemKind::Altered { .. }),
                "{field}: {kind}"
            );
            fields_altered += 1;
        }
    }
    assert_eq!(kinds.len(), 4, "every record kind was tried: {kinds:?}");
    assert!(fields_altered > 100, "{fields_altered}");
}

/// Replaces one member's value in the line's text, keeping the rest byte for byte.
fn alter_field(line: &str, field: &str, value: &serde_json::Value) -> String {
    use serde_json::Value;
    let altered = match value {
        Value::Number(n) => Value::from(n.as_u64().expect("u64") + 1),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let first = if s.starts_with('0') { "1" } else { "0" };
            Value::from(format!("{first}{}", &s[1..]))
        }
        Value::String(s) => Value::from(format!("{s}x")),
        Value::Null => Value::from("x"),
        other => panic!("unexpected value {other}"),
    };
    let old = format!("\"{field}\":{value}");
    let new = format!("\"{field}\":{altered}");
    assert_eq!(line.matches(&old).count(), 1, "{old} in {line}");
    line.replacen(&old, &new, 1)
}

#[test]
fn deleting_any_record_is_detected_where_it_was() {
    let (dir, path) = closed_log(6);
    let original = read_lines(&path);
    // Every record but the last: cutting the last one off is a truncation (tested below).
    for index in 0..original.len() - 1 {
        let mut lines = original.clone();
        lines.remove(index);
        write_lines(&path, &lines);
        let kind = assert_problem(&verify(dir.path()), &path, index + 1);
        let seq = u64::try_from(index).expect("small");
        assert_eq!(
            kind,
            ProblemKind::Removed {
                first_missing: seq,
                next_present: seq + 1
            }
        );
    }
}

#[test]
fn swapping_two_records_is_detected_as_reordering() {
    let (dir, path) = closed_log(6);
    let original = read_lines(&path);
    for (a, b) in [
        (0, 1),
        (3, 4),
        (2, 9),
        (original.len() - 2, original.len() - 1),
    ] {
        let mut lines = original.clone();
        lines.swap(a, b);
        write_lines(&path, &lines);
        let kind = assert_problem(&verify(dir.path()), &path, a + 1);
        let expected_at = Some(format!("{}:{}", path.display(), b + 1));
        let (expected, found) = (
            u64::try_from(a).expect("small"),
            u64::try_from(b).expect("small"),
        );
        assert_eq!(
            kind,
            ProblemKind::Reordered {
                expected,
                found,
                expected_at
            },
            "{a}<->{b}"
        );
    }
}

#[test]
fn a_file_cut_mid_line_is_detected() {
    let (dir, path) = closed_log(6);
    let bytes = std::fs::read(&path).expect("read");
    let lines = read_lines(&path).len();
    for cut in [bytes.len() - 1, bytes.len() - 40, bytes.len() / 2] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let report = verify(dir.path());
        let problem = report.problem.as_ref().expect("cut off");
        assert!(
            matches!(problem.kind, ProblemKind::CutOff { .. }),
            "{problem}"
        );
        assert!(problem.line <= lines, "{problem}");
    }
}

#[test]
fn a_cut_at_a_line_boundary_shows_as_uncovered_or_unclean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), Some(key()), opts()).expect("open");
    append(&mut log, 1, 7);
    log.flush().expect("flush");
    drop(log);
    let path = first_file(dir.path());
    let original = read_lines(&path);

    // Records after the last checkpoint, cut off: the chain holds, but they are not
    // covered by any signature, and the log does not end with a shutdown.
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.uncovered(), 3, "{report:?}");
    write_lines(&path, &original[..original.len() - 2]);
    let report = verify(dir.path());
    assert!(report.is_intact() && report.uncovered() == 1 && !report.ends_with_shutdown);

    // A closed log cut just before its shutdown checkpoint.
    let (dir, path) = closed_log(7);
    let original = read_lines(&path);
    write_lines(&path, &original[..original.len() - 1]);
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert!(
        report.uncovered() > 0 && !report.ends_with_shutdown,
        "{report:?}"
    );
}

/// Recomputes `prev` and `hash` from line `from` on, as someone without the host key
/// rewriting the log would.
fn rechain(lines: &mut [String], from: usize) {
    let mut head = None;
    for (index, line) in lines.iter_mut().enumerate() {
        let stated = Unsealed::new(line.as_bytes()).expect("unseal").stated;
        if index >= from {
            let prev = head.unwrap_or_else(|| stated.kind().genesis());
            let relinked = line.replacen(prev_member(line), &format!("\"prev\":\"{prev}\""), 1);
            *line = reseal(&relinked);
        }
        head = Some(Unsealed::new(line.as_bytes()).expect("unseal").stated);
    }
}

#[test]
fn a_rewritten_chain_is_caught_by_the_checkpoint_signatures() {
    let (dir, path) = closed_log(6);
    let mut lines = read_lines(&path);
    let target = first_line_with(&lines, "\"decision\":\"deny\"");
    lines[target] = lines[target].replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
    rechain(&mut lines, target);
    write_lines(&path, &lines);

    // Without the key, the chain holds, but the next tree head no longer matches the
    // records (a forger could rewrite the unsigned note too; only the key stops that).
    let next_checkpoint = (target..lines.len())
        .find(|&i| lines[i].contains("\"kind\":\"checkpoint\""))
        .expect("cp");
    let unchecked = verify_dir(dir.path(), None).expect("verify");
    let kind = assert_problem(&unchecked, &path, next_checkpoint + 1);
    assert!(matches!(kind, ProblemKind::TreeHead { .. }), "{kind}");
    assert_eq!(unchecked.checkpoints.verified, 0);
    let kind = assert_problem(&verify(dir.path()), &path, next_checkpoint + 1);
    assert!(matches!(kind, ProblemKind::Signature { .. }), "{kind}");
}

#[test]
fn forged_and_foreign_checkpoint_signatures_are_refused() {
    let (dir, path) = closed_log(3);
    let checkpoint = 2; // line 2: the start checkpoint

    let other = SigningKey::from_seed(&[8; 32]);
    let report = verify_dir(dir.path(), Some(&other.public_key())).expect("verify");
    let kind = assert_problem(&report, &path, checkpoint);
    assert!(
        kind.to_string().contains("not by the trusted host key"),
        "{kind}"
    );

    // A signature by another key over the same bytes, under the right key id.
    let mut lines = read_lines(&path);
    let line = &lines[checkpoint - 1];
    let start = line.find("\"signature\":\"").expect("signature") + 13;
    let end = start + line[start..].find('"').expect("end");
    let unsigned = format!("{}}}", &line[..start - 13 - 1]);
    let forged = super::chain::sign_checkpoint(&other, unsigned.as_bytes());
    lines[checkpoint - 1] = format!("{}{forged}{}", &line[..start], &line[end..]);
    rechain(&mut lines, checkpoint - 1);
    write_lines(&path, &lines);
    let kind = assert_problem(&verify(dir.path()), &path, checkpoint);
    assert!(kind.to_string().contains("does not verify"), "{kind}");

    // Stripping signatures does not help either.
    let mut lines = read_lines(&path);
    // A placeholder of the line's own kind: `rechain` computes the real one.
    let zeros = Unsealed::new(lines[checkpoint - 1].as_bytes())
        .expect("unseal")
        .stated
        .kind()
        .genesis();
    lines[checkpoint - 1] = format!(
        "{},\"hash\":\"{zeros}\"}}",
        &lines[checkpoint - 1][..start - 13 - 1]
    );
    rechain(&mut lines, checkpoint - 1);
    write_lines(&path, &lines);
    let kind = assert_problem(&verify(dir.path()), &path, checkpoint);
    assert!(kind.to_string().contains("not signed"), "{kind}");
}

fn small_files() -> AuditOptions {
    AuditOptions {
        max_file_bytes: 3000,
        ..opts()
    }
}

#[test]
fn rotation_keeps_one_chain_and_a_missing_file_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 30, small_files());
    let listed = files::list(dir.path()).expect("list");
    assert!(listed.len() >= 4, "{listed:?}");
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.files, report.decisions), (listed.len(), 30));
    let first_of_second = read_lines(&listed[1].path).remove(0);
    let last_of_first = read_lines(&listed[0].path).pop().expect("line");
    let link = Unsealed::new(last_of_first.as_bytes())
        .expect("unseal")
        .stated
        .to_string();
    assert!(
        first_of_second.contains(&format!("\"prev\":\"{link}\"")),
        "chain crosses files"
    );
    assert!(last_of_first.contains(&format!("\"next_file\":\"{}\"", listed[1].name())));

    let aside = dir.path().join("aside");
    std::fs::rename(&listed[1].path, &aside).expect("remove middle");
    let kind = assert_problem(&verify(dir.path()), &listed[2].path, 1);
    assert_eq!(
        kind,
        ProblemKind::MissingFile {
            name: listed[1].name()
        }
    );
    std::fs::rename(&aside, &listed[1].path).expect("restore");

    let newest = listed.last().expect("newest");
    std::fs::remove_file(&newest.path).expect("remove newest");
    let before = &listed[listed.len() - 2];
    let kind = assert_problem(
        &verify(dir.path()),
        &before.path,
        read_lines(&before.path).len(),
    );
    assert_eq!(
        kind,
        ProblemKind::MissingFile {
            name: newest.name()
        }
    );
}

#[test]
fn swapped_files_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 30, small_files());
    let listed = files::list(dir.path()).expect("list");
    let aside = dir.path().join("aside");
    std::fs::rename(&listed[1].path, &aside).expect("mv");
    std::fs::rename(&listed[2].path, &listed[1].path).expect("mv");
    std::fs::rename(&aside, &listed[2].path).expect("mv");
    let kind = assert_problem(&verify(dir.path()), &listed[1].path, 1);
    assert!(matches!(kind, ProblemKind::Reordered { .. }), "{kind}");
}

#[test]
fn reopening_resumes_the_chain_and_records_how_the_log_ended() {
    let (dir, _) = closed_log(4);
    // A clean second run, then one that crashes (dropped without close).
    let mut log = AuditLog::open(dir.path(), Some(key()), opts()).expect("reopen");
    append(&mut log, 5, 4);
    log.close().expect("close");
    let mut log = AuditLog::open(dir.path(), Some(key()), opts()).expect("reopen");
    append(&mut log, 9, 2);
    let crash_seq = log.next_seq();
    drop(log);
    let log = AuditLog::open(dir.path(), Some(key()), opts()).expect("reopen after crash");
    log.close().expect("close");

    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.decisions, 10);
    assert_eq!(report.unclean_restarts, vec![crash_seq]);
    let mut previous = Vec::new();
    query::read_dir(dir.path(), |e| {
        if let Body::Start(s) = e.record.body {
            previous.push(s.previous);
        }
    })
    .expect("read");
    use PreviousEnd::{Clean, None as Fresh, Unclean};
    assert_eq!(previous, [Fresh, Clean, Clean, Unclean]);
}

#[test]
fn a_partial_last_line_is_acknowledged_in_a_new_file_on_reopen() {
    let (dir, path) = closed_log(4);
    let mut bytes = std::fs::read(&path).expect("read");
    let offset = bytes.len() as u64;
    bytes.extend_from_slice(b"{\"seq\":99,\"prev\":\"00");
    std::fs::write(&path, &bytes).expect("write");
    let report = verify(dir.path());
    assert!(matches!(
        report.problem.map(|p| p.kind),
        Some(ProblemKind::CutOff { .. })
    ));

    let log = AuditLog::open(dir.path(), Some(key()), opts()).expect("reopen");
    assert_eq!(log.current_file(), dir.path().join(files::name(2)));
    log.close().expect("close");
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.recovered.len(), 1);
    assert_eq!(
        (report.recovered[0].offset, report.recovered[0].bytes),
        (offset, 20)
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "the damaged file is left as is"
    );
}

#[test]
fn a_damaged_tail_is_refused_on_open() {
    let (dir, path) = closed_log(4);
    let mut lines = read_lines(&path);
    lines[3] = lines[3].replacen("\"pid\":", "\"pid\":9", 1);
    write_lines(&path, &lines);
    match AuditLog::open(dir.path(), Some(key()), opts()) {
        Err(AuditError::BrokenTail { line: 4, .. }) => {}
        other => panic!("expected a broken tail at line 4, got {other:?}"),
    }
}

#[test]
fn a_second_writer_is_kept_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = AuditLog::open(dir.path(), None, opts()).expect("open");
    match AuditLog::open(dir.path(), None, opts()) {
        Err(AuditError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn without_a_host_key_checkpoints_are_unsigned_and_trust_refuses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), None, opts()).expect("open");
    append(&mut log, 1, 6);
    log.close().expect("close");
    let report = verify_dir(dir.path(), None).expect("verify");
    assert!(report.is_intact());
    assert!(report.checkpoints.unsigned >= 3 && report.checkpoints.unchecked == 0);
    let kind = assert_problem(&verify(dir.path()), &first_file(dir.path()), 2);
    assert!(kind.to_string().contains("signed by no key"), "{kind}");
}

#[test]
fn checkpoints_come_by_time_as_well_as_by_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = AuditOptions {
        checkpoint_every: 1000,
        checkpoint_interval: std::time::Duration::ZERO,
        ..opts()
    };
    let mut log = AuditLog::open(dir.path(), Some(key()), opts).expect("open");
    append(&mut log, 1, 3);
    log.tick().expect("tick");
    drop(log);
    let report = verify(dir.path());
    assert_eq!(report.uncovered(), 0, "{report:?}");
    assert_eq!(
        report.checkpoints.verified,
        1 + 4,
        "start, then one per record and the gap"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any change of bytes (replaced, inserted or deleted) is reported as a problem.
    #[test]
    fn no_byte_change_goes_unnoticed(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..4)
    ) {
        let (dir, path) = closed_log(5);
        let original = std::fs::read(&path).expect("read");
        let mut bytes = original.clone();
        for (at, op, byte) in edits {
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        prop_assume!(bytes != original);
        std::fs::write(&path, &bytes).expect("write");
        let report = verify(dir.path());
        prop_assert!(!report.is_intact(), "undetected: {:?}", String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn lineage_follows_parents_within_one_boot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), None, opts()).expect("open");
    // 1 <- 2 <- 3 <- 5 (4 was lost), and 6 <- 7 beside them.
    for (exec, parent) in [(1, 0), (2, 1), (3, 2), (5, 4), (6, 0), (7, 6)] {
        log.append_decision(&event(exec, parent, decision::ALLOW), &LABELS)
            .expect("append");
    }
    // A mapping made by exec 3's image: not an exec, so not a step.
    let mapping = ExecEvent {
        exec_id: 0,
        hook: hook::MMAP_FILE,
        ..event(0, 3, decision::ALLOW)
    };
    log.append_decision(&mapping, &LABELS).expect("append");
    drop(log);
    // The same exec ids on another boot must not mix in.
    let other = AuditOptions {
        boot_id: Some("other-boot".into()),
        ..opts()
    };
    let mut log = AuditLog::open(dir.path(), None, other).expect("open");
    log.append_decision(&event(3, 9, decision::DENY), &LABELS)
        .expect("append");
    drop(log);

    let lineage = query::lineage(dir.path(), 5, Some(BOOT)).expect("lineage");
    let ids: Vec<_> = lineage
        .steps
        .iter()
        .map(|s| match s {
            Step::Logged { decision, .. } => (decision.exec_id, true),
            Step::Missing { exec_id } => (*exec_id, false),
        })
        .collect();
    assert_eq!(ids, [(5, true), (4, false)]);

    let lineage = query::lineage(dir.path(), 3, Some(BOOT)).expect("lineage");
    let Step::Logged { decision, .. } = &lineage.steps[2] else {
        panic!("{lineage:?}")
    };
    assert_eq!((decision.exec_id, decision.auth_serial), (1, 17));
    assert_eq!(decision.auth_id.as_deref(), Some("cd".repeat(16).as_str()));
    assert_eq!(lineage.steps.len(), 3);

    // Without a boot: the latest boot that has the exec, naming the others.
    let lineage = query::lineage(dir.path(), 3, None).expect("lineage");
    assert_eq!(lineage.boot_id, "other-boot");
    assert_eq!(lineage.other_boots, [BOOT]);
    assert_eq!(lineage.steps.len(), 2, "9 is not logged: {lineage:?}");

    assert!(
        matches!(
            query::lineage(dir.path(), 0, Some(BOOT)),
            Err(query::QueryError::ExecNotFound { .. })
        ),
        "exec id 0 is no exec"
    );
    assert!(matches!(
        query::lineage(dir.path(), 99, None),
        Err(query::QueryError::ExecNotFound { exec_id: 99, .. })
    ));
}

#[test]
fn family_lists_descendants_breadth_first_within_the_boot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), None, opts()).expect("open");
    // 1 <- 2 <- {3, 4}; 4 <- 6; 5 beside them; 8 names the lost 7 as parent.
    for (exec, parent) in [(1, 0), (2, 1), (3, 2), (4, 2), (5, 0), (6, 4), (8, 7)] {
        log.append_decision(&event(exec, parent, decision::ALLOW), &LABELS)
            .expect("append");
    }
    drop(log);
    let other = AuditOptions {
        boot_id: Some("other-boot".into()),
        ..opts()
    };
    let mut log = AuditLog::open(dir.path(), None, other).expect("open");
    log.append_decision(&event(9, 2, decision::DENY), &LABELS)
        .expect("append");
    drop(log);

    let ids = |steps: &[Step]| -> Vec<u64> {
        steps
            .iter()
            .map(|s| match s {
                Step::Logged { decision, .. } => decision.exec_id,
                Step::Missing { exec_id } => *exec_id,
            })
            .collect()
    };
    let family = query::family(dir.path(), 2, BOOT, 100).expect("family");
    assert_eq!(ids(&family.lineage.steps), [2, 1]);
    assert_eq!(ids(&family.descendants), [3, 4, 6], "9 is another boot's");
    assert!(!family.descendants_truncated);
    let cut = query::family(dir.path(), 1, BOOT, 2).expect("family");
    assert_eq!(ids(&cut.descendants), [2, 3]);
    assert!(cut.descendants_truncated);
    let leaf = query::family(dir.path(), 8, BOOT, 100).expect("family");
    assert_eq!(ids(&leaf.lineage.steps), [8, 7]);
    assert!(leaf.descendants.is_empty());
    assert!(matches!(
        query::family(dir.path(), 9, BOOT, 100),
        Err(query::QueryError::ExecNotFound { exec_id: 9, .. })
    ));
}

#[test]
fn pages_of_the_newest_records_cover_the_log_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 30, small_files());
    assert!(files::list(dir.path()).expect("list").len() >= 4);
    let is_decision = |r: &super::Record| matches!(r.body, Body::Decision(_));
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let (page, more) =
            query::newest_matching(dir.path(), before, 7, is_decision).expect("page");
        assert!(page.len() <= 7);
        seen.extend(page.iter().map(|e| e.record.seq));
        if !more {
            break;
        }
        before = page.last().map(|e| e.record.seq);
    }
    assert_eq!(seen.len(), 30, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    let (none, more) = query::newest_matching(dir.path(), Some(0), 7, is_decision).expect("page");
    assert!(none.is_empty() && !more);
}

#[test]
fn show_filters_by_denial_scope_and_time() {
    let (dir, _) = closed_log(6);
    let select = |filter: &Filter| {
        let mut kinds = Vec::new();
        query::read_dir(dir.path(), |e| {
            if filter.matches(&e.record) {
                kinds.push(match &e.record.body {
                    Body::Decision(d) => d.exec_id.to_string(),
                    other => other.kind().to_owned(),
                });
            }
        })
        .expect("read");
        kinds
    };
    assert_eq!(
        select(&Filter {
            denied: true,
            ..Filter::default()
        }),
        ["3", "gap", "6"]
    );
    let scoped = Filter {
        scope: Some("/governed/app".into()),
        ..Filter::default()
    };
    assert_eq!(select(&scoped), ["2", "gap", "4", "6"]);
    assert_eq!(
        select(&Filter {
            scope: Some("4241".into()),
            ..Filter::default()
        })
        .len(),
        7
    );
    let now = std::time::SystemTime::now();
    let future = Filter {
        since: Some(now + std::time::Duration::from_secs(60)),
        ..Filter::default()
    };
    assert!(select(&future).is_empty());
    let all = select(&Filter {
        all: true,
        ..Filter::default()
    });
    assert!(all.contains(&"start".to_owned()) && all.contains(&"checkpoint".to_owned()));

    let hour_ago = query::parse_since("1h", now).expect("age");
    assert_eq!(now.duration_since(hour_ago).expect("past").as_secs(), 3600);
    assert!(query::parse_since("2025-01-31T12:00:00Z", now).is_ok());
    assert!(query::parse_since("yesterday-ish", now).is_err());
}

#[test]
fn following_sees_new_records_across_rotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = AuditLog::open(dir.path(), Some(key()), small_files()).expect("open");
    append(&mut log, 1, 2);
    log.flush().expect("flush");
    let mut follower = query::Follower::at_end(dir.path()).expect("follow");
    let mut seen = Vec::new();
    follower.poll(|e| seen.push(e.record.seq)).expect("poll");
    assert!(seen.is_empty(), "starts at the end");

    append(&mut log, 3, 20);
    log.flush().expect("flush");
    follower.poll(|e| seen.push(e.record.seq)).expect("poll");
    assert!(files::list(dir.path()).expect("list").len() > 2);
    let expected: Vec<u64> = (seen[0]..log.next_seq()).collect();
    assert_eq!(seen, expected, "every record once, in order");

    let last = query::last_records(dir.path(), 3).expect("tail");
    let seqs: Vec<_> = last.iter().map(|e| e.record.seq).collect();
    let next = log.next_seq();
    assert_eq!(seqs, [next - 3, next - 2, next - 1]);
}

/// `cargo test --release -p enforcer --lib audit::tests::throughput -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check: run in release"]
fn throughput() {
    // AUDIT_DEMO_DIR keeps the log (and DIR.pub) for trying the CLI on it.
    let temp = tempfile::tempdir().expect("tempdir");
    let keep = std::env::var_os("AUDIT_DEMO_DIR").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| temp.path().to_owned());
    let opts = AuditOptions {
        checkpoint_every: 10_000,
        ..opts()
    };
    let mut log = AuditLog::open(&dir, Some(key()), opts).expect("open");
    let n = 200_000;
    let start = std::time::Instant::now();
    append(&mut log, 1, n);
    log.close().expect("close");
    let elapsed = start.elapsed();
    #[allow(clippy::cast_precision_loss, reason = "a rate for a person")]
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{n} decisions in {elapsed:?}: {rate:.0}/s into {}",
        dir.display()
    );
    let start = std::time::Instant::now();
    let report = verify_dir(&dir, Some(&key().public_key())).expect("verify");
    assert!(report.is_intact(), "{report:?}");
    println!("verified in {:?}", start.elapsed());
    if keep.is_some() {
        let public = crate::authz::trust::encode_public_key(&key().public_key());
        std::fs::write(dir.with_extension("pub"), format!("{public}\n")).expect("write .pub");
    }
}

/// Rewrites the log in `dir` as format 1 wrote it (SHA3-512 hashes, no origin, no tree
/// notes, no tiles), re-signed with the host key: what an older agent left behind.
fn as_format1(dir: &Path) {
    rewrite_file_as(&first_file(dir), Some(HashKind::Sha3), |record| {
        if let Body::Start(start) = &mut record.body {
            (start.format, start.origin) = (None, None);
        }
        if let Body::Checkpoint(checkpoint) = &mut record.body {
            checkpoint.note = None;
        }
        resign(record, &key());
    });
    std::fs::remove_dir_all(dir.join("tile")).expect("remove tiles");
    std::fs::remove_file(dir.join(super::tree::CHECKPOINT_FILE)).expect("remove checkpoint");
}

fn origin_opts() -> AuditOptions {
    AuditOptions {
        origin: Some("test.example/host-a".into()),
        ..opts()
    }
}

#[test]
fn every_format2_checkpoint_signs_the_tree_of_the_records_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 25, origin_opts());
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.format2_from, Some(0));
    assert_eq!(report.origin.as_deref(), Some("test.example/host-a"));
    assert_eq!(report.tree_heads, report.checkpoints.verified);
    assert!(report.tree_heads >= 3, "{report:?}");
    assert_eq!(report.format3_from, Some(0));

    // Format 3: the hash each line states is its leaf in the tiles, byte for byte.
    let lines = read_lines(&first_file(dir.path()));
    let tiles = std::fs::read_dir(dir.path().join("tile/0/000.p"))
        .expect("partial tiles")
        .filter_map(Result::ok)
        .map(|e| std::fs::read(e.path()).expect("tile"))
        .max_by_key(Vec::len)
        .expect("a tile");
    assert!(tiles.len() >= 32 * 20, "{} bytes", tiles.len());
    for (line, leaf) in lines.iter().zip(tiles.chunks(32)) {
        let stated = Unsealed::new(line.as_bytes()).expect("unseal").stated;
        assert_eq!(stated.kind(), HashKind::Leaf);
        assert_eq!(stated.to_string(), hex::encode(leaf), "{line}");
    }

    // The newest note is beside the log, for witnesses and provers.
    let text = std::fs::read_to_string(dir.path().join(super::tree::CHECKPOINT_FILE))
        .expect("checkpoint file");
    let last = read_lines(&first_file(dir.path()))
        .pop()
        .expect("last line");
    let record = Unsealed::new(last.as_bytes())
        .expect("unseal")
        .record()
        .expect("record");
    let Body::Checkpoint(checkpoint) = record.body else {
        panic!("the log ends with a checkpoint: {last}");
    };
    assert_eq!(checkpoint.note.as_deref(), Some(text.as_str()));
    assert!(
        text.starts_with(&format!("test.example/host-a\n{}\n", record.seq)),
        "{text}"
    );
}

/// Someone with the host key who rewrites a record and re-signs the chain's checkpoints,
/// but not the tree heads, is caught by the tree: the notes commit to other leaves.
#[test]
fn a_rewritten_record_breaks_the_next_signed_tree_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 6, origin_opts());
    let path = first_file(dir.path());
    let mut lines = read_lines(&path);
    let target = first_line_with(&lines, "\"decision\":\"deny\"");
    lines[target] = lines[target].replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
    // Re-chain and re-sign every checkpoint's chain signature with the real key.
    rewrite(&mut lines, |record| resign(record, &key()));
    write_lines(&path, &lines);
    let next_checkpoint = (target..lines.len())
        .find(|&i| lines[i].contains("\"kind\":\"checkpoint\""))
        .expect("cp");
    let kind = assert_problem(&verify(dir.path()), &path, next_checkpoint + 1);
    assert!(matches!(kind, ProblemKind::TreeHead { .. }), "{kind}");
}

/// A log an older agent wrote (format 1) verifies as it is, and continues into today's
/// format: the first tree head covers the whole history, format-1 records included.
#[test]
fn a_format1_log_continues_into_format3() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 9, origin_opts());
    as_format1(dir.path());
    let old = verify(dir.path());
    assert!(old.is_intact(), "{old:?}");
    assert_eq!((old.format2_from, old.tree_heads), (None, 0));

    let mut log = AuditLog::open(dir.path(), Some(key()), origin_opts()).expect("reopen");
    append(&mut log, 20, 4);
    log.close().expect("close");
    let new = verify(dir.path());
    assert!(new.is_intact(), "{new:?}");
    assert_eq!(new.format2_from, Some(old.records));
    assert_eq!(new.format3_from, Some(old.records));
    assert!(new.tree_heads >= 2, "{new:?}");
    assert_eq!(
        new.checkpoints.verified,
        old.checkpoints.verified + new.tree_heads
    );
    let note = std::fs::read_to_string(dir.path().join(super::tree::CHECKPOINT_FILE))
        .expect("checkpoint file");
    let size: u64 = note.lines().nth(1).expect("size").parse().expect("number");
    assert_eq!(size + 1, new.records, "the last note covers all but itself");
}

/// A record spelled in another format's hash is refused by name, even with the chain
/// re-linked after it: a format-3 log's records are all leaf hashes.
#[test]
fn a_record_hashed_as_another_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 4, origin_opts());
    let path = first_file(dir.path());
    let mut lines = read_lines(&path);
    let target = first_line_with(&lines, "\"kind\":\"decision\"");
    lines[target] = reseal_as(&lines[target], HashKind::Sha3);
    rechain(&mut lines, target + 1);
    write_lines(&path, &lines);
    let kind = assert_problem(
        &verify_dir(dir.path(), None).expect("verify"),
        &path,
        target + 1,
    );
    assert!(
        kind.to_string()
            .contains("states a SHA3-512 hash where the log's format uses SHA-256 leaf"),
        "{kind}"
    );
}

/// Tiles that claim records the log does not have are refused by name, not built upon.
#[test]
fn tiles_ahead_of_the_log_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 3, origin_opts());
    let path = first_file(dir.path());
    let mut lines = read_lines(&path);
    // The last two records: the shutdown checkpoint's tiles hold the record before it.
    lines.truncate(lines.len() - 2);
    write_lines(&path, &lines);
    let error = AuditLog::open(dir.path(), Some(key()), origin_opts()).expect_err("refused");
    assert!(error.to_string().contains("tile"), "{error}");
}

/// Tiles a crash damaged (here, a tile cut short) are set aside and rebuilt from the log:
/// they are a cache, and must never keep the agent from starting.
#[test]
fn damaged_tiles_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 300, origin_opts());
    let tile = dir.path().join("tile/0/000");
    let bytes = std::fs::read(&tile).expect("a full tile");
    std::fs::write(&tile, &bytes[..100]).expect("cut the tile");
    let mut log = AuditLog::open(dir.path(), Some(key()), origin_opts()).expect("reopens");
    append(&mut log, 400, 3);
    log.close().expect("close");
    assert_eq!(std::fs::read(&tile).expect("rebuilt"), bytes);
    let aside = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("tile.damaged-"));
    assert!(aside, "the damaged tiles are kept aside for a look");
    let report = verify(dir.path());
    assert!(report.is_intact() && report.tree_heads >= 3, "{report:?}");
}

/// After a rotation the newest file has no start record naming the origin; the agent must
/// still reopen the log, and every tree head across the files must still verify.
#[test]
fn a_rotated_log_with_tree_heads_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || AuditOptions {
        origin: Some("test.example/host-a".into()),
        ..small_files()
    };
    for round in 0..2 {
        let mut log = AuditLog::open(dir.path(), Some(key()), opts()).expect("reopens");
        append(&mut log, 1 + round * 100, 30);
        log.close().expect("close");
    }
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
    assert!(report.files > 2, "{report:?}");
    assert_eq!(report.tree_heads, report.checkpoints.verified);
}

/// Tiles changed behind the writer's back (a leaf hash swapped, the tile's length kept)
/// are not signed over: they disagree with the last signed tree head, so the writer
/// rebuilds them from the log first.
#[test]
fn tiles_that_disagree_with_the_last_signed_head_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 600, origin_opts());
    // The widest partial tile of level 0: its hashes go into the root as they are.
    let tile = std::fs::read_dir(dir.path().join("tile/0/002.p"))
        .expect("partial tiles")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max_by_key(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
        })
        .expect("a partial tile");
    let mut bad = std::fs::read(&tile).expect("the tile");
    bad[32 * 7] ^= 1;
    std::fs::write(&tile, &bad).expect("swap a leaf hash");
    let mut log = AuditLog::open(dir.path(), Some(key()), origin_opts()).expect("reopens");
    append(&mut log, 700, 2);
    log.close().expect("close");
    let aside = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("tile.damaged-"));
    assert!(aside, "the tiles were not rebuilt");
    // The rebuilt tiles give the newest signed head's root.
    let note =
        std::fs::read_to_string(dir.path().join(super::tree::CHECKPOINT_FILE)).expect("checkpoint");
    let note = super::tlog::SignedNote::parse(note.as_bytes()).expect("note");
    let head = super::tlog::Checkpoint::parse(note.text()).expect("checkpoint");
    let tiles = super::tlog::TileStore::open_read_only(dir.path(), head.size()).expect("tiles");
    assert_eq!(tiles.root().expect("root"), *head.root());
    let report = verify(dir.path());
    assert!(report.is_intact(), "{report:?}");
}

/// A record changed in an older file (its own hash recomputed, which needs no key) is
/// not signed over either: the rebuilt tree still disagrees with the last signed head,
/// and the writer refuses to open the log.
#[test]
fn a_log_changed_before_its_last_signed_head_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || AuditOptions {
        origin: Some("test.example/host-a".into()),
        ..small_files()
    };
    let mut log = AuditLog::open(dir.path(), Some(key()), opts()).expect("open");
    append(&mut log, 1, 30);
    log.close().expect("close");
    let path = first_file(dir.path());
    let mut lines = read_lines(&path);
    let target = first_line_with(&lines, "\"kind\":\"decision\"");
    let mut one = vec![lines[target].replace("\"uid\":1000", "\"uid\":0")];
    super::testkit::rewrite(&mut one, |_| {});
    // Only this line's own hash is recomputed; its prev stays as it was.
    let text = one[0].replacen(prev_member(&one[0]), prev_member(&lines[target]), 1);
    lines[target] = reseal(&text);
    write_lines(&path, &lines);
    std::fs::remove_dir_all(dir.path().join("tile")).expect("drop the tiles");
    let error = AuditLog::open(dir.path(), Some(key()), opts()).expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("no longer matches the tree head"),
        "{error}"
    );
}
