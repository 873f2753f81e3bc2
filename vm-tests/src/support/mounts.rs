//! Mounts the runner makes outside every scope, as an operator or a container runtime
//! would: the scope reaches them but cannot make them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// `mount(2)` of `fstype` from `source` on `target` with `flags` and `options`; a failure
/// ends the scenario.
#[track_caller]
pub(crate) fn mount(source: &str, target: &Path, fstype: &str, flags: u64, options: &str) {
    let (c_source, c_target, c_fstype, c_options) = (
        c_string(source.as_bytes()),
        c_string(target.as_os_str().as_bytes()),
        c_string(fstype.as_bytes()),
        c_string(options.as_bytes()),
    );
    // SAFETY: valid C strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_fstype.as_ptr(),
            flags,
            c_options.as_ptr().cast(),
        )
    };
    assert!(
        r == 0,
        "mount {fstype} at {} ({options}): {}",
        target.display(),
        std::io::Error::last_os_error()
    );
}

/// Unmounts `target` lazily: it goes once nothing uses it, so a straggling process cannot
/// keep a scenario from ending.
pub(crate) fn detach(target: &Path) {
    let target = c_string(target.as_os_str().as_bytes());
    // SAFETY: a valid C string for the duration of the call.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

fn c_string(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("no NUL in a test's mount argument")
}

/// An overlay under a directory (`lower`, `upper`, `work` and the mount point `merged`),
/// as a container runtime mounts a root file system, with an upper layer everyone may
/// create files in, as a rootless container's user can; unmounted and removed when dropped.
pub(crate) struct Overlay(PathBuf);

impl Overlay {
    /// Mounts it under `dir`, replacing what an earlier run left there; the `overlay`
    /// module must be in the kernel.
    #[track_caller]
    pub(crate) fn mount(dir: &Path) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let overlay = Self(dir.to_owned());
        let dirs = [
            ("lower", 0o755),
            ("upper", 0o777),
            ("work", 0o700),
            ("merged", 0o755),
        ];
        for (name, mode) in dirs {
            let path = dir.join(name);
            std::fs::create_dir(&path)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                })
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        }
        let d = dir.display();
        mount(
            "overlay",
            &dir.join("merged"),
            "overlay",
            0,
            &format!("lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work"),
        );
        overlay
    }

    /// The mount point, where the overlay's files are seen.
    pub(crate) fn merged(&self) -> String {
        self.0.join("merged").display().to_string()
    }

    /// The upper layer, where new files of the overlay go.
    pub(crate) fn upper(&self) -> String {
        self.0.join("upper").display().to_string()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        detach(&self.0.join("merged"));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
