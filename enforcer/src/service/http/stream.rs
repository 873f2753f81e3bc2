//! `/api/v1/decisions/stream`: decisions as the agent writes them, as Server-Sent Events.
//!
//! The source is the window's broadcast feed, not the log file: the agent hands over each
//! decision record as it writes it, and no one polls the disk. The agent never waits for
//! a stream. A stream that falls behind (the feed moved on by [`super::FEED_CAPACITY`]
//! decisions) or whose client does not take a frame within [`SLOW_CLIENT`] is ended: its
//! client can page the gap from `/api/v1/decisions` by sequence number. Memory is bounded
//! by the feed's capacity and each stream's few frames in flight.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Either;
use http_body_util::channel::{Channel, Sender};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::broadcast::error::RecvError;

use super::api::{MAX_STREAMS, SLOW_CLIENT};
use super::server::{Body, Shared, error};
use crate::audit::Record;
use crate::audit::query::Filter;

/// A comment this often, so proxies keep the connection and clients notice a dead agent.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Frames queued between the stream's task and the connection.
const IN_FLIGHT: usize = 16;

/// Answers a stream request: the response starts at once, and a task feeds it.
pub(super) fn open(
    filter: Filter,
    shared: &Shared,
    unbounded: &super::accept::Unbounded,
) -> Response<Body> {
    let Ok(permit) = Arc::clone(&shared.streams).try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{MAX_STREAMS} decision streams are open already: retry later"),
        );
    };
    // Subscribed before the response goes out: a decision written after the client
    // sees the headers is in the stream.
    let feed = shared.window.subscribe();
    let (frames, body) = Channel::new(IN_FLIGHT);
    unbounded.set();
    tokio::spawn(async move {
        let why = feed_stream(feed, frames, &filter).await;
        tracing::debug!("HTTP window: a decision stream ended: {why}");
        drop(permit);
    });
    let mut response = Response::new(Either::Right(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The connection's time limit no longer applies: once the stream ends, close it
    // rather than let an idle keep-alive connection hold a slot without a limit.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Moves matching decisions from the feed to the client until one side goes; returns why.
async fn feed_stream(
    mut feed: tokio::sync::broadcast::Receiver<Arc<Record>>,
    mut frames: Sender<Bytes>,
    filter: &Filter,
) -> String {
    // Sent at once, so the client sees the stream open before any decision.
    if !send(&mut frames, Bytes::from_static(b": decisions follow\n\n")).await {
        return "the client left".into();
    }
    let mut keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        let frame = tokio::select! {
            received = feed.recv() => match received {
                Ok(record) if filter.matches(&record) => match event(&record) {
                    Some(frame) => frame,
                    None => continue,
                },
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    // Best effort: the client may be too slow to read even this.
                    let note = format!(": dropped: {missed} decisions behind\n\n");
                    let _ = frames.try_send(hyper::body::Frame::data(Bytes::from(note)));
                    return format!("fell {missed} decisions behind");
                }
                Err(RecvError::Closed) => return "the agent stopped".into(),
            },
            _ = keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
        };
        if !send(&mut frames, frame).await {
            return "the client left or did not read".into();
        }
    }
}

/// Hands a frame to the connection; false when the client has gone or is too slow.
async fn send(frames: &mut Sender<Bytes>, frame: Bytes) -> bool {
    matches!(
        tokio::time::timeout(SLOW_CLIENT, frames.send_data(frame)).await,
        Ok(Ok(()))
    )
}

/// `id: <seq>`, `event: decision` and the record as one line of JSON.
fn event(record: &Record) -> Option<Bytes> {
    let json = serde_json::to_string(record).ok()?;
    Some(Bytes::from(format!(
        "id: {}\nevent: decision\ndata: {json}\n\n",
        record.seq
    )))
}
