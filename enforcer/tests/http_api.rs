//! The JSON API as an operator's tools see it: a real server on 127.0.0.1:0 reading a
//! real audit log written by `AuditLog`, the window's feed standing in for the agent's
//! loop, and plain HTTP/1.1 requests over TCP.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

mod http_support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::Duration;

use enforcer::audit::query::{Family, Step};
use enforcer::audit::{AuditLog, AuditOptions, Body, DecisionLabels, Record};
use enforcer::service::control::protocol::{Listing, StatusReport};
use enforcer::service::http::api::{ApiError, DecisionPage, MAX_STREAMS, SLOW_CLIENT};
use enforcer::service::http::{SelfTest, Snapshot, Window};
use enforcer_common::{EVENT_PATH_LEN, ExecEvent, decision, hook, reason};
use http_support::{Answer, LIMITS, TOKEN, enforcing, get, send, start};

const BOOT: &str = "0f0e0d0c-0b0a-4908-8706-050403020100";

fn event(exec_id: u64, parent_exec_id: u64, verdict: u32) -> ExecEvent {
    let mut path = [0u8; EVENT_PATH_LEN];
    let name = format!("/usr/bin/tool-{exec_id}");
    path[..name.len()].copy_from_slice(name.as_bytes());
    ExecEvent {
        boot_ns: exec_id,
        cgroup_id: 4242,
        scope_id: 4241,
        auth_serial: 0,
        exec_id,
        parent_exec_id,
        pid: 300,
        tgid: 300,
        ppid: 100,
        uid: 1000,
        gid: 1000,
        decision: verdict,
        reason: reason::NOT_GRANTED,
        hook: hook::BPRM_CHECK_SECURITY,
        digest: [0xab; 32],
        auth_id: [0; 16],
        detail: 0,
        path,
    }
}

fn open_log(dir: &Path) -> AuditLog {
    let opts = AuditOptions {
        boot_id: Some(BOOT.into()),
        ..AuditOptions::default()
    };
    AuditLog::open(dir, None, opts).expect("open the audit log")
}

/// The outcome of exec `n` in [`write_decisions`]: every third denied, every fifth of
/// the rest would-deny, the others allowed.
fn verdict(n: u64) -> u32 {
    match (n % 3, n % 5) {
        (0, _) => decision::DENY,
        (_, 0) => decision::WOULD_DENY,
        _ => decision::ALLOW,
    }
}

/// Writes `count` decisions (exec ids 1..=count, each the child of the one before), even
/// ones in /agents.slice and odd ones in /ci.slice, and closes the log.
fn write_decisions(dir: &Path, count: u64) {
    let mut log = open_log(dir);
    for n in 1..=count {
        let scope = if n % 2 == 0 {
            "/agents.slice"
        } else {
            "/ci.slice"
        };
        let labels = DecisionLabels {
            scope: Some(scope),
            grant_name: None,
        };
        log.append_decision(&event(n, n - 1, verdict(n)), &labels)
            .expect("append");
        if n == 4 {
            log.append_gap(2).expect("gap");
        }
    }
    log.close().expect("close");
}

fn json<T: serde::de::DeserializeOwned>(answer: &Answer) -> T {
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{e}: {} {}", answer.status, answer.body))
}

fn decisions_of(page: &DecisionPage) -> Vec<(u64, String, Option<String>)> {
    page.decisions
        .iter()
        .map(|r| match &r.body {
            Body::Decision(d) => (d.exec_id, d.decision.clone(), d.scope.clone()),
            other => panic!("not a decision: {}", other.kind()),
        })
        .collect()
}

#[test]
fn status_and_authorizations_are_the_control_protocols_reports() {
    let starting = Window::new(Snapshot::starting(SelfTest::Passed, LIMITS));
    let (addr, _dir) = start(&starting, false, None);
    for path in ["/api/v1/status", "/api/v1/authorizations"] {
        let early = get(addr, path);
        assert_eq!(early.status, 503, "{path} before the first reconcile");
        assert!(json::<ApiError>(&early).error.contains("reconcile"));
    }

    let snapshot = enforcing();
    let window = Window::new(snapshot.clone());
    let (addr, _dir) = start(&window, false, None);
    let status = get(addr, "/api/v1/status");
    assert_eq!(status.status, 200, "{}", status.body);
    assert!(status.head.contains("content-type: application/json"));
    assert_eq!(Some(json::<StatusReport>(&status)), snapshot.figures.status);
    let listing = get(addr, "/api/v1/authorizations");
    assert_eq!(listing.status, 200, "{}", listing.body);
    assert_eq!(Some(json::<Listing>(&listing)), snapshot.figures.listing);
}

#[test]
fn decisions_come_newest_first_in_pages_that_cover_the_log_once() {
    let log = tempfile::tempdir().expect("tempdir");
    write_decisions(log.path(), 25);
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, Some(log.path()));

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/api/v1/decisions?limit=10".to_owned();
    loop {
        let answer = get(addr, &path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        let page: DecisionPage = json(&answer);
        sizes.push(page.decisions.len());
        seen.extend(decisions_of(&page).into_iter().map(|(exec, ..)| exec));
        match page.next {
            Some(next) => path = format!("/api/v1/decisions?limit=10&before={next}"),
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(
        seen,
        (1..=25).rev().collect::<Vec<_>>(),
        "disjoint, newest first"
    );

    let all: DecisionPage = json(&get(addr, "/api/v1/decisions"));
    assert_eq!(all.decisions.len(), 25, "the default limit is above 25");
    assert_eq!(all.next, None);
}

#[test]
fn decisions_are_filtered_like_audit_show() {
    let log = tempfile::tempdir().expect("tempdir");
    write_decisions(log.path(), 25);
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, Some(log.path()));
    let select = |query: &str| {
        let answer = get(addr, &format!("/api/v1/decisions?{query}"));
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        decisions_of(&json(&answer))
    };

    let denied = select("decision=deny");
    assert_eq!(denied.len(), 8, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|(exec, d, _)| d == "deny" && exec % 3 == 0)
    );
    let would = select("decision=would-deny");
    assert_eq!(
        would.iter().map(|(exec, ..)| *exec).collect::<Vec<_>>(),
        [25, 20, 10, 5]
    );
    let scoped = select("scope=%2Fagents.slice&decision=deny");
    assert_eq!(
        scoped.iter().map(|(exec, ..)| *exec).collect::<Vec<_>>(),
        [24, 18, 12, 6]
    );
    assert_eq!(select("scope=/agents.slice").len(), 12);
    assert_eq!(select("since=2999-01-01T00:00:00Z").len(), 0);
    assert_eq!(select("since=1h").len(), 25);
}

#[test]
fn bad_parameters_are_refused_by_name() {
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, None);
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("before=soon", "before"),
        ("decision=perhaps", "decision"),
        ("since=last-tuesday", "since"),
        ("scope=a&scope=b", "scope"),
        ("page=2", "page"),
    ] {
        let answer = get(addr, &format!("/api/v1/decisions?{query}"));
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        let e: ApiError = json(&answer);
        assert_eq!(e.parameter.as_deref(), Some(parameter), "{query}");
        assert!(e.error.contains(parameter), "{}", e.error);
    }
    let stream = get(addr, "/api/v1/decisions/stream?limit=5");
    assert_eq!(stream.status, 400, "{}", stream.body);
    assert_eq!(
        json::<ApiError>(&stream).parameter.as_deref(),
        Some("limit")
    );
}

/// An open stream: the request sent, the answer's head read.
struct Stream {
    socket: TcpStream,
    seen: String,
}

impl Stream {
    fn open(addr: SocketAddr, query: &str) -> Self {
        let mut socket = TcpStream::connect(addr).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // No `Connection: close`: the server must close a stream's connection itself.
        let request = format!("GET /api/v1/decisions/stream{query} HTTP/1.1\r\nHost: test\r\n\r\n");
        socket.write_all(request.as_bytes()).expect("send");
        let mut stream = Self {
            socket,
            seen: String::new(),
        };
        stream.read_until(|seen| seen.contains(": decisions follow"));
        let head = stream.seen.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        stream
    }

    fn read_until(&mut self, done: impl Fn(&str) -> bool) {
        let mut buf = [0u8; 4096];
        while !done(&self.seen) {
            let n = self
                .socket
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("{e}; so far: {}", self.seen));
            assert!(n > 0, "the stream ended; so far: {}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Makes the kernel hold as little as it may of what the server sends and this client
    /// does not read. Loopback buffers grow to megabytes: a flood meant to outrun a client
    /// that reads nothing could otherwise fit in them whole, and the server would rightly
    /// never see a slow client.
    fn hold_little(&self) {
        let size: libc::c_int = 64 * 1024;
        // SAFETY: a plain setsockopt on this stream's own descriptor, with a valid int.
        let r = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("small"),
            )
        };
        assert_eq!(r, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    }

    /// The records of the `event: decision` frames read so far.
    fn records(&self) -> Vec<Record> {
        self.seen
            .split("event: decision\ndata: ")
            .skip(1)
            .map(|rest| {
                let line = rest.split('\n').next().expect("a line");
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
            })
            .collect()
    }
}

#[test]
fn a_stream_delivers_matching_decisions_written_after_it_opened() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, Some(log_dir.path()));
    let mut log = open_log(log_dir.path());
    let labels = DecisionLabels {
        scope: Some("/agents.slice"),
        grant_name: None,
    };
    log.append_decision_and(&event(1, 0, decision::DENY), &labels, |r| {
        window.publish_decision(r);
    })
    .expect("append");

    let mut stream = Stream::open(addr, "?decision=deny");
    // The agent's path: written to the log, then handed to the feed.
    for (exec, verdict) in [(2, decision::ALLOW), (3, decision::DENY)] {
        log.append_decision_and(&event(exec, 1, verdict), &labels, |r| {
            window.publish_decision(r);
        })
        .expect("append");
    }
    stream.read_until(|seen| seen.contains("\"exec_id\":3"));
    let records = stream.records();
    assert_eq!(records.len(), 1, "{}", stream.seen);
    let Body::Decision(d) = &records[0].body else {
        panic!("{:?}", records[0]);
    };
    assert_eq!((d.exec_id, d.decision.as_str()), (3, "deny"));
    assert!(
        stream.seen.contains(&format!("id: {}\n", records[0].seq)),
        "{}",
        stream.seen
    );
    // What the stream sent is what the log holds.
    log.flush().expect("flush");
    let page: DecisionPage = json(&get(addr, "/api/v1/decisions?limit=1"));
    assert_eq!(page.decisions, records);
}

#[test]
fn a_stream_outlives_the_connection_time_limit() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, Some(log_dir.path()));
    let mut stream = Stream::open(addr, "");
    // Other connections close after 10 s; a stream stays until its client leaves.
    std::thread::sleep(Duration::from_secs(12));
    let mut log = open_log(log_dir.path());
    log.append_decision_and(
        &event(7, 0, decision::ALLOW),
        &DecisionLabels::default(),
        |r| {
            window.publish_decision(r);
        },
    )
    .expect("append");
    stream.read_until(|seen| seen.contains("\"exec_id\":7"));
}

#[test]
fn streams_are_bounded_and_a_client_that_does_not_read_is_dropped() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, Some(log_dir.path()));

    let mut open: Vec<Stream> = (0..MAX_STREAMS).map(|_| Stream::open(addr, "")).collect();
    open[0].hold_little();
    let refused = get(addr, "/api/v1/decisions/stream");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(json::<ApiError>(&refused).error.contains("streams"));

    // The first stream's client reads nothing while far more decisions arrive than the
    // socket buffers and the feed hold. Publishing never waits for it: were it to wait for
    // a reader, this loop would not finish until the server dropped every stream.
    let mut log = open_log(log_dir.path());
    let labels = DecisionLabels::default();
    let total = 20_000;
    for n in 1..=total {
        log.append_decision_and(&event(n, 0, decision::ALLOW), &labels, |r| {
            window.publish_decision(r);
        })
        .expect("append");
    }
    std::thread::sleep(SLOW_CLIENT + Duration::from_secs(2));

    let mut slow = open.remove(0);
    let mut rest = Vec::new();
    slow.socket
        .read_to_end(&mut rest)
        .expect("the server ends a dropped stream and closes its connection");
    slow.seen.push_str(&String::from_utf8_lossy(&rest));
    let delivered = slow.seen.matches("event: decision").count();
    assert!(
        delivered < usize::try_from(total).expect("small"),
        "all {delivered} delivered: the client was never dropped"
    );
    // Its slot is free again.
    let again = Stream::open(addr, "");
    drop((open, again));
}

#[test]
fn lineage_shows_ancestors_and_descendants() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(log_dir.path());
    // 1 <- 2 <- {3, 4 <- 5}; 6 beside them.
    for (exec, parent) in [(1, 0), (2, 1), (3, 2), (4, 2), (6, 0), (5, 4)] {
        log.append_decision(
            &event(exec, parent, decision::ALLOW),
            &DecisionLabels::default(),
        )
        .expect("append");
    }
    log.close().expect("close");
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, Some(log_dir.path()));

    let ids = |steps: &[Step]| -> Vec<(u64, bool)> {
        steps
            .iter()
            .map(|s| match s {
                Step::Logged { decision, .. } => (decision.exec_id, true),
                Step::Missing { exec_id } => (*exec_id, false),
            })
            .collect()
    };
    let answer = get(addr, &format!("/api/v1/lineage/{BOOT}:2"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let family: Family = json(&answer);
    assert_eq!(family.lineage.boot_id, BOOT);
    assert_eq!(ids(&family.lineage.steps), [(2, true), (1, true)]);
    assert_eq!(ids(&family.descendants), [(3, true), (4, true), (5, true)]);
    assert!(!family.descendants_truncated);
    assert!(
        answer.body.contains("\"step\":\"logged\""),
        "{}",
        answer.body
    );

    let unknown = get(addr, &format!("/api/v1/lineage/{BOOT}:99"));
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(json::<ApiError>(&unknown).error.contains("99"));
    let other_boot = get(addr, "/api/v1/lineage/0123-abcd:2");
    assert_eq!(other_boot.status, 404, "{}", other_boot.body);
    for bad in ["2", "x:2", &format!("{BOOT}:0"), &format!("{BOOT}:two")] {
        let answer = get(addr, &format!("/api/v1/lineage/{bad}"));
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert!(json::<ApiError>(&answer).error.contains("boot_id"));
    }
}

#[test]
fn the_api_is_read_only_and_answers_errors_in_json() {
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, None);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let a = send(
            addr,
            &format!("{method} /api/v1/status HTTP/1.1"),
            &["Content-Length: 0"],
        );
        assert_eq!(a.status, 405, "{method}");
        assert!(a.head.contains("allow: get, head"), "{}", a.head);
        assert!(json::<ApiError>(&a).error.contains("read-only"));
    }
    for missing in [
        "/api/v1/push",
        "/api/v1/",
        "/api/v2/status",
        "/api/v1/status/x",
    ] {
        let a = get(addr, missing);
        assert_eq!(a.status, 404, "{missing}");
        assert!(
            json::<ApiError>(&a).error.contains("/api/v1/"),
            "{}",
            a.body
        );
    }
    let head = send(addr, "HEAD /api/v1/status HTTP/1.1", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "{}", head.body);
}

#[test]
fn with_a_token_the_api_needs_it() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    write_decisions(log_dir.path(), 3);
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, true, Some(log_dir.path()));
    let bearer = format!("Authorization: Bearer {TOKEN}");
    for path in [
        "/api/v1/status",
        "/api/v1/authorizations",
        "/api/v1/decisions",
        "/api/v1/decisions/stream",
        &format!("/api/v1/lineage/{BOOT}:1"),
        "/api/v1/nowhere",
    ] {
        let without = get(addr, path);
        assert_eq!(without.status, 401, "{path}: {}", without.body);
        assert!(json::<ApiError>(&without).error.contains("Bearer"));
        let wrong = send(
            addr,
            &format!("GET {path} HTTP/1.1"),
            &["Authorization: Bearer not the token"],
        );
        assert_eq!(wrong.status, 401, "{path}");
    }
    for path in [
        "/api/v1/status",
        "/api/v1/decisions",
        &format!("/api/v1/lineage/{BOOT}:1"),
    ] {
        let with = send(addr, &format!("GET {path} HTTP/1.1"), &[&bearer]);
        assert_eq!(with.status, 200, "{path}: {}", with.body);
    }
    let post = send(
        addr,
        "POST /api/v1/status HTTP/1.1",
        &[&bearer, "Content-Length: 0"],
    );
    assert_eq!(post.status, 405, "admitted, and still read-only");
}

#[test]
fn a_proof_of_an_exec_or_a_seq_checks_offline_with_the_host_key() {
    use enforcer::audit::proof::{ProofError, ProofFile, verify_proof};
    use enforcer::service::http::api::HostKey;
    use http_support::signed_log::{self, CHILD, INTERPRETER};

    let log = tempfile::tempdir().expect("tempdir");
    signed_log::write(log.path());
    let mut snapshot = enforcing();
    let vkey = signed_log::open(log.path())
        .host_vkey()
        .expect("a signed log");
    snapshot.host_key = Some(vkey.clone());
    let window = Window::new(snapshot);
    let (addr, _dir) = start(&window, true, Some(log.path()));
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let with_token = |path: &str| send(addr, &format!("GET {path} HTTP/1.1"), &[&bearer]);

    let by_exec = with_token(&format!("/api/v1/proof/{}:{CHILD}", signed_log::BOOT));
    assert_eq!(by_exec.status, 200, "{}", by_exec.body);
    let proof: ProofFile = json(&by_exec);
    let host = signed_log::host_key().public_key();
    let trust = signed_log::trust();
    let proven = verify_proof(by_exec.body.as_bytes(), &host, &trust, &[]).expect("verifies");
    match &proven.record.body {
        Body::Decision(d) => assert_eq!((d.exec_id, d.decision.as_str()), (CHILD, "deny")),
        other => panic!("not a decision: {}", other.kind()),
    }
    let by_seq = with_token(&format!("/api/v1/proof?seq={}", proof.index));
    assert_eq!(by_seq.status, 200, "{}", by_seq.body);
    assert_eq!(
        json::<ProofFile>(&by_seq),
        proof,
        "the same record, the same proof"
    );

    // An allowed exec's proof carries its bundle, and the grant checks against the trust
    // store.
    let allowed = with_token(&format!("/api/v1/proof/{}:{INTERPRETER}", signed_log::BOOT));
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let proven = verify_proof(allowed.body.as_bytes(), &host, &trust, &[]).expect("verifies");
    let authorization = proven.authorization.expect("the bundle");
    assert_eq!(authorization.grant.as_deref(), Some("build tools"));
    assert_eq!(authorization.issuer, "ops");

    // One changed byte of the record is caught by the offline check.
    let forged = by_exec.body.replacen("/tmp/payload", "/tmp/paylaod", 1);
    let refused = verify_proof(forged.as_bytes(), &host, &trust, &[]).expect_err("forged");
    assert!(matches!(refused, ProofError::RecordAltered), "{refused}");

    let key = with_token("/api/v1/host-key");
    assert_eq!(key.status, 200, "{}", key.body);
    assert_eq!(json::<HostKey>(&key).vkey, vkey);
    assert!(vkey.starts_with(signed_log::ORIGIN), "{vkey}");

    for (path, status) in [
        (format!("/api/v1/proof/{}:99", signed_log::BOOT), 404),
        ("/api/v1/proof?seq=9999".to_owned(), 404),
        ("/api/v1/proof".to_owned(), 400),
        ("/api/v1/proof?exec=4".to_owned(), 400),
        ("/api/v1/proof/nonsense".to_owned(), 400),
    ] {
        let answer = with_token(&path);
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(!json::<ApiError>(&answer).error.is_empty());
    }
    // The same rules as the rest of the API: no token, no proof.
    assert_eq!(
        get(addr, &format!("/api/v1/proof?seq={}", proof.index)).status,
        401
    );
    assert_eq!(get(addr, "/api/v1/host-key").status, 401);

    // A log without a host key has no key to show.
    let unsigned = Window::new(enforcing());
    let (addr, _dir) = start(&unsigned, false, Some(log.path()));
    assert_eq!(get(addr, "/api/v1/host-key").status, 404);
}
