//! One helper for each filesystem habit the agent relies on. Durability bugs hide in
//! copies, so every atomic replace, every new file that must survive a crash and every
//! private directory goes through here.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The directory `path` lives in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the directory entries of `dir` durable: a created or renamed name survives a
/// crash only once its directory is synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory is
/// written and fsynced, renamed over `path`, and the directory fsynced so the rename
/// itself survives a crash. Readers see the old content or the new, never a part.
pub fn replace_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, Sync::Now)
}

/// Replaces `path` with `bytes` as [`replace_atomically`] does, but syncs nothing: readers
/// still see the old content or the new, never a part, but a crash may lose the new file
/// (or leave it empty) until [`sync_filesystem`] has run. For files written in batches
/// that are made durable together, and that can be rebuilt when a crash damaged them.
pub fn replace_unsynced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, Sync::Later)
}

/// Makes every write to the filesystem that holds `dir` durable (`syncfs(2)`): one call
/// for a batch of [`replace_unsynced`] files, their names included.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let dir = File::open(dir)?;
    // SAFETY: syncfs takes a file descriptor, valid while `dir` lives.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// When a replace is made durable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    Now,
    Later,
}

fn replace(path: &Path, bytes: &[u8], mode: u32, sync: Sync) -> io::Result<()> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A leftover from a crash of this same pid would keep its old mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let result = write_new(&tmp, bytes, mode, sync).and_then(|()| std::fs::rename(&tmp, path));
    let result = match sync {
        Sync::Now => result.and_then(|()| sync_dir(dir)),
        Sync::Later => result,
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `path`, which must not exist, with `bytes` and `mode`, and makes both the
/// content and the name durable before returning.
pub fn create_new_synced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_new(path, bytes, mode, Sync::Now)?;
    sync_dir(parent_of(path))
}

/// Creates `path` exclusively, writes `bytes` and fsyncs the file unless told to wait.
fn write_new(path: &Path, bytes: &[u8], mode: u32, sync: Sync) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    match sync {
        Sync::Now => file.sync_all(),
        Sync::Later => Ok(()),
    }
}

/// Creates `dir` and any missing parents with `mode`; an existing directory is left as
/// it is.
pub fn create_dir(dir: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(dir)
}

/// Creates `dir` and any missing parents with `mode`, and makes each new directory's
/// name durable by fsyncing the directory it was made in: a file fsynced inside a new
/// directory is still lost in a crash if the directory's own entry is.
pub fn create_dir_durably(dir: &Path, mode: u32) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    create_dir(dir, mode)?;
    for made in missing.iter().rev() {
        sync_dir(parent_of(made))?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents) readable by its owner only (0700).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    create_dir(dir, 0o700)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn replace_atomically_replaces_whole_files_with_the_given_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        replace_atomically(&path, b"one", 0o600).expect("first");
        replace_atomically(&path, b"two", 0o600).expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(names.len(), 1, "no temporary left behind: {names:?}");
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        create_new_synced(&path, b"secret", 0o600).expect("create");
        assert_eq!(mode_of(&path), 0o600);
        let err = create_new_synced(&path, b"other", 0o600).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            b"secret",
            "nothing lost"
        );
    }

    #[test]
    fn create_dir_durably_makes_every_missing_parent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/c");
        create_dir_durably(&path, 0o750).expect("create");
        create_dir_durably(&path, 0o750).expect("exists already");
        assert!(path.is_dir());
        assert_eq!(mode_of(&dir.path().join("a")), 0o750);
    }

    #[test]
    fn private_dirs_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b");
        create_private_dir(&path).expect("create");
        create_private_dir(&path).expect("exists already");
        assert_eq!(mode_of(&path), 0o700);
    }
}
