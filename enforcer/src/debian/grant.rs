//! From packages to grants: authenticated `.deb` contents, the names grants carry so a
//! bundle can be compared with the disk later, and that comparison.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest as _, Md5};

use super::deb::{ArchiveFile, DebContent, FileKind, hash_with_head, read_deb};
use super::dpkg::Dpkg;
use super::release::Indexes;
use super::{APT_ARCHIVES, DOWNLOAD_TIMEOUT, DebianError, LOCAL_TIMEOUT, run};
use crate::host::digest::FileDigest;

/// Where a grant's digest came from, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// The package archive, authenticated through InRelease → Packages → .deb.
    Archive,
    /// The file on disk, checked only against dpkg's MD5s: anyone who could write the file
    /// could have written the MD5 list too, and MD5 is broken for collisions.
    Disk,
}

/// Name prefixes: where the digest came from, and whether the package was granted whole
/// (a named package) or only for the libraries others need (`--with-libraries`), whose
/// other files are not expected to be granted.
const PREFIXES: [(&str, Trust, bool); 4] = [
    ("deb", Trust::Archive, false),
    ("deb-lib", Trust::Archive, true),
    ("deb+disk", Trust::Disk, false),
    ("deb+disk-lib", Trust::Disk, true),
];

/// What a package grant is named, so `bundle drift` can find its file and package again,
/// and signers can see where its digest came from: `deb:PACKAGE/VERSION/ARCH:PATH` from
/// the archive, `deb+disk:...` from the disk (`--trust-disk`), `deb-lib:...` for a library
/// granted because a granted program needs it. Package names and architectures never contain `/` or
/// `:`, versions never `/` (they may contain `:`, the epoch), and the path comes last, so
/// the name splits back without ambiguity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrantName {
    pub trust: Trust,
    /// Granted as a library another package's program needs, not as part of a whole
    /// package.
    pub library: bool,
    pub package: String,
    pub version: String,
    pub architecture: String,
    pub path: String,
}

impl fmt::Display for GrantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}/{}:{}",
            PREFIXES
                .iter()
                .find(|(_, t, l)| *t == self.trust && *l == self.library)
                .map_or("deb", |(p, _, _)| p),
            self.package,
            self.version,
            self.architecture,
            self.path
        )
    }
}

impl GrantName {
    /// `None` for names that are not package grants (paths, free text).
    pub fn parse(name: &str) -> Option<Self> {
        let (trust, library, rest) = PREFIXES
            .iter()
            .find_map(|(p, t, l)| Some((*t, *l, name.strip_prefix(p)?.strip_prefix(':')?)))?;
        let mut parts = rest.splitn(3, '/');
        let package = parts.next()?;
        let version = parts.next()?;
        let (architecture, path) = parts.next()?.split_once(':')?;
        if package.is_empty() || version.is_empty() || !path.starts_with('/') {
            return None;
        }
        Some(Self {
            trust,
            library,
            package: package.to_owned(),
            version: version.to_owned(),
            architecture: architecture.to_owned(),
            path: path.to_owned(),
        })
    }

    pub fn of(content: &DebContent, file: &ArchiveFile) -> Self {
        Self {
            trust: Trust::Archive,
            library: false,
            package: content.control.package.clone(),
            version: content.control.version.clone(),
            architecture: content.control.architecture.clone(),
            path: file.path.clone(),
        }
    }
}

/// Packages authenticated through apt's signed chain.
#[derive(Debug)]
pub struct PackageSource {
    indexes: Indexes,
    arch: String,
}

impl PackageSource {
    /// Verifies the lists under `lists` (see [`Indexes::load`]).
    pub fn new(lists: &Path, keyrings: &[PathBuf], now: u64) -> Result<Self, DebianError> {
        Ok(Self {
            indexes: Indexes::load(lists, keyrings, now)?,
            arch: super::host_arch()?,
        })
    }

    /// Sources skipped because their InRelease did not verify.
    pub fn skipped(&self) -> &[String] {
        &self.indexes.skipped
    }

    /// Authenticates each `.deb` and reads it. Its SHA-256 must be one a verified index
    /// lists, checked before anything in the file is parsed; then its control file must
    /// name the package, version and architecture that index entry is for. This is all an
    /// apt `Pre-Install-Pkgs` hook needs: it is handed the `.deb` paths.
    pub fn read_debs(&self, debs: &[PathBuf]) -> Result<Vec<DebContent>, DebianError> {
        debs.iter()
            .map(|deb| {
                // Streamed: a .deb can be large, and only its digest is needed here.
                let found = FileDigest::of_file(deb)
                    .map_err(|e| DebianError::Malformed {
                        deb: deb.clone(),
                        reason: e.to_string(),
                    })?
                    .to_string();
                let (package, version, arch) =
                    self.indexes
                        .by_sha256(&found)
                        .ok_or_else(|| DebianError::UnknownDeb {
                            deb: deb.clone(),
                            found: found.clone(),
                        })?;
                let content = read_deb(deb)?;
                let c = &content.control;
                if (&c.package, &c.version, &c.architecture) != (package, version, arch) {
                    return Err(DebianError::Malformed {
                        deb: deb.clone(),
                        reason: format!(
                            "its control file names {} {} {}, but the index lists its SHA-256 \
                             for {package} {version} {arch}",
                            c.package, c.version, c.architecture
                        ),
                    });
                }
                Ok(content)
            })
            .collect()
    }

    /// The `.deb` of `package` `version`: apt's cache if it holds it, else downloaded
    /// with `apt-get download` (the host's sources and proxy settings) into `work`.
    /// Either way [`Self::read_debs`] authenticates it afterwards.
    pub fn fetch(&self, package: &str, version: &str, work: &Path) -> Result<PathBuf, DebianError> {
        let arch = [self.arch.as_str(), "all"]
            .into_iter()
            .find(|a| self.indexes.get(package, version, a).is_some())
            .ok_or_else(|| DebianError::NotInIndex {
                package: package.to_owned(),
                version: version.to_owned(),
                arch: self.arch.clone(),
            })?;
        // apt names archives PACKAGE_VERSION_ARCH.deb with the epoch's `:` escaped.
        let name = format!("{package}_{}_{arch}.deb", version.replace(':', "%3a"));
        let cached = Path::new(APT_ARCHIVES).join(&name);
        if cached.is_file() {
            return Ok(cached);
        }
        run(
            Command::new("apt-get")
                .args([
                    "-q",
                    // Downloads land in our directory, which _apt may not be able to reach.
                    "-o",
                    "APT::Sandbox::User=root",
                    "-o",
                    "Acquire::Retries=1",
                    "-o",
                    "Acquire::http::Timeout=30",
                    "download",
                ])
                .arg(format!("{package}:{arch}={version}"))
                .current_dir(work),
            DOWNLOAD_TIMEOUT,
        )?;
        let downloaded = work.join(&name);
        if downloaded.is_file() {
            Ok(downloaded)
        } else {
            Err(DebianError::Malformed {
                deb: downloaded,
                reason: "apt-get download left no such file".into(),
            })
        }
    }

    /// The version to grant when none is named: the one installed under `dpkg`'s root,
    /// else apt's candidate.
    pub fn default_version(&self, package: &str, dpkg: &Dpkg) -> Result<String, DebianError> {
        if let Some(installed) = dpkg.installed(package)? {
            return Ok(installed.version);
        }
        let out = run(
            Command::new("apt-cache")
                .args(["show", "--no-all-versions"])
                .arg(package),
            LOCAL_TIMEOUT,
        )
        .map_err(|_| DebianError::NoVersion(package.to_owned()))?;
        String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .map(str::to_owned)
            .ok_or_else(|| DebianError::NoVersion(package.to_owned()))
    }
}

/// What the disk holds where a packaged file should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskState {
    Same,
    Differs(FileDigest),
    Missing,
}

/// One packaged file compared with the disk.
#[derive(Clone, Debug)]
pub struct DiskCheck {
    pub name: GrantName,
    pub digest: FileDigest,
    pub kind: FileKind,
    /// Where it was looked for (its diversion target if diverted), under the root.
    pub disk_path: PathBuf,
    pub state: DiskState,
    /// dpkg keeps local edits to conffiles, so a difference there may be intended.
    pub conffile: bool,
    /// Set when another package or the administrator diverted the file.
    pub diverted_to: Option<String>,
}

/// Compares every file of `content` that needs a grant with the disk under `dpkg`'s root.
pub fn check_disk(content: &DebContent, dpkg: &Dpkg) -> Vec<DiskCheck> {
    content
        .files
        .iter()
        .map(|file| {
            let package = &content.control.package;
            let disk_path = dpkg.disk_path(package, &file.path);
            let state = match FileDigest::of_file(&disk_path) {
                Ok(d) if d == file.digest => DiskState::Same,
                Ok(d) => DiskState::Differs(d),
                Err(_) => DiskState::Missing,
            };
            DiskCheck {
                name: GrantName::of(content, file),
                digest: file.digest,
                kind: file.kind,
                disk_path,
                state,
                conffile: content.conffiles.contains(&file.path),
                diverted_to: dpkg.diversion(package, &file.path).map(|d| d.to.clone()),
            }
        })
        .collect()
}

/// A file granted from disk under `--trust-disk`, or refused because its content does
/// not match dpkg's record.
#[derive(Clone, Debug)]
pub enum DiskGrant {
    Granted { name: GrantName, digest: FileDigest },
    Refused { name: GrantName, reason: String },
}

/// `--trust-disk`: every installed file of `package` that needs a grant, hashed from disk
/// and kept only if its MD5 matches dpkg's record. Weaker than the archive: see
/// [`Trust::Disk`].
pub fn grants_from_disk(package: &str, dpkg: &Dpkg) -> Result<Vec<DiskGrant>, DebianError> {
    let installed = dpkg
        .installed(package)?
        .ok_or_else(|| DebianError::NoVersion(package.to_owned()))?;
    let sums = dpkg.md5sums(package)?;
    let mut out = Vec::new();
    for path in dpkg.files(package)? {
        let disk_path = dpkg.disk_path(package, &path);
        let Some((kind_ok, sha, md5)) = hash_if_needed(&disk_path, &path) else {
            continue;
        };
        let name = GrantName {
            trust: Trust::Disk,
            library: false,
            package: package.to_owned(),
            version: installed.version.clone(),
            architecture: installed.architecture.clone(),
            path: path.clone(),
        };
        if !kind_ok {
            continue;
        }
        out.push(match sums.get(&path) {
            Some(expected) if *expected == md5 => DiskGrant::Granted { name, digest: sha },
            Some(expected) => DiskGrant::Refused {
                name,
                reason: format!("MD5 {md5} differs from dpkg's {expected}"),
            },
            None => DiskGrant::Refused {
                name,
                reason: "dpkg records no MD5 for it".into(),
            },
        });
    }
    Ok(out)
}

/// For a regular file at `disk_path`: whether it needs a grant, its SHA-256 and MD5.
/// `None` for directories, symlinks and unreadable paths.
fn hash_if_needed(disk_path: &Path, path: &str) -> Option<(bool, FileDigest, String)> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::symlink_metadata(disk_path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let file = std::fs::File::open(disk_path).ok()?;
    let mut md5 = Md5::new();
    let (digest, head) = hash_with_head(file, |bytes| md5.update(bytes)).ok()?;
    let needed = FileKind::classify(meta.permissions().mode(), path, &head).is_some();
    Some((needed, digest, hex::encode(md5.finalize())))
}

/// Whether the file at `disk_path` needs a grant (for "new file" checks).
pub fn needs_grant(disk_path: &Path, path: &str) -> Option<FileDigest> {
    match hash_if_needed(disk_path, path) {
        Some((true, digest, _)) => Some(digest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any name a package can produce splits back into the same parts, and no string
        /// read from a bundle makes the parser panic.
        #[test]
        fn names_round_trip_and_parsing_never_panics(
            package in "[a-z0-9][a-z0-9+.-]{0,30}",
            version in "([0-9]{1,3}:)?[0-9][A-Za-z0-9.+~:-]{0,20}",
            architecture in "[a-z0-9-]{1,10}",
            path in "/[^\\x00]{0,60}",
            library in any::<bool>(),
            disk in any::<bool>(),
            junk in "\\PC{0,80}",
        ) {
            let trust = if disk { Trust::Disk } else { Trust::Archive };
            let name = GrantName { trust, library, package, version, architecture, path };
            prop_assert_eq!(GrantName::parse(&name.to_string()), Some(name));
            let _ = GrantName::parse(&junk);
        }
    }

    #[test]
    fn grant_names_round_trip_with_epochs_and_odd_paths() {
        let mut name = GrantName {
            trust: Trust::Archive,
            library: false,
            package: "bind9-host".into(),
            version: "1:9.18.49-1~deb12u3".into(),
            architecture: "amd64".into(),
            path: "/usr/lib/x:y/a b".into(),
        };
        assert_eq!(
            name.to_string(),
            "deb:bind9-host/1:9.18.49-1~deb12u3/amd64:/usr/lib/x:y/a b"
        );
        assert_eq!(GrantName::parse(&name.to_string()), Some(name.clone()));
        name.trust = Trust::Disk;
        assert!(name.to_string().starts_with("deb+disk:bind9-host/"));
        assert_eq!(GrantName::parse(&name.to_string()), Some(name));
        assert_eq!(GrantName::parse("/usr/bin/git"), None);
        assert_eq!(GrantName::parse("deb-libx:a/1/amd64:/x"), None);
        assert_eq!(GrantName::parse("deb:x/1/amd64:relative"), None);
    }
}
