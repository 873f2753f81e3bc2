//! What the scenarios share: where things are in the VM, the scopes of the shared unsigned
//! policy, and helpers that panic with what was expected and what happened (aya's
//! integration-test style), so that a failing scenario says why on its FAIL line.

pub(crate) mod agent;
pub(crate) mod audit;
pub(crate) mod contained;
pub(crate) mod fuse;
pub(crate) mod modules;
pub(crate) mod mounts;
pub(crate) mod net;
pub(crate) mod policy;
pub(crate) mod run;
pub(crate) mod service;
pub(crate) mod signed;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Panic payload of a scenario that cannot run on this machine (what it needs is not
/// there, and cannot be made to be): the runner reports it skipped, with this reason.
pub(crate) struct Unavailable(pub(crate) String);

pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Enforcing scope: grants probe, busybox (the shell) and one script.
pub(crate) const SCOPE: &str = "vmtest";
/// Enforcing scope that grants the script and probe but not the interpreter.
pub(crate) const NO_INTERPRETER_SCOPE: &str = "vmtest-nointerp";
/// Monitor-mode scope: grants probe; everything else is allowed and reported.
pub(crate) const MONITOR_SCOPE: &str = "vmtest-monitor";
/// Enforcing scope that opts in to anonymous executable memory and fileless code.
pub(crate) const JIT_SCOPE: &str = "vmtest-jit";
/// The dynamic loader on x86_64 glibc systems.
pub(crate) const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";
pub(crate) const WORK: &str = "/tmp/vmtest";

pub(crate) const SCRIPT_EXIT: i32 = 5;
/// How long a background agent may take to report ready under TCG.
pub(crate) const AGENT_READY: Duration = Duration::from_secs(60);

/// Where things are inside the VM (overridable for running on a spare machine).
pub(crate) struct Env {
    pub(crate) enforcer: PathBuf,
    pub(crate) probe: PathBuf,
    pub(crate) unlisted: PathBuf,
    pub(crate) attacks: PathBuf,
    /// The technique fixtures of the containment scenarios.
    pub(crate) inject: PathBuf,
    pub(crate) escape: PathBuf,
    pub(crate) workload: PathBuf,
    pub(crate) policy: PathBuf,
}

impl Env {
    pub(crate) fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.into()))
        };
        let fixtures = var("ENFORCER_TEST_FIXTURES", "/usr/libexec/enforcer-tests");
        Self {
            enforcer: var("ENFORCER_BIN", "/usr/bin/enforcer"),
            probe: fixtures.join("probe"),
            unlisted: fixtures.join("unlisted"),
            attacks: fixtures.join("attacks"),
            inject: fixtures.join("inject"),
            escape: fixtures.join("escape"),
            workload: fixtures.join("workload"),
            policy: Path::new(WORK).join("policy.toml"),
        }
    }

    pub(crate) fn enforcer(&self) -> Command {
        Command::new(&self.enforcer)
    }
}

pub(crate) fn cgroup(scope: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(scope)
}

/// A copy of the `inject` fixture whose stack is executable (PT_GNU_STACK RWX), granted in
/// the enforcing scope: its content is authorized, its stack is not.
pub(crate) fn exec_stack_program() -> PathBuf {
    Path::new(WORK).join("inject-exec-stack")
}

/// An i386 program without `PT_GNU_STACK` (so with an executable stack) that runs code
/// from its stack, granted in the enforcing scope.
pub(crate) fn ia32_stack_program() -> PathBuf {
    Path::new(WORK).join("ia32-stack")
}

/// An x86_64 program whose executable segment the kernel zero-fills beyond its file part,
/// granted in the enforcing scope by digest (as a bundle made by another tool could grant
/// it: `files =` refuses such a program).
pub(crate) fn zero_fill_program() -> PathBuf {
    Path::new(WORK).join("exec-zero-fill")
}

/// A granted script that runs busybox tools and the workload fixture.
pub(crate) fn workload_script() -> PathBuf {
    Path::new(WORK).join("workload.sh")
}

/// A library the workload opens at run time (not one it links): granted by name.
pub(crate) const DLOPENED: &str = "/lib/x86_64-linux-gnu/libm.so.6";

pub(crate) fn granted_script() -> PathBuf {
    Path::new(WORK).join("granted.sh")
}

pub(crate) fn ungranted_script() -> PathBuf {
    Path::new(WORK).join("ungranted.sh")
}

/// Copies `from` to `to` (creating its directory) and makes it executable.
pub(crate) fn copy_executable(from: &Path, to: &Path) -> PathBuf {
    let dir = to.parent().expect("a fixture copy has a parent directory");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    make_executable(to);
    to.to_path_buf()
}

/// Files given other modes until the guard is dropped, which puts back the modes they had.
pub(crate) struct ModesUntilDrop(Vec<(PathBuf, u32)>);

impl ModesUntilDrop {
    #[track_caller]
    pub(crate) fn set(modes: &[(&Path, u32)]) -> Self {
        let mut guard = Self(Vec::new());
        for &(path, mode) in modes {
            let old = std::fs::metadata(path)
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
                .permissions()
                .mode()
                & 0o7777;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
            guard.0.push((path.to_path_buf(), old));
        }
        guard
    }
}

impl Drop for ModesUntilDrop {
    fn drop(&mut self) {
        for (path, mode) in self.0.iter().rev() {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode));
        }
    }
}

/// Writes `#!/bin/sh` + `body` to `path`, executable.
pub(crate) fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n"))
        .unwrap_or_else(|e| panic!("write script {}: {e}", path.display()));
    make_executable(path);
}

fn make_executable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 755 {}: {e}", path.display()));
}

/// The console line that hands a file to the host: `ENFORCER-VM-FILE <name> <hex>`. xtask
/// (`FILE` in its vm.rs) writes it to `target/vm/<kernel>/files/<name>` and runs its host
/// checks on what it received.
const EXPORT: &str = "ENFORCER-VM-FILE ";

/// Hands the file at `path` to the host as `name` (a relative path of plain names).
pub(crate) fn export(name: &str, path: &Path) {
    use std::fmt::Write as _;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("export {}: {e}", path.display()));
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    // One write, so that nothing of ours lands inside the line.
    println!("{EXPORT}{name} {hex}");
}
