//! Code that cannot change after its check. An executable mapping in a governed scope is
//! allowed only of a file nobody can write (no open writable descriptor, no shared
//! writable mapping: `i_writecount` is not above 0), and from then on, while any struct
//! file that was mapped so lives, nobody may open the file for writing or truncate it:
//! the kernel's ETXTBSY for a running program, extended to every executable mapping made
//! in a scope.
//!
//! Bookkeeping: each guarding `struct file` is remembered ([`MAPPED_FILES`]) with the
//! guard's cookie, a number given to the inode once and never reused; the count lives in
//! [`GUARD_COUNTS`] under that cookie, and the inode's own storage ([`ENFORCER_CODE`])
//! holds only the cookie. `file_free_security` ends a file's count by cookie alone: it runs
//! after the file's dentry is put, when the inode may already be gone, so it must not read
//! `f_inode`. `inode_free_security` drops the count with the inode. The vma holds its file,
//! so a count outlives the descriptor. Overlayfs hands the mapping to the layer's own
//! file, so its file may go while the mapping stays: an overlayfs inode, once mapped, stays
//! guarded until it leaves memory. The layer's file is guarded too: where the kernel has
//! `mmap_backing_file` (6.12+) by that hook, like any mapped file; before it (6.1), by the
//! overlay's guard, which finds the layer's file where `ovl_mmap` takes it from and marks
//! its inode in [`LAYER_INODES`] until that inode leaves memory, as the overlay's own
//! guard is kept. Layers are shared (container images), so such a mark belongs to no
//! single mapping.
//!
//! Ordering: the guard is raised before `i_writecount` is read, and an open for writing
//! raises `i_writecount` (do_dentry_open) before `file_open` reads the guard, both with
//! full barriers, so one of two racing sides always sees the other.

use core::ffi::c_void;
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use core::ptr;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_inode_storage_get,
    macros::map,
    maps::{Array, HashMap},
};

use crate::digest_cache::{trusted_inode, writers};
use crate::kmem::{
    FILE_INODE_OFFSET, OVERLAY_REAL_FILE_OFFSET, OVERLAYFS_SUPER_MAGIC, config, fs_magic, read_at,
};

/// `BPF_MAP_TYPE_INODE_STORAGE`: aya-ebpf 0.2 has no type for it.
const BPF_MAP_TYPE_INODE_STORAGE: usize = 28;
const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

/// How an inode is guarded.
#[repr(C)]
pub(crate) struct Guard {
    /// This inode's guard number, given at its first guard: the key of its count.
    pub(crate) cookie: u64,
    /// The scope of the latest executable mapping: refusals are reported in its name.
    pub(crate) scope_id: u64,
    /// Guarded until the inode leaves memory (overlayfs).
    pub(crate) sticky: u64,
}

/// Defined the way libbpf's `__uint`/`__type` macros spell it (see digest_cache).
#[repr(C)]
pub(crate) struct GuardStorageDef {
    r#type: *const [i32; BPF_MAP_TYPE_INODE_STORAGE],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
    key: *const i32,
    value: *const Guard,
}

// SAFETY: never dereferenced: only its type (in BTF) and its address (relocated to the
// map) are used.
unsafe impl Sync for GuardStorageDef {}

/// Guards, kept with their inodes. Not pinned: a new load starts with none, and so does
/// the kernel after a reboot; files mapped before a load are not guarded (the agent loads
/// before the governed slices start).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".maps")]
static ENFORCER_CODE: GuardStorageDef = GuardStorageDef {
    r#type: ptr::null(),
    map_flags: ptr::null(),
    key: ptr::null(),
    value: ptr::null(),
};

/// Most struct files guarding at once: a process maps a few dozen libraries.
const MAX_MAPPED_FILES: u32 = 262_144;

/// `struct file *` (its address) -> the cookie of the guard it counts in.
#[map(name = "ENFORCER_MAPPED_FILES")]
static MAPPED_FILES: HashMap<u64, u64> =
    HashMap::with_max_entries(MAX_MAPPED_FILES, BPF_F_NO_PREALLOC);

/// Guard cookie -> live struct files mapped executable in a scope.
#[map(name = "ENFORCER_GUARD_COUNTS")]
static GUARD_COUNTS: HashMap<u64, u64> =
    HashMap::with_max_entries(MAX_MAPPED_FILES, BPF_F_NO_PREALLOC);

/// Layer inodes behind overlayfs files mapped executable in a scope (6.1 only): inode
/// address -> the scope of the latest such mapping. Removed when the inode leaves memory.
#[map(name = "ENFORCER_LAYER_INODES")]
static LAYER_INODES: HashMap<u64, u64> =
    HashMap::with_max_entries(MAX_MAPPED_FILES, BPF_F_NO_PREALLOC);

/// Source of guard cookies.
#[map(name = "ENFORCER_GUARD_SEQ")]
static GUARD_SEQ: Array<u64> = Array::with_max_entries(1, 0);

const BPF_NOEXIST: u64 = 1;

/// A new cookie (1, 2, ...); 0 only if the counter is unreadable.
#[inline(always)]
fn next_cookie() -> u64 {
    match GUARD_SEQ.get_ptr_mut(0) {
        // SAFETY: the array slot lives as long as the map; SeqCst for the fetching add (see
        // lineage::next_exec_id).
        Some(slot) => (unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(slot, 1) }) + 1,
        None => 0,
    }
}

/// Adds `delta` to the count of `cookie`, creating it at 0 first.
#[inline(always)]
fn count(cookie: u64, delta: u64) -> bool {
    if GUARD_COUNTS.get_ptr_mut(&cookie).is_none() {
        // Two first guards at once: one insert wins, the other finds it below.
        let _ = GUARD_COUNTS.insert(&cookie, &0, BPF_NOEXIST);
    }
    match GUARD_COUNTS.get_ptr_mut(&cookie) {
        Some(slot) => {
            // SAFETY: a map value; concurrent changes must all count, with a full barrier.
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(slot, delta) };
            true
        }
        None => false,
    }
}

/// The guard of `inode`; with `create`, made with a fresh cookie when missing. Creation is
/// atomic: of two racing creators, both get the one entry that was made.
#[inline(always)]
unsafe fn guard_of(inode: *mut c_void, create: bool) -> *mut Guard {
    if inode.is_null() {
        return ptr::null_mut();
    }
    let mut init = Guard {
        cookie: 0,
        scope_id: 0,
        sticky: 0,
    };
    let flags = if create {
        init.cookie = next_cookie();
        if init.cookie == 0 {
            return ptr::null_mut();
        }
        BPF_LOCAL_STORAGE_GET_F_CREATE
    } else {
        0
    };
    // SAFETY: `inode` is an inode pointer from a hook; the map is the inode storage above,
    // and `init` is a whole value of it.
    unsafe {
        bpf_inode_storage_get(
            ptr::addr_of!(ENFORCER_CODE) as *mut c_void,
            inode,
            ptr::addr_of_mut!(init).cast(),
            flags,
        )
    }
    .cast()
}

/// What [`guard`] found.
pub(crate) enum Guarded {
    /// Nobody can write the file now, and nobody will while the mapping lives.
    Yes,
    /// Someone can write it: the mapping must be refused.
    Writable,
    /// The guard could not be set up: doubt means deny.
    Failed,
}

/// Guards `file` before it is mapped executable in scope `scope_id`.
///
/// # Safety
/// `file` must be a trusted `struct file *`.
#[inline(always)]
pub(crate) unsafe fn guard(file: *mut c_void, scope_id: u64) -> Guarded {
    let inode = unsafe { trusted_inode(file) };
    let entry = unsafe { guard_of(inode, true) };
    if entry.is_null() {
        return Guarded::Failed;
    }
    // SAFETY: `entry` is this inode's map value.
    let cookie = unsafe { ptr::read_volatile(ptr::addr_of!((*entry).cookie)) };
    let key = file as u64;
    // SAFETY: the value is only tested for presence.
    let new_file = unsafe { MAPPED_FILES.get(&key) }.is_none();
    if new_file {
        if MAPPED_FILES.insert(&key, &cookie, 0).is_err() {
            return Guarded::Failed;
        }
        if !count(cookie, 1) {
            let _ = MAPPED_FILES.remove(&key);
            return Guarded::Failed;
        }
    }
    let mut layer: *const c_void = ptr::null();
    // SAFETY: as above; plain stores of this inode's own fields.
    unsafe {
        ptr::write_volatile(ptr::addr_of_mut!((*entry).scope_id), scope_id);
        if fs_magic(inode.cast()) == Some(OVERLAYFS_SUPER_MAGIC) {
            ptr::write_volatile(ptr::addr_of_mut!((*entry).sticky), 1);
            match guard_layer(file, cookie, scope_id) {
                Some(found) => layer = found,
                None => {
                    release(file);
                    return Guarded::Failed;
                }
            }
        }
        let unwritten = |inode: *const c_void| writers(inode).is_some_and(|w| w <= 0);
        if unwritten(inode) && (layer.is_null() || unwritten(layer)) {
            return Guarded::Yes;
        }
    }
    // A writer exists: this file guards nothing after all.
    release(file);
    Guarded::Writable
}

/// Before `mmap_backing_file` (6.1): marks the inode of the layer file that overlayfs
/// `file` hands its mappings to, and returns it (null where the kernel has the hook, which
/// guards the layer file itself). `None` when the layer cannot be found or marked.
///
/// # Safety
/// `file` must be a trusted `struct file *` of an overlayfs inode.
#[inline(always)]
unsafe fn guard_layer(file: *mut c_void, cookie: u64, scope_id: u64) -> Option<*const c_void> {
    let offset = config(&OVERLAY_REAL_FILE_OFFSET);
    if offset == 0 {
        return Some(ptr::null());
    }
    // SAFETY: probe reads: `ovl_open` stores the layer's `struct file *` there, and
    // `ovl_mmap` maps that file's inode.
    let layer: *const u8 = unsafe {
        let real: *const u8 = read_at(file.cast(), offset)?;
        read_at(real, config(&FILE_INODE_OFFSET))?
    };
    LAYER_INODES.insert(&(layer as u64), &scope_id, 0).ok()?;
    // The mark is up before the caller reads the layer's writers: a full barrier, as for
    // the overlay's own guard (see the module documentation).
    count(cookie, 0).then_some(layer.cast())
}

/// `file_free_security`: a file that guarded its inode is gone. Reads nothing of the file
/// but its address (its inode may be freed already).
#[inline(always)]
pub(crate) fn release(file: *mut c_void) {
    let key = file as u64;
    // SAFETY: the value is copied out at once.
    let Some(cookie) = (unsafe { MAPPED_FILES.get(&key) }).copied() else {
        return;
    };
    let _ = MAPPED_FILES.remove(&key);
    if GUARD_COUNTS.get_ptr_mut(&cookie).is_some() {
        count(cookie, u64::MAX);
    }
}

/// `inode_free_security`: the inode leaves memory, and its count with it.
///
/// # Safety
/// `inode` must be the hook's inode.
#[inline(always)]
pub(crate) unsafe fn forget(inode: *mut c_void) {
    let entry = unsafe { guard_of(inode, false) };
    if !entry.is_null() {
        // SAFETY: this inode's map value.
        let cookie = unsafe { ptr::read_volatile(ptr::addr_of!((*entry).cookie)) };
        let _ = GUARD_COUNTS.remove(&cookie);
    }
    if config(&OVERLAY_REAL_FILE_OFFSET) != 0 {
        let _ = LAYER_INODES.remove(&(inode as u64));
    }
}

/// The scope in whose name `inode` is guarded, if it is: a write would change code a
/// governed task has mapped executable.
///
/// # Safety
/// `inode` must be a trusted `struct inode *` (or null).
#[inline(always)]
pub(crate) unsafe fn guarded_by(inode: *mut c_void) -> Option<u64> {
    let entry = unsafe { guard_of(inode, false) };
    if !entry.is_null() {
        // SAFETY: this inode's map value; plain reads.
        let own = unsafe {
            let cookie = ptr::read_volatile(ptr::addr_of!((*entry).cookie));
            let sticky = ptr::read_volatile(ptr::addr_of!((*entry).sticky));
            let mappers = GUARD_COUNTS.get(&cookie).copied().unwrap_or(0);
            (mappers != 0 || sticky != 0)
                .then(|| ptr::read_volatile(ptr::addr_of!((*entry).scope_id)))
        };
        if own.is_some() {
            return own;
        }
    }
    if config(&OVERLAY_REAL_FILE_OFFSET) == 0 {
        return None;
    }
    // SAFETY: the value is copied out at once.
    unsafe { LAYER_INODES.get(&(inode as u64)) }.copied()
}
