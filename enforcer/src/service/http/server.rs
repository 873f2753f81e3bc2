//! The HTTP/1.1 server behind the window: hyper, on the agent's own runtime, through the
//! bounded accept loop of [`super::accept`] (a decision stream's lifetime excepted:
//! streams are bounded in number instead, see stream.rs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::channel::Channel;
use http_body_util::{Either, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::accept::{self, ConnectionLimits, Unbounded, serve_connections};
use super::api::{self, ApiError};
use super::{HEALTH_LIMIT, HttpError, HttpSettings, Token, Window, console, metrics};

const LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 32,
    // Keep-alive included: a scraper reconnects. A decision stream is the exception.
    connection_time: Duration::from_secs(10),
    max_head_bytes: 16 * 1024,
};

pub(super) const JSON: &str = "application/json";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The paths anyone who reaches the port may read: a monitoring system's probes and
/// scrapes carry no token, and they show no path, uid or digest.
const PUBLIC: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// A bound listener and the token that guards it.
#[derive(Debug)]
pub struct Listener {
    socket: std::net::TcpListener,
    token: Option<Token>,
}

impl Listener {
    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Binds the window's socket and reads its token, at start-up: a port in use or an
/// unreadable token stops the agent before it reports ready, with the setting to fix.
pub fn bind(settings: &HttpSettings) -> Result<Listener, HttpError> {
    let token = settings.token()?;
    let failed = |source| HttpError::Bind {
        addr: settings.listen,
        source,
    };
    let socket = std::net::TcpListener::bind(settings.listen).map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    Ok(Listener { socket, token })
}

/// What every connection's handler shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) window: Window,
    token: Option<Token>,
    /// The audit log the JSON API reads decisions and lineage from.
    pub(super) audit_dir: PathBuf,
    /// Log reads at once: each one is a thread of the blocking pool reading files.
    pub(super) reads: Arc<Semaphore>,
    /// Decision streams open at once: each holds a connection for as long as it lasts.
    pub(super) streams: Arc<Semaphore>,
}

/// Serves until the task is dropped. Must run on a Tokio runtime. `audit_dir` is the log
/// the agent writes, which `/api/v1/decisions` and `/api/v1/lineage` read.
pub async fn serve(listener: Listener, window: Window, audit_dir: PathBuf) {
    let socket = match tokio::net::TcpListener::from_std(listener.socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("the HTTP window cannot serve: {e}");
            return;
        }
    };
    let shared = Arc::new(Shared {
        window,
        token: listener.token,
        audit_dir,
        reads: Arc::new(Semaphore::new(api::MAX_READS)),
        streams: Arc::new(Semaphore::new(api::MAX_STREAMS)),
    });
    serve_connections(socket, LIMITS, "HTTP window", move |request, unbounded| {
        let shared = Arc::clone(&shared);
        // A decision stream sets `unbounded`: it ends when its client leaves or falls
        // behind (see stream.rs), and the number of streams is bounded.
        async move { handle(&request, &shared, &unbounded).await }
    })
    .await;
}

/// `/healthz`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Whether the agent's loop turned within the limit.
    pub alive: bool,
    /// Seconds since it last turned.
    pub last_turn_seconds_ago: u64,
}

/// What the server sends: a whole body, or a stream's.
pub(super) type Body = Either<Full<Bytes>, Channel<Bytes>>;

pub(super) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    accept::reply(status, content_type, body).map(Either::Left)
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => reply(status, JSON, body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `{"error": message}`: every refusal, on every path, so a client parses one shape.
pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&ApiError::new(message))
        // A struct of one string always serializes; the fallback only satisfies the type.
        .unwrap_or_else(|_| b"{\"error\":\"\"}".to_vec());
    reply(status, JSON, body)
}

/// The answer to one request.
async fn handle<B>(request: &Request<B>, shared: &Shared, unbounded: &Unbounded) -> Response<Body> {
    let now = Instant::now();
    let path = request.uri().path();
    // The console's pages and scripts hold no data (their scripts call the API with the
    // token), so they load without one, like the probes.
    let public = PUBLIC.contains(&path) || console::serves(path);
    if let Some(token) = shared.token.as_ref().filter(|_| !public) {
        let given = request.headers().get(header::AUTHORIZATION);
        if !token.admits(given.map(HeaderValue::as_bytes)) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this path needs Authorization: Bearer <the token in [http] token_file>",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the HTTP window is read-only: GET only",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Some(route) = path.strip_prefix(api::PREFIX) {
        return api::respond(route, request.uri().query(), shared, unbounded).await;
    }
    if let Some(page) = console::respond(path) {
        return page;
    }
    let window = &shared.window;
    match path {
        "/healthz" => {
            let age = window.read(|s| now.saturating_duration_since(s.heartbeat));
            let health = Health {
                alive: age <= HEALTH_LIMIT,
                last_turn_seconds_ago: age.as_secs(),
            };
            let status = if health.alive {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &health)
        }
        "/readyz" => {
            let readiness = window.read(|s| s.readiness(now));
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &readiness)
        }
        "/metrics" => {
            let text = window.read(|s| {
                let age = s
                    .ready
                    .audit
                    .last_checkpoint
                    .map(|at| now.saturating_duration_since(at).as_secs_f64());
                metrics::render(&s.figures, age)
            });
            match text {
                Ok(text) => reply(StatusCode::OK, OPENMETRICS, text),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        _ => not_found(),
    }
}

pub(super) fn not_found() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "not found: this agent serves /healthz, /readyz, /metrics and /api/v1/ (status, \
         authorizations, decisions, decisions/stream, lineage/<boot_id>:<exec_id>, \
         proof/<boot_id>:<exec_id>, proof?seq=<n>, host-key)",
    )
}
