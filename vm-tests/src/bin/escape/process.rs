//! Acting on another process (the agent, or a sleeper the runner started outside every
//! scope): signals, directly and through a file's owner, priority and resource limits.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::Duration;

use vm_tests::technique;

use crate::sys;

/// Sends signal `SIG` to `PID` (kill).
///
/// Kernel path: `kill_proc_info` → `check_kill_permission` → `security_task_kill`.
/// Escape: SIGKILL or SIGSTOP to the agent ends or stops enforcement's userspace half:
/// no more audit records, reloads or answers.
pub(crate) fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain syscall.
    sys::check(unsafe { libc::kill(pid, sig) }, "kill");
    println!("sent signal {sig} to {pid}");
}

/// Sets the nice value of `PID` to 19 (setpriority), then back to what it was.
///
/// Kernel path: `setpriority` → `set_one_prio` → `security_task_setnice`.
/// Escape: at nice 19 (or with another scheduler class) the agent is starved by a busy
/// scope: its audit and reload work falls behind without it being stopped.
pub(crate) fn renice(pid: libc::id_t) {
    // getpriority returns the nice value, which may be -1: only errno tells an error.
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall.
    let old = unsafe { libc::getpriority(libc::PRIO_PROCESS, pid) };
    if old == -1 && io::Error::last_os_error().raw_os_error() != Some(0) {
        technique::fail("getpriority");
    }
    println!("nice of {pid} was {old}");
    // SAFETY: plain syscall.
    sys::check(
        unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, 19) },
        "setpriority",
    );
    println!("set nice of {pid} to 19");
    // SAFETY: plain syscall.
    sys::undo(
        unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, old) },
        &format!("set nice of {pid} back to {old}"),
    );
    println!("set nice of {pid} back to {old}");
}

/// Reads the open-files limit of `PID` and sets it to the same values (prlimit): allowed,
/// it changes nothing.
///
/// Kernel path: `prlimit64` → `check_prlimit_permission` → `security_task_prlimit`, then
/// `do_prlimit` → `security_task_setrlimit`.
/// Escape: with a tiny RLIMIT_NOFILE (or RLIMIT_AS, RLIMIT_CPU) the agent fails at its
/// next open or allocation, or is killed: a quiet way to stop it.
pub(crate) fn prlimit(pid: libc::pid_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer; no new limit.
    sys::check(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &raw mut limit) },
        "prlimit (read)",
    );
    println!(
        "RLIMIT_NOFILE of {pid}: {} {}",
        limit.rlim_cur, limit.rlim_max
    );
    // SAFETY: `limit` is a valid in-pointer; no old limit wanted.
    sys::check(
        unsafe {
            libc::prlimit(
                pid,
                libc::RLIMIT_NOFILE,
                &raw const limit,
                std::ptr::null_mut(),
            )
        },
        "prlimit",
    );
    println!("set RLIMIT_NOFILE of {pid} to the same values");
}

/// `F_SETSIG` from include/uapi/asm-generic/fcntl.h (Linux only; not in the libc crate
/// for glibc targets).
const F_SETSIG: libc::c_int = 10;

/// Makes `PID` the owner of a pipe's read end with SIGKILL as its I/O signal, turns on
/// O_ASYNC and writes a byte: the kernel then sends SIGKILL to `PID` itself.
///
/// Kernel path: `pipe_write` → `kill_fasync` → `send_sigio` → `sigio_perm` and
/// `security_file_send_sigiotask`; `fcntl(F_SETOWN)` → `security_file_set_fowner`.
/// Escape: the signal is sent by the kernel on the file owner's behalf, not by `kill`, so
/// a guard on kill alone lets it through to the agent.
/// A refusal is silent to the caller: the kernel just does not send the signal and every
/// call here succeeds. The runner therefore asserts on whether `PID` survived and on the
/// audit record, not on this exit code.
pub(crate) fn sigio(pid: libc::pid_t) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    sys::check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        "pipe2",
    );
    // SAFETY: the kernel just returned these descriptors; each is owned once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let r = read.as_raw_fd();
    // SAFETY: plain fcntl calls on our descriptor.
    unsafe {
        sys::check(libc::fcntl(r, libc::F_SETOWN, pid), "F_SETOWN");
        println!("F_SETOWN {pid}");
        sys::check(libc::fcntl(r, F_SETSIG, libc::SIGKILL), "F_SETSIG");
        println!("F_SETSIG SIGKILL");
        let flags = sys::check(libc::fcntl(r, libc::F_GETFL), "F_GETFL");
        sys::check(
            libc::fcntl(r, libc::F_SETFL, flags | libc::O_ASYNC),
            "F_SETFL",
        );
        println!("F_SETFL O_ASYNC");
    }
    sys::write(write.as_raw_fd(), b"x", "write pipe");
    println!("wrote a byte: the kernel signals {pid}");
    std::thread::sleep(Duration::from_millis(200));
}
