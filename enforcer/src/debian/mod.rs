//! Debian packages as a source of grants: what a package ships, authenticated through apt's
//! signed chain, and how the files on disk compare with it.
//!
//! The chain is the one apt itself trusts: an `InRelease` file signed by the archive's key
//! (checked here with the system's `gpgv`, as apt does), the SHA-256 of each `Packages`
//! index listed in it, and the SHA-256 of each `.deb` listed in its index. A digest taken
//! from a `.deb` that passed the chain is a digest the archive vouches for, whatever is on
//! this host's disk. `docs/packages.md` says what is granted and why.
//!
//! The entry point an apt hook needs is [`PackageSource::read_debs`]: `.deb` paths in,
//! authenticated contents out.

mod deb;
mod dpkg;
mod grant;
mod release;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use deb::{ArchiveFile, Control, DebContent, FileKind, read_deb};
pub use dpkg::{Diversion, Dpkg, Installed, usr_merge_spellings};
pub use grant::{
    DiskCheck, DiskGrant, DiskState, GrantName, PackageSource, Trust, check_disk, grants_from_disk,
    needs_grant,
};
pub use release::{IndexEntry, Indexes};

/// The keyring apt's Debian sources are signed with (package debian-archive-keyring).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Where apt keeps the lists `apt-get update` fetched.
pub const APT_LISTS: &str = "/var/lib/apt/lists";
/// Where apt keeps the archives it downloaded.
pub const APT_ARCHIVES: &str = "/var/cache/apt/archives";
/// A local tool (dpkg-deb, gpgv, dpkg-query) that has not answered in this long is stuck.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a download of one package may take: a slow mirror fails, it does not hang.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Every way reading or authenticating a package can fail.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("cannot run {program}: {source} (is it installed?)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {}s and was stopped", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: the signature does not verify against {keyrings}: {stderr} (a source signed \
         by another key needs --keyring with its keyring)"
    )]
    BadSignature {
        path: PathBuf,
        keyrings: String,
        stderr: String,
    },
    #[error("{path} expired at {valid_until}: run `apt-get update`")]
    Expired { path: PathBuf, valid_until: String },
    #[error(
        "{index}: SHA-256 {found} does not match {expected} listed in its signed InRelease: \
         run `apt-get update`"
    )]
    IndexMismatch {
        index: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "no verified package index lists {package} {version} ({arch}): run `apt-get update`, or name a version the archive still has (apt-cache madison {package})"
    )]
    NotInIndex {
        package: String,
        version: String,
        arch: String,
    },
    #[error(
        "{deb}: no verified package index lists a .deb with SHA-256 {found}: the file is not \
         what the archive published (or the lists are older than it: run `apt-get update`)"
    )]
    UnknownDeb { deb: PathBuf, found: String },
    #[error("{deb}: malformed package: {reason}")]
    Malformed { deb: PathBuf, reason: String },
    #[error("{0}: no version given, not installed, and apt has no candidate")]
    NoVersion(String),
    #[error("no package index under {0} verified: run `apt-get update`")]
    NoIndexes(PathBuf),
}

/// Runs `cmd` to completion within `timeout`, capturing its output; a non-zero exit is an
/// error naming the command and what it printed.
fn run(cmd: &mut Command, timeout: Duration) -> Result<Vec<u8>, DebianError> {
    let out = output(cmd, timeout)?;
    if !out.status.success() {
        return Err(failed(cmd, &out));
    }
    Ok(out.stdout)
}

fn failed(cmd: &Command, out: &Output) -> DebianError {
    DebianError::Failed {
        command: describe(cmd),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`Command::output`] with a deadline: the child is killed when it passes, so a stuck
/// mirror or tool never hangs the command (or a CI job).
fn output(cmd: &mut Command, timeout: Duration) -> Result<Output, DebianError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DebianError::Spawn {
            program: program.clone(),
            source,
        })?;
    // Both pipes are drained on threads so a chatty child cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DebianError::Timeout { program, timeout });
            }
            Err(source) => return Err(DebianError::Spawn { program, source }),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// `path` (absolute, as a package names it) under `root`.
pub fn under_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// This host's dpkg architecture (amd64, arm64, ...).
pub fn host_arch() -> Result<String, DebianError> {
    let out = run(
        Command::new("dpkg").arg("--print-architecture"),
        LOCAL_TIMEOUT,
    )?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}
