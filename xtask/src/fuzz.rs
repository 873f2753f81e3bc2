//! `cargo xtask fuzz TARGET SECONDS`: runs a cargo-fuzz target from `fuzz/` for a bounded
//! time, installing cargo-fuzz first if it is missing.
//!
//! cargo-fuzz needs nightly compiler flags (`-Zsanitizer=address`); `RUSTC_BOOTSTRAP=1`
//! lets the stable toolchain accept them, so no nightly toolchain is needed. The agent's
//! build script would build the eBPF object, which parsers do not need, so an empty
//! placeholder object is handed to it instead.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd;
use crate::workspace::{Workspace, cargo};

/// Runs fuzz target `target` for `seconds` seconds; fails if it finds a crash (libFuzzer
/// saves the input under fuzz/artifacts/TARGET/).
pub(crate) fn run(target: &str, seconds: u64) -> Result<()> {
    let ws = Workspace::load()?;
    let fuzz_dir = ws.root.join("fuzz");
    ensure_cargo_fuzz()?;

    // Found inputs go to corpus/ (ignored by git); seeds/ holds the committed examples.
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let placeholder = fuzz_dir.join("target").join("no-ebpf.o");
    write_placeholder(&placeholder)?;

    let mut fuzz = cargo();
    fuzz.current_dir(&ws.root)
        .args(["fuzz", "run", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .arg(target)
        .arg(&corpus);
    let seeds = fuzz_dir.join("seeds").join(target);
    if seeds.is_dir() {
        fuzz.arg(&seeds);
    }
    fuzz.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .env("RUSTC_BOOTSTRAP", "1")
        .env("ENFORCER_EBPF_OBJECT", &placeholder);
    cmd::run(&mut fuzz)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = cmd::capture(cargo().args(["fuzz", "--version"]))
        .map(|out| out.status.success())
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    cmd::run(cargo().args(["install", "cargo-fuzz", "--locked"]))
}

fn write_placeholder(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, b"").with_context(|| format!("cannot write {}", path.display()))
}
