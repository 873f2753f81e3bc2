//! The JSON API under `/api/v1/`: what `enforcer status` and `enforcer list` show, the
//! audit log's decisions (paged, or live as Server-Sent Events) and an exec's lineage.
//! docs/http-api.md documents it for clients.
//!
//! Status and listing are the control protocol's own structs, as the agent's loop last
//! published them; decisions and lineage are the audit log's records, read with
//! [`crate::audit::query`]. Reading the log happens on the blocking pool, a few reads at
//! a time: the agent's loop shares this runtime and must not wait for a disk.

use std::time::{Duration, SystemTime};

use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::server::{Body, Shared, error, json, not_found};
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
        _ => match route.strip_prefix("lineage/") {
            Some(exec) => lineage(exec, shared).await,
            None => not_found(),
        },
    }
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

/// Runs a read of the audit log on the blocking pool, if a read slot is free.
async fn read_log<T: Send + 'static>(
    shared: &Shared,
    read: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
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
        Ok(Err(e @ QueryError::ExecNotFound { .. })) => {
            Err(error(StatusCode::NOT_FOUND, &e.to_string()))
        }
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
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
        Ok(query::newest_matching(&dir, params.before, limit, keep)?)
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

async fn lineage(exec: &str, shared: &Shared) -> Response<Body> {
    let Some((boot, exec_id)) = parse_exec(exec) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "{exec:?} does not name an exec: expected <boot_id>:<exec_id>, as in the \
                 decision records (boot_id is hex with dashes, exec_id a number above 0)"
            ),
        );
    };
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
