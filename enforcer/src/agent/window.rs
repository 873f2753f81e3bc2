//! What the agent publishes for the HTTP window: the reports after each reconcile, the
//! facts readiness is decided from on each tick, and decision counts as they are read.

use std::time::{Duration, Instant};

use enforcer_common::ExecEvent;

use super::Agent;
use crate::audit::AuditLog;
use crate::audit::record::{decision_name, hook_name, reason_name};
use crate::service::http::metrics::DecisionKey;
use crate::service::http::readiness::{AuditFacts, Limits};
use crate::service::http::{SelfTest, Snapshot, Window};

/// How old the facts readiness relies on may grow, with checkpoints every
/// `checkpoint_interval`. The loop reads the ring buffer and checkpoints on a one-second
/// tick; the margins absorb a slow reconcile.
fn limits(checkpoint_interval: Duration) -> Limits {
    Limits {
        drain: Duration::from_secs(10),
        checkpoint: checkpoint_interval + Duration::from_secs(10),
    }
}

/// The window of an agent that has not served yet.
pub(super) fn starting(self_test_passed: bool, checkpoint_interval: Duration) -> Window {
    let self_test = if self_test_passed {
        SelfTest::Passed
    } else {
        SelfTest::Skipped
    };
    Window::new(Snapshot::starting(self_test, limits(checkpoint_interval)))
}

/// Live facts from the serving loop.
pub(super) struct Live<'a> {
    pub(super) log: &'a AuditLog,
    /// Audit records this agent wrote.
    pub(super) records: u64,
    /// The kernel's count of lost decisions.
    pub(super) dropped: u64,
    pub(super) last_drain: Instant,
}

impl Agent {
    /// After a reconcile: what is enforced, for `/metrics`. Skipped without `[http]`:
    /// building the status and the listing re-reads the cgroups and the maps.
    pub(super) fn publish_view(&self) {
        if self.config.http.is_none() {
            return;
        }
        let status = match self.status() {
            Ok(status) => Some(status),
            Err(e) => {
                tracing::warn!("the HTTP window keeps the previous status: {e:#}");
                None
            }
        };
        let listing = self.list();
        let refused = self
            .view
            .authz
            .as_ref()
            .map(|a| {
                a.refused_kinds
                    .iter()
                    .map(|(kind, n)| ((*kind).to_owned(), *n))
                    .collect()
            })
            .unwrap_or_default();
        self.window.update(|s| {
            if status.is_some() {
                s.figures.status = status;
            }
            s.figures.listing = Some(listing);
            s.figures.refused = refused;
        });
    }

    /// On each tick of the serving loop: the agent is alive, and what readiness needs.
    /// Skipped without `[http]`: nobody would read it.
    pub(super) fn publish_live(&self, live: &Live<'_>) {
        if self.config.http.is_none() {
            return;
        }
        let attached = self
            .enforcement
            .check_attached()
            .map_err(|e| format!("the program is not attached and pinned: {e}"));
        let policy = match (
            &self.last_error,
            self.enforcement.check_applied(&self.view.desired),
        ) {
            (Some(problem), _) => Err(format!("the last reconcile reported: {problem}")),
            (None, Ok(None)) => Ok(()),
            (None, Ok(Some(differs))) => Err(differs),
            (None, Err(e)) => Err(format!("cannot read the policy maps: {e}")),
        };
        let (uncovered, last_checkpoint) = live.log.since_checkpoint();
        let writable = if live.log.is_writable() {
            Ok(())
        } else {
            Err("a write to the audit log failed: it takes no record until reopened".into())
        };
        let enforcing = attached.is_ok();
        self.window.update(|s| {
            s.heartbeat = Instant::now();
            s.ready.attached = attached;
            // The status is built at each reconcile; whether the programs are still
            // pinned is known at each tick, and an outside unload comes between.
            if let Some(status) = s.figures.status.as_mut() {
                status.enforcing = enforcing;
            }
            s.ready.policy = policy;
            s.ready.last_drain = Some(live.last_drain);
            s.ready.audit = AuditFacts {
                writable,
                last_checkpoint: Some(last_checkpoint),
                uncovered,
            };
            s.figures.lost_decisions = live.dropped;
            s.figures.audit_records = live.records;
        });
    }

    /// Counts decisions read from the ring buffer, by scope, decision, reason and hook.
    pub(super) fn count_decisions(&self, events: &[ExecEvent]) {
        if events.is_empty() || self.config.http.is_none() {
            return;
        }
        self.window.update(|s| {
            for e in events {
                let key = DecisionKey {
                    scope: self.labels.audit(e).scope.unwrap_or("unknown").to_owned(),
                    decision: decision_name(e.decision),
                    reason: reason_name(e.reason),
                    hook: hook_name(e.hook),
                };
                *s.figures.decisions.entry(key).or_insert(0) += 1;
            }
        });
    }

    /// Records how long one policy apply took.
    pub(super) fn observe_apply(&self, took: Duration) {
        self.window
            .update(|s| s.figures.apply_seconds.observe(took.as_secs_f64()));
    }
}
