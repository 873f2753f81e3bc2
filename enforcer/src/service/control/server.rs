//! The agent's side: a root-only listener whose requests go to the agent's main loop,
//! which owns the agent, and whose answers come back on the same connection.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::protocol::{Request, Response};
use super::{ControlError, MAX_REQUEST_BYTES};

/// A request waiting for the agent, and where its answer goes.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Creates the socket's directory (mode 0700) and binds the socket (mode 0600), replacing
/// a stale socket left by an earlier run.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ControlError> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        crate::fsutil::create_private_dir(dir).map_err(|source| ControlError::Dir {
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

/// Accepts control connections; each request goes to the main loop, which owns the
/// agent, and its answer comes back here.
pub async fn serve(listener: tokio::net::UnixListener, tx: mpsc::Sender<Pending>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning on the error.
                tracing::warn!("control socket: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, tx).await {
                tracing::warn!("control connection: {e}");
            }
        });
    }
}

async fn serve_connection(
    stream: tokio::net::UnixStream,
    tx: mpsc::Sender<Pending>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
    let (read, mut write) = stream.into_split();
    let answer = async {
        // Root only: the socket's mode is the first check, the peer's credentials the
        // second (a chmod or bind mount mistake must not open it).
        let uid = write.as_ref().peer_cred().map(|c| c.uid()).ok();
        if uid != Some(0) {
            tracing::warn!(?uid, "control request refused: not root");
            return Response::error(format!(
                "permission denied: only root may control the agent (peer uid {})",
                uid.map_or_else(|| "unknown".into(), |u| u.to_string())
            ));
        }
        let mut line = String::new();
        let limited = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
        let mut limited = limited;
        match tokio::time::timeout(Duration::from_secs(10), limited.read_line(&mut line)).await {
            Err(_) => return Response::error("no request within 10 s"),
            Ok(Err(e)) => return Response::error(format!("cannot read the request: {e}")),
            Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => {
                return Response::error(format!("request over {} bytes", MAX_REQUEST_BYTES));
            }
            Ok(Ok(_)) => {}
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => return Response::error(format!("not a valid request: {e}")),
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        if tx.send((request, reply_tx)).await.is_err() {
            return Response::error("the agent is stopping");
        }
        reply_rx
            .await
            .unwrap_or_else(|_| Response::error("the agent is stopping"))
    }
    .await;
    let mut bytes = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

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
