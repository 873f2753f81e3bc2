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

mod containment;
mod decide;
mod digest_cache;
mod exec;
mod grants;
mod kmem;
mod lineage;
mod mapping;
mod maps;

use enforcer_common::DIGEST_LEN;

/// Turns a hook's `Result` into its return value.
pub(crate) fn ret(result: Result<i32, i32>) -> i32 {
    match result {
        Ok(r) | Err(r) => r,
    }
}

pub(crate) const NO_DIGEST: [u8; DIGEST_LEN] = [0; DIGEST_LEN];

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Nothing in this program can panic; if LLVM ever emitted a call here the verifier would
    // reject the program at load, which is the failure we want to see.
    unsafe { core::hint::unreachable_unchecked() }
}
