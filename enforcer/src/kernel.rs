//! The kernel side as the agent sees it: load, attach and pin the BPF LSM program, reuse
//! a pinned one, and make its maps hold exactly a [`Policy`].
//!
//! Everything is pinned under one directory (default `/sys/fs/bpf/enforcer`): the link
//! keeps the program attached and the maps keep their contents after the agent exits, so
//! enforcement does not depend on the agent being alive. Removing the pins is the only
//! way to stop it ([`unload`]).

use std::collections::HashMap as StdHashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{Lsm, links::FdLink};
use aya::{Btf, EbpfLoader};
use enforcer_common::{Grant, GrantKey, ScopePolicy, hook, mode, names, scope_flags};

use crate::btf::{Btf as KernelBtf, BtfError};
use crate::cgroup::{self, CgroupError};
use crate::policy::{Mode, Policy};

/// Default pin directory on bpffs.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/enforcer";
/// Maps the program pins (by name) in the pin directory.
const MAP_PINS: [&str; 7] = [
    names::SCOPES,
    names::GRANTS,
    names::EVENTS,
    names::DROPPED,
    names::EXEC_SEQ,
    names::IMAGES,
    names::PROTECTED,
];

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
            (names::BPRM_FILE_OFFSET, btf.pointer_member_offset("linux_binprm", "file", Some("file"))?),
            (names::BPRM_INTERP_OFFSET, btf.pointer_member_offset("linux_binprm", "interp", None)?),
            (names::TASK_REAL_PARENT_OFFSET, task("real_parent")?),
            (names::TASK_GROUP_LEADER_OFFSET, task("group_leader")?),
            (names::TASK_TGID_OFFSET, btf.int_member_offset("task_struct", "tgid", 4)?),
            (names::TASK_START_TIME_OFFSET, btf.int_member_offset("task_struct", "start_time", 8)?),
            (names::FILE_INODE_OFFSET, btf.pointer_member_offset("file", "f_inode", Some("inode"))?),
            (names::FILE_DENTRY_OFFSET, {
                // `f_path` is an embedded `struct path`; its `dentry` pointer is inside it.
                let path = btf.struct_member_offset("file", "f_path", "path")?;
                path + btf.pointer_member_offset("path", "dentry", Some("dentry"))?
            }),
            (names::DENTRY_NAME_OFFSET, {
                let qstr = btf.struct_member_offset("dentry", "d_name", "qstr")?;
                qstr + btf.pointer_member_offset("qstr", "name", None)?
            }),
            (names::INODE_NLINK_OFFSET, btf.int_member_offset("inode", "i_nlink", 4)?),
            (names::VMA_FILE_OFFSET, btf.pointer_member_offset("vm_area_struct", "vm_file", Some("file"))?),
            (names::VMA_FLAGS_OFFSET, btf.int_member_offset("vm_area_struct", "vm_flags", 8)?),
            (names::FILE_MODE_OFFSET, btf.int_member_offset("file", "f_mode", 4)?),
            (names::INODE_SB_OFFSET, btf.pointer_member_offset("inode", "i_sb", Some("super_block"))?),
            (names::SB_MAGIC_OFFSET, btf.int_member_offset("super_block", "s_magic", 8)?),
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
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer.bpf.o"));

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
    #[error("cannot open pinned map {path}: {source} (remove {dir} with `enforcer unload` to start afresh)")]
    OpenPinned {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: MapError,
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
}

/// How the program came to be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Loaded and attached by this process, and pinned.
    Loaded,
    /// Found pinned and reused: enforcement never stopped.
    Reused,
}

/// The maps as the kernel holds them, keyed for diffing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapState {
    pub scopes: StdHashMap<u64, ScopePolicy>,
    pub grants: StdHashMap<GrantKey, Grant>,
}

/// What one [`Enforcement::apply`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub scopes: usize,
    pub grants: usize,
    pub removed_scopes: usize,
    pub removed_grants: usize,
}

/// The attached program's maps.
pub struct Enforcement {
    pin_dir: PathBuf,
    attachment: Attachment,
    scopes: HashMap<MapData, u64, ScopePolicy>,
    grants: HashMap<MapData, GrantKey, Grant>,
    events: Option<RingBuf<MapData>>,
    dropped: PerCpuArray<MapData, u64>,
    protected: HashMap<MapData, u32, u32>,
}

fn map_err(what: &'static str) -> impl Fn(MapError) -> KernelError {
    move |source| KernelError::Map { what, source }
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
        std::fs::create_dir_all(pin_dir)
            .map_err(|source| KernelError::PinDir { path: pin_dir.into(), source })?;
        let layout = KernelLayout::read()?;
        let btf = Btf::from_sys_fs().map_err(KernelError::KernelBtf)?;

        // Maps are pinned by name under pin_dir; stale pinned maps from an earlier run are
        // reused, and apply() then makes their contents right.
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&btf)).default_map_pin_directory(pin_dir);
        for (name, value) in &layout.offsets {
            loader.override_global(*name, value, true);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(KernelError::Object)?;

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

        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(KernelError::MissingMap(name));
        let scopes = HashMap::try_from(take(names::SCOPES)?).map_err(map_err("scope"))?;
        let grants = HashMap::try_from(take(names::GRANTS)?).map_err(map_err("grant"))?;
        let events = RingBuf::try_from(take(names::EVENTS)?).map_err(map_err("event"))?;
        let dropped = PerCpuArray::try_from(take(names::DROPPED)?).map_err(map_err("drop counter"))?;
        let protected = HashMap::try_from(take(names::PROTECTED)?).map_err(map_err("protected"))?;
        Ok(Self {
            pin_dir: pin_dir.into(),
            attachment: Attachment::Loaded,
            scopes,
            grants,
            events: Some(events),
            dropped,
            protected,
        })
    }

    /// Opens the pinned maps of a running enforcement without loading anything.
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, KernelError> {
        let open = |name: &'static str| {
            let path = pin_dir.join(name);
            MapData::from_pin(&path).map_err(|source| KernelError::OpenPinned {
                path,
                dir: pin_dir.into(),
                source,
            })
        };
        let scopes = HashMap::try_from(Map::HashMap(open(names::SCOPES)?)).map_err(map_err("scope"))?;
        let grants = HashMap::try_from(Map::HashMap(open(names::GRANTS)?)).map_err(map_err("grant"))?;
        let events = RingBuf::try_from(Map::RingBuf(open(names::EVENTS)?)).map_err(map_err("event"))?;
        let dropped = PerCpuArray::try_from(Map::PerCpuArray(open(names::DROPPED)?))
            .map_err(map_err("drop counter"))?;
        let protected =
            HashMap::try_from(Map::HashMap(open(names::PROTECTED)?)).map_err(map_err("protected"))?;
        tracing::debug!(pin_dir = %pin_dir.display(), "opened pinned maps");
        Ok(Self {
            pin_dir: pin_dir.into(),
            attachment: Attachment::Reused,
            scopes,
            grants,
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

    /// What the maps hold now.
    pub fn read(&self) -> Result<MapState, KernelError> {
        let scopes = self.scopes.iter().collect::<Result<_, _>>().map_err(map_err("scope"))?;
        let grants = self.grants.iter().collect::<Result<_, _>>().map_err(map_err("grant"))?;
        Ok(MapState { scopes, grants })
    }

    /// Decisions the kernel could not report because the ring buffer was full.
    pub fn dropped_events(&self) -> Result<u64, KernelError> {
        let per_cpu = self.dropped.get(&0, 0).map_err(map_err("drop counter"))?;
        Ok(per_cpu.iter().sum())
    }

    /// Marks `tgid` (the agent) as a process governed tasks may not signal.
    pub fn protect(&mut self, tgid: u32) -> Result<(), KernelError> {
        self.protected.insert(tgid, 1, 0).map_err(map_err("protected"))
    }

    /// Undoes [`Self::protect`] (the agent is stopping).
    pub fn unprotect(&mut self, tgid: u32) -> Result<(), KernelError> {
        match self.protected.remove(&tgid) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(KernelError::Map { what: "protected", source }),
        }
    }

    /// Makes the maps hold exactly `desired`.
    ///
    /// The order is what keeps every moment safe: new and changed grants go in first, so a
    /// still-valid grant is never missing; scopes next, so a new scope never governs before
    /// its grants exist; stale scopes and grants go last.
    pub fn apply(&mut self, desired: &MapState) -> Result<ApplyStats, KernelError> {
        let current = self.read()?;
        for (key, grant) in &desired.grants {
            if current.grants.get(key) != Some(grant) {
                self.grants.insert(key, grant, 0).map_err(map_err("grant"))?;
            }
        }
        for (id, policy) in &desired.scopes {
            if current.scopes.get(id) != Some(policy) {
                self.scopes.insert(id, policy, 0).map_err(map_err("scope"))?;
            }
        }
        let mut stats = ApplyStats {
            scopes: desired.scopes.len(),
            grants: desired.grants.len(),
            ..ApplyStats::default()
        };
        for id in current.scopes.keys().filter(|id| !desired.scopes.contains_key(id)) {
            self.scopes.remove(id).map_err(map_err("scope"))?;
            stats.removed_scopes += 1;
        }
        for key in current.grants.keys().filter(|k| !desired.grants.contains_key(k)) {
            self.grants.remove(key).map_err(map_err("grant"))?;
            stats.removed_grants += 1;
        }
        Ok(stats)
    }
}

/// Loads the program for `hook`, attaches it and pins its link.
fn attach_and_pin(ebpf: &mut aya::Ebpf, btf: &Btf, pin_dir: &Path, name: &'static str) -> Result<(), KernelError> {
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
    link.pin(&path).map_err(|source| KernelError::Pin { what: "program link", path, source })?;
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
    for path in MAP_PINS.iter().map(|m| pin_dir.join(m)) {
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
                p.name_as_str().is_some_and(|n| hook::NAMES.iter().any(|h| h.get(..n.len()) == Some(n)))
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
        state.scopes.insert(id, ScopePolicy { mode: kernel_mode, flags });
        for grant in &scope.grants {
            let key = GrantKey { scope_id: id, digest: grant.digest.0 };
            let value = Grant {
                not_after_boot_ns: grant
                    .not_after
                    .map_or(u64::MAX, |t| boot_deadline(t, now_real, now_boot)),
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
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
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

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_map_to_boot_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(boot_deadline(now + Duration::from_secs(5), now, 7), 5_000_000_007);
        assert_eq!(boot_deadline(now - Duration::from_secs(1), now, 7), 0, "past: expired");
        assert_eq!(boot_deadline(now, now, 7), 7, "now: expires at once");
        assert_eq!(
            boot_deadline(now + Duration::from_secs(u64::MAX / 1_000_000_000 + 1), now, 7),
            u64::MAX,
            "saturates instead of wrapping"
        );
    }

    #[test]
    fn boot_clock_moves_forward() {
        let a = boot_time_ns().expect("clock");
        let b = boot_time_ns().expect("clock");
        assert!(b >= a && a > 0);
    }
}
