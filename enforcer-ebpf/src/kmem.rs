//! Reading kernel memory: struct offsets the loader froze into `.rodata`, and the probe
//! reads that follow them.
//!
//! Rust BPF has no CO-RE relocations, so the loader reads struct offsets and hook argument
//! counts from the running kernel's BTF, by name and type, and sets them here before load.
//! The verifier sees read-only data as constants, so one object fits every kernel. Reads go
//! through read_volatile, or LLVM would fold the initial zeros. A zero offset means "not
//! configured": decisions deny, reporting leaves the field empty.

use core::ptr;

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};

/// `linux_binprm::file`: loaded directly, giving the verifier a trusted `struct file *`.
#[unsafe(no_mangle)]
pub(crate) static BPRM_FILE_OFFSET: u32 = 0;

/// `linux_binprm::interp`: the file really loaded (for a script's second pass, the
/// interpreter), where `filename` would stay the script.
#[unsafe(no_mangle)]
pub(crate) static BPRM_INTERP_OFFSET: u32 = 0;

/// `task_struct` members, for lineage and for recognising the agent.
#[unsafe(no_mangle)]
pub(crate) static TASK_REAL_PARENT_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static TASK_GROUP_LEADER_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static TASK_TGID_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static TASK_START_TIME_OFFSET: u32 = 0;

/// `file::f_inode`, `file::f_path.dentry`, `dentry::d_name.name`, `inode::i_nlink`.
#[unsafe(no_mangle)]
pub(crate) static FILE_INODE_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static FILE_DENTRY_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static DENTRY_NAME_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static INODE_NLINK_OFFSET: u32 = 0;

/// `vm_area_struct::vm_file` and `vm_area_struct::vm_flags`.
#[unsafe(no_mangle)]
pub(crate) static VMA_FILE_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static VMA_FLAGS_OFFSET: u32 = 0;

/// `file::f_mode`, `inode::i_sb`, `super_block::s_magic`: to recognise /proc/PID/mem
/// opened for writing.
#[unsafe(no_mangle)]
pub(crate) static FILE_MODE_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static INODE_SB_OFFSET: u32 = 0;

/// `file::f_flags`: O_DIRECT.
#[unsafe(no_mangle)]
pub(crate) static FILE_FLAGS_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static SB_MAGIC_OFFSET: u32 = 0;

/// `inode::i_ino`, `inode::i_mode` (plus one), `super_block::s_dev`, `dentry::d_parent`: an inode's
/// identity and type, and the way up a directory tree.
#[unsafe(no_mangle)]
pub(crate) static INODE_INO_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static INODE_MODE_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static SB_DEV_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static DENTRY_PARENT_OFFSET: u32 = 0;

/// `dentry::d_inode` (shared with the digest cache).
#[unsafe(no_mangle)]
pub(crate) static DENTRY_INODE_OFFSET: u32 = 0;

/// `qstr::name`: the name of an anonymous inode's class (`[userfaultfd]`).
#[unsafe(no_mangle)]
pub(crate) static QSTR_NAME_OFFSET: u32 = 0;

/// `task_struct::personality`: READ_IMPLIES_EXEC makes the heap executable.
#[unsafe(no_mangle)]
pub(crate) static TASK_PERSONALITY_OFFSET: u32 = 0;

/// `user_namespace::level`: 0 for the initial namespace, where capabilities reach the host.
#[unsafe(no_mangle)]
pub(crate) static USERNS_LEVEL_OFFSET: u32 = 0;

/// `sock::sk_cgrp_data.cgroup`: the cgroup of the task that created a socket;
/// `cgroup::kn`, `kernfs_node::id` (a cgroup's id), and `cgroup::self.parent` (its parent).
#[unsafe(no_mangle)]
pub(crate) static SOCK_CGROUP_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static CGROUP_KN_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static KERNFS_ID_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static CGROUP_PARENT_OFFSET: u32 = 0;

/// `unix_sock::path.dentry` (a bound socket's file) and `socket::sk`.
#[unsafe(no_mangle)]
pub(crate) static UNIX_DENTRY_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static SOCKET_SK_OFFSET: u32 = 0;

/// `linux_binprm::vma` (plus one: it comes first): the new program's stack, made executable or not by
/// `setup_arg_pages` after the last hook that could refuse the exec.
#[unsafe(no_mangle)]
pub(crate) static BPRM_VMA_OFFSET: u32 = 0;

/// `inode::i_rdev`: which device a device node is (`major << 20 | minor`).
#[unsafe(no_mangle)]
pub(crate) static INODE_RDEV_OFFSET: u32 = 0;

/// `task_struct::cgroups` and `css_set::dfl_cgrp`: another task's cgroup.
#[unsafe(no_mangle)]
pub(crate) static TASK_CGROUPS_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static CSS_SET_DFL_CGRP_OFFSET: u32 = 0;

/// `task_struct::thread_pid` and `pid::level`: how deep the task's pid namespace is.
#[unsafe(no_mangle)]
pub(crate) static TASK_THREAD_PID_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static PID_LEVEL_OFFSET: u32 = 0;

/// `key::type` and `key_type::name` (plus one: it comes first).
#[unsafe(no_mangle)]
pub(crate) static KEY_TYPE_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
pub(crate) static KEY_TYPE_NAME_OFFSET: u32 = 0;

/// `file::private_data`, set only where the kernel has no `mmap_backing_file` hook (6.1):
/// an overlayfs file's layer file, the one its mappings really map (`ovl_mmap`).
#[unsafe(no_mangle)]
pub(crate) static OVERLAY_REAL_FILE_OFFSET: u32 = 0;

pub(crate) fn config(value: &u32) -> u32 {
    // SAFETY: a plain read of our own static.
    unsafe { ptr::read_volatile(value) }
}

/// Reads a value at `base + offset` in kernel memory; `None` when unreadable or the loader
/// did not provide the offset.
#[inline(always)]
pub(crate) unsafe fn read_at<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }.ok()
}

/// Follows the pointer at `base + first`, then reads the value at `second` from where it
/// points: the `file->f_inode->i_nlink` shape. `None` when either read fails.
#[inline(always)]
pub(crate) unsafe fn read_via<T>(base: *const u8, first: &u32, second: &u32) -> Option<T> {
    unsafe {
        let next: *const u8 = read_at(base, config(first))?;
        read_at(next, config(second))
    }
}

/// The `i_nlink` of a file's inode: 0 for a memfd or a deleted file. `None` when it cannot
/// be read, which also catches a null `file` at run time: the verifier may take hook
/// arguments for non-null and prune a plain null check, but not a failed probe read.
#[inline(always)]
pub(crate) unsafe fn link_count(file: *const u8) -> Option<u32> {
    unsafe { read_via(file, &FILE_INODE_OFFSET, &INODE_NLINK_OFFSET) }
}

/// The name of a file's dentry (its last path component), for reports.
#[inline(always)]
pub(crate) unsafe fn file_name(file: *const u8) -> *const u8 {
    unsafe { read_via(file, &FILE_DENTRY_OFFSET, &DENTRY_NAME_OFFSET).unwrap_or(ptr::null()) }
}

/// The filesystem magic of an inode's superblock; `None` when unreadable.
#[inline(always)]
pub(crate) unsafe fn fs_magic(inode: *const u8) -> Option<u64> {
    unsafe { read_via(inode, &INODE_SB_OFFSET, &SB_MAGIC_OFFSET) }
}

/// Whether the NUL-terminated kernel string `name` equals `want` (which ends in NUL).
/// `None` when unreadable.
#[inline(always)]
pub(crate) unsafe fn name_is<const N: usize>(name: *const u8, want: &[u8; N]) -> Option<bool> {
    if name.is_null() {
        return None;
    }
    let mut buf = [0u8; N];
    // SAFETY: probe read of a kernel string into our buffer.
    unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }.ok()?;
    Some(buf == *want)
}

/// An inode's identity: its filesystem's device and its number.
#[inline(always)]
pub(crate) unsafe fn inode_id(inode: *const u8) -> Option<(u32, u64)> {
    unsafe {
        let dev: u32 = read_via(inode, &INODE_SB_OFFSET, &SB_DEV_OFFSET)?;
        let ino: u64 = read_at(inode, config(&INODE_INO_OFFSET))?;
        Some((dev, ino))
    }
}

/// An inode's type bits (`S_IFMT` of `i_mode`).
#[inline(always)]
pub(crate) unsafe fn inode_type(inode: *const u8) -> Option<u16> {
    unsafe { read_at_first::<u16>(inode, &INODE_MODE_OFFSET) }.map(|m| m & S_IFMT)
}

/// Reads a member whose offset may be 0 (the first of its struct): the loader stores such
/// offsets plus one, since 0 means "not configured".
#[inline(always)]
pub(crate) unsafe fn read_at_first<T>(base: *const u8, offset_plus_one: &u32) -> Option<T> {
    let offset = config(offset_plus_one).checked_sub(1)?;
    if base.is_null() {
        return None;
    }
    // SAFETY: a probe read of kernel memory.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }.ok()
}

/// The `i_nlink` of an inode.
#[inline(always)]
pub(crate) unsafe fn inode_links(inode: *const u8) -> Option<u32> {
    unsafe { read_at(inode, config(&INODE_NLINK_OFFSET)) }
}

/// The id of a cgroup (its kernfs node's id, as the cgroup helpers report it).
#[inline(always)]
pub(crate) unsafe fn cgroup_id(cgroup: *const u8) -> Option<u64> {
    unsafe { read_via(cgroup, &CGROUP_KN_OFFSET, &KERNFS_ID_OFFSET) }
}

/// Whether the NUL-terminated kernel string `name` starts with `prefix`; `None` when
/// unreadable.
#[inline(always)]
pub(crate) unsafe fn name_starts_with<const N: usize>(
    name: *const u8,
    prefix: &[u8; N],
) -> Option<bool> {
    if name.is_null() {
        return None;
    }
    let mut buf = [0u8; N];
    // SAFETY: probe read of kernel memory into our buffer (a short name only reads less).
    unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }.ok()?;
    Some(buf == *prefix)
}

/// Deepest cgroup level walked up from a socket's cgroup.
pub(crate) const MAX_CGROUP_WALK: u32 = enforcer_common::MAX_SCOPE_LEVEL + 2;

pub(crate) const EPERM: i32 = 1;

pub(crate) const ETXTBSY: i32 = 26;

pub(crate) const S_IFMT: u16 = 0o170_000;
pub(crate) const S_IFCHR: u16 = 0o020_000;
pub(crate) const S_IFBLK: u16 = 0o060_000;
pub(crate) const S_IFREG: u16 = 0o100_000;

/// `O_DIRECT` in `file::f_flags` and fcntl(F_SETFL).
pub(crate) const O_DIRECT: u32 = 0o40_000;

/// `personality(2)`'s READ_IMPLIES_EXEC.
pub(crate) const READ_IMPLIES_EXEC: u32 = 0x0040_0000;

/// Superblock magics (include/uapi/linux/magic.h).
pub(crate) const TMPFS_MAGIC: u64 = 0x0102_1994;
pub(crate) const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
pub(crate) const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;
pub(crate) const PIPEFS_MAGIC: u64 = 0x5049_5045;
pub(crate) const SOCKFS_MAGIC: u64 = 0x534f_434b;
pub(crate) const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;

pub(crate) const PROT_WRITE: u64 = 0x2;

pub(crate) const PROT_EXEC: u64 = 0x4;

pub(crate) const MAP_ANONYMOUS: u64 = 0x20;

pub(crate) const VM_EXEC: u64 = 0x4;

pub(crate) const FMODE_WRITE: u32 = 0x2;

pub(crate) const PROC_SUPER_MAGIC: u64 = 0x9fa0;

pub(crate) const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

pub(crate) const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

pub(crate) const SYSFS_MAGIC: u64 = 0x6265_6572;

pub(crate) const SECURITYFS_MAGIC: u64 = 0x7363_6673;

pub(crate) const DEBUGFS_MAGIC: u64 = 0x6462_6720;

pub(crate) const TRACEFS_MAGIC: u64 = 0x7472_6163;

pub(crate) const CONFIGFS_MAGIC: u64 = 0x6265_6570;

/// `PTRACE_MODE_ATTACH`: ptrace attach and /proc/PID/mem, as opposed to reading status.
pub(crate) const PTRACE_MODE_ATTACH: u32 = 0x02;
