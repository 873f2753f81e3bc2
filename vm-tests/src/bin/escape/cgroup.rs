//! Leaving the scope, or stopping one, through the cgroup v2 interface files.

use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use vm_tests::technique;

use crate::sys;

/// Writes the fixture's pid to `CGROUP_DIR/cgroup.procs`.
///
/// Kernel path: `cgroup_procs_write` → `cgroup_attach_task` moves the whole process.
/// Escape: a scope is a cgroup; a process that can move itself to another cgroup is no
/// longer governed by it (nor are its children).
pub(crate) fn write(dir: &str) {
    let procs = format!("{dir}/cgroup.procs");
    sys::write_path(&procs, sys::own_pid_text().as_bytes(), "write cgroup.procs");
    println!("wrote own pid to {procs}");
    match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(text) => print!("/proc/self/cgroup: {text}"),
        Err(err) => technique::broken(&format!("read /proc/self/cgroup: {err}")),
    }
}

/// `struct clone_args` from include/uapi/linux/sched.h, up to `cgroup`
/// (`CLONE_ARGS_SIZE_VER2`, 88 bytes): every field is a `__aligned_u64`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const _: () = assert!(std::mem::size_of::<CloneArgs>() == 88);

/// `CLONE_INTO_CGROUP` from include/uapi/linux/sched.h (a 64-bit flag, clone3 only).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Starts a child directly in `CGROUP_DIR` with clone3(`CLONE_INTO_CGROUP`).
///
/// Kernel path: `clone3` → `cgroup_css_set_fork` → `cgroup_attach_permissions`, which
/// checks write access to the target's cgroup.procs without any write to it.
/// Escape: the child is born outside the scope, so a guard on cgroup.procs writes alone
/// would miss it.
pub(crate) fn clone_into(dir: &str) {
    let cgroup = sys::open(
        dir,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        &format!("open {dir}"),
    );
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD.unsigned_abs().into(),
        cgroup: cgroup.as_raw_fd().unsigned_abs().into(),
        ..CloneArgs::default()
    };
    println!("clone3 into {dir}");
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a copy of this
    // single-threaded process and only calls _exit.
    let pid = sys::check(
        unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &raw const args,
                std::mem::size_of::<CloneArgs>(),
            )
        },
        "clone3",
    );
    if pid == 0 {
        // SAFETY: the child leaves at once, running nothing of the parent's state.
        unsafe { libc::_exit(0) };
    }
    let pid = libc::pid_t::try_from(pid)
        .unwrap_or_else(|_| technique::broken(&format!("clone3 returned {pid}")));
    let code = sys::wait_exit(pid);
    if code != 0 {
        technique::broken(&format!("child {pid} exited {code}"));
    }
    println!("child {pid} ran in {dir} and exited 0");
}

/// Opens `OUT_DIR/cgroup.procs` for writing before entering the scope at `SCOPE_DIR`, then
/// writes its pid through the descriptor it brought along.
///
/// Kernel path: `cgroup_procs_write` checks permissions with the credentials and cgroup
/// namespace of the opener (`of->file->f_cred`, since 5.16), not of the writer.
/// Escape: a descriptor opened outside (or passed in over a unix socket) carries no scope,
/// so only a check at write time, on the writer, keeps the process in.
pub(crate) fn inherited_fd(scope: &str, out: &str) {
    let procs = format!("{out}/cgroup.procs");
    let fd = sys::open(&procs, libc::O_WRONLY, 0, &format!("open {procs}"));
    println!("opened {procs} before entering the scope");
    let scope_procs = format!("{scope}/cgroup.procs");
    sys::write_path(&scope_procs, sys::own_pid_text().as_bytes(), "enter scope");
    println!("entered {scope}");
    sys::write(
        fd.as_raw_fd(),
        sys::own_pid_text().as_bytes(),
        "write inherited cgroup.procs fd",
    );
    println!("moved to {out} through the inherited descriptor");
}

/// Freezes `CGROUP_DIR` (writes "1" to its cgroup.freeze), then thaws it.
///
/// Kernel path: `cgroup_freeze_write` → `cgroup_freeze`, which stops every task below.
/// Escape: frozen, the agent (or any governed service) is stopped without a signal, so
/// nothing it would do on a signal happens. `CGROUP_DIR` must not hold this fixture.
pub(crate) fn freeze(dir: &str) {
    let file = format!("{dir}/cgroup.freeze");
    sys::write_path(&file, b"1", "write cgroup.freeze");
    println!("froze {dir}");
    // Freezing completes asynchronously; cgroup.events says when every task stopped.
    let events = format!("{dir}/cgroup.events");
    let start = Instant::now();
    let frozen = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.lines().any(|l| l == "frozen 1") {
            break true;
        }
        if start.elapsed() > Duration::from_secs(2) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("cgroup.events: frozen {}", u8::from(frozen));
    sys::restore(&file, b"0", "thaw (write 0 to cgroup.freeze)");
    println!("thawed {dir}");
}
