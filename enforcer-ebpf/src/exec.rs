//! Exec: `bprm_check_security` runs for a script and again for its interpreter, so both
//! must be granted.

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{hook, reason};

use crate::decide::{Outcome, Verdict, governing_scope};
use crate::grants::file_verdict;
use crate::kmem::{BPRM_FILE_OFFSET, BPRM_INTERP_OFFSET, config, read_at};
use crate::{NO_DIGEST, ret};

#[lsm(hook = "bprm_check_security", sleepable)]
#[inline(always)]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    // SAFETY: argument 0 is `struct linux_binprm *bprm`.
    ret(unsafe { try_bprm_check(&ctx) })
}

#[inline(always)]
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
