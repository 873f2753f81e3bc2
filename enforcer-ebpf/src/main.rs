//! enforcer's kernel side: BPF LSM programs that make execution conditional on
//! authorization inside governed scopes.
//!
//! A task is governed when its cgroup is a governed scope or lies below one. Tasks outside
//! every governed scope are never refused anything (except that nobody may write a file
//! a scope has mapped executable). For a governed task, by module:
//! - [`exec`], [`grants`]: an exec runs only when the SHA-256 of the file has an unexpired
//!   grant in the scope (a script and its interpreter both), from a regular file on a
//!   local filesystem.
//! - [`mapping`], [`codeguard`]: the same rule for executable file mappings, checked only
//!   once no one can write the file, which then stays unwritable while mapped; no
//!   anonymous, writable-and-executable or fileless executable memory, no executable
//!   stack or READ_IMPLIES_EXEC heap, no userfaultfd or io_uring (they fill pages from
//!   outside a mapping), unless the scope opts in (JIT runtimes).
//! - [`writes`]: files change only below the scope's writable roots; devices, bpffs,
//!   cgroupfs, /proc of other processes and the enforcer's secrets are out of reach.
//! - [`containment`]: no leaving the scope, no mounts, no kernel code (modules, kexec,
//!   lockdown reasons, perf), no refused capabilities in the initial user namespace, no
//!   ptrace, no bpf(), no acting on processes outside the scope or on the agent, no
//!   deputies (Unix sockets outside the scope, terminal injection, request-key).
//!
//! Monitor mode and break-glass relax the content rules only ([`decide`]); containment
//! holds in every mode. Every refusal is reported to the agent with its hook and reason,
//! and every path that cannot prove an operation is allowed refuses it.
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

mod codeguard;
mod containment;
mod decide;
mod digest_cache;
mod exec;
mod grants;
mod kmem;
mod lineage;
mod mapping;
mod maps;
mod writes;

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
