//! Thin wrappers over the syscalls the techniques share: each one that the kernel may
//! refuse ends the fixture through [`technique::fail`] with the step's name, so the exit
//! code carries the errno of that exact call. Setup that is not the technique (reading
//! `LIB`, creating `DIR`) ends it through [`technique::broken`] instead.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use vm_tests::technique;

/// The page size of x86_64, the only architecture whose machine code `CODE` is.
pub(crate) const PAGE: usize = 4096;

/// A C string for `s`; a NUL inside is a broken invocation, not a refusal.
pub(crate) fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| technique::broken(&format!("{s:?} holds a NUL byte")))
}

/// Ends the fixture if a syscall returned a negative value: `step` was refused with errno.
pub(crate) fn check<T: PartialOrd + Default>(ret: T, step: &str) -> T {
    if ret < T::default() {
        technique::fail(step);
    }
    ret
}

/// Ends the fixture with `errno` as the refusal of `step` (for calls that return the
/// error rather than set errno: io_uring completions, a saved errno).
pub(crate) fn fail_errno(step: &str, errno: i32) -> ! {
    // SAFETY: errno is thread-local and always writable.
    unsafe { *libc::__errno_location() = errno };
    technique::fail(step)
}

/// The errno of the last failed call.
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Takes ownership of a descriptor a syscall just returned.
pub(crate) fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller passes a descriptor it just opened and nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `open(2)` with `O_CLOEXEC`; a refusal is reported as `step`.
pub(crate) fn open(path: &str, flags: libc::c_int, mode: libc::mode_t, step: &str) -> OwnedFd {
    let c = cstr(path);
    // SAFETY: `c` is a valid C string for the duration of the call.
    let fd = check(
        unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) },
        step,
    );
    own(fd)
}

/// Writes all of `data` at `offset` in one call; a refusal or a short write is reported
/// as `step`.
pub(crate) fn pwrite(fd: RawFd, data: &[u8], offset: usize, step: &str) {
    let off = libc::off_t::try_from(offset)
        .unwrap_or_else(|_| technique::broken(&format!("{step}: offset {offset}")));
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = check(
        unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) },
        step,
    );
    if n.unsigned_abs() != data.len() {
        technique::broken(&format!(
            "{step}: short write ({n} of {} bytes)",
            data.len()
        ));
    }
}

/// `mmap(2)` of `len` bytes at offset 0 of `fd` (or anonymous memory with `fd` -1); a
/// refusal is reported as `step`.
pub(crate) fn map(
    len: usize,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: RawFd,
    step: &str,
) -> *mut u8 {
    // SAFETY: a new mapping at an address the kernel picks touches no existing memory.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        technique::fail(step);
    }
    p.cast()
}

/// Copies `CODE` to `at`.
///
/// # Safety
/// `at` must be writable for `CODE.len()` bytes.
pub(crate) unsafe fn put_code(at: *mut u8) {
    // SAFETY: the caller promises `at` is writable for the length of CODE.
    unsafe { std::ptr::copy_nonoverlapping(technique::CODE.as_ptr(), at, technique::CODE.len()) };
}

/// Creates `dir` (and its parents) if it is missing: the work directory is setup, so a
/// failure is a broken run.
pub(crate) fn work_dir(dir: &str) {
    if let Err(err) = std::fs::create_dir_all(dir) {
        technique::broken(&format!("create work directory {dir}: {err}"));
    }
}

/// Ends the fixture as broken unless `dir` is on tmpfs (shmem), which `why` needs.
pub(crate) fn require_tmpfs(dir: &str, why: &str) {
    let c = cstr(dir);
    // SAFETY: all-zero is a valid `statfs`, which the call fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        technique::broken(&format!("statfs {dir}: {}", io::Error::last_os_error()));
    }
    if st.f_type != libc::TMPFS_MAGIC {
        technique::broken(&format!(
            "{dir} is not on tmpfs (f_type {:#x}): {why}",
            st.f_type
        ));
    }
}

/// Copies the content of `lib` to a new file `dir/name` (mode 0700, owned by the caller so
/// it can be opened for writing later) and returns its path and length. `lib` itself is
/// only read. A `lib` shorter than a page is a broken invocation: the techniques run the
/// first page of a mapping of the copy.
pub(crate) fn copy_lib(lib: &str, dir: &str, name: &str) -> (String, usize) {
    let bytes =
        std::fs::read(lib).unwrap_or_else(|err| technique::broken(&format!("read {lib}: {err}")));
    if bytes.len() < PAGE {
        technique::broken(&format!(
            "{lib} holds {} bytes, less than a page ({PAGE})",
            bytes.len()
        ));
    }
    let path = format!("{dir}/{name}");
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => technique::broken(&format!("remove old {path}: {err}")),
    }
    let fd = open(
        &path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o700,
        &format!("create {path}"),
    );
    pwrite(fd.as_raw_fd(), &bytes, 0, &format!("write {path}"));
    println!("copied {lib} ({} bytes) to {path}", bytes.len());
    (path, bytes.len())
}

/// Waits for `pid` and returns its wait status; a failed wait is a broken run.
pub(crate) fn wait(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &raw mut status, 0) } != pid {
        technique::broken(&format!("waitpid {pid}: {}", io::Error::last_os_error()));
    }
    status
}

/// Ends the fixture with the exit code of a child that exited (the technique's result
/// came from the child); a child killed by a signal is a broken run.
pub(crate) fn exit_like(pid: libc::pid_t, status: libc::c_int) -> ! {
    if !libc::WIFEXITED(status) {
        technique::broken(&format!(
            "child {pid} did not exit (wait status {status:#x})"
        ));
    }
    let code = libc::WEXITSTATUS(status);
    println!("child {pid} exited with {code}");
    std::process::exit(code)
}

/// The line of /proc/self/maps that describes the mapping holding `at`, for the output.
pub(crate) fn maps_line(at: *const u8) -> String {
    let addr = at.addr();
    let holds = |line: &&str| {
        let range = line.split(' ').next().unwrap_or_default();
        let mut ends = range
            .split('-')
            .map(|hex| usize::from_str_radix(hex, 16).unwrap_or_default());
        matches!((ends.next(), ends.next()), (Some(lo), Some(hi)) if lo <= addr && addr < hi)
    };
    std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| maps.lines().find(holds).map(str::to_owned))
        .unwrap_or_else(|| format!("no line for {at:p} in /proc/self/maps"))
}
