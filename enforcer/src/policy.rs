//! What the agent wants the kernel to enforce: governed scopes, their mode, and the
//! digests granted in each.
//!
//! Signed bundles and the local development file both become a [`Policy`]; the kernel
//! loader only ever sees this type, so there is one path from "what is authorized" to
//! "what the maps hold".

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::time::SystemTime;

use serde::Deserialize;

use crate::digest::{DigestError, FileDigest};
use enforcer_common::{AUTH_ID_LEN, MAX_SCOPE_LEVEL};

/// How a scope treats execs that no grant covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Deny them (the default: doubt means deny).
    #[default]
    Enforce,
    /// Allow them, and record that they would have been denied.
    Monitor,
}

/// A governed cgroup v2 subtree, named by its path below the cgroup2 mount
/// (for example `/agents.slice`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopePath(String);

/// Why a scope path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("scope {0:?} must be an absolute path below the cgroup2 root, such as /agents.slice")]
    NotAbsolute(String),
    #[error("scope {0:?} names the cgroup root; governing the whole host is refused")]
    Root(String),
    #[error("scope {0:?} may contain only plain components (no '.', '..' or empty parts)")]
    BadComponent(String),
    #[error("scope {path:?} is {depth} levels deep; at most {max} are supported")]
    TooDeep { path: String, depth: usize, max: u32 },
}

impl ScopePath {
    /// Validates a cgroup path: absolute, plain components, not the root, not deeper
    /// than the kernel program walks.
    pub fn parse(input: &str) -> Result<Self, ScopeError> {
        if !input.starts_with('/') {
            return Err(ScopeError::NotAbsolute(input.into()));
        }
        let trimmed = input.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(ScopeError::Root(input.into()));
        }
        // `Path::components` would silently fold "a//b" and "a/./b"; check raw parts.
        let mut depth = 0;
        for part in trimmed[1..].split('/') {
            if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
                return Err(ScopeError::BadComponent(input.into()));
            }
            depth += 1;
        }
        if depth > MAX_SCOPE_LEVEL as usize {
            return Err(ScopeError::TooDeep { path: input.into(), depth, max: MAX_SCOPE_LEVEL });
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The path as written, without a trailing slash.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where this scope lives under a cgroup2 mount point.
    #[must_use]
    pub fn under(&self, cgroup_root: &Path) -> std::path::PathBuf {
        let mut p = cgroup_root.to_path_buf();
        p.extend(Path::new(&self.0[1..]).components().filter(|c| matches!(c, Component::Normal(_))));
        p
    }
}

impl std::fmt::Display for ScopePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One digest granted in a scope, with the authorization that grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSpec {
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
    pub grants: Vec<GrantSpec>,
    /// Opt-in: anonymous executable memory (JIT runtimes). Denied by default.
    pub allow_anonymous_exec: bool,
    /// Opt-in: executing or mapping files with no name (memfd, deleted). Denied by default.
    pub allow_fileless: bool,
}

/// The complete desired state: every governed scope and its grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub scopes: BTreeMap<ScopePath, ScopeSpec>,
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
        #[source]
        source: ScopeError,
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
        source: crate::elf::ElfError,
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
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyFileError::Read { path: shown.clone(), source })?;
        let file: LocalPolicyFile = toml::from_str(&text)
            .map_err(|e| PolicyFileError::Syntax { path: shown.clone(), message: e.to_string() })?;
        let mut policy = Self::default();
        for scope in file.scope {
            let scope_path = ScopePath::parse(&scope.path)
                .map_err(|source| PolicyFileError::Scope { path: shown.clone(), source })?;
            let digest_err = |source| PolicyFileError::Digest { path: shown.clone(), source };
            let mut files: Vec<std::path::PathBuf> = scope.files.iter().map(Into::into).collect();
            if scope.with_libraries {
                files = crate::elf::with_dependencies(&files)
                    .map_err(|source| PolicyFileError::Elf { path: shown.clone(), source })?;
            }
            let mut grants = Vec::new();
            for f in &files {
                let digest = FileDigest::of_file(f).map_err(digest_err)?;
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
fn local_grant(digest: FileDigest, name: Option<String>) -> GrantSpec {
    GrantSpec { digest, name, not_after: None, auth_id: [0; AUTH_ID_LEN], auth_serial: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_paths() {
        assert_eq!(ScopePath::parse("/a.slice/b/").expect("ok").as_str(), "/a.slice/b");
        assert_eq!(ScopePath::parse("rel"), Err(ScopeError::NotAbsolute("rel".into())));
        assert_eq!(ScopePath::parse("/"), Err(ScopeError::Root("/".into())));
        for bad in ["/a//b", "/a/../b", "/./a", "/a/.", "/a\0b"] {
            assert_eq!(ScopePath::parse(bad), Err(ScopeError::BadComponent(bad.into())), "{bad}");
        }
        let deep = "/x".repeat(MAX_SCOPE_LEVEL as usize + 1);
        assert!(matches!(ScopePath::parse(&deep), Err(ScopeError::TooDeep { .. })));
        let ok = "/x".repeat(MAX_SCOPE_LEVEL as usize);
        assert!(ScopePath::parse(&ok).is_ok());
        assert_eq!(
            ScopePath::parse("/a/b").expect("ok").under(Path::new("/sys/fs/cgroup")),
            Path::new("/sys/fs/cgroup/a/b")
        );
    }

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
        let scope = &policy.scopes[&ScopePath::parse("/demo").expect("scope")];
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
            ("[[scope]]\npath = \"a\"\n", "absolute path"),
            ("[[scope]]\npath = \"/a\"\ndigests = [\"xyz\"]\n", "invalid SHA-256 digest"),
            ("[[scope]]\npath = \"/a\"\nfiles = [\"/nonexistent/x\"]\n", "/nonexistent/x"),
            ("[[scope]]\npath = \"/a\"\n[[scope]]\npath = \"/a/\"\n", "listed twice"),
            ("[[scope]]\npath = \"/a\"\nmode = \"lenient\"\n", "unknown variant"),
        ];
        for (text, needle) in cases {
            let p = write(dir.path(), "p.toml", text);
            let err = Policy::from_local_file(&p).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("p.toml"), "{err}");
        }
    }
}
