//! Exec decisions on the shared unsigned policy: a granted binary runs in its scope and
//! an ungranted one is denied, identity is content (a renamed copy runs, a one-byte change
//! does not), child cgroups are governed, a script needs both itself and its interpreter
//! granted, and a monitor scope only reports.

use std::os::unix::fs::FileExt as _;
use std::path::Path;

use vm_tests::{PROBE_EXIT, UNLISTED_EXIT};

use crate::support::policy::enforce_shared_policy;
use crate::support::run::{expect_eperm, expect_exit};
use crate::support::{
    Env, MONITOR_SCOPE, NO_INTERPRETER_SCOPE, SCOPE, SCRIPT_EXIT, WORK, cgroup, copy_executable,
    granted_script, ungranted_script,
};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![
    allowed_binary_runs_in_scope,
    unlisted_binary_denied_in_scope,
    unlisted_binary_runs_outside_scopes,
    copy_of_allowed_binary_runs,
    allowed_binary_changed_by_one_byte_denied,
    cached_digest_follows_an_in_place_change,
    child_cgroup_is_governed,
    script_runs_when_script_and_interpreter_granted,
    script_denied_when_script_not_granted,
    script_denied_when_interpreter_not_granted,
    monitor_scope_allows_ungranted,
];

fn allowed_binary_runs_in_scope(env: &Env) {
    enforce_shared_policy(env);
    expect_exit(Some(SCOPE), &env.probe, PROBE_EXIT);
}

fn unlisted_binary_denied_in_scope(env: &Env) {
    enforce_shared_policy(env);
    expect_eperm(Some(SCOPE), &env.unlisted);
}

fn unlisted_binary_runs_outside_scopes(env: &Env) {
    enforce_shared_policy(env);
    expect_exit(None, &env.unlisted, UNLISTED_EXIT);
}

fn copy_of_allowed_binary_runs(env: &Env) {
    enforce_shared_policy(env);
    let copy = copy_executable(&env.probe, &Path::new(WORK).join("elsewhere/renamed-tool"));
    expect_exit(Some(SCOPE), &copy, PROBE_EXIT);
}

fn allowed_binary_changed_by_one_byte_denied(env: &Env) {
    enforce_shared_policy(env);
    let copy = copy_executable(&env.probe, &Path::new(WORK).join("tampered/probe"));
    let mut bytes = std::fs::read(&copy).expect("read the copy of probe");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&copy, &bytes).expect("write the tampered copy of probe");
    expect_eperm(Some(SCOPE), &copy);
}

fn cached_digest_follows_an_in_place_change(env: &Env) {
    enforce_shared_policy(env);
    // The kernel caches a file's digest; a change through the same inode (no truncation,
    // no rename) must still make it ungranted.
    let copy = copy_executable(&env.probe, &Path::new(WORK).join("inplace/probe"));
    expect_exit(Some(SCOPE), &copy, PROBE_EXIT);
    expect_exit(Some(SCOPE), &copy, PROBE_EXIT);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .expect("open the copy of probe read-write");
    let last = file.metadata().expect("stat the copy of probe").len() - 1;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, last)
        .expect("read the last byte of the copy");
    file.write_all_at(&[byte[0] ^ 1], last)
        .expect("flip the last byte of the copy in place");
    drop(file);
    expect_eperm(Some(SCOPE), &copy);
}

fn child_cgroup_is_governed(env: &Env) {
    enforce_shared_policy(env);
    let child = format!("{SCOPE}/child/grandchild");
    std::fs::create_dir_all(cgroup(&child)).unwrap_or_else(|e| panic!("mkdir child cgroup: {e}"));
    expect_eperm(Some(&child), &env.unlisted);
    expect_exit(Some(&child), &env.probe, PROBE_EXIT);
}

fn script_runs_when_script_and_interpreter_granted(env: &Env) {
    enforce_shared_policy(env);
    expect_exit(Some(SCOPE), &granted_script(), SCRIPT_EXIT);
}

fn script_denied_when_script_not_granted(env: &Env) {
    enforce_shared_policy(env);
    // The interpreter (busybox) is granted here; the script is not.
    expect_eperm(Some(SCOPE), &ungranted_script());
}

fn script_denied_when_interpreter_not_granted(env: &Env) {
    enforce_shared_policy(env);
    expect_exit(Some(NO_INTERPRETER_SCOPE), &env.probe, PROBE_EXIT);
    expect_eperm(Some(NO_INTERPRETER_SCOPE), &granted_script());
}

fn monitor_scope_allows_ungranted(env: &Env) {
    enforce_shared_policy(env);
    expect_exit(Some(MONITOR_SCOPE), &env.unlisted, UNLISTED_EXIT);
}
