//! Reconcile: re-read every artifact, verify it, and make the kernel enforce exactly what
//! it says. Everything that can change what is enforced ends here.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use super::{Agent, Reconciled, View};
use crate::authz::artifact::Mode;
use crate::authz::artifact::ScopePath;
use crate::authz::policy::Policy;
use crate::authz::{self, Authorizations};
use crate::host::cgroup;
use crate::kernel;
use crate::service::systemd;

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

/// Where the scopes bundles have named are remembered (next to the acceptor's state).
const BUNDLE_SCOPES_FILE: &str = "bundle-scopes.json";

pub(super) fn load_scopes(state_dir: &Path) -> BTreeSet<ScopePath> {
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

fn save_scopes(state_dir: &Path, scopes: &BTreeSet<ScopePath>) {
    let list: Vec<&str> = scopes.iter().map(ScopePath::as_str).collect();
    let path = state_dir.join(BUNDLE_SCOPES_FILE);
    let written = serde_json::to_vec(&list)
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::fsutil::replace_atomically(&path, &bytes, 0o600));
    if let Err(e) = written {
        // Still governed for this run; only a restart could forget them.
        tracing::error!(file = %path.display(), "cannot remember the bundle scopes: {e}");
    }
}

impl Agent {
    /// The policy the artifacts (or the unsigned file) describe, with the operator's
    /// per-scope monitor mode on top.
    pub(super) fn desired_policy(
        &mut self,
        staged: Option<&Path>,
        now: SystemTime,
    ) -> anyhow::Result<(Policy, Option<Authorizations>)> {
        let (mut policy, authz) = match &self.invocation.unsigned_policy {
            Some(file) => {
                tracing::debug!(file = %file.display(), "using an UNSIGNED local policy file");
                (Policy::from_local_file(file)?, None)
            }
            None => {
                let mut artifacts = vec![self.config.bundle_dir().to_path_buf()];
                artifacts.extend(self.invocation.artifacts.iter().cloned());
                artifacts.extend(staged.map(Path::to_path_buf));
                let sources = authz::Sources {
                    trust: self.config.trust().to_path_buf(),
                    artifacts,
                    state_dir: self.config.state_dir().to_path_buf(),
                    declared_scopes: self.config.scope_paths().cloned().collect(),
                    clock_skew: self.config.clock_skew(),
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
                save_scopes(self.config.state_dir(), &self.bundle_scopes);
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
        // What the host says about files is the operator's: where each scope may write,
        // which outside sockets it may reach, and what it may not read at all.
        for (path, spec) in &mut policy.scopes {
            spec.writable = self.config.writable(path);
            spec.devices = self.config.devices(path);
        }
        policy.sockets = self.config.allowed_sockets();
        // The audit host key, and the lock files: a scope holding one (flock needs only a
        // read-only descriptor) would keep the next agent from starting.
        policy.secrets = self.config.host_key().into_iter().collect();
        policy.secrets.extend([
            crate::authz::state::lock_path(self.config.state_dir()),
            crate::audit::writer::lock_path(self.config.audit_dir()),
        ]);
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
            match cgroup::ensure_scope(self.config.cgroup_root(), path) {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(scope = %path, "scope left out: {e}");
                    problems.push(format!("scope {path} left out: {e}"));
                    false
                }
            }
        });
        let mut desired = kernel::resolve(&policy, self.config.cgroup_root())?;
        let applying = std::time::Instant::now();
        let stats = match self.enforcement.apply(&desired) {
            Err(e @ kernel::KernelError::TooManyGrants { .. }) => {
                // Doubt means deny: the scopes stay governed, with nothing granted, until
                // the grants fit again.
                tracing::error!("{e}: every governed scope denies everything until the grants fit");
                problems.push(format!("{e}: every governed scope denies everything"));
                for spec in policy.scopes.values_mut() {
                    spec.grants.clear();
                }
                desired = kernel::resolve(&policy, self.config.cgroup_root())?;
                self.enforcement.apply(&desired)?
            }
            other => other?,
        };
        self.observe_apply(applying.elapsed());
        // When the kernel switched, for the records of what changed: decisions made before
        // it can reach the log after them.
        let switched = crate::clock::boot_ns()
            .map_err(|e| tracing::warn!("cannot read CLOCK_BOOTTIME: {e}"))
            .ok();
        let previous = self.view.authz.take();
        report_refusals(previous.as_ref(), authz.as_ref());
        let mut labels = super::Labels::new(&policy, &desired, self.config.cgroup_root());
        if let Some(id) = self.self_test_scope {
            labels.name_scope(id, crate::audit::record::SELF_TEST_SCOPE);
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
        let withdrawn = self.record_changes(previous.as_ref(), switched);
        self.record_operator(switched);
        let killed = self.kill_withdrawn()?;
        self.last_error = (!problems.is_empty()).then(|| problems.join("; "));
        self.publish_view();
        Ok(Reconciled { withdrawn, killed })
    }

    /// SIGHUP: re-reads the configuration. A configuration that does not load keeps the
    /// previous one in force; settings that need a restart are reported and kept.
    pub(super) fn reload(&mut self) -> anyhow::Result<()> {
        let mut new = self
            .invocation
            .settings()
            .context("reloading the configuration (the previous one stays in force)")?;
        let mut kept = Vec::new();
        if new.pin_dir() != self.config.pin_dir() {
            kept.push("pin_dir");
            new.pin_dir.clone_from(&self.config.pin_dir);
        }
        if new.socket() != self.config.socket() {
            kept.push("socket");
            new.socket.clone_from(&self.config.socket);
        }
        if new.audit_dir() != self.config.audit_dir() || new.host_key != self.config.host_key {
            kept.push("audit_dir/host_key");
            new.audit_dir.clone_from(&self.config.audit_dir);
            new.host_key.clone_from(&self.config.host_key);
        }
        if new.http != self.config.http {
            kept.push("http");
            new.http.clone_from(&self.config.http);
        }
        if !kept.is_empty() {
            tracing::warn!(settings = ?kept, "changed in the configuration, but take effect only after a restart");
        }
        if self.invocation.unsigned_policy.is_none() {
            let dir = new.bundle_dir();
            crate::fsutil::create_private_dir(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
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
    pub(super) fn resync(&mut self) {
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
}

#[cfg(test)]
mod tests {
    use enforcer_common::AUTH_ID_LEN;

    use super::*;
    use crate::authz::policy::{ScopeGrant, ScopeSpec};

    #[test]
    fn next_deadline_is_the_earliest_future_change() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let grant = |not_after| ScopeGrant {
            digest: crate::host::digest::FileDigest([1; 32]),
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
