//! The running kernel's layout: struct member offsets and hook argument counts, read from
//! its BTF by name and type and frozen into the programs' read-only data at load. Rust
//! BPF has no CO-RE relocations; this is how one object fits every kernel.

use enforcer_common::{hook, names};

use super::KernelError;
use super::btf::Btf as KernelBtf;

/// Struct offsets the programs need, read from the running kernel's BTF by name and type
/// (see the globals in enforcer-ebpf).
pub(super) struct KernelLayout {
    pub(super) offsets: Vec<(&'static str, u32)>,
}

impl KernelLayout {
    pub(super) fn read() -> Result<Self, KernelError> {
        let btf = KernelBtf::from_sys_fs()?;
        let task = |m| btf.pointer_member_offset("task_struct", m, Some("task_struct"));
        let mut offsets = vec![
            (
                names::BPRM_FILE_OFFSET,
                btf.pointer_member_offset("linux_binprm", "file", Some("file"))?,
            ),
            (
                names::BPRM_INTERP_OFFSET,
                btf.pointer_member_offset("linux_binprm", "interp", None)?,
            ),
            (names::TASK_REAL_PARENT_OFFSET, task("real_parent")?),
            (names::TASK_GROUP_LEADER_OFFSET, task("group_leader")?),
            (
                names::TASK_TGID_OFFSET,
                btf.int_member_offset("task_struct", "tgid", 4)?,
            ),
            (
                names::TASK_START_TIME_OFFSET,
                btf.int_member_offset("task_struct", "start_time", 8)?,
            ),
            (
                names::FILE_INODE_OFFSET,
                btf.pointer_member_offset("file", "f_inode", Some("inode"))?,
            ),
            (names::FILE_DENTRY_OFFSET, {
                // `f_path` is an embedded `struct path`; its `dentry` pointer is inside it.
                let path = btf.struct_member_offset("file", "f_path", "path")?;
                path + btf.pointer_member_offset("path", "dentry", Some("dentry"))?
            }),
            (names::DENTRY_NAME_OFFSET, {
                let qstr = btf.struct_member_offset("dentry", "d_name", "qstr")?;
                qstr + btf.pointer_member_offset("qstr", "name", None)?
            }),
            (
                names::INODE_NLINK_OFFSET,
                btf.int_member_offset("inode", "i_nlink", 4)?,
            ),
            (
                names::VMA_FILE_OFFSET,
                btf.pointer_member_offset("vm_area_struct", "vm_file", Some("file"))?,
            ),
            (
                names::VMA_FLAGS_OFFSET,
                btf.int_member_offset("vm_area_struct", "vm_flags", 8)?,
            ),
            (
                names::FILE_MODE_OFFSET,
                btf.int_member_offset("file", "f_mode", 4)?,
            ),
            (
                names::INODE_SB_OFFSET,
                btf.pointer_member_offset("inode", "i_sb", Some("super_block"))?,
            ),
            (
                names::SB_MAGIC_OFFSET,
                btf.int_member_offset("super_block", "s_magic", 8)?,
            ),
        ];
        // The digest cache's offsets: without them the programs hash every time.
        offsets.extend(crate::kernel::digest_cache::layout(&btf)?);
        // Name a missing hook before the load fails on it with a bare errno.
        for name in hook::NAMES {
            btf.function_arg_count(&format!("bpf_lsm_{name}"))?;
        }
        tracing::debug!(?offsets, "kernel layout from BTF");
        Ok(Self { offsets })
    }
}
