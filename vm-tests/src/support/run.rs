//! Running programs, in a scope or outside every scope, and asserting on what happened.
//!
//! `check_*` return the mismatch as text, for retries and for threads; `expect_*` panic with
//! it, pointing at the scenario line that asked (`#[track_caller]`).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{Env, cgroup};

/// What happened when we tried to run a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Exited(i32),
    Signalled,
    /// execve failed in the child with this errno (std reports it from spawn).
    ExecFailed(i32),
}

/// Runs `cmd` in the cgroup `scope` (None: stay in the runner's cgroup, which no policy
/// governs), returning what happened and its output.
pub(crate) fn run_cmd(scope: Option<&str>, cmd: &mut Command) -> (Outcome, String) {
    if let Some(scope) = scope {
        enforcer::host::cgroup::spawn_into(cmd, &cgroup(scope))
            .unwrap_or_else(|e| panic!("cannot prepare the move into cgroup {scope}: {e}"));
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

pub(crate) fn run_in(scope: Option<&str>, program: &Path) -> Outcome {
    run_cmd(scope, &mut Command::new(program)).0
}

/// Whether `program` run in `scope` exits with `code`.
pub(crate) fn check_exit(scope: Option<&str>, program: &Path, code: i32) -> Result<(), String> {
    match run_in(scope, program) {
        Outcome::Exited(c) if c == code => Ok(()),
        other => Err(format!(
            "{} in {scope:?}: expected exit {code}, got {other:?}",
            program.display()
        )),
    }
}

/// Whether exec of `program` in `scope` fails with EPERM.
pub(crate) fn check_eperm(scope: Option<&str>, program: &Path) -> Result<(), String> {
    match run_in(scope, program) {
        Outcome::ExecFailed(libc::EPERM) => Ok(()),
        other => Err(format!(
            "{} in {scope:?}: expected EPERM, got {other:?}",
            program.display()
        )),
    }
}

#[track_caller]
pub(crate) fn expect_exit(scope: Option<&str>, program: &Path, code: i32) {
    if let Err(e) = check_exit(scope, program, code) {
        panic!("{e}");
    }
}

#[track_caller]
pub(crate) fn expect_eperm(scope: Option<&str>, program: &Path) {
    if let Err(e) = check_eperm(scope, program) {
        panic!("{e}");
    }
}

/// Runs the attacks fixture with `args` in `scope`; it must exit with `code`.
#[track_caller]
pub(crate) fn expect_attack(env: &Env, scope: Option<&str>, args: &[&str], code: i32) {
    let (outcome, output) = run_cmd(scope, Command::new(&env.attacks).args(args));
    if outcome != Outcome::Exited(code) {
        panic!("attacks {args:?} in {scope:?}: expected exit {code}, got {outcome:?}: {output}");
    }
}

/// Runs a command to completion, returning its exit code and combined output.
#[track_caller]
pub(crate) fn run_tool(cmd: &mut Command) -> (i32, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs `enforcer ARGS`, which must exit 0; returns its output.
#[track_caller]
pub(crate) fn enforcer_ok(env: &Env, args: &[&str]) -> String {
    let (code, out) = run_tool(env.enforcer().args(args));
    assert!(code == 0, "enforcer {args:?} exited {code}: {out}");
    out
}

/// Repeats `check` every 50 ms until it passes or `limit` has passed; returns how long it
/// took.
#[track_caller]
pub(crate) fn within(limit: Duration, check: impl Fn() -> Result<(), String>) -> Duration {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return started.elapsed(),
            Err(e) if started.elapsed() > limit => panic!("not within {limit:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A child process that is killed and reaped when dropped, so that a scenario that fails
/// half-way leaves nothing running for the next one.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A long-lived process outside every scope, as a target.
pub(crate) fn bystander() -> Reaped {
    let child = Command::new("/bin/sleep")
        .arg("60")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the bystander /bin/sleep 60: {e}"));
    Reaped(child)
}
