//! Scenarios for the agent as a service: live updates through the control socket and the
//! bundle directory, revocation, expiry with the agent dead, `on_revoke = "kill"`,
//! break-glass, restarts, the configuration file and the systemd protocol.
//!
//! Each builds its artifacts with the real CLI and the example TEST-ONLY keys, runs a
//! real `enforcer run`, and asserts on what a user observes: exit codes, errnos, signals,
//! the agent's answers.

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

/// The scope these scenarios govern; only signed artifacts grant anything in it.
const LIVE: &str = "vmtest-live";
const SOCKET: &str = "/run/enforcer/control.sock";

/// A fresh work area with keys, a bundle directory and a state directory.
struct Kit {
    work: PathBuf,
    keys: PathBuf,
    trust: PathBuf,
    bundle_dir: PathBuf,
    state: PathBuf,
}

impl Kit {
    fn new(name: &str) -> Result<Self, String> {
        let work = Path::new(WORK).join("service").join(name);
        let _ = std::fs::remove_dir_all(&work);
        let keys = work.join("keys");
        copy_test_keys(&keys)?;
        Ok(Self {
            trust: Path::new(POLICIES).join("trust.toml"),
            bundle_dir: work.join("bundles"),
            state: work.join("state"),
            keys,
            work,
        })
    }

    fn key(&self, who: &str) -> String {
        self.keys.join(format!("{who}.key")).display().to_string()
    }

    fn out(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }

    /// A bundle for LIVE granting `programs` and their libraries, signed by alice and bob.
    fn bundle(
        &self,
        env: &Env,
        id: &str,
        programs: &[PathBuf],
        extra: &[&str],
    ) -> Result<String, String> {
        let out = self.out(&format!("{id}.bundle.json"));
        let closure = enforcer::elf::with_dependencies(programs).map_err(|e| e.to_string())?;
        let files: Vec<String> = closure.iter().map(|p| p.display().to_string()).collect();
        let scope = format!("/{LIVE}");
        // Serials count per issuer and scope, and a higher one supersedes: each line of
        // bundles here gets its own issuer so that they can hold together.
        let issuer = format!("vm-{id}");
        let mut args = vec![
            "bundle",
            "create",
            "--issuer",
            &issuer,
            "--bundle-id",
            id,
            "--serial",
            "1",
        ];
        args.extend(["--scope", scope.as_str(), "--out", out.as_str()]);
        if !extra.contains(&"--valid-for") {
            args.extend(["--valid-for", "1h"]);
        }
        args.extend(extra);
        for f in &files {
            args.extend(["--file", f.as_str()]);
        }
        enforcer_ok(env, &args)?;
        enforcer_ok(env, &["bundle", "sign", "--key", &self.key("alice"), &out])?;
        enforcer_ok(env, &["bundle", "sign", "--key", &self.key("bob"), &out])?;
        Ok(out)
    }

    /// A revocation of bundle id `id`, signed by carol.
    fn revocation(&self, env: &Env, id: &str) -> Result<String, String> {
        let out = self.out(&format!("{id}.revocation.json"));
        enforcer_ok(
            env,
            &[
                "revoke",
                "create",
                "--issuer",
                "security",
                "--bundle-id",
                id,
                "--out",
                &out,
            ],
        )?;
        enforcer_ok(env, &["revoke", "sign", "--key", &self.key("carol"), &out])?;
        Ok(out)
    }

    /// A break-glass artifact for LIVE, valid for `valid_for`, signed by carol.
    fn break_glass(&self, env: &Env, valid_for: &str) -> Result<String, String> {
        let out = self.out("break-glass.json");
        let scope = format!("/{LIVE}");
        enforcer_ok(
            env,
            &[
                "break-glass",
                "create",
                "--issuer",
                "oncall",
                "--scope",
                &scope,
                "--valid-for",
                valid_for,
                "--reason",
                "vm test: incident 42",
                "--out",
                &out,
            ],
        )?;
        enforcer_ok(
            env,
            &["break-glass", "sign", "--key", &self.key("carol"), &out],
        )?;
        Ok(out)
    }

    /// `enforcer run` on signed artifacts, governing LIVE.
    fn agent(&self, env: &Env) -> Result<Agent, String> {
        let audit = self.work.join("audit");
        let scope = format!("/{LIVE}");
        Agent::spawn(
            env.enforcer()
                .args(["run", "--json", "--trust"])
                .arg(&self.trust)
                .arg("--bundle-dir")
                .arg(&self.bundle_dir)
                .arg("--state-dir")
                .arg(&self.state)
                .arg("--audit-dir")
                .arg(&audit)
                .args(["--scope", &scope, "--socket", SOCKET]),
        )
    }
}

/// Puts the shared unsigned policy back for the scenarios that follow: a signed agent
/// makes the maps hold exactly its own policy.
pub fn restore(env: &Env, result: Check) -> Check {
    let restored = load_policy(env).map(|_| ());
    result.and(restored)
}

/// Stops an agent with SIGTERM, returning `result` unless stopping failed.
fn stop(agent: Agent, result: Check) -> Check {
    agent.signal(libc::SIGTERM);
    let code = agent.wait()?;
    result?;
    if code == Some(0) {
        Ok(())
    } else {
        Err(format!("agent exited {code:?} on SIGTERM"))
    }
}

/// Repeats `check` every 50 ms until it passes or `limit` has passed; returns how long it
/// took.
fn within(limit: Duration, check: impl Fn() -> Check) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return Ok(started.elapsed()),
            Err(e) if started.elapsed() > limit => {
                return Err(format!("not within {limit:?}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub fn pushed_bundle_allows_while_agent_runs(env: &Env) -> Check {
    let kit = Kit::new("push")?;
    let agent = kit.agent(env)?;
    let result = (|| {
        // Declared and covered by nothing yet: everything is denied.
        expect_eperm(Some(LIVE), &env.probe)?;
        let bundle = kit.bundle(env, "live-probe", std::slice::from_ref(&env.probe), &[])?;
        let out = enforcer_ok(env, &["push", &bundle])?;
        if !out.contains("live-probe") {
            return Err(format!("push did not name the bundle: {out}"));
        }
        // `push` returns once the kernel enforces it.
        expect_exit(Some(LIVE), &env.probe, PROBE_EXIT)?;
        let list = enforcer_ok(env, &["list", "--json"])?;
        if !list.contains("\"bundle_id\":\"live-probe\"") {
            return Err(format!("list does not show the pushed bundle: {list}"));
        }
        // A bundle dropped into the bundle directory takes effect too.
        expect_eperm(Some(LIVE), &env.unlisted)?;
        let dropped = kit.bundle(
            env,
            "live-unlisted",
            std::slice::from_ref(&env.unlisted),
            &[],
        )?;
        std::fs::copy(&dropped, kit.bundle_dir.join("dropped.json")).map_err(|e| e.to_string())?;
        within(Duration::from_secs(5), || {
            expect_exit(Some(LIVE), &env.unlisted, UNLISTED_EXIT)
        })?;
        // A bundle that fails verification is refused by name and grants nothing.
        let mut forged = std::fs::read(&dropped).map_err(|e| e.to_string())?;
        let at = forged.len() / 2;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged_path = kit.out("forged.json");
        std::fs::write(&forged_path, forged).map_err(|e| e.to_string())?;
        let (code, out) = run_tool(env.enforcer().args(["push", &forged_path]))?;
        if code == 0 || !out.contains("forged.json") || !out.contains("refused") {
            return Err(format!("forged push exited {code}: {out}"));
        }
        expect_exit(Some(LIVE), &env.probe, PROBE_EXIT)
    })();
    stop(agent, result)
}

pub fn revocation_denies_within_a_second(env: &Env) -> Check {
    let kit = Kit::new("revoke")?;
    let agent = kit.agent(env)?;
    let result = (|| {
        let bundle = kit.bundle(env, "to-revoke", std::slice::from_ref(&env.probe), &[])?;
        enforcer_ok(env, &["push", &bundle])?;
        expect_exit(Some(LIVE), &env.probe, PROBE_EXIT)?;
        let revocation = kit.revocation(env, "to-revoke")?;
        let started = Instant::now();
        let out = enforcer_ok(env, &["revoke", &revocation])?;
        expect_eperm(Some(LIVE), &env.probe)?;
        let via_socket = started.elapsed();
        if via_socket > Duration::from_secs(1) {
            return Err(format!(
                "revoked grant denied only after {via_socket:?}: {out}"
            ));
        }
        // The same through the bundle directory.
        let second = kit.bundle(env, "to-revoke-2", std::slice::from_ref(&env.probe), &[])?;
        enforcer_ok(env, &["push", &second])?;
        expect_exit(Some(LIVE), &env.probe, PROBE_EXIT)?;
        let revocation = kit.revocation(env, "to-revoke-2")?;
        std::fs::copy(&revocation, kit.bundle_dir.join("dropped-revocation.json"))
            .map_err(|e| e.to_string())?;
        let via_dir = within(Duration::from_secs(1), || {
            expect_eperm(Some(LIVE), &env.probe)
        })?;
        println!(
            "    revocation denied after: {via_socket:?} via the socket, {via_dir:?} via the bundle directory"
        );
        Ok(())
    })();
    stop(agent, result)
}

pub fn withdrawn_bundle_leaves_its_scopes_governed(env: &Env) -> Check {
    let kit = Kit::new("undeclared")?;
    let undeclared = format!("{LIVE}-undeclared");
    std::fs::create_dir_all(cgroup(&undeclared)).map_err(|e| e.to_string())?;
    let agent = kit.agent(env)?;
    let result = (|| {
        // No one governs it yet.
        expect_exit(Some(&undeclared), &env.unlisted, UNLISTED_EXIT)?;
        let scope = format!("/{undeclared}");
        let bundle = kit.bundle(
            env,
            "names-undeclared",
            std::slice::from_ref(&env.probe),
            &["--scope", &scope],
        )?;
        enforcer_ok(env, &["push", &bundle])?;
        expect_exit(Some(&undeclared), &env.probe, PROBE_EXIT)?;
        expect_eperm(Some(&undeclared), &env.unlisted)?;
        // Revoking its only bundle must not set the scope free: it denies everything.
        let revocation = kit.revocation(env, "names-undeclared")?;
        enforcer_ok(env, &["revoke", &revocation])?;
        expect_eperm(Some(&undeclared), &env.probe)?;
        expect_eperm(Some(&undeclared), &env.unlisted)
    })();
    let result = stop(agent, result);
    // Still governed by the next agent, which remembers it.
    let agent = kit.agent(env)?;
    let after_restart = expect_eperm(Some(&undeclared), &env.unlisted);
    stop(agent, result.and(after_restart))
}

pub fn expired_grant_denies_with_agent_killed(env: &Env) -> Check {
    let kit = Kit::new("expiry")?;
    let agent = kit.agent(env)?;
    const LIFE: Duration = Duration::from_secs(12);
    let bundle = kit.bundle(
        env,
        "short-lived",
        std::slice::from_ref(&env.probe),
        &["--valid-for", "12s"],
    )?;
    let pushed = Instant::now();
    let result = enforcer_ok(env, &["push", &bundle])
        .and_then(|_| expect_exit(Some(LIVE), &env.probe, PROBE_EXIT));
    // Nobody is left to withdraw the grant: the kernel has to expire it on its own.
    agent.signal(libc::SIGKILL);
    agent.wait()?;
    result?;
    if pushed.elapsed() < LIFE {
        expect_exit(Some(LIVE), &env.probe, PROBE_EXIT)?;
    }
    std::thread::sleep((LIFE + Duration::from_secs(1)).saturating_sub(pushed.elapsed()));
    expect_eperm(Some(LIVE), &env.probe)
}

/// Starts `busybox sleep 300` in LIVE.
fn sleeper_in_scope() -> Result<Child, String> {
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["sleep", "300"]);
    enforcer::cgroup::spawn_into(&mut cmd, &cgroup(LIVE)).map_err(|e| e.to_string())?;
    cmd.spawn()
        .map_err(|e| format!("starting sleep in scope: {e}"))
}

/// Waits up to `limit` for `child` to end, which must be by SIGKILL.
fn expect_killed(child: &mut Child, limit: Duration, context: &str) -> Check {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.signal() == Some(libc::SIGKILL) => return Ok(()),
            Some(status) => {
                return Err(format!(
                    "sleep in scope ended with {status}, not SIGKILL ({context})"
                ));
            }
            None if Instant::now() > deadline => {
                return Err(format!(
                    "sleep in scope still runs after {limit:?} ({context})"
                ));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

pub fn on_revoke_kill_terminates_running_process(env: &Env) -> Check {
    let kit = Kit::new("kill")?;
    let busybox = PathBuf::from("/bin/busybox");
    let agent = kit.agent(env)?;
    let mut children: Vec<Child> = Vec::new();
    let result = (|| {
        let bundle = kit.bundle(
            env,
            "killable",
            std::slice::from_ref(&busybox),
            &["--on-revoke", "kill"],
        )?;
        enforcer_ok(env, &["push", &bundle])?;
        children.push(sleeper_in_scope()?);
        // The same program outside every scope was not started under the bundle.
        children.push(
            Command::new(&busybox)
                .args(["sleep", "300"])
                .spawn()
                .map_err(|e| e.to_string())?,
        );
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = children[0].try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "sleep in scope ended before the revocation: {status}"
            ));
        }
        let revocation = kit.revocation(env, "killable")?;
        let out = enforcer_ok(env, &["revoke", &revocation])?;
        // Killed before `revoke` returned (reaping it here may lag a moment).
        expect_killed(
            &mut children[0],
            Duration::from_millis(500),
            &format!("revoke said: {out}"),
        )?;
        if !out.contains("killed") {
            return Err(format!("revoke did not report the kill: {out}"));
        }
        if let Some(status) = children[1].try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the process outside every scope died too: {status}"
            ));
        }
        // Expiry withdraws an authorization too: its processes go when it ends.
        let brief = kit.bundle(
            env,
            "killable-brief",
            std::slice::from_ref(&busybox),
            &["--on-revoke", "kill", "--valid-for", "8s"],
        )?;
        let pushed = Instant::now();
        enforcer_ok(env, &["push", &brief])?;
        children.push(sleeper_in_scope()?);
        let left = Duration::from_secs(8).saturating_sub(pushed.elapsed());
        expect_killed(
            &mut children[2],
            left + Duration::from_secs(3),
            "bundle expired",
        )
    })();
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    stop(agent, result)
}

pub fn break_glass_expires_back_to_enforce(env: &Env) -> Check {
    let kit = Kit::new("break-glass")?;
    let agent = kit.agent(env)?;
    const LIFE: Duration = Duration::from_secs(15);
    let mut pushed = Instant::now();
    let result = (|| {
        expect_eperm(Some(LIVE), &env.unlisted)?;
        let artifact = kit.break_glass(env, "15s")?;
        pushed = Instant::now();
        enforcer_ok(env, &["push", &artifact])?;
        // Monitor mode: what would be denied runs, and is recorded.
        expect_exit(Some(LIVE), &env.unlisted, UNLISTED_EXIT)?;
        let status = enforcer_ok(env, &["status"])?;
        if !status.contains("break-glass") {
            return Err(format!("status does not show the break-glass: {status}"));
        }
        Ok(())
    })();
    // The revert must not depend on the agent.
    agent.signal(libc::SIGKILL);
    agent.wait()?;
    result?;
    std::thread::sleep((LIFE + Duration::from_secs(1)).saturating_sub(pushed.elapsed()));
    expect_eperm(Some(LIVE), &env.unlisted)
}

pub fn agent_restart_mid_exec_stream_loses_no_enforcement(env: &Env) -> Check {
    let kit = Kit::new("restart")?;
    let agent = kit.agent(env)?;
    let bundle = kit.bundle(env, "steady", std::slice::from_ref(&env.probe), &[]);
    let pushed = bundle.and_then(|b| enforcer_ok(env, &["push", &b]));
    if let Err(e) = pushed {
        return stop(agent, Err(e));
    }
    // A stream of execs in the scope: the granted one must always run, the other never.
    let stop_flag = Arc::new(AtomicBool::new(false));
    let (runs, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stream = {
        let (stop_flag, runs, wrong) = (stop_flag.clone(), runs.clone(), wrong.clone());
        let (probe, unlisted) = (env.probe.clone(), env.unlisted.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop_flag.load(Ordering::Relaxed) {
                for check in [
                    expect_exit(Some(LIVE), &probe, PROBE_EXIT),
                    expect_eperm(Some(LIVE), &unlisted),
                ] {
                    runs.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = check {
                        wrong.fetch_add(1, Ordering::Relaxed);
                        failures.push(e);
                    }
                }
            }
            failures
        })
    };
    // Stop it (SIGTERM), start again, kill it (SIGKILL), start again: all mid-stream.
    std::thread::sleep(Duration::from_secs(1));
    agent.signal(libc::SIGTERM);
    let mut result = agent.wait().map(|_| ());
    for kill in [true, false] {
        if result.is_err() {
            break;
        }
        result = kit.agent(env).and_then(|next| {
            std::thread::sleep(Duration::from_secs(1));
            next.signal(if kill { libc::SIGKILL } else { libc::SIGTERM });
            next.wait().map(|_| ())
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    stop_flag.store(true, Ordering::Relaxed);
    let failures = stream
        .join()
        .map_err(|_| "exec stream panicked".to_string())?;
    result?;
    let (runs, wrong) = (runs.load(Ordering::Relaxed), wrong.load(Ordering::Relaxed));
    if wrong > 0 {
        return Err(format!(
            "{wrong} of {runs} execs decided wrongly across restarts: {failures:?}"
        ));
    }
    if runs < 10 {
        return Err(format!(
            "only {runs} execs during the restarts: the stream did not run"
        ));
    }
    println!("    {runs} execs across 3 agent restarts, all decided right");
    Ok(())
}

/// Reads notifications until one equals `want` (each datagram may hold several lines).
fn expect_notification(sock: &UnixDatagram, want: &str, timeout: Duration) -> Check {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        ))
        .map_err(|e| e.to_string())?;
        let Ok(n) = sock.recv(&mut buf) else { break };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.lines().any(|l| l == want) {
            return Ok(());
        }
        seen.push(text);
    }
    Err(format!(
        "no {want} notification within {timeout:?}; got {seen:?}"
    ))
}

fn status_json(env: &Env) -> Result<serde_json::Value, String> {
    let out = enforcer_ok(env, &["status", "--json"])?;
    serde_json::from_str(out.lines().last().unwrap_or_default()).map_err(|e| format!("{e}: {out}"))
}

pub fn service_runs_from_config_notifies_and_reloads(env: &Env) -> Check {
    let kit = Kit::new("config")?;
    let notify_path = kit.work.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).map_err(|e| e.to_string())?;
    let config = kit.work.join("config.toml");
    let write_config = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "trust = {:?}\nbundle_dir = {:?}\nstate_dir = {:?}\naudit_dir = {:?}\nsocket = {SOCKET:?}\n\
                 [[scope]]\npath = \"/{LIVE}\"\n{extra}",
                kit.trust.display().to_string(),
                kit.bundle_dir.display().to_string(),
                kit.state.display().to_string(),
                kit.work.join("audit").display().to_string(),
            ),
        )
        .map_err(|e| e.to_string())
    };
    write_config("")?;
    let mut child = env
        .enforcer()
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id() as i32;
    let signal = |sig| {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, sig) };
    };
    let result = (|| {
        expect_notification(&notify, "READY=1", AGENT_READY)?;
        expect_notification(&notify, "WATCHDOG=1", Duration::from_secs(3))?;
        expect_eperm(Some(LIVE), &env.probe)?;
        let status = status_json(env)?;
        let scopes = status["scopes"].as_array().cloned().unwrap_or_default();
        if !scopes
            .iter()
            .any(|s| s["path"] == format!("/{LIVE}") && s["denies_everything"] == true)
        {
            return Err(format!(
                "status does not say the declared scope denies everything: {status}"
            ));
        }
        // SIGHUP: a second scope, in monitor mode for a rollout.
        write_config(&format!(
            "[[scope]]\npath = \"/{LIVE}-rollout\"\nmode = \"monitor\"\n"
        ))?;
        signal(libc::SIGHUP);
        expect_notification(&notify, "RELOADING=1", Duration::from_secs(10))?;
        expect_notification(&notify, "READY=1", Duration::from_secs(10))?;
        std::fs::create_dir_all(cgroup(&format!("{LIVE}-rollout"))).map_err(|e| e.to_string())?;
        expect_exit(
            Some(&format!("{LIVE}-rollout")),
            &env.unlisted,
            UNLISTED_EXIT,
        )?;
        let status = status_json(env)?;
        let rollout = status["scopes"]
            .as_array()
            .and_then(|s| {
                s.iter()
                    .find(|s| s["path"] == format!("/{LIVE}-rollout"))
                    .cloned()
            })
            .ok_or_else(|| format!("reloaded scope missing from status: {status}"))?;
        if rollout["mode"] != "monitor" {
            return Err(format!("rollout scope not in monitor mode: {rollout}"));
        }
        // A broken configuration keeps the previous one in force and says why.
        std::fs::write(&config, "this is = not toml [").map_err(|e| e.to_string())?;
        signal(libc::SIGHUP);
        expect_notification(&notify, "READY=1", Duration::from_secs(10))?;
        let status = status_json(env)?;
        if !status["agent"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("config.toml"))
        {
            return Err(format!(
                "status does not report the broken config: {status}"
            ));
        }
        expect_eperm(Some(LIVE), &env.probe)?;
        Ok(())
    })();
    signal(libc::SIGTERM);
    let stopping = expect_notification(&notify, "STOPPING=1", Duration::from_secs(10));
    let code = child.wait().map_err(|e| e.to_string())?.code();
    result?;
    stopping?;
    if code != Some(0) {
        return Err(format!("agent exited {code:?} on SIGTERM"));
    }
    // SIGTERM left enforcement on.
    expect_eperm(Some(LIVE), &env.probe)
}

pub fn control_socket_is_root_only(env: &Env) -> Check {
    let kit = Kit::new("socket")?;
    let agent = kit.agent(env)?;
    let result = (|| {
        let bundle = kit.bundle(env, "from-nobody", std::slice::from_ref(&env.probe), &[])?;
        std::fs::set_permissions(&kit.work, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;
        let as_nobody = |what: &str| {
            let mut cmd = env.enforcer();
            cmd.args(["push", &bundle]).uid(65534).gid(65534);
            let (code, out) = run_tool(&mut cmd)?;
            if code == 0 {
                return Err(format!("push as uid 65534 ({what}) succeeded: {out}"));
            }
            Ok(out)
        };
        // First barrier: the socket's directory and mode.
        as_nobody("socket mode 0600")?;
        // Second barrier: even with the socket opened up by mistake, the peer's
        // credentials are checked.
        let dir = Path::new(SOCKET).parent().expect("socket dir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::set_permissions(SOCKET, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| e.to_string())?;
        let out = as_nobody("socket opened to everyone");
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let _ = std::fs::set_permissions(SOCKET, std::fs::Permissions::from_mode(0o600));
        let out = out?;
        if !out.contains("only root") {
            return Err(format!("peer check did not refuse by credentials: {out}"));
        }
        expect_eperm(Some(LIVE), &env.probe)
    })();
    stop(agent, result)
}
