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
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use enforcer_common::AUTH_ID_LEN;
use tokio::sync::{mpsc, oneshot};

use crate::artifact::{ArtifactKind, Bundle, Envelope, OnRevoke, format_time, unix_seconds};
use crate::audit::{self, AuditLog, AuditOptions, AuthorizationChange};
use crate::authz::{self, Authorizations};
use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::kernel::{self, ApplyStats, Attachment, Enforcement, MapState};
use crate::policy::{Mode, Policy, ScopePath};
use crate::{cgroup, preflight, systemd};

pub use decisions::Labels;

/// How often everything is re-read even when nothing announced a change: bounds the
/// delay of a missed notification and picks up bundles whose window has opened.
const RESYNC: Duration = Duration::from_secs(30);

/// Where a pushed artifact waits in the bundle directory while it is verified; not read
/// as an artifact source (the loader reads only files directly in the directory).
const STAGING: &str = ".staging";

/// Values given on the command line; they win over the configuration file and are
/// applied again after every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub trust: Option<PathBuf>,
    pub bundle_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub audit_dir: Option<PathBuf>,
    pub host_key: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub cgroup_root: Option<PathBuf>,
    pub clock_skew: Option<Duration>,
    pub skip_self_test: bool,
    /// Declared in addition to the file's scopes.
    pub scopes: Vec<ScopePath>,
    /// Artifact files or directories read in addition to the bundle directory.
    pub artifacts: Vec<PathBuf>,
}

/// How the agent was asked to run.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The configuration file; `None` means defaults plus the command line.
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    /// DEVELOPMENT AND TESTS ONLY: an unsigned local policy instead of artifacts.
    pub unsigned_policy: Option<PathBuf>,
    /// Print each decision on stdout: `Some(true)` as JSON lines, `Some(false)` as text.
    pub print_decisions: Option<bool>,
}

impl Settings {
    /// The configuration in force: the file (or defaults) with the overrides on top.
    pub fn effective(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config_path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let o = &self.overrides;
        let set = |slot: &mut PathBuf, value: &Option<PathBuf>| {
            if let Some(v) = value {
                slot.clone_from(v);
            }
        };
        set(&mut config.trust, &o.trust);
        set(&mut config.bundle_dir, &o.bundle_dir);
        set(&mut config.state_dir, &o.state_dir);
        set(&mut config.audit_dir, &o.audit_dir);
        set(&mut config.socket, &o.socket);
        set(&mut config.pin_dir, &o.pin_dir);
        set(&mut config.cgroup_root, &o.cgroup_root);
        if o.host_key.is_some() {
            config.host_key.clone_from(&o.host_key);
        }
        if let Some(skew) = o.clock_skew {
            config.clock_skew = skew;
        }
        if o.skip_self_test {
            config.self_test = false;
        }
        for scope in &o.scopes {
            if !config.scopes.iter().any(|s| &s.path == scope) {
                config.scopes.push(crate::config::ScopeConfig {
                    path: scope.clone(),
                    mode: Mode::Enforce,
                });
            }
        }
        Ok(config)
    }
}

/// An authorization the agent has seen, remembered so that processes started under it
/// can be found once it is withdrawn.
#[derive(Debug, Clone)]
struct KnownAuth {
    issuer: String,
    on_revoke: OnRevoke,
    /// The file it came from: a definite withdrawal is this file revoked or gone.
    path: PathBuf,
    /// Unix seconds: past it, the authorization has expired.
    not_after: u64,
    bundle_id: String,
}

impl KnownAuth {
    /// Whether it is withdrawn for good: expired, revoked, or its file removed. A bundle
    /// superseded by a newer serial, or a file that could not be read this time, is not:
    /// killing on those would end processes that are still authorized.
    fn definitely_withdrawn(&self, authz: &Authorizations, now: u64) -> bool {
        self.not_after <= now || authz.revoked.contains(&self.path) || !self.path.exists()
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
    settings: Settings,
    config: Config,
    enforcement: Enforcement,
    labels: Labels,
    self_test_scope: Option<u64>,
    view: View,
    known: HashMap<[u8; AUTH_ID_LEN], KnownAuth>,
    /// Scopes that accepted bundles have named, kept governed after their bundles go.
    bundle_scopes: std::collections::BTreeSet<ScopePath>,
    killed_total: usize,
    last_error: Option<String>,
    started: SystemTime,
    /// Audit records waiting for the log (which only the serving loop holds).
    pending: Vec<AuthorizationChange>,
    /// The watched directories changed: the serving loop watches anew.
    rewatch: bool,
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
    pub fn start(settings: Settings) -> anyhow::Result<Self> {
        let config = settings.effective()?;
        // Two agents would undo each other's updates (and each other's socket).
        if let Ok(r) = control::request(&config.socket, &Request::Status) {
            bail!(
                "an agent is already running (pid {}, socket {}): hand it artifacts with \
                 `enforcer push`, or reload it with SIGHUP, instead of starting another",
                r.data["agent"]["pid"],
                config.socket.display()
            );
        }
        if settings.unsigned_policy.is_some() && production_mode() {
            bail!(
                "--unsigned-policy is refused in production mode (running under systemd, or \
                 ENFORCER_PRODUCTION=1): grant execution with signed bundles"
            );
        }
        if let Err(problems) = preflight::check(&config.cgroup_root) {
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
        if let Some(why) = crate::ima::policy_in_force() {
            // bpf_ima_file_hash then returns IMA's cached digest, which IMA does not
            // refresh after truncate(2) or writes through a shared mapping.
            tracing::warn!(
                "{why}: exec digests may come from IMA's cache, which misses some file changes"
            );
        }
        if settings.unsigned_policy.is_none() {
            ensure_private_dir(&config.bundle_dir)?;
            // A push whose agent died before answering: its client saw an error and
            // pushes again (a resubmission is idempotent), so the leftover goes.
            let staging = config.bundle_dir.join(STAGING);
            if staging.is_dir() {
                let _ = std::fs::remove_dir_all(&staging);
            }
        }
        let mut enforcement = Enforcement::open_or_load(&config.pin_dir)?;
        let self_test_scope = if config.self_test {
            let id = preflight::self_test(&mut enforcement, &config.cgroup_root)?;
            tracing::info!("self-test passed: granted exec allowed, ungranted exec denied");
            Some(id)
        } else {
            None
        };
        let config_state_dir = config.state_dir.clone();
        let mut agent = Self {
            settings,
            config,
            enforcement,
            labels: Labels::default(),
            self_test_scope,
            view: View::default(),
            known: HashMap::new(),
            bundle_scopes: load_scopes(&config_state_dir),
            killed_total: 0,
            last_error: None,
            started: SystemTime::now(),
            pending: Vec::new(),
            rewatch: false,
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
        &self.config.pin_dir
    }

    /// The policy the artifacts (or the unsigned file) describe, with the operator's
    /// per-scope monitor mode on top.
    fn desired_policy(
        &mut self,
        staged: Option<&Path>,
        now: SystemTime,
    ) -> anyhow::Result<(Policy, Option<Authorizations>)> {
        let (mut policy, authz) = match &self.settings.unsigned_policy {
            Some(file) => {
                tracing::debug!(file = %file.display(), "using an UNSIGNED local policy file");
                (Policy::from_local_file(file)?, None)
            }
            None => {
                let mut artifacts = vec![self.config.bundle_dir.clone()];
                artifacts.extend(self.settings.overrides.artifacts.iter().cloned());
                artifacts.extend(staged.map(Path::to_path_buf));
                let sources = authz::Sources {
                    trust: self.config.trust.clone(),
                    artifacts,
                    state_dir: self.config.state_dir.clone(),
                    declared_scopes: self.config.scope_paths().cloned().collect(),
                    clock_skew: self.config.clock_skew,
                };
                let loaded = authz::load(&sources, now)?;
                (loaded.policy.clone(), Some(loaded))
            }
        };
        if let Some(authz) = &authz {
            // A scope a bundle made governed stays governed, denying everything, once its
            // bundles are withdrawn: revoking authority must never leave a scope freer
            // than it was. Remembered in the state directory across restarts; removing
            // the file (with the agent stopped) forgets them.
            let named: Vec<ScopePath> = authz
                .accepted
                .iter()
                .flat_map(|b| b.scopes.iter().cloned())
                .collect();
            let before = self.bundle_scopes.len();
            self.bundle_scopes.extend(named);
            if self.bundle_scopes.len() != before {
                save_scopes(&self.config.state_dir, &self.bundle_scopes);
            }
            for scope in &self.bundle_scopes {
                policy.scopes.entry(scope.clone()).or_default();
            }
        }
        for scope in self
            .config
            .scopes
            .iter()
            .filter(|s| s.mode == Mode::Monitor)
        {
            if let Some(spec) = policy.scopes.get_mut(&scope.path) {
                spec.mode = Mode::Monitor;
            }
        }
        Ok((policy, authz))
    }

    /// Re-reads every artifact and makes the kernel enforce what they say; then kills
    /// what `on_revoke = "kill"` says must not keep running. `staged` is a pushed
    /// artifact not yet kept in the bundle directory.
    pub fn reconcile(&mut self, staged: Option<&Path>) -> anyhow::Result<Reconciled> {
        let now = SystemTime::now();
        let (mut policy, authz) = self.desired_policy(staged, now)?;
        // One scope that cannot be a cgroup here (too deep, not creatable) must not hold
        // every other update back, revocations included: it is left out, loudly. It has
        // no cgroup the kernel could govern anyway.
        let mut problems = Vec::new();
        policy.scopes.retain(|path, _| {
            match cgroup::ensure_scope(&self.config.cgroup_root, path) {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(scope = %path, "scope left out: {e}");
                    problems.push(format!("scope {path} left out: {e}"));
                    false
                }
            }
        });
        let mut desired = kernel::resolve(&policy, &self.config.cgroup_root)?;
        let stats = match self.enforcement.apply(&desired) {
            Err(e @ kernel::KernelError::TooManyGrants { .. }) => {
                // Doubt means deny: the scopes stay governed, with nothing granted, until
                // the grants fit again.
                tracing::error!("{e}: every governed scope denies everything until the grants fit");
                problems.push(format!("{e}: every governed scope denies everything"));
                for spec in policy.scopes.values_mut() {
                    spec.grants.clear();
                }
                desired = kernel::resolve(&policy, &self.config.cgroup_root)?;
                self.enforcement.apply(&desired)?
            }
            other => other?,
        };
        let previous = self.view.authz.take();
        report_refusals(previous.as_ref(), authz.as_ref());
        let mut labels = Labels::new(&policy, &desired, &self.config.cgroup_root);
        if let Some(id) = self.self_test_scope {
            labels.name_scope(id, "(startup self-test)");
        }
        self.labels = labels;
        self.view = View {
            next_deadline: next_deadline(&policy, authz.as_ref(), now),
            policy,
            authz,
            desired,
            stats,
            at: Some(now),
        };
        let withdrawn = self.record_changes(previous.as_ref());
        let killed = self.kill_withdrawn()?;
        self.last_error = (!problems.is_empty()).then(|| problems.join("; "));
        Ok(Reconciled { withdrawn, killed })
    }

    /// Logs and queues audit records for what changed since `previous`: bundles accepted
    /// and withdrawn, break-glass artifacts that took effect. Returns the withdrawn
    /// bundles' names, for the answer to whoever triggered the change.
    fn record_changes(&mut self, previous: Option<&Authorizations>) -> Vec<String> {
        let Some(now) = &self.view.authz else {
            return Vec::new();
        };
        let bundle = |b: &authz::AcceptedBundle, change: &str| AuthorizationChange {
            change: change.into(),
            artifact: "bundle".into(),
            id: b.id.to_string(),
            issuer: b.issuer.clone(),
            bundle_id: Some(b.bundle_id.clone()),
            serial: Some(b.serial),
            scopes: b.scopes.iter().map(ToString::to_string).collect(),
            not_after: Some(format_time(b.not_after)),
            pids: Vec::new(),
            detail: Some(format!("on_revoke = {}", b.on_revoke)),
        };
        // What this agent found in force when it started is not a new acceptance.
        let arrived = if previous.is_some() {
            "accepted"
        } else {
            "in-force"
        };
        let old_bundles = previous.map(|p| p.accepted.as_slice()).unwrap_or_default();
        for b in now
            .accepted
            .iter()
            .filter(|b| !old_bundles.iter().any(|o| o.id == b.id))
        {
            tracing::info!(
                file = %b.path.display(),
                issuer = %b.issuer,
                bundle_id = %b.bundle_id,
                serial = b.serial,
                id = %b.id,
                "bundle {arrived}"
            );
            self.pending.push(bundle(b, arrived));
        }
        let mut withdrawn = Vec::new();
        for b in old_bundles
            .iter()
            .filter(|o| !now.accepted.iter().any(|b| b.id == o.id))
        {
            withdrawn.push(format!(
                "bundle {} serial {} ({})",
                b.bundle_id, b.serial, b.issuer
            ));
            let mut change = bundle(b, "withdrawn");
            change.detail = Some(match now.refused.iter().find(|(p, _)| *p == b.path) {
                Some((_, why)) => why.clone(),
                None => format!(
                    "{} is no longer in the artifact directories",
                    b.path.display()
                ),
            });
            self.pending.push(change);
        }
        let old_glass = previous
            .map(|p| p.break_glass.as_slice())
            .unwrap_or_default();
        for g in now
            .break_glass
            .iter()
            .filter(|g| !old_glass.iter().any(|o| o.id == g.id))
        {
            self.pending.push(AuthorizationChange {
                change: "break-glass".into(),
                artifact: "break-glass".into(),
                id: g.id.to_string(),
                issuer: g.issuer.clone(),
                bundle_id: None,
                serial: None,
                scopes: g.scopes.iter().map(ToString::to_string).collect(),
                not_after: Some(format_time(g.not_after)),
                pids: Vec::new(),
                detail: Some(g.reason.clone()),
            });
        }
        withdrawn
    }

    /// Kills the processes started under authorizations that are no longer live and whose
    /// bundle says `on_revoke = "kill"`. A bundle replaced by a newer serial of the same
    /// bundle id is not withdrawn: its programs are still authorized.
    fn kill_withdrawn(&mut self) -> anyhow::Result<usize> {
        let Some(authz) = &self.view.authz else {
            return Ok(0);
        };
        // A bundle past its not_after still counts as accepted for the clock-skew margin,
        // but the kernel already denies its grants: its processes go now, not a minute late.
        let now = unix_seconds(SystemTime::now());
        let live: HashSet<[u8; AUTH_ID_LEN]> = authz
            .accepted
            .iter()
            .filter(|b| b.not_after > now)
            .map(|b| b.id.auth_prefix())
            .collect();
        let mut learned = Vec::new();
        for b in &authz.accepted {
            learned.push((
                b.id.auth_prefix(),
                KnownAuth {
                    bundle_id: b.bundle_id.clone(),
                    issuer: b.issuer.clone(),
                    on_revoke: b.on_revoke,
                    path: b.path.clone(),
                    not_after: b.not_after,
                },
            ));
        }
        // Bundles refused now (revoked, expired) may have been live before this agent
        // started. Their payload is read without trusting it: only the id it hashes to
        // is used to find processes, and an id can only come from the real payload.
        for (path, _) in &authz.refused {
            if let Some((id, known)) = read_bundle_unverified(path) {
                learned.push((id, known));
            }
        }
        self.known.extend(learned);
        let withdrawn: HashSet<[u8; AUTH_ID_LEN]> = self
            .known
            .iter()
            .filter(|(id, k)| {
                k.on_revoke == OnRevoke::Kill
                    && !live.contains(*id)
                    && k.definitely_withdrawn(authz, now)
            })
            .map(|(id, _)| *id)
            .collect();
        if withdrawn.is_empty() {
            return Ok(0);
        }
        let images = self.enforcement.images()?;
        // A withdrawn bundle's scopes are still in the policy: scopes bundles named stay
        // governed after them (`bundle_scopes`).
        let scopes: Vec<PathBuf> = self
            .view
            .policy
            .scopes
            .keys()
            .map(|s| cgroup::dir_of(&self.config.cgroup_root, s))
            .collect();
        let killed = kill::sweep(&scopes, &images, &withdrawn);
        self.killed_total += killed.len();
        let mut by_auth: BTreeMap<[u8; AUTH_ID_LEN], Vec<u32>> = BTreeMap::new();
        for k in &killed {
            by_auth.entry(k.auth_id).or_default().push(k.pid);
        }
        for (id, pids) in by_auth {
            let known = self.known.get(&id);
            self.pending.push(AuthorizationChange {
                change: "killed".into(),
                artifact: "bundle".into(),
                id: hex::encode(id),
                issuer: known.map(|k| k.issuer.clone()).unwrap_or_default(),
                bundle_id: known.map(|k| k.bundle_id.clone()),
                serial: None,
                scopes: Vec::new(),
                not_after: None,
                pids,
                detail: Some("its authorization was withdrawn and it says on_revoke = kill".into()),
            });
        }
        Ok(killed.len())
    }

    /// `status`: what is enforced, and why a scope denies everything.
    fn status(&self) -> anyhow::Result<serde_json::Value> {
        let dropped = self.enforcement.dropped_events()?;
        let explanations = self.view.authz.as_ref().map(|a| &a.explanations);
        let scopes: Vec<_> = self
            .view
            .policy
            .scopes
            .iter()
            .map(|(path, spec)| {
                let id = cgroup::id_of(
                    &cgroup::dir_of(&self.config.cgroup_root, path),
                    path.as_str(),
                )
                .ok();
                let policy = id.and_then(|id| self.view.desired.scopes.get(&id));
                let breakglass = spec.monitor_until.filter(|t| *t > SystemTime::now());
                let mode = if breakglass.is_some() || spec.mode == Mode::Monitor {
                    "monitor"
                } else {
                    "enforce"
                };
                let mut why: Vec<String> = explanations
                    .and_then(|e| e.get(path))
                    .cloned()
                    .unwrap_or_default();
                if spec.grants.is_empty() && mode == "enforce" && why.is_empty() {
                    why.push("no live authorization covers this scope".into());
                }
                serde_json::json!({
                    "path": path.as_str(),
                    "cgroup_id": id,
                    "mode": mode,
                    "configured_mode": spec.mode,
                    "break_glass_until": breakglass.map(rfc3339),
                    "grants": spec.grants.len(),
                    "denies_everything": spec.grants.is_empty() && mode == "enforce",
                    "why": why,
                    "flags": policy.map(|p| p.flags),
                })
            })
            .collect();
        let authz = self.view.authz.as_ref();
        Ok(serde_json::json!({
            "enforcing": true,
            "agent": {
                "pid": std::process::id(),
                "config": self.settings.config_path,
                "started": rfc3339(self.started),
                "last_reconcile": self.view.at.map(rfc3339),
                "next_deadline": self.view.next_deadline.map(rfc3339),
                "last_error": self.last_error,
                "unsigned_policy": self.settings.unsigned_policy,
                "killed_on_revoke": self.killed_total,
            },
            "pin_dir": self.config.pin_dir,
            "reused_pins": self.enforcement.attachment() == Attachment::Reused,
            "scopes": scopes,
            "bundles": authz.map_or(0, |a| a.accepted.len()),
            "break_glass": authz.map(break_glass_json),
            "refused": authz.map_or(0, |a| a.refused.len()),
            "dropped_events": dropped,
        }))
    }

    /// `list`: the authorizations in force, and the artifacts refused with the reason.
    fn list(&self) -> serde_json::Value {
        let Some(authz) = &self.view.authz else {
            return serde_json::json!({ "unsigned_policy": self.settings.unsigned_policy, "bundles": [], "refused": [] });
        };
        let bundles: Vec<_> = authz
            .accepted
            .iter()
            .map(|b| {
                let grants: usize = b
                    .scopes
                    .iter()
                    .filter_map(|s| self.view.policy.scopes.get(s))
                    .map(|spec| {
                        spec.grants
                            .iter()
                            .filter(|g| {
                                g.auth_serial == b.serial && g.auth_id == b.id.auth_prefix()
                            })
                            .count()
                    })
                    .sum();
                serde_json::json!({
                    "file": b.path,
                    "id": b.id.to_string(),
                    "issuer": b.issuer,
                    "bundle_id": b.bundle_id,
                    "serial": b.serial,
                    "scopes": b.scopes.iter().map(ScopePath::as_str).collect::<Vec<_>>(),
                    "not_after": format_time(b.not_after),
                    "on_revoke": b.on_revoke.to_string(),
                    "live_grants": grants,
                })
            })
            .collect();
        let refused: Vec<_> = authz
            .refused
            .iter()
            .map(|(path, why)| serde_json::json!({ "file": path, "reason": why }))
            .collect();
        serde_json::json!({ "bundles": bundles, "break_glass": break_glass_json(authz), "refused": refused })
    }

    /// Handles a push or revoke: verifies the artifact by reconciling with it staged,
    /// keeps it in the bundle directory when accepted, and answers once the kernel
    /// enforces the result.
    fn push(&mut self, revoke: bool, name: &str, artifact: &str) -> Response {
        if self.settings.unsigned_policy.is_some() {
            return Response::error(
                "this agent runs an unsigned development policy; it takes no artifacts",
            );
        }
        let bytes = match control::decode_artifact(artifact) {
            Ok(b) => b,
            Err(e) => return Response::error(format!("{name}: {e}")),
        };
        let envelope = match Envelope::parse(&bytes) {
            Ok(e) => e,
            Err(e) => return Response::error(format!("{name}: refused: {e}")),
        };
        let kind = match envelope.kind() {
            Ok(k) => k,
            Err(e) => return Response::error(format!("{name}: refused: {e}")),
        };
        if revoke && kind != ArtifactKind::Revocation {
            return Response::error(format!(
                "{name}: refused: it is a {kind}, not a revocation (use `enforcer push`)"
            ));
        }
        let id = envelope.id();
        // Named by content: pushing the same artifact twice keeps one file.
        let short = id.to_string()[..32].to_owned();
        let staging = self.config.bundle_dir.join(STAGING);
        let staged = staging.join(format!("{short}.json"));
        if let Err(e) = ensure_private_dir(&staging).and_then(|()| write_synced(&staged, &bytes)) {
            return Response::error(format!("{name}: cannot stage the artifact: {e:#}"));
        }
        let result = self.reconcile(Some(&staged));
        let refused = self.view.authz.as_ref().and_then(|a| {
            a.refused
                .iter()
                .find(|(p, _)| p == &staged)
                .map(|(_, why)| why.clone())
        });
        let done = match (result, refused) {
            (Err(e), _) => {
                let _ = std::fs::remove_file(&staged);
                self.last_error = Some(format!("{e:#}"));
                return Response::error(format!("{name}: not applied: {e:#}"));
            }
            (Ok(_), Some(why)) => {
                let _ = std::fs::remove_file(&staged);
                // Enforce again without it, so nothing of a refused artifact lingers.
                if let Err(e) = self.reconcile(None) {
                    self.last_error = Some(format!("{e:#}"));
                }
                return Response::error(format!("{name}: refused: {why}"));
            }
            (Ok(done), None) => done,
        };
        let kept = self.config.bundle_dir.join(format!("{kind}-{short}.json"));
        if let Err(e) = std::fs::rename(&staged, &kept) {
            return Response::error(format!(
                "{name}: enforced, but cannot keep it in {}: {e}; it will not survive a restart",
                self.config.bundle_dir.display()
            ));
        }
        let mut message = format!(
            "{name}: {kind} accepted and enforced (kept as {})",
            kept.display()
        );
        if let Some(b) = self
            .view
            .authz
            .as_ref()
            .and_then(|a| a.accepted.iter().find(|b| b.id == id))
        {
            let scopes = b
                .scopes
                .iter()
                .map(ScopePath::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            message = format!(
                "{name}: bundle {} serial {} from {} enforced in {scopes} until {}",
                b.bundle_id,
                b.serial,
                b.issuer,
                format_time(b.not_after),
            );
        }
        if !done.withdrawn.is_empty() {
            message.push_str(&format!("; withdrawn: {}", done.withdrawn.join(", ")));
        }
        if done.killed > 0 {
            message.push_str(&format!(
                "; {} process(es) killed (on_revoke = kill)",
                done.killed
            ));
        }
        tracing::info!(file = %kept.display(), %kind, "{message}");
        Response::ok(
            message,
            serde_json::json!({ "id": id.to_string(), "kind": kind.to_string(), "withdrawn": done.withdrawn, "killed": done.killed }),
        )
    }

    /// SIGHUP: re-reads the configuration. A configuration that does not load keeps the
    /// previous one in force; settings that need a restart are reported and kept.
    fn reload(&mut self) -> anyhow::Result<()> {
        let mut new = self
            .settings
            .effective()
            .context("reloading the configuration (the previous one stays in force)")?;
        let mut kept = Vec::new();
        if new.pin_dir != self.config.pin_dir {
            kept.push("pin_dir");
            new.pin_dir.clone_from(&self.config.pin_dir);
        }
        if new.socket != self.config.socket {
            kept.push("socket");
            new.socket.clone_from(&self.config.socket);
        }
        if new.audit_dir != self.config.audit_dir || new.host_key != self.config.host_key {
            kept.push("audit_dir/host_key");
            new.audit_dir.clone_from(&self.config.audit_dir);
            new.host_key.clone_from(&self.config.host_key);
        }
        if !kept.is_empty() {
            tracing::warn!(settings = ?kept, "changed in the configuration, but take effect only after a restart");
        }
        if self.settings.unsigned_policy.is_none() {
            ensure_private_dir(&new.bundle_dir)?;
        }
        let old = std::mem::replace(&mut self.config, new);
        if let Err(e) = self.reconcile(None) {
            self.config = old;
            return Err(
                e.context("applying the reloaded configuration (the previous one stays in force)")
            );
        }
        tracing::info!("configuration reloaded");
        self.rewatch = true;
        Ok(())
    }

    /// Reconciles on a trigger nobody waits for (a file, a deadline, the resync): a
    /// failure is logged and kept for `status`; the kernel keeps what it had and expires
    /// grants by itself.
    fn resync(&mut self) {
        match self.reconcile(None) {
            Ok(done) => {
                for w in &done.withdrawn {
                    tracing::warn!(authorization = %w, killed = done.killed, "authorization withdrawn");
                }
                systemd::status(&self.summary());
            }
            Err(e) => {
                tracing::error!("re-applying authorizations failed: {e:#}");
                self.last_error = Some(format!("{e:#}"));
            }
        }
    }

    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.config.bundle_dir.clone()];
        dirs.extend(
            self.settings
                .overrides
                .artifacts
                .iter()
                .filter(|p| p.is_dir())
                .cloned(),
        );
        dirs
    }

    fn summary(&self) -> String {
        let s = &self.view.stats;
        let bundles = self.view.authz.as_ref().map_or(0, |a| a.accepted.len());
        format!(
            "enforcing {} scope(s), {} grant(s) from {bundles} bundle(s)",
            s.scopes, s.grants
        )
    }

    fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Push { name, artifact } => self.push(false, &name, &artifact),
            Request::Revoke { name, artifact } => self.push(true, &name, &artifact),
            Request::Status => match self.status() {
                Ok(data) => Response::ok(self.summary(), data),
                Err(e) => Response::error(format!("{e:#}")),
            },
            Request::List => Response::ok(self.summary(), self.list()),
            Request::Reload => match self.reload() {
                Ok(()) => Response::ok(
                    format!("configuration reloaded; {}", self.summary()),
                    serde_json::Value::Null,
                ),
                Err(e) => Response::error(format!("{e:#}")),
            },
        }
    }

    /// Follows decisions into the audit log and serves updates until SIGINT or SIGTERM.
    /// Stopping leaves enforcement pinned and on.
    pub fn serve(mut self) -> anyhow::Result<()> {
        let me = std::process::id();
        // Governed tasks may not signal the agent while it runs.
        self.enforcement.protect(me)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let served = runtime.block_on(self.serve_loop());
        let unprotected = self.enforcement.unprotect(me);
        systemd::stopping();
        served?;
        unprotected?;
        tracing::info!("agent stopping; enforcement stays pinned and on");
        Ok(())
    }

    fn open_audit_log(&self) -> anyhow::Result<AuditLog> {
        let host_key = match &self.config.host_key {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(audit::DEFAULT_HOST_KEY)).filter(|p| p.exists()),
        };
        let host_key = host_key
            .map(|p| {
                crate::trust::SigningKey::load(&p)
                    .with_context(|| format!("audit host key {}", p.display()))
            })
            .transpose()?;
        if host_key.is_none() {
            tracing::warn!("no audit host key: checkpoints are unsigned (see host_key)");
        }
        AuditLog::open(&self.config.audit_dir, host_key, AuditOptions::default()).with_context(
            || {
                format!(
                    "opening the audit log in {}",
                    self.config.audit_dir.display()
                )
            },
        )
    }

    async fn serve_loop(&mut self) -> anyhow::Result<()> {
        use tokio::io::unix::AsyncFd;
        use tokio::signal::unix::{SignalKind, signal};

        let mut log = self.open_audit_log()?;
        let ring = self
            .enforcement
            .take_events()
            .context("decision ring buffer already taken")?;
        // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, so the fd stays
        // open for as long as it is registered.
        let mut ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("watching the decision ring buffer: {e}"))?;
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        let listener = control::bind(&self.config.socket)?;
        let (tx, mut requests) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(16);
        let control_task = tokio::spawn(serve_control(listener, tx));
        let mut watcher = watch::Watcher::new(self.watched_dirs().iter().map(PathBuf::as_path))?;
        // Drops since the last agent accounted for them (while none was reading) become a
        // gap record now, before anything else is read.
        let ledger = drops::DropLedger::new(
            &self.config.audit_dir,
            audit::boot_id()?,
            self.enforcement.drop_counter_id()?,
        );
        let mut dropped_seen = ledger.accounted();
        let account = |log: &mut AuditLog, seen: &mut u64, now: u64| -> anyhow::Result<()> {
            if now > *seen {
                tracing::error!(lost = now - *seen, "decisions lost: ring buffer was full");
                log.append_gap(now - *seen)?;
                *seen = now;
                log.flush()?;
                ledger
                    .record(now)
                    .context("recording the accounted drop count")?;
            }
            Ok(())
        };
        let dropped = self.enforcement.dropped_events()?;
        if dropped < dropped_seen {
            // Cannot happen for one map; never let it hide later drops.
            dropped_seen = 0;
        }
        account(&mut log, &mut dropped_seen, dropped)?;
        ledger
            .record(dropped_seen)
            .context("recording the accounted drop count")?;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let watchdog = systemd::watchdog_interval().map(|i| i / 2);
        let mut last_ping = Instant::now();
        let mut last_sync = Instant::now();

        systemd::ready(&self.summary());
        if self.settings.print_decisions.is_some() {
            println!("following decisions (Ctrl-C to stop; enforcement stays on)");
        }
        tracing::info!(socket = %self.config.socket.display(), "agent ready");
        loop {
            for change in self.pending.drain(..) {
                log.append_authorization(change)?;
            }
            // A reload (signal or socket) may have moved the directories.
            if std::mem::take(&mut self.rewatch) {
                watcher = watch::Watcher::new(self.watched_dirs().iter().map(PathBuf::as_path))?;
            }
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    systemd::reloading();
                    if let Err(e) = self.reload() {
                        tracing::error!("{e:#}");
                        self.last_error = Some(format!("{e:#}"));
                    }
                    systemd::ready_after_reload(&self.summary());
                }
                changed = watcher.changed() => {
                    changed.context("watching the bundle directory")?;
                    // A copy arrives as several events; let it finish, then read once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = tokio::time::timeout(Duration::ZERO, watcher.changed()).await;
                    self.resync();
                    last_sync = Instant::now();
                }
                Some((request, reply)) = requests.recv() => {
                    let response = self.handle(request);
                    let _ = reply.send(response);
                    systemd::status(&self.summary());
                }
                _ = ticker.tick() => {
                    log.tick()?;
                    let due = self.view.next_deadline.is_some_and(|t| SystemTime::now() >= t);
                    if due || last_sync.elapsed() >= RESYNC {
                        self.resync();
                        last_sync = Instant::now();
                    }
                    if watchdog.is_some_and(|w| last_ping.elapsed() >= w) {
                        systemd::watchdog();
                        last_ping = Instant::now();
                    }
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("waiting for decisions")?;
                    let rb = guard.get_inner_mut();
                    while let Some(item) = rb.next() {
                        let Some(event) = decisions::decode(&item) else {
                            tracing::error!(len = item.len(), "malformed decision record");
                            continue;
                        };
                        log.append_decision(&event, &self.labels.audit(&event))?;
                        if let Some(json) = self.settings.print_decisions {
                            println!("{}", self.labels.render(&event, json));
                        }
                    }
                    guard.clear_ready();
                    // Losses are recorded where they happened in the stream, as a gap.
                    account(&mut log, &mut dropped_seen, self.enforcement.dropped_events()?)?;
                    log.flush()?;
                }
            }
        }
        control_task.abort();
        let _ = std::fs::remove_file(&self.config.socket);
        log.close()?;
        Ok(())
    }
}

/// Logs what is newly wrong since the last reconcile: refusals and scopes left with no
/// grant, not the same list every resync. (Acceptances are logged with their audit
/// records.)
fn report_refusals(old: Option<&Authorizations>, new: Option<&Authorizations>) {
    let Some(new) = new else { return };
    for (path, why) in &new.refused {
        if !old.is_some_and(|o| o.refused.iter().any(|(p, w)| p == path && w == why)) {
            tracing::warn!(file = %path.display(), reason = %why, "artifact refused");
        }
    }
    for (scope, spec) in &new.policy.scopes {
        if spec.grants.is_empty() && spec.mode == Mode::Enforce {
            let was = old
                .and_then(|o| o.policy.scopes.get(scope))
                .is_some_and(|s| s.grants.is_empty());
            if !was {
                tracing::warn!(%scope, "no live authorization covers this scope: every exec in it is denied");
            }
        }
    }
}

/// The earliest moment after `now` at which what is authorized changes by itself: a
/// grant or bundle expires, a break-glass window ends.
fn next_deadline(
    policy: &Policy,
    authz: Option<&Authorizations>,
    now: SystemTime,
) -> Option<SystemTime> {
    let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let bundles = authz
        .into_iter()
        .flat_map(|a| a.accepted.iter().map(|b| at(b.not_after)));
    let glass = authz
        .into_iter()
        .flat_map(|a| a.break_glass.iter().map(|g| at(g.not_after)));
    policy
        .scopes
        .values()
        .flat_map(|s| {
            s.grants
                .iter()
                .filter_map(|g| g.not_after)
                .chain(s.monitor_until)
        })
        .chain(bundles)
        .chain(glass)
        .filter(|t| *t > now)
        .min()
}

fn break_glass_json(authz: &Authorizations) -> serde_json::Value {
    authz
        .break_glass
        .iter()
        .map(|b| {
            serde_json::json!({
                "file": b.path,
                "id": b.id.to_string(),
                "issuer": b.issuer,
                "scopes": b.scopes.iter().map(ScopePath::as_str).collect::<Vec<_>>(),
                "not_after": format_time(b.not_after),
                "reason": b.reason,
            })
        })
        .collect()
}

/// Where the scopes bundles have named are remembered (next to the acceptor's state).
const BUNDLE_SCOPES_FILE: &str = "bundle-scopes.json";

fn load_scopes(state_dir: &Path) -> std::collections::BTreeSet<ScopePath> {
    let path = state_dir.join(BUNDLE_SCOPES_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return Default::default();
    };
    match serde_json::from_slice::<Vec<String>>(&bytes) {
        Ok(list) => list.iter().filter_map(|s| s.parse().ok()).collect(),
        Err(e) => {
            tracing::error!(file = %path.display(), "cannot read the remembered bundle scopes: {e}");
            Default::default()
        }
    }
}

fn save_scopes(state_dir: &Path, scopes: &std::collections::BTreeSet<ScopePath>) {
    let list: Vec<&str> = scopes.iter().map(ScopePath::as_str).collect();
    let path = state_dir.join(BUNDLE_SCOPES_FILE);
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec(&list)
        .map_err(std::io::Error::other)
        .and_then(|bytes| write_synced(&tmp, &bytes).map_err(std::io::Error::other))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        // Still governed for this run; only a restart could forget them.
        tracing::error!(file = %path.display(), "cannot remember the bundle scopes: {e}");
    }
}

/// A bundle file's id prefix, bundle id, issuer and `on_revoke`, without verifying it.
fn read_bundle_unverified(path: &Path) -> Option<([u8; AUTH_ID_LEN], KnownAuth)> {
    let bytes = crate::verify::read_artifact(path).ok()?;
    let envelope = Envelope::parse(&bytes).ok()?;
    if envelope.kind().ok()? != ArtifactKind::Bundle {
        return None;
    }
    let bundle = Bundle::from_payload(&envelope.payload).ok()?;
    Some((
        envelope.id().auth_prefix(),
        KnownAuth {
            bundle_id: bundle.bundle_id,
            issuer: bundle.issuer,
            on_revoke: bundle.on_revoke,
            path: path.to_path_buf(),
            not_after: bundle.not_after,
        },
    ))
}

/// Creates `dir` (mode 0700) if it is missing.
fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes a file and makes it durable before it is used.
fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Accepts control connections; each request goes to the main loop, which owns the
/// agent, and its answer comes back here.
async fn serve_control(
    listener: tokio::net::UnixListener,
    tx: mpsc::Sender<(Request, oneshot::Sender<Response>)>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning on the error.
                tracing::warn!("control socket: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, tx).await {
                tracing::warn!("control connection: {e}");
            }
        });
    }
}

async fn serve_connection(
    stream: tokio::net::UnixStream,
    tx: mpsc::Sender<(Request, oneshot::Sender<Response>)>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
    let (read, mut write) = stream.into_split();
    let answer = async {
        // Root only: the socket's mode is the first check, the peer's credentials the
        // second (a chmod or bind mount mistake must not open it).
        let uid = write.as_ref().peer_cred().map(|c| c.uid()).ok();
        if uid != Some(0) {
            tracing::warn!(?uid, "control request refused: not root");
            return Response::error(format!(
                "permission denied: only root may control the agent (peer uid {})",
                uid.map_or_else(|| "unknown".into(), |u| u.to_string())
            ));
        }
        let mut line = String::new();
        let limited = BufReader::new(read.take(control::MAX_REQUEST_BYTES as u64 + 1));
        let mut limited = limited;
        match tokio::time::timeout(Duration::from_secs(10), limited.read_line(&mut line)).await {
            Err(_) => return Response::error("no request within 10 s"),
            Ok(Err(e)) => return Response::error(format!("cannot read the request: {e}")),
            Ok(Ok(_)) if line.len() > control::MAX_REQUEST_BYTES => {
                return Response::error(format!(
                    "request over {} bytes",
                    control::MAX_REQUEST_BYTES
                ));
            }
            Ok(Ok(_)) => {}
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => return Response::error(format!("not a valid request: {e}")),
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        if tx.send((request, reply_tx)).await.is_err() {
            return Response::error("the agent is stopping");
        }
        reply_rx
            .await
            .unwrap_or_else(|_| Response::error("the agent is stopping"))
    }
    .await;
    let mut bytes = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{GrantSpec, ScopeSpec};

    #[test]
    fn flags_win_over_the_file_and_add_scopes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "trust = \"/file/trust.toml\"\nstate_dir = \"/file/state\"\n[[scope]]\npath = \"/a\"\nmode = \"monitor\"\n",
        )
        .expect("write");
        let settings = Settings {
            config_path: Some(file.clone()),
            overrides: Overrides {
                trust: Some("/flag/trust.toml".into()),
                skip_self_test: true,
                scopes: vec!["/a".parse().expect("scope"), "/b".parse().expect("scope")],
                ..Overrides::default()
            },
            ..Settings::default()
        };
        let c = settings.effective().expect("effective");
        assert_eq!(c.trust, PathBuf::from("/flag/trust.toml"));
        assert_eq!(c.state_dir, PathBuf::from("/file/state"));
        assert!(!c.self_test);
        let scopes: Vec<_> = c.scopes.iter().map(|s| (s.path.as_str(), s.mode)).collect();
        assert_eq!(
            scopes,
            [("/a", Mode::Monitor), ("/b", Mode::Enforce)],
            "the file's mode for /a stays"
        );
        // A broken file is an error that names it, never a silent fallback to defaults.
        std::fs::write(&file, "trust = [").expect("write");
        let err = settings.effective().expect_err("broken").to_string();
        assert!(err.contains("config.toml"), "{err}");
    }

    #[test]
    fn next_deadline_is_the_earliest_future_change() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let grant = |not_after| GrantSpec {
            digest: crate::digest::FileDigest([1; 32]),
            name: None,
            not_after,
            auth_id: [0; AUTH_ID_LEN],
            auth_serial: 1,
        };
        let mut policy = Policy::default();
        policy.scopes.insert(
            "/a".parse().expect("scope"),
            ScopeSpec {
                grants: vec![grant(at(900)), grant(at(5_000)), grant(None)],
                ..ScopeSpec::default()
            },
        );
        assert_eq!(
            next_deadline(&policy, None, now),
            at(5_000),
            "past deadlines do not count"
        );
        policy.scopes.insert(
            "/b".parse().expect("scope"),
            ScopeSpec {
                monitor_until: at(2_000),
                ..ScopeSpec::default()
            },
        );
        assert_eq!(
            next_deadline(&policy, None, now),
            at(2_000),
            "a break-glass end counts"
        );
        assert_eq!(next_deadline(&Policy::default(), None, now), None);
    }
}
