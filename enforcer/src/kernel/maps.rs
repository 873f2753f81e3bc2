//! The maps that hold a policy, and the atomic switch of a new one into them: the grant
//! map holds two sets (`GrantKey::slot`); [`PolicyMaps::apply`] fills the idle one while
//! the active one keeps deciding, then flips one array element.

use std::collections::HashMap as StdHashMap;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::time::Duration;

use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError};
use enforcer_common::{
    DIGEST_LEN, GRANT_SLOTS, GrantEntry, GrantKey, InodeKey, MAX_GRANTS, MAX_POLICY_GRANTS,
    ScopePolicy, active_slot_of, names,
};

use super::pins::{layout_of, open_pin};
use super::{KernelError, bpf_sys};

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
    pub grants: StdHashMap<ScopedDigest, GrantEntry>,
    /// Inode rules (`enforcer_common::inode_rule` bits) by inode and scope.
    pub inodes: StdHashMap<InodeKey, u32>,
}

/// What one [`Enforcement::apply`](super::Enforcement::apply) changed.
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

pub(super) fn map_err(what: &'static str) -> impl Fn(MapError) -> KernelError {
    move |source| KernelError::Map { what, source }
}

/// A delete of a key that is not there: aya reports the kernel's ENOENT as a syscall error.
pub(super) fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Every entry of a hash map, in batches (element by element where the kernel has no
/// batch lookup).
pub(super) fn read_all<K: aya::Pod + Default, V: aya::Pod + Default>(
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
    held: [StdHashMap<ScopedDigest, GrantEntry>; GRANT_SLOTS as usize],
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
/// [`Enforcement`](super::Enforcement) holds the pinned ones. [`PolicyMaps::create`] makes unattached maps of
/// the same layout, so tests and the host benchmark run the agent's own map code on hosts
/// that cannot load LSM programs.
pub struct PolicyMaps {
    pub(super) scopes: HashMap<MapData, u64, ScopePolicy>,
    pub(super) grants: HashMap<MapData, GrantKey, GrantEntry>,
    pub(super) active: Array<MapData, u32>,
    /// Inodes known by identity (writable roots, allowed sockets, secrets).
    pub(super) inodes: HashMap<MapData, InodeKey, u32>,
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
            file.lock().map_err(KernelError::Lock)?;
        }
        Ok(Self(dir))
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.0 {
            let _ = file.unlock();
        }
    }
}

impl PolicyMaps {
    pub(super) fn new(
        scopes: MapData,
        grants: MapData,
        active: MapData,
        inodes: MapData,
    ) -> Result<Self, KernelError> {
        Ok(Self {
            scopes: HashMap::try_from(Map::HashMap(scopes)).map_err(map_err("scope"))?,
            grants: HashMap::try_from(Map::HashMap(grants)).map_err(map_err("grant"))?,
            active: Array::try_from(Map::Array(active)).map_err(map_err("active slot"))?,
            inodes: HashMap::try_from(Map::HashMap(inodes)).map_err(map_err("inode"))?,
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
            make(names::INODES)?,
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
            dup(self.inodes.map(), names::INODES)?,
        )?;
        maps.no_batch = self.no_batch;
        Ok(maps)
    }

    pub(super) fn open_pinned(pin_dir: &Path) -> Result<Self, KernelError> {
        let mut maps = Self::new(
            open_pin(pin_dir, names::SCOPES)?,
            open_pin(pin_dir, names::GRANTS)?,
            open_pin(pin_dir, names::ACTIVE_SLOT)?,
            open_pin(pin_dir, names::INODES)?,
        )?;
        maps.lock_with(pin_dir)?;
        Ok(maps)
    }

    /// Applies take turns with other processes' on the maps pinned in `pin_dir`.
    pub(super) fn lock_with(&mut self, pin_dir: &Path) -> Result<(), KernelError> {
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
        let inodes = self
            .inodes
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("inode"))?;
        Ok(MapState {
            scopes,
            grants,
            inodes,
        })
    }

    /// Whether the maps still hold `desired` as this handle last applied it, cheaply
    /// enough to ask every second: every apply moves the active-slot value, so a value
    /// other than the one written here means another writer (or a failed apply, after
    /// which nothing is known); the scopes, which are few, are compared whole. `Some`
    /// says in words what differs.
    pub fn check_applied(&self, desired: &MapState) -> Result<Option<String>, KernelError> {
        let Some(slots) = &self.slots else {
            return Ok(Some("the last policy apply did not complete".into()));
        };
        if self.active_value()? != slots.value {
            return Ok(Some(
                "another process wrote the grant map since this agent applied its policy".into(),
            ));
        }
        let held = slots
            .held
            .get(active_slot_of(slots.value) as usize)
            .map_or(0, StdHashMap::len);
        if held != desired.grants.len() {
            return Ok(Some(format!(
                "the active grant set holds {held} grants, the policy {}",
                desired.grants.len()
            )));
        }
        let scopes: StdHashMap<u64, ScopePolicy> = self
            .scopes
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("scope"))?;
        if scopes != desired.scopes {
            return Ok(Some(format!(
                "the scope map holds {} scopes that differ from the policy's {}",
                scopes.len(),
                desired.scopes.len()
            )));
        }
        Ok(None)
    }

    /// Every entry of the grant map, both slots.
    fn all_grants(&self) -> Result<Vec<(GrantKey, GrantEntry)>, KernelError> {
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
            let (keys, values): (Vec<GrantKey>, Vec<GrantEntry>) = desired
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
        // Inode rules: new ones first, then the ones no longer wanted. No switch is needed:
        // each entry stands alone, and for a moment both sets apply.
        let current_inodes: StdHashMap<InodeKey, u32> = self
            .inodes
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("inode"))?;
        for (key, rule) in &desired.inodes {
            if current_inodes.get(key) != Some(rule) {
                self.inodes.insert(key, rule, 0).map_err(map_err("inode"))?;
            }
        }
        for key in current_inodes
            .keys()
            .filter(|k| !desired.inodes.contains_key(k))
        {
            match self.inodes.remove(key) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(KernelError::Map {
                        what: "inode",
                        source,
                    });
                }
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
    fn write_grants(
        &mut self,
        keys: &[GrantKey],
        values: &[GrantEntry],
    ) -> Result<(), KernelError> {
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

#[cfg(test)]
mod tests {
    use enforcer_common::{Image, mode};

    use super::*;
    use crate::kernel::testutil::{bpffs_dir, maps};

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
            let grant = GrantEntry {
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
        let forever = GrantEntry {
            not_after_boot_ns: u64::MAX,
            ..GrantEntry::default()
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
                GrantEntry::default(),
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
        maps.inodes
            .map()
            .pin(dir.path().join(names::INODES))
            .expect("pin");
        let mut one = PolicyMaps::open_pinned(dir.path()).expect("open");
        let mut two = PolicyMaps::open_pinned(dir.path()).expect("open");
        let a = state(&[(10, mode::ENFORCE)], &[(10, 1, 1)]);
        let b = state(&[(10, mode::MONITOR)], &[(10, 2, 1)]);
        one.apply(&a).expect("a");
        // Another process holds the lock: an apply waits for it.
        let held = std::fs::File::open(dir.path()).expect("open dir");
        held.lock().expect("lock");
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
}
