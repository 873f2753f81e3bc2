//! Notices changes in the artifact directories (inotify), so a bundle or revocation
//! dropped there takes effect without a restart.
//!
//! A notification only says "look again": the agent then re-reads every artifact, so a
//! missed or coalesced event costs nothing but time, and the periodic resync bounds that.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;

/// Events that can change what a directory's artifacts say.
const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE
    | libc::IN_CREATE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Why the directories cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub(super) struct WatchError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// An inotify instance watching some directories, or none (then only the periodic resync
/// notices changes).
pub(super) struct Watcher {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl Watcher {
    /// Watches `dirs`; when that fails, says so and watches nothing. inotify instances are
    /// counted per user and capped (`fs.inotify.max_user_instances`): anything running as
    /// root can use them all up, and that must not stop the agent, which reads the
    /// directories again every resync anyway.
    pub(super) fn or_poll<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Self {
        Self::new(dirs).unwrap_or_else(|e| {
            tracing::warn!("{e}; artifact changes are picked up at the next periodic resync");
            Self { fd: None }
        })
    }

    /// Watches each directory of `dirs` (files and missing paths are skipped: a missing
    /// directory is reported by the artifact loader, and the resync picks it up later).
    pub(super) fn new<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Result<Self, WatchError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WatchError { path, source }
        };
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(err(Path::new("(inotify)"))(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        for dir in dirs.into_iter().filter(|d| d.is_dir()) {
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|e| err(dir)(std::io::Error::other(e)))?;
            // SAFETY: valid fd and NUL-terminated path.
            if unsafe { libc::inotify_add_watch(owned.as_raw_fd(), c.as_ptr(), MASK) } < 0 {
                return Err(err(dir)(std::io::Error::last_os_error()));
            }
            tracing::debug!(dir = %dir.display(), "watching for artifacts");
        }
        // SAFETY: the descriptor is owned by the value that moves into the AsyncFd, so it
        // stays open for as long as it is registered.
        let fd = unsafe { AsyncFd::register(owned) }
            .map_err(|e| err(Path::new("(inotify)"))(std::io::Error::other(e.to_string())))?;
        Ok(Self { fd: Some(fd) })
    }

    /// Waits until something changed in a watched directory, then drains the queue.
    pub(super) async fn changed(&self) -> std::io::Result<()> {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        loop {
            let mut guard = fd.readable().await?;
            let mut buf = [0u8; 4096];
            let mut any = false;
            loop {
                // SAFETY: reading into a local buffer of the stated length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    any = true;
                    continue;
                }
                let e = std::io::Error::last_os_error();
                if n < 0 && e.kind() != std::io::ErrorKind::WouldBlock {
                    return Err(e);
                }
                break;
            }
            guard.clear_ready();
            if any {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn a_new_file_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watcher = Watcher::new([dir.path()]).expect("watch");
        let quiet = tokio::time::timeout(Duration::from_millis(100), watcher.changed()).await;
        assert!(quiet.is_err(), "nothing changed yet");
        std::fs::write(dir.path().join("b.json"), b"{}").expect("write");
        tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .expect("noticed within 5 s")
            .expect("read");
    }
}
