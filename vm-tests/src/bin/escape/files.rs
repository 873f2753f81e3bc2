//! Changing or reading files and devices outside the scope's writable directories.

use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::fs::MetadataExt as _;

use vm_tests::technique;

use crate::sys;

/// The line `write-file` appends.
const LINE: &[u8] = b"# escape test\n";

/// Appends a comment line to `PATH`, creating it (0644) if need be; then removes a file it
/// created, or cuts an existing one back to its old length and puts back its access and
/// modification times. What cannot be put back: the file's change time, and the change
/// and modification times of its directory when the file was created.
///
/// Kernel path: `do_filp_open` → `security_file_open` (and `security_path_mknod` or
/// `security_inode_create` on creation).
/// Escape: host files are code and policy that run outside the scope: /etc/cron.d and
/// systemd units are run by deputies, /etc/ld.so.preload is loaded into every program,
/// /usr/local/bin is on root's PATH, /etc/enforcer is the enforcement's own configuration.
pub(crate) fn write(path: &str) {
    let before = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => sys::fail_io(&format!("stat {path}"), &err),
    };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND;
    let fd = sys::open(path, flags, 0o644, &format!("open {path}"));
    sys::write(fd.as_raw_fd(), LINE, &format!("write {path}"));
    println!("appended {} bytes to {path}", LINE.len());
    match before {
        None => {
            let c = sys::cstr(path);
            // SAFETY: a valid C string.
            sys::undo(
                unsafe { libc::unlink(c.as_ptr()) },
                &format!("unlink {path}"),
            );
            println!("removed {path}, which did not exist before");
        }
        Some(meta) => {
            restore_file(fd.as_raw_fd(), &meta, path);
            println!("cut {path} back to {} bytes", meta.len());
        }
    }
}

/// Cuts the file back to its old length and puts back its old access and modification
/// times.
fn restore_file(fd: RawFd, meta: &std::fs::Metadata, path: &str) {
    let len = libc::off_t::try_from(meta.len())
        .unwrap_or_else(|_| technique::broken(&format!("{path}: length {}", meta.len())));
    // SAFETY: plain syscall on our descriptor.
    sys::undo(
        unsafe { libc::ftruncate(fd, len) },
        &format!("truncate {path}"),
    );
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: `times` holds the two timestamps futimens reads.
    sys::undo(
        unsafe { libc::futimens(fd, times.as_ptr()) },
        &format!("restore times of {path}"),
    );
}

/// Opens `PATH` for reading and reads it all; prints only its size.
///
/// Kernel path: `do_filp_open` → `security_file_open`, then `security_file_permission`.
/// Escape: secrets of the host, such as the key the audit log is signed with, let the
/// scope forge what the host would trust (audit records that hide its own actions).
pub(crate) fn read(path: &str) {
    let fd = sys::open(path, libc::O_RDONLY, 0, &format!("open {path}"));
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|err| sys::fail_io(&format!("read {path}"), &err));
    println!("read {} bytes of {path}", bytes.len());
}

/// Opens `PATH` (a directory) read-only and takes an exclusive flock on it, then lets go.
///
/// Kernel path: `do_filp_open` → `security_file_open`; `flock` needs no write access.
/// Escape: the agent locks its pin directory while it applies a policy; a lock held by the
/// scope would hold every update and revocation off for good.
pub(crate) fn flock(path: &str) {
    let fd = sys::open(
        path,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        &format!("open {path}"),
    );
    // SAFETY: our own descriptor.
    sys::check(
        unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        "flock",
    );
    println!("locked {path}");
    // SAFETY: our own descriptor.
    sys::undo(
        unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) },
        "unlock",
    );
}

/// Makes a block device node for loop0 (7:0) at `PATH`, then removes it.
///
/// Kernel path: `do_mknodat` → `security_path_mknod` → `vfs_mknod` (CAP_MKNOD).
/// Escape: a device node is raw access to what it names: a disk node of the host's disk
/// bypasses every file permission and check on the filesystem above it.
pub(crate) fn mknod(path: &str) {
    if std::fs::symlink_metadata(path).is_ok() {
        technique::broken(&format!("{path} exists already"));
    }
    let c = sys::cstr(path);
    // SAFETY: a valid C string.
    sys::check(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(7, 0)) },
        "mknod",
    );
    println!("made block device 7:0 at {path}");
    // SAFETY: a valid C string.
    sys::undo(
        unsafe { libc::unlink(c.as_ptr()) },
        &format!("unlink {path}"),
    );
    println!("removed {path}");
}

/// Opens the device `PATH` for writing and closes it without writing.
///
/// Kernel path: `do_filp_open` → `security_file_open` on the device inode.
/// Escape: devices written from a scope act on the host: /dev/kmsg forges kernel log
/// lines (and floods them), /dev/mem and disks are raw memory and storage.
pub(crate) fn device_write(path: &str) {
    let fd = sys::open(path, libc::O_WRONLY, 0, &format!("open {path}"));
    println!("opened {path} for writing");
    drop(fd);
}

/// `FS_IMMUTABLE_FL` from include/uapi/linux/fs.h.
const FS_IMMUTABLE_FL: libc::c_int = 0x10;

/// Ends the fixture as broken when the filesystem has no inode flags at all (ENOTTY;
/// older tmpfs and ramfs, procfs, sysfs): that is no refusal.
fn flags_ioctl(ret: libc::c_int, step: &str, path: &str) {
    if ret < 0 {
        let err = io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::ENOTTY | libc::EOPNOTSUPP)) {
            technique::broken(&format!("{step}: {path} has no inode flags: {err}"));
        }
        technique::fail(step);
    }
}

/// Sets the immutable flag on `PATH` (FS_IOC_SETFLAGS), then puts the old flags back.
/// Needs a filesystem with inode flags (ext4, xfs, btrfs, tmpfs since 6.0); elsewhere
/// the ioctl fails with ENOTTY, reported as a broken setup.
///
/// Kernel path: `ioctl_setflags` → `vfs_fileattr_set` (CAP_LINUX_IMMUTABLE) and
/// `security_file_ioctl`.
/// Escape: an immutable file cannot be changed or removed, even by root, until the flag
/// is cleared: the scope could pin a host file (the agent's policy, a hook it placed)
/// against the administrator's updates, or make the agent's own writes fail.
pub(crate) fn chattr(path: &str) {
    let fd = sys::open(
        path,
        libc::O_RDONLY | libc::O_NONBLOCK,
        0,
        &format!("open {path}"),
    );
    let mut old: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes an int (whatever its encoded size says).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &raw mut old) };
    flags_ioctl(ret, "FS_IOC_GETFLAGS", path);
    if old & FS_IMMUTABLE_FL != 0 {
        technique::broken(&format!(
            "{path} is immutable already: nothing would change"
        ));
    }
    let new = old | FS_IMMUTABLE_FL;
    // SAFETY: FS_IOC_SETFLAGS reads an int.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &raw const new) };
    flags_ioctl(ret, "FS_IOC_SETFLAGS", path);
    println!("made {path} immutable (flags {old:#x} -> {new:#x})");
    // SAFETY: as above.
    sys::undo(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &raw const old) },
        &format!("clear the immutable flag of {path}"),
    );
    println!("put back the flags of {path}");
}

/// Opens inotify instances until the kernel refuses one (EMFILE: the per-user cap,
/// `fs.inotify.max_user_instances`), prints how many it holds, then keeps taking every
/// instance another process of its uid frees, until its standard input closes.
///
/// Kernel path: `inotify_init1` → `inotify_new_group` → `inc_inotify_instances` (a
/// ucount of the caller's uid in its user namespace); no LSM hook sees it.
/// Escape: root in a scope shares uid 0, and so the count, with the agent: an agent that
/// starts while they are used up cannot watch its artifact directories.
pub(crate) fn inotify_exhaust() {
    // SAFETY: plain syscall; the result is checked.
    let take = || unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    let mut held = Vec::new();
    loop {
        let fd = take();
        if fd >= 0 {
            held.push(fd);
            continue;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EMFILE) || held.is_empty() {
            sys::fail_io("inotify_init1", &err);
        }
        break;
    }
    println!("holding {} inotify instances", held.len());
    let mut stdin = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // Readable stdin means closed (or a byte sent): time to let go.
    // SAFETY: one valid pollfd.
    while unsafe { libc::poll(&raw mut stdin, 1, 20) } == 0 {
        let fd = take();
        if fd >= 0 {
            held.push(fd);
        }
    }
    for fd in held {
        // SAFETY: closing descriptors this process opened and still owns.
        unsafe { libc::close(fd) };
    }
}
