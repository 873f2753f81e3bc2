//! The shared unsigned policy: the fixture files it names, and loading it.
//!
//! Scenarios that rely on it call [`enforce_shared_policy`] first, whatever ran before
//! them: a scenario may leave a signed policy, another scope set, or nothing pinned at all
//! (`enforcer unload`), and none of them restores the shared policy for the next one.

use std::process::Command;

use super::run::run_tool;
use super::{
    DLOPENED, Env, JIT_SCOPE, MONITOR_SCOPE, NO_INTERPRETER_SCOPE, SCOPE, SCRIPT_EXIT, WORK,
    exec_stack_program, granted_script, ia32_stack_program, ungranted_script, workload_script,
    write_script, zero_fill_program,
};

/// Writes the scripts and the policy file the scenarios rely on. Nothing changes them
/// afterwards, so once per run is enough.
pub(crate) fn write_fixtures(env: &Env) {
    std::fs::create_dir_all(WORK).unwrap_or_else(|e| panic!("mkdir {WORK}: {e}"));
    write_script(&granted_script(), &format!("exit {SCRIPT_EXIT}"));
    write_script(&ungranted_script(), &format!("exit {}", SCRIPT_EXIT + 1));
    let probe = env.probe.display();
    let script = granted_script();
    let script = script.display();
    let attacks = env.attacks.display();
    let (inject, escape) = (env.inject.display(), env.escape.display());
    let stack = exec_stack_program();
    let (code, out) = run_tool(
        Command::new(&env.inject)
            .args(["mark-exec-stack"])
            .arg(&env.inject)
            .arg(&stack),
    );
    assert!(code == 0, "inject mark-exec-stack exited {code}: {out}");
    let stack = stack.display();
    let ia32 = ia32_stack_program();
    let (code, out) = run_tool(Command::new(&env.inject).arg("write-ia32-stack").arg(&ia32));
    assert!(code == 0, "inject write-ia32-stack exited {code}: {out}");
    let ia32 = ia32.display();
    let zero_fill = zero_fill_program();
    let (code, out) = run_tool(
        Command::new(&env.inject)
            .arg("write-exec-zero-fill")
            .arg(&zero_fill),
    );
    assert!(
        code == 0,
        "inject write-exec-zero-fill exited {code}: {out}"
    );
    let zero_fill =
        std::fs::read(&zero_fill).unwrap_or_else(|e| panic!("read {}: {e}", zero_fill.display()));
    let zero_fill = enforcer::host::digest::FileDigest::of_bytes(&zero_fill);
    let workload = env.workload.display();
    write_script(
        &workload_script(),
        &format!(
            "# An ordinary job: busybox tools over files, then a dynamically linked program.\n\
             set -e\n\
             cd \"$1\"\n\
             ls / > listing\n\
             sort -r listing | head -n 3 > sorted\n\
             echo hello | sha256sum | awk '{{print $1}}' > digest\n\
             sed -n 1p sorted > first\n\
             tar cf files.tar listing sorted digest\n\
             tar tf files.tar | wc -l > count\n\
             find . -type f | grep -c . > found\n\
             gzip -c listing | gunzip | cmp - listing\n\
             {workload} \"$1\"\n\
             echo \"script done: $(cat count) files archived, $(cat found) found\""
        ),
    );
    let script_workload = workload_script();
    let script_workload = script_workload.display();
    // Every scope grants its programs' loader and libraries (with_libraries), since
    // executable mappings are checked too.
    let policy = format!(
        "[[scope]]\npath = \"/{SCOPE}\"\nwith_libraries = true\n\
         files = [\"{probe}\", \"{attacks}\", \"{inject}\", \"{escape}\", \"{stack}\", \"{ia32}\", \
         \"{workload}\", \"{script_workload}\", \"{DLOPENED}\", \"/bin/busybox\", \"{script}\"]\n\
         digests = [\"sha256:{zero_fill}\"]\n\n\
         [[scope]]\npath = \"/{NO_INTERPRETER_SCOPE}\"\nwith_libraries = true\nfiles = [\"{probe}\", \"{script}\"]\n\n\
         [[scope]]\npath = \"/{MONITOR_SCOPE}\"\nmode = \"monitor\"\nwith_libraries = true\nfiles = [\"{probe}\"]\n\n\
         [[scope]]\npath = \"/{JIT_SCOPE}\"\nwith_libraries = true\nallow_anonymous_exec = true\n\
         allow_fileless = true\nfiles = [\"{probe}\", \"{attacks}\"]\n"
    );
    std::fs::write(&env.policy, policy)
        .unwrap_or_else(|e| panic!("write {}: {e}", env.policy.display()));
}

/// Loads the shared unsigned policy, which must succeed; returns what `enforcer load`
/// printed.
#[track_caller]
pub(crate) fn load_policy(env: &Env) -> String {
    let (code, text) = run_tool(
        env.enforcer()
            .arg("load")
            .arg("--unsigned-policy")
            .arg(&env.policy),
    );
    assert!(code == 0, "enforcer load exited {code}:\n{text}");
    text
}

/// Setup for a scenario that needs the shared policy in force: loads it, which also
/// pins the program again if a scenario unloaded it. `enforcer load` succeeds only once
/// its self-test saw a granted exec run and an ungranted one denied, so the policy is
/// enforcing when this returns.
#[track_caller]
pub(crate) fn enforce_shared_policy(env: &Env) {
    load_policy(env);
}
