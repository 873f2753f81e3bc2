//! The agent's configuration file (`enforcer run --config /etc/enforcer/config.toml`).
//!
//! Every key is optional; [`Config::default`] is what an empty file means. The file is
//! the operator's, not the security team's: it says where things live and which scopes
//! are governed, and it may put a scope in monitor mode for a rollout. It can never grant
//! an execution: grants come only from signed bundles.
//!
//! ```toml
//! # Keys that may sign bundles, revocations and break-glass artifacts.
//! trust = "/etc/enforcer/trust.toml"
//! # Signed artifacts; watched, so a file dropped here takes effect without a restart.
//! bundle_dir = "/etc/enforcer/bundles"
//! # Accepted serials and revocations (rollback protection).
//! state_dir = "/var/lib/enforcer/state"
//! # Hash-chained audit log, and the key that signs its checkpoints (optional).
//! audit_dir = "/var/lib/enforcer/audit"
//! host_key = "/etc/enforcer/audit-host.key"
//! # Local control socket for `enforcer push|revoke|status|list` (root only).
//! socket = "/run/enforcer/control.sock"
//! pin_dir = "/sys/fs/bpf/enforcer"
//! cgroup_root = "/sys/fs/cgroup"
//! # How far validity windows stretch for clock differences between hosts.
//! clock_skew = "60s"
//! # Trial exec granted and denied at startup; proves the kernel side really enforces.
//! self_test = true
//!
//! [[scope]]
//! path = "/agents.slice"
//! mode = "enforce"      # "monitor": allow and record what would be denied (rollout)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::{Mode, ScopePath};

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/enforcer/config.toml";
pub const DEFAULT_TRUST: &str = "/etc/enforcer/trust.toml";
pub const DEFAULT_BUNDLE_DIR: &str = "/etc/enforcer/bundles";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/enforcer/state";
pub const DEFAULT_SOCKET: &str = "/run/enforcer/control.sock";

/// Why the configuration file was refused. The agent keeps running on the previous one
/// when a reload fails.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: scope {index}: {problem}")]
    Scope {
        path: PathBuf,
        index: usize,
        problem: String,
    },
    #[error("config file {path}: clock_skew {value:?}: {problem}")]
    ClockSkew {
        path: PathBuf,
        value: String,
        problem: String,
    },
}

/// One governed scope, as the operator declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeConfig {
    pub path: ScopePath,
    /// `Monitor` overrides what bundles say, for a rollout; `Enforce` leaves the mode to
    /// the bundles (a bundle in monitor mode still only monitors).
    pub mode: Mode,
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub trust: PathBuf,
    pub bundle_dir: PathBuf,
    pub state_dir: PathBuf,
    pub audit_dir: PathBuf,
    /// `None`: use the default key file if it exists, else unsigned checkpoints.
    pub host_key: Option<PathBuf>,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub clock_skew: Duration,
    pub self_test: bool,
    pub scopes: Vec<ScopeConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            trust: DEFAULT_TRUST.into(),
            bundle_dir: DEFAULT_BUNDLE_DIR.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            audit_dir: crate::audit::DEFAULT_DIR.into(),
            host_key: None,
            socket: DEFAULT_SOCKET.into(),
            pin_dir: crate::kernel::DEFAULT_PIN_DIR.into(),
            cgroup_root: crate::cgroup::DEFAULT_ROOT.into(),
            clock_skew: crate::verify::DEFAULT_CLOCK_SKEW,
            self_test: true,
            scopes: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    trust: Option<PathBuf>,
    bundle_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    audit_dir: Option<PathBuf>,
    host_key: Option<PathBuf>,
    socket: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
    cgroup_root: Option<PathBuf>,
    clock_skew: Option<String>,
    self_test: Option<bool>,
    #[serde(default)]
    scope: Vec<ScopeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeFile {
    path: String,
    #[serde(default)]
    mode: Mode,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.into(),
            message: e.to_string(),
        })?;
        let defaults = Self::default();
        let clock_skew = match file.clock_skew {
            None => defaults.clock_skew,
            Some(value) => {
                humantime::parse_duration(&value).map_err(|e| ConfigError::ClockSkew {
                    path: path.into(),
                    value: value.clone(),
                    problem: e.to_string(),
                })?
            }
        };
        let mut scopes: Vec<ScopeConfig> = Vec::with_capacity(file.scope.len());
        for (index, s) in file.scope.into_iter().enumerate() {
            let refuse = |problem: String| ConfigError::Scope {
                path: path.into(),
                index,
                problem,
            };
            let scope: ScopePath = s.path.parse().map_err(|e| refuse(format!("{e}")))?;
            if scopes.iter().any(|c| c.path == scope) {
                return Err(refuse(format!("{scope} is listed twice")));
            }
            scopes.push(ScopeConfig {
                path: scope,
                mode: s.mode,
            });
        }
        Ok(Self {
            trust: file.trust.unwrap_or(defaults.trust),
            bundle_dir: file.bundle_dir.unwrap_or(defaults.bundle_dir),
            state_dir: file.state_dir.unwrap_or(defaults.state_dir),
            audit_dir: file.audit_dir.unwrap_or(defaults.audit_dir),
            host_key: file.host_key,
            socket: file.socket.unwrap_or(defaults.socket),
            pin_dir: file.pin_dir.unwrap_or(defaults.pin_dir),
            cgroup_root: file.cgroup_root.unwrap_or(defaults.cgroup_root),
            clock_skew,
            self_test: file.self_test.unwrap_or(defaults.self_test),
            scopes,
        })
    }

    /// The declared scopes' paths.
    pub fn scope_paths(&self) -> impl Iterator<Item = &ScopePath> {
        self.scopes.iter().map(|s| &s.path)
    }

    /// The configuration file `enforcer install-unit` writes when there is none: every
    /// default spelled out, and an example scope left commented so installing governs
    /// nothing until the operator says so.
    #[must_use]
    pub fn default_text() -> String {
        let d = Self::default();
        format!(
            "# enforcer agent configuration (docs/service.md). Every key is optional.\n\
             trust = {trust:?}\n\
             bundle_dir = {bundles:?}\n\
             state_dir = {state:?}\n\
             audit_dir = {audit:?}\n\
             # host_key = \"/etc/enforcer/audit-host.key\"  # used when the file exists\n\
             socket = {socket:?}\n\
             pin_dir = {pin:?}\n\
             cgroup_root = {cgroup:?}\n\
             clock_skew = \"60s\"\n\
             self_test = true\n\
             \n\
             # Governed scopes: in them, only programs covered by a live signed bundle run.\n\
             # [[scope]]\n\
             # path = \"/agents.slice\"\n\
             # mode = \"enforce\"   # or \"monitor\" for a rollout\n",
            trust = d.trust.display().to_string(),
            bundles = d.bundle_dir.display().to_string(),
            state = d.state_dir.display().to_string(),
            audit = d.audit_dir.display().to_string(),
            socket = d.socket.display().to_string(),
            pin = d.pin_dir.display().to_string(),
            cgroup = d.cgroup_root.display().to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse("").expect("empty"), Config::default());
    }

    #[test]
    fn default_text_parses_to_defaults() {
        assert_eq!(
            parse(&Config::default_text()).expect("default text"),
            Config::default()
        );
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
            trust = "/t.toml"
            bundle_dir = "/b"
            socket = "/s.sock"
            clock_skew = "5s"
            self_test = false
            [[scope]]
            path = "/agents.slice"
            [[scope]]
            path = "/ci.slice"
            mode = "monitor"
            "#,
        )
        .expect("valid");
        assert_eq!(c.trust, PathBuf::from("/t.toml"));
        assert_eq!(c.bundle_dir, PathBuf::from("/b"));
        assert_eq!(c.clock_skew, Duration::from_secs(5));
        assert!(!c.self_test);
        assert_eq!(c.scopes.len(), 2);
        assert_eq!(c.scopes[0].mode, Mode::Enforce);
        assert_eq!(c.scopes[1].mode, Mode::Monitor);
        assert_eq!(c.scopes[1].path.as_str(), "/ci.slice");
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            ("trusst = \"/x\"", "trusst"),
            ("[[scope]]\npath = \"agents\"", "must be absolute"),
            ("[[scope]]\npath = \"/\"", "root cgroup"),
            (
                "[[scope]]\npath = \"/a\"\n[[scope]]\npath = \"/a\"",
                "listed twice",
            ),
            ("[[scope]]\npath = \"/a\"\nmode = \"off\"", "off"),
            ("clock_skew = \"soon\"", "soon"),
            ("self_test = \"yes\"", "self_test"),
        ];
        for (text, needle) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.contains(needle),
                "{text:?}: {err:?} should mention {needle:?}"
            );
            assert!(err.contains("test.toml"), "{err:?} names the file");
        }
    }
}
