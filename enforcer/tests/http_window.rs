//! The HTTP window as a monitoring system sees it: a real server on 127.0.0.1:0, a
//! snapshot standing in for the agent's loop, and plain HTTP/1.1 requests over TCP.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

mod http_support;

use std::time::{Duration, Instant};

use enforcer::service::http::{self, Health, HttpSettings, Readiness, SelfTest, Snapshot, Window};
use http_support::{LIMITS, TOKEN, enforcing, get, send, start};

#[test]
fn probes_tell_whether_the_agent_enforces() {
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, None);

    let health = get(addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(health.head.contains("content-type: application/json"));
    let h: Health = serde_json::from_str(&health.body).expect("health json");
    assert!(h.alive);

    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let r: Readiness = serde_json::from_str(&ready.body).expect("readiness json");
    assert!(r.ready && r.checks.iter().all(|c| c.ok), "{r:?}");

    // Someone unloads the program from outside, and the audit writer stalls.
    window.update(|s| {
        s.ready.attached =
            Err("the program is not attached and pinned: /sys/fs/bpf/enforcer/x is gone".into());
        s.ready.last_drain = Some(Instant::now() - Duration::from_secs(60));
    });
    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let r: Readiness = serde_json::from_str(&ready.body).expect("readiness json");
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["program", "ring-buffer"], "{}", ready.body);
    assert!(ready.body.contains("not attached"), "{}", ready.body);
    assert!(ready.body.contains("not being drained"), "{}", ready.body);
    assert_eq!(get(addr, "/healthz").status, 200, "the loop still turns");

    // The loop stops turning.
    window.update(|s| s.heartbeat = Instant::now() - Duration::from_secs(120));
    let health = get(addr, "/healthz");
    assert_eq!(health.status, 503, "{}", health.body);
    let h: Health = serde_json::from_str(&health.body).expect("health json");
    assert!(!h.alive && h.last_turn_seconds_ago >= 120, "{h:?}");
}

#[test]
fn a_starting_agent_is_alive_but_not_ready() {
    let window = Window::new(Snapshot::starting(SelfTest::Skipped, LIMITS));
    let (addr, _dir) = start(&window, false, None);
    assert_eq!(get(addr, "/healthz").status, 200);
    let ready = get(addr, "/readyz");
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains("self-test was skipped"),
        "{}",
        ready.body
    );
}

#[test]
fn metrics_are_openmetrics_text_with_bounded_labels() {
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, None);
    let m = get(addr, "/metrics");
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(
        m.head
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        m.head
    );
    let body = &m.body;
    assert!(body.ends_with("# EOF\n"), "{body}");
    for line in [
        "enforcer_decisions_total{scope=\"/agents.slice\",decision=\"deny\",reason=\"no-grant\",hook=\"bprm_check_security\"} 4",
        "enforcer_grants{scope=\"/agents.slice\"} 3",
        "enforcer_grants{scope=\"/ci.slice\"} 0",
        "enforcer_break_glass_active{scope=\"/ci.slice\"} 1",
        "enforcer_break_glass_active{scope=\"/agents.slice\"} 0",
        "enforcer_bundles{state=\"in_force\"} 1",
        "enforcer_revoke_killed_processes_total 2",
        "enforcer_policy_apply_duration_seconds_count 1",
        "enforcer_authorization_info{kind=\"bundle\",id=\"ab12\",issuer=\"ops\",bundle_id=\"agents\",serial=\"7\"} 1",
        "enforcer_authorization_info{kind=\"break-glass\",id=\"cd34\"",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in\n{body}"
        );
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("enforcer_audit_checkpoint_age_seconds ")),
        "{body}"
    );
    for unbounded in ["/etc/enforcer", "pid=", "sha256"] {
        assert!(!body.contains(unbounded), "{unbounded} in\n{body}");
    }
}

#[test]
fn the_window_is_read_only() {
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, None);
    for method in ["POST", "PUT", "DELETE"] {
        let a = send(
            addr,
            &format!("{method} /readyz HTTP/1.1"),
            &["Content-Length: 0"],
        );
        assert_eq!(a.status, 405, "{method}");
        assert!(a.head.contains("allow: get, head"), "{}", a.head);
    }
    let missing = get(addr, "/push");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("/healthz"), "{}", missing.body);
}

#[test]
fn with_a_token_only_the_probes_and_metrics_are_public() {
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, true, None);
    for public in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(addr, public).status, 200, "{public} needs no token");
    }
    let denied = get(addr, "/api/v1/status");
    assert_eq!(denied.status, 401);
    assert!(
        denied.head.contains("www-authenticate: bearer"),
        "{}",
        denied.head
    );
    let wrong = send(
        addr,
        "GET /api/v1/status HTTP/1.1",
        &["Authorization: Bearer correct horse battery"],
    );
    assert_eq!(wrong.status, 401, "a prefix of the token is not the token");
    let right = send(
        addr,
        "GET /api/v1/status HTTP/1.1",
        &[&format!("Authorization: Bearer {TOKEN}")],
    );
    assert_eq!(right.status, 200, "admitted: {}", right.body);
}

#[test]
fn a_missing_token_file_stops_the_window_from_opening() {
    let settings = HttpSettings {
        listen: "127.0.0.1:0".parse().expect("address"),
        token_file: Some("/nonexistent/http-token".into()),
    };
    let err = http::bind(&settings)
        .expect_err("no token file")
        .to_string();
    assert!(
        err.contains("/nonexistent/http-token") && err.contains("token_file"),
        "{err}"
    );
}
