//! Executable memory: file mappings must be granted like execs; anonymous, writable and
//! late-executable memory is refused unless the scope opts in.

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_send_signal},
    macros::{fentry, lsm, map},
    maps::LruHashMap,
    programs::{FEntryContext, LsmContext},
};
use enforcer_common::{hook, reason, scope_flags};

use crate::codeguard::{Guarded, forget, guard, release};
use crate::decide::{Outcome, Verdict, governing_scope};
use crate::grants::file_verdict;
use crate::kmem::{
    BPRM_VMA_OFFSET, FILE_INODE_OFFSET, MAP_ANONYMOUS, PROT_EXEC, PROT_WRITE, QSTR_NAME_OFFSET,
    READ_IMPLIES_EXEC, TASK_PERSONALITY_OFFSET, TMPFS_MAGIC, VM_EXEC, VMA_FILE_OFFSET,
    VMA_FLAGS_OFFSET, config, file_name, fs_magic, link_count, name_is, name_starts_with, read_at,
    read_at_first,
};
use crate::{NO_DIGEST, ret};

#[lsm(hook = "mmap_file", sleepable)]
#[inline(always)]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    // SAFETY: arguments are (struct file *file, reqprot, prot, flags).
    ret(unsafe { try_mmap_file(&ctx) })
}

#[inline(always)]
unsafe fn try_mmap_file(ctx: &LsmContext) -> Result<i32, i32> {
    // `prot` is what the mapping will get, READ_IMPLIES_EXEC included.
    let prot: u64 = ctx.arg(2);
    let Some((scope_id, policy)) = governing_scope() else {
        return Ok(0);
    };
    if let Some(refused) = unsafe { executable_stack(scope_id, policy) } {
        return refused;
    }
    if prot & PROT_EXEC == 0 {
        return Ok(0);
    }
    // Anonymous memory is told by the flag, not by a null `file`: newer verifiers take the
    // argument for non-null and drop such a check (MAP_ANONYMOUS|MAP_HUGETLB even comes
    // with a hugetlbfs file).
    let flags: u64 = ctx.arg(3);
    let file: *mut c_void = ctx.arg(0);
    let mut digest = NO_DIGEST;
    let anon_exec_denied = policy.flags & scope_flags::ALLOW_ANON_EXEC == 0;
    let path = if flags & MAP_ANONYMOUS != 0 {
        ptr::null()
    } else {
        unsafe { file_name(file.cast()) }
    };
    let verdict = if flags & MAP_ANONYMOUS != 0 {
        Verdict::allow_unless(anon_exec_denied, reason::ANON_EXEC)
    } else if !anon_exec_denied {
        // The scope accepts code that changes (a JIT): only the content rule applies.
        unsafe { file_verdict(file, scope_id, policy, &mut digest) }
    } else if prot & PROT_WRITE != 0 || unsafe { mutable_by_nature(file) } {
        // Writable and executable at once, a file with no name (memfd, deleted: its
        // writers are not counted) or SysV shared memory (every attachment may write):
        // whatever it held, the process can write any code there. That is anonymous
        // executable memory in all but name.
        Verdict::deny(reason::ANON_EXEC)
    } else {
        // SAFETY: `file` is the hook's own `struct file *` argument, trusted.
        match unsafe { guard(file, scope_id) } {
            Guarded::Yes => {
                // Hashed only now: nobody can have written it since the guard went up.
                let verdict = unsafe { file_verdict(file, scope_id, policy, &mut digest) };
                if !verdict.allowed {
                    release(file);
                }
                verdict
            }
            Guarded::Writable => Verdict::deny(reason::WRITABLE_CODE),
            Guarded::Failed => Verdict::deny(reason::NOT_CONFIGURED),
        }
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

/// Files whose content changes without an open for writing: no name left (memfd and
/// deleted files are pseudo files, and `i_writecount` does not count their writers), or a
/// SysV shared memory segment (`SYSV<key>` on the kernel's tmpfs mount: each attachment
/// is a new file over the same pages, writable ones included).
#[inline(always)]
unsafe fn mutable_by_nature(file: *mut c_void) -> bool {
    let Some(links) = (unsafe { link_count(file.cast()) }) else {
        return true;
    };
    if links == 0 {
        return true;
    }
    let inode: Option<*const u8> = unsafe { read_at(file.cast(), config(&FILE_INODE_OFFSET)) };
    let tmpfs = inode.and_then(|i| unsafe { fs_magic(i) }) == Some(TMPFS_MAGIC);
    tmpfs && unsafe { name_starts_with(file_name(file.cast()), b"SYSV") }.unwrap_or(true)
}

/// The exec's stack, as `bprm_committed_creds` saw it, by tgid: checked by the exec's first
/// mapping.
#[map(name = "ENFORCER_EXEC_STACKS")]
static EXEC_STACKS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16_384, 0);

#[lsm(hook = "bprm_committed_creds")]
#[inline(always)]
pub fn bprm_committed_creds(ctx: LsmContext) -> i32 {
    // Argument: (struct linux_binprm *bprm). Past the point of no return, before
    // setup_arg_pages makes the stack executable for a program whose PT_GNU_STACK asks for
    // it (or a 32-bit one without it): no hook sees that, so the exec's first mapping,
    // which comes right after, looks at the stack.
    let Some((_, policy)) = governing_scope() else {
        return 0;
    };
    if policy.flags & scope_flags::ALLOW_ANON_EXEC != 0 {
        return 0;
    }
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: probe read of the hook's own argument.
    let vma: Option<*const u8> = unsafe { read_at_first(bprm, &BPRM_VMA_OFFSET) };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = EXEC_STACKS.insert(&tgid, &vma.map_or(0, |v| v as u64), 0);
    0
}

/// At an exec's first mapping: refuses it when the new program's stack is executable (the
/// exec then ends with SIGSEGV; it is past its point of no return).
#[inline(always)]
unsafe fn executable_stack(
    scope_id: u64,
    policy: enforcer_common::ScopePolicy,
) -> Option<Result<i32, i32>> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once.
    let vma = unsafe { EXEC_STACKS.get(&tgid) }.copied()?;
    let _ = EXEC_STACKS.remove(&tgid);
    // SAFETY: probe read of the stack vma of the current mm.
    let flags: Option<u64> = unsafe { read_at(vma as *const u8, config(&VMA_FLAGS_OFFSET)) };
    if flags.is_some_and(|f| f & VM_EXEC == 0) {
        return None;
    }
    Some(
        Outcome {
            which: hook::MMAP_FILE,
            scope_id,
            policy,
            verdict: Verdict::deny_with(reason::ANON_EXEC, EXEC_STACK_DETAIL),
            digest: &NO_DIGEST,
            path: ptr::null(),
        }
        .finish(),
    )
}

/// `ExecEvent::detail` of an executable-stack refusal.
const EXEC_STACK_DETAIL: u64 = 0x5354_4143_4b; // "STACK"

#[lsm(hook = "mmap_backing_file")]
#[inline(always)]
pub fn mmap_backing_file(ctx: LsmContext) -> i32 {
    // Arguments: (struct vm_area_struct *vma, struct file *backing_file, struct file
    // *user_file); 6.12+. An overlayfs mapping really maps the layer's file: it is guarded
    // like the overlay's, so a write to it through its own path is refused too, and it must
    // lie on a local filesystem and have no writer.
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    if policy.flags & scope_flags::ALLOW_ANON_EXEC != 0 {
        return 0;
    }
    let vma: *const u8 = ctx.arg(0);
    // SAFETY: probe read of the hook's own vma.
    let flags: Option<u64> = unsafe { read_at(vma, config(&VMA_FLAGS_OFFSET)) };
    if flags.is_some_and(|f| f & VM_EXEC == 0) {
        return 0;
    }
    let backing: *mut c_void = ctx.arg(1);
    // SAFETY: the hook's own file.
    let verdict = match unsafe { guard(backing, scope_id) } {
        Guarded::Yes => return 0,
        Guarded::Writable => Verdict::deny(reason::WRITABLE_CODE),
        Guarded::Failed => Verdict::deny(reason::NOT_CONFIGURED),
    };
    ret(Outcome {
        which: hook::MMAP_BACKING_FILE,
        scope_id,
        policy,
        verdict,
        digest: &NO_DIGEST,
        path: unsafe { file_name(backing.cast()) },
    }
    .finish())
}

#[lsm(hook = "file_free_security")]
#[inline(always)]
pub fn file_free_security(ctx: LsmContext) -> i32 {
    // Argument: (struct file *file). A file that guarded its inode is gone.
    let file: *mut c_void = ctx.arg(0);
    release(file);
    0
}

#[lsm(hook = "inode_free_security")]
#[inline(always)]
pub fn inode_free_security(ctx: LsmContext) -> i32 {
    // Argument: (struct inode *inode). Its guard count goes with it.
    let inode: *mut c_void = ctx.arg(0);
    // SAFETY: the hook's own inode.
    unsafe { forget(inode) };
    0
}

/// Executable brk areas announced by `vm_brk_flags`, by thread id: the address they are
/// to start at. The `mmap_addr` check that follows within the same call consumes it.
#[map(name = "ENFORCER_EXEC_BRKS")]
static EXEC_BRKS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4_096, 0);

#[fentry(function = "vm_brk_flags")]
#[inline(always)]
pub fn vm_brk_flags(ctx: FEntryContext) -> u32 {
    // Arguments: (unsigned long addr, unsigned long request, flags): `vm_flags_t` up to
    // 6.19, `bool is_exec` after; only VM_EXEC (or true) passes the function's own check.
    // The ELF loader calls it to zero-fill a segment whose memory is longer than its file
    // part, with VM_EXEC when the segment is executable: anonymous, writable and
    // executable memory that no LSM hook sees the protection of. So the area is noted
    // here, and the `mmap_addr` hook, which check_brk_limits reaches next with the same
    // address, refuses it; the exec, past its point of no return, then dies of SIGSEGV
    // before the program runs. A tracing program cannot refuse by itself.
    let request: u64 = ctx.arg(1);
    let flags: u64 = ctx.arg(2);
    // A bool argument defines only its low byte; VM_EXEC lies within it.
    if request == 0 || flags & 0xff == 0 {
        return 0;
    }
    let Some((_, policy)) = governing_scope() else {
        return 0;
    };
    if policy.flags & scope_flags::ALLOW_ANON_EXEC != 0 {
        return 0;
    }
    let addr: u64 = ctx.arg(0);
    let tid = bpf_get_current_pid_tgid() as u32;
    if EXEC_BRKS.insert(&tid, &addr, 0).is_err() {
        // Unnoted, the area would pass: the task dies instead (fail closed).
        // SAFETY: plain helper call on the current task.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}

#[lsm(hook = "mmap_addr")]
#[inline(always)]
pub fn mmap_addr(ctx: LsmContext) -> i32 {
    // Argument: (unsigned long addr). Runs for every mmap and for brk (through
    // get_unmapped_area in check_brk_limits). Under READ_IMPLIES_EXEC the heap brk grows
    // is executable (VM_DATA_DEFAULT_FLAGS), and no other hook sees brk: a task with that
    // personality maps nothing in a scope that refuses anonymous executable memory. An
    // executable zero-fill of the ELF loader ([`vm_brk_flags`]) is refused the same way.
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    if policy.flags & scope_flags::ALLOW_ANON_EXEC != 0 {
        return 0;
    }
    let addr: u64 = ctx.arg(0);
    let detail = if unsafe { executable_brk(addr) } {
        EXEC_BRK_DETAIL
    } else {
        // SAFETY: probe read of the current task.
        let personality: Option<u32> = unsafe {
            read_at(
                bpf_get_current_task() as *const u8,
                config(&TASK_PERSONALITY_OFFSET),
            )
        };
        if personality.is_some_and(|p| p & READ_IMPLIES_EXEC == 0) {
            return 0;
        }
        u64::from(READ_IMPLIES_EXEC)
    };
    ret(Outcome {
        which: hook::MMAP_ADDR,
        scope_id,
        policy,
        verdict: Verdict::deny_with(reason::ANON_EXEC, detail),
        digest: &NO_DIGEST,
        path: ptr::null(),
    }
    .finish())
}

/// Whether this thread's `vm_brk_flags` announced an executable area at `addr`. The note
/// goes either way: one left by a call that failed before its check names no later one.
#[inline(always)]
unsafe fn executable_brk(addr: u64) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out at once.
    let Some(noted) = unsafe { EXEC_BRKS.get(&tid) }.copied() else {
        return false;
    };
    let _ = EXEC_BRKS.remove(&tid);
    noted == addr
}

/// `SIGKILL` from include/uapi/asm-generic/signal.h.
const SIGKILL: u32 = 9;

/// `ExecEvent::detail` of a refused executable zero-fill.
const EXEC_BRK_DETAIL: u64 = 0x42_524b_4558; // "BRKEX"

#[lsm(hook = "inode_init_security_anon")]
#[inline(always)]
pub fn inode_init_security_anon(ctx: LsmContext) -> i32 {
    // Arguments: (struct inode *inode, const struct qstr *name, const struct inode
    // *context_inode). userfaultfd fills the pages of a mapping from outside it (its
    // handler chooses their bytes), shmem-backed executable mappings included: refused
    // where anonymous executable memory is. io_uring likewise (below).
    let Some((scope_id, policy)) = governing_scope() else {
        return 0;
    };
    if policy.flags & scope_flags::ALLOW_ANON_EXEC != 0 {
        return 0;
    }
    let qstr: *const u8 = ctx.arg(1);
    // SAFETY: probe reads of the hook's own argument.
    let name: *const u8 =
        unsafe { read_at(qstr, config(&QSTR_NAME_OFFSET)) }.unwrap_or(ptr::null());
    // io_uring's fixed buffers pin pages the kernel writes into long after the check: a
    // page of a file once mapped writable, later mapped executable, changes under it.
    let why = if unsafe { name_is(name, b"[userfaultfd]\0") } != Some(false) {
        reason::USERFAULTFD
    } else if unsafe { name_is(name, b"[io_uring]\0") } != Some(false) {
        reason::PINNED_IO
    } else {
        return 0;
    };
    ret(Outcome {
        which: hook::INODE_INIT_SECURITY_ANON,
        scope_id,
        policy,
        verdict: Verdict::deny(why),
        digest: &NO_DIGEST,
        path: name,
    }
    .finish())
}

#[lsm(hook = "file_mprotect")]
#[inline(always)]
pub fn file_mprotect(ctx: LsmContext) -> i32 {
    // SAFETY: arguments are (struct vm_area_struct *vma, reqprot, prot).
    ret(unsafe { try_file_mprotect(&ctx) })
}

#[inline(always)]
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
