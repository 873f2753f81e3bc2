//! The content rule: a file's SHA-256 must have a live grant in the scope.

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::helpers::bpf_ktime_get_boot_ns;
use enforcer_common::{
    DIGEST_LEN, GrantEntry, GrantKey, HASH_ALGO_SHA256, ScopePolicy, active_slot_of, reason,
    scope_flags,
};

use crate::decide::Verdict;
use crate::digest_cache;
use crate::kmem::link_count;
use crate::maps::{ACTIVE_SLOT, GRANTS};

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
        return Verdict::deny(reason::DIGEST_UNAVAILABLE);
    };
    if links == 0 && policy.flags & scope_flags::ALLOW_FILELESS == 0 {
        return Verdict::deny(reason::FILELESS);
    }
    // SAFETY: `file` is trusted, as this function requires.
    let algo = unsafe { digest_cache::file_digest(file, links, digest) };
    if algo < 0 {
        return Verdict::deny(reason::DIGEST_UNAVAILABLE);
    }
    if algo != HASH_ALGO_SHA256 {
        return Verdict::deny(reason::UNEXPECTED_ALGORITHM);
    }
    let Some(grant) = find_grant(scope_id, digest) else {
        return Verdict::deny(reason::NOT_GRANTED);
    };
    if unsafe { bpf_ktime_get_boot_ns() } >= grant.not_after_boot_ns {
        return Verdict {
            allowed: false,
            reason: reason::EXPIRED,
            grant: Some(grant),
        };
    }
    Verdict {
        allowed: true,
        reason: reason::GRANTED,
        grant: Some(grant),
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
