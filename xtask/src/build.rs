//! `cargo xtask build`: the release binaries that go into the VM.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::cmd;
use crate::workspace::{Workspace, cargo};

/// Built binaries and where the initramfs installs them.
pub(crate) struct Binary {
    pub path: PathBuf,
    pub install_dir: &'static str,
}

pub(crate) fn build(ws: &Workspace) -> Result<()> {
    // enforcer/build.rs builds and embeds the eBPF object, so this is the whole build.
    cmd::run(cargo().current_dir(&ws.root).args([
        "build",
        "--release",
        "--package",
        "enforcer",
        "--package",
        "vm-tests",
    ]))
    .context("the build failed; if a tool is missing, run `cargo xtask setup`")?;
    binaries(ws).map(drop)
}

/// Every binary of the enforcer and vm-tests packages, as built by [`build`].
pub(crate) fn binaries(ws: &Workspace) -> Result<Vec<Binary>> {
    let mut out = Vec::new();
    for package in ["enforcer", "vm-tests"] {
        // vm-bench is for `cargo xtask bench`, which packs its own initramfs.
        for name in ws.bins(package)?.into_iter().filter(|n| *n != "vm-bench") {
            // The agent and the runner go on PATH; the runner's other binaries are fixtures
            // that scenarios exec by path.
            let install_dir = match (package, name) {
                ("enforcer", _) | ("vm-tests", "vm-tests") => "/usr/bin",
                _ => "/usr/libexec/enforcer-tests",
            };
            let path = ws.release_dir().join(name);
            if !path.is_file() {
                bail!("{} is missing: run `cargo xtask build`", path.display());
            }
            out.push(Binary { path, install_dir });
        }
    }
    Ok(out)
}
