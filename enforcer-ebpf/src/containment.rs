//! Containment: what a governed task may not do to the enforcer, to other processes, or
//! to its own code, whatever its privileges.

use core::ptr;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{capability, hook, inode_rule, reason};

use crate::decide::{Outcome, Verdict, governing_scope, inode_rule as has_rule, refuse};
use crate::kmem::{
    CGROUP_PARENT_OFFSET, CSS_SET_DFL_CGRP_OFFSET, DENTRY_INODE_OFFSET, KEY_TYPE_NAME_OFFSET,
    KEY_TYPE_OFFSET, MAX_CGROUP_WALK, PTRACE_MODE_ATTACH, SOCK_CGROUP_OFFSET, SOCKET_SK_OFFSET,
    TASK_CGROUPS_OFFSET, TASK_TGID_OFFSET, UNIX_DENTRY_OFFSET, USERNS_LEVEL_OFFSET, cgroup_id,
    config, inode_id, name_is, read_at, read_at_first, read_via,
};
use crate::maps::PROTECTED;
use crate::{NO_DIGEST, ret};

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
#[inline(always)]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *child, unsigned int mode). Attach mode covers
    // PTRACE_ATTACH/SEIZE and writing /proc/PID/mem; reading status stays allowed.
    tamper_check(&ctx, hook::PTRACE_ACCESS_CHECK, |ctx| {
        let mode: u32 = ctx.arg(1);
        mode & PTRACE_MODE_ATTACH != 0
    })
}

#[lsm(hook = "ptrace_traceme")]
#[inline(always)]
pub fn ptrace_traceme(ctx: LsmContext) -> i32 {
    // PTRACE_TRACEME hands the caller to its parent without an access check on the
    // parent's side: refuse it like an attach.
    tamper_check(&ctx, hook::PTRACE_TRACEME, |_| true)
}

#[lsm(hook = "bpf")]
#[inline(always)]
pub fn bpf(ctx: LsmContext) -> i32 {
    // Governed tasks may not use bpf() at all: it is how the enforcer's own programs,
    // links and maps would be detached or changed.
    tamper_check(&ctx, hook::BPF, |_| true)
}

#[lsm(hook = "task_kill")]
#[inline(always)]
pub fn task_kill(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *p, struct kernel_siginfo *info, int sig, cred). Only
    // signals from userspace get here (kill, tgkill, sigqueue, pidfd_send_signal, and
    // F_SETOWN's SIGIO through `file_send_sigiotask`); the kernel's own (SIGCHLD, job
    // control from a terminal) do not. Signal 0 only asks whether a process exists.
    let sig: u32 = ctx.arg(2);
    act_on(hook::TASK_KILL, ctx.arg(0), sig != 0)
}

/// A governed task acting on `task`: refused when `task` is the agent (always), or lies
/// outside the caller's scope (when `effect`: the act changes the target). Stopping,
/// starving or killing what runs outside is how a scope would reach the host's services,
/// the operator's sessions among them.
#[inline(always)]
fn act_on(which: u32, task: *const u8, effect: bool) -> i32 {
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    let verdict = if protected(task) {
        Verdict::deny(reason::TAMPER)
    } else if effect && !task_in_scope(task, scope_id) {
        Verdict::deny(reason::OUTSIDE)
    } else {
        return 0;
    };
    refuse(which, scope_id, policy, verdict, ptr::null())
}

/// Whether `task` runs in scope `scope_id` or below it; unreadable counts as outside.
#[inline(always)]
fn task_in_scope(task: *const u8, scope_id: u64) -> bool {
    // SAFETY: probe reads from the hook's own task.
    unsafe {
        let cgroup: Option<*const u8> =
            read_via(task, &TASK_CGROUPS_OFFSET, &CSS_SET_DFL_CGRP_OFFSET);
        cgroup.and_then(|c| cgroup_in_scope(c, scope_id)) == Some(true)
    }
}

/// Refuses `which` to every governed task, with `why` and `detail`.
#[inline(always)]
fn refuse_governed(which: u32, why: u32, detail: u64) -> i32 {
    match governing_scope() {
        Some((scope_id, policy)) => refuse(
            which,
            scope_id,
            policy,
            Verdict::deny_with(why, detail),
            ptr::null(),
        ),
        None => 0,
    }
}

/// `CAP_OPT_NOAUDIT`: a capability probe, not a request (include/linux/security.h).
const CAP_OPT_NOAUDIT: u32 = 1 << 1;

#[lsm(hook = "capable")]
#[inline(always)]
pub fn capable(ctx: LsmContext) -> i32 {
    // Arguments: (const struct cred *cred, struct user_namespace *ns, int cap,
    // unsigned int opts). Capabilities over the initial user namespace reach the host: the
    // refused ones (enforcer_common::capability) are each a way into the kernel, the
    // clock, the disks, the scheduler or the enforcer, and no agent or CI job needs them.
    // A capability in a user namespace of the task's own governs only that namespace.
    let cap: u32 = ctx.arg(2);
    if !capability::refused(cap) {
        return 0;
    }
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    let ns: *const u8 = ctx.arg(1);
    // SAFETY: probe read of the hook's own argument; unreadable counts as the host's.
    let level: u32 = unsafe { read_at(ns, config(&USERNS_LEVEL_OFFSET)) }.unwrap_or(0);
    if level != 0 {
        return 0;
    }
    let opts: u32 = ctx.arg(3);
    let verdict = Verdict::deny_with(reason::CAPABILITY, u64::from(cap));
    if opts & CAP_OPT_NOAUDIT != 0 {
        // A probe ("may I?"), answered without a record: it is asked often and is no
        // attempt.
        return refuse_quietly(&policy, &verdict);
    }
    refuse(hook::CAPABLE, scope_id, policy, verdict, ptr::null())
}

/// The hook's answer without a report: a denial as the policy's mode makes it.
#[inline(always)]
fn refuse_quietly(policy: &enforcer_common::ScopePolicy, verdict: &Verdict) -> i32 {
    if crate::decide::monitoring(policy, verdict.reason) {
        0
    } else {
        crate::decide::denied::<{ crate::kmem::EPERM }>()
    }
}

#[lsm(hook = "sb_mount")]
#[inline(always)]
pub fn sb_mount(_ctx: LsmContext) -> i32 {
    // mount(2) in any form (new, bind, move, remount, propagation), in any mount
    // namespace: a mount changes what paths mean, and in a user namespace it is how FUSE
    // and overlayfs would put content under a checked mapping.
    refuse_governed(hook::SB_MOUNT, reason::MOUNT, 0)
}

#[lsm(hook = "sb_umount")]
#[inline(always)]
pub fn sb_umount(_ctx: LsmContext) -> i32 {
    // Unmounting bpffs, or whatever hides a path, is as much a change of meaning.
    refuse_governed(hook::SB_UMOUNT, reason::MOUNT, 0)
}

#[lsm(hook = "sb_pivotroot")]
#[inline(always)]
pub fn sb_pivotroot(_ctx: LsmContext) -> i32 {
    refuse_governed(hook::SB_PIVOTROOT, reason::MOUNT, 0)
}

#[lsm(hook = "move_mount")]
#[inline(always)]
pub fn move_mount(_ctx: LsmContext) -> i32 {
    // The new mount API attaches fsmount(2) and open_tree(2) results only through
    // move_mount(2).
    refuse_governed(hook::MOVE_MOUNT, reason::MOUNT, 0)
}

#[lsm(hook = "sb_kern_mount")]
#[inline(always)]
pub fn sb_kern_mount(_ctx: LsmContext) -> i32 {
    // A superblock set up in the task's context: fsconfig(FSCONFIG_CMD_CREATE), and
    // automounts it would trigger.
    refuse_governed(hook::SB_KERN_MOUNT, reason::MOUNT, 0)
}

/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h): clone3 straight into another cgroup.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[lsm(hook = "task_alloc")]
#[inline(always)]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *task, unsigned long clone_flags). clone3 can place
    // the child in any cgroup its caller may write: out of the scope.
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_INTO_CGROUP == 0 {
        return 0;
    }
    refuse_governed(hook::TASK_ALLOC, reason::ESCAPE, flags >> 32)
}

#[lsm(hook = "kernel_module_request")]
#[inline(always)]
pub fn kernel_module_request(_ctx: LsmContext) -> i32 {
    // Module autoloading runs modprobe outside the scope, on the task's behalf.
    refuse_governed(hook::KERNEL_MODULE_REQUEST, reason::KERNEL, 0)
}

#[lsm(hook = "kernel_load_data")]
#[inline(always)]
pub fn kernel_load_data(ctx: LsmContext) -> i32 {
    // Arguments: (enum kernel_load_data_id id, bool contents): init_module, kexec_load,
    // firmware and policy blobs from memory.
    let id: u32 = ctx.arg(0);
    refuse_governed(hook::KERNEL_LOAD_DATA, reason::KERNEL, u64::from(id))
}

#[lsm(hook = "kernel_read_file")]
#[inline(always)]
pub fn kernel_read_file(ctx: LsmContext) -> i32 {
    // Arguments: (struct file *file, enum kernel_read_file_id id, bool contents):
    // finit_module, kexec_file_load, firmware, policies read from a file.
    let id: u32 = ctx.arg(1);
    refuse_governed(hook::KERNEL_READ_FILE, reason::KERNEL, u64::from(id))
}

#[lsm(hook = "locked_down")]
#[inline(always)]
pub fn locked_down(ctx: LsmContext) -> i32 {
    // Argument: (enum lockdown_reason what). The kernel asks before every operation that
    // lockdown would forbid (/dev/mem, ioperm, kprobes, tracefs, debugfs writes, kexec,
    // hibernation, module parameters...): for governed tasks the answer is always the
    // one of full lockdown.
    let what: u32 = ctx.arg(0);
    refuse_governed(hook::LOCKED_DOWN, reason::KERNEL, u64::from(what))
}

#[lsm(hook = "perf_event_open")]
#[inline(always)]
pub fn perf_event_open(_ctx: LsmContext) -> i32 {
    // Arguments: ([struct perf_event_attr *attr,] int type): newer kernels (6.19) pass the
    // type alone, so it has no one position and the report leaves it out. kprobes,
    // uprobes and tracepoints attach through perf too.
    refuse_governed(hook::PERF_EVENT_OPEN, reason::KERNEL, 0)
}

/// Whether `task` is one of the processes governed tasks may not touch (the agent).
#[inline(always)]
fn protected(task: *const u8) -> bool {
    // SAFETY: probe read of the hook's own task argument.
    let tgid: Option<u32> = unsafe { read_at(task, config(&TASK_TGID_OFFSET)) };
    // SAFETY: the value is only tested for presence.
    tgid.is_none_or(|t| unsafe { PROTECTED.get(&t) }.is_some())
}

#[lsm(hook = "task_setscheduler")]
#[inline(always)]
pub fn task_setscheduler(ctx: LsmContext) -> i32 {
    // Argument: (struct task_struct *p): scheduling policy and CPU affinity.
    act_on(hook::TASK_SETSCHEDULER, ctx.arg(0), true)
}

#[lsm(hook = "task_setnice")]
#[inline(always)]
pub fn task_setnice(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *p, int nice).
    act_on(hook::TASK_SETNICE, ctx.arg(0), true)
}

#[lsm(hook = "task_setioprio")]
#[inline(always)]
pub fn task_setioprio(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *p, int ioprio).
    act_on(hook::TASK_SETIOPRIO, ctx.arg(0), true)
}

#[lsm(hook = "file_send_sigiotask")]
#[inline(always)]
pub fn file_send_sigiotask(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *tsk, struct fown_struct *fown, int sig). F_SETOWN,
    // FIOSETOWN and SIOCSPGRP make a file signal a process of the caller's choosing, with
    // F_SETSIG any signal, whenever I/O happens: a kill(2) that task_kill never sees. The
    // hook runs for whoever triggers the I/O (even an interrupt), so the rule is the
    // target's: the agent takes no signal from a file, and it sets no owner itself.
    let target: *const u8 = ctx.arg(0);
    if !protected(target) {
        return 0;
    }
    match governing_scope() {
        Some((scope_id, policy)) => refuse(
            hook::FILE_SEND_SIGIOTASK,
            scope_id,
            policy,
            Verdict::deny(reason::TAMPER),
            ptr::null(),
        ),
        None => crate::decide::denied::<{ crate::kmem::EPERM }>(),
    }
}

#[lsm(hook = "task_prlimit")]
#[inline(always)]
pub fn task_prlimit(_ctx: LsmContext) -> i32 {
    // Arguments: (const struct cred *cred, const struct cred *tcred, unsigned int flags).
    // Only prlimit(2) on another process gets here (a process's own limits skip the
    // hook), and the target is named by credentials alone: a file-size or descriptor limit
    // on the agent would stop its audit log, so governed tasks may set no other process's
    // limits.
    tamper_check(&_ctx, hook::TASK_PRLIMIT, |_| true)
}

/// Whether cgroup `cgroup` is scope `scope_id` or lies below it.
#[inline(always)]
unsafe fn cgroup_in_scope(mut cgroup: *const u8, scope_id: u64) -> Option<bool> {
    let mut level = 0;
    while level < MAX_CGROUP_WALK {
        if cgroup.is_null() {
            return Some(false);
        }
        // SAFETY: probe reads throughout.
        unsafe {
            if cgroup_id(cgroup)? == scope_id {
                return Some(true);
            }
            cgroup = read_at(cgroup, config(&CGROUP_PARENT_OFFSET))?;
        }
        level += 1;
    }
    Some(false)
}

/// A Unix socket a governed task would reach: allowed when a task of its own scope made
/// it, or when it is one the operator allows (journald's). Anything else is a deputy
/// outside the scope that may act for it (systemd, D-Bus, container runtimes).
#[inline(always)]
fn unix_peer(which: u32, peer: *const u8) -> i32 {
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    // SAFETY: probe reads of the hook's own socket.
    let allowed = unsafe {
        let owner: Option<*const u8> = read_at(peer, config(&SOCK_CGROUP_OFFSET));
        let ours = owner.and_then(|c| cgroup_in_scope(c, scope_id)) == Some(true);
        ours || {
            let dentry: Option<*const u8> = read_at(peer, config(&UNIX_DENTRY_OFFSET));
            let inode: Option<*const u8> = dentry
                .filter(|d| !d.is_null())
                .and_then(|d| read_at(d, config(&DENTRY_INODE_OFFSET)));
            inode
                .filter(|i| !i.is_null())
                .and_then(|i| inode_id(i))
                .is_some_and(|(dev, ino)| has_rule(scope_id, dev, ino, inode_rule::SOCKET))
        }
    };
    if allowed {
        return 0;
    }
    refuse(
        which,
        scope_id,
        policy,
        Verdict::deny(reason::DEPUTY),
        ptr::null(),
    )
}

#[lsm(hook = "unix_stream_connect")]
#[inline(always)]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    // Arguments: (struct sock *sock, struct sock *other, struct sock *newsk): `other`
    // listens.
    unix_peer(hook::UNIX_STREAM_CONNECT, ctx.arg(1))
}

#[lsm(hook = "unix_may_send")]
#[inline(always)]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    // Arguments: (struct socket *sock, struct socket *other): datagrams, connected or
    // addressed.
    let other: *const u8 = ctx.arg(1);
    // SAFETY: probe read of the hook's own socket.
    let peer: *const u8 =
        unsafe { read_at(other, config(&SOCKET_SK_OFFSET)) }.unwrap_or(ptr::null());
    unix_peer(hook::UNIX_MAY_SEND, peer)
}

/// `TIOCSTI` and `TIOCLINUX` (include/uapi/asm-generic/ioctls.h).
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;

/// Terminal input injection: TIOCSTI pushes characters into a terminal's input as if
/// typed, and TIOCLINUX pastes a virtual console's selection. Whatever shell reads that
/// terminal next (the operator's, outside the scope, once the scope's process exits)
/// runs them. The kernel lets a process do it to its own controlling terminal, which a
/// scope started from an interactive shell shares with it.
#[inline(always)]
pub(crate) fn terminal_injection(cmd: u32) -> bool {
    cmd == TIOCSTI || cmd == TIOCLINUX
}

#[lsm(hook = "key_alloc")]
#[inline(always)]
pub fn key_alloc(ctx: LsmContext) -> i32 {
    // Arguments: (struct key *key, const struct cred *cred, unsigned long flags). A
    // request_key(2) that finds no key makes the kernel run /sbin/request-key as root in the
    // root cgroup, with the type, description and callout data the caller chose. The
    // authorization key it allocates first, in the caller's context, is the one sign of
    // that upcall.
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    let key: *const u8 = ctx.arg(0);
    // SAFETY: probe reads from the hook's own key.
    let upcall = unsafe {
        let kind: Option<*const u8> = read_at(key, config(&KEY_TYPE_OFFSET));
        let name: *const u8 = kind
            .and_then(|t| read_at_first(t, &KEY_TYPE_NAME_OFFSET))
            .unwrap_or(ptr::null());
        name_is(name, b".request_key_auth\0") != Some(false)
    };
    if !upcall {
        return 0;
    }
    refuse(
        hook::KEY_ALLOC,
        scope_id,
        policy,
        Verdict::deny(reason::DEPUTY),
        ptr::null(),
    )
}
