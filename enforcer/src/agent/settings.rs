//! The agent's settings, each declared once: [`Settings`] is what the configuration file
//! holds and what the command line's flags give, and every accessor knows its default.
//! Layers stack one way: the defaults, then the file, then the flags ([`Settings::over`]),
//! and the flags are applied again after every reload.
//!
//! Every key is optional; an empty file means the defaults. The file is the operator's,
//! not the security team's: it says where things live and which scopes are governed, and
//! it may put a scope in monitor mode for a rollout. It can never grant an execution:
//! grants come only from signed bundles.
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
//! # How often the log signs a checkpoint while records arrive; a record is provable
//! # from the first checkpoint after it.
//! checkpoint_interval = "60s"
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
//!
//! # Read-only HTTP window (/healthz, /readyz, /metrics, /api/v1/); off without this section.
//! [http]
//! listen = "127.0.0.1:9464"
//! token_file = "/etc/enforcer/http-token"   # required to listen beyond loopback
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authz::artifact::Mode;
use crate::authz::artifact::ScopePath;
use crate::paths;
use crate::service::http::HttpSettings;

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
    #[error("config file {path}: {problem}")]
    Http { path: PathBuf, problem: String },
    #[error("config file {path}: {problem}")]
    CheckpointInterval { path: PathBuf, problem: String },
    #[error("config file {path}: {problem}")]
    Witness { path: PathBuf, problem: String },
}

/// One governed scope, as the operator declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    #[serde(with = "scope_path")]
    pub path: ScopePath,
    /// `Monitor` overrides what bundles say, for a rollout; `Enforce` leaves the mode to
    /// the bundles (a bundle in monitor mode still only monitors).
    #[serde(default)]
    pub mode: Mode,
    /// Directories (or files) the scope's tasks may write below, besides /tmp, /var/tmp
    /// and /dev/shm. Everything else is read-only to them, root included.
    #[serde(default)]
    pub writable: Vec<PathBuf>,
    /// Device nodes the scope's tasks may open besides null, zero, full, random, urandom
    /// and terminals (for example /dev/kvm). Every other device is a driver's raw
    /// interface, and refused.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
}

/// A `--scope` flag: a scope whose mode the bundles decide.
fn parse_scope_flag(text: &str) -> Result<ScopeConfig, String> {
    let path = text.parse().map_err(|e| format!("{e}"))?;
    Ok(ScopeConfig {
        path,
        mode: Mode::Enforce,
        writable: Vec::new(),
        devices: Vec::new(),
    })
}

/// Every setting of the agent. Unset fields fall through to the layer below, and the
/// accessors give the defaults. Doc comments are the flags' help.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Trust store (TOML): the keys that may sign bundles and revocations, and how many
    /// distinct keys must sign each. Only artifacts it accepts grant anything.
    #[arg(
        long,
        env = "ENFORCER_TRUST",
        value_name = "FILE",
        conflicts_with = "unsigned_policy"
    )]
    pub trust: Option<PathBuf>,

    /// Watched directory of signed artifacts; pushed artifacts are kept here too.
    #[arg(long, value_name = "DIR", conflicts_with = "unsigned_policy")]
    pub bundle_dir: Option<PathBuf>,

    /// Accepted serials and revocations, kept across restarts (rollback protection).
    #[arg(long, env = "ENFORCER_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Directory of the tamper-evident audit log (hash-chained JSON Lines).
    #[arg(long, env = "ENFORCER_AUDIT_DIR", value_name = "DIR")]
    pub audit_dir: Option<PathBuf>,

    /// Host key (Ed25519, from `enforcer key generate`) that signs audit checkpoints.
    /// Defaults to /etc/enforcer/audit-host.key when that file exists; without a key,
    /// checkpoints are unsigned and prove nothing against whoever can edit the log.
    #[arg(long, env = "ENFORCER_HOST_KEY", value_name = "FILE")]
    pub host_key: Option<PathBuf>,

    /// The audit log's name in its signed checkpoints (C2SP origin), which witnesses keep
    /// one history for. Defaults to `<hostname>/enforcer-audit`; set it on hosts that may
    /// be renamed.
    #[arg(long, env = "ENFORCER_AUDIT_ORIGIN", value_name = "ORIGIN")]
    pub audit_origin: Option<String>,

    /// How often the audit log signs a checkpoint while records arrive (default 60s, at
    /// least 1s). A record can be proven from the first checkpoint after it; each one
    /// costs an fdatasync and a signature. Read at start: a reload keeps the old one.
    #[arg(long, value_name = "DURATION", value_parser = parse_checkpoint_interval)]
    #[serde(default, with = "duration_text")]
    pub checkpoint_interval: Option<Duration>,

    /// Control socket for `enforcer push|revoke|status|list`.
    #[arg(long, env = "ENFORCER_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// bpffs directory holding the pinned program links and maps.
    #[arg(long, env = "ENFORCER_PIN_DIR", value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,

    /// Mount point of the cgroup v2 hierarchy; scope paths are relative to it.
    #[arg(long, env = "ENFORCER_CGROUP_ROOT", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// How far artifact validity windows stretch to allow for clock differences.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "duration_text")]
    pub clock_skew: Option<Duration>,

    /// Skip the startup self-test (a trial exec granted and then denied in a throwaway
    /// scope). Only for kernels where the test itself cannot run.
    #[arg(
        long = "skip-self-test",
        num_args = 0,
        default_missing_value = "false",
        value_parser = clap::value_parser!(bool),
    )]
    pub self_test: Option<bool>,

    /// A governed scope (cgroup path below the cgroup2 root, such as /agents.slice).
    /// Declared scopes stay governed when no live authorization covers them, and then
    /// deny every exec; scopes named by bundles are governed too. Repeat for more.
    #[arg(long = "scope", value_name = "CGROUP", value_parser = parse_scope_flag)]
    #[serde(default, rename = "scope")]
    pub scopes: Vec<ScopeConfig>,

    /// Unix sockets governed tasks may connect to although no task of their scope listens
    /// on them. Default: journald's sockets. Repeat for more; the first one given replaces
    /// the default list.
    #[arg(long = "allowed-socket", value_name = "PATH")]
    pub allowed_sockets: Option<Vec<PathBuf>>,

    /// Witnesses to send each new audit checkpoint to (C2SP tlog-witness), as
    /// `URL=VKEY` with the witness's cosignature key (`enforcer witness vkey`); in the
    /// file, `[[witness]]` tables with `url` and `key`. Repeat for more.
    #[arg(long = "witness", value_name = "URL=VKEY")]
    #[serde(default, rename = "witness", skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<Vec<crate::witness::WitnessSettings>>,

    /// `[http]`: the read-only HTTP window (probes, metrics, JSON API). Off when absent. Only
    /// the file sets it: a listener is a decision about the host, kept with the others.
    #[arg(skip)]
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

impl Settings {
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
        let settings: Self = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.into(),
            message: e.to_string(),
        })?;
        for (index, scope) in settings.scopes.iter().enumerate() {
            if settings.scopes[..index]
                .iter()
                .any(|s| s.path == scope.path)
            {
                return Err(ConfigError::Scope {
                    path: path.into(),
                    index,
                    problem: format!("{} is listed twice", scope.path),
                });
            }
        }
        for witness in settings.witnesses.iter().flatten() {
            witness.check().map_err(|problem| ConfigError::Witness {
                path: path.into(),
                problem,
            })?;
        }
        if let Some(http) = &settings.http {
            http.check().map_err(|problem| ConfigError::Http {
                path: path.into(),
                problem,
            })?;
        }
        if let Some(interval) = settings.checkpoint_interval {
            check_checkpoint_interval(interval).map_err(|problem| {
                ConfigError::CheckpointInterval {
                    path: path.into(),
                    problem,
                }
            })?;
        }
        Ok(settings)
    }

    /// These settings over `lower`: each one set here wins. Scopes add up; a scope both
    /// layers declare keeps the lower layer's entry (the file's mode over a flag's).
    #[must_use]
    pub fn over(&self, lower: &Self) -> Self {
        let mut merged = lower.clone();
        let set = |slot: &mut Option<PathBuf>, value: &Option<PathBuf>| {
            if value.is_some() {
                slot.clone_from(value);
            }
        };
        set(&mut merged.trust, &self.trust);
        set(&mut merged.bundle_dir, &self.bundle_dir);
        set(&mut merged.state_dir, &self.state_dir);
        set(&mut merged.audit_dir, &self.audit_dir);
        set(&mut merged.host_key, &self.host_key);
        if self.audit_origin.is_some() {
            merged.audit_origin.clone_from(&self.audit_origin);
        }
        set(&mut merged.socket, &self.socket);
        set(&mut merged.pin_dir, &self.pin_dir);
        set(&mut merged.cgroup_root, &self.cgroup_root);
        merged.clock_skew = self.clock_skew.or(lower.clock_skew);
        merged.checkpoint_interval = self.checkpoint_interval.or(lower.checkpoint_interval);
        merged.self_test = self.self_test.or(lower.self_test);
        if self.witnesses.is_some() {
            merged.witnesses.clone_from(&self.witnesses);
        }
        if self.allowed_sockets.is_some() {
            merged.allowed_sockets.clone_from(&self.allowed_sockets);
        }
        if self.http.is_some() {
            merged.http.clone_from(&self.http);
        }
        for scope in &self.scopes {
            if !merged.scopes.iter().any(|s| s.path == scope.path) {
                merged.scopes.push(scope.clone());
            }
        }
        merged
    }

    pub fn trust(&self) -> &Path {
        self.trust.as_deref().unwrap_or(Path::new(paths::TRUST))
    }

    pub fn bundle_dir(&self) -> &Path {
        self.bundle_dir
            .as_deref()
            .unwrap_or(Path::new(paths::BUNDLE_DIR))
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir
            .as_deref()
            .unwrap_or(Path::new(paths::STATE_DIR))
    }

    pub fn audit_dir(&self) -> &Path {
        self.audit_dir
            .as_deref()
            .unwrap_or(Path::new(paths::AUDIT_DIR))
    }

    /// The key file that signs checkpoints: the one set, else the default when it exists.
    #[must_use]
    pub fn host_key(&self) -> Option<PathBuf> {
        match &self.host_key {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(paths::HOST_KEY)).filter(|p| p.exists()),
        }
    }

    pub fn socket(&self) -> &Path {
        self.socket.as_deref().unwrap_or(Path::new(paths::SOCKET))
    }

    pub fn pin_dir(&self) -> &Path {
        self.pin_dir.as_deref().unwrap_or(Path::new(paths::PIN_DIR))
    }

    pub fn cgroup_root(&self) -> &Path {
        self.cgroup_root
            .as_deref()
            .unwrap_or(Path::new(paths::CGROUP_ROOT))
    }

    pub fn clock_skew(&self) -> Duration {
        self.clock_skew
            .unwrap_or(crate::authz::verify::DEFAULT_CLOCK_SKEW)
    }

    pub fn checkpoint_interval(&self) -> Duration {
        self.checkpoint_interval
            .unwrap_or(crate::audit::AuditOptions::default().checkpoint_interval)
    }

    pub fn self_test(&self) -> bool {
        self.self_test.unwrap_or(true)
    }

    /// The sockets governed tasks may reach outside their scope.
    #[must_use]
    pub fn allowed_sockets(&self) -> Vec<PathBuf> {
        self.allowed_sockets.clone().unwrap_or_else(|| {
            paths::DEFAULT_ALLOWED_SOCKETS
                .iter()
                .map(PathBuf::from)
                .collect()
        })
    }

    /// Where the tasks of `scope` may write: the defaults and what the operator adds.
    #[must_use]
    pub fn writable(&self, scope: &ScopePath) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = paths::DEFAULT_WRITABLE.iter().map(PathBuf::from).collect();
        for s in self.scopes.iter().filter(|s| &s.path == scope) {
            roots.extend(s.writable.iter().cloned());
        }
        roots
    }

    /// The device nodes the tasks of `scope` may open besides the harmless ones.
    #[must_use]
    pub fn devices(&self, scope: &ScopePath) -> Vec<PathBuf> {
        self.scopes
            .iter()
            .filter(|s| &s.path == scope)
            .flat_map(|s| s.devices.iter().cloned())
            .collect()
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
             # host_key = {host_key:?}  # used when the file exists\n\
             # audit_origin = \"host.example/enforcer-audit\"  # default: <hostname>/enforcer-audit\n\
             socket = {socket:?}\n\
             pin_dir = {pin:?}\n\
             cgroup_root = {cgroup:?}\n\
             clock_skew = {skew:?}\n\
             checkpoint_interval = {checkpoints:?}\n\
             self_test = {self_test}\n\
             \n\
             # Unix sockets outside every scope that governed tasks may reach.\n\
             # allowed_sockets = {sockets:?}\n\
             \n\
             # Governed scopes: in them, only programs covered by a live signed bundle run.\n\
             # [[scope]]\n\
             # path = \"/agents.slice\"\n\
             # mode = \"enforce\"   # or \"monitor\" for a rollout\n\
             # writable = [\"/srv/agent-work\"]   # besides {writable:?}\n\
             # devices = [\"/dev/kvm\"]           # besides null, zero, random, terminals\n\
             \n\
             # Read-only HTTP window: /healthz, /readyz, /metrics, /api/v1/ (docs/service.md).\n\
             # [http]\n\
             # listen = {listen:?}\n\
             # token_file = \"/etc/enforcer/http-token\"   # needed beyond loopback\n",
            listen = crate::service::http::config::DEFAULT_LISTEN,
            sockets = paths::DEFAULT_ALLOWED_SOCKETS,
            writable = paths::DEFAULT_WRITABLE,
            trust = d.trust().display().to_string(),
            bundles = d.bundle_dir().display().to_string(),
            state = d.state_dir().display().to_string(),
            audit = d.audit_dir().display().to_string(),
            host_key = paths::HOST_KEY,
            socket = d.socket().display().to_string(),
            pin = d.pin_dir().display().to_string(),
            cgroup = d.cgroup_root().display().to_string(),
            skew = humantime::format_duration(d.clock_skew()).to_string(),
            checkpoints = humantime::format_duration(d.checkpoint_interval()).to_string(),
            self_test = d.self_test(),
        )
    }
}

/// Refuses a checkpoint interval under a second: each checkpoint syncs the log and signs.
fn check_checkpoint_interval(interval: Duration) -> Result<(), String> {
    if interval < Duration::from_secs(1) {
        return Err(format!(
            "checkpoint_interval {} is under the 1s minimum: each checkpoint syncs the log \
             to disk and signs",
            humantime::format_duration(interval)
        ));
    }
    Ok(())
}

/// clap value parser for `--checkpoint-interval`.
fn parse_checkpoint_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    check_checkpoint_interval(interval)?;
    Ok(interval)
}

/// `clock_skew = "60s"`: durations as humantime text in the file.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    #[allow(
        clippy::ref_option,
        reason = "serde's `with` passes a reference to the field"
    )]
    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

/// Scope paths as strings, checked as they are read.
mod scope_path {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use crate::authz::artifact::ScopePath;

    pub(super) fn serialize<S: Serializer>(value: &ScopePath, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ScopePath, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(|e| serde::de::Error::custom(format!("{e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(parse("").expect("empty"), Settings::default());
    }

    #[test]
    fn default_text_parses_to_defaults() {
        let text = parse(&Settings::default_text()).expect("default text");
        let d = Settings::default();
        assert_eq!(text.trust(), d.trust());
        assert_eq!(text.bundle_dir(), d.bundle_dir());
        assert_eq!(text.state_dir(), d.state_dir());
        assert_eq!(text.audit_dir(), d.audit_dir());
        assert_eq!(text.host_key, None);
        assert_eq!(text.socket(), d.socket());
        assert_eq!(text.pin_dir(), d.pin_dir());
        assert_eq!(text.cgroup_root(), d.cgroup_root());
        assert_eq!(text.clock_skew(), d.clock_skew());
        assert_eq!(text.checkpoint_interval(), d.checkpoint_interval());
        assert_eq!(text.self_test(), d.self_test());
        assert!(text.scopes.is_empty());
        assert_eq!(text.http, None, "the HTTP window is off by default");
    }

    #[test]
    fn an_http_section_turns_the_window_on() {
        let c = parse("[http]\n").expect("defaults");
        let http = c.http.expect("on");
        assert!(http.listen.ip().is_loopback(), "{http:?}");
        assert_eq!(http.listen.port(), 9464);
        let c = parse("[http]\nlisten = \"0.0.0.0:8080\"\ntoken_file = \"/t\"\n").expect("token");
        let http = c.http.expect("on");
        assert_eq!(http.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(http.token_file.as_deref(), Some(Path::new("/t")));
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
        assert_eq!(c.trust(), Path::new("/t.toml"));
        assert_eq!(c.bundle_dir(), Path::new("/b"));
        assert_eq!(c.clock_skew(), Duration::from_secs(5));
        assert!(!c.self_test());
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
            ("checkpoint_interval = \"often\"", "often"),
            ("checkpoint_interval = \"500ms\"", "under the 1s minimum"),
            ("self_test = \"yes\"", "self_test"),
            ("[http]\nlisten = \"0.0.0.0:9464\"", "token_file"),
            ("[http]\nlisten = \"localhost\"", "localhost"),
            ("[http]\nport = 1", "port"),
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

    #[test]
    fn flags_win_over_the_file_and_add_scopes() {
        let file = parse(
            "trust = \"/file/trust.toml\"\nstate_dir = \"/file/state\"\n[[scope]]\npath = \"/a\"\nmode = \"monitor\"\n",
        )
        .expect("file");
        let flags = Settings {
            trust: Some("/flag/trust.toml".into()),
            self_test: Some(false),
            scopes: vec![
                parse_scope_flag("/a").expect("scope"),
                parse_scope_flag("/b").expect("scope"),
            ],
            ..Settings::default()
        };
        let c = flags.over(&file);
        assert_eq!(c.trust(), Path::new("/flag/trust.toml"));
        assert_eq!(c.state_dir(), Path::new("/file/state"));
        assert!(!c.self_test());
        let scopes: Vec<_> = c.scopes.iter().map(|s| (s.path.as_str(), s.mode)).collect();
        assert_eq!(
            scopes,
            [("/a", Mode::Monitor), ("/b", Mode::Enforce)],
            "the file's mode for /a stays"
        );
    }

    #[test]
    fn the_command_line_reads_into_the_same_settings() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
            #[arg(long)]
            unsigned_policy: Option<PathBuf>,
        }
        let cli = Cli::parse_from([
            "enforcer",
            "--trust",
            "/t.toml",
            "--skip-self-test",
            "--clock-skew",
            "5s",
            "--scope",
            "/a",
        ]);
        assert_eq!(cli.settings.trust(), Path::new("/t.toml"));
        assert_eq!(cli.settings.self_test, Some(false));
        assert_eq!(cli.settings.clock_skew(), Duration::from_secs(5));
        assert_eq!(
            cli.settings
                .scope_paths()
                .map(ScopePath::as_str)
                .collect::<Vec<_>>(),
            ["/a"]
        );
        let none = Cli::parse_from(["enforcer"]);
        assert_eq!(none.settings, Settings::default(), "no flag sets nothing");
    }
}
