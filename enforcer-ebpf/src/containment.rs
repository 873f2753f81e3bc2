//! Containment: what a governed task may not do to the enforcer, to other processes, or
//! to its own code, whatever its privileges.

use core::ptr;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{hook, reason};

use crate::decide::{Outcome, Verdict, governing_scope};
use crate::kmem::{
    BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC, FILE_INODE_OFFSET, FILE_MODE_OFFSET, FMODE_WRITE,
    PROC_SUPER_MAGIC, PTRACE_MODE_ATTACH, TASK_TGID_OFFSET, config, file_name, fs_magic, name_is,
    read_at,
};
use crate::maps::PROTECTED;
use crate::{NO_DIGEST, digest_cache, ret};

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
