//! Host tools: Debian packages and bpf-linker. Each is checked first so a second run does
//! nothing; installing needs Debian and root, otherwise we print the command to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::apt::{Apt, Suite};
use crate::cmd;
use crate::workspace::{Workspace, cargo};

/// Debian 12 packages the workflows need: Debian's rustc with library source builds the
/// eBPF crate (rustup has no rust-src here), LLVM 22 is what bpf-linker links against,
/// qemu + busybox-static + cpio boot the VM tests, and systemd brings `systemd-analyze`,
/// which the tests of the agent's unit file run (minimal containers ship without it).
/// chromium and chromium-driver run the web console's tests in a real headless browser
/// (`enforcer/tests/console.rs`): Debian's builds, so no browser is downloaded at test time.
const PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "systemd",
    "chromium",
    "chromium-driver",
    // The Prometheus project's OpenMetrics parser, for the VM's /metrics.
    "python3-prometheus-client",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Any 0.13 patch release links our object the same way.
const BPF_LINKER_ACCEPTED: &str = "bpf-linker 0.13.";

pub(crate) fn host(ws: &Workspace) -> Result<()> {
    packages(ws)?;
    system_lists()?;
    lint_tools()?;
    bpf_linker()
}

/// Where apt keeps the system's lists.
const SYSTEM_LISTS: &str = "/var/lib/apt/lists";
/// Lists older than this are fetched again: Debian's security suite signs its Release for
/// a week, and a day keeps the newest point release in view.
const LISTS_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// `apt-get update` of the system's own lists when they are missing or a day old. The
/// package tests (`bundle create --from-package`, `bundle drift`) authenticate real
/// packages through them, as an operator's host would; an image's lists from months ago
/// have expired signatures. Updating lists installs and removes nothing.
fn system_lists() -> Result<()> {
    let newest = std::fs::read_dir(SYSTEM_LISTS)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with("_InRelease"))
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max();
    let fresh = newest
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < LISTS_AGE);
    if fresh {
        return Ok(());
    }
    println!("setup: apt-get update (the system's package lists are missing or a day old)");
    cmd::run(apt_get().arg("update"))
}

/// rustfmt and clippy, which `cargo xtask lint` and `test` run: rustup's default profile
/// has them; a minimal one gets them added.
fn lint_tools() -> Result<()> {
    let works = |tool: &str| {
        cargo()
            .args([tool, "--version"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    let missing: Vec<&str> = [("fmt", "rustfmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(tool, _)| !works(tool))
        .map(|(_, component)| component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: adding rustup components {}", missing.join(" "));
    cmd::run(
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing),
    )
    .with_context(|| {
        format!(
            "cannot add {}: install them with rustup",
            missing.join(" and ")
        )
    })
}

fn packages(ws: &Workspace) -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        println!("setup: Debian packages present");
        return Ok(());
    }
    let list = missing.join(" ");
    let is_debian = Path::new("/etc/debian_version").exists();
    if !is_debian {
        bail!(
            "missing packages: {list}. This is not Debian: install the equivalents with your \
             package manager, or use Debian 12 where `cargo xtask setup` installs them as root"
        );
    }
    if effective_uid()? != 0 {
        bail!(
            "missing Debian packages: {list}. Install them as root, then run `cargo xtask \
             setup` again:\n  sudo apt-get update && sudo apt-get install -y \
             --no-install-recommends {list}"
        );
    }
    println!("setup: installing {list}");
    cmd::run(apt_get().arg("update"))?;
    install_without_removing(ws, &missing)?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!(
            "apt-get reported success but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// Installs `packages` and never removes one the user has. apt would otherwise take back
/// a package that breaks with what we install: seen with qemu-utils from bookworm-backports,
/// which breaks qemu-system-x86 from bookworm, so a plain install removed it. A package
/// that cannot come from the default suite without a removal comes from the release's
/// backports instead, and if even that needs a removal we stop and say which.
fn install_without_removing(ws: &Workspace, packages: &[&str]) -> Result<()> {
    // `--no-remove` makes apt refuse, rather than remove, whatever the plan is.
    let install = |mut cmd: Command, packages: &[String], simulate: bool| -> Result<bool> {
        cmd.args(["install", "-y", "--no-install-recommends", "--no-remove"]);
        if simulate {
            cmd.arg("--simulate");
            return Ok(cmd::capture(cmd.args(packages))?.status.success());
        }
        cmd::run(cmd.args(packages)).map(|()| true)
    };
    let packages: Vec<String> = packages.iter().map(|p| (*p).to_owned()).collect();
    if install(apt_get(), &packages, true)? {
        return install(apt_get(), &packages, false).map(drop);
    }
    let mut conflicting = Vec::new();
    for package in &packages {
        if !install(apt_get(), std::slice::from_ref(package), true)? {
            conflicting.push(package.clone());
        }
    }
    if conflicting.is_empty() {
        bail!(
            "installing {} together would remove packages you have installed; setup removes \
             nothing: see `apt-get install --simulate {}`",
            packages.join(" "),
            packages.join(" ")
        );
    }
    let codename = release_codename()?;
    let backports = format!("{codename}-backports");
    println!(
        "setup: {} would remove installed packages when taken from {codename}; taking {} from \
         {backports}",
        conflicting.join(" "),
        if conflicting.len() == 1 { "it" } else { "them" }
    );
    let suites = [
        Suite::new(&codename),
        Suite::new(&format!("{codename}-updates")),
        Suite::new(&format!("{codename}-security")),
        Suite::new(&backports),
    ];
    let apt = Apt::new(&ws.target.join("apt").join("setup"), &suites)?;
    apt.update()?;
    // The rest as usual; then the conflicting ones with backports as the target release,
    // so their dependencies come from there too (`pkg/suite` would pin the package alone).
    let plain: Vec<String> = packages
        .iter()
        .filter(|p| !conflicting.contains(p))
        .cloned()
        .collect();
    if !plain.is_empty() {
        install(apt_get(), &plain, false)?;
    }
    let from_backports = || {
        let mut cmd = apt.command("apt-get");
        cmd.args(["-t", &backports]);
        cmd
    };
    if !install(from_backports(), &conflicting, true)? {
        bail!(
            "installing {} would remove packages you have installed, even from {backports}; \
             setup removes nothing: see `apt-get install --simulate {}` and install by hand",
            conflicting.join(" "),
            conflicting.join(" ")
        );
    }
    install(from_backports(), &conflicting, false).map(drop)
}

/// `VERSION_CODENAME` from /etc/os-release (`bookworm` on Debian 12).
fn release_codename() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME")
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-q", "-o", "Dpkg::Use-Pty=0"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn missing_packages() -> Result<Vec<&'static str>> {
    // dpkg-query exits non-zero when a package is unknown; the status lines it does print
    // are what matter, so read them whatever the exit status.
    let out = cmd::capture(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${Status}\\n"])
            .args(PACKAGES),
    )
    .context("cannot ask dpkg which packages are installed (is this Debian?)")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    Ok(PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !installed.lines().any(|l| is_installed_line(l, pkg)))
        .collect())
}

/// A `dpkg-query -f '${Package} ${Status}'` line saying `pkg` is fully installed.
/// Multi-arch packages print as `name:arch`.
fn is_installed_line(line: &str, pkg: &str) -> bool {
    let Some((name, status)) = line.split_once(' ') else {
        return false;
    };
    let name = name.split(':').next().unwrap_or(name);
    name == pkg && status == "install ok installed"
}

fn bpf_linker() -> Result<()> {
    if let Some(version) = bpf_linker_version() {
        if version.starts_with(BPF_LINKER_ACCEPTED) {
            println!("setup: {version} present");
            return Ok(());
        }
        println!("setup: found {version}, replacing it with {BPF_LINKER_VERSION}");
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    // Without LLVM_PREFIX the build finds Debian's default LLVM 14 and fails.
    cmd::run(
        cargo()
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
    .context("cannot build bpf-linker; llvm-22-dev, libpolly-22-dev and libzstd-dev are needed")?;
    match bpf_linker_version() {
        Some(v) if v.starts_with(BPF_LINKER_ACCEPTED) => Ok(()),
        _ => bail!(
            "bpf-linker was installed into {} but that directory is not on PATH: add it",
            cargo_bin_dir().display()
        ),
    }
}

/// `bpf-linker --version` from PATH, or from cargo's bin directory when PATH lacks it
/// (a fresh rustup shell), so an installed linker is never rebuilt.
fn bpf_linker_version() -> Option<String> {
    let candidates = [
        PathBuf::from("bpf-linker"),
        cargo_bin_dir().join("bpf-linker"),
    ];
    candidates.iter().find_map(|program| {
        let out = Command::new(program).arg("--version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
}

fn cargo_bin_dir() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    home.unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// The effective uid, from /proc so no unsafe libc call is needed.
fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status to check for root")?;
    parse_effective_uid(&status).context("no Uid line in /proc/self/status")
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_lines() {
        assert!(is_installed_line("cpio install ok installed", "cpio"));
        assert!(is_installed_line(
            "libzstd-dev:amd64 install ok installed",
            "libzstd-dev"
        ));
        assert!(!is_installed_line("cpio deinstall ok config-files", "cpio"));
        assert!(!is_installed_line("cpio-doc install ok installed", "cpio"));
        assert!(!is_installed_line("", "cpio"));
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
    }
}
