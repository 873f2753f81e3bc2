//! The HTTP/1.1 server behind the window: hyper, on the agent's own runtime, through the
//! bounded accept loop of [`super::accept`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::accept::{ConnectionLimits, reply, serve_connections};
use super::{HEALTH_LIMIT, HttpError, HttpSettings, Token, Window, metrics};

const LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 32,
    // Keep-alive included: a scraper reconnects.
    connection_time: Duration::from_secs(10),
    max_head_bytes: 16 * 1024,
};

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
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

/// Serves until the task is dropped. Must run on a Tokio runtime.
pub async fn serve(listener: Listener, window: Window) {
    let socket = match tokio::net::TcpListener::from_std(listener.socket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("the HTTP window cannot serve: {e}");
            return;
        }
    };
    let token = listener.token.map(Arc::new);
    serve_connections(socket, LIMITS, "HTTP window", move |request| {
        let response = respond(&request, &window, token.as_deref(), Instant::now());
        async move { response }
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

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => reply(status, JSON, body),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
    }
}

/// The answer to one request, from the snapshot as it is at `now`.
fn respond<B>(
    request: &Request<B>,
    window: &Window,
    token: Option<&Token>,
    now: Instant,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if let Some(token) = token.filter(|_| !PUBLIC.contains(&path)) {
        let given = request.headers().get(header::AUTHORIZATION);
        if !token.admits(given.map(HeaderValue::as_bytes)) {
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                TEXT,
                "this path needs Authorization: Bearer <the token in [http] token_file>\n",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "the HTTP window is read-only: GET only\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
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
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: this agent serves /healthz, /readyz and /metrics\n",
        ),
    }
}
