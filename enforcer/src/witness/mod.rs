//! A transparency-log witness, both sides of C2SP `tlog-witness`.
//!
//! A witness cosigns a log's checkpoint only if it extends the last checkpoint of that log
//! the witness cosigned. Readers who require cosignatures from witnesses they trust
//! therefore see one history of the log: to show them a rewritten one, the log would have
//! to fork every one of those witnesses too, which their state forbids.
//!
//! - [`protocol`]: the request and answer bytes, one copy for both ends.
//! - [`check`]: the witness's checks, in the spec's order, each with its status code.
//! - [`state`]: the latest cosigned checkpoint per log, persisted atomically.
//! - [`logs`]: the logs a witness cosigns for, a file of verifier keys.
//! - [`server`]: `POST /add-checkpoint` (and the monitors' `GET`) over HTTP.
//! - [`client`]: [`add_checkpoint`], the log's side, with typed refusals.
//! - [`push`]: [`Pusher`], what the agent runs: each new checkpoint to every configured
//!   witness, and the cosignatures kept beside the log.
//!
//! `docs/audit.md` ("Witnesses") says how the agent uses them and what they guarantee.

pub mod check;
pub mod client;
pub mod logs;
pub mod protocol;
pub mod push;
pub mod server;
pub mod state;

#[cfg(test)]
mod tests;

pub use check::{Refusal, Witness};
pub use client::{TIMEOUT, WitnessError, add_checkpoint, add_checkpoint_within};
pub use logs::{LogsError, TrustedLogs};
pub use protocol::{AddCheckpoint, RequestError};
pub use push::{COSIGNED_FILE, Outcome, PushError, Pusher, WitnessSettings};
pub use server::{ServerError, bind, serve};
pub use state::{LogState, StateError, WitnessState};
