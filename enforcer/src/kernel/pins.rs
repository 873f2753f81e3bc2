//! The pin ABI: what the agent leaves in bpffs (a link per hook, and the maps by name),
//! and the check that pinned maps have this build's layout. Pins outlive the agent, so
//! an agent of another version must never use maps it does not understand.

use std::path::{Path, PathBuf};

use aya::maps::{MapData, MapType};
use enforcer_common::{
    EVENTS_BYTES, GrantEntry, GrantKey, Image, InodeKey, MAX_GRANTS, MAX_INODE_RULES,
    MAX_PROTECTED, MAX_SCOPES, MAX_TRACKED_IMAGES, ScopePolicy, hook, names,
};

use super::maps::map_err;
use super::{KernelError, bpf_sys};

/// What a pinned map must look like to be the map this build's program declares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct MapLayout {
    pub(super) name: &'static str,
    pub(super) kind: MapType,
    pub(super) key: u32,
    pub(super) value: u32,
    pub(super) max_entries: u32,
    pub(super) flags: u32,
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
pub(super) const MAP_PINS: [MapLayout; 9] = [
    MapLayout::new::<u64, ScopePolicy>(names::SCOPES, MapType::Hash, MAX_SCOPES, 0),
    MapLayout::new::<GrantKey, GrantEntry>(
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
    MapLayout::new::<InodeKey, u32>(names::INODES, MapType::Hash, MAX_INODE_RULES, 0),
];

pub(super) fn layout_of(name: &str) -> Option<&'static MapLayout> {
    MAP_PINS.iter().find(|l| l.name == name)
}

pub(super) fn link_pin(pin_dir: &Path, hook: &str) -> PathBuf {
    pin_dir.join(format!("link-{hook}"))
}

/// Opens the pinned map `name` (which [`check_pins`] has compared with this build's).
pub(super) fn open_pin(pin_dir: &Path, name: &'static str) -> Result<MapData, KernelError> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path).map_err(|source| KernelError::OpenPinned {
        path,
        dir: pin_dir.into(),
        source: Box::new(source),
    })
}

/// Fails on the first map of this build that is not pinned in `pin_dir`.
pub(super) fn check_map_pins_exist(pin_dir: &Path) -> Result<(), KernelError> {
    missing(pin_dir, MAP_PINS.iter().map(|m| pin_dir.join(m.name)))
}

/// Fails on the first program link that should be pinned in `pin_dir` and is not (the
/// optional hooks' links may be absent: not every kernel has those hooks).
pub(super) fn check_links(pin_dir: &Path) -> Result<(), KernelError> {
    let required = hook::NAMES
        .iter()
        .enumerate()
        .filter(|(index, _)| !hook::OPTIONAL.iter().any(|&o| o as usize == *index))
        .map(|(_, name)| link_pin(pin_dir, name));
    missing(pin_dir, required)
}

/// `MissingPin` for the first of `paths` that does not exist.
fn missing(pin_dir: &Path, mut paths: impl Iterator<Item = PathBuf>) -> Result<(), KernelError> {
    match paths.find(|p| !p.exists()) {
        Some(path) => Err(KernelError::MissingPin {
            path,
            dir: pin_dir.into(),
        }),
        None => Ok(()),
    }
}

/// Refuses pinned maps this build's program does not declare: pins outlive the agent, so
/// an agent of another version may find maps of an older layout. aya reopens a map pinned
/// under the right name without comparing it with the object, and a grant map whose keys
/// merely grew would even pass the verifier. With `all`, a missing pin is an error too.
pub(super) fn check_pins(pin_dir: &Path, all: bool) -> Result<(), KernelError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use aya::maps::IterableMap as _;

    use crate::kernel::testutil::{bpffs_dir, maps};

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
}
