//! Writes. A governed task, root included, may create, change and remove files only below
//! its scope's writable roots (by default /tmp, /var/tmp and /dev/shm; the operator adds
//! more per scope): everything else a process outside the scope might run or trust (the
//! agent's files, cron, systemd units, shell profiles, /usr) is read-only to it. Roots
//! are inodes, found by walking up the dentry tree, so bind mounts, `/proc/PID/root` and
//! other names of the same file change nothing. Beside that rule:
//! - a few character devices stay writable (null, zero, random, terminals:
//!   [`harmless_device`]), unnamed files (memfd, O_TMPFILE, deleted) too, and a process's
//!   own /proc/PID files; block devices and new device nodes are refused;
//! - /proc/PID/mem is never writable (it ignores page protections);
//! - cgroupfs is never writable: writing it moves processes or limits the agent;
//! - bpffs cannot be opened at all (the pins are the enforcement; a read-only descriptor of
//!   their directory is enough to flock it);
//! - secrets of the enforcer (the audit host key) cannot be opened at all;
//! - a file mapped executable in a scope cannot be opened for writing or truncated, by
//!   anyone ([`crate::codeguard`]).

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::lsm,
    programs::LsmContext,
};
use enforcer_common::{ScopePolicy, hook, inode_rule, reason, scope_flags};

use crate::codeguard::guarded_by;
use crate::decide::{Verdict, governing_scope, inode_rule as has_rule, refuse};
use crate::digest_cache::{invalidate, setattr_args, trusted_dentry_inode, trusted_inode};
use crate::kmem::{
    ANON_INODE_FS_MAGIC, BPF_FS_MAGIC, CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, CONFIGFS_MAGIC,
    DEBUGFS_MAGIC, DENTRY_INODE_OFFSET, DENTRY_NAME_OFFSET, DENTRY_PARENT_OFFSET,
    FILE_DENTRY_OFFSET, FILE_FLAGS_OFFSET, FILE_INODE_OFFSET, FILE_MODE_OFFSET, FMODE_WRITE,
    INODE_RDEV_OFFSET, O_DIRECT, PID_LEVEL_OFFSET, PIPEFS_MAGIC, PROC_SUPER_MAGIC, S_IFBLK,
    S_IFCHR, SECURITYFS_MAGIC, SOCKFS_MAGIC, SYSFS_MAGIC, TASK_THREAD_PID_OFFSET, TRACEFS_MAGIC,
    config, file_name, fs_magic, inode_id, inode_links, inode_type, name_is, read_at, read_via,
};
use crate::maps::SCOPES;

/// Deepest directory tree walked up to find a writable root. A file deeper than this is
/// not known to be writable: doubt means deny.
const MAX_DEPTH: u32 = 48;

/// `ATTR_SIZE` in `iattr::ia_valid`: a truncate.
const ATTR_SIZE: u32 = 1 << 3;

/// Whether `dentry` lies at or below one of the scope's writable roots.
#[inline(always)]
unsafe fn under_writable_root(mut dentry: *const u8, scope_id: u64) -> bool {
    let mut depth = 0;
    while depth < MAX_DEPTH {
        // SAFETY: probe reads throughout.
        unsafe {
            let inode: Option<*const u8> = read_at(dentry, config(&DENTRY_INODE_OFFSET));
            if let Some((dev, ino)) = inode.filter(|i| !i.is_null()).and_then(|i| inode_id(i))
                && has_rule(scope_id, dev, ino, inode_rule::WRITABLE_ROOT)
            {
                return true;
            }
            let Some(parent) = read_at::<*const u8>(dentry, config(&DENTRY_PARENT_OFFSET)) else {
                return false;
            };
            // A filesystem's root is its own parent.
            if parent == dentry || parent.is_null() {
                return false;
            }
            dentry = parent;
        }
        depth += 1;
    }
    false
}

/// Whether a /proc dentry belongs to the current process: the directory right below the
/// proc root is named after its tgid.
#[inline(always)]
unsafe fn own_proc_entry(mut dentry: *const u8) -> bool {
    // In a pid namespace the names are that namespace's numbers, which the tgid the
    // helper reports is not: doubt means "not our own".
    // SAFETY: probe reads from the current task.
    let level: Option<u32> = unsafe {
        read_via(
            bpf_get_current_task() as *const u8,
            &TASK_THREAD_PID_OFFSET,
            &PID_LEVEL_OFFSET,
        )
    };
    if level != Some(0) {
        return false;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let mut depth = 0;
    while depth < 8 {
        // SAFETY: probe reads throughout.
        unsafe {
            let Some(parent) = read_at::<*const u8>(dentry, config(&DENTRY_PARENT_OFFSET)) else {
                return false;
            };
            let Some(grand) = read_at::<*const u8>(parent, config(&DENTRY_PARENT_OFFSET)) else {
                return false;
            };
            if grand == parent {
                // `dentry` is a child of the proc root: its name must be our tgid.
                let name: *const u8 =
                    read_at(dentry, config(&DENTRY_NAME_OFFSET)).unwrap_or(ptr::null());
                return decimal_is(name, tgid);
            }
            dentry = parent;
        }
        depth += 1;
    }
    false
}

/// Opening the device node `inode` (identity `id`): block devices never (a raw disk
/// holds every file, the agent's and its audit log among them, and NVMe passthrough on
/// 6.1 and 6.12 writes through a read-only descriptor); character devices when harmless
/// or allowed to the scope. `None` for anything that is not a device.
#[inline(always)]
unsafe fn device_verdict(
    inode: *const u8,
    scope_id: u64,
    id: Option<(u32, u64)>,
) -> Option<Verdict> {
    // SAFETY: probe reads of the hook's own inode.
    unsafe {
        let kind = inode_type(inode);
        if !matches!(kind, Some(S_IFCHR | S_IFBLK)) {
            return None;
        }
        let rdev: u32 = read_at(inode, config(&INODE_RDEV_OFFSET)).unwrap_or(0);
        if kind == Some(S_IFCHR)
            && (harmless_device(rdev)
                || id.is_some_and(|(dev, ino)| has_rule(scope_id, dev, ino, inode_rule::DEVICE)))
        {
            return None;
        }
        Some(Verdict::deny_with(reason::KERNEL, u64::from(rdev)))
    }
}

/// Character devices every governed task may open: the data sinks and sources
/// (null, zero, full, random, urandom), terminals (the controlling tty, the console,
/// ptmx, virtual consoles and serial lines, pseudo-terminals). Every other device is a
/// driver's raw interface: SCSI generic and NVMe generic nodes write disks under the
/// filesystem, input devices read and type keystrokes, /dev/kvm runs machine code,
/// /dev/kmsg writes the kernel's log. The operator allows more per scope (`devices`).
#[inline(always)]
fn harmless_device(rdev: u32) -> bool {
    let (major, minor) = (rdev >> 20, rdev & 0xf_ffff);
    match major {
        1 => matches!(minor, 3 | 5 | 7 | 8 | 9),
        5 => minor <= 2,
        4 | 136..=143 => true,
        _ => false,
    }
}

/// Whether the kernel string `name` is `value` in decimal.
#[inline(always)]
unsafe fn decimal_is(name: *const u8, value: u32) -> bool {
    if name.is_null() {
        return false;
    }
    let mut buf = [0u8; 12];
    // SAFETY: probe read of a kernel string into our buffer.
    if unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }.is_err() {
        return false;
    }
    let mut parsed: u64 = 0;
    let mut digits = 0;
    for b in buf {
        if b == 0 {
            break;
        }
        if !b.is_ascii_digit() {
            return false;
        }
        parsed = parsed * 10 + u64::from(b - b'0');
        digits += 1;
    }
    digits > 0 && parsed == u64::from(value)
}

/// The rule for changing the file at `dentry` (whose inode may be null: a name being
/// created). `opening`: an open for writing, where existing character devices pass.
#[inline(always)]
unsafe fn may_change(dentry: *const u8, scope_id: u64, opening: bool) -> Option<Verdict> {
    // SAFETY: probe reads throughout.
    unsafe {
        let inode: Option<*const u8> =
            read_at::<*const u8>(dentry, config(&DENTRY_INODE_OFFSET)).filter(|i| !i.is_null());
        if let Some(inode) = inode {
            let magic = fs_magic(inode);
            match magic {
                None => return Some(Verdict::deny(reason::READ_ONLY)),
                Some(CGROUP2_SUPER_MAGIC | CGROUP_SUPER_MAGIC) => {
                    return Some(Verdict::deny(reason::ESCAPE));
                }
                Some(BPF_FS_MAGIC) => return Some(Verdict::deny(reason::TAMPER)),
                Some(PIPEFS_MAGIC | SOCKFS_MAGIC | ANON_INODE_FS_MAGIC) => return None,
                Some(PROC_SUPER_MAGIC) => {
                    // Writes to /proc/PID/mem ignore page protections: never.
                    let name: *const u8 =
                        read_at(dentry, config(&DENTRY_NAME_OFFSET)).unwrap_or(ptr::null());
                    if name_is(name, b"mem\0").unwrap_or(true) {
                        return Some(Verdict::deny(reason::TAMPER));
                    }
                    return (!own_proc_entry(dentry)).then(|| Verdict::deny(reason::READ_ONLY));
                }
                Some(_) => {}
            }
            // Opening a device node was decided by `file_open` ([`device_verdict`]).
            if opening && matches!(inode_type(inode), Some(S_IFCHR | S_IFBLK)) {
                return None;
            }
            if inode_links(inode) == Some(0) {
                return None;
            }
        }
        (!under_writable_root(dentry, scope_id)).then(|| Verdict::deny(reason::READ_ONLY))
    }
}

/// Governed tasks changing `dentries` (a rename or link names two): refused unless each may
/// change.
#[inline(always)]
fn check_change(which: u32, dentries: [*const u8; 2]) -> i32 {
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    for dentry in dentries {
        if dentry.is_null() {
            continue;
        }
        // SAFETY: the hooks pass their own dentries.
        if let Some(verdict) = unsafe { may_change(dentry, scope_id, false) } {
            let name: *const u8 =
                unsafe { read_at(dentry, config(&DENTRY_NAME_OFFSET)) }.unwrap_or(ptr::null());
            return refuse(which, scope_id, policy, verdict, name);
        }
    }
    0
}

/// The policy of scope `scope_id`, for a refusal reported in its name.
#[inline(always)]
fn policy_of(scope_id: u64) -> ScopePolicy {
    // SAFETY: the value is copied out at once.
    unsafe { SCOPES.get(&scope_id) }
        .copied()
        .unwrap_or_default()
}

/// A write to a guarded inode, by any task: reported in the guarding scope's name.
#[inline(always)]
fn code_in_use(which: u32, inode: *mut c_void, path: *const u8) -> i32 {
    // SAFETY: the callers pass trusted inodes.
    match unsafe { guarded_by(inode) } {
        Some(scope_id) => refuse(
            which,
            scope_id,
            policy_of(scope_id),
            Verdict::deny(reason::CODE_IN_USE),
            path,
        ),
        None => 0,
    }
}

#[lsm(hook = "file_open")]
#[inline(always)]
pub fn file_open(ctx: LsmContext) -> i32 {
    // Argument: (struct file *file).
    let file: *mut c_void = ctx.arg(0);
    // SAFETY: probe reads of the hook's own file, and its trusted inode.
    unsafe {
        let mode: Option<u32> = read_at(file.cast(), config(&FILE_MODE_OFFSET));
        let writing = mode.is_none_or(|m| m & FMODE_WRITE != 0);
        let inode = trusted_inode(file);
        let name = file_name(file.cast());
        if writing {
            // Whoever opens a file for writing may change it: its cached digest goes stale.
            invalidate(inode);
            let r = code_in_use(hook::FILE_OPEN, inode, name);
            if r != 0 {
                return r;
            }
        }
        let Some((scope_id, policy)) = governing_scope() else {
            return 0;
        };
        if fs_magic(inode.cast()) == Some(BPF_FS_MAGIC) {
            // No open of bpffs at all, reading included: a read-only descriptor of the pin
            // directory is enough to flock it and hold every update of the agent off.
            return refuse(
                hook::FILE_OPEN,
                scope_id,
                policy,
                Verdict::deny(reason::TAMPER),
                name,
            );
        }
        if policy.flags & scope_flags::ALLOW_ANON_EXEC == 0
            && read_at::<u32>(file.cast(), config(&FILE_FLAGS_OFFSET))
                .is_none_or(|f| f & O_DIRECT != 0)
        {
            return refuse(
                hook::FILE_OPEN,
                scope_id,
                policy,
                Verdict::deny(reason::PINNED_IO),
                name,
            );
        }
        let id = inode_id(inode.cast());
        if let Some(verdict) = device_verdict(inode.cast(), scope_id, id) {
            return refuse(hook::FILE_OPEN, scope_id, policy, verdict, name);
        }
        if let Some((dev, ino)) = id
            && has_rule(scope_id, dev, ino, inode_rule::SECRET)
        {
            return refuse(
                hook::FILE_OPEN,
                scope_id,
                policy,
                Verdict::deny(reason::SECRET),
                name,
            );
        }
        if !writing {
            return 0;
        }
        let dentry: *const u8 =
            read_at(file.cast(), config(&FILE_DENTRY_OFFSET)).unwrap_or(ptr::null());
        match may_change(dentry, scope_id, true) {
            Some(verdict) => refuse(hook::FILE_OPEN, scope_id, policy, verdict, name),
            None => 0,
        }
    }
}

#[lsm(hook = "inode_setattr")]
#[inline(always)]
pub fn inode_setattr(ctx: LsmContext) -> i32 {
    // Arguments: ([struct mnt_idmap *idmap,] struct dentry *dentry, struct iattr *attr).
    // truncate(2) by path changes a file without opening it; any attribute change makes
    // the cached digest stale (the others are rare, and cost one more hash).
    let Some((dentry, attr)) = setattr_args(&ctx) else {
        return 0;
    };
    // SAFETY: the hook's trusted dentry; `ia_valid` is the first member of `struct iattr`.
    unsafe {
        let inode = trusted_dentry_inode(dentry);
        invalidate(inode);
        let valid: u32 = bpf_probe_read_kernel(attr.cast()).unwrap_or(u32::MAX);
        if valid & ATTR_SIZE != 0 {
            let name: *const u8 =
                read_at(dentry, config(&DENTRY_NAME_OFFSET)).unwrap_or(ptr::null());
            let r = code_in_use(hook::INODE_SETATTR, inode, name);
            if r != 0 {
                return r;
            }
        }
    }
    check_change(hook::INODE_SETATTR, [dentry, ptr::null()])
}

#[lsm(hook = "inode_create")]
#[inline(always)]
pub fn inode_create(ctx: LsmContext) -> i32 {
    // Arguments: (struct inode *dir, struct dentry *dentry, umode_t mode).
    check_change(hook::INODE_CREATE, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_link")]
#[inline(always)]
pub fn inode_link(ctx: LsmContext) -> i32 {
    // Arguments: (struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry).
    // The source counts too: a hard link in /tmp to /etc/crontab would make it writable.
    check_change(hook::INODE_LINK, [ctx.arg(2), ctx.arg(0)])
}

#[lsm(hook = "inode_unlink")]
#[inline(always)]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    // Arguments: (struct inode *dir, struct dentry *dentry). Also keeps the pins in bpffs,
    // whose removal would detach enforcement.
    check_change(hook::INODE_UNLINK, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_symlink")]
#[inline(always)]
pub fn inode_symlink(ctx: LsmContext) -> i32 {
    // Arguments: (struct inode *dir, struct dentry *dentry, const char *old_name).
    check_change(hook::INODE_SYMLINK, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_mkdir")]
#[inline(always)]
pub fn inode_mkdir(ctx: LsmContext) -> i32 {
    // Arguments: (struct inode *dir, struct dentry *dentry, umode_t mode).
    check_change(hook::INODE_MKDIR, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_rmdir")]
#[inline(always)]
pub fn inode_rmdir(ctx: LsmContext) -> i32 {
    // Arguments: (struct inode *dir, struct dentry *dentry).
    check_change(hook::INODE_RMDIR, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_mknod")]
#[inline(always)]
pub fn inode_mknod(ctx: LsmContext) -> i32 {
    // Arguments: (struct inode *dir, struct dentry *dentry, umode_t mode, dev_t dev). A new
    // device node is raw access to a driver (a disk under the agent's files, memory):
    // refused wherever it would be made.
    let mode: u64 = ctx.arg(2);
    let kind = (mode & 0o170_000) as u16;
    if kind == S_IFCHR || kind == S_IFBLK {
        if let Some((scope_id, policy)) = governing_scope() {
            return refuse(
                hook::INODE_MKNOD,
                scope_id,
                policy,
                Verdict::deny_with(reason::KERNEL, mode),
                ptr::null(),
            );
        }
        return 0;
    }
    check_change(hook::INODE_MKNOD, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_rename")]
#[inline(always)]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    // Arguments: (old_dir, old_dentry, new_dir, new_dentry[, flags]): both names change.
    check_change(hook::INODE_RENAME, [ctx.arg(1), ctx.arg(3)])
}

#[lsm(hook = "inode_setxattr")]
#[inline(always)]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    // Arguments: (userns or idmap, struct dentry *dentry, name, value, size, flags).
    check_change(hook::INODE_SETXATTR, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_removexattr")]
#[inline(always)]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    // Arguments: (userns or idmap, struct dentry *dentry, const char *name).
    check_change(hook::INODE_REMOVEXATTR, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_set_acl")]
#[inline(always)]
pub fn inode_set_acl(ctx: LsmContext) -> i32 {
    // Arguments: (idmap, struct dentry *dentry, const char *acl_name, struct posix_acl *).
    // 6.2+; before, ACLs are set through setxattr.
    check_change(hook::INODE_SET_ACL, [ctx.arg(1), ptr::null()])
}

#[lsm(hook = "inode_remove_acl")]
#[inline(always)]
pub fn inode_remove_acl(ctx: LsmContext) -> i32 {
    // Arguments: (idmap, struct dentry *dentry, const char *acl_name). 6.2+.
    check_change(hook::INODE_REMOVE_ACL, [ctx.arg(1), ptr::null()])
}

/// `F_SETFL` (include/uapi/asm-generic/fcntl.h).
const F_SETFL: u32 = 4;

#[lsm(hook = "file_fcntl")]
#[inline(always)]
pub fn file_fcntl(ctx: LsmContext) -> i32 {
    // Arguments: (struct file *file, unsigned int cmd, unsigned long arg). O_DIRECT turned on
    // after the open: the kernel then writes reads into pinned user pages, possibly after
    // they stopped being a writable mapping of a file now mapped executable.
    let cmd: u32 = ctx.arg(1);
    let arg: u64 = ctx.arg(2);
    if cmd != F_SETFL || arg & u64::from(O_DIRECT) == 0 {
        return 0;
    }
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    if policy.flags & scope_flags::ALLOW_ANON_EXEC != 0 {
        return 0;
    }
    refuse(
        hook::FILE_FCNTL,
        scope_id,
        policy,
        Verdict::deny(reason::PINNED_IO),
        ptr::null(),
    )
}

/// `MAY_WRITE` in `file_permission`'s mask (include/linux/fs.h).
const MAY_WRITE: u32 = 0x2;

#[lsm(hook = "file_permission")]
#[inline(always)]
pub fn file_permission(ctx: LsmContext) -> i32 {
    // Arguments: (struct file *file, int mask): every read and write. A descriptor opened
    // before the task entered the scope, or passed in over a socket, was never checked by
    // `file_open`; for the kernel's own files, where a write is an action (cgroup.procs
    // moves a process, /proc/sys sets core_pattern), each write is checked as an open
    // would be. Ordinary files are not: a descriptor handed over from outside is that
    // process's delegation.
    let mask: u32 = ctx.arg(1);
    if mask & MAY_WRITE == 0 {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    // SAFETY: probe reads of the hook's own file.
    unsafe {
        let inode: Option<*const u8> = read_at(file, config(&FILE_INODE_OFFSET));
        let Some(magic) = inode.and_then(|i| fs_magic(i)) else {
            return 0;
        };
        if !kernel_interface(magic) {
            return 0;
        }
        let Some((scope_id, policy)) = governing_scope() else {
            return 0;
        };
        let dentry: *const u8 = read_at(file, config(&FILE_DENTRY_OFFSET)).unwrap_or(ptr::null());
        match may_change(dentry, scope_id, true) {
            Some(verdict) => refuse(
                hook::FILE_PERMISSION,
                scope_id,
                policy,
                verdict,
                file_name(file),
            ),
            None => 0,
        }
    }
}

/// Filesystems whose files are interfaces to the kernel: proc, sysfs, cgroupfs, bpffs,
/// securityfs, debugfs, tracefs, configfs.
#[inline(always)]
fn kernel_interface(magic: u64) -> bool {
    matches!(
        magic,
        PROC_SUPER_MAGIC
            | SYSFS_MAGIC
            | CGROUP_SUPER_MAGIC
            | CGROUP2_SUPER_MAGIC
            | BPF_FS_MAGIC
            | SECURITYFS_MAGIC
            | DEBUGFS_MAGIC
            | TRACEFS_MAGIC
            | CONFIGFS_MAGIC
    )
}

/// ioctls that change a file's inode without writing it (include/uapi/linux/fs.h,
/// fsverity.h): flags (append-only, no-dump...), project ids, fs-verity (read-only for
/// good) and encryption policies. Each needs only ownership, and root owns the agent's
/// files: they obey the rule for changing a file.
const INODE_CHANGING_IOCTLS: [u32; 7] = [
    0x4008_6602, // FS_IOC_SETFLAGS
    0x4004_6602, // FS_IOC32_SETFLAGS
    0x401c_5820, // FS_IOC_FSSETXATTR
    0x4080_6685, // FS_IOC_ENABLE_VERITY
    0x800c_6613, // FS_IOC_SET_ENCRYPTION_POLICY
    0x4008_7602, // FS_IOC_SETVERSION
    0x4004_7602, // FS_IOC32_SETVERSION
];

/// The rule for an ioctl `cmd` on `file` by a governed task.
#[inline(always)]
fn ioctl_check(which: u32, file: *const u8, cmd: u32) -> i32 {
    let injection = crate::containment::terminal_injection(cmd);
    if !injection && !INODE_CHANGING_IOCTLS.contains(&cmd) {
        return 0;
    }
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    // SAFETY: probe reads of the hook's own file.
    let (verdict, name) = unsafe {
        let name = file_name(file);
        if injection {
            (
                Some(Verdict::deny_with(reason::DEPUTY, u64::from(cmd))),
                name,
            )
        } else {
            let dentry: *const u8 =
                read_at(file, config(&FILE_DENTRY_OFFSET)).unwrap_or(ptr::null());
            (may_change(dentry, scope_id, false), name)
        }
    };
    match verdict {
        Some(verdict) => refuse(which, scope_id, policy, verdict, name),
        None => 0,
    }
}

#[lsm(hook = "file_ioctl")]
#[inline(always)]
pub fn file_ioctl(ctx: LsmContext) -> i32 {
    // Arguments: (struct file *file, unsigned int cmd, unsigned long arg).
    ioctl_check(hook::FILE_IOCTL, ctx.arg(0), ctx.arg(1))
}

#[lsm(hook = "file_ioctl_compat")]
#[inline(always)]
pub fn file_ioctl_compat(ctx: LsmContext) -> i32 {
    // The same from 32-bit processes, where the kernel has this hook (6.8+ and stable).
    ioctl_check(hook::FILE_IOCTL_COMPAT, ctx.arg(0), ctx.arg(1))
}
