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

#[unsafe(no_mangle)]
pub(crate) static SB_MAGIC_OFFSET: u32 = 0;

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

pub(crate) const EPERM: i32 = 1;

pub(crate) const PROT_WRITE: u64 = 0x2;

pub(crate) const PROT_EXEC: u64 = 0x4;

pub(crate) const MAP_ANONYMOUS: u64 = 0x20;

pub(crate) const VM_EXEC: u64 = 0x4;

pub(crate) const FMODE_WRITE: u32 = 0x2;

pub(crate) const PROC_SUPER_MAGIC: u64 = 0x9fa0;

pub(crate) const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

pub(crate) const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// `PTRACE_MODE_ATTACH`: ptrace attach and /proc/PID/mem, as opposed to reading status.
pub(crate) const PTRACE_MODE_ATTACH: u32 = 0x02;
