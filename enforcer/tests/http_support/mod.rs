//! What the HTTP window's tests share: a real server on 127.0.0.1:0, plain HTTP/1.1
//! over TCP, and the snapshot of an agent that enforces.

// Not every test target uses the signed log, nor all of the CLI runner.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
pub(crate) mod signed_log;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use enforcer::authz::artifact::{Mode, OnRevoke};
use enforcer::service::control::protocol::{
    AgentInfo, BreakGlassInfo, BundleInfo, Listing, ScopeStatus, StatusReport,
};
use enforcer::service::http::metrics::DecisionKey;
use enforcer::service::http::readiness::{AuditFacts, Limits};
use enforcer::service::http::{self, HttpSettings, ReadyFacts, SelfTest, Snapshot, Window};

pub(crate) const TOKEN: &str = "correct horse battery staple";

/// An answer: status code, headers (lower-case names) and body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

/// Sends `request_line` with `headers` and reads the whole answer (the server closes the
/// connection because the request asks it to).
pub(crate) fn send(addr: SocketAddr, request_line: &str, headers: &[&str]) -> Answer {
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

pub(crate) fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, &format!("GET {path} HTTP/1.1"), &[])
}

/// Starts the server on its own runtime; it lives until the test process ends. It reads
/// the audit log in `audit_dir`, or an empty directory.
pub(crate) fn start(
    window: &Window,
    token: bool,
    audit_dir: Option<&Path>,
) -> (SocketAddr, tempfile::TempDir) {
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
    let audit_dir = audit_dir.map_or_else(|| dir.path().join("audit"), Path::to_path_buf);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(http::serve(listener, window, audit_dir));
    });
    (addr, dir)
}

pub(crate) const LIMITS: Limits = Limits {
    drain: Duration::from_secs(10),
    checkpoint: Duration::from_secs(70),
};

/// The snapshot of an agent that enforces one scope with one bundle and a break-glass.
pub(crate) fn enforcing() -> Snapshot {
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
