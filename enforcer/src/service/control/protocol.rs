//! The control protocol's messages: one JSON [`Request`] line in, one [`Reply`] line out.
//!
//! Both ends use these types (the agent, the CLI, the VM tests), so a field is named once
//! and no side reads another's JSON by string keys. docs/service.md documents the wire
//! format.

use std::path::PathBuf;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::authz::artifact::{Mode, OnRevoke};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Verify an artifact (bundle, revocation, break-glass), keep it in the bundle
    /// directory and enforce it. Answered once the kernel enforces the result.
    Push {
        /// The file name the client read it from, for messages.
        name: String,
        /// The artifact's bytes, base64.
        artifact: String,
    },
    /// Like `Push`, but only a revocation is accepted: a typo that sends a bundle
    /// instead must not look like a withdrawal.
    Revoke { name: String, artifact: String },
    /// What is enforced and why: answered with a [`StatusReport`].
    Status,
    /// The authorizations in force, and the artifacts refused: a [`Listing`].
    List,
    /// Re-read the configuration and every artifact, as SIGHUP does.
    Reload,
}

impl Request {
    /// A push or revoke of `bytes` read from `name`.
    #[must_use]
    pub fn artifact(revoke: bool, name: String, bytes: &[u8]) -> Self {
        let artifact = base64::engine::general_purpose::STANDARD.encode(bytes);
        if revoke {
            Self::Revoke { name, artifact }
        } else {
            Self::Push { name, artifact }
        }
    }
}

/// The agent's answer: whether the request succeeded, a sentence for a person, and the
/// details for programs. `T` is what the request asks for ([`StatusReport`] for
/// `Status`, ...); the agent sends [`Data`], which serializes as whichever it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply<T> {
    pub ok: bool,
    /// For a person: what happened, or what is wrong.
    pub message: String,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

// serde's `default` on a generic Option needs a function that does not require T: Default.
fn none<T>() -> Option<T> {
    None
}

impl<T> Reply<T> {
    #[must_use]
    pub fn ok(message: impl Into<String>, data: Option<T>) -> Self {
        Self {
            ok: true,
            message: message.into(),
            data,
        }
    }

    #[must_use]
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
            data: None,
        }
    }
}

/// The details the agent sends with a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Data {
    Status(Box<StatusReport>),
    List(Listing),
    Pushed(PushReport),
}

/// What the agent sends.
pub type Response = Reply<Data>;

/// `status`: what is enforced, and why a scope denies everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub enforcing: bool,
    pub agent: AgentInfo,
    pub pin_dir: PathBuf,
    /// The programs were found pinned and taken over: enforcement never stopped.
    pub reused_pins: bool,
    pub scopes: Vec<ScopeStatus>,
    /// Bundles in force.
    pub bundles: usize,
    /// `None` when the agent runs an unsigned development policy.
    pub break_glass: Option<Vec<BreakGlassInfo>>,
    /// Artifacts refused.
    pub refused: usize,
    /// Decisions lost because the ring buffer was full.
    pub dropped_events: u64,
}

/// The agent process and its last reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub pid: u32,
    /// The configuration file, when one was read.
    pub config: Option<PathBuf>,
    /// RFC 3339 times.
    pub started: String,
    pub last_reconcile: Option<String>,
    /// When what is authorized next changes by itself (an expiry, a break-glass end).
    pub next_deadline: Option<String>,
    pub last_error: Option<String>,
    pub unsigned_policy: Option<PathBuf>,
    /// Processes killed under `on_revoke = "kill"` since the agent started.
    pub killed_on_revoke: usize,
}

/// One governed scope as the kernel enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStatus {
    pub path: String,
    pub cgroup_id: Option<u64>,
    /// What the scope does now: monitor during a break-glass window.
    pub mode: Mode,
    /// What the bundles and the configuration say, break-glass aside.
    pub configured_mode: Mode,
    pub break_glass_until: Option<String>,
    pub grants: usize,
    pub denies_everything: bool,
    /// Why it denies everything, in words.
    pub why: Vec<String>,
    /// The kernel's `scope_flags` (opt-ins).
    pub flags: Option<u32>,
}

/// A break-glass artifact in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassInfo {
    pub file: PathBuf,
    pub id: String,
    pub issuer: String,
    pub scopes: Vec<String>,
    pub not_after: String,
    pub reason: String,
}

/// `list`: the authorizations in force, and the artifacts refused with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsigned_policy: Option<PathBuf>,
    pub bundles: Vec<BundleInfo>,
    #[serde(default)]
    pub break_glass: Vec<BreakGlassInfo>,
    pub refused: Vec<RefusedArtifact>,
}

/// An accepted bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    pub file: PathBuf,
    pub id: String,
    pub issuer: String,
    pub bundle_id: String,
    pub serial: u64,
    pub scopes: Vec<String>,
    pub not_after: String,
    pub on_revoke: OnRevoke,
    /// Its grants the kernel holds now.
    pub live_grants: usize,
}

/// An artifact the agent refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedArtifact {
    pub file: PathBuf,
    pub reason: String,
}

/// `push` and `revoke`: what was accepted and what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReport {
    pub id: String,
    pub kind: String,
    /// Authorizations the push withdrew (a revocation, a newer serial).
    pub withdrawn: Vec<String>,
    /// Processes killed under `on_revoke = "kill"`.
    pub killed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let push = Request::artifact(false, "b.json".into(), b"{\"x\":1}");
        let text = serde_json::to_string(&push).expect("json");
        assert!(text.contains("\"op\":\"push\""), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).expect("parse"), push);
        let status: Request = serde_json::from_str("{\"op\":\"status\"}").expect("status");
        assert_eq!(status, Request::Status);
        assert!(serde_json::from_str::<Request>("{\"op\":\"grant-everything\"}").is_err());
    }

    #[test]
    fn what_the_agent_sends_is_what_a_client_reads() {
        let push = PushReport {
            id: "ab".into(),
            kind: "bundle".into(),
            withdrawn: vec!["bundle x serial 1 (ops)".into()],
            killed: 2,
        };
        let sent: Response = Reply::ok("done", Some(Data::Pushed(push.clone())));
        let text = serde_json::to_string(&sent).expect("json");
        let read: Reply<PushReport> = serde_json::from_str(&text).expect("typed");
        assert_eq!(read.data, Some(push));
        let refused: Reply<Listing> =
            serde_json::from_str(&serde_json::to_string(&Response::error("no")).expect("json"))
                .expect("an error carries no data");
        assert!(!refused.ok && refused.data.is_none());
    }
}
