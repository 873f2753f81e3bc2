//! The witness's HTTP server: `POST /add-checkpoint` for logs, and
//! `GET /<origin hash>/checkpoint` for monitors, on the crate's bounded accept loop.
//!
//! Requests carry no credentials (the spec's design: a checkpoint is either signed by a
//! trusted log or refused), so everything here is bounded: connections, their lifetime,
//! the head, and the body, which is read into memory only up to the largest request the
//! protocol allows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::check::{Refusal, Witness};
use super::protocol::{
    ADD_CHECKPOINT_PATH, AddCheckpoint, MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE, cosignatures_body,
    size_body,
};
use crate::service::http::accept::{ConnectionLimits, reply, serve_connections};

const LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 64,
    // Long enough to send a 1 MiB note over a slow link; a log reconnects for the next.
    connection_time: Duration::from_secs(30),
    max_head_bytes: 16 * 1024,
};

const TEXT: &str = "text/plain; charset=utf-8";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the witness cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the witness's socket (port 0 picks one), so that a port in use is reported
/// before anything else starts.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let failed = |source| ServerError::Bind { addr, source };
    let socket = std::net::TcpListener::bind(addr).map_err(failed)?;
    socket.set_nonblocking(true).map_err(failed)?;
    Ok(socket)
}

/// Serves until the task is dropped. Must run on a Tokio runtime.
pub async fn serve(listener: std::net::TcpListener, witness: Arc<Witness>) -> std::io::Result<()> {
    let socket = tokio::net::TcpListener::from_std(listener)?;
    serve_connections(socket, LIMITS, "witness", move |request, _unbounded| {
        respond(request, Arc::clone(&witness))
    })
    .await;
    Ok(())
}

async fn respond(request: Request<Incoming>, witness: Arc<Witness>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == ADD_CHECKPOINT_PATH {
        if request.method() != Method::POST {
            return not_allowed("POST");
        }
        return add_checkpoint(request, witness).await;
    }
    if let Some(origin_hash) = monitored_origin(path) {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return not_allowed("GET, HEAD");
        }
        return match witness.latest_by_origin_hash(origin_hash) {
            Some(log) => reply(StatusCode::OK, TEXT, log.note.to_string()),
            None => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "this witness has cosigned no checkpoint of that log\n",
            ),
        };
    }
    reply(
        StatusCode::NOT_FOUND,
        TEXT,
        "not found: this witness serves POST /add-checkpoint and GET /<sha256 of origin, \
         hex>/checkpoint\n",
    )
}

/// The origin hash of a monitoring path, `/<64 lowercase hex digits>/checkpoint`.
fn monitored_origin(path: &str) -> Option<&str> {
    let hash = path.strip_prefix('/')?.strip_suffix("/checkpoint")?;
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (hash.len() == 64 && hash.bytes().all(hex)).then_some(hash)
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        TEXT,
        format!("method not allowed here; use {allow}\n"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

async fn add_checkpoint(
    request: Request<Incoming>,
    witness: Arc<Witness>,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                TEXT,
                format!("the request body is larger than {MAX_REQUEST_BYTES} bytes\n"),
            );
        }
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                TEXT,
                format!("cannot read the request body: {e}\n"),
            );
        }
    };
    let request = match AddCheckpoint::parse(&body) {
        Ok(request) => request,
        Err(e) => {
            tracing::debug!("witness: malformed add-checkpoint: {e}");
            return reply(StatusCode::BAD_REQUEST, TEXT, format!("{e}\n"));
        }
    };
    // The check ends in an fsync of the state file: off the runtime's threads.
    let now = unix_now();
    let answer = tokio::task::spawn_blocking(move || {
        let answer = witness.add_checkpoint(&request, now);
        (answer, request)
    })
    .await;
    match answer {
        Ok((Ok(cosignatures), request)) => {
            // One line per cosignature: the checkpoint's origin, size and root.
            tracing::info!(
                old_size = request.old_size,
                "witness: cosigned {}",
                request.note.text().trim_end().replace('\n', " ")
            );
            reply(StatusCode::OK, TEXT, cosignatures_body(&cosignatures))
        }
        Ok((Err(Refusal::Conflict { witness_size, .. }), _)) => reply(
            StatusCode::CONFLICT,
            SIZE_CONTENT_TYPE,
            size_body(witness_size),
        ),
        Ok((Err(refusal), request)) => {
            if let Refusal::Inconsistent { .. } = refusal {
                // A signed checkpoint that does not extend the cosigned one: the log
                // forked or rolled back. The note is the evidence; keep it in the log.
                tracing::warn!("witness: {refusal}; the log signed:\n{}", request.note);
            } else {
                tracing::info!("witness: refused a checkpoint: {refusal}");
            }
            reply(refusal.status(), TEXT, format!("{refusal}\n"))
        }
        Err(e) => {
            tracing::error!("witness: the add-checkpoint task failed: {e}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                "internal error; nothing was cosigned\n",
            )
        }
    }
}

/// Seconds since the Epoch; 0 (refused as a cosignature time) for a clock before 1970.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
