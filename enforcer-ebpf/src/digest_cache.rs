//! The digest cache: each file's SHA-256 kept with its inode (an inode storage map) until
//! the file may have changed, so an exec or executable mapping of an unchanged file costs
//! a lookup instead of hashing the whole file. `CachedDigest` in enforcer-common states
//! the rules; `docs/performance.md` has the reasoning and the measurements.
//!
//! Invalidation runs for every task, governed or not: `file_open` (through [`opened`]) and
//! `inode_setattr` below. Filling runs where the decisions are taken ([`file_digest`]).

use core::ffi::c_void;
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use core::ptr;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_ima_file_hash, bpf_inode_storage_get},
    programs::LsmContext,
};
use enforcer_common::{CachedDigest, DIGEST_LEN, HASH_ALGO_SHA256};

use crate::kmem::{
    DENTRY_INODE_OFFSET, FILE_INODE_OFFSET, INODE_SB_OFFSET, SB_MAGIC_OFFSET, config, read_at,
};

/// Digest cache: `inode::i_writecount`, and the position of the dentry among
/// `inode_setattr`'s arguments plus one (0: not configured).
#[unsafe(no_mangle)]
static INODE_WRITECOUNT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub(crate) static SETATTR_DENTRY_ARG: u32 = 0;

/// `BPF_MAP_TYPE_INODE_STORAGE`: aya-ebpf 0.2 has no type for it.
const BPF_MAP_TYPE_INODE_STORAGE: usize = 28;

/// A map defined in BTF the way libbpf's `__uint`/`__type` macros spell it: each attribute
/// is the length of the array a field points to; key and value are the pointees' types.
/// Local storage maps must be defined so, as the kernel checks their key and value BTF.
#[repr(C)]
pub struct InodeStorageDef {
    r#type: *const [i32; BPF_MAP_TYPE_INODE_STORAGE],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
    key: *const i32,
    value: *const CachedDigest,
}

// SAFETY: never dereferenced: only its type (in BTF) and its address (relocated to the
// map) are used.
unsafe impl Sync for InodeStorageDef {}

/// Digests of files, kept with their inodes (see `CachedDigest`). Not pinned: a new load
/// starts empty, and the entries go with the program.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".maps")]
static ENFORCER_DIGESTS: InodeStorageDef = InodeStorageDef {
    r#type: ptr::null(),
    map_flags: ptr::null(),
    key: ptr::null(),
    value: ptr::null(),
};

const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

/// Filesystems whose files change only through this kernel's VFS, so that the hooks below
/// see every change (magic numbers from include/uapi/linux/magic.h). Network and cluster
/// filesystems, FUSE, and overlayfs (its lower layers can be written beside it) are not
/// here: there every exec hashes the file.
const CACHEABLE_FILESYSTEMS: [u64; 10] = [
    0xef53,      // ext2, ext3, ext4
    0x5846_5342, // xfs
    0x9123_683e, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58f6, // ramfs
    0xf2f5_2010, // f2fs
    0x7371_7368, // squashfs
    0xe0f5_e1e2, // erofs
    0x9660,      // iso9660
    0xca45_1a4e, // bcachefs
];

/// `file->f_inode`, loaded so the verifier keeps its type (as local storage helpers need);
/// null when not configured.
///
/// # Safety
/// `file` must be a trusted `struct file *`.
#[inline(always)]
pub(crate) unsafe fn trusted_inode(file: *mut c_void) -> *mut c_void {
    let offset = config(&FILE_INODE_OFFSET);
    if offset == 0 {
        return ptr::null_mut();
    }
    // SAFETY: a BTF-checked member of a trusted pointer; the verifier turns the load into a
    // fault-safe one.
    unsafe { *(file.cast::<u8>().add(offset as usize) as *const *mut c_void) }
}

/// `inode->i_writecount`: above 0 while someone may write the file (open for writing, or
/// mapped shared and writable), below 0 while it is being executed.
#[inline(always)]
pub(crate) unsafe fn writers(inode: *const c_void) -> Option<i32> {
    unsafe { read_at(inode.cast(), config(&INODE_WRITECOUNT_OFFSET)) }
}

/// The cache entry of `inode`, created if missing, when the file's digest may be cached
/// at all: on a filesystem of [`CACHEABLE_FILESYSTEMS`], with the loader having provided
/// every offset the cache relies on.
#[inline(always)]
unsafe fn cache_entry(inode: *mut c_void) -> Option<*mut CachedDigest> {
    if inode.is_null() || config(&DENTRY_INODE_OFFSET) == 0 || config(&SETATTR_DENTRY_ARG) == 0 {
        return None;
    }
    // SAFETY: probe reads.
    let magic: u64 = unsafe {
        let sb: *const u8 = read_at(inode.cast(), config(&INODE_SB_OFFSET))?;
        read_at(sb, config(&SB_MAGIC_OFFSET))?
    };
    if !CACHEABLE_FILESYSTEMS.contains(&magic) {
        return None;
    }
    // SAFETY: `inode` is a trusted inode pointer; the map is the inode storage above.
    let entry = unsafe {
        bpf_inode_storage_get(
            ptr::addr_of!(ENFORCER_DIGESTS) as *mut c_void,
            inode,
            ptr::null_mut(),
            BPF_LOCAL_STORAGE_GET_F_CREATE,
        )
    };
    (!entry.is_null()).then_some(entry.cast())
}

/// Marks `inode`'s cached digest stale: the file may change now.
#[inline(always)]
pub(crate) unsafe fn invalidate(inode: *mut c_void) {
    if inode.is_null() {
        return;
    }
    // SAFETY: as in cache_entry, without creating an entry: no entry, nothing to forget.
    let entry: *mut CachedDigest = unsafe {
        bpf_inode_storage_get(
            ptr::addr_of!(ENFORCER_DIGESTS) as *mut c_void,
            inode,
            ptr::null_mut(),
            0,
        )
    }
    .cast();
    if !entry.is_null() {
        // SAFETY: a map value; concurrent bumps must all count.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                ptr::addr_of_mut!((*entry).generation),
                1,
            )
        };
    }
}

/// The SHA-256 of `file` into `digest`, as `bpf_ima_file_hash` returns it (the algorithm,
/// or a negative error): from the cache while the file cannot have changed, else hashed
/// now and cached when that is safe.
///
/// # Safety
/// `file` must be a trusted `struct file *`.
#[inline(always)]
pub unsafe fn file_digest(file: *mut c_void, links: u32, digest: &mut [u8; DIGEST_LEN]) -> i64 {
    let inode = unsafe { trusted_inode(file) };
    // Files without a name (memfd, deleted) are never cached.
    let entry = if links == 0 {
        None
    } else {
        unsafe { cache_entry(inode) }
    };
    let Some(entry) = entry else {
        // SAFETY: the helper writes at most DIGEST_LEN bytes into `digest`.
        return unsafe {
            bpf_ima_file_hash(file.cast(), digest.as_mut_ptr().cast(), DIGEST_LEN as u32)
        };
    };
    // SAFETY: `entry` is this inode's map value; fields are read and written one at a
    // time, and every read that matters is checked against `generation` again.
    unsafe {
        let generation = ptr::read_volatile(ptr::addr_of!((*entry).generation));
        let quiet = writers(inode).is_some_and(|w| w <= 0);
        if quiet
            && ptr::read_volatile(ptr::addr_of!((*entry).valid_for)) == generation.wrapping_add(1)
        {
            *digest = (*entry).digest;
            if ptr::read_volatile(ptr::addr_of!((*entry).generation)) == generation {
                return HASH_ALGO_SHA256;
            }
        }
        // Hash now. Only the first of concurrent fillers stores, and only if nobody could
        // have written the file while it was hashed: no writer before or after, and no
        // open for writing or size change in between (those move `generation`).
        // SeqCst: a relaxed add lowers to BPF's legacy XADD, which returns nothing (LLVM then
        // takes the addend for the old value); SeqCst gives the fetching instruction.
        let fillers = ptr::addr_of_mut!((*entry).fillers);
        let first = atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(fillers, 1) == 0;
        let algo = bpf_ima_file_hash(file.cast(), digest.as_mut_ptr().cast(), DIGEST_LEN as u32);
        if first
            && quiet
            && algo == HASH_ALGO_SHA256
            && writers(inode).is_some_and(|w| w <= 0)
            && ptr::read_volatile(ptr::addr_of!((*entry).generation)) == generation
        {
            (*entry).digest = *digest;
            ptr::write_volatile(
                ptr::addr_of_mut!((*entry).valid_for),
                generation.wrapping_add(1),
            );
        }
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(fillers, u64::MAX);
        algo
    }
}

/// The dentry and the `struct iattr` of an `inode_setattr` call, wherever this kernel
/// puts them (it gained an idmap argument in 6.3); `None` when not configured.
#[inline(always)]
pub(crate) fn setattr_args(ctx: &LsmContext) -> Option<(*const u8, *const u8)> {
    // All three loads are made: the verifier accepts context reads only at constant offsets.
    let (a, b, c): (*const u8, *const u8, *const u8) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    match config(&SETATTR_DENTRY_ARG) {
        1 => Some((a, b)),
        2 => Some((b, c)),
        _ => None,
    }
}

/// A dentry's inode, loaded so the verifier keeps its type (inode storage needs it).
///
/// # Safety
/// `dentry` must be a trusted `struct dentry *` from a hook's arguments.
#[inline(always)]
pub(crate) unsafe fn trusted_dentry_inode(dentry: *const u8) -> *mut c_void {
    let offset = config(&DENTRY_INODE_OFFSET);
    if offset == 0 {
        return ptr::null_mut();
    }
    // SAFETY: a BTF-checked member of the hook's trusted dentry argument.
    unsafe { *(dentry.add(offset as usize) as *const *mut c_void) }
}
