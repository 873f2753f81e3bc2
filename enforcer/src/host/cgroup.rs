//! cgroup v2 facts the agent needs: a scope's id, and making sure it exists.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::authz::artifact::ScopePath;

/// Where cgroup2 is mounted on systemd hosts and in our VMs.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// Why a scope's cgroup could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot create cgroup {path} for scope {scope}: {source}")]
    Create {
        scope: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot stat cgroup {path} for scope {scope}: {source}")]
    Stat {
        scope: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a cgroup v2 directory (is cgroup2 mounted at {root}?)")]
    NotCgroup { path: PathBuf, root: PathBuf },
    #[error("scope {scope} is {depth} levels deep; the kernel program looks {max} levels down")]
    TooDeep {
        scope: String,
        depth: usize,
        max: u32,
    },
}

/// Where `scope` lives under the cgroup2 mount `root`.
#[must_use]
pub fn dir_of(root: &Path, scope: &ScopePath) -> PathBuf {
    let mut dir = root.to_path_buf();
    dir.extend(scope.components());
    dir
}

/// Returns the cgroup id of `scope` under `root`, creating the cgroup if it does not
/// exist yet: a scope must be governed from the moment its cgroup exists, not from the
/// moment someone notices it.
pub fn ensure_scope(root: &Path, scope: &ScopePath) -> Result<u64, CgroupError> {
    // The kernel program walks a bounded number of ancestor levels; a deeper scope would
    // silently not be governed, so it is refused.
    let depth = scope.components().count();
    if depth > enforcer_common::MAX_SCOPE_LEVEL as usize {
        return Err(CgroupError::TooDeep {
            scope: scope.to_string(),
            depth,
            max: enforcer_common::MAX_SCOPE_LEVEL,
        });
    }
    let path = dir_of(root, scope);
    if !path.exists() {
        std::fs::create_dir_all(&path).map_err(|source| CgroupError::Create {
            scope: scope.to_string(),
            path: path.clone(),
            source,
        })?;
        tracing::info!(scope = %scope, path = %path.display(), "created cgroup for governed scope");
    }
    id_of(&path, scope.as_str()).and_then(|id| {
        if path.join("cgroup.procs").exists() {
            Ok(id)
        } else {
            Err(CgroupError::NotCgroup {
                path,
                root: root.to_path_buf(),
            })
        }
    })
}

/// The cgroup id the kernel reports for `path`: on cgroup2 it is the directory's inode
/// number (kernfs node id), the value `bpf_get_current_cgroup_id` returns.
pub fn id_of(path: &Path, scope: &str) -> Result<u64, CgroupError> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Stat {
            scope: scope.to_owned(),
            path: path.to_path_buf(),
            source,
        })
}

/// Makes `cmd` start its child inside the cgroup at `dir` (before exec, so the exec itself
/// is already governed).
pub fn spawn_into(cmd: &mut std::process::Command, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::process::CommandExt as _;
    let procs = std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in cgroup path"))?;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // calls (open, write, close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writing process itself.
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if written == 1 { Ok(()) } else { Err(err) }
        });
    }
    Ok(())
}

/// Finds the cgroup directory whose id is `id`, searching at most `limit` directories
/// below `root` (for display only: the kernel keys scopes by id).
#[must_use]
pub fn find_path(root: &Path, id: u64, limit: usize) -> Option<PathBuf> {
    let mut queue = std::collections::VecDeque::from([root.to_path_buf()]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        seen += 1;
        if seen > limit {
            return None;
        }
        if std::fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            return Some(dir);
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            queue.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> ScopePath {
        s.parse().expect("valid scope")
    }

    #[test]
    fn scope_dirs_are_below_the_root() {
        assert_eq!(
            dir_of(Path::new("/sys/fs/cgroup"), &scope("/a.slice/b")),
            Path::new("/sys/fs/cgroup/a.slice/b")
        );
    }

    #[test]
    fn scopes_deeper_than_the_kernel_walks_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = scope(&"/x".repeat(enforcer_common::MAX_SCOPE_LEVEL as usize + 1));
        assert!(matches!(
            ensure_scope(dir.path(), &deep),
            Err(CgroupError::TooDeep { .. })
        ));
        // At the limit it is accepted as far as depth goes (a tempdir is no cgroup).
        let ok = scope(&"/x".repeat(enforcer_common::MAX_SCOPE_LEVEL as usize));
        assert!(matches!(
            ensure_scope(dir.path(), &ok),
            Err(CgroupError::NotCgroup { .. })
        ));
    }
}
