//! The content rule: a file's SHA-256 must have a live grant in the scope.

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use enforcer_common::{
    DIGEST_LEN, GrantEntry, GrantKey, HASH_ALGO_SHA256, ScopePolicy, active_slot_of, decide,
    reason, scope_flags,
};

use crate::decide::Verdict;
use crate::digest_cache;
use crate::kmem::{FILE_INODE_OFFSET, S_IFREG, config, fs_magic, inode_type, link_count, read_at};
use crate::maps::{ACTIVE_SLOT, GRANTS};

/// Filesystems whose page cache is authoritative: a file changes only through this
/// kernel, where the enforcer's hooks see it (include/uapi/linux/magic.h). FUSE, NFS,
/// CIFS, 9p, Ceph and the like are left out: their servers can change a file under a
/// mapping that was checked.
const LOCAL_FILESYSTEMS: [u64; 17] = [
    0xef53,      // ext2, ext3, ext4
    0x5846_5342, // xfs
    0x9123_683e, // btrfs
    0x0102_1994, // tmpfs (and memfd, SysV shm)
    0x8584_58f6, // ramfs (the initramfs root)
    0xf2f5_2010, // f2fs
    0x7371_7368, // squashfs
    0xe0f5_e1e2, // erofs
    0x9660,      // iso9660
    0x1501_3346, // udf
    0xca45_1a4e, // bcachefs
    0x794c_7630, // overlayfs (layers on these)
    0x9584_58f6, // hugetlbfs
    0x4d44,      // vfat, msdos
    0x2011_bab0, // exfat
    0x7366_746e, // ntfs3
    0x3153_464a, // jfs
];

/// Decides whether `file` may be executed or mapped executable in the scope. Fills
/// `digest` when IMA produced one.
///
/// # Safety
/// `file` must be a trusted `struct file *` from the hook's arguments (or loaded from one
/// at a BTF-checked offset), as `bpf_ima_file_hash` requires.
#[inline(always)]
pub(crate) unsafe fn file_verdict(
    file: *mut c_void,
    scope_id: u64,
    policy: ScopePolicy,
    digest: &mut [u8; DIGEST_LEN],
) -> Verdict {
    let Some(links) = (unsafe { link_count(file.cast()) }) else {
        return Verdict::deny_with(reason::DIGEST_UNAVAILABLE, 1);
    };
    if links == 0 && policy.flags & scope_flags::ALLOW_FILELESS == 0 {
        return Verdict::deny(reason::FILELESS);
    }
    // A device or a kernel-made file (io_uring and packet rings, /dev/zero) hashes as the
    // empty file: its digest says nothing about what a mapping of it will hold.
    let inode: Option<*const u8> = unsafe { read_at(file.cast(), config(&FILE_INODE_OFFSET)) };
    match inode.and_then(|inode| unsafe { inode_type(inode) }) {
        Some(S_IFREG) => {}
        Some(kind) => return Verdict::deny_with(reason::NOT_REGULAR, u64::from(kind)),
        None => return Verdict::deny_with(reason::DIGEST_UNAVAILABLE, 2),
    }
    // Content another machine or a user-space server can change under a mapping (FUSE,
    // network filesystems): what was hashed need not be what runs.
    let magic = inode.and_then(|inode| unsafe { fs_magic(inode) });
    match magic {
        Some(m) if LOCAL_FILESYSTEMS.contains(&m) => {}
        Some(m) => return Verdict::deny_with(reason::UNTRUSTED_FS, m),
        None => return Verdict::deny_with(reason::DIGEST_UNAVAILABLE, 3),
    }
    // SAFETY: `file` is trusted, as this function requires.
    let algo = unsafe { digest_cache::file_digest(file, links, digest) };
    if algo < 0 {
        // The helper's error, as a positive number.
        return Verdict::deny_with(reason::DIGEST_UNAVAILABLE, algo.unsigned_abs());
    }
    if algo != HASH_ALGO_SHA256 {
        return Verdict::deny(reason::UNEXPECTED_ALGORITHM);
    }
    // The content rule itself is shared with `enforcer audit replay`, which decides
    // recorded execs again from the log.
    // SAFETY: plain helper call.
    let content = decide::content(find_grant(scope_id, digest), || unsafe {
        bpf_ktime_get_boot_ns()
    });
    Verdict {
        allowed: content.allowed,
        reason: content.reason,
        grant: content.grant,
        detail: 0,
    }
}

/// The grant for `digest` in the scope, from the active grant set.
///
/// The slot is read once, after hashing, right before the lookup. The agent empties the
/// old slot right after a flip, so a lookup that read the slot just before the flip may
/// find its key gone: then, and only if the slot moved meanwhile, the new set is asked.
/// Without that second look a grant valid in both sets could be missed during a switch.
/// A hit in the old slot is what that set allowed at the moment the slot was read.
#[inline(always)]
pub(crate) fn find_grant(scope_id: u64, digest: &[u8; DIGEST_LEN]) -> Option<GrantEntry> {
    let slot = active_slot()?;
    let mut key = GrantKey::new(scope_id, slot, *digest);
    // SAFETY: the value is copied out at once.
    if let Some(grant) = unsafe { GRANTS.get(&key) } {
        return Some(*grant);
    }
    let now = active_slot()?;
    if now == slot {
        return None;
    }
    key.slot = now;
    // SAFETY: as above.
    unsafe { GRANTS.get(&key) }.copied()
}

/// The active grant slot; `None` (deny) if the array cannot be read.
#[inline(always)]
pub(crate) fn active_slot() -> Option<u32> {
    // SAFETY: a u32 copied out of our own one-element array; the agent replaces it with
    // one aligned 4-byte write, so it is never seen half-written.
    ACTIVE_SLOT
        .get(0)
        .map(|value| active_slot_of(unsafe { ptr::read_volatile(value) }))
}
