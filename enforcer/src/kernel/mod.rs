//! The kernel side as the agent sees it: load, attach and pin the BPF LSM program, reuse
//! a pinned one, and make its maps hold exactly a [`Policy`](crate::authz::policy::Policy).
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
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray, RingBuf};
use enforcer_common::{ExecEvent, Image, names};

use crate::host::cgroup::CgroupError;
use crate::kernel::btf::BtfError;
use maps::{is_not_found, map_err, read_all};
use pins::{check_links, check_pins, open_pin};

mod bpf_sys;
pub mod btf;
pub mod digest_cache;
mod layout;
mod load;
mod maps;
mod pins;
mod resolve;
#[cfg(test)]
mod testutil;

pub use load::{is_pinned, unload};
pub use maps::{ApplyStats, MapState, PolicyMaps, ScopedDigest};
pub(crate) use resolve::EMPTY_CONTENT;
pub use resolve::{boot_deadline, resolve, whole_second_deadline};

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
    #[error("the kernel refused the {} for {hook}: {source}. {}", program_kind(*traced), program_needs(*traced))]
    Program {
        hook: &'static str,
        /// A traced kernel function (fentry), not an LSM hook.
        traced: bool,
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
        "pin {path} is missing: the pins in {dir} were left by an enforcer of another \
         version. Run `enforcer unload` (this stops enforcement) and start the agent again"
    )]
    MissingPin { path: PathBuf, dir: PathBuf },
    #[error(
        "pin {path} is gone: the programs were unloaded from outside the agent (`enforcer \
         unload`, or the pins removed), so nothing is enforced until the agent starts again"
    )]
    Unpinned { path: PathBuf },
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

/// What [`KernelError::Program`] failed to load.
fn program_kind(traced: bool) -> &'static str {
    if traced {
        "fentry program"
    } else {
        "LSM program"
    }
}

/// What the kernel needs for that kind of program.
fn program_needs(traced: bool) -> &'static str {
    if traced {
        "fentry programs need BTF and BPF trampolines (an x86_64 kernel with dynamic ftrace), \
         and the function must be traceable (listed in \
         /sys/kernel/tracing/available_filter_functions)"
    } else {
        "BPF LSM programs need a 5.18+ kernel with CONFIG_BPF_LSM, `bpf` in the active LSM \
         list and IMA (bpf_ima_file_hash)"
    }
}

/// How the program came to be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Loaded and attached by this process, and pinned.
    Loaded,
    /// Found pinned and reused: enforcement never stopped.
    Reused,
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

    /// Opens the pinned maps of a running enforcement without loading anything.
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, KernelError> {
        check_pins(pin_dir, true)?;
        // Pins of an older enforcer lack the links of hooks added since: reusing them would
        // leave those rules unenforced, silently.
        check_links(pin_dir)?;
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

    /// The decisions waiting in the ring buffer, consumed: for diagnostics before the agent
    /// serves (the self-test's refusals), never while it audits.
    pub fn drain_decisions(&mut self) -> Vec<ExecEvent> {
        let mut out = Vec::new();
        if let Some(ring) = self.events.as_mut() {
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<ExecEvent>() {
                    // SAFETY: ExecEvent is plain repr(C) data valid for any bit pattern, and
                    // the length was checked; read_unaligned copes with any alignment.
                    out.push(unsafe { item.as_ptr().cast::<ExecEvent>().read_unaligned() });
                }
            }
        }
        out
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

    /// Whether every program link and map is still pinned: a pinned link keeps its
    /// program attached, and an outside `enforcer unload` removes the pins.
    pub fn check_attached(&self) -> Result<(), KernelError> {
        // The agent pinned them all itself: one missing now was taken away, whatever
        // `MissingPin` guesses at startup about who left a partial set.
        check_links(&self.pin_dir)
            .and_then(|()| pins::check_map_pins_exist(&self.pin_dir))
            .map_err(|e| match e {
                KernelError::MissingPin { path, .. } => KernelError::Unpinned { path },
                other => other,
            })
    }

    /// Whether the maps still hold `desired`, as this process last applied it. `Some`
    /// says what differs ([`PolicyMaps::check_applied`]).
    pub fn check_applied(&self, desired: &MapState) -> Result<Option<String>, KernelError> {
        self.policy.check_applied(desired)
    }

    /// Makes the maps hold exactly `desired`, switching grants atomically
    /// ([`PolicyMaps::apply`]).
    pub fn apply(&mut self, desired: &MapState) -> Result<ApplyStats, KernelError> {
        self.policy.apply(desired)
    }
}

#[cfg(test)]
mod tests {
    use super::KernelError;

    #[test]
    fn a_refused_program_says_what_kind_it_is_and_what_that_needs() {
        let refused = |hook, traced| {
            KernelError::Program {
                hook,
                traced,
                source: aya::programs::ProgramError::NotLoaded,
            }
            .to_string()
        };
        let lsm = refused("mmap_addr", false);
        assert!(
            lsm.starts_with("the kernel refused the LSM program for mmap_addr:"),
            "{lsm}"
        );
        assert!(lsm.contains("CONFIG_BPF_LSM"), "{lsm}");
        let traced = refused("vm_brk_flags", true);
        assert!(
            traced.starts_with("the kernel refused the fentry program for vm_brk_flags:"),
            "{traced}"
        );
        assert!(traced.contains("available_filter_functions"), "{traced}");
        assert!(!traced.contains("CONFIG_BPF_LSM"), "{traced}");
    }
}
