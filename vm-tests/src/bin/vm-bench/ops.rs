//! System calls on the containment hooks' hot paths, timed in a loop inside the scope.
//! What the hooks cost per call is the same loop's time with the enforcer loaded minus its
//! time without, within one round.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::time::Instant;

/// The operations, each with the hooks it runs.
pub(crate) const OPS: [(&str, &str); 6] = [
    ("open-close", "file_open"),
    ("read", "file_permission (mask without MAY_WRITE)"),
    ("write", "file_permission (MAY_WRITE on a regular file)"),
    ("mmap-anon", "mmap_file, mmap_addr"),
    (
        "mmap-exec",
        "mmap_file on a granted library (guard, cached digest), file_free_security",
    ),
    (
        "create-unlink",
        "inode_create, file_open, inode_unlink (writable-root walk, 6 levels)",
    ),
];

/// A library every scope of the bench grants (with_libraries of the probe).
const LIBRARY: &str = "/lib/x86_64-linux-gnu/libc.so.6";

fn open(path: &Path, flags: libc::c_int) -> Result<OwnedFd, String> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return Err(format!(
            "open {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor the kernel just returned to us.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    }
}

/// Runs `op` `count` times; returns the loop's nanoseconds.
pub(crate) fn run(op: &str, count: u64, scratch: &Path) -> Result<u64, String> {
    let deep = scratch.join("deep/a/b/c");
    std::fs::create_dir_all(&deep).map_err(|e| format!("{}: {e}", deep.display()))?;
    let data = deep.join("data");
    std::fs::write(&data, [0u8; 4096]).map_err(|e| format!("{}: {e}", data.display()))?;
    let file = open(&data, libc::O_RDWR)?;
    let library = open(Path::new(LIBRARY), libc::O_RDONLY)?;
    let fresh = deep.join("fresh");
    let fresh_c =
        std::ffi::CString::new(fresh.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    let started = Instant::now();
    for _ in 0..count {
        // SAFETY: plain syscalls on our own descriptors, buffer and mappings.
        unsafe {
            match op {
                "open-close" => drop(open(&data, libc::O_RDONLY)?),
                "read" => check(
                    libc::pread(file.as_raw_fd(), byte.as_mut_ptr().cast(), 1, 0) == 1,
                    "pread",
                )?,
                "write" => check(
                    libc::pwrite(file.as_raw_fd(), byte.as_ptr().cast(), 1, 0) == 1,
                    "pwrite",
                )?,
                "mmap-anon" => {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    check(p != libc::MAP_FAILED, "mmap")?;
                    libc::munmap(p, 4096);
                }
                "mmap-exec" => {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                        libc::MAP_PRIVATE,
                        library.as_raw_fd(),
                        0,
                    );
                    check(p != libc::MAP_FAILED, "mmap PROT_EXEC")?;
                    libc::munmap(p, 4096);
                }
                "create-unlink" => {
                    drop(open(
                        &fresh,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    )?);
                    check(libc::unlink(fresh_c.as_ptr()) == 0, "unlink")?;
                }
                _ => return Err(format!("unknown op {op}")),
            }
        }
    }
    Ok(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))
}
