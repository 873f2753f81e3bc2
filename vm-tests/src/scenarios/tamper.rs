//! Tampering from inside a scope: ptrace and `/proc/PID/mem`, `bpf()`, leaving the scope
//! through `cgroup.procs`, removing the pins, signalling the agent. Each refusal is paired
//! with the same technique working outside every scope, so the refusal is enforcer's.

use std::path::Path;

use vm_tests::attack;

use crate::support::agent::Agent;
use crate::support::policy::enforce_shared_policy;
use crate::support::run::{bystander, expect_attack, expect_eperm};
use crate::support::{Env, SCOPE, cgroup};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![
    ptrace_and_proc_mem_denied,
    bpf_syscall_denied,
    leaving_the_scope_and_unpinning_denied,
    agent_cannot_be_signalled,
];

fn ptrace_and_proc_mem_denied(env: &Env) {
    enforce_shared_policy(env);
    let target = bystander();
    let pid = target.0.id().to_string();
    expect_attack(env, Some(SCOPE), &["ptrace", &pid], attack::EPERM);
    expect_attack(env, Some(SCOPE), &["proc-mem", &pid], attack::EPERM);
    expect_attack(env, Some(SCOPE), &["self-mem"], attack::EPERM);
    expect_attack(env, None, &["self-mem"], attack::WORKED);
    // The same techniques work outside scopes: the refusal is enforcer's.
    expect_attack(env, None, &["ptrace", &pid], attack::WORKED);
    expect_attack(env, None, &["proc-mem", &pid], attack::WORKED);
}

fn bpf_syscall_denied(env: &Env) {
    enforce_shared_policy(env);
    expect_attack(env, Some(SCOPE), &["bpf"], attack::EPERM);
    expect_attack(env, None, &["bpf"], attack::WORKED);
}

fn leaving_the_scope_and_unpinning_denied(env: &Env) {
    enforce_shared_policy(env);
    let elsewhere = cgroup("vmtest-elsewhere");
    std::fs::create_dir_all(&elsewhere)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", elsewhere.display()));
    let elsewhere = elsewhere.to_str().expect("utf-8");
    expect_attack(
        env,
        Some(SCOPE),
        &["cgroup-escape", elsewhere],
        attack::EPERM,
    );
    // Outside every scope the same move works: the refusal is enforcer's.
    expect_attack(env, None, &["cgroup-escape", elsewhere], attack::WORKED);
    let pin = format!("{}/link-bprm_check_security", enforcer::paths::PIN_DIR);
    expect_attack(env, Some(SCOPE), &["unpin", &pin], attack::EPERM);
    assert!(Path::new(&pin).exists(), "{pin} is gone");
    expect_eperm(Some(SCOPE), &env.unlisted);
}

fn agent_cannot_be_signalled(env: &Env) {
    // The agent loads the shared policy itself.
    let agent = Agent::start(env);
    let pid = agent.pid().to_string();
    expect_attack(env, Some(SCOPE), &["kill", &pid], attack::EPERM);
    agent.signal(libc::SIGTERM);
    let code = agent.wait();
    assert!(
        code == Some(0),
        "agent exited {code:?} on the runner's SIGTERM"
    );
}
