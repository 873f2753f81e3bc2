//! Executable memory: file mappings must be granted like execs; anonymous, writable and
//! late-executable memory is refused unless the scope opts in.

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{hook, reason, scope_flags};

use crate::decide::{Outcome, Verdict, governing_scope};
use crate::grants::file_verdict;
use crate::kmem::{
    MAP_ANONYMOUS, PROT_EXEC, PROT_WRITE, VM_EXEC, VMA_FILE_OFFSET, VMA_FLAGS_OFFSET, config,
    file_name, read_at,
};
use crate::{NO_DIGEST, ret};

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
