//! enforcer's kernel side: a sleepable BPF LSM program on `bprm_check_security`.
//!
//! For a task whose cgroup is a governed scope, or lies below one, an exec is allowed only
//! when the SHA-256 of the executed file (IMA's digest) is granted for that scope and the
//! grant has not expired. Every path that cannot prove this denies: no digest, another
//! algorithm, no grant, an expired grant, an unconfigured program. Tasks outside every
//! governed scope are never touched.
//!
//! The hook runs once for a script and again for its interpreter (and for binfmt_misc
//! handlers), each time with `bprm->file` set to the file about to be loaded, so both must
//! be granted.
#![no_std]
#![no_main]
// The BPF target has atomic add but no compare-and-swap, so core's AtomicU64::fetch_add is
// not offered; the intrinsic lowers to BPF's atomic fetch-add (ISA v3). The BPF build runs
// under RUSTC_BOOTSTRAP with a pinned rustc, so this internal API cannot drift under us.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ima_file_hash, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::{lsm, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::LsmContext,
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use enforcer_common::{
    DIGEST_LEN, EVENTS_BYTES, ExecEvent, Grant, GrantKey, HASH_ALGO_SHA256, Image, MAX_GRANTS,
    MAX_SCOPE_LEVEL, MAX_SCOPES, MAX_TRACKED_IMAGES, ScopePolicy, decision, mode, reason,
};

/// Byte offset of `struct linux_binprm::file` in the running kernel, read from its BTF by
/// the loader and frozen into .rodata before load. The verifier sees it as a constant, so
/// the load below yields a trusted `struct file *` on every kernel, with no offset compiled
/// in for one kernel. Zero means the loader did not set it: deny.
#[unsafe(no_mangle)]
static BPRM_FILE_OFFSET: u32 = 0;

/// Byte offset of `struct linux_binprm::interp`, for the path reported in events: the file
/// really being loaded (for a script's second pass, the interpreter), where `filename`
/// would stay the script.
#[unsafe(no_mangle)]
static BPRM_INTERP_OFFSET: u32 = 0;

/// Offsets in `struct task_struct`, for lineage (read with probe_read: reporting only, never
/// part of a decision). Zero: lineage unknown.
#[unsafe(no_mangle)]
static TASK_REAL_PARENT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_GROUP_LEADER_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_START_TIME_OFFSET: u32 = 0;

/// Governed scopes: cgroup id -> policy. Pinned by name so a restarted agent reuses it.
#[map(name = "ENFORCER_SCOPES")]
static SCOPES: HashMap<u64, ScopePolicy> = HashMap::pinned(MAX_SCOPES, 0);

/// Grants: (scope, digest) -> expiry and authorization. Not preallocated: most hosts hold
/// far fewer grants than the capacity.
#[map(name = "ENFORCER_GRANTS")]
static GRANTS: HashMap<GrantKey, Grant> = HashMap::pinned(MAX_GRANTS, BPF_F_NO_PREALLOC);

/// Decisions for the agent's audit log.
#[map(name = "ENFORCER_EVENTS")]
static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

/// Events that could not be reserved in the ring buffer, per CPU: a loss is counted, never
/// silent, and the agent turns the count into a gap record.
#[map(name = "ENFORCER_DROPPED")]
static DROPPED: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// Source of per-boot exec ids.
#[map(name = "ENFORCER_EXEC_SEQ")]
static EXEC_SEQ: Array<u64> = Array::pinned(1, 0);

/// tgid -> the exec id of the image the process runs now, for lineage.
#[map(name = "ENFORCER_IMAGES")]
static IMAGES: LruHashMap<u32, Image> = LruHashMap::pinned(MAX_TRACKED_IMAGES, 0);

const EPERM: i32 = 1;

/// The outcome of the checks, before it is reported.
struct Verdict {
    decision: u32,
    reason: u32,
    grant: Option<Grant>,
}

impl Verdict {
    const fn deny(reason: u32) -> Self {
        Self { decision: decision::DENY, reason, grant: None }
    }
}

#[lsm(hook = "bprm_check_security", sleepable)]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    // SAFETY: the hook's signature is `int (struct linux_binprm *bprm)` plus the return
    // value of earlier BPF LSM programs; `try_bprm_check` reads only those.
    match unsafe { try_bprm_check(&ctx) } {
        Ok(ret) | Err(ret) => ret,
    }
}

unsafe fn try_bprm_check(ctx: &LsmContext) -> Result<i32, i32> {
    // An earlier BPF LSM program already decided to deny: keep its verdict.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return Ok(previous);
    }

    let Some((scope_id, policy)) = governing_scope() else {
        return Ok(0);
    };

    let bprm: *const u8 = ctx.arg(0);
    let mut digest = [0u8; DIGEST_LEN];
    let verdict = unsafe { decide(bprm, scope_id, &mut digest) };

    let decision = if verdict.decision == decision::DENY && policy.mode == mode::MONITOR {
        decision::WOULD_DENY
    } else {
        verdict.decision
    };
    let lineage = unsafe { lineage() };
    let exec_id = next_exec_id();
    if decision != decision::DENY {
        // The process now runs this image: its children and its next exec descend from it.
        let image = Image { exec_id, leader_start_ns: lineage.leader_start_ns };
        let _ = IMAGES.insert(&lineage.tgid, &image, 0);
    }
    unsafe { report(bprm, scope_id, decision, &verdict, &digest, &lineage, exec_id) };

    if decision == decision::DENY { Err(-EPERM) } else { Ok(0) }
}

/// Where an exec comes from.
struct Lineage {
    tgid: u32,
    ppid: u32,
    leader_start_ns: u64,
    parent_exec_id: u64,
}

/// Reads a value at `base + offset` in kernel memory; `None` when unreadable or the loader
/// did not provide the offset.
unsafe fn read_at<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }.ok()
}

/// The current process, its parent, and which recorded image started this exec: the
/// image this process ran before (an exec chain), else its parent's current image.
unsafe fn lineage() -> Lineage {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: every read goes through bpf_probe_read_kernel, which tolerates bad pointers.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let start_of = |t: *const u8| -> u64 {
            let leader: Option<*const u8> = read_at(t, ptr::read_volatile(&TASK_GROUP_LEADER_OFFSET));
            leader.and_then(|l| read_at(l, ptr::read_volatile(&TASK_START_TIME_OFFSET))).unwrap_or(0)
        };
        let leader_start_ns = start_of(task);
        let parent: *const u8 =
            read_at(task, ptr::read_volatile(&TASK_REAL_PARENT_OFFSET)).unwrap_or(ptr::null());
        let ppid: u32 = read_at(parent, ptr::read_volatile(&TASK_TGID_OFFSET)).unwrap_or(0);
        let recorded = |key: u32, start: u64| -> Option<u64> {
            let image = IMAGES.get(&key)?;
            (start != 0 && image.leader_start_ns == start).then_some(image.exec_id)
        };
        let parent_exec_id = recorded(tgid, leader_start_ns)
            .or_else(|| recorded(ppid, start_of(parent)))
            .unwrap_or(0);
        Lineage { tgid, ppid, leader_start_ns, parent_exec_id }
    }
}

/// The next per-boot exec id (1, 2, ...); 0 only if the counter map is unreadable.
fn next_exec_id() -> u64 {
    match EXEC_SEQ.get_ptr_mut(0) {
        // SAFETY: the array slot lives as long as the map; the atomic add makes concurrent
        // execs on other CPUs get distinct ids.
        Some(slot) => (unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) }) + 1,
        None => 0,
    }
}

/// The deepest governed scope among the current task's cgroup and its ancestors.
///
/// Ancestor levels are walked from the root down; the agent refuses scopes deeper than
/// `MAX_SCOPE_LEVEL`, so every governed cgroup is reached by this bounded loop. When
/// scopes nest, the innermost one governs.
fn governing_scope() -> Option<(u64, ScopePolicy)> {
    let current = unsafe { bpf_get_current_cgroup_id() };
    let mut found = None;
    let mut level = 0;
    while level <= MAX_SCOPE_LEVEL {
        // SAFETY: plain helper call; returns 0 past the task's own level.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: the value is copied out at once.
        if let Some(policy) = unsafe { SCOPES.get(&id) } {
            found = Some((id, *policy));
        }
        if id == current {
            break;
        }
        level += 1;
    }
    found
}

/// Decides for a task in a governed scope. Fills `digest` when IMA produced one.
unsafe fn decide(bprm: *const u8, scope_id: u64, digest: &mut [u8; DIGEST_LEN]) -> Verdict {
    // SAFETY: read_volatile keeps LLVM from folding the global to its initial 0; the
    // loader has frozen the real value into read-only data before the program loads.
    let file_offset = unsafe { ptr::read_volatile(&BPRM_FILE_OFFSET) };
    if file_offset == 0 {
        return Verdict::deny(reason::NOT_CONFIGURED);
    }
    // SAFETY: `bprm` is the hook's trusted `struct linux_binprm *` and the offset is that of
    // its `file` member (looked up by name in the kernel's BTF); the verifier checks the
    // member's type and gives us a trusted `struct file *`.
    let file = unsafe { *(bprm.add(file_offset as usize) as *const *mut c_void) };

    // SAFETY: the helper writes at most DIGEST_LEN bytes into `digest`.
    let algo = unsafe {
        bpf_ima_file_hash(file.cast(), digest.as_mut_ptr().cast(), DIGEST_LEN as u32)
    };
    if algo < 0 {
        return Verdict::deny(reason::DIGEST_UNAVAILABLE);
    }
    if algo != HASH_ALGO_SHA256 {
        return Verdict::deny(reason::UNEXPECTED_ALGORITHM);
    }

    let key = GrantKey { scope_id, digest: *digest };
    // SAFETY: the value is copied out at once.
    let Some(grant) = (unsafe { GRANTS.get(&key) }).copied() else {
        return Verdict::deny(reason::NOT_GRANTED);
    };
    if unsafe { bpf_ktime_get_boot_ns() } >= grant.not_after_boot_ns {
        return Verdict { decision: decision::DENY, reason: reason::EXPIRED, grant: Some(grant) };
    }
    Verdict { decision: decision::ALLOW, reason: reason::GRANTED, grant: Some(grant) }
}

/// Sends the decision to the agent, or counts it as dropped when the ring buffer is full.
unsafe fn report(
    bprm: *const u8,
    scope_id: u64,
    decision: u32,
    verdict: &Verdict,
    digest: &[u8; DIGEST_LEN],
    lineage: &Lineage,
    exec_id: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        if let Some(count) = DROPPED.get_ptr_mut(0) {
            // SAFETY: per-CPU slot; this CPU is the only writer while the program runs
            // (sleepable programs run with migration disabled).
            unsafe { *count += 1 };
        }
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved ExecEvent; zeroing it first means no stale ring
    // buffer bytes reach userspace through fields or a short path.
    unsafe {
        ptr::write_bytes(event, 0, 1);
        let pid_tgid = bpf_get_current_pid_tgid();
        let uid_gid = bpf_get_current_uid_gid();
        (*event).boot_ns = bpf_ktime_get_boot_ns();
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).scope_id = scope_id;
        (*event).exec_id = exec_id;
        (*event).parent_exec_id = lineage.parent_exec_id;
        (*event).ppid = lineage.ppid;
        (*event).pid = pid_tgid as u32;
        (*event).tgid = (pid_tgid >> 32) as u32;
        (*event).uid = uid_gid as u32;
        (*event).gid = (uid_gid >> 32) as u32;
        (*event).decision = decision;
        (*event).reason = verdict.reason;
        (*event).digest = *digest;
        if let Some(grant) = &verdict.grant {
            (*event).auth_serial = grant.auth_serial;
            (*event).auth_id = grant.auth_id;
        }
        let name_offset = ptr::read_volatile(&BPRM_INTERP_OFFSET);
        if name_offset != 0 {
            if let Ok(name) = bpf_probe_read_kernel(bprm.add(name_offset as usize) as *const *const u8) {
                // A path that cannot be read stays empty: the event is still sent.
                let _ = bpf_probe_read_kernel_str_bytes(name, &mut (*event).path);
            }
        }
    }
    entry.submit(0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Nothing in this program can panic; if LLVM ever emitted a call here the verifier would
    // reject the program at load, which is the failure we want to see.
    unsafe { core::hint::unreachable_unchecked() }
}
