//! Changing a granted file behind an overlay mount: the mapping is made through the
//! overlay, the write goes to the upper layer's file directly.

use std::os::fd::AsRawFd as _;

use vm_tests::technique;

use crate::sys;

/// Writes `data` to the /proc/self file `name` (a user namespace's maps); a refusal is the
/// step "write /proc/self/NAME".
fn write_proc(name: &str, data: &str) {
    let path = format!("/proc/self/{name}");
    let step = format!("write {path}");
    let fd = sys::open(&path, libc::O_WRONLY, 0, &step);
    // SAFETY: `data` is valid for `data.len()` bytes.
    let n = sys::check(
        unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) },
        &step,
    );
    if n.unsigned_abs() != data.len() {
        technique::broken(&format!("{step}: short write"));
    }
}

/// Creates `path` as a directory unless it exists (setup: a failure is a broken run).
fn mkdir(path: &str) {
    if let Err(err) = std::fs::create_dir(path)
        && err.kind() != std::io::ErrorKind::AlreadyExists
    {
        technique::broken(&format!("mkdir {path}: {err}"));
    }
}

/// In a new user and mount namespace, mounts an overlay whose upper layer holds a copy of
/// `LIB`, maps the copy executable (`MAP_SHARED`) through the overlay, then writes
/// `CODE` over it through its path in the upper layer.
///
/// Kernel path: `unshare(CLONE_NEWUSER | CLONE_NEWNS)` → `security_create_user_ns`; the
/// overlay mount (`FS_USERNS_MOUNT`, Linux 5.11+) → `security_sb_mount`; `ovl_mmap` →
/// `backing_file_mmap` puts the upper layer's real file in the vma, so
/// `security_mmap_file` sees the overlay file and the vma another; the write opens the
/// real file by another path.
/// Injection: the mapping runs the upper file's page cache, which the write changed; a
/// check that follows only the overlay inode sees no writer.
pub(crate) fn overlay(lib: &str, dir: &str) -> ! {
    sys::work_dir(dir);
    // SAFETY: plain syscalls.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: plain syscall; the process is single-threaded, as CLONE_NEWUSER requires.
    sys::check(
        unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) },
        "unshare",
    );
    write_proc("setgroups", "deny");
    write_proc("uid_map", &format!("0 {uid} 1"));
    write_proc("gid_map", &format!("0 {gid} 1"));
    println!("in a new user and mount namespace as root (uid {uid} outside)");
    let [lower, upper, work, merged] =
        ["lower", "upper", "work", "merged"].map(|d| format!("{dir}/{d}"));
    for d in [&lower, &upper, &work, &merged] {
        mkdir(d);
    }
    let (path, len) = sys::copy_lib(lib, &upper, "x");
    let options = format!("lowerdir={lower},upperdir={upper},workdir={work}");
    let (source, target, fstype, data) = (
        sys::cstr("overlay"),
        sys::cstr(&merged),
        sys::cstr("overlay"),
        sys::cstr(&options),
    );
    // SAFETY: valid C strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    sys::check(r, "mount overlay");
    println!("mounted overlay on {merged} ({options})");
    let through = format!("{merged}/x");
    let ro = sys::open(&through, libc::O_RDONLY, 0, "open");
    let at = sys::map(
        len,
        libc::PROT_READ | libc::PROT_EXEC,
        libc::MAP_SHARED,
        ro.as_raw_fd(),
        "map executable",
    );
    println!(
        "mapped {through} PROT_READ|PROT_EXEC at {at:p}: {}",
        sys::maps_line(at)
    );
    let rw = sys::open(&path, libc::O_RDWR, 0, "open for writing");
    sys::pwrite(rw.as_raw_fd(), &technique::CODE, 0, "write code");
    println!("wrote CODE at offset 0 of {path}");
    // SAFETY: `at` is an executable mapping whose first bytes are CODE.
    unsafe { technique::run_code(at) }
}
