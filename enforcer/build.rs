//! Builds the kernel programs (`enforcer-ebpf`) and hands the object to the agent, which
//! embeds it, so the agent binary is all an operator installs.
//!
//! The BPF target needs `-Z build-std=core` and a rustc whose library sources are present:
//! rustup here cannot fetch rust-src, so the build uses Debian's rustc-web (`/usr/bin/rustc`,
//! with rust-web-src) under RUSTC_BOOTSTRAP, and bpf-linker. `cargo xtask setup` installs
//! them. `ENFORCER_EBPF_OBJECT=path` skips the build and embeds a prebuilt object instead.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_TARGET: &str = "bpfel-unknown-none";
const BPF_RUSTC: &str = "/usr/bin/rustc";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("enforcer/ lives in the workspace root");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let dest = out_dir.join("enforcer.bpf.o");

    println!("cargo:rerun-if-env-changed=ENFORCER_EBPF_OBJECT");
    if let Some(prebuilt) = env::var_os("ENFORCER_EBPF_OBJECT") {
        copy(Path::new(&prebuilt), &dest);
        return;
    }
    for dir in ["enforcer-ebpf/src", "enforcer-common/src"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    for file in [
        "enforcer-ebpf/Cargo.toml",
        "enforcer-common/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(file).display());
    }

    if !Path::new(BPF_RUSTC).exists() {
        fail("Debian's rustc-web is not installed (no /usr/bin/rustc)");
    }
    // A separate target directory: the outer build holds the lock on the usual one.
    let target_dir = workspace.join("target").join("ebpf");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--package", "enforcer-ebpf", "--target", BPF_TARGET])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .env("RUSTC", BPF_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS", "fallback")
        // BTF lets the kernel verifier and tools name our maps and types; BPF ISA v3 gives
        // atomic fetch-and-add (exec ids), which every supported kernel (5.18+) has.
        // bpf-linker passes LLVM --bpf-expand-memcpy-in-order by default, and with it LLVM 22
        // leaves every memset to a call of compiler_builtins' global `memset`: 6.1's
        // verifier refuses a global function taking a pointer. Without the flag LLVM
        // expands memset and memcpy into plain stores again. Warnings are errors here: the
        // kernel crate has no clippy run of its own (see xtask lint).
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-C\x1fdebuginfo=2\x1f-C\x1flink-arg=--btf\x1f-C\x1ftarget-cpu=v3\x1f-C\x1flink-arg=--disable-expand-memcpy-in-order\x1f-D\x1fwarnings",
        );
    // The outer build's compiler settings (clippy's wrapper, host flags, coverage) must not
    // leak into the BPF build.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run cargo: {e}")));
    if !status.success() {
        fail(&format!("building enforcer-ebpf failed ({status})"));
    }
    copy(
        &target_dir.join(BPF_TARGET).join("release").join("enforcer"),
        &dest,
    );
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        fail(&format!(
            "cannot copy the eBPF object {}: {e}",
            from.display()
        ));
    }
}

fn fail(why: &str) -> ! {
    eprintln!(
        "error: {why}.\n\
         The eBPF program needs Debian's rustc-web, rust-web-src and bpf-linker 0.13 built\n\
         against LLVM 22. Run `cargo xtask setup` (as root on Debian) to install them."
    );
    std::process::exit(1);
}
