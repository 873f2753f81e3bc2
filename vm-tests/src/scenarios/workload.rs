//! No regression for real programs: an ordinary job runs in an enforcing scope, as an
//! unprivileged user, with every rule in force. A granted script runs busybox tools
//! (ls, sort, sha256sum, awk, sed, tar, find, gzip) over files in its directory, then a
//! dynamically linked Rust program that spawns threads, writes and renames files, maps
//! memory, `dlopen`s a granted library and runs a child. The same job, watched in monitor
//! mode, teaches a bundle (`bundle create --from-audit`) that then runs it in enforce mode
//! and nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::agent::Agent;
use crate::support::audit::{audit_records, find_key};
use crate::support::contained::{Who, run_cmd_as};
use crate::support::run::{Outcome, enforcer_ok, expect_eperm};
use crate::support::service::write_kit_config;
use crate::support::signed::{Kit, LIVE};
use crate::support::{Env, SCOPE, WORK, workload_script};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![
    an_ordinary_job_runs_in_a_scope,
    a_bundle_learned_in_monitor_mode_runs_the_job_and_nothing_else,
];

/// An empty directory `dir/run` that the job, as uid 65534, may write.
fn job_dir(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap_or_else(|e| panic!("mkdir {}: {e}", run.display()));
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", run.display()));
    run
}

/// Runs the job in `scope` as uid 65534 in `run`, which must finish; returns its output.
#[track_caller]
fn job_finishes(scope: &str, run: &Path) -> String {
    let (outcome, output) = run_cmd_as(
        Some(scope),
        Command::new(workload_script()).arg(run),
        Who::Nobody,
    );
    assert!(
        outcome == Outcome::Exited(0)
            && output.contains("workload: ok")
            && output.contains("script done: 3 files archived"),
        "the job in scope {scope}: expected it to finish, got {outcome:?}:\n{output}"
    );
    output
}

fn an_ordinary_job_runs_in_a_scope(env: &Env) {
    let work = Path::new(WORK).join("workload");
    let run = job_dir(&work);
    let log = work.join("log");
    let mut agent = Agent::start_with(env, &["--audit-dir", log.to_str().expect("utf-8")]);
    let output = job_finishes(SCOPE, &run);
    // Its last exec, reported: everything before it is in the log too.
    agent.decision_for(&env.workload);
    agent.stop();
    let records = audit_records(env, &log);
    let field = |r: &serde_json::Value, k: &str| {
        find_key(r, k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let denials: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            field(r, "decision") == "deny"
                && find_key(r, "uid").and_then(|u| u.as_u64()) == Some(65534)
        })
        .collect();
    assert!(
        denials.is_empty(),
        "the job was refused something:\n{denials:#?}"
    );
    let allowed = records
        .iter()
        .filter(|r| field(r, "decision") == "allow" && field(r, "hook") == "bprm_check_security")
        .count();
    // The script, its interpreter, the tools and the program: each exec allowed.
    assert!(
        allowed >= 10,
        "only {allowed} allowed execs recorded:\n{output}"
    );
    println!("workload: {allowed} execs allowed, none refused:\n{output}");
}

fn a_bundle_learned_in_monitor_mode_runs_the_job_and_nothing_else(env: &Env) {
    // A rollout as docs/audit.md tells it: watch the scope in monitor mode, learn a bundle
    // from what the log recorded, sign it, enforce. No grant is written by hand: the
    // script, busybox under each tool's name, the program, the loader and every library
    // (the mapped ones recorded by file name only, libm opened at run time) come from the
    // log alone.
    let kit = Kit::new("learn");
    let run = job_dir(&kit.work.join("job"));
    // Monitor mode, and no bundle at all.
    job_runs_as(
        env,
        &kit,
        "monitor",
        "mode = \"monitor\"\n",
        &run,
        "would-deny",
    )
    .stop();

    let learned = kit.out("learned.bundle.json");
    let audit = kit.audit_dir().display().to_string();
    let scope = format!("/{LIVE}");
    let review = enforcer_ok(
        env,
        &[
            "bundle",
            "create",
            "--issuer",
            "vm-learn",
            "--bundle-id",
            "learned",
            "--serial",
            "1",
            "--scope",
            &scope,
            "--valid-for",
            "1h",
            "--from-audit",
            "--audit-dir",
            &audit,
            "--out",
            &learned,
        ],
    );
    assert!(
        review.contains("granted as ") && !review.contains("LEFT OUT"),
        "learn should find every library by its content and leave nothing out:\n{review}"
    );
    kit.sign(env, &learned);
    std::fs::create_dir_all(&kit.bundle_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::copy(&learned, kit.bundle_dir.join("learned.json"))
        .unwrap_or_else(|e| panic!("copy the learned bundle: {e}"));

    let mut agent = job_runs_as(env, &kit, "enforce", "", &run, "allow");
    // Anything the job did not run is not in the bundle.
    expect_eperm(Some(LIVE), &env.unlisted);
    let denied = agent.decision_for(&env.unlisted);
    assert_eq!(
        find_key(&denied, "reason").and_then(|v| v.as_str()),
        Some("not-granted"),
        "{denied}"
    );
    agent.stop();
    println!("learned bundle:\n{review}");
}

/// Starts an agent on `kit` with `scope` settings for LIVE (config `NAME.toml`), runs the
/// job in LIVE, which must finish, and checks the program's exec was decided `decision`.
/// Returns the agent, still running.
#[track_caller]
fn job_runs_as(env: &Env, kit: &Kit, name: &str, scope: &str, run: &Path, decision: &str) -> Agent {
    let config = kit.work.join(format!("{name}.toml"));
    write_kit_config(kit, &config, scope);
    let mut agent = Agent::spawn(
        env.enforcer()
            .args(["run", "--json", "--config"])
            .arg(&config),
    );
    job_finishes(LIVE, run);
    let decided = agent.decision_for(&env.workload);
    assert_eq!(
        find_key(&decided, "decision").and_then(|v| v.as_str()),
        Some(decision),
        "the program's exec under the {name} agent: {decided}"
    );
    agent
}
