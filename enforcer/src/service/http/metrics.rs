//! `/metrics`: the agent's figures in OpenMetrics text, with the Prometheus project's
//! client. docs/metrics.md documents every metric.
//!
//! The figures are plain numbers and the control protocol's reports, kept by the agent's
//! loop; a registry is built from them for each scrape. That keeps rendering a pure
//! function of what the loop published, and leaves no metric behind for a scope or an
//! authorization that is gone.
//!
//! Labels are bounded: scopes come from the configuration and the accepted bundles,
//! decisions, reasons and hooks from the kernel's short lists, authorization ids from
//! what is in force. No path, pid or file digest is ever a label.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::service::control::protocol::{Listing, StatusReport};

/// The label set of a decision counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DecisionKey {
    /// The scope's configured path, `(startup self-test)`, or `unknown`.
    pub scope: String,
    /// `allow`, `deny`, `would-deny`.
    pub decision: String,
    pub reason: String,
    pub hook: String,
}

/// What the agent's loop publishes for `/metrics`.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Decisions read from the ring buffer since the agent started.
    pub decisions: BTreeMap<DecisionKey, u64>,
    /// The last reconcile's `status` and `list` reports.
    pub status: Option<StatusReport>,
    pub listing: Option<Listing>,
    /// Artifacts refused by the last reconcile, by kind of reason.
    pub refused: BTreeMap<String, u64>,
    /// The kernel's count of decisions lost because the ring buffer was full.
    pub lost_decisions: u64,
    /// Audit records this agent has written.
    pub audit_records: u64,
    /// Duration of each policy apply, in seconds.
    pub apply_seconds: Histogram,
}

impl Default for Figures {
    fn default() -> Self {
        Self {
            decisions: BTreeMap::new(),
            status: None,
            listing: None,
            refused: BTreeMap::new(),
            lost_decisions: 0,
            audit_records: 0,
            // 100 µs to about 13 s: an unchanged policy costs a few lookups, a full
            // grant map seconds.
            apply_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 9)),
        }
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauges() -> Family<Labels, Gauge> {
    Family::default()
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: usize) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

fn set(family: &Family<Labels, Gauge>, labels: Labels, value: usize) {
    family
        .get_or_create(&labels)
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// Renders `figures` as OpenMetrics text (ending in `# EOF`). `checkpoint_age` is the time
/// since the audit log's last checkpoint, in seconds (`None`: the log is not open yet);
/// it is measured at the scrape, not published.
pub fn render(figures: &Figures, checkpoint_age: Option<f64>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("enforcer");

    let decisions = Family::<Labels, Counter>::default();
    for (k, n) in &figures.decisions {
        let labels = vec![
            ("scope", k.scope.clone()),
            ("decision", k.decision.clone()),
            ("reason", k.reason.clone()),
            ("hook", k.hook.clone()),
        ];
        decisions.get_or_create(&labels).inc_by(*n);
    }
    registry.register(
        "decisions",
        "Decisions read from the kernel since the agent started",
        decisions,
    );

    let grants = gauges();
    let break_glass = gauges();
    if let Some(status) = &figures.status {
        for s in &status.scopes {
            set(&grants, vec![("scope", s.path.clone())], s.grants);
            let active = usize::from(s.break_glass_until.is_some());
            set(&break_glass, vec![("scope", s.path.clone())], active);
        }
    }
    registry.register("grants", "Grants loaded in the kernel, per scope", grants);
    registry.register(
        "break_glass_active",
        "1 while a break-glass artifact holds the scope in monitor mode",
        break_glass,
    );

    let bundles = gauges();
    let authorizations = Family::<Labels, Info<Labels>>::new_with_constructor(|| Info::new(vec![]));
    if let Some(listing) = &figures.listing {
        let live = listing.bundles.iter().filter(|b| b.live_grants > 0).count();
        set(&bundles, vec![("state", "in_force".into())], live);
        let idle = listing.bundles.len() - live;
        set(&bundles, vec![("state", "no_live_grants".into())], idle);
        for b in &listing.bundles {
            // Creating the entry is the point; the guard it returns is not needed.
            drop(authorizations.get_or_create(&vec![
                ("kind", "bundle".into()),
                ("id", b.id.clone()),
                ("issuer", b.issuer.clone()),
                ("bundle_id", b.bundle_id.clone()),
                ("serial", b.serial.to_string()),
            ]));
        }
        for g in &listing.break_glass {
            drop(authorizations.get_or_create(&vec![
                ("kind", "break-glass".into()),
                ("id", g.id.clone()),
                ("issuer", g.issuer.clone()),
                ("bundle_id", String::new()),
                ("serial", String::new()),
            ]));
        }
    }
    registry.register("bundles", "Accepted bundles, by state", bundles);
    registry.register(
        "authorization",
        "The authorizations in force (bundles and break-glass artifacts), by id",
        authorizations,
    );

    let refused = gauges();
    for (reason, n) in &figures.refused {
        set(
            &refused,
            vec![("reason", reason.clone())],
            usize::try_from(*n).unwrap_or(usize::MAX),
        );
    }
    registry.register(
        "artifacts_refused",
        "Artifacts the last reconcile refused, by kind of reason",
        refused,
    );

    registry.register(
        "ring_buffer_lost_decisions",
        "Decisions the kernel could not report because the ring buffer was full",
        counter(figures.lost_decisions),
    );
    registry.register(
        "audit_records",
        "Audit records this agent has written",
        counter(figures.audit_records),
    );
    if let Some(age) = checkpoint_age {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(age);
        registry.register_with_unit(
            "audit_checkpoint_age",
            "Time since the audit log's last checkpoint",
            Unit::Seconds,
            g,
        );
    }
    registry.register_with_unit(
        "policy_apply_duration",
        "Time to make the kernel's maps hold a computed policy",
        Unit::Seconds,
        figures.apply_seconds.clone(),
    );
    let killed = figures
        .status
        .as_ref()
        .map_or(0, |s| s.agent.killed_on_revoke);
    registry.register(
        "revoke_killed_processes",
        "Processes killed under on_revoke = \"kill\" since the agent started",
        counter(u64::try_from(killed).unwrap_or(u64::MAX)),
    );
    registry.register(
        "scopes",
        "Governed scopes",
        gauge(figures.status.as_ref().map_or(0, |s| s.scopes.len())),
    );
    registry.register(
        "build",
        "The agent's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `line_start` begins, from OpenMetrics text.
    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn an_empty_agent_still_renders_valid_text() {
        let text = render(&Figures::default(), None).expect("render");
        assert!(text.ends_with("# EOF\n"), "{text}");
        // A family with no sample yet (no decision read) has no lines at all.
        assert!(!text.contains("enforcer_decisions"), "{text}");
        assert!(
            text.contains("# TYPE enforcer_audit_records counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE enforcer_policy_apply_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("enforcer_build_info{version=\""), "{text}");
        assert_eq!(
            sample(&text, "enforcer_ring_buffer_lost_decisions_total"),
            Some(0.0)
        );
    }

    #[test]
    fn figures_become_labelled_samples() {
        let mut figures = Figures::default();
        let key = |decision: &str| DecisionKey {
            scope: "/agents.slice".into(),
            decision: decision.into(),
            reason: "no-grant".into(),
            hook: "bprm_check_security".into(),
        };
        figures.decisions.insert(key("deny"), 3);
        figures.decisions.insert(key("allow"), 7);
        figures.refused.insert("expired".into(), 2);
        figures.lost_decisions = 5;
        figures.audit_records = 12;
        figures.apply_seconds.observe(0.002);
        let text = render(&figures, Some(1.5)).expect("render");
        assert_eq!(
            sample(
                &text,
                "enforcer_decisions_total{scope=\"/agents.slice\",decision=\"deny\",reason=\"no-grant\",hook=\"bprm_check_security\"}"
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "enforcer_decisions_total{scope=\"/agents.slice\",decision=\"allow\""
            ),
            Some(7.0)
        );
        assert_eq!(
            sample(&text, "enforcer_artifacts_refused{reason=\"expired\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "enforcer_ring_buffer_lost_decisions_total"),
            Some(5.0)
        );
        assert_eq!(sample(&text, "enforcer_audit_records_total"), Some(12.0));
        assert_eq!(
            sample(&text, "enforcer_audit_checkpoint_age_seconds"),
            Some(1.5)
        );
        assert_eq!(
            sample(&text, "enforcer_policy_apply_duration_seconds_count"),
            Some(1.0)
        );
    }
}
