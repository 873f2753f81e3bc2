//! The shape of every containment scenario (issues 12 and 13). A technique of the `inject`
//! or `escape` fixture runs twice while an agent enforces the shared policy:
//! - outside every scope, where it must work (its injected code runs, or it reaches its
//!   effect), so the scenario can fail;
//! - in the enforcing scope, where the kernel must refuse it: the step fails with its
//!   exact errno, or the program is killed before it runs, or (for a refusal the caller
//!   cannot see, like a signal not sent) the scenario checks the effect;
//!
//! and the refusal must be in the audit log, with its hook and reason, in the scope's
//! name. Unprivileged techniques run as uid and gid 65534 with no capabilities and
//! `no_new_privs`; root ones as root with every capability.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vm_tests::technique;

use super::agent::Agent;
use super::audit::{audit_records, find_key};
use super::run::{Outcome, run_cmd};
use super::{Env, SCOPE, WORK, cgroup};

/// Who runs the technique.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    /// uid and gid 65534, no supplementary groups, no capabilities, no_new_privs.
    Nobody,
    /// root with every capability.
    Root,
}

/// Which fixture holds the technique.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fixture {
    Inject,
    Escape,
    /// The `inject` fixture's copy with an executable stack ([`super::exec_stack_program`]).
    ExecStack,
    /// The i386 program with an executable stack by default ([`super::ia32_stack_program`]).
    Ia32Stack,
    /// The program with an executable zero-fill ([`super::zero_fill_program`]).
    ZeroFill,
}

/// How the refusal shows to the technique in the scope.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shows {
    /// The step the fixture printed failed with this errno.
    Errno(i32),
    /// The process died from this signal before running anything of its own (an exec
    /// refused past its point of no return).
    Killed,
    /// Nothing the caller sees: the step succeeds and its effect does not happen (a signal
    /// not delivered, an upcall not made). The scenario checks the effect.
    Nothing,
}

/// One row of the enumeration: a technique, how it works outside, how it is refused in the
/// scope and what the audit log says.
pub(crate) struct Case<'a> {
    /// Names the work directory (and the audit log) of this case.
    pub(crate) name: &'a str,
    pub(crate) fixture: Fixture,
    pub(crate) who: Who,
    /// The technique and its arguments. `{dir}` is a directory of the run's own (writable
    /// by the technique), `{lib}` a granted shared library, `{elsewhere}` a cgroup outside
    /// every scope, `{into}` the cgroup a self-entering technique enters (the scope in the
    /// scope's run, a plain cgroup outside).
    pub(crate) args: &'a [&'a str],
    /// Other arguments for the run in the scope, when its target differs (the agent
    /// instead of a bystander).
    pub(crate) inside_args: Option<&'a [&'a str]>,
    /// The technique enters the scope itself (after opening something outside): both runs
    /// start outside every scope.
    pub(crate) enters_itself: bool,
    /// The exit code outside: [`technique::INJECTED`] or [`technique::WORKED`].
    pub(crate) works: i32,
    pub(crate) shows: Shows,
    /// The audit record of the refusal: its hook and reason names.
    pub(crate) hook: &'a str,
    pub(crate) reason: &'a str,
}

impl<'a> Case<'a> {
    /// A technique refused in the scope with `errno`, audited as `hook` for `reason`.
    pub(crate) const fn refused(
        name: &'a str,
        fixture: Fixture,
        who: Who,
        args: &'a [&'a str],
        errno: i32,
        (hook, reason): (&'a str, &'a str),
    ) -> Self {
        let works = match fixture {
            Fixture::Inject | Fixture::ExecStack | Fixture::Ia32Stack | Fixture::ZeroFill => {
                technique::INJECTED
            }
            Fixture::Escape => technique::WORKED,
        };
        Self {
            name,
            fixture,
            who,
            args,
            inside_args: None,
            enters_itself: false,
            works,
            shows: Shows::Errno(errno),
            hook,
            reason,
        }
    }
}

impl<'a> Case<'a> {
    /// A granted program that the kernel kills past its exec's point of no return, before
    /// it runs anything of its own, as uid 65534; audited as `hook` for `reason`.
    pub(crate) const fn killed(
        name: &'a str,
        fixture: Fixture,
        args: &'a [&'a str],
        audited: (&'a str, &'a str),
    ) -> Self {
        let mut case = Self::refused(name, fixture, Who::Nobody, args, 0, audited);
        case.shows = Shows::Killed;
        case
    }
}

/// A case under way: the agent enforcing the shared policy, with its own audit log.
pub(crate) struct Session<'a> {
    case: &'a Case<'a>,
    env: &'a Env,
    agent: Agent,
    work: PathBuf,
    /// Arguments for the run in the scope decided only once the agent runs (its pid).
    inside_args: Option<Vec<String>>,
}

impl<'a> Case<'a> {
    /// Runs the whole case: outside, in the scope, then the audit log.
    #[track_caller]
    pub(crate) fn check(&'a self, env: &'a Env) {
        self.check_with(env, &[]);
    }

    /// [`Self::check`] with `extra` agent arguments.
    #[track_caller]
    pub(crate) fn check_with(&'a self, env: &'a Env, extra: &[&str]) {
        let mut session = self.start(env, extra);
        session.works_outside();
        session.refused_inside();
        session.audited();
    }

    /// Starts an agent on the shared policy for this case, with `extra` agent arguments.
    #[track_caller]
    pub(crate) fn start(&'a self, env: &'a Env, extra: &[&str]) -> Session<'a> {
        let work = Path::new(WORK).join("contained").join(self.name);
        // Earlier runs' leftovers would make the audit log not this case's.
        let _ = std::fs::remove_dir_all(&work);
        // Made here, traversable by everyone: the agent would make it private with its log.
        std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("mkdir {}: {e}", work.display()));
        let log = work.join("log");
        let log = log.to_str().expect("utf-8 path");
        let mut args = vec!["--audit-dir", log];
        args.extend(extra);
        let agent = Agent::start_with(env, &args);
        Session {
            case: self,
            env,
            agent,
            work,
            inside_args: None,
        }
    }
}

impl Session<'_> {
    /// The agent's pid, as a target.
    pub(crate) fn agent_pid(&self) -> u32 {
        self.agent.pid()
    }

    /// Whether the agent still runs.
    pub(crate) fn agent_alive(&mut self) -> bool {
        self.agent.running()
    }

    /// Replaces the arguments of the run in the scope.
    pub(crate) fn set_inside_args(&mut self, args: &[&str]) {
        self.inside_args = Some(args.iter().map(|a| (*a).to_owned()).collect());
    }

    /// Runs the technique outside every scope, where it must work.
    #[track_caller]
    pub(crate) fn works_outside(&mut self) {
        let (outcome, output) = self.run(None);
        let want = self.case.works;
        assert!(
            outcome == Outcome::Exited(want),
            "{} outside every scope: expected {}, got {outcome:?}: {output}",
            self.describe(),
            technique::describe(want),
        );
    }

    /// Runs the technique in the scope, where it must be refused as the case says.
    #[track_caller]
    pub(crate) fn refused_inside(&mut self) {
        let (outcome, output) = self.run(Some(SCOPE));
        let ok = match self.case.shows {
            Shows::Errno(errno) => outcome == Outcome::Exited(technique::refused_with(errno)),
            Shows::Killed => outcome == Outcome::Signalled,
            Shows::Nothing => outcome == Outcome::Exited(technique::WORKED),
        };
        assert!(
            ok,
            "{} in scope {SCOPE}: expected {:?}, got {outcome:?} ({}): {output}",
            self.describe(),
            self.case.shows,
            match outcome {
                Outcome::Exited(code) => technique::describe(code),
                other => format!("{other:?}"),
            },
        );
    }

    /// The refusal is in the audit log: a denial by the case's hook, for its reason, in the
    /// scope's name (and, for an unprivileged technique, by uid 65534). Stops the agent.
    #[track_caller]
    pub(crate) fn audited(self) {
        let (hook, reason) = (self.case.hook, self.case.reason);
        let matches = |v: &serde_json::Value| {
            let field = |k| find_key(v, k).and_then(|x| x.as_str()).unwrap_or_default();
            field("decision") == "deny"
                && field("hook") == hook
                && field("reason") == reason
                && field("scope") == format!("/{SCOPE}")
                && (self.case.who == Who::Root
                    || find_key(v, "uid").and_then(serde_json::Value::as_u64) == Some(65534))
        };
        let what = self.describe();
        let (env, log) = (self.env, self.work.join("log"));
        let mut agent = self.agent;
        // The record reaches the log before the agent prints it.
        let printed = agent.find_line(Duration::from_secs(20), |line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| matches(&v))
        });
        if let Err(seen) = printed {
            panic!(
                "{what}: the agent reported no denial by {hook} for {reason} in /{SCOPE} \
                 within 20 s; it reported:\n{}",
                seen.join("\n")
            );
        }
        agent.stop();
        let records = audit_records(env, &log);
        assert!(
            records.iter().any(matches),
            "{what}: no audit record of a denial by {hook} for {reason} in /{SCOPE}; the log has \
             {} records",
            records.len(),
        );
    }

    fn describe(&self) -> String {
        format!(
            "{:?} {} as {:?}",
            self.case.fixture,
            self.case.args.join(" "),
            self.case.who
        )
    }

    /// Runs the technique in `scope` (None: outside every scope).
    fn run(&self, scope: Option<&str>) -> (Outcome, String) {
        let dir = self.work.join(if scope.is_some() { "in" } else { "out" });
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        // The technique's own directory, whoever it runs as.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        let owned: Vec<&str>;
        let args = match (scope, &self.inside_args, self.case.inside_args) {
            (Some(_), Some(late), _) => {
                owned = late.iter().map(String::as_str).collect();
                &owned[..]
            }
            (Some(_), None, Some(inside)) => inside,
            _ => self.case.args,
        };
        let into = if scope.is_some() {
            cgroup(SCOPE)
        } else {
            plain_cgroup()
        };
        let args: Vec<String> = args
            .iter()
            .map(|a| substitute(a, &dir, self.env).replace("{into}", &into.display().to_string()))
            .collect();
        let program = match self.case.fixture {
            Fixture::Inject => self.env.inject.clone(),
            Fixture::Escape => self.env.escape.clone(),
            Fixture::ExecStack => super::exec_stack_program(),
            Fixture::Ia32Stack => super::ia32_stack_program(),
            Fixture::ZeroFill => super::zero_fill_program(),
        };
        let mut cmd = Command::new(program);
        cmd.args(&args).current_dir(&dir);
        let spawn_in = if self.case.enters_itself { None } else { scope };
        run_cmd_as(spawn_in, &mut cmd, self.case.who)
    }
}

/// [`run_cmd`], as `who`.
pub(crate) fn run_cmd_as(scope: Option<&str>, cmd: &mut Command, who: Who) -> (Outcome, String) {
    if who == Who::Nobody {
        if let Some(scope) = scope {
            enforcer::host::cgroup::spawn_into(cmd, &cgroup(scope))
                .unwrap_or_else(|e| panic!("cannot prepare the move into cgroup {scope}: {e}"));
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                const NOBODY: libc::uid_t = 65534;
                let ok = libc::setgroups(0, std::ptr::null()) == 0
                    && libc::setresgid(NOBODY, NOBODY, NOBODY) == 0
                    && libc::setresuid(NOBODY, NOBODY, NOBODY) == 0
                    && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        return run_cmd(None, cmd);
    }
    run_cmd(scope, cmd)
}

/// `arg` with the case's placeholders filled in.
fn substitute(arg: &str, dir: &Path, env: &Env) -> String {
    let mut out = arg.replace("{dir}", &dir.display().to_string());
    if out.contains("{lib}") {
        out = out.replace("{lib}", &granted_library(env).display().to_string());
    }
    out.replace("{elsewhere}", &elsewhere().display().to_string())
}

/// A cgroup outside every scope, for techniques that move there.
pub(crate) fn elsewhere() -> PathBuf {
    let dir = cgroup("vmtest-elsewhere");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// A cgroup outside every scope that a self-entering technique enters when run outside.
fn plain_cgroup() -> PathBuf {
    let dir = cgroup("vmtest-plain");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// The C library the probe links: granted in the enforcing scope (`with_libraries`).
fn granted_library(env: &Env) -> PathBuf {
    let closure = enforcer::host::elf::with_dependencies(std::slice::from_ref(&env.probe))
        .unwrap_or_else(|e| panic!("libraries of {}: {e}", env.probe.display()));
    closure
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
        .unwrap_or_else(|| panic!("{} links no libc.so", env.probe.display()))
}
