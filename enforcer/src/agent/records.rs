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
    /// and withdrawn, break-glass artifacts that took effect. Returns the withdrawn
    /// bundles' names, for the answer to whoever triggered the change.
    pub(super) fn record_changes(&mut self, previous: Option<&Authorizations>) -> Vec<String> {
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
            };
            self.pending.push(Pending {
                change,
                artifact: Some((g.id, Arc::clone(&g.envelope))),
            });
        }
        withdrawn
    }
}
