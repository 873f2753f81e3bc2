//! What the agent talks through as a service: the local control socket and its typed
//! protocol, and systemd (readiness, watchdog, journald).

pub mod control;
pub mod systemd;
