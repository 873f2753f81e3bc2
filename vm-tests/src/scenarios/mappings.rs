//! Code that does not arrive through an exec of a granted file: the dynamic loader run
//! by hand, `LD_PRELOAD`, memfd and deleted-file execution, anonymous and
//! writable-and-executable memory. Each refusal is paired with the same technique working
//! where the policy allows it (the JIT scope, or outside every scope).

use std::path::Path;
use std::process::Command;

use vm_tests::{PROBE_EXIT, UNLISTED_EXIT, attack};

use crate::support::policy::enforce_shared_policy;
use crate::support::run::{Outcome, expect_attack, run_cmd};
use crate::support::{Env, JIT_SCOPE, LD_SO, SCOPE, WORK, copy_executable};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![
    ld_so_cannot_run_an_unlisted_binary,
    ld_preload_of_unlisted_library_refused,
    memfd_exec_denied,
    deleted_file_exec_denied,
    anonymous_executable_memory_denied,
];

fn ld_so_cannot_run_an_unlisted_binary(env: &Env) {
    enforce_shared_policy(env);
    let unlisted = env.unlisted.to_str().expect("utf-8 path");
    // The loader itself is granted (a library of every granted program); mapping the
    // unlisted program is not.
    let (outcome, output) = run_cmd(Some(SCOPE), Command::new(LD_SO).arg(unlisted));
    assert!(
        outcome == Outcome::Exited(127) && !output.contains("unlisted ran"),
        "ld.so ./unlisted in scope: expected the loader to fail (127), got {outcome:?}: {output}"
    );
    let outside = run_cmd(None, Command::new(LD_SO).arg(unlisted)).0;
    assert!(
        outside == Outcome::Exited(UNLISTED_EXIT),
        "ld.so ./unlisted outside scopes should run it, got {outside:?}"
    );
}

fn ld_preload_of_unlisted_library_refused(env: &Env) {
    enforce_shared_policy(env);
    // An unlisted library: a real one (so it loads fine outside scopes) with one byte more.
    let closure = enforcer::host::elf::with_dependencies(std::slice::from_ref(&env.probe))
        .unwrap_or_else(|e| panic!("libraries of {}: {e}", env.probe.display()));
    let real = closure
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libgcc_s"))
        })
        .unwrap_or_else(|| panic!("probe links no libgcc_s: {closure:?}"));
    let evil = Path::new(WORK).join("preload/libevil.so");
    copy_executable(real, &evil);
    let mut bytes = std::fs::read(&evil).expect("read the library copy");
    bytes.push(0);
    std::fs::write(&evil, bytes).expect("write the library copy with one byte more");
    let preload = |scope| run_cmd(scope, Command::new(&env.probe).env("LD_PRELOAD", &evil));
    let (outcome, output) = preload(Some(SCOPE));
    assert!(
        outcome == Outcome::Exited(PROBE_EXIT) && output.contains("cannot be preloaded"),
        "LD_PRELOAD in scope: expected the loader to refuse the library, got {outcome:?}: {output}"
    );
    let (outcome, output) = preload(None);
    assert!(
        outcome == Outcome::Exited(PROBE_EXIT) && !output.contains("cannot be preloaded"),
        "LD_PRELOAD outside scopes should load the library, got {outcome:?}: {output}"
    );
}

fn memfd_exec_denied(env: &Env) {
    enforce_shared_policy(env);
    // The memfd holds a granted program: fileless execution is refused regardless.
    let probe = env.probe.to_str().expect("utf-8 path");
    expect_attack(env, Some(SCOPE), &["memfd-exec", probe], attack::EPERM);
    expect_attack(env, Some(JIT_SCOPE), &["memfd-exec", probe], PROBE_EXIT);
}

fn deleted_file_exec_denied(env: &Env) {
    enforce_shared_policy(env);
    let probe = Path::new(WORK).join("deleted/probe");
    copy_executable(&env.probe, &probe);
    let probe = probe.to_str().expect("utf-8 path");
    expect_attack(env, Some(SCOPE), &["deleted-exec", probe], attack::EPERM);
    expect_attack(env, Some(JIT_SCOPE), &["deleted-exec", probe], PROBE_EXIT);
}

fn anonymous_executable_memory_denied(env: &Env) {
    enforce_shared_policy(env);
    expect_attack(env, Some(SCOPE), &["anon-rwx"], attack::EPERM);
    expect_attack(env, Some(SCOPE), &["mprotect-exec"], attack::EPERM);
    // A granted file mapped writable and executable is no better than anonymous memory.
    let probe = env.probe.to_str().expect("utf-8 path");
    expect_attack(env, Some(SCOPE), &["wx-file", probe], attack::EPERM);
    expect_attack(
        env,
        Some(JIT_SCOPE),
        &["wx-file", probe],
        attack::INJECTED_CODE,
    );
    expect_attack(env, Some(JIT_SCOPE), &["anon-rwx"], attack::INJECTED_CODE);
    expect_attack(
        env,
        Some(JIT_SCOPE),
        &["mprotect-exec"],
        attack::INJECTED_CODE,
    );
    expect_attack(env, None, &["anon-rwx"], attack::INJECTED_CODE);
}
