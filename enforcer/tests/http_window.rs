//! The HTTP window as a monitoring system sees it: a real server on 127.0.0.1:0, a
//! snapshot standing in for the agent's loop, and plain HTTP/1.1 requests over TCP.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use enforcer::authz::artifact::{Mode, OnRevoke};
use enforcer::service::control::protocol::{
    AgentInfo, BreakGlassInfo, BundleInfo, Listing, ScopeStatus, StatusReport,
};
use enforcer::service::http::metrics::DecisionKey;
use enforcer::service::http::readiness::{AuditFacts, Limits};
use enforcer::service::http::{
    self, Health, HttpSettings, Readiness, ReadyFacts, SelfTest, Snapshot, Window,
};

const TOKEN: &str = "correct horse battery staple";

/// An answer: status code, headers (lower-case names) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request_line` with `headers` and reads the whole answer (the server closes the
/// connection because the request asks it to).
fn send(addr: SocketAddr, request_line: &str, headers: &[&str]) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!("{request_line}\r\nHost: test\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, &format!("GET {path} HTTP/1.1"), &[])
}

/// Starts the server on its own runtime; it lives until the test process ends.
fn start(window: &Window, token: bool) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = token.then(|| {
        let path = dir.path().join("http-token");
        std::fs::write(&path, format!("{TOKEN}\n")).expect("token file");
        path
    });
    let settings = HttpSettings {
        listen: "127.0.0.1:0".parse().expect("address"),
        token_file,
    };
    let listener = http::bind(&settings).expect("bind");
    let addr = listener.local_addr().expect("address");
    let window = window.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(http::serve(listener, window));
    });
    (addr, dir)
}

const LIMITS: Limits = Limits {
    drain: Duration::from_secs(10),
    checkpoint: Duration::from_secs(70),
};

/// The snapshot of an agent that enforces one scope with one bundle and a break-glass.
fn enforcing() -> Snapshot {
    let now = Instant::now();
    let mut s = Snapshot::starting(SelfTest::Passed, LIMITS);
    s.ready = ReadyFacts {
        attached: Ok(()),
        policy: Ok(()),
        last_drain: Some(now),
        audit: AuditFacts {
            writable: Ok(()),
            last_checkpoint: Some(now),
            uncovered: 0,
        },
        self_test: SelfTest::Passed,
    };
    let scope = |path: &str, grants, break_glass: bool| ScopeStatus {
        path: path.into(),
        cgroup_id: Some(42),
        mode: if break_glass {
            Mode::Monitor
        } else {
            Mode::Enforce
        },
        configured_mode: Mode::Enforce,
        break_glass_until: break_glass.then(|| "2030-01-01T00:00:00Z".into()),
        grants,
        denies_everything: false,
        why: Vec::new(),
        flags: Some(0),
    };
    s.figures.status = Some(StatusReport {
        enforcing: true,
        agent: AgentInfo {
            pid: 1,
            config: None,
            started: "2026-01-01T00:00:00Z".into(),
            last_reconcile: None,
            next_deadline: None,
            last_error: None,
            unsigned_policy: None,
            killed_on_revoke: 2,
        },
        pin_dir: PathBuf::from("/sys/fs/bpf/enforcer"),
        reused_pins: false,
        scopes: vec![
            scope("/agents.slice", 3, false),
            scope("/ci.slice", 0, true),
        ],
        bundles: 1,
        break_glass: Some(Vec::new()),
        refused: 0,
        dropped_events: 0,
    });
    s.figures.listing = Some(Listing {
        unsigned_policy: None,
        bundles: vec![BundleInfo {
            file: "/etc/enforcer/bundles/a.json".into(),
            id: "ab12".into(),
            issuer: "ops".into(),
            bundle_id: "agents".into(),
            serial: 7,
            scopes: vec!["/agents.slice".into()],
            not_after: "2030-01-01T00:00:00Z".into(),
            on_revoke: OnRevoke::Kill,
            live_grants: 3,
        }],
        break_glass: vec![BreakGlassInfo {
            file: "/etc/enforcer/bundles/bg.json".into(),
            id: "cd34".into(),
            issuer: "oncall".into(),
            scopes: vec!["/ci.slice".into()],
            not_after: "2030-01-01T00:00:00Z".into(),
            reason: "incident".into(),
        }],
        refused: Vec::new(),
    });
    s.figures.decisions.insert(
        DecisionKey {
            scope: "/agents.slice".into(),
            decision: "deny".into(),
            reason: "no-grant".into(),
            hook: "bprm_check_security".into(),
        },
        4,
    );
    s.figures.apply_seconds.observe(0.003);
    s
}

#[test]
fn probes_tell_whether_the_agent_enforces() {
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false);

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
    let (addr, _dir) = start(&window, false);
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
    let (addr, _dir) = start(&window, false);
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
    let (addr, _dir) = start(&window, false);
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
    let (addr, _dir) = start(&window, true);
    for public in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(addr, public).status, 200, "{public} needs no token");
    }
    let denied = get(addr, "/api/status");
    assert_eq!(denied.status, 401);
    assert!(
        denied.head.contains("www-authenticate: bearer"),
        "{}",
        denied.head
    );
    let wrong = send(
        addr,
        "GET /api/status HTTP/1.1",
        &["Authorization: Bearer correct horse battery"],
    );
    assert_eq!(wrong.status, 401, "a prefix of the token is not the token");
    let right = send(
        addr,
        "GET /api/status HTTP/1.1",
        &[&format!("Authorization: Bearer {TOKEN}")],
    );
    assert_eq!(right.status, 404, "admitted; the path does not exist (yet)");
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
