//! The agent's read-only HTTP window: `/healthz`, `/readyz`, `/metrics`, the JSON API
//! under `/api/v1/` (docs/http-api.md) and a web console over it (docs/console.md).
//!
//! Off unless the configuration has an `[http]` section. Nothing served here can change
//! what is enforced: the server answers GET (and HEAD) only, and it reads a [`Snapshot`]
//! the agent's loop publishes, the decisions the loop broadcasts, and the audit log on
//! disk; it never calls into the agent. A client, however slow, holds at most a lock for
//! the time it takes to copy the snapshot's figures, and the loop never waits for a
//! stream.
//!
//! [`accept`] is the bounded accept loop behind it, shared with the witness server
//! (`crate::witness`).

pub mod accept;
pub mod api;
pub mod config;
mod console;
pub mod metrics;
pub mod readiness;
mod server;
mod stream;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::audit::Record;

pub use config::{HttpSettings, Token};
pub use metrics::Figures;
pub use readiness::{Readiness, ReadyFacts, SelfTest};
pub use server::{Health, Listener, bind, serve};

/// Why the window could not open.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot read the HTTP token file {path} ([http] token_file): {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the HTTP token file {path} ([http] token_file) is empty: write the bearer token \
         into it"
    )]
    EmptyToken { path: PathBuf },
    #[error("cannot listen on {addr} ([http] listen): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The agent's loop may stall this long before `/healthz` says it is not alive. Its tick is
/// a second; a reconcile that hashes many large files can take a while.
pub const HEALTH_LIMIT: Duration = Duration::from_secs(30);

/// What the window shows, as the agent's loop last published it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the loop last turned.
    pub heartbeat: Instant,
    pub ready: ReadyFacts,
    pub limits: readiness::Limits,
    pub figures: Figures,
    /// The audit log's checkpoint key as a vkey (`origin+id+key`), for the console's proof
    /// viewer; `None` before the log opens and when checkpoints are unsigned.
    pub host_key: Option<String>,
}

impl Snapshot {
    /// What the window knows of an agent that has not started serving.
    #[must_use]
    pub fn starting(self_test: SelfTest, limits: readiness::Limits) -> Self {
        Self {
            heartbeat: Instant::now(),
            ready: ReadyFacts::unknown(self_test),
            limits,
            figures: Figures::default(),
            host_key: None,
        }
    }

    /// `/readyz`'s answer at `now`.
    #[must_use]
    pub fn readiness(&self, now: Instant) -> Readiness {
        readiness::check(&self.ready, now, &self.limits)
    }
}

/// Decisions the live feed holds for subscribers that have not taken them yet. A stream
/// that falls this far behind is dropped rather than buffered for: the log has them all.
pub const FEED_CAPACITY: usize = 1024;

/// The snapshot, shared between the agent's loop (which writes it) and the server, and
/// the feed of decisions as the loop writes them to the audit log.
#[derive(Debug, Clone)]
pub struct Window {
    snapshot: Arc<Mutex<Snapshot>>,
    // A broadcast channel: sending never waits, and each subscriber lags on its own.
    decisions: broadcast::Sender<Arc<Record>>,
}

impl Window {
    #[must_use]
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            snapshot: Arc::new(Mutex::new(snapshot)),
            decisions: broadcast::channel(FEED_CAPACITY).0,
        }
    }

    /// Changes the snapshot. A panic while another holder had the lock leaves at worst a
    /// half-updated snapshot, which the next update repairs: the lock's poison is ignored.
    pub fn update<R>(&self, change: impl FnOnce(&mut Snapshot) -> R) -> R {
        change(&mut self.snapshot.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the snapshot.
    pub fn read<R>(&self, look: impl FnOnce(&Snapshot) -> R) -> R {
        look(&self.snapshot.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Hands a decision record, as written to the audit log, to the streams open now.
    /// Never waits; without a stream open it does not even copy the record.
    pub fn publish_decision(&self, record: &Record) {
        if self.decisions.receiver_count() > 0 {
            // Fails only when the last stream closed since the count: nobody to tell.
            let _ = self.decisions.send(Arc::new(record.clone()));
        }
    }

    /// The decisions published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.decisions.subscribe()
    }
}
