//! Changing what paths mean: mounts over the host's files, with either mount API, and
//! entering the host's mount namespace.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::ptr;

use crate::sys;

/// Mounts a filesystem of `fstype` on `dir` with mount(2).
fn mount(fstype: &str, dir: &str, step: &str) {
    let (source, target, kind) = (sys::cstr(fstype), sys::cstr(dir), sys::cstr(fstype));
    // SAFETY: valid C strings; no mount data.
    sys::check(
        unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                kind.as_ptr(),
                0,
                ptr::null(),
            )
        },
        step,
    );
    println!("mounted {fstype} on {dir}");
}

/// Undoes a mount on `dir`.
fn unmount(dir: &str) {
    let target = sys::cstr(dir);
    // SAFETY: a valid C string.
    sys::undo(
        unsafe { libc::umount2(target.as_ptr(), 0) },
        &format!("umount {dir}"),
    );
    println!("unmounted {dir}");
}

/// Mounts a tmpfs on `DIR` with mount(2), then unmounts it.
///
/// Kernel path: `do_mount` → `security_sb_mount` → `do_new_mount`.
/// Escape: a mount over a host directory (or the agent's) replaces what every process
/// there sees: the agent's configuration, a binary a deputy runs, the audit directory.
pub(crate) fn tmpfs(dir: &str) {
    mount("tmpfs", dir, "mount");
    unmount(dir);
}

/// `FSOPEN_CLOEXEC`, `FSCONFIG_CMD_CREATE`, `FSMOUNT_CLOEXEC`, `MOVE_MOUNT_F_EMPTY_PATH`
/// from include/uapi/linux/mount.h.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// The descriptor a successful syscall returned.
fn owned(ret: libc::c_long, step: &str) -> OwnedFd {
    let fd = libc::c_int::try_from(sys::check(ret, step))
        .unwrap_or_else(|_| vm_tests::technique::broken(&format!("{step} returned {ret}")));
    // SAFETY: the kernel just returned this descriptor and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Mounts a tmpfs on `DIR` with the new mount API (fsopen 430, fsconfig 431, fsmount 432,
/// move_mount 429), then unmounts it.
///
/// Kernel path: none of these calls goes through `security_sb_mount`; the superblock is
/// made by `vfs_get_tree` and attached by `do_move_mount` (`security_move_mount`).
/// Escape: the same mount as `mount-tmpfs`, by a path that a guard on mount(2) alone
/// would miss.
pub(crate) fn new_api(dir: &str) {
    let fstype = sys::cstr("tmpfs");
    // SAFETY: a valid C string.
    let fs = owned(
        unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen",
    );
    println!("fsopen tmpfs");
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux.
    sys::check(
        unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                ptr::null::<libc::c_char>(),
                ptr::null::<libc::c_void>(),
                0,
            )
        },
        "fsconfig",
    );
    println!("fsconfig create");
    // SAFETY: plain syscall on our descriptor.
    let mnt = owned(
        unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) },
        "fsmount",
    );
    println!("fsmount");
    let (empty, target) = (sys::cstr(""), sys::cstr(dir));
    // SAFETY: valid C strings; the source is the mount descriptor itself.
    sys::check(
        unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mnt.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        },
        "move_mount",
    );
    println!("move_mount to {dir}");
    // The mount descriptor pins the mount: with it open, umount fails with EBUSY.
    drop((mnt, fs));
    unmount(dir);
}

/// Unshares a user and a mount namespace, makes every mount private and mounts a tmpfs on
/// `DIR`. Nothing to undo: the namespaces, and the mount in them, end with the process.
///
/// Kernel path: `unshare(CLONE_NEWUSER|CLONE_NEWNS)` (no capability needed: the new user
/// namespace gives its creator every capability over it) → `copy_mnt_ns`, then
/// `path_mount` in the copy, where `security_sb_mount` comes before `may_mount`.
/// Escape: in its own namespace the scope can lay any file over any path without touching
/// the host, and run governed programs against that view (a forged /etc, a library path).
pub(crate) fn userns(dir: &str) {
    // SAFETY: plain syscall; the process is single-threaded.
    sys::check(
        unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) },
        "unshare",
    );
    println!("unshared a user and a mount namespace");
    let root = sys::cstr("/");
    // SAFETY: a valid C string; a propagation change takes no source, type or data.
    sys::check(
        unsafe {
            libc::mount(
                ptr::null(),
                root.as_ptr(),
                ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                ptr::null(),
            )
        },
        "make-rprivate",
    );
    println!("made / rprivate");
    mount("tmpfs", dir, "mount");
}

/// Detaches the mount at `PATH` (umount2 with `MNT_DETACH`). Not undone here: the runner
/// remounts what it passed, since only it knows how it was mounted.
///
/// Kernel path: `ksys_umount` → `security_sb_umount` → `do_umount`.
/// Escape: unmounting a filesystem the enforcement relies on (bpffs with the pinned maps,
/// securityfs, a read-only bind over the agent's files) uncovers or removes it.
pub(crate) fn umount(path: &str) {
    let target = sys::cstr(path);
    // SAFETY: a valid C string.
    sys::check(
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) },
        "umount",
    );
    println!("detached {path}");
}

/// Joins the mount namespace of pid 1 (setns on /proc/1/ns/mnt). It changes nothing the
/// host sees: the process only looks at pid 1's mounts until it exits.
///
/// Kernel path: `setns` → `mntns_install`, which needs CAP_SYS_ADMIN and CAP_SYS_CHROOT.
/// Escape: with the host's namespace (and root) the scope reaches paths its own namespace
/// hid from it, the way container breakouts use `nsenter -t 1 -m`.
pub(crate) fn setns_init() {
    let ns = sys::open("/proc/1/ns/mnt", libc::O_RDONLY, 0, "open /proc/1/ns/mnt");
    // SAFETY: plain syscall on our descriptor; the process is single-threaded, as
    // setns into a mount namespace requires.
    sys::check(
        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) },
        "setns",
    );
    println!("joined the mount namespace of pid 1");
}

/// Mounts a bpf filesystem on `DIR`, then unmounts it.
///
/// Kernel path: `do_mount` → `security_sb_mount` for type "bpf" (`bpf_fill_super`).
/// Escape: bpffs is where bpf objects are pinned and found by path; an instance of the
/// scope's own would keep programs and maps alive after the scope's processes end, and
/// (with a `delegate_*` mount option) hand out bpf rights to whoever opens it.
pub(crate) fn bpffs(dir: &str) {
    mount("bpf", dir, "mount bpf");
    unmount(dir);
}
