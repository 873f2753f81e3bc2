//! What a `.deb` ships: its control fields and conffiles, and the digest and kind of each
//! file in its data member. `dpkg-deb` undoes the ar container and the compression (xz,
//! zstd, gzip), exactly as it does when installing; we read the tar streams it writes.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use super::DebianError;
use crate::host::digest::FileDigest;

/// Identity of a package version, from its control file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub architecture: String,
}

/// Why a file may be mapped executable, and therefore needs a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// An ELF file with an execute bit (programs, and libraries installed executable).
    Elf,
    /// An ELF shared object named `*.so` or `*.so.*`: libraries are usually installed
    /// 0644 yet mapped executable by the loader or dlopen.
    SharedObject,
    /// A `#!` script with an execute bit: exec checks the script itself.
    Script,
}

impl FileKind {
    /// Classifies a regular file by its mode, name and first bytes; `None` for files
    /// nothing executes or maps executable (data, docs, non-executable text).
    pub fn classify(mode: u32, path: &str, head: &[u8]) -> Option<Self> {
        let executable = mode & 0o111 != 0;
        let elf = head.starts_with(b"\x7fELF");
        let name = path.rsplit('/').next().unwrap_or(path);
        let shared_name = name.ends_with(".so") || name.contains(".so.");
        match () {
            () if elf && executable => Some(Self::Elf),
            () if elf && shared_name => Some(Self::SharedObject),
            () if executable && head.starts_with(b"#!") => Some(Self::Script),
            () => None,
        }
    }
}

/// One file of the data member that needs a grant.
#[derive(Clone, Debug)]
pub struct ArchiveFile {
    /// Absolute path as installed (`/usr/bin/hello`).
    pub path: String,
    pub digest: FileDigest,
    pub kind: FileKind,
}

/// A package's control identity and the files it ships that need grants.
#[derive(Clone, Debug)]
pub struct DebContent {
    pub control: Control,
    /// Absolute paths of conffiles: dpkg keeps an administrator's edits to these.
    pub conffiles: BTreeSet<String>,
    pub files: Vec<ArchiveFile>,
    /// Symlinks the package ships (path, target): never granted themselves, since exec
    /// checks the file a link leads to; kept for reports.
    pub symlinks: Vec<(String, String)>,
}

/// Reads `deb`'s control member and data member. Nothing here authenticates the file:
/// that is [`super::PackageSource::read_debs`].
pub fn read_deb(deb: &Path) -> Result<DebContent, DebianError> {
    let malformed = |reason: String| DebianError::Malformed {
        deb: deb.to_owned(),
        reason,
    };
    let mut control_text = None;
    let mut conffiles = BTreeSet::new();
    tar_stream(deb, "--ctrl-tarfile", |path, entry| {
        let mut text = String::new();
        match path {
            "/control" | "/conffiles" => {
                entry
                    .take(1 << 20)
                    .read_to_string(&mut text)
                    .map_err(|e| format!("{path}: {e}"))?;
            }
            _ => return Ok(()),
        }
        if path == "/control" {
            control_text = Some(text);
        } else {
            conffiles.extend(
                text.lines()
                    .map(str::trim)
                    // `remove-on-upgrade` entries name files no longer shipped.
                    .filter(|l| l.starts_with('/'))
                    .map(str::to_owned),
            );
        }
        Ok(())
    })?;
    let control_text = control_text.ok_or_else(|| malformed("no control file".into()))?;
    let field = |name: &str| {
        control_text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| malformed(format!("control file has no {name} field")))
    };
    let control = Control {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
    };

    let mut files = Vec::new();
    let mut symlinks = Vec::new();
    tar_stream(deb, "--fsys-tarfile", |path, entry| {
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            symlinks.push((path.to_owned(), target));
            return Ok(());
        }
        if kind.is_hard_link() {
            // Same content as an earlier entry: grant it under this path too.
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| normalize(&t))
                .transpose()?;
            if let Some(first) =
                target.and_then(|t| files.iter().find(|f: &&ArchiveFile| f.path == t))
            {
                let mut copy = first.clone();
                copy.path = path.to_owned();
                files.push(copy);
            }
            return Ok(());
        }
        if !kind.is_file() {
            return Ok(());
        }
        let mode = header.mode().map_err(|e| format!("{path}: {e}"))?;
        let (digest, head) =
            hash_with_head(&mut *entry, |_| {}).map_err(|e| format!("{path}: {e}"))?;
        if let Some(kind) = FileKind::classify(mode, path, &head) {
            files.push(ArchiveFile {
                path: path.to_owned(),
                digest,
                kind,
            });
        }
        Ok(())
    })?;
    Ok(DebContent {
        control,
        conffiles,
        files,
        symlinks,
    })
}

/// Streams `reader` through SHA-256, and through `also` (another hash, when a caller needs
/// one), keeping the first bytes [`FileKind::classify`] looks at.
pub(super) fn hash_with_head(
    mut reader: impl Read,
    mut also: impl FnMut(&[u8]),
) -> std::io::Result<(FileDigest, Vec<u8>)> {
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 4 {
            head.extend_from_slice(&buf[..n.min(4)]);
        }
        hasher.update(&buf[..n]);
        also(&buf[..n]);
    }
    Ok((FileDigest(hasher.finalize().into()), head))
}

/// Runs `dpkg-deb MEMBER deb` and calls `each` with every entry's normalized path.
fn tar_stream(
    deb: &Path,
    member: &str,
    mut each: impl FnMut(&str, &mut tar::Entry<'_, std::process::ChildStdout>) -> Result<(), String>,
) -> Result<(), DebianError> {
    let malformed = |reason: String| DebianError::Malformed {
        deb: deb.to_owned(),
        reason,
    };
    let mut child = Command::new("dpkg-deb")
        .arg(member)
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DebianError::Spawn {
            program: "dpkg-deb".into(),
            source,
        })?;
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let walked = match child.stdout.take() {
        Some(stdout) => walk(tar::Archive::new(stdout), &mut each),
        None => Err("no output".to_owned()),
    };
    if walked.is_err() {
        // A refused entry stops the walk; dpkg-deb must not block on a full pipe.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|source| DebianError::Spawn {
        program: "dpkg-deb".into(),
        source,
    })?;
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    walked.map_err(malformed)?;
    if !status.success() {
        return Err(malformed(format!(
            "dpkg-deb {member} failed ({status}): {}",
            stderr.trim()
        )));
    }
    Ok(())
}

fn walk(
    mut archive: tar::Archive<std::process::ChildStdout>,
    each: &mut impl FnMut(&str, &mut tar::Entry<'_, std::process::ChildStdout>) -> Result<(), String>,
) -> Result<(), String> {
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
        let path = normalize(&raw)?;
        each(&path, &mut entry)?;
    }
    Ok(())
}

/// `./usr/bin/x` → `/usr/bin/x`. A path that climbs out (`..`) is refused: it could make
/// a grant name, or a disk check, point anywhere.
fn normalize(raw: &Path) -> Result<String, String> {
    let mut out = PathBuf::from("/");
    for component in raw.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("entry {} leaves the package root", raw.display()));
            }
        }
    }
    out.into_os_string()
        .into_string()
        .map_err(|p| format!("entry {} is not UTF-8", p.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_mode_name_and_magic() {
        let elf = b"\x7fELF";
        assert_eq!(
            FileKind::classify(0o755, "/usr/bin/x", elf),
            Some(FileKind::Elf)
        );
        assert_eq!(
            FileKind::classify(0o644, "/usr/lib/libx.so.1.2", elf),
            Some(FileKind::SharedObject)
        );
        assert_eq!(FileKind::classify(0o644, "/usr/lib/x.o", elf), None);
        assert_eq!(
            FileKind::classify(0o755, "/usr/bin/s", b"#!/bin/sh"),
            Some(FileKind::Script)
        );
        assert_eq!(FileKind::classify(0o644, "/usr/bin/s", b"#!/bin/sh"), None);
        assert_eq!(FileKind::classify(0o755, "/usr/share/x", b"data"), None);
    }

    #[test]
    fn entries_are_rooted_and_may_not_climb_out() {
        assert_eq!(
            normalize(Path::new("./usr/bin/x")).as_deref(),
            Ok("/usr/bin/x")
        );
        assert!(normalize(Path::new("./usr/../../etc/x")).is_err());
    }
}
