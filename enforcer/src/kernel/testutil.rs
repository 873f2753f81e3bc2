//! What the kernel module's tests share: plain BPF maps of the agent's layout (root
//! only) and a private bpffs mount.

use std::path::Path;

use super::maps::PolicyMaps;

/// Unattached maps of the program's layout; `None` (the test is skipped) when not root.
pub(crate) fn maps() -> Option<PolicyMaps> {
    if !crate::testing::requires("root, to create BPF maps", crate::testing::is_root()) {
        return None;
    }
    Some(PolicyMaps::create().expect("root can create plain BPF maps"))
}

/// A private bpffs mount, unmounted when dropped; `None` when bpffs cannot be mounted.
pub(crate) fn bpffs_dir() -> Option<BpfFs> {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: NUL-terminated strings we own.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let why = (r != 0).then(std::io::Error::last_os_error);
    let what = format!("a private bpffs mount ({why:?})");
    crate::testing::requires(&what, why.is_none()).then_some(BpfFs(dir))
}

pub(crate) struct BpfFs(tempfile::TempDir);

impl BpfFs {
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.0.path().as_os_str().as_encoded_bytes()) {
            // SAFETY: a NUL-terminated path we mounted on.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
