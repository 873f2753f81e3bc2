//! What the agent wants the kernel to enforce: governed scopes, their mode, and the
//! digests granted in each.
//!
//! Signed bundles and the local development file both become a [`Policy`]; the kernel
//! loader only ever sees this type, so there is one path from "what is authorized" to
//! "what the maps hold".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::host::digest::{DigestError, FileDigest};
use enforcer_common::AUTH_ID_LEN;

/// Scopes are cgroup paths as signed artifacts carry them.
use crate::authz::artifact::{Mode, ScopePath};

/// One digest granted in a scope, with the authorization that grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeGrant {
    pub digest: FileDigest,
    /// Human name for logs ("git", "/usr/bin/python3"); not used for matching.
    pub name: Option<String>,
    /// When the grant stops allowing (None: no expiry of its own).
    pub not_after: Option<SystemTime>,
    /// Prefix of the authorization's identity, reported in every decision it allows.
    pub auth_id: [u8; AUTH_ID_LEN],
    pub auth_serial: u64,
}

/// One governed scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSpec {
    pub mode: Mode,
    pub grants: Vec<ScopeGrant>,
    /// Opt-in: anonymous executable memory (JIT runtimes). Denied by default.
    pub allow_anonymous_exec: bool,
    /// Opt-in: executing or mapping files with no name (memfd, deleted). Denied by default.
    pub allow_fileless: bool,
    /// Break-glass: the scope runs in monitor mode until this moment, then enforces again
    /// by itself. The kernel holds the deadline (CLOCK_BOOTTIME), so the revert does not
    /// depend on the agent being alive.
    pub monitor_until: Option<SystemTime>,
    /// Directories (or files) below which the scope's tasks may create, change and remove
    /// files; everything else is read-only to them. The operator's, not the bundles'.
    pub writable: Vec<PathBuf>,
    /// Device nodes the scope's tasks may open besides the harmless ones (null, zero,
    /// random, terminals): /dev/kvm for a CI job that boots VMs. The operator's.
    pub devices: Vec<PathBuf>,
}

/// The complete desired state: every governed scope and its grants, and what the host
/// says about files for every scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub scopes: BTreeMap<ScopePath, ScopeSpec>,
    /// Unix sockets governed tasks may reach although their owners lie outside every scope
    /// (journald's).
    pub sockets: Vec<PathBuf>,
    /// Files governed tasks may not open at all (the audit host key).
    pub secrets: Vec<PathBuf>,
}

/// Why the local policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {path} is not valid: {message}")]
    Syntax { path: String, message: String },
    #[error("policy file {path}: {source}")]
    Scope {
        path: String,
        // Boxed: inline, it alone makes every Result of this module large.
        #[source]
        source: Box<crate::authz::artifact::ArtifactError>,
    },
    #[error("policy file {path}: {source}")]
    Digest {
        path: String,
        #[source]
        source: DigestError,
    },
    #[error("policy file {path}: {source}")]
    Elf {
        path: String,
        #[source]
        source: crate::host::elf::ElfError,
    },
    #[error("policy file {path}: scope {scope} is listed twice")]
    DuplicateScope { path: String, scope: String },
}

/// The local, unsigned policy file: for development and the VM tests only. Production
/// input is signed bundles.
///
/// ```toml
/// [[scope]]
/// path = "/enforcer-demo"     # cgroup below the cgroup2 root
/// mode = "enforce"            # or "monitor"
/// files = ["/bin/busybox"]    # hashed when the policy is loaded
/// digests = ["sha256:..."]    # or given directly
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalPolicyFile {
    #[serde(default)]
    scope: Vec<LocalScope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalScope {
    path: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    digests: Vec<String>,
    /// Also grant the shared libraries and dynamic loader each file in `files` needs.
    #[serde(default)]
    with_libraries: bool,
    #[serde(default)]
    allow_anonymous_exec: bool,
    #[serde(default)]
    allow_fileless: bool,
}

impl Policy {
    /// Reads a local policy file, hashing the files it lists.
    pub fn from_local_file(path: &Path) -> Result<Self, PolicyFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: LocalPolicyFile = toml::from_str(&text).map_err(|e| PolicyFileError::Syntax {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let mut policy = Self::default();
        for scope in file.scope {
            let scope_path: ScopePath =
                scope
                    .path
                    .parse()
                    .map_err(|source| PolicyFileError::Scope {
                        path: shown.clone(),
                        source: Box::new(source),
                    })?;
            let digest_err = |source| PolicyFileError::Digest {
                path: shown.clone(),
                source,
            };
            let mut files: Vec<std::path::PathBuf> = scope.files.iter().map(Into::into).collect();
            if scope.with_libraries {
                files = crate::host::elf::with_dependencies(&files).map_err(|source| {
                    PolicyFileError::Elf {
                        path: shown.clone(),
                        source,
                    }
                })?;
            }
            let mut grants = Vec::new();
            for f in &files {
                let digest = crate::host::elf::grantable_digest(f).map_err(|source| {
                    PolicyFileError::Elf {
                        path: shown.clone(),
                        source,
                    }
                })?;
                grants.push(local_grant(digest, Some(f.display().to_string())));
            }
            for d in &scope.digests {
                grants.push(local_grant(d.parse().map_err(digest_err)?, None));
            }
            let spec = ScopeSpec {
                mode: scope.mode,
                grants,
                allow_anonymous_exec: scope.allow_anonymous_exec,
                allow_fileless: scope.allow_fileless,
                monitor_until: None,
                writable: Vec::new(),
                devices: Vec::new(),
            };
            if policy.scopes.insert(scope_path.clone(), spec).is_some() {
                return Err(PolicyFileError::DuplicateScope {
                    path: shown,
                    scope: scope_path.to_string(),
                });
            }
        }
        Ok(policy)
    }

    /// Number of grants over all scopes.
    #[must_use]
    pub fn grant_count(&self) -> usize {
        self.scopes.values().map(|s| s.grants.len()).sum()
    }
}

/// A grant from the local file: no authorization backs it, so its id is zero.
fn local_grant(digest: FileDigest, name: Option<String>) -> ScopeGrant {
    ScopeGrant {
        digest,
        name,
        not_after: None,
        auth_id: [0; AUTH_ID_LEN],
        auth_serial: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn local_file_hashes_files_and_parses_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = write(dir.path(), "bin", "program");
        let d = FileDigest::of_bytes(b"other");
        let policy_path = write(
            dir.path(),
            "p.toml",
            &format!(
                "[[scope]]\npath = \"/demo\"\nmode = \"monitor\"\nfiles = [{:?}]\ndigests = [\"sha256:{d}\"]\n",
                bin.display()
            ),
        );
        let policy = Policy::from_local_file(&policy_path).expect("policy");
        let scope = &policy.scopes[&"/demo".parse::<ScopePath>().expect("scope")];
        assert_eq!(scope.mode, Mode::Monitor);
        let digests: Vec<_> = scope.grants.iter().map(|g| g.digest).collect();
        assert_eq!(digests, vec![FileDigest::of_bytes(b"program"), d]);
        assert_eq!(policy.grant_count(), 2);
    }

    #[test]
    fn local_file_errors_name_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("[[scope]]\npath = \"/a\"\nbogus = 1\n", "unknown field"),
            ("[[scope]]\npath = \"a\"\n", "must be absolute"),
            (
                "[[scope]]\npath = \"/a\"\ndigests = [\"xyz\"]\n",
                "invalid SHA-256 digest",
            ),
            (
                "[[scope]]\npath = \"/a\"\nfiles = [\"/nonexistent/x\"]\n",
                "/nonexistent/x",
            ),
            (
                "[[scope]]\npath = \"/a\"\n[[scope]]\npath = \"/a\"\n",
                "listed twice",
            ),
            (
                "[[scope]]\npath = \"/a\"\nmode = \"lenient\"\n",
                "unknown variant",
            ),
        ];
        for (text, needle) in cases {
            let p = write(dir.path(), "p.toml", text);
            let err = Policy::from_local_file(&p).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("p.toml"), "{err}");
        }
    }
}
