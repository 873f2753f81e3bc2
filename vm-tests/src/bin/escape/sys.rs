//! Thin wrappers over the syscalls the techniques share: each one that the kernel may
//! refuse ends the fixture through [`technique::fail`] with the step's name, so the exit
//! code carries the errno of that exact call.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use vm_tests::technique;

/// A C string for `s`; a NUL inside is a broken invocation, not a refusal.
pub(crate) fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| technique::broken(&format!("{s:?} holds a NUL byte")))
}

/// Ends the fixture if a syscall returned a negative value: `step` was refused with errno.
/// ENOSYS is no refusal but a kernel built without the call (CONFIG_MODULES,
/// CONFIG_X86_IOPL_IOPERM...): a broken setup, which a test must not take for a denial.
pub(crate) fn check<T: PartialOrd + Default>(ret: T, step: &str) -> T {
    if ret < T::default() {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            technique::broken(&format!("{step}: not in this kernel: {err}"));
        }
        technique::fail(step);
    }
    ret
}

/// Ends the fixture with `err` as the refusal of `step`. std reports errors as values, and
/// `technique::fail` reads errno, so the error is put back there first.
pub(crate) fn fail_io(step: &str, err: &io::Error) -> ! {
    match err.raw_os_error() {
        // SAFETY: errno is thread-local and always writable.
        Some(code) => unsafe { *libc::__errno_location() = code },
        None => technique::broken(&format!("{step}: {err}")),
    }
    technique::fail(step)
}

/// Ends the fixture when undoing a technique failed: the host is left changed, so this is
/// a broken run whatever the technique did before.
pub(crate) fn undo<T: PartialOrd + Default>(ret: T, what: &str) {
    if ret < T::default() {
        let err = io::Error::last_os_error();
        technique::broken(&format!(
            "undo failed, the host is left changed: {what}: {err}"
        ));
    }
}

/// Writes `data` to `path` to put back what a technique changed; any failure is a broken
/// run (see [`undo`]).
pub(crate) fn restore(path: &str, data: &[u8], what: &str) {
    let c = cstr(path);
    // SAFETY: `c` is a valid C string for the duration of the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    undo(fd, what);
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    undo(n, what);
    if n.unsigned_abs() != data.len() {
        technique::broken(&format!(
            "undo failed, the host is left changed: {what}: short write"
        ));
    }
}

/// `open(2)` with `O_CLOEXEC`; a refusal is reported as `step`.
pub(crate) fn open(path: &str, flags: libc::c_int, mode: libc::mode_t, step: &str) -> OwnedFd {
    let c = cstr(path);
    // SAFETY: `c` is a valid C string for the duration of the call.
    let fd = check(
        unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) },
        step,
    );
    // SAFETY: `fd` was just opened and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Writes all of `data` to `fd` in one call (the files written here are kernel interfaces
/// that take a value per write); a refusal or a short write is reported as `step`.
pub(crate) fn write(fd: RawFd, data: &[u8], step: &str) {
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = check(
        unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) },
        step,
    );
    if n.unsigned_abs() != data.len() {
        technique::broken(&format!(
            "{step}: short write ({n} of {} bytes)",
            data.len()
        ));
    }
}

/// Opens `path` for writing and writes `data`; both calls report as `step`, the open with
/// the path added so the output says which one was refused.
pub(crate) fn write_path(path: &str, data: &[u8], step: &str) {
    let fd = open(path, libc::O_WRONLY, 0, &format!("{step} (open {path})"));
    write(fd.as_raw_fd(), data, step);
}

/// This process's id as the decimal text that cgroup.procs takes.
pub(crate) fn own_pid_text() -> String {
    std::process::id().to_string()
}

/// A numeric argument; anything else is a broken invocation.
pub(crate) fn number<T: std::str::FromStr>(text: &str, what: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| technique::broken(&format!("{what}: {text:?} is not a number")))
}

/// Waits for `pid` and returns its exit code; a child killed by a signal is a broken run.
pub(crate) fn wait_exit(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &raw mut status, 0) } != pid {
        technique::broken(&format!("waitpid {pid}: {}", io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) {
        technique::broken(&format!(
            "child {pid} did not exit (wait status {status:#x})"
        ));
    }
    libc::WEXITSTATUS(status)
}
