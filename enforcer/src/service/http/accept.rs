//! The accept loop of every HTTP server in the crate (the agent's window, the witness):
//! hyper's HTTP/1 on a Tokio listener, with each connection bounded in number, head size
//! and lifetime, so clients that connect and say nothing cost a task and a socket, never
//! the loop's attention. One copy, so that a limit fixed here is fixed for both.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;

/// How much of the machine one server's clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Longest life of a connection, keep-alive and reading the body included.
    pub connection_time: Duration,
    /// Largest request head read (hyper's minimum is 8 KiB).
    pub max_head_bytes: usize,
}

/// Serves HTTP/1 connections on `socket` until the task is dropped, answering each
/// request with `handle`. `what` names the server in log lines. Must run on a Tokio
/// runtime.
///
/// `handle` also gets the connection's [`Unbounded`] flag: a response that streams for as
/// long as its client listens (the window's decision stream) sets it, and the connection
/// then outlives `connection_time`. Such a handler must bound those connections itself.
pub async fn serve_connections<H, F, B>(
    socket: tokio::net::TcpListener,
    limits: ConnectionLimits,
    what: &'static str,
    handle: H,
) where
    H: Fn(Request<Incoming>, Unbounded) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, usually: wait rather than spin.
                tracing::warn!("{what}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("{what}: too many connections, closing a new one");
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let unbounded = Unbounded::default();
            let service = {
                let unbounded = unbounded.clone();
                hyper::service::service_fn(move |request| {
                    let response = handle(request, unbounded.clone());
                    async move { Ok::<_, Infallible>(response.await) }
                })
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .max_buf_size(limits.max_head_bytes)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let ended =
                match tokio::time::timeout(limits.connection_time, connection.as_mut()).await {
                    Ok(ended) => ended,
                    Err(_) if unbounded.is_set() => connection.await,
                    Err(_) => Ok(()),
                };
            if let Err(e) = ended {
                tracing::debug!("{what}: connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// Set by a handler whose response streams until its client leaves: the connection is
/// then exempt from the time limit.
#[derive(Clone, Debug, Default)]
pub struct Unbounded(Arc<AtomicBool>);

impl Unbounded {
    /// Exempts this connection from the time limit.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    #[must_use]
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A response with a body and its content type.
pub fn reply(
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
