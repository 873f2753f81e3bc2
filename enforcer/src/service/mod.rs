//! What the agent talks through as a service: the local control socket and its typed
//! protocol, the read-only HTTP window (probes, metrics, JSON API), and systemd (readiness,
//! watchdog, journald).

pub mod control;
pub mod http;
pub mod systemd;
