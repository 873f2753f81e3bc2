//! The local control socket: how `enforcer push|revoke|status|list` talk to the running
//! agent.
//!
//! One request per connection: a JSON line in, a JSON line out. Only root may use it,
//! checked twice: the socket lives in a directory only root can enter (mode 0700) and is
//! itself mode 0600, and the agent refuses any peer whose credentials (SO_PEERCRED) are not
//! uid 0, so a socket exposed by a mistaken bind mount or chmod is still closed.

mod client;
pub mod protocol;
mod server;

use std::path::PathBuf;

use base64::Engine as _;

pub use client::request;
pub use protocol::{Reply, Request, Response};
pub use server::{Pending, bind, serve};

/// Largest request line accepted: an artifact at its size limit, base64-encoded, plus
/// the envelope of the request.
pub const MAX_REQUEST_BYTES: usize = crate::authz::artifact::MAX_ARTIFACT_BYTES / 3 * 4 + 4096;

/// Why talking to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "cannot reach the agent at {path}: {source} (is `enforcer run` / enforcer.service \
         running, and are you root?)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent at {path} sent an answer that is not valid: {message}")]
    BadAnswer { path: PathBuf, message: String },
    #[error("cannot create the control socket directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket: refusing to replace it")]
    NotASocket { path: PathBuf },
}

/// Decodes a pushed artifact, refusing one over the size limit.
pub fn decode_artifact(artifact: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(artifact)
        .map_err(|e| format!("the artifact is not valid base64: {e}"))?;
    let limit = crate::authz::artifact::MAX_ARTIFACT_BYTES;
    if bytes.len() > limit {
        return Err(format!(
            "the artifact is {} bytes, over the {limit}-byte limit",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_decode_and_respect_the_size_limit() {
        let Request::Revoke { artifact, .. } = Request::artifact(true, "r".into(), b"abc") else {
            panic!("revoke expected");
        };
        assert_eq!(decode_artifact(&artifact).expect("decode"), b"abc");
        assert!(decode_artifact("***").expect_err("bad").contains("base64"));
        let big = base64::engine::general_purpose::STANDARD.encode(vec![
            0u8;
            crate::authz::artifact::MAX_ARTIFACT_BYTES
                + 1
        ]);
        assert!(decode_artifact(&big).expect_err("big").contains("limit"));
    }
}
