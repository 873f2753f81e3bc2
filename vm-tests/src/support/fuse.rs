//! A FUSE filesystem served by the runner, outside every scope: one read-only file whose
//! bytes a process chooses. It stands for sshfs, a FUSE daemon or a network filesystem:
//! content that can change without this kernel writing it, so the enforcer may not trust a
//! digest of it (`untrusted-filesystem`).
//!
//! Only what a lookup, an open, a read and an executable mapping need of the protocol
//! (include/uapi/linux/fuse.h, protocol 7.31, which every supported kernel speaks): the
//! kernel negotiates down to it. Everything else is answered ENOSYS, which the kernel
//! remembers and stops asking.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// Opcodes (`enum fuse_opcode`).
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const INTERRUPT: u32 = 36;
const BATCH_FORGET: u32 = 42;

/// `struct fuse_in_header` and `struct fuse_out_header`.
const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
/// The root directory's node id (`FUSE_ROOT_ID`) and the one file's.
const ROOT: u64 = 1;
const FILE: u64 = 2;
/// The minor version we speak.
const MINOR: u32 = 31;
/// Read buffer: at least `FUSE_MIN_READ_BUFFER` and a maximal write with its header.
const BUFFER: usize = 128 * 1024 + 4096;

/// A mounted FUSE filesystem and the thread that serves it; unmounted when dropped.
pub(crate) struct Served {
    dir: PathBuf,
    server: Option<JoinHandle<()>>,
}

impl Served {
    /// Mounts a filesystem at `dir` whose one file `name` holds `content`. Every user may
    /// read it (`allow_other`), as a user's sshfs mount with that option allows.
    pub(crate) fn mount(dir: &Path, name: &str, content: Vec<u8>) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/fuse")
            .unwrap_or_else(|e| panic!("open /dev/fuse: {e}"));
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions",
            device.as_raw_fd()
        );
        super::mounts::mount(
            "enforcer-test",
            dir,
            "fuse",
            libc::MS_NOSUID | libc::MS_NODEV,
            &options,
        );
        let name = name.as_bytes().to_vec();
        let server = std::thread::spawn(move || serve(device, &name, &content));
        Self {
            dir: dir.to_owned(),
            server: Some(server),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Detached: the kernel ends the connection, and the server's read fails with
        // ENODEV, once nothing uses the mount.
        super::mounts::detach(&self.dir);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Answers requests until the connection ends.
fn serve(mut device: File, name: &[u8], content: &[u8]) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match device.read(&mut buf) {
            Ok(n) => n,
            // A request the kernel took back before we read it.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => continue,
            // ENODEV: unmounted.
            Err(_) => return,
        };
        let Some(request) = buf.get(..n) else { return };
        if request.len() < IN_HEADER {
            return;
        }
        let opcode = u32_at(request, 4);
        let unique = u64_at(request, 8);
        let node = u64_at(request, 16);
        let body = &request[IN_HEADER..];
        let reply = match opcode {
            // No reply is expected to these.
            FORGET | BATCH_FORGET | INTERRUPT => continue,
            INIT => Ok(init(body)),
            LOOKUP if node == ROOT && body.split(|b| *b == 0).next() == Some(name) => {
                Ok(entry(content.len()))
            }
            LOOKUP => Err(libc::ENOENT),
            GETATTR if node == ROOT => Ok(attr_out(ROOT, libc::S_IFDIR | 0o755, 0)),
            GETATTR if node == FILE => Ok(attr_out(FILE, libc::S_IFREG | 0o755, content.len())),
            GETATTR => Err(libc::ENOENT),
            // File handle 0, no flags: the kernel caches pages as for any file.
            OPEN if node == FILE => Ok(vec![0; 16]),
            READ if node == FILE && body.len() >= 20 => {
                let offset = usize::try_from(u64_at(body, 8)).unwrap_or(usize::MAX);
                let size = u32_at(body, 16) as usize;
                let start = offset.min(content.len());
                let end = offset.saturating_add(size).min(content.len());
                Ok(content[start..end].to_vec())
            }
            RELEASE | FLUSH => Ok(Vec::new()),
            _ => Err(libc::ENOSYS),
        };
        let (error, payload) = match reply {
            Ok(payload) => (0, payload),
            Err(errno) => (-errno, Vec::new()),
        };
        let mut out = Vec::with_capacity(OUT_HEADER + payload.len());
        let len = u32::try_from(OUT_HEADER + payload.len()).expect("small reply");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&error.to_le_bytes());
        out.extend_from_slice(&unique.to_le_bytes());
        out.extend_from_slice(&payload);
        // A failed reply is the kernel giving up on the request: nothing to do.
        let _ = device.write_all(&out);
    }
}

/// `struct fuse_init_out` (64 bytes from minor 23 on).
fn init(body: &[u8]) -> Vec<u8> {
    let max_readahead = if body.len() >= 12 { u32_at(body, 8) } else { 0 };
    let mut out = vec![0u8; 64];
    put32(&mut out, 0, 7);
    put32(&mut out, 4, MINOR);
    put32(&mut out, 8, max_readahead);
    // flags 0; max_background 16, congestion_threshold 12.
    out[16..18].copy_from_slice(&16u16.to_le_bytes());
    out[18..20].copy_from_slice(&12u16.to_le_bytes());
    put32(&mut out, 20, 128 * 1024); // max_write
    put32(&mut out, 24, 1); // time_gran: nanoseconds
    out
}

/// `struct fuse_entry_out` for the file.
fn entry(size: usize) -> Vec<u8> {
    let mut out = vec![0u8; 40];
    out[0..8].copy_from_slice(&FILE.to_le_bytes());
    // generation 0; entry and attributes valid for an hour.
    out[16..24].copy_from_slice(&3600u64.to_le_bytes());
    out[24..32].copy_from_slice(&3600u64.to_le_bytes());
    out.extend(attr(FILE, libc::S_IFREG | 0o755, size));
    out
}

/// `struct fuse_attr_out`.
fn attr_out(node: u64, mode: u32, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; 16];
    out[0..8].copy_from_slice(&3600u64.to_le_bytes());
    out.extend(attr(node, mode, size));
    out
}

/// `struct fuse_attr` (88 bytes), owned by root.
fn attr(node: u64, mode: u32, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; 88];
    out[0..8].copy_from_slice(&node.to_le_bytes());
    out[8..16].copy_from_slice(&(size as u64).to_le_bytes());
    out[16..24].copy_from_slice(&(size as u64).div_ceil(512).to_le_bytes());
    put32(&mut out, 60, mode);
    put32(&mut out, 64, if mode & libc::S_IFDIR != 0 { 2 } else { 1 }); // nlink
    put32(&mut out, 80, 4096); // blksize
    out
}

fn put32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}
