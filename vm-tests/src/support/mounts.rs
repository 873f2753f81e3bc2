//! Mounts the runner makes outside every scope, as an operator or a container runtime
//! would: the scope reaches them but cannot make them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

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
