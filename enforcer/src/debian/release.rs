//! apt's signed chain down to the package indexes: `InRelease` verified with `gpgv`, then
//! each `Packages` index against the SHA-256 the signed text lists for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{DebianError, LOCAL_TIMEOUT, run};
use crate::host::digest::FileDigest;

/// What a verified `Packages` index says about one package version.
#[derive(Clone, Debug)]
pub struct IndexEntry {
    /// Lowercase hex SHA-256 of the `.deb`.
    pub sha256: String,
    /// Path in the archive (`pool/main/h/hello/hello_2.10-3_amd64.deb`).
    pub filename: String,
    /// The `InRelease` that vouches for it, for messages.
    pub release: PathBuf,
}

/// Every package index under apt's lists that verified, keyed by (package, version,
/// architecture).
#[derive(Debug, Default)]
pub struct Indexes {
    entries: HashMap<(String, String, String), IndexEntry>,
    /// SHA-256 of a .deb → its (package, version, architecture): a .deb at hand is
    /// authenticated by its digest before anything in it is parsed.
    by_sha256: HashMap<String, (String, String, String)>,
    /// Sources whose `InRelease` did not verify with the keyrings given, and why: their
    /// packages cannot be authenticated, which matters only if one is asked for.
    pub skipped: Vec<String>,
}

impl Indexes {
    /// Verifies every `*_InRelease` in `lists` with `gpgv` against `keyrings`, then every
    /// `Packages` index it covers, and loads the indexes that passed. Sources signed by
    /// other keys are skipped (listed in [`Indexes::skipped`]); a verified source whose
    /// index does not match its signed hash fails the whole load: apt would refuse it too.
    pub fn load(lists: &Path, keyrings: &[PathBuf], now: u64) -> Result<Self, DebianError> {
        let io = |source| DebianError::Io {
            path: lists.to_owned(),
            source,
        };
        let mut names: Vec<String> = std::fs::read_dir(lists)
            .map_err(io)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut indexes = Self::default();
        for release_name in names.iter().filter(|n| n.ends_with("_InRelease")) {
            let release_path = lists.join(release_name);
            let signed = match verify_inrelease(&release_path, keyrings) {
                Ok(text) => text,
                Err(err @ DebianError::BadSignature { .. }) => {
                    indexes.skipped.push(err.to_string());
                    continue;
                }
                Err(err) => return Err(err),
            };
            let release = Release::parse(&signed);
            if let Some(until) = &release.valid_until
                && parse_release_date(until).is_some_and(|t| t < now)
            {
                return Err(DebianError::Expired {
                    path: release_path,
                    valid_until: until.clone(),
                });
            }
            // apt names a source's lists after its InRelease, with `_` for `/`.
            let prefix = release_name.trim_end_matches("InRelease");
            for name in names.iter().filter(|n| n.starts_with(prefix)) {
                let Some(relative) = packages_relative_path(&name[prefix.len()..]) else {
                    continue;
                };
                let Some(expected) = release.sha256.get(&relative) else {
                    continue;
                };
                let index_path = lists.join(name);
                // apt may keep indexes recompressed (lz4 here); its own helper undoes
                // whatever it chose, and the signed hash is of the plain text.
                let text = run(
                    Command::new("/usr/lib/apt/apt-helper")
                        .arg("cat-file")
                        .arg(&index_path),
                    LOCAL_TIMEOUT,
                )?;
                // Lowercase hex, the form Release files use.
                let found = FileDigest::of_bytes(&text).to_string();
                if &found != expected {
                    return Err(DebianError::IndexMismatch {
                        index: index_path,
                        found,
                        expected: expected.clone(),
                    });
                }
                indexes.add(&String::from_utf8_lossy(&text), &release_path);
            }
        }
        if indexes.entries.is_empty() {
            return Err(DebianError::NoIndexes(lists.to_owned()));
        }
        Ok(indexes)
    }

    fn add(&mut self, text: &str, release: &Path) {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| v.trim().to_owned())
                })
            };
            if let (Some(package), Some(version), Some(arch), Some(sha256), Some(filename)) = (
                field("Package"),
                field("Version"),
                field("Architecture"),
                field("SHA256"),
                field("Filename"),
            ) {
                let sha256 = sha256.to_ascii_lowercase();
                let key = (package, version, arch);
                self.by_sha256.insert(sha256.clone(), key.clone());
                self.entries.insert(
                    key,
                    IndexEntry {
                        sha256,
                        filename,
                        release: release.to_owned(),
                    },
                );
            }
        }
    }

    /// The (package, version, architecture) whose .deb has this SHA-256 (lowercase hex).
    pub fn by_sha256(&self, sha256: &str) -> Option<&(String, String, String)> {
        self.by_sha256.get(sha256)
    }

    /// The verified entry for one package version.
    pub fn get(&self, package: &str, version: &str, arch: &str) -> Option<&IndexEntry> {
        self.entries
            .get(&(package.to_owned(), version.to_owned(), arch.to_owned()))
    }
}

/// `main_binary-amd64_Packages.lz4` → `main/binary-amd64/Packages`; `None` for lists
/// that are not package indexes (translations, DEP-11, ...).
fn packages_relative_path(rest: &str) -> Option<String> {
    let plain = ["", ".lz4", ".xz", ".gz", ".zst", ".bz2"]
        .iter()
        .find_map(|ext| rest.strip_suffix(&format!("Packages{ext}")))?;
    Some(format!("{}Packages", plain.replace('_', "/")))
}

/// Runs `gpgv` on an `InRelease` and returns the text the signature covers (never the
/// text around it: only signed bytes are parsed).
fn verify_inrelease(path: &Path, keyrings: &[PathBuf]) -> Result<String, DebianError> {
    let mut cmd = Command::new("gpgv");
    for keyring in keyrings {
        cmd.arg("--keyring").arg(keyring);
    }
    cmd.args(["--output", "-"]).arg(path);
    let out = super::output(&mut cmd, LOCAL_TIMEOUT)?;
    if !out.status.success() {
        return Err(DebianError::BadSignature {
            path: path.to_owned(),
            keyrings: keyrings
                .iter()
                .map(|k| k.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The parts of a Release file the chain needs.
struct Release {
    valid_until: Option<String>,
    /// Path relative to the suite → lowercase hex SHA-256.
    sha256: HashMap<String, String>,
}

impl Release {
    fn parse(text: &str) -> Self {
        let mut valid_until = None;
        let mut sha256 = HashMap::new();
        let mut in_sha256 = false;
        for line in text.lines() {
            if line.starts_with(' ') {
                if in_sha256 {
                    let mut parts = line.split_whitespace();
                    if let (Some(hash), Some(_size), Some(path)) =
                        (parts.next(), parts.next(), parts.next())
                    {
                        sha256.insert(path.to_owned(), hash.to_ascii_lowercase());
                    }
                }
                continue;
            }
            in_sha256 = line.trim_end() == "SHA256:";
            if let Some(v) = line.strip_prefix("Valid-Until:") {
                valid_until = Some(v.trim().to_owned());
            }
        }
        Self {
            valid_until,
            sha256,
        }
    }
}

/// `Tue, 08 Dec 2026 19:40:00 UTC` (RFC 2822 in UTC, as the archive writes it) as Unix
/// seconds; `None` if it is not in that form.
fn parse_release_date(text: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = text.split_whitespace().skip(1);
    let day: u32 = parts.next()?.parse().ok()?;
    let month = MONTHS.iter().position(|m| Some(*m) == parts.next())? + 1;
    let year: u32 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    let rfc3339 = format!("{year:04}-{month:02}-{day:02}T{time}Z");
    humantime::parse_rfc3339(&rfc3339)
        .ok()
        .map(crate::authz::artifact::unix_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_map_to_the_paths_the_release_signs() {
        assert_eq!(
            packages_relative_path("main_binary-amd64_Packages.lz4").as_deref(),
            Some("main/binary-amd64/Packages")
        );
        assert_eq!(
            packages_relative_path("main_binary-amd64_Packages").as_deref(),
            Some("main/binary-amd64/Packages")
        );
        assert_eq!(packages_relative_path("main_i18n_Translation-en"), None);
    }

    #[test]
    fn release_dates_parse_and_garbage_does_not() {
        assert_eq!(
            parse_release_date("Thu, 01 Jan 1970 00:01:00 UTC"),
            Some(60)
        );
        assert_eq!(parse_release_date("tomorrow"), None);
    }

    #[test]
    fn only_the_sha256_section_is_read() {
        let r = Release::parse(
            "Suite: x\nMD5Sum:\n aa 1 main/binary-amd64/Packages\nSHA256:\n BB 2 main/binary-amd64/Packages\nValid-Until: Sat, 01 Jan 2000 00:00:00 UTC\n",
        );
        assert_eq!(r.sha256["main/binary-amd64/Packages"], "bb");
        assert_eq!(r.sha256.len(), 1);
        assert!(r.valid_until.is_some());
    }
}
