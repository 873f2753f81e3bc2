//! The kernel side as the agent sees it: load, attach and pin the BPF LSM program, reuse
//! a pinned one, and make its maps hold exactly a [`Policy`].
//!
//! Everything is pinned under one directory (default `/sys/fs/bpf/enforcer`): the link
//! keeps the program attached and the maps keep their contents after the agent exits, so
//! enforcement does not depend on the agent being alive. Removing the pins is the only
//! way to stop it ([`unload`]).
//!
//! Grants change atomically: the grant map holds two sets (`GrantKey::slot`), and
//! [`PolicyMaps::apply`] fills the idle one while the active one keeps deciding, then flips
//! one array element. docs/performance.md has the measurements.

use std::collections::HashMap as StdHashMap;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aya::maps::{
    Array, HashMap, IterableMap as _, Map, MapData, MapError, MapType, PerCpuArray, RingBuf,
};
use aya::programs::{Lsm, links::FdLink};
use aya::{Btf, EbpfLoader};
use enforcer_common::{
    DIGEST_LEN, EVENTS_BYTES, GRANT_SLOTS, Grant, GrantKey, Image, MAX_GRANTS, MAX_POLICY_GRANTS,
    MAX_PROTECTED, MAX_SCOPES, MAX_TRACKED_IMAGES, ScopePolicy, active_slot_of, hook, mode, names,
    scope_flags,
};

use crate::btf::{Btf as KernelBtf, BtfError};
use crate::cgroup::{self, CgroupError};
use crate::policy::{Mode, Policy};

mod bpf_sys;

/// Default pin directory on bpffs.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/enforcer";

/// What a pinned map must look like to be the map this build's program declares.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MapLayout {
    name: &'static str,
    kind: MapType,
    key: u32,
    value: u32,
    max_entries: u32,
    flags: u32,
}

impl MapLayout {
    const fn new<K, V>(name: &'static str, kind: MapType, max_entries: u32, flags: u32) -> Self {
        Self {
            name,
            kind,
            key: size32::<K>(),
            value: size32::<V>(),
            max_entries,
            flags,
        }
    }

    fn describe(&self) -> String {
        format!(
            "type {:?}, key {} bytes, value {} bytes, {} entries, flags {:#x}",
            self.kind, self.key, self.value, self.max_entries, self.flags
        )
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "map keys and values are a few bytes"
)]
const fn size32<T>() -> u32 {
    size_of::<T>() as u32
}

/// The maps the program pins (by name) in the pin directory, as enforcer-ebpf declares
/// them. Pinned maps outlive the agent, so an agent of another version can find maps of
/// another layout: [`check_pins`] compares against this before anything uses them.
const MAP_PINS: [MapLayout; 8] = [
    MapLayout::new::<u64, ScopePolicy>(names::SCOPES, MapType::Hash, MAX_SCOPES, 0),
    MapLayout::new::<GrantKey, Grant>(
        names::GRANTS,
        MapType::Hash,
        MAX_GRANTS,
        bpf_sys::BPF_F_NO_PREALLOC,
    ),
    MapLayout::new::<u32, u32>(names::ACTIVE_SLOT, MapType::Array, 1, 0),
    MapLayout::new::<(), ()>(names::EVENTS, MapType::RingBuf, EVENTS_BYTES, 0),
    MapLayout::new::<u32, u64>(names::DROPPED, MapType::PerCpuArray, 1, 0),
    MapLayout::new::<u32, u64>(names::EXEC_SEQ, MapType::Array, 1, 0),
    MapLayout::new::<u32, Image>(names::IMAGES, MapType::LruHash, MAX_TRACKED_IMAGES, 0),
    MapLayout::new::<u32, u32>(names::PROTECTED, MapType::Hash, MAX_PROTECTED, 0),
];

fn layout_of(name: &str) -> Option<&'static MapLayout> {
    MAP_PINS.iter().find(|l| l.name == name)
}

fn link_pin(pin_dir: &Path, hook: &str) -> PathBuf {
    pin_dir.join(format!("link-{hook}"))
}

/// Struct offsets the programs need, read from the running kernel's BTF by name and type
/// (see the globals in enforcer-ebpf).
struct KernelLayout {
    offsets: Vec<(&'static str, u32)>,
}

impl KernelLayout {
    fn read() -> Result<Self, KernelError> {
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
        offsets.extend(crate::digest_cache::layout(&btf)?);
        // Name a missing hook before the load fails on it with a bare errno.
        for name in hook::NAMES {
            btf.function_arg_count(&format!("bpf_lsm_{name}"))?;
        }
        tracing::debug!(?offsets, "kernel layout from BTF");
        Ok(Self { offsets })
    }
}

/// The kernel programs, built by build.rs and embedded so the agent is self-contained.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer.bpf.o"));

/// Why the kernel side could not be loaded or updated.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot create pin directory {path}: {source} (is bpffs mounted at /sys/fs/bpf?)")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the running kernel's layout: {0}")]
    Btf(#[from] BtfError),
    #[error("cannot read the running kernel's BTF: {0}")]
    KernelBtf(#[source] aya::BtfError),
    #[error("loading the BPF object failed: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("the BPF object has no program {0}")]
    MissingProgram(&'static str),
    #[error("the BPF object has no map {0}")]
    MissingMap(&'static str),
    #[error(
        "the kernel refused the LSM program for {hook}: {source}. BPF LSM programs need a \
         5.18+ kernel with CONFIG_BPF_LSM, `bpf` in the active LSM list and IMA \
         (bpf_ima_file_hash)"
    )]
    Program {
        hook: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot pin {what} at {path}: {source}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(
        "cannot open pinned map {path}: {source} (remove {dir} with `enforcer unload` to start afresh)"
    )]
    OpenPinned {
        path: PathBuf,
        dir: PathBuf,
        // Boxed: inline, it alone makes every Result of this module 128 bytes.
        #[source]
        source: Box<MapError>,
    },
    #[error("{what} map operation failed: {source}")]
    Map {
        what: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot remove pin {path}: {source}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pins removed, but {programs} enforcer program(s) are still attached: another \
         process holds them (a running `enforcer run`?); stop it and check again"
    )]
    StillAttached { programs: usize },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot read CLOCK_BOOTTIME: {0}")]
    Clock(#[source] std::io::Error),
    #[error(
        "pinned map {path} is missing: the pins in {dir} were left by an enforcer of another \
         version. Run `enforcer unload` (this stops enforcement) and start the agent again"
    )]
    MissingPin { path: PathBuf, dir: PathBuf },
    #[error(
        "pinned map {path} has another layout than this enforcer's program ({found}; expected \
         {expected}): it was left by an enforcer of another version. Run `enforcer unload` \
         (this stops enforcement) and start the agent again"
    )]
    IncompatiblePin {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "the policy holds {grants} grants, more than the {max} one policy may hold: the grant \
         map holds {capacity}, and switching policies atomically needs room for two"
    )]
    TooManyGrants {
        grants: usize,
        max: u32,
        capacity: u32,
    },
    #[error("{what}: {command} stopped after {done} of {total} entries: {source}")]
    Batch {
        what: &'static str,
        command: &'static str,
        done: usize,
        total: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the {what} map: {source}")]
    ReadMap {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock the pin directory for an update: {0}")]
    Lock(#[source] std::io::Error),
    #[error("cannot create the {name} map: {source}")]
    CreateMap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How the program came to be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Loaded and attached by this process, and pinned.
    Loaded,
    /// Found pinned and reused: enforcement never stopped.
    Reused,
}

/// A grant as a policy names it: one digest allowed in one scope. The kernel's key adds
/// the grant slot, which only [`PolicyMaps`] deals with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopedDigest {
    /// cgroup id of the governed scope.
    pub scope_id: u64,
    /// SHA-256 of the file's content.
    pub digest: [u8; DIGEST_LEN],
}

impl ScopedDigest {
    /// The kernel's key for this grant in `slot`.
    #[must_use]
    pub const fn in_slot(self, slot: u32) -> GrantKey {
        GrantKey::new(self.scope_id, slot, self.digest)
    }
}

impl From<GrantKey> for ScopedDigest {
    fn from(key: GrantKey) -> Self {
        Self {
            scope_id: key.scope_id,
            digest: key.digest,
        }
    }
}

/// The maps as the program sees them: governed scopes, and the grants of the active slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapState {
    pub scopes: StdHashMap<u64, ScopePolicy>,
    pub grants: StdHashMap<ScopedDigest, Grant>,
}

/// What one [`Enforcement::apply`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub scopes: usize,
    pub grants: usize,
    pub removed_scopes: usize,
    /// Grants of the previous set that the new one does not hold.
    pub removed_grants: usize,
    /// When a new grant set was switched in: the time from the start of the apply to the
    /// flip. `None`: the grants were already right, nothing was switched.
    pub switched_in: Option<Duration>,
}

fn map_err(what: &'static str) -> impl Fn(MapError) -> KernelError {
    move |source| KernelError::Map { what, source }
}

/// A delete of a key that is not there: aya reports the kernel's ENOENT as a syscall error.
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Every entry of a hash map, in batches (element by element where the kernel has no
/// batch lookup).
fn read_all<K: aya::Pod + Default, V: aya::Pod + Default>(
    map: &HashMap<MapData, K, V>,
    what: &'static str,
) -> Result<Vec<(K, V)>, KernelError> {
    match bpf_sys::lookup_all(map.map().fd().as_fd()) {
        Ok(entries) => Ok(entries),
        Err(e) if e.unsupported() => map.iter().collect::<Result<_, _>>().map_err(map_err(what)),
        Err(e) => Err(KernelError::ReadMap {
            what,
            source: e.source,
        }),
    }
}

/// What each grant slot holds, as [`PolicyMaps::apply`] last wrote or found it.
#[derive(Debug, Default)]
struct Slots {
    /// The active-slot array's value ([`active_slot_of`]) when this was last true.
    value: u32,
    held: [StdHashMap<ScopedDigest, Grant>; GRANT_SLOTS as usize],
    /// Keys with a slot no set uses: only another writer could have left them.
    strays: Vec<GrantKey>,
}

/// The active-slot value that selects `slot` and counts one more write than `value`.
const fn next_value(value: u32, slot: u32) -> u32 {
    (value - active_slot_of(value)).wrapping_add(GRANT_SLOTS) + slot
}

/// The maps that hold a policy: governed scopes, the grant map with its two slots, and
/// which slot is active.
///
/// [`Enforcement`] holds the pinned ones. [`PolicyMaps::create`] makes unattached maps of
/// the same layout, so tests and the host benchmark run the agent's own map code on hosts
/// that cannot load LSM programs.
pub struct PolicyMaps {
    scopes: HashMap<MapData, u64, ScopePolicy>,
    grants: HashMap<MapData, GrantKey, Grant>,
    active: Array<MapData, u32>,
    /// The grant slots' contents, so a small change costs a few writes instead of a read
    /// of the whole map. `None` until the first apply reads the map, and after a failed
    /// apply (the map may then hold anything). Every apply that writes the grant map moves
    /// the active-slot value first, so a handle whose value is outdated reads it again.
    slots: Option<Slots>,
    /// The pin directory, locked (flock) while an apply runs, so two processes applying
    /// at once take turns.
    lock: Option<std::fs::File>,
    /// The kernel refused batch operations once: element by element from then on.
    no_batch: bool,
}

/// Holds a [`PolicyMaps`] lock until dropped.
struct Locked<'a>(Option<&'a std::fs::File>);

impl<'a> Locked<'a> {
    /// Waits for any other process's apply on the same pins to finish (nothing to wait
    /// for without a pin directory).
    fn take(dir: Option<&'a std::fs::File>) -> Result<Self, KernelError> {
        if let Some(file) = dir {
            // SAFETY: flock on a descriptor we own; nothing else is involved.
            if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(file), libc::LOCK_EX) } != 0 {
                return Err(KernelError::Lock(std::io::Error::last_os_error()));
            }
        }
        Ok(Self(dir))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.0 {
            // SAFETY: flock on a descriptor we own; nothing else is involved.
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(file), libc::LOCK_UN) };
        }
    }
}

impl PolicyMaps {
    fn new(scopes: MapData, grants: MapData, active: MapData) -> Result<Self, KernelError> {
        Ok(Self {
            scopes: HashMap::try_from(Map::HashMap(scopes)).map_err(map_err("scope"))?,
            grants: HashMap::try_from(Map::HashMap(grants)).map_err(map_err("grant"))?,
            active: Array::try_from(Map::Array(active)).map_err(map_err("active slot"))?,
            slots: None,
            lock: None,
            no_batch: false,
        })
    }

    /// Fresh maps of the program's layout, neither pinned nor used by any program: for
    /// tests and benchmarks of [`Self::apply`] on hosts without BPF LSM. Needs
    /// CAP_BPF (root).
    pub fn create() -> Result<Self, KernelError> {
        let make = |name: &'static str| -> Result<MapData, KernelError> {
            let layout = layout_of(name).ok_or(KernelError::MissingMap(name))?;
            let create_err = |source| KernelError::CreateMap { name, source };
            let fd = bpf_sys::create_map(
                name,
                layout.kind as u32,
                layout.key,
                layout.value,
                layout.max_entries,
                layout.flags,
            )
            .map_err(create_err)?;
            MapData::from_fd(fd).map_err(map_err(name))
        };
        Self::new(
            make(names::SCOPES)?,
            make(names::GRANTS)?,
            make(names::ACTIVE_SLOT)?,
        )
    }

    /// Another handle on the same maps that knows nothing of their contents: what an agent
    /// restarted after a crash has.
    pub fn reopen(&self) -> Result<Self, KernelError> {
        let dup = |data: &MapData, name: &'static str| -> Result<MapData, KernelError> {
            let fd = data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|source| KernelError::CreateMap { name, source })?;
            MapData::from_fd(fd).map_err(map_err(name))
        };
        let mut maps = Self::new(
            dup(self.scopes.map(), names::SCOPES)?,
            dup(self.grants.map(), names::GRANTS)?,
            dup(self.active.map(), names::ACTIVE_SLOT)?,
        )?;
        maps.no_batch = self.no_batch;
        Ok(maps)
    }

    fn open_pinned(pin_dir: &Path) -> Result<Self, KernelError> {
        let mut maps = Self::new(
            open_pin(pin_dir, names::SCOPES)?,
            open_pin(pin_dir, names::GRANTS)?,
            open_pin(pin_dir, names::ACTIVE_SLOT)?,
        )?;
        maps.lock_with(pin_dir)?;
        Ok(maps)
    }

    /// Applies take turns with other processes' on the maps pinned in `pin_dir`.
    fn lock_with(&mut self, pin_dir: &Path) -> Result<(), KernelError> {
        let dir = std::fs::File::open(pin_dir).map_err(|source| KernelError::PinDir {
            path: pin_dir.into(),
            source,
        })?;
        self.lock = Some(dir);
        Ok(())
    }

    fn active_value(&self) -> Result<u32, KernelError> {
        self.active.get(&0, 0).map_err(map_err("active slot"))
    }

    fn set_active_value(&mut self, value: u32) -> Result<(), KernelError> {
        self.active.set(0, value, 0).map_err(map_err("active slot"))
    }

    /// What the program decides with now: the scopes, and the grants of the active slot.
    pub fn read(&self) -> Result<MapState, KernelError> {
        let scopes = self
            .scopes
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("scope"))?;
        let active = active_slot_of(self.active_value()?);
        let grants = self
            .all_grants()?
            .into_iter()
            .filter(|(key, _)| key.slot == active)
            .map(|(key, grant)| (ScopedDigest::from(key), grant))
            .collect();
        Ok(MapState { scopes, grants })
    }

    /// Every entry of the grant map, both slots.
    fn all_grants(&self) -> Result<Vec<(GrantKey, Grant)>, KernelError> {
        read_all(&self.grants, "grant")
    }

    /// Reads every grant slot back from the kernel.
    fn read_slots(&self) -> Result<Slots, KernelError> {
        let mut slots = Slots {
            value: self.active_value()?,
            ..Slots::default()
        };
        for (key, grant) in self.all_grants()? {
            match slots.held.get_mut(key.slot as usize) {
                Some(held) => {
                    held.insert(key.into(), grant);
                }
                None => slots.strays.push(key),
            }
        }
        Ok(slots)
    }

    /// Makes the program decide by `desired`, with every decision seeing either the old
    /// grant set or the new one, never a mixture.
    ///
    /// Outside an apply, the active slot holds exactly the policy's grants and the idle
    /// slot a subset of them (same keys, same values): the grants both sets shared, kept
    /// so that the next small change writes only what changed. The order is what keeps
    /// every moment safe:
    /// 1. the idle slot is made to hold exactly `desired`'s grants: what `desired` lacks
    ///    goes, what is new or changed is written, in batches. The active slot keeps
    ///    deciding meanwhile;
    /// 2. scopes `desired` drops stop being governed: their grants are about to go, and
    ///    a scope that governs with no grants would deny everything for a moment;
    /// 3. one write to the active-slot array switches every later lookup to the new set;
    /// 4. new and changed scopes go in: a new scope never governs before its grants are
    ///    active, and a scope turning to enforce does so with its new grants;
    /// 5. what the old slot holds that the new set does not allow (revoked, or changed)
    ///    is deleted. Only a lookup that read the slot number just before the flip still
    ///    looks there, and when it misses, the program asks the new slot. Once this
    ///    returns, no lookup can find a grant the new set does not hold.
    ///
    /// When `desired` holds exactly the active set, no switch happens. Safe to repeat, and
    /// after an apply (in this process or an earlier one) failed part-way. Processes that
    /// apply to the same pinned maps take turns.
    pub fn apply(&mut self, desired: &MapState) -> Result<ApplyStats, KernelError> {
        let started = std::time::Instant::now();
        if desired.grants.len() > MAX_POLICY_GRANTS as usize {
            return Err(KernelError::TooManyGrants {
                grants: desired.grants.len(),
                max: MAX_POLICY_GRANTS,
                capacity: MAX_GRANTS,
            });
        }
        // Taken out, and put back only on success: after an error the maps may hold
        // anything, and the next apply reads them again.
        let known = self.slots.take();
        let dir = self.lock.take();
        let result = Locked::take(dir.as_ref())
            .and_then(|_locked| self.apply_locked(desired, known, started));
        self.lock = dir;
        let (stats, slots) = result?;
        self.slots = Some(slots);
        Ok(stats)
    }

    fn apply_locked(
        &mut self,
        desired: &MapState,
        known: Option<Slots>,
        started: std::time::Instant,
    ) -> Result<(ApplyStats, Slots), KernelError> {
        let value = self.active_value()?;
        let mut slots = match known {
            Some(slots) if slots.value == value => slots,
            Some(_) => {
                tracing::warn!(
                    "another process wrote the grant map since this one did: reading it again"
                );
                self.read_slots()?
            }
            None => self.read_slots()?,
        };
        let current_scopes: StdHashMap<u64, ScopePolicy> = self
            .scopes
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("scope"))?;
        let mut stats = ApplyStats {
            scopes: desired.scopes.len(),
            grants: desired.grants.len(),
            ..ApplyStats::default()
        };

        let old = active_slot_of(slots.value);
        let new = 1 - old;
        let switch = slots.held[old as usize] != desired.grants;
        let idle_stale = slots.held[new as usize]
            .iter()
            .any(|(k, g)| desired.grants.get(k) != Some(g));
        if switch || idle_stale || !slots.strays.is_empty() {
            // Tell other handles on these maps, before the first write, that what they
            // remember is outdated (the slot stays the same).
            slots.value = next_value(slots.value, old);
            self.set_active_value(slots.value)?;
        }
        if switch {
            let held = &slots.held[new as usize];
            let leftovers: Vec<GrantKey> = held
                .keys()
                .filter(|k| !desired.grants.contains_key(k))
                .map(|k| k.in_slot(new))
                .collect();
            let (keys, values): (Vec<GrantKey>, Vec<Grant>) = desired
                .grants
                .iter()
                .filter(|(k, g)| held.get(k) != Some(g))
                .map(|(k, g)| (k.in_slot(new), *g))
                .unzip();
            self.delete_grants(&leftovers)?;
            self.write_grants(&keys, &values)?;
        }
        for id in current_scopes
            .keys()
            .filter(|id| !desired.scopes.contains_key(id))
        {
            match self.scopes.remove(id) {
                Ok(()) => stats.removed_scopes += 1,
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(KernelError::Map {
                        what: "scope",
                        source,
                    });
                }
            }
        }
        if switch {
            slots.value = next_value(slots.value, new);
            self.set_active_value(slots.value)?;
            stats.switched_in = Some(started.elapsed());
            slots.held[new as usize].clone_from(&desired.grants);
            stats.removed_grants = slots.held[old as usize]
                .keys()
                .filter(|k| !desired.grants.contains_key(k))
                .count();
        }
        for (id, policy) in &desired.scopes {
            if current_scopes.get(id) != Some(policy) {
                self.scopes
                    .insert(id, policy, 0)
                    .map_err(map_err("scope"))?;
            }
        }
        // The idle slot keeps only what the active set allows in the same way.
        let idle = 1 - active_slot_of(slots.value);
        let held = &mut slots.held[idle as usize];
        let stale: Vec<GrantKey> = held
            .iter()
            .filter(|(k, g)| desired.grants.get(k) != Some(g))
            .map(|(k, _)| k.in_slot(idle))
            .chain(slots.strays.drain(..))
            .collect();
        held.retain(|k, g| desired.grants.get(k) == Some(g));
        self.delete_grants(&stale)?;
        Ok((stats, slots))
    }

    /// Writes `keys[i] -> values[i]` into the grant map, replacing existing values.
    fn write_grants(&mut self, keys: &[GrantKey], values: &[Grant]) -> Result<(), KernelError> {
        if !self.no_batch {
            match bpf_sys::update_batch(self.grants.map().fd().as_fd(), keys, values) {
                Ok(()) => return Ok(()),
                Err(e) if e.unsupported() => self.batch_refused(&e.source),
                Err(e) => {
                    return Err(KernelError::Batch {
                        what: "writing grants",
                        command: "BPF_MAP_UPDATE_BATCH",
                        done: e.done,
                        total: keys.len(),
                        source: e.source,
                    });
                }
            }
        }
        for (key, value) in keys.iter().zip(values) {
            self.grants
                .insert(key, value, 0)
                .map_err(map_err("grant"))?;
        }
        Ok(())
    }

    /// Deletes `keys` from the grant map; keys already gone are skipped.
    fn delete_grants(&mut self, keys: &[GrantKey]) -> Result<(), KernelError> {
        let mut rest = keys;
        while !rest.is_empty() && !self.no_batch {
            match bpf_sys::delete_batch(self.grants.map().fd().as_fd(), rest) {
                Ok(()) => return Ok(()),
                // The batch stops at a missing key: step over it.
                Err(e) if e.not_found() => rest = rest.get(e.done + 1..).unwrap_or_default(),
                Err(e) if e.unsupported() => self.batch_refused(&e.source),
                Err(e) => {
                    return Err(KernelError::Batch {
                        what: "removing grants",
                        command: "BPF_MAP_DELETE_BATCH",
                        done: keys.len() - rest.len() + e.done,
                        total: keys.len(),
                        source: e.source,
                    });
                }
            }
        }
        for key in rest {
            match self.grants.remove(key) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(KernelError::Map {
                        what: "grant",
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn batch_refused(&mut self, why: &std::io::Error) {
        tracing::warn!(
            error = %why,
            "the kernel refused batch map operations: grants are written one by one (slower, still atomic)"
        );
        self.no_batch = true;
    }
}

/// Opens the pinned map `name` (which [`check_pins`] has compared with this build's).
fn open_pin(pin_dir: &Path, name: &'static str) -> Result<MapData, KernelError> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path).map_err(|source| KernelError::OpenPinned {
        path,
        dir: pin_dir.into(),
        source: Box::new(source),
    })
}

/// Refuses pinned maps this build's program does not declare: pins outlive the agent, so
/// an agent of another version may find maps of an older layout. aya reopens a map pinned
/// under the right name without comparing it with the object, and a grant map whose keys
/// merely grew would even pass the verifier. With `all`, a missing pin is an error too.
fn check_pins(pin_dir: &Path, all: bool) -> Result<(), KernelError> {
    for layout in &MAP_PINS {
        let path = pin_dir.join(layout.name);
        if !path.exists() {
            if all {
                return Err(KernelError::MissingPin {
                    path,
                    dir: pin_dir.into(),
                });
            }
            continue;
        }
        let info = open_pin(pin_dir, layout.name)?
            .info()
            .map_err(map_err(layout.name))?;
        let found = MapLayout {
            name: layout.name,
            kind: info.map_type().unwrap_or(MapType::Unspecified),
            key: info.key_size(),
            value: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        if found != *layout {
            return Err(KernelError::IncompatiblePin {
                path,
                found: found.describe(),
                expected: layout.describe(),
            });
        }
    }
    Ok(())
}

/// The attached program's maps.
pub struct Enforcement {
    pin_dir: PathBuf,
    attachment: Attachment,
    policy: PolicyMaps,
    images: HashMap<MapData, u32, Image>,
    events: Option<RingBuf<MapData>>,
    dropped: PerCpuArray<MapData, u64>,
    protected: HashMap<MapData, u32, u32>,
}

impl Enforcement {
    /// Reuses the pinned program and maps if they exist, so a restart leaves no gap in
    /// enforcement; otherwise loads, attaches and pins them.
    pub fn open_or_load(pin_dir: &Path) -> Result<Self, KernelError> {
        if is_pinned(pin_dir) {
            tracing::info!(pin_dir = %pin_dir.display(), "reusing pinned LSM program and maps");
            Self::open_pinned(pin_dir)
        } else {
            Self::load(pin_dir)
        }
    }

    fn load(pin_dir: &Path) -> Result<Self, KernelError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| KernelError::PinDir {
            path: pin_dir.into(),
            source,
        })?;
        let layout = KernelLayout::read()?;
        let btf = Btf::from_sys_fs().map_err(KernelError::KernelBtf)?;

        // Maps are pinned by name under pin_dir; stale pinned maps from an earlier run are
        // reused, and apply() then makes their contents right. Reused ones must have this
        // program's layout: checked before any program is loaded.
        check_pins(pin_dir, false)?;
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&btf)).default_map_pin_directory(pin_dir);
        for (name, value) in &layout.offsets {
            loader.override_global(name, value, true);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(KernelError::Object)?;
        // Every map is pinned now: also catches MAP_PINS drifting from the program.
        check_pins(pin_dir, true)?;

        // Link pins without the exec hook's are what a failed earlier load left behind:
        // they would make this one fail, so they go.
        remove_link_pins(pin_dir)?;
        // The exec hook goes last: once it is attached, governed scopes are enforced, and
        // by then every other hook is in place too. A failure part-way removes what this
        // load pinned, so no half-attached enforcement is left behind.
        for name in hook::NAMES.iter().rev() {
            if let Err(e) = attach_and_pin(&mut ebpf, &btf, pin_dir, name) {
                let _ = remove_link_pins(pin_dir);
                return Err(e);
            }
        }
        tracing::info!(pin_dir = %pin_dir.display(), hooks = hook::COUNT, "LSM programs loaded, attached and pinned");

        let mut take = |name: &'static str| -> Result<MapData, KernelError> {
            match ebpf.take_map(name) {
                Some(
                    Map::HashMap(data)
                    | Map::Array(data)
                    | Map::RingBuf(data)
                    | Map::PerCpuArray(data)
                    | Map::LruHashMap(data),
                ) => Ok(data),
                _ => Err(KernelError::MissingMap(name)),
            }
        };
        let mut policy = PolicyMaps::new(
            take(names::SCOPES)?,
            take(names::GRANTS)?,
            take(names::ACTIVE_SLOT)?,
        )?;
        policy.lock_with(pin_dir)?;
        let events =
            RingBuf::try_from(Map::RingBuf(take(names::EVENTS)?)).map_err(map_err("event"))?;
        let dropped = PerCpuArray::try_from(Map::PerCpuArray(take(names::DROPPED)?))
            .map_err(map_err("drop counter"))?;
        let protected = HashMap::try_from(Map::HashMap(take(names::PROTECTED)?))
            .map_err(map_err("protected"))?;
        let images =
            HashMap::try_from(Map::LruHashMap(take(names::IMAGES)?)).map_err(map_err("image"))?;
        Ok(Self {
            pin_dir: pin_dir.into(),
            attachment: Attachment::Loaded,
            policy,
            images,
            events: Some(events),
            dropped,
            protected,
        })
    }

    /// Opens the pinned maps of a running enforcement without loading anything.
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, KernelError> {
        check_pins(pin_dir, true)?;
        let policy = PolicyMaps::open_pinned(pin_dir)?;
        let events = RingBuf::try_from(Map::RingBuf(open_pin(pin_dir, names::EVENTS)?))
            .map_err(map_err("event"))?;
        let dropped = PerCpuArray::try_from(Map::PerCpuArray(open_pin(pin_dir, names::DROPPED)?))
            .map_err(map_err("drop counter"))?;
        let protected = HashMap::try_from(Map::HashMap(open_pin(pin_dir, names::PROTECTED)?))
            .map_err(map_err("protected"))?;
        let images = HashMap::try_from(Map::LruHashMap(open_pin(pin_dir, names::IMAGES)?))
            .map_err(map_err("image"))?;
        tracing::debug!(pin_dir = %pin_dir.display(), "opened pinned maps");
        Ok(Self {
            pin_dir: pin_dir.into(),
            attachment: Attachment::Reused,
            policy,
            images,
            events: Some(events),
            dropped,
            protected,
        })
    }

    #[must_use]
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Hands the decision ring buffer to its reader (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// What the program decides with now: scopes and the active grants.
    pub fn read(&self) -> Result<MapState, KernelError> {
        self.policy.read()
    }

    /// The image every tracked process runs now, by tgid: its exec id, its leader's start
    /// time (compare it before trusting a record: tgids are reused) and the scope and
    /// authorization it was allowed in. The map keeps the most recent
    /// `MAX_TRACKED_IMAGES` execs and records nothing for processes started before the
    /// program was loaded or outside every governed scope.
    pub fn images(&self) -> Result<StdHashMap<u32, Image>, KernelError> {
        Ok(read_all(&self.images, "image")?.into_iter().collect())
    }

    /// The kernel's id of the drop-counter map: with the boot id it tells whether a count
    /// read earlier came from this very map (a fresh load starts again from zero).
    pub fn drop_counter_id(&self) -> Result<u32, KernelError> {
        let path = self.pin_dir.join(names::DROPPED);
        aya::maps::MapInfo::from_pin(&path)
            .map(|info| info.id())
            .map_err(map_err("drop counter"))
    }

    /// Decisions the kernel could not report because the ring buffer was full.
    pub fn dropped_events(&self) -> Result<u64, KernelError> {
        let per_cpu = self.dropped.get(&0, 0).map_err(map_err("drop counter"))?;
        Ok(per_cpu.iter().sum())
    }

    /// Marks `tgid` (the agent) as a process governed tasks may not signal.
    pub fn protect(&mut self, tgid: u32) -> Result<(), KernelError> {
        self.protected
            .insert(tgid, 1, 0)
            .map_err(map_err("protected"))
    }

    /// Undoes [`Self::protect`] (the agent is stopping).
    pub fn unprotect(&mut self, tgid: u32) -> Result<(), KernelError> {
        match self.protected.remove(&tgid) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(KernelError::Map {
                what: "protected",
                source,
            }),
        }
    }

    /// Makes the maps hold exactly `desired`, switching grants atomically
    /// ([`PolicyMaps::apply`]).
    pub fn apply(&mut self, desired: &MapState) -> Result<ApplyStats, KernelError> {
        self.policy.apply(desired)
    }
}

/// Loads the program for `hook`, attaches it and pins its link.
fn attach_and_pin(
    ebpf: &mut aya::Ebpf,
    btf: &Btf,
    pin_dir: &Path,
    name: &'static str,
) -> Result<(), KernelError> {
    let refused = |source| KernelError::Program { hook: name, source };
    let program: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram(name))?
        .try_into()
        .map_err(refused)?;
    program.load(name, btf).map_err(refused)?;
    let link_id = program.attach().map_err(refused)?;
    let link = FdLink::from(program.take_link(link_id).map_err(refused)?);
    let path = link_pin(pin_dir, name);
    link.pin(&path).map_err(|source| KernelError::Pin {
        what: "program link",
        path,
        source,
    })?;
    Ok(())
}

/// Removes every program link pin in `pin_dir`; returns whether there was any.
fn remove_link_pins(pin_dir: &Path) -> Result<bool, KernelError> {
    let mut removed = false;
    for path in hook::NAMES.iter().map(|h| link_pin(pin_dir, h)) {
        match std::fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(KernelError::Unpin { path, source }),
        }
    }
    Ok(removed)
}

/// Whether the exec hook's link is pinned in `pin_dir` (it is pinned last, so its pin
/// means every hook is in place).
#[must_use]
pub fn is_pinned(pin_dir: &Path) -> bool {
    link_pin(pin_dir, hook::NAMES[0]).exists()
}

/// Stops enforcement: removes the link and map pins. Returns whether anything was pinned.
pub fn unload(pin_dir: &Path) -> Result<bool, KernelError> {
    let mut removed = remove_link_pins(pin_dir)?;
    for path in MAP_PINS.iter().map(|m| pin_dir.join(m.name)) {
        match std::fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(KernelError::Unpin { path, source }),
        }
    }
    // Only an empty directory is removed; anything else in it is not ours to delete.
    let _ = std::fs::remove_dir(pin_dir);
    if removed {
        wait_detached()?;
    }
    Ok(removed)
}

/// Waits until the kernel has let go of our programs. Sleepable programs are released
/// only after an RCU tasks-trace grace period, so for a moment after the pins go some
/// hooks still enforce while others do not; "stopped" must mean stopped.
fn wait_detached() -> Result<(), KernelError> {
    /// `BPF_PROG_TYPE_LSM` in include/uapi/linux/bpf.h (aya 0.14 does not re-export it).
    const BPF_PROG_TYPE_LSM: u32 = 29;
    const LIMIT: Duration = Duration::from_secs(30);
    let started = std::time::Instant::now();
    loop {
        let ours = aya::programs::loaded_programs()
            .flatten()
            .filter(|p| p.program_type() as u32 == BPF_PROG_TYPE_LSM)
            .filter(|p| {
                // The kernel keeps the first 15 bytes of a program's name.
                p.name_as_str()
                    .is_some_and(|n| hook::NAMES.iter().any(|h| h.get(..n.len()) == Some(n)))
            })
            .count();
        if ours == 0 {
            return Ok(());
        }
        if started.elapsed() > LIMIT {
            return Err(KernelError::StillAttached { programs: ours });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Turns a policy into map entries: resolves scopes to cgroup ids (creating missing
/// cgroups) and grant expiries to CLOCK_BOOTTIME deadlines.
pub fn resolve(policy: &Policy, cgroup_root: &Path) -> Result<MapState, KernelError> {
    let now_real = SystemTime::now();
    let now_boot = boot_time_ns()?;
    let mut state = MapState::default();
    for (path, scope) in &policy.scopes {
        let id = cgroup::ensure_scope(cgroup_root, path)?;
        let kernel_mode = match scope.mode {
            Mode::Enforce => mode::ENFORCE,
            Mode::Monitor => mode::MONITOR,
        };
        let mut flags = 0;
        if scope.allow_anonymous_exec {
            flags |= scope_flags::ALLOW_ANON_EXEC;
        }
        if scope.allow_fileless {
            flags |= scope_flags::ALLOW_FILELESS;
        }
        // Break-glass: the kernel ends it by itself at the deadline. One already past
        // (0) is no break-glass at all.
        let monitor_until_boot_ns = scope
            .monitor_until
            .map_or(0, |t| whole_second_deadline(t, now_real, now_boot));
        state.scopes.insert(
            id,
            ScopePolicy {
                mode: kernel_mode,
                flags,
                monitor_until_boot_ns,
            },
        );
        for grant in &scope.grants {
            let key = ScopedDigest {
                scope_id: id,
                digest: grant.digest.0,
            };
            let value = Grant {
                not_after_boot_ns: grant
                    .not_after
                    .map_or(u64::MAX, |t| whole_second_deadline(t, now_real, now_boot)),
                auth_serial: grant.auth_serial,
                auth_id: grant.auth_id,
            };
            // Two authorizations may grant one digest: keep the one that lives longest.
            state
                .grants
                .entry(key)
                .and_modify(|g| {
                    if value.not_after_boot_ns > g.not_after_boot_ns {
                        *g = value;
                    }
                })
                .or_insert(value);
        }
    }
    Ok(state)
}

/// CLOCK_BOOTTIME now, in nanoseconds: the clock the kernel program compares with.
pub fn boot_time_ns() -> Result<u64, KernelError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return Err(KernelError::Clock(std::io::Error::last_os_error()));
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// Converts a wall-clock deadline to CLOCK_BOOTTIME. A deadline already past maps to 0,
/// which the kernel treats as expired; a far one saturates below `u64::MAX` only when it
/// is truly unbounded.
#[must_use]
pub fn boot_deadline(not_after: SystemTime, now_real: SystemTime, now_boot_ns: u64) -> u64 {
    match not_after.duration_since(now_real) {
        Ok(left) => now_boot_ns.saturating_add(duration_ns(left)),
        Err(_) => 0,
    }
}

/// [`boot_deadline`] rounded down to a whole second of CLOCK_BOOTTIME, for map entries.
///
/// The two clocks are read a few microseconds apart and NTP slews their difference, so
/// the exact conversion of one deadline changes between two resolves; a grant whose
/// value changes is rewritten at every apply. Whole seconds make a resolve of the same
/// policy give the same entries (signed deadlines are whole seconds anyway), and
/// rounding down ends a grant up to a second early, never late.
#[must_use]
pub fn whole_second_deadline(not_after: SystemTime, now_real: SystemTime, now_boot_ns: u64) -> u64 {
    const SECOND: u64 = 1_000_000_000;
    match boot_deadline(not_after, now_real, now_boot_ns) {
        u64::MAX => u64::MAX,
        ns => ns - ns % SECOND,
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_map_to_boot_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            boot_deadline(now + Duration::from_secs(5), now, 7),
            5_000_000_007
        );
        assert_eq!(
            boot_deadline(now - Duration::from_secs(1), now, 7),
            0,
            "past: expired"
        );
        assert_eq!(boot_deadline(now, now, 7), 7, "now: expires at once");
        assert_eq!(
            boot_deadline(
                now + Duration::from_secs(u64::MAX / 1_000_000_000 + 1),
                now,
                7
            ),
            u64::MAX,
            "saturates instead of wrapping"
        );
    }

    /// Unattached maps of the program's layout; `None` (the test is skipped) when not root.
    fn maps() -> Option<PolicyMaps> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating BPF maps needs root");
            return None;
        }
        Some(PolicyMaps::create().expect("root can create plain BPF maps"))
    }

    fn state(scopes: &[(u64, u32)], grants: &[(u64, u8, u64)]) -> MapState {
        let mut s = MapState::default();
        for &(id, mode) in scopes {
            s.scopes.insert(
                id,
                ScopePolicy {
                    mode,
                    ..ScopePolicy::default()
                },
            );
        }
        for &(scope_id, d, serial) in grants {
            let grant = Grant {
                not_after_boot_ns: u64::MAX,
                auth_serial: serial,
                auth_id: [d; 16],
            };
            s.grants.insert(
                ScopedDigest {
                    scope_id,
                    digest: [d; DIGEST_LEN],
                },
                grant,
            );
        }
        s
    }

    fn slot_of(maps: &PolicyMaps) -> u32 {
        active_slot_of(maps.active_value().expect("active slot"))
    }

    /// Every key in the grant map, sorted.
    fn raw_keys(maps: &PolicyMaps) -> Vec<(u32, u64, u8)> {
        let mut keys: Vec<_> = maps
            .grants
            .keys()
            .map(|k| k.expect("key"))
            .map(|k| (k.slot, k.scope_id, k.digest[0]))
            .collect();
        keys.sort_unstable();
        keys
    }

    /// What apply promises between calls: the active slot holds exactly `desired`, the
    /// idle one only grants `desired` holds with the same value, no other slot anything.
    fn assert_slots(maps: &PolicyMaps, desired: &MapState) {
        let active = slot_of(maps);
        let mut in_active = StdHashMap::new();
        for entry in maps.grants.iter() {
            let (key, grant) = entry.expect("entry");
            let id = ScopedDigest::from(key);
            if key.slot == active {
                in_active.insert(id, grant);
            } else {
                assert_eq!(key.slot, 1 - active, "stray slot: {key:?}");
                assert_eq!(
                    desired.grants.get(&id),
                    Some(&grant),
                    "idle slot allows what the policy does not"
                );
            }
        }
        assert_eq!(in_active, desired.grants);
        assert_eq!(maps.read().expect("read"), *desired);
    }

    #[test]
    fn apply_switches_slots_and_leaves_only_the_active_set() {
        let Some(mut maps) = maps() else { return };
        let a = state(&[(10, mode::ENFORCE)], &[(10, 1, 7), (10, 2, 7)]);
        let b = state(
            &[(10, mode::ENFORCE), (11, mode::MONITOR)],
            &[(10, 2, 8), (11, 3, 8)],
        );

        let stats = maps.apply(&a).expect("apply a");
        assert!(stats.switched_in.is_some());
        assert_slots(&maps, &a);
        let first = slot_of(&maps);
        assert_eq!(raw_keys(&maps), vec![(first, 10, 1), (first, 10, 2)]);

        let stats = maps.apply(&b).expect("apply b");
        assert_eq!((stats.removed_grants, stats.removed_scopes), (1, 0));
        assert!(stats.switched_in.is_some());
        assert_slots(&maps, &b);
        let second = slot_of(&maps);
        assert_ne!(first, second, "a new set goes into the other slot");
        // (10, 2) changed its authorization: the old value may not stay behind.
        assert_eq!(raw_keys(&maps), vec![(second, 10, 2), (second, 11, 3)]);

        let stats = maps.apply(&b).expect("apply b again");
        assert_eq!(stats.switched_in, None, "nothing to switch");
        assert_eq!(slot_of(&maps), second);

        // One grant revoked: the shared ones stay in the idle slot for the next switch.
        let c = state(&[(10, mode::ENFORCE), (11, mode::MONITOR)], &[(10, 2, 8)]);
        maps.apply(&c).expect("revoke one");
        assert_slots(&maps, &c);
        assert_eq!(raw_keys(&maps), vec![(0, 10, 2), (1, 10, 2)]);
        maps.apply(&b).expect("back to b");
        assert_slots(&maps, &b);

        let only_scopes = state(&[(11, mode::ENFORCE)], &[(11, 3, 8)]);
        let stats = maps.apply(&only_scopes).expect("drop a scope");
        assert_eq!(stats.removed_scopes, 1);
        assert_slots(&maps, &only_scopes);

        maps.apply(&MapState::default()).expect("empty");
        assert!(raw_keys(&maps).is_empty());
    }

    #[test]
    fn apply_after_a_crash_clears_what_the_dead_agent_left() {
        let Some(mut maps) = maps() else { return };
        let old = state(&[(10, mode::ENFORCE)], &[(10, 1, 1), (10, 2, 1)]);
        maps.apply(&old).expect("apply");
        let active = slot_of(&maps);
        let idle = 1 - active;
        // A half-written next set in the idle slot, including a grant no policy holds any
        // more, and a key in a slot no set uses.
        let forever = Grant {
            not_after_boot_ns: u64::MAX,
            ..Grant::default()
        };
        for (slot, d) in [(idle, 2), (idle, 9), (5, 4)] {
            maps.grants
                .insert(GrantKey::new(10, slot, [d; DIGEST_LEN]), forever, 0)
                .expect("insert");
        }

        let desired = state(&[(10, mode::ENFORCE)], &[(10, 2, 2), (10, 3, 2)]);
        let mut restarted = maps.reopen().expect("reopen");
        restarted.apply(&desired).expect("apply after crash");
        assert_slots(&restarted, &desired);
        let now = slot_of(&restarted);
        assert_eq!(now, idle);

        // Died after the flip, before the old set was cleared: both slots full.
        for d in [7, 8] {
            restarted
                .grants
                .insert(GrantKey::new(10, 1 - now, [d; DIGEST_LEN]), forever, 0)
                .expect("insert");
        }
        let mut again = restarted.reopen().expect("reopen");
        let stats = again.apply(&desired).expect("same policy");
        assert_eq!(stats.switched_in, None);
        assert_slots(&again, &desired);
        assert_eq!(raw_keys(&again), vec![(now, 10, 2), (now, 10, 3)]);
    }

    #[test]
    fn a_write_by_another_handle_is_noticed() {
        let Some(mut first) = maps() else { return };
        let a = state(&[(10, mode::ENFORCE)], &[(10, 1, 1), (10, 2, 1)]);
        let b = state(&[(10, mode::ENFORCE)], &[(10, 2, 1), (10, 3, 1)]);
        first.apply(&a).expect("a");
        let mut second = first.reopen().expect("reopen");
        second.apply(&b).expect("b");
        // `first` remembers the maps holding `a`: only the moved value tells it otherwise.
        assert!(first.apply(&a).expect("a again").switched_in.is_some());
        assert_slots(&first, &a);
        assert!(second.apply(&b).expect("b again").switched_in.is_some());
        assert_slots(&second, &b);
    }

    #[test]
    fn the_active_value_counts_writes_and_keeps_its_slot_bit() {
        assert_eq!(next_value(0, 1), 3);
        assert_eq!(next_value(3, 0), 4);
        assert_eq!(next_value(4, 0), 6);
        assert_eq!(active_slot_of(next_value(u32::MAX, 0)), 0, "wraps");
        assert_eq!(active_slot_of(next_value(u32::MAX, 1)), 1, "wraps");
    }

    #[test]
    fn element_wise_fallback_gives_the_same_maps() {
        let Some(mut maps) = maps() else { return };
        maps.no_batch = true;
        let a = state(&[(10, mode::ENFORCE)], &[(10, 1, 1), (10, 2, 1)]);
        let b = state(&[(10, mode::ENFORCE)], &[(10, 2, 2), (10, 3, 2)]);
        maps.apply(&a).expect("a");
        maps.apply(&b).expect("b");
        assert_slots(&maps, &b);
        maps.apply(&a).expect("a again");
        assert_slots(&maps, &a);
    }

    #[test]
    fn a_policy_larger_than_half_the_grant_map_is_refused() {
        let Some(mut maps) = maps() else { return };
        let mut big = MapState::default();
        for i in 0..=u64::from(MAX_POLICY_GRANTS) {
            let mut digest = [0; DIGEST_LEN];
            digest[..8].copy_from_slice(&i.to_le_bytes());
            big.grants.insert(
                ScopedDigest {
                    scope_id: 1,
                    digest,
                },
                Grant::default(),
            );
        }
        let err = maps.apply(&big).expect_err("too many");
        let text = err.to_string();
        assert!(matches!(err, KernelError::TooManyGrants { .. }), "{err:?}");
        for n in [MAX_POLICY_GRANTS + 1, MAX_POLICY_GRANTS, MAX_GRANTS] {
            assert!(text.contains(&n.to_string()), "{text}");
        }
        assert!(
            raw_keys(&maps).is_empty(),
            "refused before writing anything"
        );
    }

    #[test]
    fn whole_maps_are_read_in_batches() {
        let Some(_) = maps() else { return };
        let layout = layout_of(names::IMAGES).expect("layout");
        let fd = bpf_sys::create_map(
            names::IMAGES,
            layout.kind as u32,
            layout.key,
            layout.value,
            layout.max_entries,
            layout.flags,
        )
        .expect("create");
        let mut images: HashMap<MapData, u32, Image> =
            HashMap::try_from(Map::LruHashMap(MapData::from_fd(fd).expect("map"))).expect("typed");
        assert!(read_all(&images, "image").expect("read empty").is_empty());
        // More entries than one batch holds.
        let mut want = StdHashMap::new();
        for tgid in 1..=10_000u32 {
            let image = Image {
                exec_id: u64::from(tgid) * 3,
                scope_id: 77,
                auth_serial: u64::from(tgid % 5),
                auth_id: [u8::try_from(tgid % 251).expect("small"); 16],
                ..Image::default()
            };
            images.insert(tgid, image, 0).expect("insert");
            want.insert(tgid, image);
        }
        let got: StdHashMap<u32, Image> = read_all(&images, "image")
            .expect("read")
            .into_iter()
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn map_pins_name_every_map_once() {
        for (i, layout) in MAP_PINS.iter().enumerate() {
            assert!(
                MAP_PINS[i + 1..].iter().all(|l| l.name != layout.name),
                "{}",
                layout.name
            );
        }
        assert!(layout_of(names::ACTIVE_SLOT).is_some());
    }

    #[test]
    fn pins_of_another_layout_are_refused_with_a_way_out() {
        let Some(maps) = maps() else { return };
        let dir = bpffs_dir();
        let Some(dir) = dir else { return };
        // The grant map of the old layout: 40-byte keys, no slot.
        let old = bpf_sys::create_map(
            "ENFORCER_GRANTS",
            MapType::Hash as u32,
            40,
            32,
            MAX_GRANTS,
            1,
        )
        .expect("create");
        MapData::from_fd(old)
            .expect("map")
            .pin(dir.path().join(names::GRANTS))
            .expect("pin");
        maps.scopes
            .map()
            .pin(dir.path().join(names::SCOPES))
            .expect("pin");
        let err = check_pins(dir.path(), false).expect_err("old layout");
        let text = err.to_string();
        assert!(
            text.contains("enforcer unload") && text.contains("key 40 bytes"),
            "{text}"
        );
        let err = check_pins(dir.path(), true).expect_err("missing pins");
        assert!(err.to_string().contains("enforcer unload"), "{err}");
    }

    #[test]
    fn pinned_maps_take_turns_and_stay_consistent() {
        let Some(maps) = maps() else { return };
        let Some(dir) = bpffs_dir() else { return };
        maps.scopes
            .map()
            .pin(dir.path().join(names::SCOPES))
            .expect("pin");
        maps.grants
            .map()
            .pin(dir.path().join(names::GRANTS))
            .expect("pin");
        maps.active
            .map()
            .pin(dir.path().join(names::ACTIVE_SLOT))
            .expect("pin");
        let mut one = PolicyMaps::open_pinned(dir.path()).expect("open");
        let mut two = PolicyMaps::open_pinned(dir.path()).expect("open");
        let a = state(&[(10, mode::ENFORCE)], &[(10, 1, 1)]);
        let b = state(&[(10, mode::MONITOR)], &[(10, 2, 1)]);
        one.apply(&a).expect("a");
        // Another process holds the lock: an apply waits for it.
        let held = std::fs::File::open(dir.path()).expect("open dir");
        // SAFETY: flock on a descriptor we own.
        assert_eq!(
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
            0
        );
        let want = b.clone();
        let waiter = std::thread::spawn(move || {
            two.apply(&want).expect("b");
            two
        });
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            one.read().expect("read"),
            a,
            "the waiting apply has not written"
        );
        drop(held);
        let two = waiter.join().expect("thread");
        assert_slots(&two, &b);
        one.apply(&a).expect("a again");
        assert_slots(&one, &a);
    }

    /// A private bpffs mount, unmounted when dropped; `None` when bpffs cannot be mounted.
    fn bpffs_dir() -> Option<BpfFs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let target =
            std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: NUL-terminated strings we own.
        let r = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            eprintln!(
                "skipped: cannot mount bpffs: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(BpfFs(dir))
    }

    struct BpfFs(tempfile::TempDir);

    impl BpfFs {
        fn path(&self) -> &Path {
            self.0.path()
        }
    }

    impl Drop for BpfFs {
        fn drop(&mut self) {
            if let Ok(target) = std::ffi::CString::new(self.0.path().as_os_str().as_encoded_bytes())
            {
                // SAFETY: a NUL-terminated path we mounted on.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }

    #[test]
    fn map_deadlines_are_whole_seconds_and_never_later() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let in_5s = now + Duration::from_secs(5);
        assert_eq!(whole_second_deadline(in_5s, now, 7), 5_000_000_000);
        assert_eq!(
            whole_second_deadline(in_5s, now, 999_999_999),
            5_000_000_000
        );
        assert_eq!(
            whole_second_deadline(in_5s, now, 1_000_000_000),
            6_000_000_000
        );
        assert_eq!(
            whole_second_deadline(now - Duration::from_secs(1), now, 7),
            0
        );
        let far = now + Duration::from_secs(u64::MAX / 1_000_000_000 + 1);
        assert_eq!(
            whole_second_deadline(far, now, 7),
            u64::MAX,
            "never expires stays so"
        );
    }

    #[test]
    fn resolve_hands_break_glass_deadlines_to_the_kernel() {
        use crate::policy::{ScopePath, ScopeSpec};
        // A plain directory with a cgroup.procs file stands in for a cgroup.
        let root = tempfile::tempdir().expect("tempdir");
        let scope = |name: &str| {
            std::fs::create_dir(root.path().join(name)).expect("mkdir");
            std::fs::write(root.path().join(name).join("cgroup.procs"), "").expect("procs");
            format!("/{name}").parse::<ScopePath>().expect("scope")
        };
        let now = SystemTime::now();
        let mut policy = Policy::default();
        let spec = |monitor_until| ScopeSpec {
            monitor_until,
            ..ScopeSpec::default()
        };
        policy
            .scopes
            .insert(scope("open"), spec(Some(now + Duration::from_secs(600))));
        policy
            .scopes
            .insert(scope("over"), spec(Some(now - Duration::from_secs(1))));
        policy.scopes.insert(scope("none"), spec(None));
        let before = boot_time_ns().expect("clock");
        let state = resolve(&policy, root.path()).expect("resolve");
        let after = boot_time_ns().expect("clock");
        let until = |name: &str| {
            let id = cgroup::id_of(&root.path().join(name), name).expect("id");
            let policy = state.scopes[&id];
            assert_eq!(
                policy.mode,
                mode::ENFORCE,
                "break-glass is a deadline, not a mode"
            );
            policy.monitor_until_boot_ns
        };
        let open = until("open");
        let second = 1_000_000_000;
        assert!(
            open % second == 0 && open > before + 598 * second && open <= after + 600 * second,
            "{open}"
        );
        assert_eq!(until("over"), 0, "a past deadline is none");
        assert_eq!(until("none"), 0);
    }

    #[test]
    fn boot_clock_moves_forward() {
        let a = boot_time_ns().expect("clock");
        let b = boot_time_ns().expect("clock");
        assert!(b >= a && a > 0);
    }
}
