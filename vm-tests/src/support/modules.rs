//! Kernel modules the scenarios need, from the booted kernel's own Debian package: xtask
//! extracts them (`TEST_MODULES` in xtask's kernels.rs) into [`MODULE_DIR`]. The runner
//! loads them from outside every scope.

use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use super::Unavailable;

/// Where the initramfs holds the modules.
pub(crate) const MODULE_DIR: &str = "/usr/lib/enforcer-tests/modules";

/// `MODULE_INIT_COMPRESSED_FILE` (include/uapi/linux/module.h): the kernel decompresses.
const MODULE_INIT_COMPRESSED_FILE: libc::c_long = 4;

/// The packaged file of module `name` (e.g. `overlay`), when the kernel's package has it.
pub(crate) fn file(name: &str) -> Option<PathBuf> {
    let prefix = format!("{name}.ko");
    std::fs::read_dir(MODULE_DIR)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
}

/// The packaged file of module `name`, which the scenario needs. When the kernel's package
/// has none (Debian drops a kernel's module packages from the archive before its image: 6.19
/// as of this writing), the scenario is skipped as [`Unavailable`], with the reason on its
/// SKIP line: a module built for another kernel cannot stand in for it.
#[track_caller]
pub(crate) fn required(name: &str) -> PathBuf {
    file(name).unwrap_or_else(|| {
        std::panic::panic_any(Unavailable(format!(
            "module {name} is not among the modules of this kernel's package in {MODULE_DIR} \
             (the kernel cache's `package` marker lists what xtask found)"
        )))
    })
}

/// Makes sure module `name` is in the kernel: built in, loaded already, or loaded now from
/// its packaged file.
#[track_caller]
pub(crate) fn load(name: &str) {
    if Path::new("/sys/module")
        .join(name.replace('-', "_"))
        .exists()
    {
        return;
    }
    let path = required(name);
    let file =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let compressed = [".xz", ".zst", ".gz"]
        .iter()
        .any(|ext| path.to_string_lossy().ends_with(ext));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: plain syscall on a descriptor we own, with an empty parameter string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            libc::c_long::from(file.as_raw_fd()),
            c"".as_ptr(),
            flags,
        )
    };
    let err = std::io::Error::last_os_error();
    assert!(
        r == 0 || err.raw_os_error() == Some(libc::EEXIST),
        "finit_module {}: {err}",
        path.display()
    );
}
