//! The maps the programs share with the agent (pinned by name) and among themselves.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    EVENTS_BYTES, GrantEntry, GrantKey, Image, InodeKey, MAX_GRANTS, MAX_INODE_RULES,
    MAX_PROTECTED, MAX_SCOPES, MAX_TRACKED_IMAGES, ScopePolicy,
};

/// Governed scopes: cgroup id -> policy. Pinned by name so a restarted agent reuses it.
#[map(name = "ENFORCER_SCOPES")]
pub(crate) static SCOPES: HashMap<u64, ScopePolicy> = HashMap::pinned(MAX_SCOPES, 0);

/// Grants: (scope, slot, digest) -> expiry and authorization, two complete sets side by
/// side (see `GrantKey`). Not preallocated: most hosts hold far fewer grants than the
/// capacity, and outside a switch only one slot is full.
#[map(name = "ENFORCER_GRANTS")]
pub(crate) static GRANTS: HashMap<GrantKey, GrantEntry> =
    HashMap::pinned(MAX_GRANTS, BPF_F_NO_PREALLOC);

/// The grant slot lookups use (`active_slot_of`). The agent flips it with one write once
/// the idle slot holds the complete new set.
#[map(name = "ENFORCER_ACTIVE_SLOT")]
pub(crate) static ACTIVE_SLOT: Array<u32> = Array::pinned(1, 0);

/// Decisions for the agent's audit log.
#[map(name = "ENFORCER_EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

/// Events that could not be reserved in the ring buffer, per CPU: a loss is counted, never
/// silent, and the agent turns the count into a gap record.
#[map(name = "ENFORCER_DROPPED")]
pub(crate) static DROPPED: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// Source of per-boot exec ids.
#[map(name = "ENFORCER_EXEC_SEQ")]
pub(crate) static EXEC_SEQ: Array<u64> = Array::pinned(1, 0);

/// tgid -> the exec id of the image the process runs now, for lineage.
#[map(name = "ENFORCER_IMAGES")]
pub(crate) static IMAGES: LruHashMap<u32, Image> = LruHashMap::pinned(MAX_TRACKED_IMAGES, 0);

/// tgids governed tasks may not signal: the agent registers itself here.
#[map(name = "ENFORCER_PROTECTED")]
pub(crate) static PROTECTED: HashMap<u32, u32> = HashMap::pinned(MAX_PROTECTED, 0);

/// Inodes known by identity: a scope's writable roots, allowed sockets, secrets
/// ([`enforcer_common::inode_rule`]).
#[map(name = "ENFORCER_INODES")]
pub(crate) static INODES: HashMap<InodeKey, u32> = HashMap::pinned(MAX_INODE_RULES, 0);
