//! `enforcer audit replay` and `enforcer bundle create --from-audit`, run as a person would
//! on an audit log written by the agent's own writer, with bundles signed by test keys and
//! archived as the agent archives them.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use enforcer::audit::{AuditLog, AuditOptions, AuthorizationChange, DecisionLabels};
use enforcer::authz::artifact::{
    ArtifactId, ArtifactKind, Bundle, Envelope, Mode, OnRevoke, SignedGrant,
};
use enforcer::authz::trust::SigningKey;
use enforcer::host::digest::FileDigest;
use enforcer_common::{EVENT_PATH_LEN, ExecEvent, decision, hook, reason};

mod common;

use common::Run;

const BOOT: &str = "0f0e0d0c-0b0a-4908-8706-050403020100";
const SCOPE: &str = "/governed/app";

/// A log in `dir/audit` over programs in `dir`: `a` (exec 1 and 3), `b` (exec 2), `gone`
/// (exec 5), all granted by bundle `tools` serial 1; `c` (exec 4) denied, not granted;
/// `d` (exec 7) granted but changed on disk since; and a tamper refusal (exec 6).
struct Fixture {
    dir: tempfile::TempDir,
    tools: ArtifactId,
    /// The programs' content as recorded, by name.
    recorded: BTreeMap<&'static str, FileDigest>,
}

fn key() -> SigningKey {
    SigningKey::from_seed(&[1; 32])
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn digest(path: &Path) -> FileDigest {
    FileDigest::of_file(path).expect("hash a test program")
}

/// A signed bundle envelope of the `tools` line granting `programs`' content.
fn tools_bundle(serial: u64, programs: &[FileDigest]) -> Envelope {
    let now = unix_now();
    let bundle = Bundle {
        issuer: "ops".into(),
        bundle_id: "tools".into(),
        serial,
        issued_at: now - 60,
        not_before: now - 60,
        not_after: now + 86_400,
        scopes: vec![SCOPE.parse().expect("scope")],
        grants: programs
            .iter()
            .map(|d| SignedGrant {
                digest: *d,
                name: None,
                not_after: None,
            })
            .collect(),
        mode: Mode::Enforce,
        on_revoke: OnRevoke::DenyNew,
        allow_anonymous_exec: false,
        allow_fileless: false,
    };
    let mut envelope = Envelope::new(ArtifactKind::Bundle, bundle.to_payload().expect("payload"));
    assert!(envelope.add_signature(&key()));
    envelope
}

fn event(
    exec_id: u64,
    path: &Path,
    verdict: u32,
    why: u32,
    auth: Option<&ArtifactId>,
) -> ExecEvent {
    let mut bytes = [0u8; EVENT_PATH_LEN];
    let name = path.display().to_string();
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    ExecEvent {
        boot_ns: 5_000_000_000 + exec_id * 1_000_000,
        cgroup_id: 4242,
        scope_id: 4241,
        auth_serial: if auth.is_some() { 1 } else { 0 },
        exec_id,
        parent_exec_id: 0,
        pid: 300,
        tgid: 300,
        ppid: 1,
        uid: 1000,
        gid: 1000,
        decision: verdict,
        reason: why,
        hook: hook::BPRM_CHECK_SECURITY,
        digest: if why == reason::TAMPER {
            [0; 32]
        } else {
            digest(path).0
        },
        auth_id: auth.map_or([0; 16], ArtifactId::auth_prefix),
        detail: 0,
        path: bytes,
    }
}

/// The id the break-glass record of [`Fixture::in_break_glass`] cites.
const GLASS: &str = "9a";

impl Fixture {
    fn new() -> Self {
        Self::build(false)
    }

    /// The same log with the scope in a break-glass window: `c` (exec 4) is recorded as
    /// `would-deny`.
    fn in_break_glass() -> Self {
        Self::build(true)
    }

    fn build(break_glass: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a", "b", "c", "d", "gone"] {
            std::fs::write(dir.path().join(name), format!("#!program {name}\n")).expect("write");
        }
        let p = |name: &str| dir.path().join(name);
        let recorded: BTreeMap<&'static str, FileDigest> = ["a", "b", "c", "d", "gone"]
            .into_iter()
            .map(|n| (n, digest(&p(n))))
            .collect();
        let envelope = tools_bundle(
            1,
            &[
                recorded["a"],
                recorded["b"],
                recorded["gone"],
                recorded["d"],
            ],
        );
        let tools = envelope.id();
        let payload = Bundle::from_payload(&envelope.payload).expect("bundle");
        let options = AuditOptions {
            boot_id: Some(BOOT.into()),
            ..AuditOptions::default()
        };
        let mut log = AuditLog::open(&dir.path().join("audit"), None, options).expect("open");
        log.keep_artifact(&tools, &envelope.to_bytes())
            .expect("keep");
        log.append_authorization(AuthorizationChange {
            change: "in-force".into(),
            artifact: "bundle".into(),
            id: tools.to_string(),
            issuer: payload.issuer.clone(),
            bundle_id: Some(payload.bundle_id.clone()),
            serial: Some(payload.serial),
            scopes: vec![SCOPE.into()],
            not_after: None,
            pids: Vec::new(),
            detail: None,
            boot_ns: None,
        })
        .expect("authorization");
        if break_glass {
            log.append_authorization(AuthorizationChange {
                change: "break-glass".into(),
                artifact: "break-glass".into(),
                id: GLASS.repeat(64),
                issuer: "oncall".into(),
                bundle_id: None,
                serial: None,
                scopes: vec![SCOPE.into()],
                not_after: Some(
                    humantime::format_rfc3339_seconds(
                        SystemTime::now() + std::time::Duration::from_secs(3600),
                    )
                    .to_string(),
                ),
                pids: Vec::new(),
                detail: Some("INC-1".into()),
                boot_ns: None,
            })
            .expect("break-glass");
        }
        let labels = DecisionLabels {
            scope: Some(SCOPE),
            grant_name: None,
        };
        let (allow, deny) = (decision::ALLOW, decision::DENY);
        let c_decision = if break_glass {
            decision::WOULD_DENY
        } else {
            deny
        };
        let granted = Some(&tools);
        for e in [
            event(1, &p("a"), allow, reason::GRANTED, granted),
            event(2, &p("b"), allow, reason::GRANTED, granted),
            event(3, &p("a"), allow, reason::GRANTED, granted),
            event(4, &p("c"), c_decision, reason::NOT_GRANTED, None),
            event(5, &p("gone"), allow, reason::GRANTED, granted),
            event(6, &p("a"), deny, reason::TAMPER, None),
            event(7, &p("d"), allow, reason::GRANTED, granted),
        ] {
            log.append_decision(&e, &labels).expect("decision");
        }
        log.close().expect("close");
        std::fs::remove_file(p("gone")).expect("remove");
        std::fs::write(p("d"), "#!program d, version 2\n").expect("change d");
        Self {
            dir,
            tools,
            recorded,
        }
    }

    /// `bundle create --from-audit` of the scope into `learned.json`.
    fn learn(&self) -> Run {
        common::enforcer(
            self.dir.path(),
            [
                "bundle",
                "create",
                "--issuer",
                "ops",
                "--bundle-id",
                "learned",
                "--serial",
                "1",
                "--scope",
                SCOPE,
                "--valid-for",
                "1h",
                "--from-audit",
                "--audit-dir",
                "audit",
                "--out",
                "learned.json",
            ],
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["audit", "--dir", "audit"];
        all.extend_from_slice(args);
        common::enforcer(self.dir.path(), all)
    }

    /// Rewrites the recorded decision of `exec_id` as `decision`/`reason`, as an edit of
    /// the file would (the chain breaks: `audit verify` is what catches that).
    fn alter(&self, exec_id: u64, from: &str, to: &str) {
        let file = std::fs::read_dir(self.path("audit"))
            .expect("log dir")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .expect("a log file");
        let text = std::fs::read_to_string(&file).expect("read");
        let marker = format!("\"exec_id\":{exec_id},");
        let mut changed = 0;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                if line.contains(&marker) && line.contains(from) {
                    changed += 1;
                    line.replace(from, to)
                } else {
                    line.to_owned()
                }
            })
            .collect();
        assert_eq!(changed, 1, "exactly one record altered");
        std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    }
}

#[track_caller]
fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

/// The `--as-recorded --json` report of `run`, which found no mismatch.
#[track_caller]
fn replays_as_recorded(run: Run) -> (Run, serde_json::Value) {
    let report = json(&run);
    assert_eq!(
        report["mismatches"],
        serde_json::json!([]),
        "{}",
        run.stdout
    );
    assert_code(&run, 0);
    (run, report)
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[test]
fn a_consistent_log_replays_as_recorded() {
    let f = Fixture::new();
    let run = f.run(&["replay", "--as-recorded"]);
    assert_code(&run, 0);
    assert!(
        run.stdout
            .contains("7 decision(s) selected, 6 decided again"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("0 mismatch(es)"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 kept as recorded (tamper)"),
        "containment is not decided again: {}",
        run.stdout
    );
}

#[test]
fn an_altered_decision_is_a_mismatch() {
    let f = Fixture::new();
    f.alter(
        3,
        r#""decision":"allow","reason":"granted""#,
        r#""decision":"deny","reason":"not-granted""#,
    );
    let run = f.run(&["replay", "--as-recorded"]);
    assert_code(&run, 1);
    assert!(run.stdout.contains("1 mismatch(es)"), "{}", run.stdout);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("mismatch seq"))
        .unwrap_or_else(|| panic!("no mismatch line: {}", run.stdout));
    assert!(line.contains(&format!("{BOOT}:3")), "{line}");
    assert!(
        line.ends_with("recorded deny (not-granted), replayed allow (granted)"),
        "{line}"
    );
    let report = json(&f.run(&["replay", "--as-recorded", "--json"]));
    assert_eq!(report["mismatches"].as_array().expect("list").len(), 1);
    assert_eq!(report["mismatches"][0]["decision_ref"], format!("{BOOT}:3"));
}

#[test]
fn a_candidate_that_drops_a_grant_newly_denies_exactly_its_execs() {
    let f = Fixture::new();
    // Serial 2 of the same line, without `b`: it replaces serial 1.
    let candidate = tools_bundle(2, &[f.recorded["a"], f.recorded["gone"], f.recorded["d"]]);
    std::fs::write(f.path("candidate.json"), candidate.to_bytes()).expect("write");
    let run = f.run(&["replay", "--with", "candidate.json", "--json"]);
    assert_code(&run, 0);
    let report = json(&run);
    let denied = report["newly_denied"].as_array().expect("list");
    let programs: Vec<(&str, u64)> = denied
        .iter()
        .map(|c| {
            (
                c["program"].as_str().expect("path"),
                c["count"].as_u64().expect("count"),
            )
        })
        .collect();
    let b = f.path("b").display().to_string();
    assert_eq!(programs, [(b.as_str(), 1)], "{report:#}");
    assert_eq!(
        denied[0]["examples"],
        serde_json::json!([format!("{BOOT}:2")])
    );
    assert_eq!(denied[0]["replayed"]["decision"], "deny");
    assert_eq!(denied[0]["replayed"]["reason"], "not-granted");
    assert_eq!(report["newly_allowed"], serde_json::json!([]));

    let text = f.run(&["replay", "--with", "candidate.json"]);
    assert_code(&text, 0);
    assert!(
        text.stdout
            .contains("newly denied: 1 decision(s) in 1 program(s)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!(
            "  {b}: 1 decision(s) allow -> deny (not-granted), e.g. {BOOT}:2"
        )),
        "{}",
        text.stdout
    );
}

#[test]
fn without_the_bundle_everything_it_granted_is_denied_and_a_grant_of_c_allows_it() {
    let f = Fixture::new();
    let prefix = &f.tools.to_string()[..16];
    let report = json(&f.run(&["replay", "--without", prefix, "--json"]));
    let count: u64 = report["newly_denied"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(count, 5, "execs 1, 2, 3, 5, 7: {report:#}");

    let candidate = tools_bundle(
        2,
        &[
            f.recorded["a"],
            f.recorded["b"],
            f.recorded["c"],
            f.recorded["d"],
            f.recorded["gone"],
        ],
    );
    std::fs::write(f.path("candidate.json"), candidate.to_bytes()).expect("write");
    let report = json(&f.run(&["replay", "--with", "candidate.json", "--json"]));
    let allowed = report["newly_allowed"].as_array().expect("list");
    assert_eq!(allowed.len(), 1, "{report:#}");
    assert_eq!(allowed[0]["program"], f.path("c").display().to_string());
    assert_eq!(
        allowed[0]["examples"],
        serde_json::json!([format!("{BOOT}:4")])
    );

    let bad = f.run(&["replay", "--without", "not-hex"]);
    assert_code(&bad, 1);
    assert!(
        bad.stderr.contains("expected an artifact id"),
        "{}",
        bad.stderr
    );
}

#[test]
fn learning_grants_what_is_on_disk_as_recorded_and_names_the_rest() {
    let f = Fixture::new();
    let run = f.learn();
    assert_code(&run, 0);
    let line = |name: &str| {
        let prefix = format!("  {} ", f.path(name).display());
        run.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{name} not in the review list:\n{}", run.stdout))
            .to_owned()
    };
    assert!(
        run.stdout
            .contains(&format!("review: 5 program(s) recorded in {SCOPE}")),
        "{}",
        run.stdout
    );
    assert!(
        line("a").contains("allowed 2 would-deny 0 denied 0"),
        "{}",
        line("a")
    );
    assert!(line("a").ends_with(": granted"), "{}", line("a"));
    assert!(
        line("c").contains("allowed 0 would-deny 0 denied 1"),
        "{}",
        line("c")
    );
    assert!(line("c").ends_with(": granted"), "{}", line("c"));
    assert!(
        line("gone").contains("LEFT OUT: no longer on disk"),
        "{}",
        line("gone")
    );
    assert!(
        line("d").contains("LEFT OUT: content on disk changed"),
        "{}",
        line("d")
    );
    assert!(
        run.stdout.contains("2 program(s) left out"),
        "{}",
        run.stdout
    );

    let bytes = std::fs::read(f.path("learned.json")).expect("the bundle");
    let envelope = Envelope::parse(&bytes).expect("envelope");
    assert!(
        envelope.signatures.is_empty(),
        "unsigned, like every bundle create"
    );
    let bundle = Bundle::from_payload(&envelope.payload).expect("bundle");
    let mut granted: Vec<FileDigest> = bundle.grants.iter().map(|g| g.digest).collect();
    granted.sort_unstable();
    let mut want: Vec<FileDigest> = ["a", "b", "c"].iter().map(|n| f.recorded[n]).collect();
    want.sort_unstable();
    assert_eq!(granted, want);
}

#[test]
fn a_break_glass_window_replays_and_without_it_what_it_let_run_is_denied() {
    let f = Fixture::in_break_glass();
    let run = f.run(&["replay", "--as-recorded"]);
    assert_code(&run, 0);
    assert!(run.stdout.contains("0 mismatch(es)"), "{}", run.stdout);

    let run = f.run(&["replay", "--without", GLASS]);
    assert_code(&run, 0);
    let c = f.path("c").display().to_string();
    assert!(
        run.stdout
            .contains("newly denied: 1 decision(s) in 1 program(s)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "  {c}: 1 decision(s) would-deny -> deny (not-granted), e.g. {BOOT}:4"
        )),
        "{}",
        run.stdout
    );

    // Recorded as would-deny, the same decision under enforcement is a mismatch.
    f.alter(4, r#""decision":"would-deny""#, r#""decision":"deny""#);
    let run = f.run(&["replay", "--as-recorded"]);
    assert_code(&run, 1);
    assert!(
        run.stdout
            .contains("recorded deny (not-granted), replayed would-deny (not-granted)"),
        "{}",
        run.stdout
    );
}

#[test]
fn learning_counts_what_monitoring_let_run() {
    let f = Fixture::in_break_glass();
    let run = f.learn();
    assert_code(&run, 0);
    let prefix = format!("  {} ", f.path("c").display());
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("c not in the review list:\n{}", run.stdout));
    assert!(line.contains("allowed 0 would-deny 1 denied 0"), "{line}");
    assert!(line.ends_with(": granted"), "{line}");
}

/// Opens the fixture's log again, to add records as a restarted agent would.
fn reopen(f: &Fixture) -> AuditLog {
    let options = AuditOptions {
        boot_id: Some(BOOT.into()),
        ..AuditOptions::default()
    };
    AuditLog::open(&f.path("audit"), None, options).expect("open")
}

fn in_scope(scope: &str) -> DecisionLabels<'_> {
    DecisionLabels {
        scope: Some(scope),
        grant_name: None,
    }
}

/// The record of `change` (`in-force`, `accepted`) of bundle `id` of the `tools` line,
/// switched in the kernel at `boot_ns`.
fn bundle_record(
    change: &str,
    id: &ArtifactId,
    serial: u64,
    boot_ns: Option<u64>,
) -> AuthorizationChange {
    AuthorizationChange {
        change: change.into(),
        artifact: "bundle".into(),
        id: id.to_string(),
        issuer: "ops".into(),
        bundle_id: Some("tools".into()),
        serial: Some(serial),
        scopes: vec![SCOPE.into()],
        boot_ns,
        ..AuthorizationChange::default()
    }
}

/// The operator-mode record an agent writes last of its startup records, and on a change.
fn operator_mode(scopes: &[&str], boot_ns: Option<u64>) -> AuthorizationChange {
    AuthorizationChange {
        change: "operator-mode".into(),
        artifact: "configuration".into(),
        issuer: "operator".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        detail: Some("monitor".into()),
        boot_ns,
        ..AuthorizationChange::default()
    }
}

#[test]
fn late_decisions_the_operators_modes_unsigned_policies_and_the_self_test_replay_as_recorded() {
    let f = Fixture::new();
    let mut log = reopen(&f);
    // The agent starts again (the kernel switches at 5.010 s) and records what it finds.
    for record in [
        bundle_record("in-force", &f.tools, 1, Some(5_010_000_000)),
        operator_mode(&[], Some(5_010_000_000)),
    ] {
        log.append_authorization(record).expect("startup record");
    }
    // A bundle that also grants c switches in the kernel at 5.025 s. Exec 20 was decided
    // before that and exec 30 after, but the ring buffer delivers both after the record.
    let update = tools_bundle(2, &[f.recorded["a"], f.recorded["b"], f.recorded["c"]]);
    log.keep_artifact(&update.id(), &update.to_bytes())
        .expect("keep");
    log.append_authorization(bundle_record(
        "accepted",
        &update.id(),
        2,
        Some(5_025_000_000),
    ))
    .expect("accepted");
    let (allow, deny) = (decision::ALLOW, decision::DENY);
    let granted = update.id();
    for e in [
        event(20, &f.path("c"), deny, reason::NOT_GRANTED, None),
        event(30, &f.path("c"), allow, reason::GRANTED, Some(&granted)),
    ] {
        log.append_decision(&e, &in_scope(SCOPE)).expect("decision");
    }
    // The operator holds a rollout scope in monitor mode: no bundle says so.
    const ROLLOUT: &str = "/governed/rollout";
    log.append_authorization(operator_mode(&[ROLLOUT], Some(5_031_000_000)))
        .expect("operator mode");
    log.append_decision(
        &event(
            32,
            &f.path("c"),
            decision::WOULD_DENY,
            reason::NOT_GRANTED,
            None,
        ),
        &in_scope(ROLLOUT),
    )
    .expect("decision");
    // A development scope on an unsigned policy file, and the agent's self-test.
    const DEV: &str = "/dev/scope";
    log.append_authorization(AuthorizationChange {
        change: "in-force".into(),
        artifact: "unsigned-policy".into(),
        id: f.recorded["d"].to_string(),
        issuer: "operator".into(),
        scopes: vec![DEV.into()],
        ..AuthorizationChange::default()
    })
    .expect("unsigned policy");
    log.append_decision(
        &event(33, &f.path("c"), allow, reason::GRANTED, None),
        &in_scope(DEV),
    )
    .expect("decision");
    log.append_decision(
        &event(34, &f.path("c"), allow, reason::GRANTED, None),
        &in_scope("(startup self-test)"),
    )
    .expect("decision");
    log.close().expect("close");

    let (run, report) = replays_as_recorded(f.run(&["replay", "--as-recorded", "--json"]));
    // The seven of the fixture, then 20, 30 and 32 decided again; 33 and 34 kept.
    assert_eq!(report["redecided"], 9, "{}", run.stdout);
    assert_eq!(
        report["as_recorded"]["unsigned-policy"], 1,
        "{}",
        run.stdout
    );
    assert_eq!(report["as_recorded"]["self-test"], 1, "{}", run.stdout);

    // The same late decision with the kernel's verdict changed is still caught.
    f.alter(
        20,
        r#""decision":"deny","reason":"not-granted""#,
        r#""decision":"allow","reason":"granted""#,
    );
    let run = f.run(&["replay", "--as-recorded"]);
    assert_code(&run, 1);
    assert!(run.stdout.contains("1 mismatch(es)"), "{}", run.stdout);
}

#[test]
fn decisions_made_before_the_agent_started_are_decided_under_what_the_last_one_left() {
    let f = Fixture::new();
    let dir = f.path("this-boot");
    let now = || enforcer::clock::boot_ns().expect("CLOCK_BOOTTIME");
    let tools = tools_bundle(1, &[f.recorded["a"]]);
    let (allow, granted) = (decision::ALLOW, reason::GRANTED);
    let scope = in_scope(SCOPE);

    let mut log = AuditLog::open(&dir, None, AuditOptions::default()).expect("open");
    log.keep_artifact(&tools.id(), &tools.to_bytes())
        .expect("keep");
    let started = now();
    for record in [
        bundle_record("in-force", &tools.id(), 1, Some(started)),
        operator_mode(&[], Some(started)),
    ] {
        log.append_authorization(record).expect("startup record");
    }
    // Left in the ring buffer by an agent that logged elsewhere: nothing here says what
    // it was decided under.
    let mut stray = event(1, &f.path("a"), allow, granted, Some(&tools.id()));
    stray.boot_ns = 1_000;
    let mut ran = event(2, &f.path("a"), allow, granted, Some(&tools.id()));
    ran.boot_ns = now();
    for e in [stray, ran] {
        log.append_decision(&e, &scope).expect("decision");
    }
    log.close().expect("close");

    // While no agent runs the kernel keeps what the last one loaded; the next agent finds
    // the bundle gone, and drains a decision made in between.
    let mut between = event(3, &f.path("a"), allow, granted, Some(&tools.id()));
    between.boot_ns = now();
    let mut log = AuditLog::open(&dir, None, AuditOptions::default()).expect("open again");
    log.append_authorization(operator_mode(&[], Some(now())))
        .expect("startup record");
    log.append_decision(&between, &scope).expect("decision");
    log.close().expect("close");

    let run = common::enforcer(
        f.dir.path(),
        [
            "audit",
            "--dir",
            "this-boot",
            "replay",
            "--as-recorded",
            "--json",
        ],
    );
    let (run, report) = replays_as_recorded(run);
    assert_eq!(report["redecided"], 2, "{}", run.stdout);
    assert_eq!(
        report["as_recorded"]["before-the-agent-started"], 1,
        "{}",
        run.stdout
    );
}

/// A mapping decision of `content`'s digest whose record names only `file_name`, as the
/// kernel reports mappings.
fn mapping_by_name(exec_id: u64, content: &Path, file_name: &str) -> ExecEvent {
    let mut e = event(exec_id, content, decision::DENY, reason::NOT_GRANTED, None);
    e.hook = hook::MMAP_FILE;
    e.path = [0; EVENT_PATH_LEN];
    e.path[..file_name.len()].copy_from_slice(file_name.as_bytes());
    e
}

#[test]
fn learning_finds_a_library_that_a_mapping_names_by_file_name_only_by_its_content() {
    let f = Fixture::new();
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").expect("this host's libc");
    let unknown = f.path("unknown");
    std::fs::write(&unknown, "no file in the loader's directories has this\n").expect("write");
    let mut log = reopen(&f);
    for e in [
        mapping_by_name(8, &libc, "libc.so.6"),
        // The name of a real library with content no file has.
        mapping_by_name(9, &unknown, "libm.so.6"),
        // A program's own content under another name: granted by its path already.
        mapping_by_name(10, &f.path("a"), "a-as-mapped"),
    ] {
        log.append_decision(&e, &in_scope(SCOPE)).expect("decision");
    }
    log.close().expect("close");

    let run = f.learn();
    assert_code(&run, 0);
    let line = |name: &str| {
        let prefix = format!("  {name} ");
        run.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{name} not in the review list:\n{}", run.stdout))
            .to_owned()
    };
    let granted_as = line("libc.so.6");
    let resolved = granted_as
        .rsplit_once(": granted as ")
        .map(|(_, path)| path.to_owned())
        .unwrap_or_else(|| panic!("libc.so.6 not granted by its path: {granted_as}"));
    assert!(resolved.ends_with("/libc.so.6"), "{granted_as}");
    assert_eq!(
        digest(Path::new(&resolved)),
        digest(&libc),
        "the file found has the recorded content"
    );
    let other = line("libm.so.6");
    assert!(
        other.contains("LEFT OUT") && other.contains("bare file name"),
        "{other}"
    );
    let same = line("a-as-mapped");
    assert!(
        same.ends_with(&format!(
            ": granted: the same content as {}",
            f.path("a").display()
        )),
        "{same}"
    );

    let bytes = std::fs::read(f.path("learned.json")).expect("the bundle");
    let bundle =
        Bundle::from_payload(&Envelope::parse(&bytes).expect("envelope").payload).expect("bundle");
    let grant = bundle
        .grants
        .iter()
        .find(|g| g.digest == digest(&libc))
        .expect("libc granted");
    assert_eq!(grant.name.as_deref(), Some(resolved.as_str()));
    assert!(
        !bundle
            .grants
            .iter()
            .any(|g| g.name.as_deref() == Some("libm.so.6")),
        "no grant by a bare name"
    );
}

#[test]
fn decisions_under_an_unarchived_bundle_are_kept_as_recorded_unless_a_candidate_replaces_it() {
    let f = Fixture::new();
    std::fs::remove_dir_all(f.path("audit/artifacts")).expect("remove the archive");
    let run = f.run(&["replay", "--as-recorded"]);
    assert_code(&run, 0);
    assert!(
        run.stdout
            .contains("7 decision(s) selected, 0 decided again"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("6 kept as recorded (authorization-not-archived)"),
        "{}",
        run.stdout
    );

    let candidate = tools_bundle(2, &[f.recorded["a"], f.recorded["gone"], f.recorded["d"]]);
    std::fs::write(f.path("candidate.json"), candidate.to_bytes()).expect("write");
    let report = json(&f.run(&["replay", "--with", "candidate.json", "--json"]));
    assert_eq!(report["redecided"], 6, "{report:#}");
    assert_eq!(
        report["newly_denied"][0]["examples"],
        serde_json::json!([format!("{BOOT}:2")])
    );
}
