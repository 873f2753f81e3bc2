//! No regression for real programs: an ordinary job runs in an enforcing scope, as an
//! unprivileged user, with every rule in force. A granted script runs busybox tools
//! (ls, sort, sha256sum, awk, sed, tar, find, gzip) over files in its directory, then a
//! dynamically linked Rust program that spawns threads, writes and renames files, maps
//! memory, `dlopen`s a granted library and runs a child.

use std::process::Command;

use crate::support::agent::Agent;
use crate::support::audit::{audit_records, find_key};
use crate::support::contained::{Who, run_cmd_as};
use crate::support::run::Outcome;
use crate::support::{Env, SCOPE, WORK, workload_script};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![an_ordinary_job_runs_in_a_scope];

fn an_ordinary_job_runs_in_a_scope(env: &Env) {
    let work = std::path::Path::new(WORK).join("workload");
    let _ = std::fs::remove_dir_all(&work);
    let run = work.join("run");
    std::fs::create_dir_all(&run).unwrap_or_else(|e| panic!("mkdir {}: {e}", run.display()));
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", run.display()));
    let log = work.join("log");
    let mut agent = Agent::start_with(env, &["--audit-dir", log.to_str().expect("utf-8")]);
    let (outcome, output) = run_cmd_as(
        Some(SCOPE),
        Command::new(workload_script()).arg(&run),
        Who::Nobody,
    );
    assert!(
        outcome == Outcome::Exited(0)
            && output.contains("workload: ok")
            && output.contains("script done: 3 files archived"),
        "the job in scope {SCOPE}: expected it to finish, got {outcome:?}:\n{output}"
    );
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
