//! The local control socket: how `enforcer push|revoke|status|list` talk to the running
//! agent.
//!
//! One request per connection: a JSON line in, a JSON line out. Only root may use it,
//! checked twice: the socket lives in a directory only root can enter (mode 0700) and is
//! itself mode 0600, and the agent refuses any peer whose credentials (SO_PEERCRED) are not
//! uid 0, so a socket exposed by a mistaken bind mount or chmod is still closed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Largest request line accepted: an artifact at its size limit, base64-encoded, plus
/// the envelope of the request.
pub const MAX_REQUEST_BYTES: usize = crate::artifact::MAX_ARTIFACT_BYTES / 3 * 4 + 4096;

/// How long a client waits for the agent; applying 100k grants takes well under this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// What is enforced and why.
    Status,
    /// The authorizations in force, and the artifacts refused.
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

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// For a person: what happened, or what is wrong.
    pub message: String,
    /// For programs: the details (status, list).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Response {
    #[must_use]
    pub fn ok(message: impl Into<String>, data: serde_json::Value) -> Self {
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
            data: serde_json::Value::Null,
        }
    }
}

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

/// Sends one request to the agent listening on `socket` and returns its answer.
pub fn request(socket: &Path, request: &Request) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.into(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: socket.into(),
        source,
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ControlError::BadAnswer {
        path: socket.into(),
        message: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(ControlError::BadAnswer {
            path: socket.into(),
            message: "the agent closed the connection without answering".into(),
        });
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::BadAnswer {
        path: socket.into(),
        message: e.to_string(),
    })
}

/// Creates the socket's directory (mode 0700) and binds the socket (mode 0600), replacing
/// a stale socket left by an earlier run.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ControlError> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ControlError::Dir {
                path: dir.into(),
                source,
            })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => return Err(ControlError::NotASocket { path: path.into() }),
        Err(_) => {}
    }
    let bind_err = |source| ControlError::Bind {
        path: path.into(),
        source,
    };
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Decodes a pushed artifact, refusing one over the size limit.
pub fn decode_artifact(artifact: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(artifact)
        .map_err(|e| format!("the artifact is not valid base64: {e}"))?;
    let limit = crate::artifact::MAX_ARTIFACT_BYTES;
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
    fn artifacts_decode_and_respect_the_size_limit() {
        let Request::Revoke { artifact, .. } = Request::artifact(true, "r".into(), b"abc") else {
            panic!("revoke expected");
        };
        assert_eq!(decode_artifact(&artifact).expect("decode"), b"abc");
        assert!(decode_artifact("***").expect_err("bad").contains("base64"));
        let big = base64::engine::general_purpose::STANDARD.encode(vec![
            0u8;
            crate::artifact::MAX_ARTIFACT_BYTES
                + 1
        ]);
        assert!(decode_artifact(&big).expect_err("big").contains("limit"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn socket_is_private_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/control.sock");
        let first = bind(&path).expect("bind");
        drop(first);
        let _second = bind(&path).expect("stale socket replaced");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().expect("dir"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").expect("write");
        assert!(matches!(bind(&plain), Err(ControlError::NotASocket { .. })));
    }
}
