//! The running kernel's layout: struct member offsets and hook argument counts, read from
//! its BTF by name and type and frozen into the programs' read-only data at load. Rust
//! BPF has no CO-RE relocations; this is how one object fits every kernel.

use enforcer_common::{hook, names};

use super::KernelError;
use super::btf::{Btf as KernelBtf, BtfError};

/// Struct offsets the programs need, read from the running kernel's BTF by name and type
/// (see the globals in enforcer-ebpf).
pub(super) struct KernelLayout {
    pub(super) offsets: Vec<(&'static str, u32)>,
    /// The LSM hooks this kernel has, of those the programs attach to.
    pub(super) hooks: Vec<&'static str>,
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
        offsets.extend(containment_offsets(&btf)?);
        // The digest cache's offsets: without them the programs hash every time.
        offsets.extend(crate::kernel::digest_cache::layout(&btf)?);
        // Name a missing hook before the load fails on it with a bare errno.
        // The optional ones are missing from older kernels (hook::OPTIONAL).
        let mut hooks = Vec::with_capacity(hook::COUNT);
        for (index, name) in hook::NAMES.iter().enumerate() {
            let optional = hook::OPTIONAL.iter().any(|&o| o as usize == index);
            // A traced kernel function is looked up as itself, an LSM hook by its BPF stub.
            let function = if hook::is_traced(index) {
                (*name).to_string()
            } else {
                format!("bpf_lsm_{name}")
            };
            match btf.function_arg_count(&function) {
                Ok(_) => hooks.push(*name),
                Err(_) if optional => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !hooks.contains(&hook::NAMES[hook::MMAP_BACKING_FILE as usize]) {
            // Without that hook nothing shows the programs the layer file an overlayfs
            // mapping really maps; `ovl_mmap` takes it from the overlay file's
            // `private_data` (a `struct file *` up to the hook's arrival in 6.12).
            offsets.push((
                names::OVERLAY_REAL_FILE_OFFSET,
                btf.pointer_member_offset("file", "private_data", None)?,
            ));
        }
        tracing::debug!(?offsets, "kernel layout from BTF");
        Ok(Self { offsets, hooks })
    }
}

/// What the containment rules read: inode identity and type, the dentry tree, the task's
/// personality, user namespace levels, sockets and the cgroups that made them.
fn containment_offsets(btf: &KernelBtf) -> Result<Vec<(&'static str, u32)>, BtfError> {
    Ok(vec![
        (
            names::INODE_INO_OFFSET,
            btf.int_member_offset("inode", "i_ino", 8)?,
        ),
        (
            names::INODE_MODE_OFFSET,
            // Plus one: `i_mode` comes first, and the programs take 0 for "not configured".
            btf.int_member_offset("inode", "i_mode", 2)? + 1,
        ),
        (
            names::SB_DEV_OFFSET,
            btf.int_member_offset("super_block", "s_dev", 4)?,
        ),
        (
            names::DENTRY_PARENT_OFFSET,
            btf.pointer_member_offset("dentry", "d_parent", Some("dentry"))?,
        ),
        (
            names::QSTR_NAME_OFFSET,
            btf.pointer_member_offset("qstr", "name", None)?,
        ),
        (
            names::TASK_PERSONALITY_OFFSET,
            btf.int_member_offset("task_struct", "personality", 4)?,
        ),
        (
            names::USERNS_LEVEL_OFFSET,
            btf.int_member_offset("user_namespace", "level", 4)?,
        ),
        (names::SOCK_CGROUP_OFFSET, {
            let data = btf.struct_member_offset("sock", "sk_cgrp_data", "sock_cgroup_data")?;
            data + btf.pointer_member_offset("sock_cgroup_data", "cgroup", Some("cgroup"))?
        }),
        (
            names::CGROUP_KN_OFFSET,
            btf.pointer_member_offset("cgroup", "kn", Some("kernfs_node"))?,
        ),
        (
            names::KERNFS_ID_OFFSET,
            btf.int_member_offset("kernfs_node", "id", 8)?,
        ),
        (names::CGROUP_PARENT_OFFSET, {
            // `self` is the cgroup's own css; its parent is the parent cgroup's `self`, so
            // the walk stays on `struct cgroup` pointers only while `self` comes first.
            let own = btf.struct_member_offset("cgroup", "self", "cgroup_subsys_state")?;
            if own != 0 {
                return Err(BtfError::Malformed(
                    "struct cgroup no longer starts with its css",
                ));
            }
            btf.pointer_member_offset("cgroup_subsys_state", "parent", Some("cgroup_subsys_state"))?
        }),
        (names::UNIX_DENTRY_OFFSET, {
            let path = btf.struct_member_offset("unix_sock", "path", "path")?;
            path + btf.pointer_member_offset("path", "dentry", Some("dentry"))?
        }),
        (
            names::FILE_FLAGS_OFFSET,
            btf.int_member_offset("file", "f_flags", 4)?,
        ),
        (
            names::BPRM_VMA_OFFSET,
            // Plus one: `vma` comes first.
            btf.pointer_member_offset("linux_binprm", "vma", Some("vm_area_struct"))? + 1,
        ),
        (
            names::SOCKET_SK_OFFSET,
            btf.pointer_member_offset("socket", "sk", Some("sock"))?,
        ),
        (
            names::INODE_RDEV_OFFSET,
            btf.int_member_offset("inode", "i_rdev", 4)?,
        ),
        (
            names::TASK_CGROUPS_OFFSET,
            btf.pointer_member_offset("task_struct", "cgroups", Some("css_set"))?,
        ),
        (
            names::CSS_SET_DFL_CGRP_OFFSET,
            btf.pointer_member_offset("css_set", "dfl_cgrp", Some("cgroup"))?,
        ),
        (
            names::TASK_THREAD_PID_OFFSET,
            btf.pointer_member_offset("task_struct", "thread_pid", Some("pid"))?,
        ),
        (
            names::PID_LEVEL_OFFSET,
            btf.int_member_offset("pid", "level", 4)?,
        ),
        (
            names::KEY_TYPE_OFFSET,
            btf.pointer_member_offset("key", "type", Some("key_type"))?,
        ),
        (
            names::KEY_TYPE_NAME_OFFSET,
            // Plus one: `name` comes first.
            btf.pointer_member_offset("key_type", "name", None)? + 1,
        ),
    ])
}
