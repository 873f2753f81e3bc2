//! The agent as a service: loading, status, restarts and `unload`; live updates through
//! the control socket and the bundle directory, revocation, expiry with the agent dead,
//! `on_revoke = "kill"`, break-glass, the configuration file and the systemd protocol.
//!
//! The live scenarios build their artifacts with the real CLI and the example TEST-ONLY
//! keys (`support::signed::Kit`), run a real `enforcer run`, and assert on what a user
//! observes: exit codes, errnos, signals, the agent's answers.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use enforcer::authz::artifact::Mode;
use enforcer::service::http::Readiness;
use vm_tests::{PROBE_EXIT, UNLISTED_EXIT};

use crate::support::agent::Agent;
use crate::support::audit::{audit_records, find_key};
use crate::support::policy::{enforce_shared_policy, load_policy};
use crate::support::run::{
    Reaped, check_eperm, check_exit, enforcer_ok, expect_eperm, expect_exit, run_tool, within,
};
use crate::support::service::{
    ExecStream, expect_killed, expect_notification, http_get, listing, notify_socket,
    run_with_config, set_mode, sleeper_in_scope, socket_opened_up, status, write_kit_config,
};
use crate::support::signed::{Kit, LIVE};
use crate::support::{AGENT_READY, Env, SCOPE, WORK, cgroup, export};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![
    agent_loads_policy,
    pushed_bundle_allows_while_agent_runs,
    revocation_denies_within_a_second,
    withdrawn_bundle_leaves_its_scopes_governed,
    expired_grant_denies_with_agent_killed,
    on_revoke_kill_terminates_running_process,
    break_glass_expires_back_to_enforce,
    agent_restart_mid_exec_stream_loses_no_enforcement,
    service_runs_from_config_notifies_and_reloads,
    control_socket_is_root_only,
    enforcement_survives_agent_kill,
    restart_reuses_pinned_program,
    unload_stops_enforcement,
    http_window_tells_readiness_and_counts_decisions,
    http_api_streams_pages_and_traces_a_denial,
];

fn agent_loads_policy(env: &Env) {
    let out = load_policy(env);
    assert!(
        out.contains("self-test passed"),
        "no self-test report in output:\n{out}"
    );
    let (code, status) = run_tool(env.enforcer().arg("status"));
    assert!(
        code == 0 && status.contains(&format!("scope /{SCOPE} ")),
        "status exited {code}:\n{status}"
    );
}

fn pushed_bundle_allows_while_agent_runs(env: &Env) {
    let kit = Kit::new("push");
    let agent = kit.agent(env);
    // Declared and covered by nothing yet: everything is denied.
    expect_eperm(Some(LIVE), &env.probe);
    let bundle = kit.bundle(env, "live-probe", std::slice::from_ref(&env.probe), &[]);
    let out = enforcer_ok(env, &["push", &bundle]);
    assert!(
        out.contains("live-probe"),
        "push did not name the bundle: {out}"
    );
    // `push` returns once the kernel enforces it.
    expect_exit(Some(LIVE), &env.probe, PROBE_EXIT);
    let list = listing(env);
    assert!(
        list.bundles.iter().any(|b| b.bundle_id == "live-probe"),
        "list does not show the pushed bundle: {list:?}"
    );
    // A bundle dropped into the bundle directory takes effect too.
    expect_eperm(Some(LIVE), &env.unlisted);
    let dropped = kit.bundle(
        env,
        "live-unlisted",
        std::slice::from_ref(&env.unlisted),
        &[],
    );
    std::fs::copy(&dropped, kit.bundle_dir.join("dropped.json"))
        .expect("copy the bundle into the bundle directory");
    within(Duration::from_secs(5), || {
        check_exit(Some(LIVE), &env.unlisted, UNLISTED_EXIT)
    });
    // A bundle that fails verification is refused by name and grants nothing.
    let mut forged = std::fs::read(&dropped).expect("read the dropped bundle");
    let at = forged.len() / 2;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged_path = kit.out("forged.json");
    std::fs::write(&forged_path, forged).expect("write the forged bundle");
    let (code, out) = run_tool(env.enforcer().args(["push", &forged_path]));
    assert!(
        code != 0 && out.contains("forged.json") && out.contains("refused"),
        "forged push exited {code}: {out}"
    );
    expect_exit(Some(LIVE), &env.probe, PROBE_EXIT);
    agent.stop();
}

fn revocation_denies_within_a_second(env: &Env) {
    let kit = Kit::new("revoke");
    let agent = kit.agent(env);
    let bundle = kit.bundle(env, "to-revoke", std::slice::from_ref(&env.probe), &[]);
    enforcer_ok(env, &["push", &bundle]);
    expect_exit(Some(LIVE), &env.probe, PROBE_EXIT);
    let revocation = kit.revocation(env, "to-revoke");
    let started = Instant::now();
    let out = enforcer_ok(env, &["revoke", &revocation]);
    expect_eperm(Some(LIVE), &env.probe);
    let via_socket = started.elapsed();
    assert!(
        via_socket <= Duration::from_secs(1),
        "revoked grant denied only after {via_socket:?}: {out}"
    );
    // The same through the bundle directory.
    let second = kit.bundle(env, "to-revoke-2", std::slice::from_ref(&env.probe), &[]);
    enforcer_ok(env, &["push", &second]);
    expect_exit(Some(LIVE), &env.probe, PROBE_EXIT);
    let revocation = kit.revocation(env, "to-revoke-2");
    std::fs::copy(&revocation, kit.bundle_dir.join("dropped-revocation.json"))
        .expect("copy the revocation into the bundle directory");
    let via_dir = within(Duration::from_secs(1), || {
        check_eperm(Some(LIVE), &env.probe)
    });
    println!(
        "    revocation denied after: {via_socket:?} via the socket, {via_dir:?} via the bundle directory"
    );
    agent.stop();
}

fn withdrawn_bundle_leaves_its_scopes_governed(env: &Env) {
    let kit = Kit::new("undeclared");
    let undeclared = format!("{LIVE}-undeclared");
    std::fs::create_dir_all(cgroup(&undeclared))
        .unwrap_or_else(|e| panic!("mkdir cgroup {undeclared}: {e}"));
    let agent = kit.agent(env);
    // No one governs it yet.
    expect_exit(Some(&undeclared), &env.unlisted, UNLISTED_EXIT);
    let scope = format!("/{undeclared}");
    let bundle = kit.bundle(
        env,
        "names-undeclared",
        std::slice::from_ref(&env.probe),
        &["--scope", &scope],
    );
    enforcer_ok(env, &["push", &bundle]);
    expect_exit(Some(&undeclared), &env.probe, PROBE_EXIT);
    expect_eperm(Some(&undeclared), &env.unlisted);
    // Revoking its only bundle must not set the scope free: it denies everything.
    let revocation = kit.revocation(env, "names-undeclared");
    enforcer_ok(env, &["revoke", &revocation]);
    expect_eperm(Some(&undeclared), &env.probe);
    expect_eperm(Some(&undeclared), &env.unlisted);
    agent.stop();
    // Still governed by the next agent, which remembers it.
    let agent = kit.agent(env);
    expect_eperm(Some(&undeclared), &env.unlisted);
    agent.stop();
}

fn expired_grant_denies_with_agent_killed(env: &Env) {
    let kit = Kit::new("expiry");
    let agent = kit.agent(env);
    const LIFE: Duration = Duration::from_secs(12);
    let bundle = kit.bundle(
        env,
        "short-lived",
        std::slice::from_ref(&env.probe),
        &["--valid-for", "12s"],
    );
    let pushed = Instant::now();
    enforcer_ok(env, &["push", &bundle]);
    expect_exit(Some(LIVE), &env.probe, PROBE_EXIT);
    // Nobody is left to withdraw the grant: the kernel has to expire it on its own.
    agent.kill();
    if pushed.elapsed() < LIFE {
        expect_exit(Some(LIVE), &env.probe, PROBE_EXIT);
    }
    std::thread::sleep((LIFE + Duration::from_secs(1)).saturating_sub(pushed.elapsed()));
    expect_eperm(Some(LIVE), &env.probe);
}

fn on_revoke_kill_terminates_running_process(env: &Env) {
    let kit = Kit::new("kill");
    let busybox = PathBuf::from("/bin/busybox");
    let agent = kit.agent(env);
    let bundle = kit.bundle(
        env,
        "killable",
        std::slice::from_ref(&busybox),
        &["--on-revoke", "kill"],
    );
    enforcer_ok(env, &["push", &bundle]);
    let mut in_scope = sleeper_in_scope();
    // The same program outside every scope was not started under the bundle.
    let mut outside = Reaped(
        Command::new(&busybox)
            .args(["sleep", "300"])
            .spawn()
            .unwrap_or_else(|e| panic!("starting sleep outside scopes: {e}")),
    );
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = in_scope.0.try_wait().expect("try_wait on sleep in scope") {
        panic!("sleep in scope ended before the revocation: {status}");
    }
    let revocation = kit.revocation(env, "killable");
    let out = enforcer_ok(env, &["revoke", &revocation]);
    // Killed before `revoke` returned (reaping it here may lag a moment).
    expect_killed(
        &mut in_scope.0,
        Duration::from_millis(500),
        &format!("revoke said: {out}"),
    );
    assert!(
        out.contains("killed"),
        "revoke did not report the kill: {out}"
    );
    if let Some(status) = outside.0.try_wait().expect("try_wait on sleep outside") {
        panic!("the process outside every scope died too: {status}");
    }
    // Expiry withdraws an authorization too: its processes go when it ends.
    let brief = kit.bundle(
        env,
        "killable-brief",
        std::slice::from_ref(&busybox),
        &["--on-revoke", "kill", "--valid-for", "8s"],
    );
    let pushed = Instant::now();
    enforcer_ok(env, &["push", &brief]);
    let mut brief_sleeper = sleeper_in_scope();
    let left = Duration::from_secs(8).saturating_sub(pushed.elapsed());
    expect_killed(
        &mut brief_sleeper.0,
        left + Duration::from_secs(3),
        "bundle expired",
    );
    drop((in_scope, outside, brief_sleeper));
    agent.stop();
}

fn break_glass_expires_back_to_enforce(env: &Env) {
    let kit = Kit::new("break-glass");
    let agent = kit.agent(env);
    const LIFE: Duration = Duration::from_secs(15);
    expect_eperm(Some(LIVE), &env.unlisted);
    let artifact = kit.break_glass(env, "15s");
    let pushed = Instant::now();
    enforcer_ok(env, &["push", &artifact]);
    // Monitor mode: what would be denied runs, and is recorded.
    expect_exit(Some(LIVE), &env.unlisted, UNLISTED_EXIT);
    let status = enforcer_ok(env, &["status"]);
    assert!(
        status.contains("break-glass"),
        "status does not show the break-glass: {status}"
    );
    // The revert must not depend on the agent.
    agent.kill();
    std::thread::sleep((LIFE + Duration::from_secs(1)).saturating_sub(pushed.elapsed()));
    expect_eperm(Some(LIVE), &env.unlisted);
}

fn agent_restart_mid_exec_stream_loses_no_enforcement(env: &Env) {
    let kit = Kit::new("restart");
    let agent = kit.agent(env);
    let bundle = kit.bundle(env, "steady", std::slice::from_ref(&env.probe), &[]);
    enforcer_ok(env, &["push", &bundle]);
    let stream = ExecStream::start(env);
    // Stop it (SIGTERM), start again, kill it (SIGKILL), start again: all mid-stream.
    std::thread::sleep(Duration::from_secs(1));
    agent.signal(libc::SIGTERM);
    agent.wait();
    for kill in [true, false] {
        let next = kit.agent(env);
        std::thread::sleep(Duration::from_secs(1));
        next.signal(if kill { libc::SIGKILL } else { libc::SIGTERM });
        next.wait();
    }
    std::thread::sleep(Duration::from_millis(500));
    let (runs, wrong, failures) = stream.finish();
    assert!(
        wrong == 0,
        "{wrong} of {runs} execs decided wrongly across restarts: {failures:?}"
    );
    assert!(
        runs >= 10,
        "only {runs} execs during the restarts: the stream did not run"
    );
    println!("    {runs} execs across 3 agent restarts, all decided right");
}

fn service_runs_from_config_notifies_and_reloads(env: &Env) {
    let kit = Kit::new("config");
    let (notify, notify_path) = notify_socket(&kit);
    let config = kit.work.join("config.toml");
    let write_config = |extra: &str| write_kit_config(&kit, &config, extra);
    write_config("");
    let mut agent = run_with_config(env, &config, &notify_path);
    let pid = agent.0.id() as i32;
    let signal = |sig| {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, sig) };
    };
    expect_notification(&notify, "READY=1", AGENT_READY);
    expect_notification(&notify, "WATCHDOG=1", Duration::from_secs(3));
    expect_eperm(Some(LIVE), &env.probe);
    let report = status(env);
    assert!(
        report
            .scopes
            .iter()
            .any(|s| s.path == format!("/{LIVE}") && s.denies_everything),
        "status does not say the declared scope denies everything: {report:?}"
    );
    // SIGHUP: a second scope, in monitor mode for a rollout.
    write_config(&format!(
        "[[scope]]\npath = \"/{LIVE}-rollout\"\nmode = \"monitor\"\n"
    ));
    signal(libc::SIGHUP);
    expect_notification(&notify, "RELOADING=1", Duration::from_secs(10));
    expect_notification(&notify, "READY=1", Duration::from_secs(10));
    let rollout_cgroup = cgroup(&format!("{LIVE}-rollout"));
    std::fs::create_dir_all(&rollout_cgroup)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", rollout_cgroup.display()));
    expect_exit(
        Some(&format!("{LIVE}-rollout")),
        &env.unlisted,
        UNLISTED_EXIT,
    );
    let report = status(env);
    let rollout = report
        .scopes
        .iter()
        .find(|s| s.path == format!("/{LIVE}-rollout"))
        .unwrap_or_else(|| panic!("reloaded scope missing from status: {report:?}"));
    assert!(
        rollout.mode == Mode::Monitor,
        "rollout scope not in monitor mode: {rollout:?}"
    );
    // A broken configuration keeps the previous one in force and says why.
    std::fs::write(&config, "this is = not toml [")
        .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
    signal(libc::SIGHUP);
    expect_notification(&notify, "READY=1", Duration::from_secs(10));
    let report = status(env);
    assert!(
        report
            .agent
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("config.toml")),
        "status does not report the broken config: {report:?}"
    );
    expect_eperm(Some(LIVE), &env.probe);
    signal(libc::SIGTERM);
    expect_notification(&notify, "STOPPING=1", Duration::from_secs(10));
    let code = agent
        .0
        .wait()
        .unwrap_or_else(|e| panic!("cannot wait for the agent: {e}"))
        .code();
    assert!(code == Some(0), "agent exited {code:?} on SIGTERM");
    // SIGTERM left enforcement on.
    expect_eperm(Some(LIVE), &env.probe);
}

fn control_socket_is_root_only(env: &Env) {
    let kit = Kit::new("socket");
    let agent = kit.agent(env);
    let bundle = kit.bundle(env, "from-nobody", std::slice::from_ref(&env.probe), &[]);
    set_mode(&kit.work, 0o755);
    set_mode(Path::new(&bundle), 0o644);
    let push_as_nobody = |what: &str| {
        let mut cmd = env.enforcer();
        cmd.args(["push", &bundle]).uid(65534).gid(65534);
        let (code, out) = run_tool(&mut cmd);
        assert!(code != 0, "push as uid 65534 ({what}) succeeded: {out}");
        out
    };
    // First barrier: the socket's directory and mode.
    push_as_nobody("socket mode 0600");
    // Second barrier: even with the socket opened up by mistake, the peer's
    // credentials are checked.
    let out = {
        let _opened = socket_opened_up();
        push_as_nobody("socket opened to everyone")
    };
    assert!(
        out.contains("only root"),
        "peer check did not refuse by credentials: {out}"
    );
    expect_eperm(Some(LIVE), &env.probe);
    agent.stop();
}

fn enforcement_survives_agent_kill(env: &Env) {
    // The agent loads the shared policy itself.
    Agent::start(env).kill();
    expect_eperm(Some(SCOPE), &env.unlisted);
    expect_exit(Some(SCOPE), &env.probe, PROBE_EXIT);
}

fn restart_reuses_pinned_program(env: &Env) {
    enforce_shared_policy(env);
    let out = load_policy(env);
    assert!(
        out.contains("reusing pinned"),
        "second load did not reuse the pinned program:\n{out}"
    );
    expect_eperm(Some(SCOPE), &env.unlisted);
}

fn unload_stops_enforcement(env: &Env) {
    enforce_shared_policy(env);
    let (code, out) = run_tool(env.enforcer().arg("unload"));
    assert!(code == 0, "unload exited {code}: {out}");
    expect_exit(Some(SCOPE), &env.unlisted, UNLISTED_EXIT);
    let (code, out) = run_tool(env.enforcer().arg("status"));
    assert!(code == 3, "status after unload exited {code}: {out}");
}

fn http_window_tells_readiness_and_counts_decisions(env: &Env) {
    let (agent, _notify, ready, audit) = http_agent(env, "http");
    let readiness: Readiness = serde_json::from_str(&ready)
        .unwrap_or_else(|e| panic!("/readyz is not a readiness report: {e}: {ready}"));
    assert!(
        readiness.ready,
        "/readyz answered 200 but says: {readiness:?}"
    );
    let (code, health) = http_get(HTTP_ADDR, "/healthz");
    assert!(
        code == 200 && health.contains("\"alive\":true"),
        "/healthz: {code} {health}"
    );
    // A denial in the scope shows in the decision counters, labelled by scope.
    expect_eperm(Some(LIVE), &env.probe);
    let scope = format!("scope=\"/{LIVE}\"");
    let metrics = poll_http("/metrics", Duration::from_secs(10), |code, body| {
        code == 200
            && body.lines().any(|l| {
                l.starts_with("enforcer_decisions_total{")
                    && l.contains(&scope)
                    && l.contains("decision=\"deny\"")
            })
    });
    assert!(
        metrics.trim_end().ends_with("# EOF"),
        "/metrics is not OpenMetrics text: {metrics}"
    );
    export_metrics_and_audit_counts(env, &audit);
    // Readiness tells the truth: with the programs unloaded from outside, it is 503 and
    // names the check.
    let (code, out) = run_tool(env.enforcer().arg("unload"));
    assert!(code == 0, "unload exited {code}: {out}");
    let gone = poll_http("/readyz", Duration::from_secs(10), |code, _| code == 503);
    let readiness: Readiness = serde_json::from_str(&gone)
        .unwrap_or_else(|e| panic!("/readyz is not a readiness report: {e}: {gone}"));
    assert!(
        readiness
            .checks
            .iter()
            .any(|c| c.name == "program" && !c.ok),
        "/readyz is 503 but does not name the unloaded program: {readiness:?}"
    );
    drop(agent);
}

fn http_api_streams_pages_and_traces_a_denial(env: &Env) {
    use std::io::{Read as _, Write as _};

    let (agent, _notify, _, _) = http_agent(env, "http-api");

    // A stream opened before the denial sees it, from the agent's own feed.
    let scope = format!("/{LIVE}");
    let mut stream = std::net::TcpStream::connect(HTTP_ADDR).expect("connect to the window");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .write_all(
            format!(
                "GET /api/v1/decisions/stream?decision=deny&scope={scope} HTTP/1.1\r\nHost: \
                 {HTTP_ADDR}\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("send the stream request");
    let mut seen = String::new();
    let mut read_until = |seen: &mut String, done: &dyn Fn(&str) -> bool| {
        let mut buf = [0u8; 4096];
        while !done(seen) {
            let n = stream
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("reading the decision stream: {e}; so far: {seen}"));
            assert!(n > 0, "the decision stream ended; so far: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    read_until(&mut seen, &|s| s.contains(": decisions follow"));
    assert!(
        seen.starts_with("HTTP/1.1 200"),
        "the stream did not open: {seen}"
    );
    expect_eperm(Some(LIVE), &env.probe);
    const DATA: &str = "event: decision\ndata: ";
    read_until(&mut seen, &|s| {
        s.split_once(DATA)
            .is_some_and(|(_, rest)| rest.contains('\n'))
    });
    let line = seen
        .split_once(DATA)
        .and_then(|(_, rest)| rest.split('\n').next())
        .expect("a data line");
    let record: enforcer::audit::Record = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the stream's data is not a record: {e}: {line}"));
    let enforcer::audit::Body::Decision(denied) = &record.body else {
        panic!("the stream sent a {}: {line}", record.body.kind());
    };
    assert!(
        denied.decision == "deny" && denied.scope.as_deref() == Some(scope.as_str()),
        "the streamed decision is not the probe's denial: {line}"
    );

    // The same record is in the log, through the paged, filtered view.
    let page = poll_http(
        &format!("/api/v1/decisions?decision=deny&scope={scope}&limit=10"),
        Duration::from_secs(10),
        |code, body| code == 200 && body.contains(&format!("\"seq\":{},", record.seq)),
    );
    let page: enforcer::service::http::api::DecisionPage = serde_json::from_str(&page)
        .unwrap_or_else(|e| panic!("/api/v1/decisions is not a page: {e}: {page}"));
    assert!(
        page.decisions.contains(&record),
        "the page holds another record under seq {}: {page:?}",
        record.seq
    );

    let (code, body) = http_get(HTTP_ADDR, "/api/v1/status");
    let report: enforcer::service::control::protocol::StatusReport = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/api/v1/status: {code} is not a status report: {e}: {body}"));
    assert!(
        report.enforcing && report.scopes.iter().any(|s| s.path == scope),
        "/api/v1/status does not show {scope} enforced: {report:?}"
    );

    let (code, body) = http_get(
        HTTP_ADDR,
        &format!("/api/v1/lineage/{}:{}", denied.boot_id, denied.exec_id),
    );
    let family: enforcer::audit::query::Family = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/api/v1/lineage: {code} is not a lineage: {e}: {body}"));
    assert!(
        matches!(
            family.lineage.steps.first(),
            Some(enforcer::audit::query::Step::Logged { seq, .. }) if *seq == record.seq
        ),
        "the lineage does not start with the denied exec: {body}"
    );
    drop(agent);
}

/// Where the scenario's agent listens.
const HTTP_ADDR: &str = "127.0.0.1:9464";

/// Known execs (three more denials in LIVE), then `/metrics` once its counters hold them,
/// and the decisions of the agent's audit log counted by the same labels, both handed to
/// the host: there a real OpenMetrics parser reads the text, and its counters must equal
/// the log's (`the-vm-agents-metrics-parse-as-openmetrics-and-match-its-audit-log`,
/// in xtask's exported.rs).
fn export_metrics_and_audit_counts(env: &Env, audit: &Path) {
    for _ in 0..3 {
        expect_eperm(Some(LIVE), &env.probe);
    }
    let denials = |body: &str| -> u64 {
        body.lines()
            .filter(|l| {
                l.starts_with("enforcer_decisions_total{")
                    && l.contains(&format!("scope=\"/{LIVE}\""))
                    && l.contains("decision=\"deny\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let metrics = poll_http("/metrics", Duration::from_secs(10), |code, body| {
        code == 200 && denials(body) == 4
    });
    // The agent appends a decision to the log before it counts it; the log's file may
    // trail by a flush, so read it until it holds the four too. Nothing else runs in LIVE.
    let live_denials = format!("/{LIVE}|deny|");
    let found = std::cell::RefCell::new(std::collections::BTreeMap::new());
    within(Duration::from_secs(10), || {
        let counts = decision_counts(env, audit);
        let denied: u64 = counts
            .iter()
            .filter(|(k, _)| k.starts_with(&live_denials))
            .map(|(_, n)| n)
            .sum();
        *found.borrow_mut() = counts;
        if denied == 4 {
            Ok(())
        } else {
            Err(format!(
                "the audit log holds {denied} of the 4 denials in /{LIVE}"
            ))
        }
    });
    let counts = found.into_inner();
    let dir = Path::new(WORK).join("metrics-export");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let text = dir.join("metrics.txt");
    std::fs::write(&text, &metrics).unwrap_or_else(|e| panic!("write: {e}"));
    let logged = dir.join("audit-counts.json");
    std::fs::write(&logged, serde_json::to_vec(&counts).expect("json"))
        .unwrap_or_else(|e| panic!("write: {e}"));
    export("metrics/metrics.txt", &text);
    export("metrics/audit-counts.json", &logged);
}

/// The decisions of the audit log in `dir`, counted by `scope|decision|reason|hook` as
/// `/metrics` labels them (a decision of no known scope is `unknown` there).
fn decision_counts(env: &Env, dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for record in audit_records(env, dir) {
        let field = |k: &str| {
            find_key(&record, k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        if field("kind").as_deref() != Some("decision") {
            continue;
        }
        let key = [
            field("scope").unwrap_or_else(|| "unknown".to_owned()),
            field("decision").unwrap_or_default(),
            field("reason").unwrap_or_default(),
            field("hook").unwrap_or_default(),
        ]
        .join("|");
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// An agent of a fresh kit `name` with the HTTP window on [`HTTP_ADDR`], once it has told
/// systemd it is ready and `/readyz` answers 200 (the loop has drained the ring buffer
/// and the checks have run); also its notification socket (keep it while the agent
/// runs), that answer and its audit directory.
fn http_agent(env: &Env, name: &str) -> (Reaped, UnixDatagram, String, PathBuf) {
    let kit = Kit::new(name);
    let (notify, notify_path) = notify_socket(&kit);
    let config = kit.work.join("config.toml");
    write_kit_config(
        &kit,
        &config,
        &format!("[http]\nlisten = \"{HTTP_ADDR}\"\n"),
    );
    let agent = run_with_config(env, &config, &notify_path);
    expect_notification(&notify, "READY=1", AGENT_READY);
    let ready = poll_http("/readyz", Duration::from_secs(15), |code, _| code == 200);
    (agent, notify, ready, kit.audit_dir())
}

/// GETs `path` until `done(status, body)` holds or `limit` passes; returns the body.
#[track_caller]
fn poll_http(path: &str, limit: Duration, done: impl Fn(u16, &str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (code, body) = http_get(HTTP_ADDR, path);
        if done(code, &body) {
            return body;
        }
        assert!(
            start.elapsed() < limit,
            "GET {path} did not answer as expected within {limit:?}; last: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
