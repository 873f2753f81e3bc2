//! The HTTP/1.1 server behind the window: hyper, on the agent's own runtime.
//!
//! Each connection is bounded in number, header size and lifetime, so clients that
//! connect and say nothing cost a task and a socket, never the loop's attention.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{HEALTH_LIMIT, HttpError, HttpSettings, Token, Window, metrics};

/// Connections served at once; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 32;
/// Longest life of a connection, keep-alive included: a scraper reconnects.
const CONNECTION_TIME: Duration = Duration::from_secs(10);
/// Largest request head read (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

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
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, usually: wait rather than spin.
                tracing::warn!("HTTP window: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("HTTP window: too many connections, closing a new one");
            continue;
        };
        let window = window.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &window, token.as_deref(), Instant::now());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIME, connection).await {
                tracing::debug!("HTTP window: connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// `/healthz`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Whether the agent's loop turned within the limit.
    pub alive: bool,
    /// Seconds since it last turned.
    pub last_turn_seconds_ago: u64,
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
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
