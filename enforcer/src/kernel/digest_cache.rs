//! The kernel program's digest cache, from the loader's side: the struct offsets and the
//! hook argument position it needs, read from the running kernel's BTF by name and type.
//!
//! The cache keeps each executable's SHA-256 with its inode until the file may have
//! changed (`enforcer_common::CachedDigest` says how), so an exec of an unchanged file costs
//! a lookup instead of hashing the whole file. Any value missing (0) turns it off: the
//! program then hashes at every exec and mapping, as it did before the cache.

use enforcer_common::names;

use crate::kernel::btf::{Btf, BtfError};

/// Globals the kernel program's cache reads, with their values for the running kernel.
pub fn layout(btf: &Btf) -> Result<Vec<(&'static str, u32)>, BtfError> {
    // The dentry is the second to last parameter: (dentry, attr) before 6.3, (idmap,
    // dentry, attr) since. The program takes its position plus one, so 0 means unset.
    let dentry_arg = match btf.function_arg_count("bpf_lsm_inode_setattr")? {
        2 => 1,
        3 => 2,
        _ => {
            return Err(BtfError::Malformed(
                "inode_setattr has neither 2 nor 3 parameters",
            ));
        }
    };
    Ok(vec![
        (
            names::INODE_WRITECOUNT_OFFSET,
            btf.typedef_member_offset("inode", "i_writecount", "atomic_t")?,
        ),
        (
            names::DENTRY_INODE_OFFSET,
            btf.pointer_member_offset("dentry", "d_inode", Some("inode"))?,
        ),
        (names::SETATTR_DENTRY_ARG, dentry_arg),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernel_has_what_the_cache_needs() {
        if crate::testing::requires("the kernel's BTF", crate::testing::has_kernel_btf()) {
            let btf = Btf::from_sys_fs().expect("vmlinux BTF parses");
            let layout = layout(&btf).expect("digest cache layout");
            assert!(layout.iter().all(|(_, v)| *v != 0), "{layout:?}");
        }
    }
}
