//! The agent's read-only HTTP window: `/healthz`, `/readyz` and `/metrics`.
//!
//! Off unless the configuration has an `[http]` section. Nothing served here can change
//! what is enforced: the server answers GET (and HEAD) only, and it reads a [`Snapshot`]
//! the agent's loop publishes; it never calls into the agent. A client, however slow,
//! holds at most a lock for the time it takes to copy the snapshot's figures.
//!
//! [`accept`] is the bounded accept loop behind it, shared with the witness server
//! (`crate::witness`).

pub mod accept;
pub mod config;
pub mod metrics;
pub mod readiness;
mod server;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
        }
    }

    /// `/readyz`'s answer at `now`.
    #[must_use]
    pub fn readiness(&self, now: Instant) -> Readiness {
        readiness::check(&self.ready, now, &self.limits)
    }
}

/// The snapshot, shared between the agent's loop (which writes it) and the server.
#[derive(Debug, Clone)]
pub struct Window(Arc<Mutex<Snapshot>>);

impl Window {
    #[must_use]
    pub fn new(snapshot: Snapshot) -> Self {
        Self(Arc::new(Mutex::new(snapshot)))
    }

    /// Changes the snapshot. A panic while another holder had the lock leaves at worst a
    /// half-updated snapshot, which the next update repairs: the lock's poison is ignored.
    pub fn update<R>(&self, change: impl FnOnce(&mut Snapshot) -> R) -> R {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the snapshot.
    pub fn read<R>(&self, look: impl FnOnce(&Snapshot) -> R) -> R {
        look(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
