//! enforcer's kernel side: BPF LSM programs that make execution conditional on
//! authorization inside governed scopes.
//!
//! A task is governed when its cgroup is a governed scope or lies below one. For a
//! governed task:
//! - `bprm_check_security` (sleepable) allows an exec only when the SHA-256 of the file
//!   (IMA's digest) has an unexpired grant in the scope. It runs once for a script and
//!   again for its interpreter, so both must be granted.
//! - `mmap_file` (sleepable) applies the same rule to executable file mappings (shared
//!   libraries, `ld.so ./prog`, LD_PRELOAD) and refuses anonymous executable memory.
//! - `file_mprotect` refuses making memory executable after the fact: anonymous memory,
//!   and file mappings whose digest was never checked (the hook cannot hash on every
//!   supported kernel, so a file mapping must be executable from its mmap).
//! - memory both writable and executable counts as anonymous executable memory, even
//!   when a granted file backs it: its code can be overwritten at will.
//! - files with no name left (memfd, deleted) may not be executed or mapped executable.
//! - `ptrace_access_check`, `ptrace_traceme`, `bpf`, `task_kill`, `file_open`,
//!   `inode_unlink` and `inode_rename` refuse tampering: with other processes or the
//!   process's own code, with the enforcer's BPF objects and pins, with the agent, and
//!   leaving the scope through cgroup.procs.
//!
//! Scopes may opt in to anonymous executable memory or fileless code (JIT runtimes), and
//! may run in monitor mode (allow, but report what would have been denied), for good or
//! until a break-glass deadline the program itself checks (exec and mapping decisions
//! only: tamper checks keep denying). Every path
//! that cannot prove an operation is allowed denies it. Tasks outside every governed
//! scope are never touched.
#![no_std]
#![no_main]
// The BPF target has atomic add but no compare-and-swap, so core's AtomicU64::fetch_add is
// not offered; the intrinsic lowers to BPF's atomic fetch-add (ISA v3). The BPF build runs
// under RUSTC_BOOTSTRAP with a pinned rustc, so this internal API cannot drift under us.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// Inline assembly on BPF is unstable; `denied()` needs one instruction of it.
#![feature(asm_experimental_arch)]
// Helpers are #[inline(always)]: a BPF-to-BPF call that returns a struct through the
// caller's stack is refused by the verifier, and inlining also keeps stack use visible.

use core::ffi::c_void;
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use core::ptr;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    macros::{lsm, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::LsmContext,
};
use enforcer_common::{
    DIGEST_LEN, EVENTS_BYTES, ExecEvent, GrantEntry, GrantKey, HASH_ALGO_SHA256, Image, MAX_GRANTS,
    MAX_PROTECTED, MAX_SCOPE_LEVEL, MAX_SCOPES, MAX_TRACKED_IMAGES, ScopePolicy, active_slot_of,
    decision, hook, mode, reason, scope_flags,
};

mod digest_cache;

// ---- configuration frozen into .rodata by the loader -----------------------------------
//
// Rust BPF has no CO-RE relocations, so the loader reads struct offsets and hook argument
// counts from the running kernel's BTF, by name and type, and sets them here before load.
// The verifier sees read-only data as constants, so one object fits every kernel. Reads go
// through read_volatile, or LLVM would fold the initial zeros. A zero offset means "not
// configured": decisions deny, reporting leaves the field empty.

/// `linux_binprm::file`: loaded directly, giving the verifier a trusted `struct file *`.
#[unsafe(no_mangle)]
static BPRM_FILE_OFFSET: u32 = 0;
/// `linux_binprm::interp`: the file really loaded (for a script's second pass, the
/// interpreter), where `filename` would stay the script.
#[unsafe(no_mangle)]
static BPRM_INTERP_OFFSET: u32 = 0;
/// `task_struct` members, for lineage and for recognising the agent.
#[unsafe(no_mangle)]
static TASK_REAL_PARENT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_GROUP_LEADER_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_START_TIME_OFFSET: u32 = 0;
/// `file::f_inode`, `file::f_path.dentry`, `dentry::d_name.name`, `inode::i_nlink`.
#[unsafe(no_mangle)]
static FILE_INODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FILE_DENTRY_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static DENTRY_NAME_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_NLINK_OFFSET: u32 = 0;
/// `vm_area_struct::vm_file` and `vm_area_struct::vm_flags`.
#[unsafe(no_mangle)]
static VMA_FILE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static VMA_FLAGS_OFFSET: u32 = 0;
/// `file::f_mode`, `inode::i_sb`, `super_block::s_magic`: to recognise /proc/PID/mem
/// opened for writing.
#[unsafe(no_mangle)]
static FILE_MODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_SB_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SB_MAGIC_OFFSET: u32 = 0;

fn config(value: &u32) -> u32 {
    // SAFETY: a plain read of our own static.
    unsafe { ptr::read_volatile(value) }
}

// ---- maps --------------------------------------------------------------------------

/// Governed scopes: cgroup id -> policy. Pinned by name so a restarted agent reuses it.
#[map(name = "ENFORCER_SCOPES")]
static SCOPES: HashMap<u64, ScopePolicy> = HashMap::pinned(MAX_SCOPES, 0);

/// Grants: (scope, slot, digest) -> expiry and authorization, two complete sets side by
/// side (see `GrantKey`). Not preallocated: most hosts hold far fewer grants than the
/// capacity, and outside a switch only one slot is full.
#[map(name = "ENFORCER_GRANTS")]
static GRANTS: HashMap<GrantKey, GrantEntry> = HashMap::pinned(MAX_GRANTS, BPF_F_NO_PREALLOC);

/// The grant slot lookups use (`active_slot_of`). The agent flips it with one write once
/// the idle slot holds the complete new set.
#[map(name = "ENFORCER_ACTIVE_SLOT")]
static ACTIVE_SLOT: Array<u32> = Array::pinned(1, 0);

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

/// tgids governed tasks may not signal: the agent registers itself here.
#[map(name = "ENFORCER_PROTECTED")]
static PROTECTED: HashMap<u32, u32> = HashMap::pinned(MAX_PROTECTED, 0);

const EPERM: i32 = 1;
const PROT_WRITE: u64 = 0x2;
const PROT_EXEC: u64 = 0x4;
const MAP_ANONYMOUS: u64 = 0x20;
const VM_EXEC: u64 = 0x4;
const FMODE_WRITE: u32 = 0x2;
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
/// `PTRACE_MODE_ATTACH`: ptrace attach and /proc/PID/mem, as opposed to reading status.
const PTRACE_MODE_ATTACH: u32 = 0x02;

// ---- decisions ---------------------------------------------------------------------

/// `-EPERM`, from an instruction LLVM cannot see through.
///
/// Seeing the constant, LLVM may compute a hook's return value as `-(denied as i32)`
/// (it did once the break-glass check sat between the verdict and the return), and
/// verifiers before 6.13 do not follow the range of a negation: 6.12, which holds LSM
/// programs to returning [-4095, 0], refused the program. Opaque, the value stays a
/// branch between 0 and a constant, which every verifier follows.
#[inline(always)]
fn denied() -> i32 {
    let v: i64;
    // SAFETY: puts a constant in a register; reads and writes nothing else.
    unsafe {
        core::arch::asm!("{0} = {1}", out(reg) v, const -(EPERM as i64), options(pure, nomem, nostack));
    }
    v as i32
}

/// The outcome of the checks, before monitor mode and reporting.
struct Verdict {
    allowed: bool,
    reason: u32,
    grant: Option<GrantEntry>,
}

impl Verdict {
    const fn deny(reason: u32) -> Self {
        Self {
            allowed: false,
            reason,
            grant: None,
        }
    }

    const fn allow_unless(denied: bool, reason: u32) -> Self {
        Self {
            allowed: !denied,
            reason: if denied { reason } else { reason::GRANTED },
            grant: None,
        }
    }
}

// Earlier BPF LSM verdicts: the kernel runs BPF LSM programs as fmod_ret programs in the
// hook's trampoline, which stops at the first non-zero verdict, so a program only ever
// runs when every earlier one allowed. There is no earlier denial to preserve, and the
// hooks below do not read the verdict slot (whose position also moves when a hook gains
// parameters, as `bpf` did). Every hook returns 0 or -EPERM, the range 6.12+ verifiers
// enforce for LSM programs.

/// The deepest governed scope among the current task's cgroup and its ancestors.
///
/// Ancestor levels are walked from the root down; the agent refuses scopes deeper than
/// `MAX_SCOPE_LEVEL`, so every governed cgroup is reached by this bounded loop. When
/// scopes nest, the innermost one governs.
#[inline(always)]
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

/// Reads a value at `base + offset` in kernel memory; `None` when unreadable or the loader
/// did not provide the offset.
#[inline(always)]
unsafe fn read_at<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }.ok()
}

/// Follows the pointer at `base + first`, then reads the value at `second` from where it
/// points: the `file->f_inode->i_nlink` shape. `None` when either read fails.
#[inline(always)]
unsafe fn read_via<T>(base: *const u8, first: &u32, second: &u32) -> Option<T> {
    unsafe {
        let next: *const u8 = read_at(base, config(first))?;
        read_at(next, config(second))
    }
}

/// The `i_nlink` of a file's inode: 0 for a memfd or a deleted file. `None` when it cannot
/// be read, which also catches a null `file` at run time: the verifier may take hook
/// arguments for non-null and prune a plain null check, but not a failed probe read.
#[inline(always)]
unsafe fn link_count(file: *const u8) -> Option<u32> {
    unsafe { read_via(file, &FILE_INODE_OFFSET, &INODE_NLINK_OFFSET) }
}

/// Decides whether `file` may be executed or mapped executable in the scope. Fills
/// `digest` when IMA produced one.
///
/// # Safety
/// `file` must be a trusted `struct file *` from the hook's arguments (or loaded from one
/// at a BTF-checked offset), as `bpf_ima_file_hash` requires.
#[inline(always)]
unsafe fn file_verdict(
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
fn find_grant(scope_id: u64, digest: &[u8; DIGEST_LEN]) -> Option<GrantEntry> {
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
fn active_slot() -> Option<u32> {
    // SAFETY: a u32 copied out of our own one-element array; the agent replaces it with
    // one aligned 4-byte write, so it is never seen half-written.
    ACTIVE_SLOT
        .get(0)
        .map(|value| active_slot_of(unsafe { ptr::read_volatile(value) }))
}

/// Whether a denial of `which` in a scope with `policy` is only reported: always in a
/// monitor-mode scope (tamper checks included, as monitor mode always was), and for exec
/// and mapping decisions while a break-glass deadline has not passed. Break-glass lets
/// code run that no grant covers; it does not open the enforcer itself to tampering. The
/// deadline is checked here, at every decision, so enforcement comes back on time even
/// when the agent is dead.
#[inline(always)]
fn monitoring(policy: &ScopePolicy, which: u32) -> bool {
    if policy.mode == mode::MONITOR {
        return true;
    }
    let exec_or_mapping = matches!(
        which,
        hook::BPRM_CHECK_SECURITY | hook::MMAP_FILE | hook::FILE_MPROTECT
    );
    exec_or_mapping
        && policy.monitor_until_boot_ns != 0
        // SAFETY: plain helper call.
        && unsafe { bpf_ktime_get_boot_ns() } < policy.monitor_until_boot_ns
}

/// What a governed operation produces: the final decision after monitor mode, reported
/// through the ring buffer, and the return value for the hook.
struct Outcome<'a> {
    which: u32,
    scope_id: u64,
    policy: ScopePolicy,
    verdict: Verdict,
    digest: &'a [u8; DIGEST_LEN],
    /// Kernel string to report as the path (may be null).
    path: *const u8,
}

impl Outcome<'_> {
    /// Applies monitor mode, reports, and returns the hook's verdict. Allowed mappings and
    /// tamper checks are not reported (they are many and say nothing); every exec, and
    /// every denial or would-be denial, is.
    #[inline(always)]
    fn finish(self) -> Result<i32, i32> {
        let decision = if self.verdict.allowed {
            decision::ALLOW
        } else if monitoring(&self.policy, self.which) {
            decision::WOULD_DENY
        } else {
            decision::DENY
        };
        let is_exec = self.which == hook::BPRM_CHECK_SECURITY;
        if is_exec || decision != decision::ALLOW {
            let lineage = unsafe { lineage() };
            let exec_id = if is_exec { next_exec_id() } else { 0 };
            if is_exec && decision != decision::DENY {
                // The process now runs this image: its children and its next exec
                // descend from it, and it runs on the authorization of the grant that
                // allowed it (none when only monitoring let it run).
                let mut image = Image {
                    exec_id,
                    leader_start_ns: lineage.leader_start_ns,
                    scope_id: self.scope_id,
                    ..Image::default()
                };
                if let (true, Some(grant)) = (self.verdict.allowed, &self.verdict.grant) {
                    image.auth_serial = grant.auth_serial;
                    image.auth_id = grant.auth_id;
                }
                let _ = IMAGES.insert(&lineage.tgid, &image, 0);
            }
            unsafe { self.report(decision, &lineage, exec_id) };
        }
        if decision == decision::DENY {
            Err(denied())
        } else {
            Ok(0)
        }
    }

    /// Sends the decision to the agent, or counts it as dropped when the ring buffer is
    /// full.
    #[inline(always)]
    unsafe fn report(&self, decision: u32, lineage: &Lineage, exec_id: u64) {
        let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
            if let Some(count) = DROPPED.get_ptr_mut(0) {
                // SAFETY: per-CPU slot; this CPU is the only writer while the program
                // runs (BPF programs run with migration disabled).
                unsafe { *count += 1 };
            }
            return;
        };
        let event = entry.as_mut_ptr();
        // SAFETY: `event` points at a reserved ExecEvent; zeroing it first means no stale
        // ring buffer bytes reach userspace through fields or a short path.
        unsafe {
            ptr::write_bytes(event, 0, 1);
            let pid_tgid = bpf_get_current_pid_tgid();
            let uid_gid = bpf_get_current_uid_gid();
            (*event).boot_ns = bpf_ktime_get_boot_ns();
            (*event).cgroup_id = bpf_get_current_cgroup_id();
            (*event).scope_id = self.scope_id;
            (*event).exec_id = exec_id;
            (*event).parent_exec_id = lineage.parent_exec_id;
            (*event).pid = pid_tgid as u32;
            (*event).tgid = (pid_tgid >> 32) as u32;
            (*event).ppid = lineage.ppid;
            (*event).uid = uid_gid as u32;
            (*event).gid = (uid_gid >> 32) as u32;
            (*event).decision = decision;
            (*event).reason = self.verdict.reason;
            (*event).hook = self.which;
            (*event).digest = *self.digest;
            if let Some(grant) = &self.verdict.grant {
                (*event).auth_serial = grant.auth_serial;
                (*event).auth_id = grant.auth_id;
            }
            if !self.path.is_null() {
                // A path that cannot be read stays empty: the event is still sent.
                let _ = bpf_probe_read_kernel_str_bytes(self.path, &mut (*event).path);
            }
        }
        entry.submit(0);
    }
}

/// The name of a file's dentry (its last path component), for reports.
#[inline(always)]
unsafe fn file_name(file: *const u8) -> *const u8 {
    unsafe { read_via(file, &FILE_DENTRY_OFFSET, &DENTRY_NAME_OFFSET).unwrap_or(ptr::null()) }
}

// ---- lineage -----------------------------------------------------------------------

/// Where an operation comes from.
struct Lineage {
    tgid: u32,
    ppid: u32,
    leader_start_ns: u64,
    parent_exec_id: u64,
}

/// The current process, its parent, and which recorded image started this exec: the
/// image this process ran before (an exec chain), else its parent's current image. The
/// leader's start time guards against pid reuse.
#[inline(always)]
unsafe fn lineage() -> Lineage {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: every read goes through bpf_probe_read_kernel, which tolerates bad pointers.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let start_of = |t: *const u8| -> u64 {
            read_via(t, &TASK_GROUP_LEADER_OFFSET, &TASK_START_TIME_OFFSET).unwrap_or(0)
        };
        let leader_start_ns = start_of(task);
        let parent: *const u8 =
            read_at(task, config(&TASK_REAL_PARENT_OFFSET)).unwrap_or(ptr::null());
        let ppid: u32 = read_at(parent, config(&TASK_TGID_OFFSET)).unwrap_or(0);
        let recorded = |key: u32, start: u64| -> Option<u64> {
            let image = IMAGES.get(&key)?;
            (start != 0 && image.leader_start_ns == start).then_some(image.exec_id)
        };
        let parent_exec_id = recorded(tgid, leader_start_ns)
            .or_else(|| recorded(ppid, start_of(parent)))
            .unwrap_or(0);
        Lineage {
            tgid,
            ppid,
            leader_start_ns,
            parent_exec_id,
        }
    }
}

/// The next per-boot exec id (1, 2, ...); 0 only if the counter map is unreadable.
#[inline(always)]
fn next_exec_id() -> u64 {
    match EXEC_SEQ.get_ptr_mut(0) {
        // SAFETY: the array slot lives as long as the map; the atomic add makes concurrent
        // execs on other CPUs get distinct ids. SeqCst, not Relaxed: LLVM lowers a relaxed
        // add to BPF's legacy XADD, which returns nothing, and then uses the addend as the
        // "old value" (every id came out as 2); SeqCst gives the fetching instruction.
        Some(slot) => (unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(slot, 1) }) + 1,
        None => 0,
    }
}

// ---- hooks -------------------------------------------------------------------------

/// Turns a hook's `Result` into its return value.
fn ret(result: Result<i32, i32>) -> i32 {
    match result {
        Ok(r) | Err(r) => r,
    }
}

const NO_DIGEST: [u8; DIGEST_LEN] = [0; DIGEST_LEN];

#[lsm(hook = "bprm_check_security", sleepable)]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    // SAFETY: argument 0 is `struct linux_binprm *bprm`.
    ret(unsafe { try_bprm_check(&ctx) })
}

unsafe fn try_bprm_check(ctx: &LsmContext) -> Result<i32, i32> {
    let Some((scope_id, policy)) = governing_scope() else {
        return Ok(0);
    };
    let bprm: *const u8 = ctx.arg(0);
    let mut digest = NO_DIGEST;
    let file_offset = config(&BPRM_FILE_OFFSET);
    let verdict = if file_offset == 0 {
        Verdict::deny(reason::NOT_CONFIGURED)
    } else {
        // SAFETY: `bprm` is the hook's trusted `struct linux_binprm *` and the offset is
        // that of its `file` member (looked up by name and type in the kernel's BTF); the
        // verifier checks the member's type and gives us a trusted `struct file *`.
        let file = unsafe { *(bprm.add(file_offset as usize) as *const *mut c_void) };
        unsafe { file_verdict(file, scope_id, policy, &mut digest) }
    };
    let path = unsafe { read_at(bprm, config(&BPRM_INTERP_OFFSET)) }.unwrap_or(ptr::null());
    Outcome {
        which: hook::BPRM_CHECK_SECURITY,
        scope_id,
        policy,
        verdict,
        digest: &digest,
        path,
    }
    .finish()
}

#[lsm(hook = "mmap_file", sleepable)]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    // SAFETY: arguments are (struct file *file, reqprot, prot, flags).
    ret(unsafe { try_mmap_file(&ctx) })
}

unsafe fn try_mmap_file(ctx: &LsmContext) -> Result<i32, i32> {
    // `prot` is what the mapping will get, READ_IMPLIES_EXEC included.
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return Ok(0);
    }
    let Some((scope_id, policy)) = governing_scope() else {
        return Ok(0);
    };
    // Anonymous memory is told by the flag, not by a null `file`: newer verifiers take the
    // argument for non-null and drop such a check (MAP_ANONYMOUS|MAP_HUGETLB even comes
    // with a hugetlbfs file).
    let flags: u64 = ctx.arg(3);
    let file: *mut c_void = ctx.arg(0);
    let mut digest = NO_DIGEST;
    let anon_exec_denied = policy.flags & scope_flags::ALLOW_ANON_EXEC == 0;
    let (verdict, path) = if flags & MAP_ANONYMOUS != 0 {
        (
            Verdict::allow_unless(anon_exec_denied, reason::ANON_EXEC),
            ptr::null(),
        )
    } else if prot & PROT_WRITE != 0 && anon_exec_denied {
        // Writable and executable at once: whatever the file held, the process can write
        // any code there. That is anonymous executable memory in all but name.
        (Verdict::deny(reason::ANON_EXEC), unsafe {
            file_name(file.cast())
        })
    } else {
        // SAFETY: `file` is the hook's own `struct file *` argument; file_verdict proves it
        // readable before handing it to a helper.
        (
            unsafe { file_verdict(file, scope_id, policy, &mut digest) },
            unsafe { file_name(file.cast()) },
        )
    };
    Outcome {
        which: hook::MMAP_FILE,
        scope_id,
        policy,
        verdict,
        digest: &digest,
        path,
    }
    .finish()
}

#[lsm(hook = "file_mprotect")]
pub fn file_mprotect(ctx: LsmContext) -> i32 {
    // SAFETY: arguments are (struct vm_area_struct *vma, reqprot, prot).
    ret(unsafe { try_file_mprotect(&ctx) })
}

unsafe fn try_file_mprotect(ctx: &LsmContext) -> Result<i32, i32> {
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return Ok(0);
    }
    let Some((scope_id, policy)) = governing_scope() else {
        return Ok(0);
    };
    let vma: *const u8 = ctx.arg(0);
    // SAFETY: probe reads of the hook's own vma.
    let flags: Option<u64> = unsafe { read_at(vma, config(&VMA_FLAGS_OFFSET)) };
    let file: Option<*const u8> = unsafe { read_at(vma, config(&VMA_FILE_OFFSET)) };
    let anon_exec_denied = policy.flags & scope_flags::ALLOW_ANON_EXEC == 0;
    let (verdict, path) = match (flags, file) {
        // Unreadable: doubt means deny.
        (None, _) | (_, None) => (Verdict::deny(reason::NOT_CONFIGURED), ptr::null()),
        // Anonymous memory, or any mapping becoming writable and executable at once.
        (Some(_), Some(f)) if f.is_null() || prot & PROT_WRITE != 0 => (
            Verdict::allow_unless(anon_exec_denied, reason::ANON_EXEC),
            ptr::null(),
        ),
        // Already executable (its file was checked when it was mapped): nothing changes.
        (Some(f), _) if f & VM_EXEC != 0 => return Ok(0),
        // A file mapping turning executable after the fact skipped the digest check at
        // mmap time, and this hook cannot hash on every supported kernel: deny.
        (Some(_), Some(f)) => (Verdict::deny(reason::LATE_EXEC), unsafe { file_name(f) }),
    };
    Outcome {
        which: hook::FILE_MPROTECT,
        scope_id,
        policy,
        verdict,
        digest: &NO_DIGEST,
        path,
    }
    .finish()
}

/// Tamper checks share this: a governed task is refused when `tampering` holds.
#[inline(always)]
fn tamper_check(ctx: &LsmContext, which: u32, tampering: impl FnOnce(&LsmContext) -> bool) -> i32 {
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    if !tampering(ctx) {
        return 0;
    }
    let verdict = Verdict::deny(reason::TAMPER);
    ret(Outcome {
        which,
        scope_id,
        policy,
        verdict,
        digest: &NO_DIGEST,
        path: ptr::null(),
    }
    .finish())
}

#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *child, unsigned int mode). Attach mode covers
    // PTRACE_ATTACH/SEIZE and writing /proc/PID/mem; reading status stays allowed.
    tamper_check(&ctx, hook::PTRACE_ACCESS_CHECK, |ctx| {
        let mode: u32 = ctx.arg(1);
        mode & PTRACE_MODE_ATTACH != 0
    })
}

#[lsm(hook = "ptrace_traceme")]
pub fn ptrace_traceme(ctx: LsmContext) -> i32 {
    // PTRACE_TRACEME hands the caller to its parent without an access check on the
    // parent's side: refuse it like an attach.
    tamper_check(&ctx, hook::PTRACE_TRACEME, |_| true)
}

#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    // Governed tasks may not use bpf() at all: it is how the enforcer's own programs,
    // links and maps would be detached or changed.
    tamper_check(&ctx, hook::BPF, |_| true)
}

#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *p, struct kernel_siginfo *info, int sig, cred).
    tamper_check(&ctx, hook::TASK_KILL, |ctx| {
        let target: *const u8 = ctx.arg(0);
        // SAFETY: probe read of the hook's own task argument.
        let tgid: Option<u32> = unsafe { read_at(target, config(&TASK_TGID_OFFSET)) };
        // SAFETY: the value is only tested for presence.
        tgid.is_none_or(|t| unsafe { PROTECTED.get(&t) }.is_some())
    })
}

/// The filesystem magic of an inode's superblock; `None` when unreadable.
#[inline(always)]
unsafe fn fs_magic(inode: *const u8) -> Option<u64> {
    unsafe { read_via(inode, &INODE_SB_OFFSET, &SB_MAGIC_OFFSET) }
}

/// Whether the NUL-terminated kernel string `name` equals `want` (which ends in NUL).
/// `None` when unreadable.
#[inline(always)]
unsafe fn name_is<const N: usize>(name: *const u8, want: &[u8; N]) -> Option<bool> {
    if name.is_null() {
        return None;
    }
    let mut buf = [0u8; N];
    // SAFETY: probe read of a kernel string into our buffer.
    unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }.ok()?;
    Some(buf == *want)
}

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // Whoever opens a file for writing may change it: its cached digest goes stale.
    digest_cache::opened(&ctx);
    // Argument: (struct file *file). Two files are refused for writing to governed tasks:
    // - /proc/PID/mem, the process's own included: writes there ignore page protections,
    //   and for a process's own memory no ptrace check runs, so a granted program could
    //   patch its own code;
    // - cgroup.procs and cgroup.threads: writing them moves a process to another cgroup,
    //   which is how a governed process would leave its scope.
    // Anything unreadable counts as a match.
    tamper_check(&ctx, hook::FILE_OPEN, |ctx| {
        let file: *const u8 = ctx.arg(0);
        // SAFETY: probe reads of the hook's own file argument.
        unsafe {
            let mode: Option<u32> = read_at(file, config(&FILE_MODE_OFFSET));
            if mode.is_some_and(|m| m & FMODE_WRITE == 0) {
                return false;
            }
            let inode: Option<*const u8> = read_at(file, config(&FILE_INODE_OFFSET));
            let name = file_name(file);
            match inode.and_then(|i| fs_magic(i)) {
                Some(PROC_SUPER_MAGIC) => name_is(name, b"mem\0").unwrap_or(true),
                Some(CGROUP2_SUPER_MAGIC) => {
                    name_is(name, b"cgroup.procs\0").unwrap_or(true)
                        || name_is(name, b"cgroup.threads\0").unwrap_or(true)
                }
                Some(_) => false,
                None => true,
            }
        }
    })
}

/// Whether a directory inode lies on bpffs (unreadable counts as yes).
#[inline(always)]
fn on_bpffs(dir: *const u8) -> bool {
    // SAFETY: probe reads of the hook's own inode argument.
    unsafe { fs_magic(dir) }.is_none_or(|m| m == BPF_FS_MAGIC)
}

#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    // Arguments: (struct inode *dir, struct dentry *dentry). Unlinking the pins in bpffs
    // detaches enforcement once nothing else holds it: governed tasks may not unlink there.
    tamper_check(&ctx, hook::INODE_UNLINK, |ctx| on_bpffs(ctx.arg(0)))
}

#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    // Arguments: (old_dir, old_dentry, new_dir, new_dentry): moving a pin away is as good
    // as unlinking it.
    tamper_check(&ctx, hook::INODE_RENAME, |ctx| {
        on_bpffs(ctx.arg(0)) || on_bpffs(ctx.arg(2))
    })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Nothing in this program can panic; if LLVM ever emitted a call here the verifier would
    // reject the program at load, which is the failure we want to see.
    unsafe { core::hint::unreachable_unchecked() }
}
