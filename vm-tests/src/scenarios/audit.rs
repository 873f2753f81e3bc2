//! What the agent reports and records: JSON decisions, exec lineage, a hash-chained audit
//! log that verifies and names an edited record, and decisions lost to a full ring buffer
//! accounted for by gap records, whether the agent was paused or not running at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vm_tests::{PROBE_EXIT, UNLISTED_EXIT, attack};

use crate::support::agent::{Agent, expect_field};
use crate::support::audit::{audit_records, find_key};
use crate::support::run::{
    enforcer_ok, expect_attack, expect_eperm, expect_exit, run_tool, within,
};
use crate::support::service::http_get;
use crate::support::signed::{Kit, LIVE};
use crate::support::{Env, MONITOR_SCOPE, SCOPE, WORK, copy_executable, export, write_script};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![
    decisions_are_reported,
    lineage_links_each_exec_to_what_started_it,
    audit_records_every_decision_and_verifies,
    ring_buffer_overflow_becomes_a_gap_record,
    no_decision_record_is_lost_to_a_hostile_http_client,
    drops_while_no_agent_runs_become_a_gap_record,
    an_exec_is_proven_offline_and_a_changed_proof_is_refused,
    a_witness_cosigns_checkpoints_and_refuses_a_forked_log,
];

fn decisions_are_reported(env: &Env) {
    // Fresh paths, so records left in the ring buffer by earlier scenarios cannot match.
    let denied = copy_executable(&env.unlisted, &Path::new(WORK).join("report/denied-tool"));
    let allowed = copy_executable(&env.probe, &Path::new(WORK).join("report/allowed-tool"));
    let monitored = copy_executable(
        &env.unlisted,
        &Path::new(WORK).join("report/monitored-tool"),
    );
    // The agent loads the shared policy itself.
    let mut agent = Agent::start(env);
    expect_eperm(Some(SCOPE), &denied);
    let d = agent.decision_for(&denied);
    expect_field(&d, "decision", "deny");
    expect_field(&d, "reason", "not-granted");
    expect_field(&d, "scope", &format!("/{SCOPE}"));
    expect_exit(Some(SCOPE), &allowed, PROBE_EXIT);
    let a = agent.decision_for(&allowed);
    expect_field(&a, "decision", "allow");
    expect_field(&a, "reason", "granted");
    expect_exit(Some(MONITOR_SCOPE), &monitored, UNLISTED_EXIT);
    let m = agent.decision_for(&monitored);
    expect_field(&m, "decision", "would-deny");
    agent.stop();
}

fn lineage_links_each_exec_to_what_started_it(env: &Env) {
    // A granted script that runs a granted child: script -> interpreter -> child.
    let child = copy_executable(&env.probe, &Path::new(WORK).join("lineage/child-tool"));
    let script = Path::new(WORK).join("lineage/run-child.sh");
    write_script(&script, &format!("{}\nexit 0", child.display()));
    // The shared policy, with the script granted too.
    let policy = std::fs::read_to_string(&env.policy).expect("read the shared policy");
    let lineage_policy = Path::new(WORK).join("lineage/policy.toml");
    std::fs::write(
        &lineage_policy,
        policy.replacen(
            "files = [",
            &format!("files = [\"{}\", ", script.display()),
            1,
        ),
    )
    .expect("write the lineage policy");
    let lineage_env = Env {
        policy: lineage_policy,
        ..Env::from_env()
    };
    let mut agent = Agent::start(&lineage_env);
    expect_exit(Some(SCOPE), &script, 0);
    let s = agent.decision_for(&script);
    let interp = agent.decision_for(Path::new("/bin/sh"));
    let c = agent.decision_for(&child);
    for d in [&s, &interp, &c] {
        expect_field(d, "decision", "allow");
    }
    let id = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let ids = [id(&s, "exec_id"), id(&interp, "exec_id"), id(&c, "exec_id")];
    assert!(
        ids[0] != 0 && ids[0] < ids[1] && ids[1] < ids[2],
        "exec ids must be distinct and increase in order: {ids:?}"
    );
    assert!(
        id(&interp, "parent_exec_id") == id(&s, "exec_id"),
        "interpreter should descend from the script:\n{s}\n{interp}"
    );
    assert!(
        id(&c, "parent_exec_id") == id(&interp, "exec_id") && id(&c, "ppid") == id(&interp, "tgid"),
        "child should descend from the interpreter:\n{interp}\n{c}"
    );
    agent.signal(libc::SIGTERM);
    agent.wait();
}

/// How many records in `records` name a path starting with `prefix`.
fn records_under(records: &[serde_json::Value], prefix: &str) -> usize {
    records
        .iter()
        .filter(|r| {
            find_key(r, "path")
                .and_then(|p| p.as_str())
                .is_some_and(|p| p.starts_with(prefix))
        })
        .count()
}

fn audit_records_every_decision_and_verifies(env: &Env) {
    let work = Path::new(WORK).join("audit");
    let dir = work.join("log");
    std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("mkdir {}: {e}", work.display()));
    let (code, out) = run_tool(
        env.enforcer()
            .args(["key", "generate", "--out"])
            .arg(work.join("host")),
    );
    assert!(code == 0, "key generate exited {code}: {out}");
    let host_key = work.join("host.key");
    // The agent loads the shared policy itself.
    let mut agent = Agent::start_with(
        env,
        &[
            "--audit-dir",
            dir.to_str().expect("utf-8"),
            "--host-key",
            host_key.to_str().expect("utf-8"),
        ],
    );
    const EACH: usize = 6;
    for i in 0..EACH {
        let allowed = copy_executable(&env.probe, &work.join(format!("runs/allowed-{i}")));
        let denied = copy_executable(&env.unlisted, &work.join(format!("runs/denied-{i}")));
        expect_exit(Some(SCOPE), &allowed, PROBE_EXIT);
        expect_eperm(Some(SCOPE), &denied);
        agent.decision_for(&allowed);
        agent.decision_for(&denied);
    }
    agent.signal(libc::SIGTERM);
    agent.wait();
    let records = audit_records(env, &dir);
    let prefix = work.join("runs/").display().to_string();
    let counted = records_under(&records, &prefix);
    assert!(
        counted == 2 * EACH,
        "{} execs, {counted} audit records under {prefix}",
        2 * EACH
    );
    let public = work.join("host.pub");
    let verify = || {
        run_tool(
            env.enforcer()
                .arg("audit")
                .arg("--dir")
                .arg(&dir)
                .arg("verify")
                .arg("--trust")
                .arg(&public),
        )
    };
    let (code, out) = verify();
    assert!(code == 0, "audit verify exited {code}: {out}");
    // Editing one record is detected and named.
    let file = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("denied-3")))
        .expect("no log file holds the denied-3 record");
    let text =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    std::fs::write(&file, text.replacen("denied-3", "denied-X", 1))
        .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    let (code, out) = verify();
    assert!(code == 1, "verify after an edit exited {code}: {out}");
}

/// More denials than the ring buffer holds (about 3,970 events).
const STORM: u32 = 5000;

/// Runs `count` denied execs of `target` in SCOPE.
#[track_caller]
fn exec_storm(env: &Env, target: &Path, count: u32) {
    expect_attack(
        env,
        Some(SCOPE),
        &[
            "exec-storm",
            target.to_str().expect("utf-8"),
            &count.to_string(),
        ],
        attack::WORKED,
    );
}

/// Denies a marker exec and waits for the agent to report it: the storm before it has
/// then been drained.
#[track_caller]
fn drained(env: &Env, agent: &mut Agent, work: &Path) {
    let marker = copy_executable(&env.unlisted, &work.join("after-storm"));
    expect_eperm(Some(SCOPE), &marker);
    agent.decision_for(&marker);
}

/// Every one of the storm's denials is in `records`: recorded, or counted by a gap record.
#[track_caller]
fn expect_storm_accounted(records: &[serde_json::Value], target: &Path, what: &str) {
    let recorded = records_under(records, &target.display().to_string());
    let lost: u64 = records
        .iter()
        .filter(|r| r["kind"] == "gap")
        .filter_map(|r| r["lost"].as_u64())
        .sum();
    assert!(
        lost != 0,
        "no gap record after {STORM} denials {what} ({recorded} recorded)"
    );
    assert!(
        recorded as u64 + lost == u64::from(STORM),
        "{STORM} denials {what}: {recorded} recorded + {lost} in gap records"
    );
}

/// A work area for a storm: its audit directory and the denied target.
fn storm_setup(env: &Env, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let work = Path::new(WORK).join(name);
    let dir = work.join("log");
    let target = copy_executable(&env.unlisted, &work.join("flood-target"));
    (work, dir, target)
}

/// Denials in the hostile-client scenario: fewer than the ring buffer holds, so that a
/// drain that keeps going loses none.
const UNDER_FIRE: u32 = 1500;

/// Where the hostile-client scenario's agent listens.
const HOSTILE_ADDR: &str = "127.0.0.1:9465";

/// A hostile client on loopback keeps the agent's HTTP window busy while a storm of
/// denied execs runs in the scope: more half-sent requests than the window serves at
/// once, an oversized request head, a decision stream that never reads and a flood of
/// scrapes. The drain and the audit writer do not wait for any of it: every denial is in
/// the log, and no gap record says one was lost. Once the client goes, the window answers.
fn no_decision_record_is_lost_to_a_hostile_http_client(env: &Env) {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (work, dir, target) = storm_setup(env, "under-fire");
    let config = work.join("http.toml");
    std::fs::write(&config, format!("[http]\nlisten = \"{HOSTILE_ADDR}\"\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
    // Drops left by earlier scenarios go into a gap record of a first agent; a gap record
    // of the second is a decision lost under fire.
    Agent::start_with(env, &["--audit-dir", dir.to_str().expect("utf-8")]).stop();
    let mut agent = Agent::start_with(
        env,
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--audit-dir",
            dir.to_str().expect("utf-8"),
        ],
    );
    within(Duration::from_secs(15), || {
        match http_get(HOSTILE_ADDR, "/healthz") {
            (200, _) => Ok(()),
            (code, body) => Err(format!("/healthz: {code} {body}")),
        }
    });

    let connect = || std::net::TcpStream::connect(HOSTILE_ADDR).ok();
    // Twice as many half-sent requests as the window serves at once (32).
    let mut held: Vec<_> = (0..64)
        .filter_map(|_| connect())
        .filter_map(|mut c| {
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .ok()
                .map(|()| c)
        })
        .collect();
    // A decision stream whose client never reads.
    if let Some(mut c) = connect()
        && c.write_all(b"GET /api/v1/decisions/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            .is_ok()
    {
        held.push(c);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let hostile: Vec<_> = (0..2)
        .map(|i| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if i == 0 {
                        // A head far beyond what the window reads.
                        if let Ok(mut c) = std::net::TcpStream::connect(HOSTILE_ADDR) {
                            let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
                            head.resize(1 << 20, b'a');
                            let _ = c.write_all(&head);
                        }
                    } else {
                        http_get(HOSTILE_ADDR, "/metrics");
                    }
                }
            })
        })
        .collect();

    exec_storm(env, &target, UNDER_FIRE);
    drained(env, &mut agent, &work);
    stop.store(true, Ordering::Relaxed);
    for thread in hostile {
        let _ = thread.join();
    }
    drop(held);
    within(Duration::from_secs(15), || {
        match http_get(HOSTILE_ADDR, "/healthz") {
            (200, _) => Ok(()),
            (code, body) => Err(format!("/healthz after the client left: {code} {body}")),
        }
    });
    agent.signal(libc::SIGTERM);
    agent.wait();

    let records = audit_records(env, &dir);
    let records = since_last_start(&records);
    let recorded = records_under(records, &target.display().to_string());
    let gaps: Vec<_> = records.iter().filter(|r| r["kind"] == "gap").collect();
    assert!(
        gaps.is_empty() && recorded == UNDER_FIRE as usize,
        "{UNDER_FIRE} denials under a hostile HTTP client: {recorded} recorded, gap records: \
         {gaps:?}"
    );
}

fn ring_buffer_overflow_becomes_a_gap_record(env: &Env) {
    let (work, dir, target) = storm_setup(env, "storm");
    let audit_dir = ["--audit-dir", dir.to_str().expect("utf-8")];
    // Drops left by earlier scenarios go into a gap record of a first agent, which takes
    // over whatever the drop counter says; the gap records of the second are the storm's.
    Agent::start_with(env, &audit_dir).stop();
    // The agent loads the shared policy itself.
    let mut agent = Agent::start_with(env, &audit_dir);
    // Paused (from outside every scope, which may signal it), the agent drains nothing
    // while more denials than the ring buffer holds happen.
    agent.signal(libc::SIGSTOP);
    exec_storm(env, &target, STORM);
    agent.signal(libc::SIGCONT);
    // The marker needs room in the full ring buffer: once the agent reports a storm
    // decision, it has begun to drain. Exec'd sooner, the marker itself may be dropped.
    agent.decision_for(&target);
    drained(env, &mut agent, &work);
    agent.signal(libc::SIGTERM);
    agent.wait();
    let records = audit_records(env, &dir);
    expect_storm_accounted(since_last_start(&records), &target, "with the agent paused");
}

/// The records the last agent to start wrote: from the last start record on.
fn since_last_start(records: &[serde_json::Value]) -> &[serde_json::Value] {
    records
        .iter()
        .rposition(|r| r["kind"] == "start")
        .map_or(records, |i| &records[i..])
}

fn drops_while_no_agent_runs_become_a_gap_record(env: &Env) {
    let (work, dir, target) = storm_setup(env, "storm-unattended");
    // The first agent takes over whatever the drop counter says, then dies.
    let agent = Agent::start_with(env, &["--audit-dir", dir.to_str().expect("utf-8")]);
    agent.kill();
    exec_storm(env, &target, STORM);
    // Without the startup self-test, whose two decisions would find the ring buffer full
    // and be counted as dropped too.
    let mut agent = Agent::start_with(
        env,
        &[
            "--audit-dir",
            dir.to_str().expect("utf-8"),
            "--skip-self-test",
        ],
    );
    drained(env, &mut agent, &work);
    agent.signal(libc::SIGTERM);
    agent.wait();
    let records = audit_records(env, &dir);
    // Only what the second agent wrote.
    expect_storm_accounted(since_last_start(&records), &target, "with no agent running");
}

/// An exec in a scope is proven from the audit log: the proof verifies offline, outside
/// every scope, with only the host's public key and the trust store, and says who
/// authorized it; the same proof with one byte changed is refused with the reason.
fn an_exec_is_proven_offline_and_a_changed_proof_is_refused(env: &Env) {
    let kit = Kit::new("proof");
    let host = kit.out("host");
    enforcer_ok(env, &["key", "generate", "--out", &host]);
    let host_key = format!("{host}.key");
    let args = [
        "--host-key",
        &host_key,
        "--audit-origin",
        "vm.example/proof",
    ];
    let (tool, proof) = prove_an_exec(env, &kit, "proven", &args);
    let verify = |file: &str| {
        run_tool(env.enforcer().args([
            "proof",
            "verify",
            file,
            "--host-key",
            &format!("{host}.pub"),
            "--trust",
            &kit.trust.display().to_string(),
        ]))
    };
    let (code, out) = verify(&proof);
    assert!(code == 0, "proof verify exited {code}: {out}");
    for expected in [
        "PROVEN: record seq",
        "vm.example/proof",
        "decision: allow",
        &tool.display().to_string(),
        "bundle proven serial 1 of issuer vm-proven",
        "signed by TEST-ONLY-alice, TEST-ONLY-bob",
        "it grants that sha256 in that scope",
    ] {
        assert!(out.contains(expected), "{expected:?} is not in:\n{out}");
    }
    // One byte of the record changed: the last letter of the tool's name.
    let text = std::fs::read_to_string(&proof).expect("read the proof");
    let changed = text.replacen("proven-tool\\\"", "proven-toom\\\"", 1);
    assert!(changed != text, "the proof does not name the tool:\n{text}");
    let forged = kit.out("forged.proof.json");
    std::fs::write(&forged, changed).expect("write the changed proof");
    let (code, out) = verify(&forged);
    assert!(
        code == 1 && out.contains("REFUSED (record-altered)"),
        "a changed record was not refused (exit {code}): {out}"
    );
    // The same checks again on the host, by a verifier that never saw the VM.
    for (name, path) in [
        ("proof/exec.proof.json", Path::new(&proof)),
        ("proof/forged.proof.json", Path::new(&forged)),
        ("proof/host.pub", Path::new(&format!("{host}.pub"))),
        ("proof/trust.toml", kit.trust.as_path()),
    ] {
        export(name, path);
    }
}

/// The agent sends its checkpoints to a real witness (`enforcer witness serve` on
/// loopback): proofs carry its cosignature and a verifier can require it. Then the log is
/// forked (its first record rewritten, the tree rebuilt and re-signed with the host key):
/// the witness refuses the new checkpoint as inconsistent, and nothing new is cosigned.
fn a_witness_cosigns_checkpoints_and_refuses_a_forked_log(env: &Env) {
    const ORIGIN: &str = "vm.example/witnessed";
    const WITNESS: &str = "vm.example/witness";
    const LISTEN: &str = "127.0.0.1:7380";
    let kit = Kit::new("witnessed");
    let (host, witness_key) = (kit.out("host"), kit.out("witness"));
    enforcer_ok(env, &["key", "generate", "--out", &host]);
    enforcer_ok(env, &["key", "generate", "--out", &witness_key]);
    let witness_key = format!("{witness_key}.key");
    let witness_vkey = enforcer_ok(
        env,
        &["witness", "vkey", "--key", &witness_key, "--name", WITNESS],
    );
    let witness_vkey = witness_vkey.trim().to_owned();
    let log_vkey = enforcer_ok(
        env,
        &[
            "audit",
            "vkey",
            "--key",
            &format!("{host}.pub"),
            "--origin",
            ORIGIN,
        ],
    );
    let logs = kit.out("witness-logs");
    std::fs::write(&logs, log_vkey).expect("write the witness's log list");
    let witness_log = kit.work.join("witness.log");
    let mut witness = std::process::Command::new(env.enforcer().get_program())
        .args([
            "witness",
            "serve",
            "--listen",
            LISTEN,
            "--key",
            &witness_key,
            "--name",
            WITNESS,
        ])
        .args(["--logs", &logs, "--state", &kit.out("witness-state")])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&witness_log).expect("witness log"))
        .spawn()
        .expect("start the witness");
    within(Duration::from_secs(10), || {
        std::net::TcpStream::connect(LISTEN)
            .map(drop)
            .map_err(|e| format!("witness not listening: {e}"))
    });
    let agent_args = [
        "--host-key".to_owned(),
        format!("{host}.key"),
        "--audit-origin".to_owned(),
        ORIGIN.to_owned(),
        "--witness".to_owned(),
        format!("http://{LISTEN}={witness_vkey}"),
    ];
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let (_, proof) = prove_an_exec(env, &kit, "witnessed", &agent_args);
    let cosigned_path = kit.audit_dir().join("checkpoint.cosigned");
    let cosigned = std::fs::read_to_string(&cosigned_path).unwrap_or_else(|e| {
        panic!(
            "no cosigned checkpoint ({e}); witness said:\n{}",
            read(&witness_log)
        )
    });
    assert!(
        cosigned.contains(&format!("\u{2014} {WITNESS} ")),
        "not cosigned:\n{cosigned}"
    );

    let trust = kit.trust.display().to_string();
    let out = enforcer_ok(
        env,
        &[
            "proof",
            "verify",
            &proof,
            "--host-key",
            &format!("{host}.pub"),
            "--trust",
            &trust,
            "--witness",
            &witness_vkey,
        ],
    );
    assert!(
        out.contains(&format!("cosigned by witness {WITNESS}")),
        "{out}"
    );

    // Fork the log as a holder of the host key would: its first record rewritten, every
    // checkpoint re-signed, its tree heads left out and the tiles dropped; the agent then
    // signs the forged tree afresh. (Without the key, the agent refuses to sign over a
    // changed log: the tree would not match its last signed head.)
    let key = enforcer::authz::trust::SigningKey::load(Path::new(&format!("{host}.key")))
        .expect("the host key");
    enforcer::audit::testkit::forge_history(&kit.audit_dir().join("audit-000001.jsonl"), &key);
    std::fs::remove_dir_all(kit.audit_dir().join("tile")).expect("remove the tiles");
    let agent = kit.agent_with(env, &agent_args);
    agent.stop();
    assert!(
        read(&cosigned_path) == cosigned,
        "the forked log's checkpoint was cosigned:\n{}",
        read(&cosigned_path)
    );
    let said = read(&witness_log);
    assert!(
        said.contains("not consistent with the one this witness cosigned"),
        "the witness did not refuse the fork:\n{said}"
    );
    let _ = witness.kill();
    let _ = witness.wait();
}

/// Runs a granted copy of the probe, `NAME-tool`, in the scope under an agent started
/// with `agent_args`, stops the agent (its shutdown checkpoint covers the decision, and
/// goes to any witness before it exits) and proves the exec. Returns the tool and the
/// proof file.
fn prove_an_exec(env: &Env, kit: &Kit, name: &str, agent_args: &[&str]) -> (PathBuf, String) {
    let tool = copy_executable(&env.probe, &kit.work.join(format!("bin/{name}-tool")));
    let bundle = kit.bundle(env, name, std::slice::from_ref(&tool), &[]);
    let mut agent = kit.agent_with(env, agent_args);
    enforcer_ok(env, &["push", &bundle]);
    expect_exit(Some(LIVE), &tool, PROBE_EXIT);
    let decision = agent.decision_for(&tool);
    expect_field(&decision, "decision", "allow");
    agent.stop();
    let exec = format!(
        "{}:{}",
        decision["boot_id"].as_str().expect("boot_id"),
        decision["exec_id"].as_u64().expect("exec_id")
    );
    let audit = kit.audit_dir().display().to_string();
    let proof = kit.out(&format!("{name}.proof.json"));
    enforcer_ok(
        env,
        &[
            "audit", "--dir", &audit, "prove", "--exec", &exec, "--out", &proof,
        ],
    );
    (tool, proof)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs after every other scenario, whatever the order: it reads the logs they left.
pub(super) const AFTER_ALL: &[super::Scenario] =
    scenarios![every_audit_log_of_the_suite_replays_as_recorded];

/// Where the suite's agents keep their logs: the scenarios' own directories, and the
/// agent's default for those that start it without `--audit-dir`.
const LOG_ROOTS: [&str; 2] = [WORK, enforcer::paths::AUDIT_DIR];

fn every_audit_log_of_the_suite_replays_as_recorded(env: &Env) {
    // Every log the suite wrote, decided again from its own records under what was in
    // force at each moment: the kernel's decisions and enforcer_common::decide agree on
    // every one. Logs that `audit verify` refuses were altered on purpose by their
    // scenario (the tamper scenarios); replay's premise is a log that verifies.
    let mut logs = Vec::new();
    for root in LOG_ROOTS {
        find_logs(Path::new(root), 6, &mut logs);
    }
    let (mut decisions, mut redecided, mut altered) = (0u64, 0u64, Vec::new());
    let mut mismatches = Vec::new();
    for dir in &logs {
        let (code, _) = run_tool(
            env.enforcer()
                .arg("audit")
                .arg("--dir")
                .arg(dir)
                .arg("verify"),
        );
        if code != 0 {
            altered.push(dir.display().to_string());
            continue;
        }
        let out = env
            .enforcer()
            .arg("audit")
            .arg("--dir")
            .arg(dir)
            .args(["replay", "--as-recorded", "--json"])
            .output()
            .unwrap_or_else(|e| panic!("run enforcer audit replay: {e}"));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "replay of {} printed no report ({e}): {}{}",
                dir.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let count = |k: &str| report[k].as_u64().unwrap_or_default();
        decisions += count("decisions");
        redecided += count("redecided");
        if let Some(found) = report["mismatches"].as_array().filter(|m| !m.is_empty()) {
            mismatches.push(format!("{}: {found:?}", dir.display()));
        }
    }
    if redecided == 0 {
        std::panic::panic_any(crate::support::Unavailable(format!(
            "the {} audit log(s) found hold no decision replay can decide again: run this \
             after the other scenarios",
            logs.len()
        )));
    }
    println!(
        "replayed {} audit log(s): {decisions} decision(s), {redecided} decided again; \
         {} log(s) altered on purpose and refused by audit verify: {altered:?}",
        logs.len() - altered.len(),
        altered.len()
    );
    assert!(
        mismatches.is_empty(),
        "replay --as-recorded disagrees with the kernel's recorded decisions:\n{}",
        mismatches.join("\n")
    );
}

/// Directories under `dir` (at most `depth` levels down) that hold an audit log.
fn find_logs(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut holds_log = false;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("audit-") && name.ends_with(".jsonl") {
            holds_log = true;
        } else if depth > 0
            && entry
                .file_type()
                .is_ok_and(|t| t.is_dir() && !t.is_symlink())
        {
            find_logs(&path, depth - 1, out);
        }
    }
    if holds_log {
        out.push(dir.to_path_buf());
    }
}
