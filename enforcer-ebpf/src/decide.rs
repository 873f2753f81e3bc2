//! From checks to a hook's answer: which scope governs the task, monitor mode and
//! break-glass, and the report every decision sends to the agent.
//!
//! Earlier BPF LSM verdicts: the kernel runs BPF LSM programs as fmod_ret programs in the
//! hook's trampoline, which stops at the first non-zero verdict, so a program only ever
//! runs when every earlier one allowed. There is no earlier denial to preserve, and the
//! hooks do not read the verdict slot (whose position also moves when a hook gains
//! parameters, as `bpf` did). Every hook returns 0 or a negative errno, the range 6.12+
//! verifiers enforce for LSM programs.

use core::ptr;

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes,
};
use enforcer_common::{
    DIGEST_LEN, ExecEvent, GrantEntry, Image, MAX_SCOPE_LEVEL, ScopePolicy, decide, decision, hook,
    reason,
};

use crate::kmem::{EPERM, ETXTBSY};
use crate::lineage::{Lineage, lineage, next_exec_id};
use enforcer_common::InodeKey;

use crate::maps::{DROPPED, EVENTS, IMAGES, INODES, SCOPES};

/// `-ERRNO`, from an instruction LLVM cannot see through.
///
/// Seeing the constant, LLVM may compute a hook's return value as `-(denied as i32)`
/// (it did once the break-glass check sat between the verdict and the return), and
/// verifiers before 6.13 do not follow the range of a negation: 6.12, which holds LSM
/// programs to returning [-4095, 0], refused the program. Opaque, the value stays a
/// branch between 0 and a constant, which every verifier follows.
#[inline(always)]
pub(crate) fn denied<const ERRNO: i32>() -> i32 {
    let v: i64;
    // SAFETY: puts a constant in a register; reads and writes nothing else.
    unsafe {
        core::arch::asm!("{0} = {1}", out(reg) v, const -(ERRNO as i64), options(pure, nomem, nostack));
    }
    v as i32
}

/// The outcome of the checks, before monitor mode and reporting.
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    pub(crate) reason: u32,
    /// The grant that matched; all zero when none did. Not an `Option`: LLVM may read
    /// the payload of a `None` it will not use, and 6.1's verifier refuses reading stack
    /// that was never written.
    pub(crate) grant: GrantEntry,
    /// What the refusal was about, for the report (`ExecEvent::detail`).
    pub(crate) detail: u64,
}

impl Verdict {
    pub(crate) const fn deny(reason: u32) -> Self {
        Self {
            allowed: false,
            reason,
            grant: GrantEntry::ZERO,
            detail: 0,
        }
    }

    pub(crate) const fn deny_with(reason: u32, detail: u64) -> Self {
        Self {
            allowed: false,
            reason,
            grant: GrantEntry::ZERO,
            detail,
        }
    }

    pub(crate) const fn allow_unless(denied: bool, reason: u32) -> Self {
        Self {
            allowed: !denied,
            reason: if denied { reason } else { reason::GRANTED },
            grant: GrantEntry::ZERO,
            detail: 0,
        }
    }
}

/// The deepest governed scope among the current task's cgroup and its ancestors.
///
/// Ancestor levels are walked from the root down; the agent refuses scopes deeper than
/// `MAX_SCOPE_LEVEL`, so every governed cgroup is reached by this bounded loop. When
/// scopes nest, the innermost one governs.
#[inline(always)]
pub(crate) fn governing_scope() -> Option<(u64, ScopePolicy)> {
    let current = unsafe { bpf_get_current_cgroup_id() };
    // Only the id is carried through the loop, and the policy looked up once after it:
    // carrying an `Option<&ScopePolicy>` lets LLVM merge map values with bitwise ors, which
    // the verifier refuses as pointer arithmetic on a possibly-null value.
    let mut found = 0;
    let mut level = 0;
    while level <= MAX_SCOPE_LEVEL {
        // SAFETY: plain helper call; returns 0 past the task's own level.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: only tested for presence.
        if unsafe { SCOPES.get(&id) }.is_some() {
            found = id;
        }
        if id == current {
            break;
        }
        level += 1;
    }
    if found == 0 {
        return None;
    }
    // SAFETY: the value is copied out at once.
    let policy = unsafe { SCOPES.get(&found) }?;
    Some((found, *policy))
}

/// Whether a denial for `why` in a scope with `policy` is only reported: the rule lives in
/// [`enforcer_common::decide::monitoring`], shared with the audit log's replay; here it
/// reads CLOCK_BOOTTIME, the clock the agent converts the break-glass deadline to.
#[inline(always)]
pub(crate) fn monitoring(policy: &ScopePolicy, why: u32) -> bool {
    // SAFETY: plain helper call.
    decide::monitoring(policy, why, || unsafe { bpf_ktime_get_boot_ns() })
}

/// What a governed operation produces: the final decision after monitor mode, reported
/// through the ring buffer, and the return value for the hook.
pub(crate) struct Outcome<'a> {
    pub(crate) which: u32,
    pub(crate) scope_id: u64,
    pub(crate) policy: ScopePolicy,
    pub(crate) verdict: Verdict,
    pub(crate) digest: &'a [u8; DIGEST_LEN],
    /// Kernel string to report as the path (may be null).
    pub(crate) path: *const u8,
}

impl Outcome<'_> {
    /// Applies monitor mode, reports, and returns the hook's verdict. Allowed mappings and
    /// tamper checks are not reported (they are many and say nothing); every exec, and
    /// every denial or would-be denial, is.
    #[inline(always)]
    pub(crate) fn finish(self) -> Result<i32, i32> {
        // SAFETY: plain helper call.
        let decision = decide::outcome(
            self.verdict.allowed,
            self.verdict.reason,
            &self.policy,
            || unsafe { bpf_ktime_get_boot_ns() },
        );
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
                if self.verdict.allowed {
                    image.auth_serial = self.verdict.grant.auth_serial;
                    image.auth_id = self.verdict.grant.auth_id;
                }
                let _ = IMAGES.insert(&lineage.tgid, &image, 0);
            }
            unsafe { self.report(decision, &lineage, exec_id) };
        }
        if decision != decision::DENY {
            Ok(0)
        } else if self.verdict.reason == reason::CODE_IN_USE {
            // What the kernel says for a running program's file.
            Err(denied::<ETXTBSY>())
        } else {
            Err(denied::<EPERM>())
        }
    }

    /// Sends the decision to the agent, or counts it as dropped when the ring buffer is
    /// full.
    #[inline(always)]
    pub(crate) unsafe fn report(&self, decision: u32, lineage: &Lineage, exec_id: u64) {
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
            (*event).detail = self.verdict.detail;
            (*event).auth_serial = self.verdict.grant.auth_serial;
            (*event).auth_id = self.verdict.grant.auth_id;
            if !self.path.is_null() {
                // A path that cannot be read stays empty: the event is still sent.
                let _ = bpf_probe_read_kernel_str_bytes(self.path, &mut (*event).path);
            }
        }
        entry.submit(0);
    }
}

/// Refuses (or, for the content rule in monitor mode, reports) an operation of a task in
/// scope `scope_id`: the common end of the containment hooks.
#[inline(always)]
pub(crate) fn refuse(
    which: u32,
    scope_id: u64,
    policy: ScopePolicy,
    verdict: Verdict,
    path: *const u8,
) -> i32 {
    let outcome = Outcome {
        which,
        scope_id,
        policy,
        verdict,
        digest: &[0; DIGEST_LEN],
        path,
    };
    match outcome.finish() {
        Ok(r) | Err(r) => r,
    }
}

/// Whether `rule` holds for the inode `(dev, ino)` in `scope_id` or in every scope.
#[inline(always)]
pub(crate) fn inode_rule(scope_id: u64, dev: u32, ino: u64, rule: u32) -> bool {
    let has = |scope| {
        // SAFETY: the value is copied out at once.
        unsafe { INODES.get(&InodeKey::new(scope, dev, ino)) }.is_some_and(|r| r & rule != 0)
    };
    has(scope_id) || has(0)
}
