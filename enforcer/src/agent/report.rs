//! `status` and `list`: what the agent enforces and why, as the control protocol's
//! typed reports.

use std::time::SystemTime;

use super::{Agent, rfc3339};
use crate::authz::Authorizations;
use crate::authz::artifact::ScopePath;
use crate::authz::artifact::{Mode, format_time};
use crate::host::cgroup;
use crate::kernel::Attachment;
use crate::service::control::protocol::{
    AgentInfo, BreakGlassInfo, BundleInfo, Listing, RefusedArtifact, ScopeStatus, StatusReport,
};

fn scope_names(scopes: &[ScopePath]) -> Vec<String> {
    scopes.iter().map(ToString::to_string).collect()
}

fn break_glass(authz: &Authorizations) -> Vec<BreakGlassInfo> {
    authz
        .break_glass
        .iter()
        .map(|b| BreakGlassInfo {
            file: b.path.clone(),
            id: b.id.to_string(),
            issuer: b.issuer.clone(),
            scopes: scope_names(&b.scopes),
            not_after: format_time(b.not_after),
            reason: b.reason.clone(),
        })
        .collect()
}

impl Agent {
    /// `status`: what is enforced, and why a scope denies everything.
    pub(super) fn status(&self) -> anyhow::Result<StatusReport> {
        let dropped = self.enforcement.dropped_events()?;
        let explanations = self.view.authz.as_ref().map(|a| &a.explanations);
        let scopes = self
            .view
            .policy
            .scopes
            .iter()
            .map(|(path, spec)| {
                let id = cgroup::id_of(
                    &cgroup::dir_of(self.config.cgroup_root(), path),
                    path.as_str(),
                )
                .ok();
                let policy = id.and_then(|id| self.view.desired.scopes.get(&id));
                let breakglass = spec.monitor_until.filter(|t| *t > SystemTime::now());
                let mode = if breakglass.is_some() || spec.mode == Mode::Monitor {
                    Mode::Monitor
                } else {
                    Mode::Enforce
                };
                let denies_everything = spec.grants.is_empty() && mode == Mode::Enforce;
                let mut why: Vec<String> = explanations
                    .and_then(|e| e.get(path))
                    .cloned()
                    .unwrap_or_default();
                if denies_everything && why.is_empty() {
                    why.push("no live authorization covers this scope".into());
                }
                ScopeStatus {
                    path: path.to_string(),
                    cgroup_id: id,
                    mode,
                    configured_mode: spec.mode,
                    break_glass_until: breakglass.map(rfc3339),
                    grants: spec.grants.len(),
                    denies_everything,
                    why,
                    flags: policy.map(|p| p.flags),
                }
            })
            .collect();
        let authz = self.view.authz.as_ref();
        Ok(StatusReport {
            // Not a given while the agent runs: an outside `enforcer unload` takes the
            // programs away from under it.
            enforcing: self.enforcement.check_attached().is_ok(),
            agent: AgentInfo {
                pid: std::process::id(),
                config: self.invocation.config_path.clone(),
                started: rfc3339(self.started),
                last_reconcile: self.view.at.map(rfc3339),
                next_deadline: self.view.next_deadline.map(rfc3339),
                last_error: self.last_error.clone(),
                unsigned_policy: self.invocation.unsigned_policy.clone(),
                killed_on_revoke: self.killed_total,
            },
            pin_dir: self.config.pin_dir().to_path_buf(),
            reused_pins: self.enforcement.attachment() == Attachment::Reused,
            scopes,
            bundles: authz.map_or(0, |a| a.accepted.len()),
            break_glass: authz.map(break_glass),
            refused: authz.map_or(0, |a| a.refused.len()),
            dropped_events: dropped,
        })
    }

    /// `list`: the authorizations in force, and the artifacts refused with the reason.
    pub(super) fn list(&self) -> Listing {
        let Some(authz) = &self.view.authz else {
            return Listing {
                unsigned_policy: self.invocation.unsigned_policy.clone(),
                bundles: Vec::new(),
                break_glass: Vec::new(),
                refused: Vec::new(),
            };
        };
        let bundles = authz
            .accepted
            .iter()
            .map(|b| {
                let live_grants: usize = b
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
                BundleInfo {
                    file: b.path.clone(),
                    id: b.id.to_string(),
                    issuer: b.issuer.clone(),
                    bundle_id: b.bundle_id.clone(),
                    serial: b.serial,
                    scopes: scope_names(&b.scopes),
                    not_after: format_time(b.not_after),
                    on_revoke: b.on_revoke,
                    live_grants,
                }
            })
            .collect();
        let refused = authz
            .refused
            .iter()
            .map(|(path, why)| RefusedArtifact {
                file: path.clone(),
                reason: why.clone(),
            })
            .collect();
        Listing {
            unsigned_policy: None,
            bundles,
            break_glass: break_glass(authz),
            refused,
        }
    }

    pub(super) fn summary(&self) -> String {
        let s = &self.view.stats;
        let bundles = self.view.authz.as_ref().map_or(0, |a| a.accepted.len());
        format!(
            "enforcing {} scope(s), {} grant(s) from {bundles} bundle(s)",
            s.scopes, s.grants
        )
    }
}
