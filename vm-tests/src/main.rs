//! Runs inside the test VM as root (see `cargo xtask vm-test`): drives the real `enforcer`
//! binary and asserts on what a user would observe — exit codes, errnos and reported
//! decisions. Prints `PASS name` / `FAIL name: why` per scenario and a closing
//! `vm-tests: N passed, N failed` line.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_tests::{PROBE_EXIT, UNLISTED_EXIT, attack};

mod service;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Enforcing scope: grants probe, busybox (the shell) and one script.
const SCOPE: &str = "vmtest";
/// Enforcing scope that grants the script and probe but not the interpreter.
const NO_INTERPRETER_SCOPE: &str = "vmtest-nointerp";
/// Monitor-mode scope: grants probe; everything else is allowed and reported.
const MONITOR_SCOPE: &str = "vmtest-monitor";
/// Enforcing scope that opts in to anonymous executable memory and fileless code.
const JIT_SCOPE: &str = "vmtest-jit";
/// The dynamic loader on x86_64 glibc systems.
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
const WORK: &str = "/tmp/vmtest";
const SCRIPT_EXIT: i32 = 5;
/// How long a background agent may take to report ready under TCG.
const AGENT_READY: Duration = Duration::from_secs(60);

type Check = Result<(), String>;

/// Where things are inside the VM (overridable for running on a spare machine).
struct Env {
    enforcer: PathBuf,
    probe: PathBuf,
    unlisted: PathBuf,
    attacks: PathBuf,
    policy: PathBuf,
}

impl Env {
    fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.into()))
        };
        let fixtures = var("ENFORCER_TEST_FIXTURES", "/usr/libexec/enforcer-tests");
        Self {
            enforcer: var("ENFORCER_BIN", "/usr/bin/enforcer"),
            probe: fixtures.join("probe"),
            unlisted: fixtures.join("unlisted"),
            attacks: fixtures.join("attacks"),
            policy: Path::new(WORK).join("policy.toml"),
        }
    }

    fn enforcer(&self) -> Command {
        Command::new(&self.enforcer)
    }
}

/// What happened when we tried to run a program.
#[derive(Debug)]
enum Outcome {
    Exited(i32),
    Signalled,
    /// execve failed in the child with this errno (std reports it from spawn).
    ExecFailed(i32),
}

fn cgroup(scope: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(scope)
}

/// Runs `cmd` in the cgroup `scope` (None: stay in the runner's cgroup, which no policy
/// governs), returning what happened and its output.
fn run_cmd(scope: Option<&str>, cmd: &mut Command) -> (Outcome, String) {
    if let Some(scope) = scope {
        enforcer::cgroup::spawn_into(cmd, &cgroup(scope)).expect("prepare cgroup move");
    }
    match cmd.output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (
                out.status
                    .code()
                    .map_or(Outcome::Signalled, Outcome::Exited),
                text,
            )
        }
        Err(e) => (
            Outcome::ExecFailed(e.raw_os_error().unwrap_or(-1)),
            String::new(),
        ),
    }
}

fn run_in(scope: Option<&str>, program: &Path) -> Outcome {
    run_cmd(scope, &mut Command::new(program)).0
}

/// Runs the attacks fixture and checks its exit code.
fn expect_attack(env: &Env, scope: Option<&str>, args: &[&str], code: i32) -> Check {
    let (outcome, output) = run_cmd(scope, Command::new(&env.attacks).args(args));
    match outcome {
        Outcome::Exited(c) if c == code => Ok(()),
        other => Err(format!(
            "attacks {args:?} in {scope:?}: expected exit {code}, got {other:?}: {output}"
        )),
    }
}

fn expect_exit(scope: Option<&str>, program: &Path, code: i32) -> Check {
    match run_in(scope, program) {
        Outcome::Exited(c) if c == code => Ok(()),
        other => Err(format!(
            "{} in {scope:?}: expected exit {code}, got {other:?}",
            program.display()
        )),
    }
}

fn expect_eperm(scope: Option<&str>, program: &Path) -> Check {
    match run_in(scope, program) {
        Outcome::ExecFailed(libc::EPERM) => Ok(()),
        other => Err(format!(
            "{} in {scope:?}: expected EPERM, got {other:?}",
            program.display()
        )),
    }
}

fn copy_executable(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, to).expect("copy fixture");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to.to_path_buf()
}

fn write_script(name: &str, body: &str) -> PathBuf {
    let path = Path::new(WORK).join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn granted_script() -> PathBuf {
    Path::new(WORK).join("granted.sh")
}

fn ungranted_script() -> PathBuf {
    Path::new(WORK).join("ungranted.sh")
}

/// Writes the scripts and the policy every scenario relies on.
fn prepare(env: &Env) {
    std::fs::create_dir_all(WORK).expect("work dir");
    write_script("granted.sh", &format!("exit {SCRIPT_EXIT}"));
    write_script("ungranted.sh", &format!("exit {}", SCRIPT_EXIT + 1));
    let probe = env.probe.display();
    let script = granted_script();
    let script = script.display();
    let attacks = env.attacks.display();
    // Every scope grants its programs' loader and libraries (with_libraries), since
    // executable mappings are checked too.
    let policy = format!(
        "[[scope]]\npath = \"/{SCOPE}\"\nwith_libraries = true\n\
         files = [\"{probe}\", \"{attacks}\", \"/bin/busybox\", \"{script}\"]\n\n\
         [[scope]]\npath = \"/{NO_INTERPRETER_SCOPE}\"\nwith_libraries = true\nfiles = [\"{probe}\", \"{script}\"]\n\n\
         [[scope]]\npath = \"/{MONITOR_SCOPE}\"\nmode = \"monitor\"\nwith_libraries = true\nfiles = [\"{probe}\"]\n\n\
         [[scope]]\npath = \"/{JIT_SCOPE}\"\nwith_libraries = true\nallow_anonymous_exec = true\n\
         allow_fileless = true\nfiles = [\"{probe}\", \"{attacks}\"]\n"
    );
    std::fs::write(&env.policy, policy).expect("write policy");
}

/// Runs a command to completion, returning its exit code and combined output.
fn run_tool(cmd: &mut Command) -> Result<(i32, String), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

fn load_policy(env: &Env) -> Result<String, String> {
    let (code, text) = run_tool(
        env.enforcer()
            .arg("load")
            .arg("--unsigned-policy")
            .arg(&env.policy),
    )?;
    if code == 0 {
        Ok(text)
    } else {
        Err(format!("enforcer load exited {code}:\n{text}"))
    }
}

/// A background `enforcer run` whose stdout lines arrive on a channel.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn start(env: &Env) -> Result<Self, String> {
        Self::start_with(env, &[])
    }

    fn start_with(env: &Env, extra: &[&str]) -> Result<Self, String> {
        let policy = env.policy.display().to_string();
        let mut args = vec!["--unsigned-policy", policy.as_str()];
        args.extend(extra);
        Self::spawn(env.enforcer().args(["run", "--json"]).args(args))
    }

    /// Starts `cmd` (an `enforcer run --json ...`) and waits until it follows decisions.
    fn spawn(cmd: &mut Command) -> Result<Self, String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start enforcer run: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Self { child, lines };
        agent
            .wait_for(AGENT_READY, |l| l.starts_with("following decisions"))
            .map(|_| agent)
    }

    /// Waits for a line matching `pred`, returning it.
    fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err("timed out waiting for agent output".into());
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!("agent exited early ({status})"));
                }
            }
        }
    }

    /// Waits for a JSON decision about `path`.
    fn decision_for(&mut self, path: &Path) -> Result<serde_json::Value, String> {
        let want = path.display().to_string();
        let line = self.wait_for(Duration::from_secs(20), |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["path"] == want.as_str())
        })?;
        serde_json::from_str(&line).map_err(|e| e.to_string())
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    fn wait(mut self) -> Result<Option<i32>, String> {
        self.child
            .wait()
            .map(|s| s.code())
            .map_err(|e| e.to_string())
    }
}

fn field_is(v: &serde_json::Value, key: &str, want: &str) -> Check {
    if v[key] == want {
        Ok(())
    } else {
        Err(format!("expected {key}={want}, got {v}"))
    }
}

// ---- scenarios, in the order they run -------------------------------------------------

fn agent_loads_policy(env: &Env) -> Check {
    let out = load_policy(env)?;
    if !out.contains("self-test passed") {
        return Err(format!("no self-test report in output:\n{out}"));
    }
    let (code, status) = run_tool(env.enforcer().arg("status"))?;
    if code != 0 || !status.contains(&format!("scope /{SCOPE} ")) {
        return Err(format!("status exited {code}:\n{status}"));
    }
    Ok(())
}

fn allowed_binary_runs_in_scope(env: &Env) -> Check {
    expect_exit(Some(SCOPE), &env.probe, PROBE_EXIT)
}

fn unlisted_binary_denied_in_scope(env: &Env) -> Check {
    expect_eperm(Some(SCOPE), &env.unlisted)
}

fn unlisted_binary_runs_outside_scopes(env: &Env) -> Check {
    expect_exit(None, &env.unlisted, UNLISTED_EXIT)
}

fn copy_of_allowed_binary_runs(env: &Env) -> Check {
    let copy = copy_executable(&env.probe, &Path::new(WORK).join("elsewhere/renamed-tool"));
    expect_exit(Some(SCOPE), &copy, PROBE_EXIT)
}

fn allowed_binary_changed_by_one_byte_denied(env: &Env) -> Check {
    let copy = copy_executable(&env.probe, &Path::new(WORK).join("tampered/probe"));
    let mut bytes = std::fs::read(&copy).expect("read copy");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&copy, &bytes).expect("write tampered");
    expect_eperm(Some(SCOPE), &copy)
}

fn cached_digest_follows_an_in_place_change(env: &Env) -> Check {
    // The kernel caches a file's digest; a change through the same inode (no truncation,
    // no rename) must still make it ungranted.
    let copy = copy_executable(&env.probe, &Path::new(WORK).join("inplace/probe"));
    expect_exit(Some(SCOPE), &copy, PROBE_EXIT)?;
    expect_exit(Some(SCOPE), &copy, PROBE_EXIT)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .map_err(|e| e.to_string())?;
    let last = file.metadata().map_err(|e| e.to_string())?.len() - 1;
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, last).map_err(|e| e.to_string())?;
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 1], last)
        .map_err(|e| e.to_string())?;
    drop(file);
    expect_eperm(Some(SCOPE), &copy)
}

fn child_cgroup_is_governed(env: &Env) -> Check {
    let child = format!("{SCOPE}/child/grandchild");
    std::fs::create_dir_all(cgroup(&child)).map_err(|e| format!("mkdir child cgroup: {e}"))?;
    expect_eperm(Some(&child), &env.unlisted)?;
    expect_exit(Some(&child), &env.probe, PROBE_EXIT)
}

fn script_runs_when_script_and_interpreter_granted(_: &Env) -> Check {
    expect_exit(Some(SCOPE), &granted_script(), SCRIPT_EXIT)
}

fn script_denied_when_script_not_granted(_: &Env) -> Check {
    // The interpreter (busybox) is granted here; the script is not.
    expect_eperm(Some(SCOPE), &ungranted_script())
}

fn script_denied_when_interpreter_not_granted(env: &Env) -> Check {
    expect_exit(Some(NO_INTERPRETER_SCOPE), &env.probe, PROBE_EXIT)?;
    expect_eperm(Some(NO_INTERPRETER_SCOPE), &granted_script())
}

fn monitor_scope_allows_ungranted(env: &Env) -> Check {
    expect_exit(Some(MONITOR_SCOPE), &env.unlisted, UNLISTED_EXIT)
}

fn ld_so_cannot_run_an_unlisted_binary(env: &Env) -> Check {
    let unlisted = env.unlisted.to_str().expect("utf-8 path");
    // The loader itself is granted (a library of every granted program); mapping the
    // unlisted program is not.
    let (outcome, output) = run_cmd(Some(SCOPE), Command::new(LD_SO).arg(unlisted));
    if !matches!(outcome, Outcome::Exited(127)) || output.contains("unlisted ran") {
        return Err(format!(
            "ld.so ./unlisted in scope: expected the loader to fail (127), got {outcome:?}: {output}"
        ));
    }
    match run_cmd(None, Command::new(LD_SO).arg(unlisted)).0 {
        Outcome::Exited(UNLISTED_EXIT) => Ok(()),
        other => Err(format!(
            "ld.so ./unlisted outside scopes should run it, got {other:?}"
        )),
    }
}

fn ld_preload_of_unlisted_library_refused(env: &Env) -> Check {
    // An unlisted library: a real one (so it loads fine outside scopes) with one byte more.
    let closure =
        enforcer::elf::with_dependencies(&[env.probe.clone()]).map_err(|e| e.to_string())?;
    let real = closure
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libgcc_s"))
        })
        .ok_or_else(|| format!("probe links no libgcc_s: {closure:?}"))?;
    let evil = Path::new(WORK).join("preload/libevil.so");
    copy_executable(real, &evil);
    let mut bytes = std::fs::read(&evil).expect("read");
    bytes.push(0);
    std::fs::write(&evil, bytes).expect("write");
    let preload = |scope| run_cmd(scope, Command::new(&env.probe).env("LD_PRELOAD", &evil));
    let (outcome, output) = preload(Some(SCOPE));
    if !matches!(outcome, Outcome::Exited(PROBE_EXIT)) || !output.contains("cannot be preloaded") {
        return Err(format!(
            "LD_PRELOAD in scope: expected the loader to refuse the library, got {outcome:?}: {output}"
        ));
    }
    let (outcome, output) = preload(None);
    if matches!(outcome, Outcome::Exited(PROBE_EXIT)) && !output.contains("cannot be preloaded") {
        Ok(())
    } else {
        Err(format!(
            "LD_PRELOAD outside scopes should load the library, got {outcome:?}: {output}"
        ))
    }
}

fn memfd_exec_denied(env: &Env) -> Check {
    // The memfd holds a granted program: fileless execution is refused regardless.
    let probe = env.probe.to_str().expect("utf-8 path");
    expect_attack(env, Some(SCOPE), &["memfd-exec", probe], attack::EPERM)?;
    expect_attack(env, Some(JIT_SCOPE), &["memfd-exec", probe], PROBE_EXIT)
}

fn deleted_file_exec_denied(env: &Env) -> Check {
    let probe = Path::new(WORK).join("deleted/probe");
    copy_executable(&env.probe, &probe);
    let probe = probe.to_str().expect("utf-8 path");
    expect_attack(env, Some(SCOPE), &["deleted-exec", probe], attack::EPERM)?;
    expect_attack(env, Some(JIT_SCOPE), &["deleted-exec", probe], PROBE_EXIT)
}

fn anonymous_executable_memory_denied(env: &Env) -> Check {
    expect_attack(env, Some(SCOPE), &["anon-rwx"], attack::EPERM)?;
    expect_attack(env, Some(SCOPE), &["mprotect-exec"], attack::EPERM)?;
    // A granted file mapped writable and executable is no better than anonymous memory.
    let probe = env.probe.to_str().expect("utf-8 path");
    expect_attack(env, Some(SCOPE), &["wx-file", probe], attack::EPERM)?;
    expect_attack(
        env,
        Some(JIT_SCOPE),
        &["wx-file", probe],
        attack::INJECTED_CODE,
    )?;
    expect_attack(env, Some(JIT_SCOPE), &["anon-rwx"], attack::INJECTED_CODE)?;
    expect_attack(
        env,
        Some(JIT_SCOPE),
        &["mprotect-exec"],
        attack::INJECTED_CODE,
    )?;
    expect_attack(env, None, &["anon-rwx"], attack::INJECTED_CODE)
}

/// A long-lived process outside every scope, as a target.
fn bystander() -> Child {
    Command::new("/bin/sleep")
        .arg("60")
        .spawn()
        .expect("start bystander")
}

fn ptrace_and_proc_mem_denied(env: &Env) -> Check {
    let mut target = bystander();
    let pid = target.id().to_string();
    let result = (|| {
        expect_attack(env, Some(SCOPE), &["ptrace", &pid], attack::EPERM)?;
        expect_attack(env, Some(SCOPE), &["proc-mem", &pid], attack::EPERM)?;
        expect_attack(env, Some(SCOPE), &["self-mem"], attack::EPERM)?;
        expect_attack(env, None, &["self-mem"], attack::WORKED)?;
        // The same techniques work outside scopes: the refusal is enforcer's.
        expect_attack(env, None, &["ptrace", &pid], attack::WORKED)?;
        expect_attack(env, None, &["proc-mem", &pid], attack::WORKED)
    })();
    let _ = target.kill();
    let _ = target.wait();
    result
}

fn leaving_the_scope_and_unpinning_denied(env: &Env) -> Check {
    let elsewhere = cgroup("vmtest-elsewhere");
    std::fs::create_dir_all(&elsewhere).map_err(|e| e.to_string())?;
    let elsewhere = elsewhere.to_str().expect("utf-8");
    expect_attack(
        env,
        Some(SCOPE),
        &["cgroup-escape", elsewhere],
        attack::EPERM,
    )?;
    // Outside every scope the same move works: the refusal is enforcer's.
    expect_attack(env, None, &["cgroup-escape", elsewhere], attack::WORKED)?;
    let pin = format!(
        "{}/link-bprm_check_security",
        enforcer::kernel::DEFAULT_PIN_DIR
    );
    expect_attack(env, Some(SCOPE), &["unpin", &pin], attack::EPERM)?;
    if !Path::new(&pin).exists() {
        return Err(format!("{pin} is gone"));
    }
    expect_eperm(Some(SCOPE), &env.unlisted)
}

fn bpf_syscall_denied(env: &Env) -> Check {
    expect_attack(env, Some(SCOPE), &["bpf"], attack::EPERM)?;
    expect_attack(env, None, &["bpf"], attack::WORKED)
}

fn agent_cannot_be_signalled(env: &Env) -> Check {
    let agent = Agent::start(env)?;
    let pid = agent.child.id().to_string();
    let attempt = expect_attack(env, Some(SCOPE), &["kill", &pid], attack::EPERM);
    agent.signal(libc::SIGTERM);
    let code = agent.wait()?;
    attempt?;
    if code == Some(0) {
        Ok(())
    } else {
        Err(format!("agent exited {code:?} on the runner's SIGTERM"))
    }
}

fn decisions_are_reported(env: &Env) -> Check {
    // Fresh paths, so records left in the ring buffer by earlier scenarios cannot match.
    let denied = copy_executable(&env.unlisted, &Path::new(WORK).join("report/denied-tool"));
    let allowed = copy_executable(&env.probe, &Path::new(WORK).join("report/allowed-tool"));
    let monitored = copy_executable(
        &env.unlisted,
        &Path::new(WORK).join("report/monitored-tool"),
    );
    let mut agent = Agent::start(env)?;
    let result = (|| {
        expect_eperm(Some(SCOPE), &denied)?;
        let d = agent.decision_for(&denied)?;
        field_is(&d, "decision", "deny")?;
        field_is(&d, "reason", "not-granted")?;
        field_is(&d, "scope", &format!("/{SCOPE}"))?;
        expect_exit(Some(SCOPE), &allowed, PROBE_EXIT)?;
        let a = agent.decision_for(&allowed)?;
        field_is(&a, "decision", "allow")?;
        field_is(&a, "reason", "granted")?;
        expect_exit(Some(MONITOR_SCOPE), &monitored, UNLISTED_EXIT)?;
        let m = agent.decision_for(&monitored)?;
        field_is(&m, "decision", "would-deny")
    })();
    agent.signal(libc::SIGTERM);
    let code = agent.wait()?;
    result?;
    if code == Some(0) {
        Ok(())
    } else {
        Err(format!("agent exited {code:?} on SIGTERM"))
    }
}

fn lineage_links_each_exec_to_what_started_it(env: &Env) -> Check {
    // A granted script that runs a granted child: script -> interpreter -> child.
    let child = copy_executable(&env.probe, &Path::new(WORK).join("lineage/child-tool"));
    let script = Path::new(WORK).join("lineage/run-child.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{}\nexit 0\n", child.display()))
        .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let policy = std::fs::read_to_string(&env.policy).expect("read policy");
    let lineage_policy = Path::new(WORK).join("lineage/policy.toml");
    std::fs::write(
        &lineage_policy,
        policy.replacen(
            "files = [",
            &format!("files = [\"{}\", ", script.display()),
            1,
        ),
    )
    .expect("write policy");
    let lineage_env = Env {
        policy: lineage_policy,
        ..Env::from_env()
    };
    let mut agent = Agent::start(&lineage_env)?;
    let result = (|| {
        expect_exit(Some(SCOPE), &script, 0)?;
        let s = agent.decision_for(&script)?;
        let interp = agent.decision_for(Path::new("/bin/sh"))?;
        let c = agent.decision_for(&child)?;
        for d in [&s, &interp, &c] {
            field_is(d, "decision", "allow")?;
        }
        let id = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
        let ids = [id(&s, "exec_id"), id(&interp, "exec_id"), id(&c, "exec_id")];
        if ids[0] == 0 || !(ids[0] < ids[1] && ids[1] < ids[2]) {
            return Err(format!(
                "exec ids must be distinct and increase in order: {ids:?}"
            ));
        }
        if id(&interp, "parent_exec_id") != id(&s, "exec_id") {
            return Err(format!(
                "interpreter should descend from the script:\n{s}\n{interp}"
            ));
        }
        if id(&c, "parent_exec_id") != id(&interp, "exec_id")
            || id(&c, "ppid") != id(&interp, "tgid")
        {
            return Err(format!(
                "child should descend from the interpreter:\n{interp}\n{c}"
            ));
        }
        Ok(())
    })();
    agent.signal(libc::SIGTERM);
    agent.wait()?;
    result?;
    // Leave the shared policy in force for the scenarios that follow.
    load_policy(env).map(|_| ())
}

/// Finds `key` anywhere in a JSON value (records nest their body).
fn find_key<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match v {
        serde_json::Value::Object(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|x| find_key(x, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// Every audit record in `dir`, as `enforcer audit show --all --json` prints them.
fn audit_records(env: &Env, dir: &Path) -> Result<Vec<serde_json::Value>, String> {
    let (code, out) = run_tool(
        env.enforcer()
            .arg("audit")
            .arg("--dir")
            .arg(dir)
            .args(["show", "--all", "--json"]),
    )?;
    if code != 0 {
        return Err(format!("audit show exited {code}: {out}"));
    }
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

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

fn audit_records_every_decision_and_verifies(env: &Env) -> Check {
    let work = Path::new(WORK).join("audit");
    let dir = work.join("log");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let (code, out) = run_tool(
        env.enforcer()
            .args(["key", "generate", "--out"])
            .arg(work.join("host")),
    )?;
    if code != 0 {
        return Err(format!("key generate exited {code}: {out}"));
    }
    let host_key = work.join("host.key");
    let mut agent = Agent::start_with(
        env,
        &[
            "--audit-dir",
            dir.to_str().expect("utf-8"),
            "--host-key",
            host_key.to_str().expect("utf-8"),
        ],
    )?;
    const EACH: usize = 6;
    let result = (|| -> Check {
        for i in 0..EACH {
            let allowed = copy_executable(&env.probe, &work.join(format!("runs/allowed-{i}")));
            let denied = copy_executable(&env.unlisted, &work.join(format!("runs/denied-{i}")));
            expect_exit(Some(SCOPE), &allowed, PROBE_EXIT)?;
            expect_eperm(Some(SCOPE), &denied)?;
            agent.decision_for(&allowed)?;
            agent.decision_for(&denied)?;
        }
        Ok(())
    })();
    agent.signal(libc::SIGTERM);
    agent.wait()?;
    result?;
    let records = audit_records(env, &dir)?;
    let prefix = work.join("runs/").display().to_string();
    let counted = records_under(&records, &prefix);
    if counted != 2 * EACH {
        return Err(format!(
            "{} execs, {counted} audit records under {prefix}",
            2 * EACH
        ));
    }
    let public = work.join("host.pub");
    let verify = |extra: &[&str]| {
        run_tool(
            env.enforcer()
                .arg("audit")
                .arg("--dir")
                .arg(&dir)
                .arg("verify")
                .arg("--trust")
                .arg(&public)
                .args(extra),
        )
    };
    let (code, out) = verify(&[])?;
    if code != 0 {
        return Err(format!("audit verify exited {code}: {out}"));
    }
    // Editing one record is detected and named.
    let file = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("denied-3")))
        .ok_or("no log file holds the denied-3 record")?;
    let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    std::fs::write(&file, text.replacen("denied-3", "denied-X", 1)).map_err(|e| e.to_string())?;
    let (code, out) = verify(&[])?;
    if code == 1 {
        Ok(())
    } else {
        Err(format!("verify after an edit exited {code}: {out}"))
    }
}

/// More denials than the ring buffer holds (about 3,970 events).
const STORM: u32 = 5000;

/// Runs STORM denied execs of `target` in SCOPE.
fn exec_storm(env: &Env, target: &Path) -> Check {
    expect_attack(
        env,
        Some(SCOPE),
        &[
            "exec-storm",
            target.to_str().expect("utf-8"),
            &STORM.to_string(),
        ],
        attack::WORKED,
    )
}

/// Denies a marker exec and waits for the agent to report it: the storm before it has
/// then been drained.
fn drained(env: &Env, agent: &mut Agent, work: &Path) -> Check {
    let marker = copy_executable(&env.unlisted, &work.join("after-storm"));
    expect_eperm(Some(SCOPE), &marker).and_then(|()| agent.decision_for(&marker).map(|_| ()))
}

/// Every one of the storm's denials is in `records`: recorded, or counted by a gap record.
fn storm_is_accounted(records: &[serde_json::Value], target: &Path, what: &str) -> Check {
    let recorded = records_under(records, &target.display().to_string());
    let lost: u64 = records
        .iter()
        .filter(|r| r["kind"] == "gap")
        .filter_map(|r| r["lost"].as_u64())
        .sum();
    if lost == 0 {
        return Err(format!(
            "no gap record after {STORM} denials {what} ({recorded} recorded)"
        ));
    }
    if recorded as u64 + lost == u64::from(STORM) {
        Ok(())
    } else {
        Err(format!(
            "{STORM} denials {what}: {recorded} recorded + {lost} in gap records"
        ))
    }
}

fn ring_buffer_overflow_becomes_a_gap_record(env: &Env) -> Check {
    let work = Path::new(WORK).join("storm");
    let dir = work.join("log");
    let target = copy_executable(&env.unlisted, &work.join("flood-target"));
    let mut agent = Agent::start_with(env, &["--audit-dir", dir.to_str().expect("utf-8")])?;
    // Paused (from outside every scope, which may signal it), the agent drains nothing
    // while more denials than the ring buffer holds happen.
    agent.signal(libc::SIGSTOP);
    let storm = exec_storm(env, &target);
    agent.signal(libc::SIGCONT);
    let result = storm.and_then(|()| drained(env, &mut agent, &work));
    agent.signal(libc::SIGTERM);
    agent.wait()?;
    result?;
    storm_is_accounted(&audit_records(env, &dir)?, &target, "with the agent paused")
}

fn drops_while_no_agent_runs_become_a_gap_record(env: &Env) -> Check {
    let work = Path::new(WORK).join("storm-unattended");
    let dir = work.join("log");
    let target = copy_executable(&env.unlisted, &work.join("flood-target"));
    // The first agent takes over whatever the drop counter says, then dies.
    let agent = Agent::start_with(env, &["--audit-dir", dir.to_str().expect("utf-8")])?;
    agent.signal(libc::SIGKILL);
    agent.wait()?;
    exec_storm(env, &target)?;
    // Without the startup self-test, whose two decisions would find the ring buffer full
    // and be counted as dropped too.
    let mut agent = Agent::start_with(
        env,
        &[
            "--audit-dir",
            dir.to_str().expect("utf-8"),
            "--skip-self-test",
        ],
    )?;
    let result = drained(env, &mut agent, &work);
    agent.signal(libc::SIGTERM);
    agent.wait()?;
    result?;
    let records = audit_records(env, &dir)?;
    // Only what the second agent wrote: after the last start record.
    let second = records
        .iter()
        .rposition(|r| r["kind"] == "start")
        .map_or(&records[..], |i| &records[i..]);
    storm_is_accounted(second, &target, "with no agent running")
}

/// The example policies shipped in the VM: trust.toml and the TEST-ONLY keys.
const POLICIES: &str = "/usr/share/enforcer/policies";

/// Copies the example trust store's TEST-ONLY private keys into `dir` as `<who>.key`:
/// alice and bob sign bundles (2 of 2), carol revocations and break-glass. Private keys
/// must not be readable by others to be used, hence mode 0600.
fn copy_test_keys(dir: &Path) -> Check {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for who in ["alice", "bob", "carol"] {
        let key = dir.join(format!("{who}.key"));
        std::fs::copy(
            Path::new(POLICIES).join(format!("keys/TEST-ONLY-{who}.key")),
            &key,
        )
        .map_err(|e| e.to_string())?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs `enforcer ARGS`, which must exit 0; returns its output.
fn enforcer_ok(env: &Env, args: &[&str]) -> Result<String, String> {
    let (code, out) = run_tool(env.enforcer().args(args))?;
    if code == 0 {
        Ok(out)
    } else {
        Err(format!("enforcer {args:?} exited {code}: {out}"))
    }
}

fn signed_bundles_grant_and_refusals_are_named(env: &Env) -> Check {
    let work = Path::new(WORK).join("signed");
    let policies = Path::new(POLICIES);
    let keys = work.join("keys");
    copy_test_keys(&keys)?;
    let key = |who: &str| keys.join(format!("{who}.key")).display().to_string();
    let trust = policies.join("trust.toml").display().to_string();
    let state = work.join("state").display().to_string();
    let path = |p: PathBuf| p.display().to_string();
    let (good, bad, revoked) = (
        work.join("good"),
        work.join("bad"),
        work.join("revocations"),
    );
    for d in [&good, &bad, &revoked] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    // The security team's workflow: create from the binaries (with their libraries), sign
    // by two people.
    let closure =
        enforcer::elf::with_dependencies(&[env.probe.clone()]).map_err(|e| e.to_string())?;
    let create = |serial: &str, out: &str| {
        let mut args = vec![
            "bundle",
            "create",
            "--issuer",
            "vm",
            "--bundle-id",
            "vmtest",
            "--serial",
            serial,
        ];
        args.extend([
            "--scope",
            "/vmtest-signed",
            "--valid-for",
            "1h",
            "--out",
            out,
        ]);
        let files: Vec<String> = closure.iter().map(|p| p.display().to_string()).collect();
        for f in &files {
            args.extend(["--file", f.as_str()]);
        }
        enforcer_ok(env, &args).map(|_| ())
    };
    let bundle = path(good.join("bundle.json"));
    create("1", &bundle)?;
    enforcer_ok(env, &["bundle", "sign", "--key", &key("alice"), &bundle])?;
    enforcer_ok(env, &["bundle", "sign", "--key", &key("bob"), &bundle])?;
    let load = |dirs: &[&PathBuf]| {
        let mut args = vec![
            "load".to_string(),
            "--trust".into(),
            trust.clone(),
            "--state-dir".into(),
            state.clone(),
        ];
        args.extend(
            [
                "--scope",
                "/vmtest-signed",
                "--scope",
                "/vmtest-signed-empty",
            ]
            .map(String::from),
        );
        for d in dirs {
            args.extend(["--artifacts".to_string(), path((*d).clone())]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        enforcer_ok(env, &args)
    };
    load(&[&good])?;
    expect_exit(Some("vmtest-signed"), &env.probe, PROBE_EXIT)?;
    expect_eperm(Some("vmtest-signed"), &env.unlisted)?;
    // Declared, and no bundle covers it: everything is denied.
    expect_eperm(Some("vmtest-signed-empty"), &env.probe)?;

    // Refusals name the file and the problem, and grant nothing; the good bundle holds.
    let one_signature = path(bad.join("one-signature.json"));
    create("2", &one_signature)?;
    enforcer_ok(
        env,
        &["bundle", "sign", "--key", &key("alice"), &one_signature],
    )?;
    let mut tampered = std::fs::read(&bundle).map_err(|e| e.to_string())?;
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(bad.join("tampered.json"), tampered).map_err(|e| e.to_string())?;
    let out = load(&[&good, &bad])?;
    for name in ["one-signature.json", "tampered.json"] {
        if !out
            .lines()
            .any(|l| l.starts_with("refused:") && l.contains(name))
        {
            return Err(format!("no refusal named {name}:\n{out}"));
        }
    }
    expect_exit(Some("vmtest-signed"), &env.probe, PROBE_EXIT)?;

    // A revocation signed by carol withdraws the bundle: its scope stays governed.
    let revocation = path(revoked.join("vmtest.json"));
    enforcer_ok(
        env,
        &[
            "revoke",
            "create",
            "--issuer",
            "security",
            "--bundle-id",
            "vmtest",
            "--out",
            &revocation,
        ],
    )?;
    enforcer_ok(
        env,
        &["revoke", "sign", "--key", &key("carol"), &revocation],
    )?;
    load(&[&good, &revoked])?;
    expect_eperm(Some("vmtest-signed"), &env.probe)?;
    // Back to the shared policy for the scenarios that follow.
    load_policy(env).map(|_| ())
}

fn enforcement_survives_agent_kill(env: &Env) -> Check {
    let agent = Agent::start(env)?;
    agent.signal(libc::SIGKILL);
    agent.wait()?;
    expect_eperm(Some(SCOPE), &env.unlisted)?;
    expect_exit(Some(SCOPE), &env.probe, PROBE_EXIT)
}

fn restart_reuses_pinned_program(env: &Env) -> Check {
    let out = load_policy(env)?;
    if !out.contains("reusing pinned") {
        return Err(format!(
            "second load did not reuse the pinned program:\n{out}"
        ));
    }
    expect_eperm(Some(SCOPE), &env.unlisted)
}

fn unload_stops_enforcement(env: &Env) -> Check {
    let (code, out) = run_tool(env.enforcer().arg("unload"))?;
    if code != 0 {
        return Err(format!("unload exited {code}: {out}"));
    }
    expect_exit(Some(SCOPE), &env.unlisted, UNLISTED_EXIT)?;
    let (code, out) = run_tool(env.enforcer().arg("status"))?;
    if code == 3 {
        Ok(())
    } else {
        Err(format!("status after unload exited {code}: {out}"))
    }
}

type Scenario = (&'static str, fn(&Env) -> Check);

const SCENARIOS: &[Scenario] = &[
    ("agent-loads-policy", agent_loads_policy),
    ("allowed-binary-runs-in-scope", allowed_binary_runs_in_scope),
    (
        "unlisted-binary-denied-in-scope",
        unlisted_binary_denied_in_scope,
    ),
    (
        "unlisted-binary-runs-outside-scopes",
        unlisted_binary_runs_outside_scopes,
    ),
    ("copy-of-allowed-binary-runs", copy_of_allowed_binary_runs),
    (
        "allowed-binary-changed-by-one-byte-denied",
        allowed_binary_changed_by_one_byte_denied,
    ),
    (
        "cached-digest-follows-an-in-place-change",
        cached_digest_follows_an_in_place_change,
    ),
    ("child-cgroup-is-governed", child_cgroup_is_governed),
    (
        "script-runs-when-script-and-interpreter-granted",
        script_runs_when_script_and_interpreter_granted,
    ),
    (
        "script-denied-when-script-not-granted",
        script_denied_when_script_not_granted,
    ),
    (
        "script-denied-when-interpreter-not-granted",
        script_denied_when_interpreter_not_granted,
    ),
    (
        "monitor-scope-allows-ungranted",
        monitor_scope_allows_ungranted,
    ),
    (
        "ld-so-cannot-run-an-unlisted-binary",
        ld_so_cannot_run_an_unlisted_binary,
    ),
    (
        "ld-preload-of-unlisted-library-refused",
        ld_preload_of_unlisted_library_refused,
    ),
    ("memfd-exec-denied", memfd_exec_denied),
    ("deleted-file-exec-denied", deleted_file_exec_denied),
    (
        "anonymous-executable-memory-denied",
        anonymous_executable_memory_denied,
    ),
    ("ptrace-and-proc-mem-denied", ptrace_and_proc_mem_denied),
    ("bpf-syscall-denied", bpf_syscall_denied),
    (
        "leaving-the-scope-and-unpinning-denied",
        leaving_the_scope_and_unpinning_denied,
    ),
    ("agent-cannot-be-signalled", agent_cannot_be_signalled),
    ("decisions-are-reported", decisions_are_reported),
    (
        "lineage-links-each-exec-to-what-started-it",
        lineage_links_each_exec_to_what_started_it,
    ),
    (
        "signed-bundles-grant-and-refusals-are-named",
        signed_bundles_grant_and_refusals_are_named,
    ),
    (
        "audit-records-every-decision-and-verifies",
        audit_records_every_decision_and_verifies,
    ),
    (
        "ring-buffer-overflow-becomes-a-gap-record",
        ring_buffer_overflow_becomes_a_gap_record,
    ),
    (
        "drops-while-no-agent-runs-become-a-gap-record",
        drops_while_no_agent_runs_become_a_gap_record,
    ),
    // The agent as a service; each puts the shared policy back when done.
    ("pushed-bundle-allows-while-agent-runs", |e| {
        service::restore(e, service::pushed_bundle_allows_while_agent_runs(e))
    }),
    ("revocation-denies-within-a-second", |e| {
        service::restore(e, service::revocation_denies_within_a_second(e))
    }),
    ("withdrawn-bundle-leaves-its-scopes-governed", |e| {
        service::restore(e, service::withdrawn_bundle_leaves_its_scopes_governed(e))
    }),
    ("expired-grant-denies-with-agent-killed", |e| {
        service::restore(e, service::expired_grant_denies_with_agent_killed(e))
    }),
    ("on-revoke-kill-terminates-running-process", |e| {
        service::restore(e, service::on_revoke_kill_terminates_running_process(e))
    }),
    ("break-glass-expires-back-to-enforce", |e| {
        service::restore(e, service::break_glass_expires_back_to_enforce(e))
    }),
    ("agent-restart-mid-exec-stream-loses-no-enforcement", |e| {
        service::restore(
            e,
            service::agent_restart_mid_exec_stream_loses_no_enforcement(e),
        )
    }),
    ("service-runs-from-config-notifies-and-reloads", |e| {
        service::restore(e, service::service_runs_from_config_notifies_and_reloads(e))
    }),
    ("control-socket-is-root-only", |e| {
        service::restore(e, service::control_socket_is_root_only(e))
    }),
    (
        "enforcement-survives-agent-kill",
        enforcement_survives_agent_kill,
    ),
    (
        "restart-reuses-pinned-program",
        restart_reuses_pinned_program,
    ),
    // Last: it turns enforcement off.
    ("unload-stops-enforcement", unload_stops_enforcement),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {}
        Some("list") => {
            SCENARIOS.iter().for_each(|(name, _)| println!("{name}"));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("usage: vm-tests run [FILTER] | vm-tests list");
            return ExitCode::from(2);
        }
    }
    let filter = args.get(1).cloned().unwrap_or_default();
    let env = Env::from_env();
    prepare(&env);
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in SCENARIOS {
        // The first scenario loads the policy every other one relies on: always run it.
        if !name.contains(filter.as_str()) && *name != SCENARIOS[0].0 {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| scenario(&env))
            .unwrap_or_else(|_| Err("scenario panicked".into()));
        let secs = started.elapsed().as_secs_f32();
        match result {
            Ok(()) => {
                passed += 1;
                println!("PASS {name} ({secs:.1}s)");
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {}", why.replace('\n', "\n    "));
            }
        }
    }
    println!("vm-tests: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
