//! The JSON API under `/api/v1/`: what `enforcer status` and `enforcer list` show, the
//! audit log's decisions (paged, or live as Server-Sent Events), an exec's lineage, the
//! proof of a record and the key that checks it. docs/http-api.md documents it for
//! clients.
//!
//! Status and listing are the control protocol's own structs, as the agent's loop last
//! published them; decisions and lineage are the audit log's records, read with
//! [`crate::audit::query`]. Reading the log happens on the blocking pool, a few reads at
//! a time: the agent's loop shares this runtime and must not wait for a disk.

use std::time::{Duration, SystemTime};

use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::server::{Body, Shared, error, json, not_found};
use crate::audit::proof::{self, ProveError, Selector};
use crate::audit::query::{self, Family, Filter, QueryError};
use crate::audit::{Body as RecordBody, Record};

/// Where the API's paths start.
pub const PREFIX: &str = "/api/v1/";
/// Decisions in a page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`: a page is held in memory and sent whole.
pub const MAX_LIMIT: usize = 1000;
/// Descendants listed at most by `/lineage` (a shell's can be without end).
pub const MAX_DESCENDANTS: usize = 1000;
/// Audit log reads served at once; more are answered 503 at once rather than queued.
pub(super) const MAX_READS: usize = 2;
/// Decision streams open at once.
pub const MAX_STREAMS: usize = 8;
/// Longest wait for a stream's client to take one frame before the stream is ended.
pub const SLOW_CLIENT: Duration = Duration::from_secs(5);

/// Every error: `{"error": "..."}`, and for a bad query parameter, which one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl ApiError {
    #[must_use]
    pub fn new(message: &str) -> Self {
        Self {
            error: message.to_owned(),
            parameter: None,
        }
    }
}

/// `/api/v1/host-key`: the key that checks this log's checkpoints, hence its proofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// `<origin>+<hex key id>+<base64(0x01 || Ed25519 public key)>`, as `enforcer audit
    /// vkey` prints it.
    pub vkey: String,
}

/// `/api/v1/decisions`: decision records, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionPage {
    pub decisions: Vec<Record>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next: Option<u64>,
}

/// The answer to `GET /api/v1/<route>?<query>`.
pub(super) async fn respond(
    route: &str,
    query: Option<&str>,
    shared: &Shared,
    unbounded: &super::accept::Unbounded,
) -> Response<Body> {
    match route {
        "status" => published(shared.window.read(|s| s.figures.status.clone())),
        "authorizations" => published(shared.window.read(|s| s.figures.listing.clone())),
        "decisions" => match Params::parse(query, true) {
            Ok(p) => decisions(p, shared).await,
            Err(bad) => bad.response(),
        },
        "decisions/stream" => match Params::parse(query, false) {
            Ok(p) => super::stream::open(p.filter, shared, unbounded),
            Err(bad) => bad.response(),
        },
        "host-key" => match shared.window.read(|s| s.host_key.clone()) {
            Some(vkey) => json(StatusCode::OK, &HostKey { vkey }),
            None => error(
                StatusCode::NOT_FOUND,
                "this agent's audit checkpoints are unsigned (no host key), so it has no \
                 proofs to check",
            ),
        },
        "proof" => match proof_seq(query) {
            Ok(seq) => prove(Selector::Seq(seq), shared).await,
            Err(bad) => bad.response(),
        },
        _ => {
            if let Some(exec) = route.strip_prefix("lineage/") {
                match parse_exec(exec) {
                    Some((boot, exec_id)) => lineage(boot, exec_id, shared).await,
                    None => not_an_exec(exec),
                }
            } else if let Some(exec) = route.strip_prefix("proof/") {
                match parse_exec(exec) {
                    Some((boot_id, exec_id)) => {
                        prove(Selector::Exec { boot_id, exec_id }, shared).await
                    }
                    None => not_an_exec(exec),
                }
            } else {
                not_found()
            }
        }
    }
}

/// `seq=N`, the only parameter of `/proof`.
fn proof_seq(query: Option<&str>) -> Result<u64, BadParam> {
    let mut seq = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name).map_err(|e| BadParam::new(name, e))?;
        if name != "seq" {
            return Err(BadParam::new(&name, "unknown parameter (known: seq)"));
        }
        if seq.is_some() {
            return Err(BadParam::new(&name, "given more than once"));
        }
        let value = decode(value).map_err(|e| BadParam::new(&name, e))?;
        seq = Some(value.parse().map_err(|_| {
            BadParam::new(&name, "expected a record's sequence number (its `seq`)")
        })?);
    }
    seq.ok_or_else(|| {
        BadParam::new(
            "seq",
            "required: name the record (or use /api/v1/proof/<boot_id>:<exec_id>)",
        )
    })
}

/// What the loop published after its last reconcile; 503 before the first. Copied out
/// of the snapshot first: the loop's lock is not held while serializing.
fn published<T: Serialize>(report: Option<T>) -> Response<Body> {
    match report {
        Some(report) => json(StatusCode::OK, &report),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent has not finished its first reconcile: retry shortly",
        ),
    }
}

/// A query parameter that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadParam {
    name: String,
    problem: String,
}

impl BadParam {
    fn new(name: &str, problem: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            problem: problem.into(),
        }
    }

    fn response(&self) -> Response<Body> {
        json(
            StatusCode::BAD_REQUEST,
            &ApiError {
                error: format!("query parameter `{}`: {}", self.name, self.problem),
                parameter: Some(self.name.clone()),
            },
        )
    }
}

/// The parameters of `/decisions` and `/decisions/stream`.
#[derive(Debug, Clone, Default)]
pub(super) struct Params {
    pub(super) filter: Filter,
    before: Option<u64>,
    limit: Option<usize>,
}

impl Params {
    /// Parses a query string. Unknown and repeated parameters are refused, so a typo
    /// (`scpoe=`) does not silently widen the answer. An empty value counts as absent.
    /// `paged`: `limit` and `before` are allowed (not on a stream).
    pub(super) fn parse(query: Option<&str>, paged: bool) -> Result<Self, BadParam> {
        let mut params = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).map_err(|e| BadParam::new(name, e))?;
            let value = decode(value).map_err(|e| BadParam::new(&name, e))?;
            if seen.contains(&name) {
                return Err(BadParam::new(&name, "given more than once"));
            }
            seen.push(name.clone());
            if value.is_empty() {
                continue;
            }
            params.set(&name, value, paged)?;
        }
        Ok(params)
    }

    fn set(&mut self, name: &str, value: String, paged: bool) -> Result<(), BadParam> {
        let bad = |problem: &str| BadParam::new(name, problem);
        match name {
            "scope" => self.filter.scope = Some(value),
            "decision" => {
                if !["allow", "deny", "would-deny"].contains(&value.as_str()) {
                    return Err(bad("expected allow, deny or would-deny"));
                }
                self.filter.decision = Some(value);
            }
            "since" => {
                let since = query::parse_since(&value, SystemTime::now())
                    .map_err(|e| bad(&e.to_string()))?;
                self.filter.since = Some(since);
            }
            "limit" if paged => {
                let limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(&format!("expected a number from 1 to {MAX_LIMIT}")))?;
                self.limit = Some(limit);
            }
            "before" if paged => {
                let seq = value
                    .parse()
                    .map_err(|_| bad("expected a sequence number (the `next` of a page)"))?;
                self.before = Some(seq);
            }
            "limit" | "before" => return Err(bad("a stream has no pages")),
            _ => {
                let known = if paged {
                    "scope, decision, since, limit, before"
                } else {
                    "scope, decision, since"
                };
                return Err(bad(&format!("unknown parameter (known: {known})")));
            }
        }
        Ok(())
    }
}

/// Percent-decodes one component of a query string, `+` as a space (HTML forms).
fn decode(text: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = rest
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("a % not followed by two hex digits")?;
                bytes.push(hex);
                rest = &rest[2..];
            }
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 once decoded".to_owned())
}

/// An error of a read of the log, and the status it is answered with.
trait ReadError: std::fmt::Display + Send + 'static {
    fn status(&self) -> StatusCode;
}

impl ReadError for QueryError {
    fn status(&self) -> StatusCode {
        match self {
            Self::ExecNotFound { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ReadError for ProveError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            // The next checkpoint covers it: a client retries, as for a busy log.
            Self::NotYetCheckpointed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            // Unsigned checkpoints: nothing to retry until the host key is configured.
            Self::NoCheckpoint { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Runs a read of the audit log on the blocking pool, if a read slot is free.
async fn read_log<T: Send + 'static, E: ReadError>(
    shared: &Shared,
    read: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Response<Body>> {
    let Ok(permit) = std::sync::Arc::clone(&shared.reads).try_acquire_owned() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log is being read for other requests: retry shortly",
        ));
    };
    let done = tokio::task::spawn_blocking(move || {
        // Held until the read ends, even if the client has gone.
        let _permit = permit;
        read()
    })
    .await;
    match done {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error(e.status(), &e.to_string())),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("reading the audit log failed: {e}"),
        )),
    }
}

async fn decisions(params: Params, shared: &Shared) -> Response<Body> {
    let dir = shared.audit_dir.clone();
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let filter = params.filter;
    let page = read_log(shared, move || {
        let keep = |r: &Record| matches!(r.body, RecordBody::Decision(_)) && filter.matches(r);
        query::newest_matching(&dir, params.before, limit, keep).map_err(QueryError::from)
    })
    .await;
    match page {
        Ok((entries, more)) => {
            let next = entries.last().filter(|_| more).map(|e| e.record.seq);
            let decisions = entries.into_iter().map(|e| e.record).collect();
            json(StatusCode::OK, &DecisionPage { decisions, next })
        }
        Err(response) => response,
    }
}

/// The answer to a path whose exec part names no exec.
fn not_an_exec(exec: &str) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        &format!(
            "{exec:?} does not name an exec: expected <boot_id>:<exec_id>, as in the \
             decision records (boot_id is hex with dashes, exec_id a number above 0)"
        ),
    )
}

async fn lineage(boot: String, exec_id: u64, shared: &Shared) -> Response<Body> {
    let dir = shared.audit_dir.clone();
    let family = read_log(shared, move || {
        query::family(&dir, exec_id, &boot, MAX_DESCENDANTS)
    })
    .await;
    match family {
        Ok(family) => json::<Family>(StatusCode::OK, &family),
        Err(response) => response,
    }
}

/// The proof file of one record, as `enforcer audit prove` writes it. Proving walks the
/// log to the record and reads the tiles: on the blocking pool like every read.
async fn prove(selector: Selector, shared: &Shared) -> Response<Body> {
    let dir = shared.audit_dir.clone();
    match read_log(shared, move || proof::prove(&dir, &selector)).await {
        Ok(file) => json(StatusCode::OK, &file),
        Err(response) => response,
    }
}

/// `<boot_id>:<exec_id>`, checked as [`crate::audit::boot_id`] checks the kernel's.
fn parse_exec(text: &str) -> Option<(String, u64)> {
    let (boot, exec) = text.rsplit_once(':')?;
    let boot_ok = !boot.is_empty()
        && boot.len() <= 64
        && boot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let exec_id: u64 = exec.parse().ok().filter(|&id| id != 0)?;
    boot_ok.then(|| (boot.to_owned(), exec_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(query: &str, paged: bool) -> BadParam {
        Params::parse(Some(query), paged).expect_err(query)
    }

    #[test]
    fn parameters_are_decoded_and_checked_by_name() {
        let p = Params::parse(
            Some("scope=%2Fagents.slice&decision=would-deny&limit=5&before=77&since="),
            true,
        )
        .expect("valid");
        assert_eq!(p.filter.scope.as_deref(), Some("/agents.slice"));
        assert_eq!(p.filter.decision.as_deref(), Some("would-deny"));
        assert_eq!((p.limit, p.before), (Some(5), Some(77)));
        assert!(p.filter.since.is_none(), "empty is absent");
        assert!(Params::parse(None, true).is_ok());
        assert!(Params::parse(Some("since=10m"), false).is_ok());

        for (query, name) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=ten", "limit"),
            ("before=-1", "before"),
            ("decision=maybe", "decision"),
            ("since=yesterday-ish", "since"),
            ("scpoe=x", "scpoe"),
            ("scope=a&scope=b", "scope"),
            ("scope=%zz", "scope"),
            ("scope=%ff", "scope"),
        ] {
            assert_eq!(bad(query, true).name, name, "{query}");
        }
        assert_eq!(bad("limit=5", false).name, "limit", "a stream has no pages");
        assert_eq!(bad("before=5", false).name, "before");
    }

    #[test]
    fn a_proof_is_asked_for_by_seq() {
        assert_eq!(proof_seq(Some("seq=12")).expect("seq"), 12);
        for (query, name) in [
            (None, "seq"),
            (Some("seq="), "seq"),
            (Some("seq=-1"), "seq"),
            (Some("seq=1&seq=2"), "seq"),
            (Some("exec=4"), "exec"),
        ] {
            assert_eq!(
                proof_seq(query).expect_err("refused").name,
                name,
                "{query:?}"
            );
        }
    }

    #[test]
    fn decoding_handles_plus_and_escapes() {
        assert_eq!(decode("a+b%20c%2f%C3%A9").expect("decode"), "a b c/é");
        assert!(decode("%4").is_err());
        assert!(decode("%").is_err());
    }

    #[test]
    fn an_exec_is_named_by_boot_and_id() {
        assert_eq!(
            parse_exec("0a-b:42"),
            Some(("0a-b".to_owned(), 42)),
            "the last colon splits"
        );
        for bad in ["0a-b", "0a-b:0", ":4", "0a-b:x", "zz:4", "0a-b:-4"] {
            assert_eq!(parse_exec(bad), None, "{bad}");
        }
    }
}
