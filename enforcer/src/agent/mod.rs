//! The agent as a long-running service: keeps the kernel's maps equal to what the live,
//! signed authorizations say, and takes updates while it runs.
//!
//! Everything that can change what is enforced ends in one place, [`Agent::reconcile`]:
//! it re-reads every artifact, verifies it, and applies the result to the kernel. Its
//! triggers are a file dropped into the bundle directory (inotify), a push or revoke on
//! the control socket, SIGHUP, the next deadline (an expiry, the end of a break-glass)
//! and a periodic resync. Re-reading everything instead of patching in deltas means there
//! is one path from "what is authorized" to "what the kernel holds", and a missed
//! notification only delays an update, never corrupts one.
//!
//! The kernel side does not depend on this loop: grants expire in the kernel, and the
//! programs stay pinned when the agent stops or dies.

mod decisions;
mod drops;
mod kill;
mod push;
mod reconcile;
mod records;
mod report;
mod serve;
pub mod settings;
mod watch;
mod window;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::bail;
use enforcer_common::AUTH_ID_LEN;

use crate::authz::Authorizations;
use crate::authz::artifact::ScopePath;
use crate::authz::artifact::{format_time, unix_seconds};
use crate::authz::policy::Policy;
use crate::host::preflight;
use crate::kernel::{ApplyStats, Attachment, Enforcement, MapState};
use crate::service::control::{self, Request, protocol::StatusReport};

pub use decisions::Labels;
use kill::KnownAuth;
pub use settings::Settings;

/// How the agent was asked to run: where its settings come from, and what only the
/// command line says.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The configuration file; `None` means defaults plus the flags.
    pub config_path: Option<PathBuf>,
    /// Settings given as flags; they win over the file, also after every reload.
    pub flags: Settings,
    /// Artifact files or directories read in addition to the bundle directory.
    pub artifacts: Vec<PathBuf>,
    /// DEVELOPMENT AND TESTS ONLY: an unsigned local policy instead of artifacts.
    pub unsigned_policy: Option<PathBuf>,
    /// Print each decision on stdout: `Some(true)` as JSON lines, `Some(false)` as text.
    pub print_decisions: Option<bool>,
}

impl Invocation {
    /// The settings in force: the file (or nothing) with the flags on top.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config_path {
            Some(path) => Settings::load(path)?,
            None => Settings::default(),
        };
        Ok(self.flags.over(&file))
    }
}

/// What the last reconcile produced: the answer to `status` and `list`.
#[derive(Debug, Default)]
struct View {
    policy: Policy,
    authz: Option<Authorizations>,
    desired: MapState,
    stats: ApplyStats,
    at: Option<SystemTime>,
    next_deadline: Option<SystemTime>,
}

/// What one reconcile did, for the caller that triggered it.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Accepted before and not now: revoked, expired or removed.
    pub withdrawn: Vec<String>,
    pub killed: usize,
}

/// The running agent: the kernel side, the configuration, and what it last applied.
pub struct Agent {
    invocation: Invocation,
    config: Settings,
    enforcement: Enforcement,
    labels: Labels,
    self_test_scope: Option<u64>,
    view: View,
    known: HashMap<[u8; AUTH_ID_LEN], KnownAuth>,
    /// Scopes that accepted bundles have named, kept governed after their bundles go.
    bundle_scopes: BTreeSet<ScopePath>,
    killed_total: usize,
    last_error: Option<String>,
    started: SystemTime,
    /// Audit records waiting for the log (which only the serving loop holds).
    pending: Vec<records::Pending>,
    /// What the log was last told about the operator's part of the policy.
    operator_recorded: Option<records::Operator>,
    /// The watched directories changed: the serving loop watches anew.
    rewatch: bool,
    /// What the HTTP window shows; kept up to date only when `[http]` is set.
    window: crate::service::http::Window,
}

/// RFC 3339, or raw seconds past year 9999 (humantime would panic there).
fn rfc3339(t: SystemTime) -> String {
    format_time(unix_seconds(t))
}

/// Whether this agent runs as a production service, where unsigned policy is refused.
pub fn production_mode() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
        || std::env::var("ENFORCER_PRODUCTION").is_ok_and(|v| v == "1")
}

impl Agent {
    /// Checks the host, loads or reuses the kernel side, proves it enforces, and applies
    /// the authorizations once.
    pub fn start(invocation: Invocation) -> anyhow::Result<Self> {
        let config = invocation.settings()?;
        // Two agents would undo each other's updates (and each other's socket).
        if let Ok(r) = control::request::<StatusReport>(config.socket(), &Request::Status) {
            let pid = r
                .data
                .map_or_else(|| "unknown".into(), |s| s.agent.pid.to_string());
            bail!(
                "an agent is already running (pid {pid}, socket {}): hand it artifacts with \
                 `enforcer push`, or reload it with SIGHUP, instead of starting another",
                config.socket().display()
            );
        }
        if invocation.unsigned_policy.is_some() && production_mode() {
            bail!(
                "--unsigned-policy is refused in production mode (running under systemd, or \
                 ENFORCER_PRODUCTION=1): grant execution with signed bundles"
            );
        }
        if let Err(problems) = preflight::check(config.cgroup_root()) {
            for p in &problems {
                tracing::error!("{p}");
            }
            let list = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            bail!("enforcement cannot start on this host: {list}");
        }
        if let Some(why) = crate::host::ima::policy_in_force() {
            // bpf_ima_file_hash then returns IMA's cached digest, which IMA does not
            // refresh after truncate(2) or writes through a shared mapping.
            tracing::warn!(
                "{why}: exec digests may come from IMA's cache, which misses some file changes"
            );
        }
        if invocation.unsigned_policy.is_none() {
            push::prepare_bundle_dir(config.bundle_dir())?;
        }
        let mut enforcement = Enforcement::open_or_load(config.pin_dir())?;
        let self_test_scope = if config.self_test() {
            let id = preflight::self_test(&mut enforcement, config.cgroup_root())?;
            tracing::info!("self-test passed: granted exec allowed, ungranted exec denied");
            Some(id)
        } else {
            None
        };
        let bundle_scopes = reconcile::load_scopes(config.state_dir());
        // The audit log is opened once, so its checkpoint interval is the starting one.
        let window = window::starting(self_test_scope.is_some(), config.checkpoint_interval());
        let mut agent = Self {
            invocation,
            config,
            enforcement,
            labels: Labels::default(),
            self_test_scope,
            view: View::default(),
            known: HashMap::new(),
            bundle_scopes,
            killed_total: 0,
            last_error: None,
            started: SystemTime::now(),
            pending: Vec::new(),
            operator_recorded: None,
            rewatch: false,
            window,
        };
        let done = agent.reconcile(None)?;
        tracing::info!(
            scopes = agent.view.stats.scopes,
            grants = agent.view.stats.grants,
            removed_scopes = agent.view.stats.removed_scopes,
            removed_grants = agent.view.stats.removed_grants,
            killed = done.killed,
            reused = agent.enforcement.attachment() == Attachment::Reused,
            "policy applied"
        );
        Ok(agent)
    }

    /// Artifacts the last reconcile refused, each with the reason.
    #[must_use]
    pub fn refused(&self) -> &[(PathBuf, String)] {
        self.view
            .authz
            .as_ref()
            .map_or(&[], |a| a.refused.as_slice())
    }

    #[must_use]
    pub fn pin_dir(&self) -> &Path {
        self.config.pin_dir()
    }
}
