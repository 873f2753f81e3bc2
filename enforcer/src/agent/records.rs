//! The audit log's authorization records: bundles accepted and withdrawn, break-glass
//! artifacts that took effect. Queued here, written by the serving loop.

use std::sync::Arc;

use super::Agent;
use crate::audit::AuthorizationChange;
use crate::authz::artifact::{ArtifactId, format_time};
use crate::authz::{self, Authorizations};

/// An authorization record waiting for the log, with the artifact it makes the log cite
/// for the first time (kept beside the log, for proofs, before the record is written).
#[derive(Debug)]
pub(crate) struct Pending {
    pub change: AuthorizationChange,
    pub artifact: Option<(ArtifactId, Arc<[u8]>)>,
}

impl From<AuthorizationChange> for Pending {
    fn from(change: AuthorizationChange) -> Self {
        Self {
            change,
            artifact: None,
        }
    }
}

impl Agent {
    /// Logs and queues audit records for what changed since `previous`: bundles accepted
    /// and withdrawn, break-glass artifacts that took effect, each with the boot time the
    /// kernel `switched`. Returns the withdrawn bundles' names, for the answer to whoever
    /// triggered the change.
    pub(super) fn record_changes(
        &mut self,
        previous: Option<&Authorizations>,
        switched: Option<u64>,
    ) -> Vec<String> {
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
            boot_ns: switched,
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
            self.pending.push(Pending {
                change: bundle(b, arrived),
                artifact: Some((b.id, Arc::clone(&b.envelope))),
            });
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
            self.pending.push(change.into());
        }
        let old_glass = previous
            .map(|p| p.break_glass.as_slice())
            .unwrap_or_default();
        for g in now
            .break_glass
            .iter()
            .filter(|g| !old_glass.iter().any(|o| o.id == g.id))
        {
            let change = AuthorizationChange {
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
                boot_ns: switched,
            };
            self.pending.push(Pending {
                change,
                artifact: Some((g.id, Arc::clone(&g.envelope))),
            });
        }
        withdrawn
    }

    /// Logs what the operator's side of the policy is, when it changed: the scopes the
    /// configuration holds in monitor mode, and an unsigned local policy file, by its
    /// SHA-256. Replay needs both to decide the log again, and neither is in an archived
    /// artifact. At start the monitor scopes are always written, last of what the agent
    /// found in force: replay reads that record as "this agent's startup records are
    /// complete".
    pub(super) fn record_operator(&mut self, switched: Option<u64>) {
        let monitor: Vec<String> = self
            .config
            .scopes
            .iter()
            .filter(|s| s.mode == crate::authz::artifact::Mode::Monitor)
            .map(|s| s.path.to_string())
            .collect();
        let unsigned = self.invocation.unsigned_policy.as_ref().map(|file| {
            let id = crate::host::digest::FileDigest::of_file(file)
                .map_or_else(|e| format!("unreadable: {e}"), |d| d.to_string());
            let scopes = self
                .view
                .policy
                .scopes
                .keys()
                .map(ToString::to_string)
                .collect();
            (id, scopes)
        });
        let now = Operator { monitor, unsigned };
        let previous = self.operator_recorded.replace(now.clone());
        let change =
            |change: &str, artifact: &str, id: String, scopes: Vec<String>| AuthorizationChange {
                change: change.into(),
                artifact: artifact.into(),
                id,
                issuer: "operator".into(),
                scopes,
                boot_ns: switched,
                ..AuthorizationChange::default()
            };
        let starting = previous.is_none();
        let before = previous.unwrap_or_default();
        if let Some((id, scopes)) = now.unsigned.filter(|u| Some(u) != before.unsigned.as_ref()) {
            self.pending
                .push(change("in-force", "unsigned-policy", id, scopes).into());
        }
        if starting || now.monitor != before.monitor {
            let mut record = change("operator-mode", "configuration", String::new(), now.monitor);
            record.detail = Some("monitor".into());
            self.pending.push(record.into());
        }
    }
}

/// The operator's side of the policy, as last recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Operator {
    /// Scopes the configuration holds in monitor mode.
    monitor: Vec<String>,
    /// An unsigned local policy file's SHA-256 and scopes.
    unsigned: Option<(String, Vec<String>)>,
}
