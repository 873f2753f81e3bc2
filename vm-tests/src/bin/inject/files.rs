//! Changing the content of a granted file while, or before, it is mapped executable: the
//! mapping then runs page-cache pages that no longer hold the granted content.

use std::os::fd::AsRawFd as _;

use vm_tests::technique;

use crate::sys;

const RX: libc::c_int = libc::PROT_READ | libc::PROT_EXEC;

/// Maps the whole of `fd` (`len` bytes) executable; a refusal is the step "map executable".
fn map_exec(fd: &impl std::os::fd::AsRawFd, len: usize, flags: libc::c_int) -> *mut u8 {
    let p = sys::map(len, RX, flags, fd.as_raw_fd(), "map executable");
    println!("mapped {len} bytes PROT_READ|PROT_EXEC at {p:p}");
    p
}

/// Opens `path` for reading and writing; a refusal is the step "open for writing".
fn open_rw(path: &str) -> std::os::fd::OwnedFd {
    let fd = sys::open(path, libc::O_RDWR, 0, "open for writing");
    println!("opened {path} for writing");
    fd
}

/// Writes `CODE` at offset 0 through `fd`; a refusal is the step "write code".
fn write_code(fd: &impl std::os::fd::AsRawFd) {
    sys::pwrite(fd.as_raw_fd(), &technique::CODE, 0, "write code");
    println!("wrote CODE at offset 0");
}

/// Runs the mapping at `at`, which now holds `CODE`.
fn run(at: *mut u8) -> ! {
    println!("calling the mapping at {at:p}");
    // SAFETY: `at` is an executable mapping whose first bytes are CODE.
    unsafe { technique::run_code(at) }
}

/// Maps a copy of `LIB` executable (`MAP_PRIVATE`), then opens the copy for writing and
/// writes `CODE` over its start.
///
/// Kernel path: `do_dentry_open` → `security_file_open` with `FMODE_WRITE` on an inode
/// that is already mapped executable; then `pwrite` into its page cache.
/// Injection: pages of a `MAP_PRIVATE` mapping that were never copied on write are the
/// page-cache pages, so the mapping runs what the write put there.
pub(crate) fn write_after_map(lib: &str, dir: &str) -> ! {
    sys::work_dir(dir);
    let (path, len) = sys::copy_lib(lib, dir, "write-after-map");
    map_then_write(&path, &path, len)
}

/// Maps the first `len` bytes of the file at `mapped` executable (`MAP_PRIVATE`), then
/// opens `written` (the same file by another path, or by the same) for writing, writes
/// `CODE` over its start and runs the mapping.
fn map_then_write(mapped: &str, written: &str, len: usize) -> ! {
    let ro = sys::open(mapped, libc::O_RDONLY, 0, "open");
    let at = map_exec(&ro, len, libc::MAP_PRIVATE);
    let rw = open_rw(written);
    write_code(&rw);
    run(at)
}

/// Copies `LIB` into `UPPER`, the upper layer of the overlay mounted at `MERGED`, maps the
/// copy executable through the overlay, then opens it by its path in the upper layer for
/// writing and writes `CODE` over its start.
///
/// Kernel path: `ovl_mmap` hands the mapping to the layer's own file (6.1: the one in the
/// overlay file's `private_data`; 6.12+: `backing_file_mmap`, after
/// `security_mmap_backing_file`); the open is `do_dentry_open` → `security_file_open` on
/// the layer's inode, not the overlay's.
/// Injection: the mapping runs the layer file's page cache, which the write changed.
pub(crate) fn write_layer_after_map(lib: &str, merged: &str, upper: &str) -> ! {
    let name = format!("layer-{}", std::process::id());
    let (layer, len) = sys::copy_lib(lib, upper, &name);
    map_then_write(&format!("{merged}/{name}"), &layer, len)
}

/// Opens a copy of `LIB` for writing and keeps it open, then maps it executable through a
/// second, read-only open and writes `CODE` through the first.
///
/// Kernel path: `do_mmap` → `security_mmap_file` with `PROT_EXEC` on an inode that has a
/// writer (`i_writecount` > 0).
/// Injection: whatever the content was when it was mapped, the writer changes the
/// page-cache pages the mapping runs.
pub(crate) fn write_before_map(lib: &str, dir: &str) -> ! {
    sys::work_dir(dir);
    let (path, len) = sys::copy_lib(lib, dir, "write-before-map");
    let rw = open_rw(&path);
    let ro = sys::open(&path, libc::O_RDONLY, 0, "open");
    let at = map_exec(&ro, len, libc::MAP_PRIVATE);
    write_code(&rw);
    run(at)
}

/// Maps a copy of `LIB` shared and writable and closes that descriptor, then maps the
/// copy executable through a read-only open and copies `CODE` through the writable
/// mapping.
///
/// Kernel path: `security_mmap_file` with `PROT_EXEC` on an inode whose only writer is a
/// mapping: no writable descriptor is open, but the `VM_SHARED|VM_WRITE` vma keeps its
/// writable `struct file` (and `mapping->i_mmap_writable` counts it).
/// Injection: stores through the shared mapping land in the page cache that the
/// executable mapping runs.
pub(crate) fn shared_writable_map(lib: &str, dir: &str) -> ! {
    sys::work_dir(dir);
    let (path, len) = sys::copy_lib(lib, dir, "shared-writable-map");
    let rw = open_rw(&path);
    let writable = sys::map(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        rw.as_raw_fd(),
        "map shared writable",
    );
    drop(rw);
    println!("mapped {len} bytes PROT_READ|PROT_WRITE MAP_SHARED at {writable:p}, closed its fd");
    let ro = sys::open(&path, libc::O_RDONLY, 0, "open");
    let at = map_exec(&ro, len, libc::MAP_PRIVATE);
    // SAFETY: `writable` is a writable mapping of `len` >= one page bytes.
    unsafe { sys::put_code(writable) };
    println!("copied CODE through the writable mapping");
    run(at)
}

/// Maps a copy of `LIB` executable (`MAP_SHARED`) and closes the descriptor, then
/// truncates the copy to nothing and writes it again: `CODE` followed by zeros, to the
/// old length.
///
/// Kernel path: `do_sys_truncate` → `vfs_truncate` → `security_path_truncate` (and
/// `security_inode_setattr` with `ATTR_SIZE`) on an inode mapped executable.
/// Injection: truncation drops the page cache and unmaps it from the mapping; the refill
/// creates new page-cache pages, and the mapping, which survives the truncation, faults
/// them in.
pub(crate) fn truncate_refill(lib: &str, dir: &str) -> ! {
    sys::work_dir(dir);
    let (path, len) = sys::copy_lib(lib, dir, "truncate-refill");
    let ro = sys::open(&path, libc::O_RDONLY, 0, "open");
    let at = map_exec(&ro, len, libc::MAP_SHARED);
    drop(ro);
    let c = sys::cstr(&path);
    // SAFETY: `c` is a valid C string for the duration of the call.
    sys::check(unsafe { libc::truncate(c.as_ptr(), 0) }, "truncate");
    println!("truncated {path} to 0 bytes");
    let wo = sys::open(&path, libc::O_WRONLY, 0, "open for writing");
    println!("opened {path} for writing");
    let mut content = vec![0u8; len];
    content[..technique::CODE.len()].copy_from_slice(&technique::CODE);
    sys::pwrite(wo.as_raw_fd(), &content, 0, "write code");
    drop(wo);
    println!("wrote CODE and zeros up to {len} bytes");
    run(at)
}

/// Opens a copy of `LIB` for writing, unlinks it, writes `CODE` over its start and maps
/// it executable (`MAP_SHARED`) from that same descriptor.
///
/// Kernel path: `security_mmap_file` with `PROT_EXEC` on a writable `struct file` whose
/// inode has no name left (`i_nlink` 0).
/// Injection: the content was changed before the mapping, through a file nobody can
/// reach by path; only the descriptor's current content can tell.
pub(crate) fn deleted_map(lib: &str, dir: &str) -> ! {
    sys::work_dir(dir);
    let (path, len) = sys::copy_lib(lib, dir, "deleted-map");
    let rw = open_rw(&path);
    let c = sys::cstr(&path);
    // SAFETY: `c` is a valid C string for the duration of the call.
    sys::check(unsafe { libc::unlink(c.as_ptr()) }, "unlink");
    println!("unlinked {path}");
    write_code(&rw);
    let at = map_exec(&rw, len, libc::MAP_SHARED);
    run(at)
}

/// Maps `FILE`, whose content is `CODE` served by a process (FUSE), executable.
///
/// Kernel path: `do_mmap` → `security_mmap_file` with `PROT_EXEC` on a file of a FUSE
/// mount; the pages come from `fuse_read_folio` → the server's READ reply.
/// Injection: the server picks the bytes at every read, and may drop the page cache
/// (`FUSE_NOTIFY_INVAL_INODE`) to be asked again: the bytes a digest was taken of need
/// not be the bytes that run, so no digest of such a file can be trusted.
pub(crate) fn map_served(file: &str) -> ! {
    let fd = sys::open(file, libc::O_RDONLY, 0, "open");
    let at = map_exec(&fd, technique::CODE.len(), libc::MAP_PRIVATE);
    run(at)
}

/// Opens a copy of `LIB` with `O_DIRECT`; the open is the technique's end (exit
/// `WORKED`).
///
/// Kernel path: `do_dentry_open` → `security_file_open` of a file with `O_DIRECT`.
/// Injection: an `O_DIRECT` read pins the user pages it fills and fills them after the
/// syscall's checks, from the device or page cache, so a read into executable memory
/// (or a racing write to a mapped file) changes code behind any check. That race is not
/// reproducible on demand, so the refused open is what a test asserts on.
pub(crate) fn o_direct(lib: &str, dir: &str) {
    sys::work_dir(dir);
    let (path, _) = sys::copy_lib(lib, dir, "o-direct");
    let c = sys::cstr(&path);
    // SAFETY: `c` is a valid C string for the duration of the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    if fd < 0 && sys::errno() == libc::EINVAL {
        // Reported as the refusal it is: the runner knows which kernels' tmpfs lack it.
        println!("the filesystem of {dir} has no O_DIRECT (tmpfs has it from Linux 6.6)");
    }
    drop(sys::own(sys::check(fd, "open O_DIRECT")));
    println!("opened {path} with O_DIRECT");
}
