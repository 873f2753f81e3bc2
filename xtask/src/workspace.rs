//! Where things are: the workspace root, the target directory and the binaries each package
//! builds, all read from `cargo metadata` so a `[[bin]]` added to a crate is picked up.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cmd;

pub(crate) struct Workspace {
    pub root: PathBuf,
    pub target: PathBuf,
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Metadata {
    workspace_root: PathBuf,
    target_directory: PathBuf,
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

impl Workspace {
    pub(crate) fn load() -> Result<Workspace> {
        // The manifest this xtask was built from pins the workspace, wherever it is run from.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let json = cmd::stdout(
            cargo()
                .args([
                    "metadata",
                    "--no-deps",
                    "--format-version",
                    "1",
                    "--manifest-path",
                ])
                .arg(&manifest),
        )?;
        let meta: Metadata =
            serde_json::from_str(&json).context("cannot parse the output of `cargo metadata`")?;
        Ok(Workspace {
            root: meta.workspace_root,
            target: meta.target_directory,
            packages: meta.packages,
        })
    }

    /// Names of the binaries `package` builds, in manifest order.
    pub(crate) fn bins(&self, package: &str) -> Result<Vec<&str>> {
        let package = self
            .packages
            .iter()
            .find(|p| p.name == package)
            .with_context(|| format!("package `{package}` is not in the workspace"))?;
        Ok(package
            .targets
            .iter()
            .filter(|t| t.kind.iter().any(|k| k == "bin"))
            .map(|t| t.name.as_str())
            .collect())
    }

    pub(crate) fn release_dir(&self) -> PathBuf {
        self.target.join("release")
    }
}

/// The cargo that runs us (set by `cargo run`), so nested builds use the same toolchain.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}
