//! Load, attach and pin the programs, and the way out: unloading removes the pins and
//! waits until the kernel has detached every program.

use std::path::Path;
use std::time::Duration;

use aya::maps::{HashMap, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::{FEntry, Lsm, links::FdLink};
use aya::{Btf, EbpfLoader};
use enforcer_common::{hook, names};

use super::layout::KernelLayout;
use super::maps::{PolicyMaps, map_err};
use super::pins::{MAP_PINS, check_pins, link_pin};
use super::{Attachment, Enforcement, KernelError};

/// The kernel programs, built by build.rs and embedded so the agent is self-contained.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer.bpf.o"));

/// Loads the program for `hook`, attaches it and pins its link.
pub(super) fn attach_and_pin(
    ebpf: &mut aya::Ebpf,
    btf: &Btf,
    pin_dir: &Path,
    index: usize,
    name: &'static str,
) -> Result<(), KernelError> {
    let traced = hook::is_traced(index);
    let refused = |source| KernelError::Program {
        hook: name,
        traced,
        source,
    };
    let program = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram(name))?;
    // LSM programs and fentry ones load, attach and hand over their link alike, through
    // methods of the same names that no aya trait shares.
    macro_rules! attach {
        ($kind:ty) => {{
            let program: &mut $kind = program.try_into().map_err(refused)?;
            program.load(name, btf).map_err(refused)?;
            let link_id = program.attach().map_err(refused)?;
            FdLink::from(program.take_link(link_id).map_err(refused)?)
        }};
    }
    let link = if traced {
        attach!(FEntry)
    } else {
        attach!(Lsm)
    };
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
    /// `BPF_PROG_TYPE_TRACING` (fentry) and `BPF_PROG_TYPE_LSM` in
    /// include/uapi/linux/bpf.h (aya 0.14 does not re-export them).
    const OUR_TYPES: [u32; 2] = [26, 29];
    const LIMIT: Duration = Duration::from_secs(30);
    let started = std::time::Instant::now();
    loop {
        let ours = aya::programs::loaded_programs()
            .flatten()
            .filter(|p| OUR_TYPES.contains(&(p.program_type() as u32)))
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

impl Enforcement {
    pub(super) fn load(pin_dir: &Path) -> Result<Self, KernelError> {
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
        for (index, name) in hook::NAMES.iter().enumerate().rev() {
            if !layout.hooks.contains(name) {
                tracing::debug!(hook = name, "this kernel has no such hook; not attached");
                continue;
            }
            if let Err(e) = attach_and_pin(&mut ebpf, &btf, pin_dir, index, name) {
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
            take(names::INODES)?,
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
}
