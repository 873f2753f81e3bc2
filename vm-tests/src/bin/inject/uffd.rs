//! Filling a hole of an executable file mapping with userfaultfd: the page the mapping
//! runs comes from the fault handler, not from the file.

use std::os::fd::{AsRawFd as _, RawFd};

use vm_tests::technique;

use crate::sys::{self, PAGE};

// From include/uapi/linux/userfaultfd.h.

/// Handle faults raised in user mode only: the mode that needs no privilege whatever
/// `vm.unprivileged_userfaultfd` says.
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_API: u64 = 0xaa;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// `_IOWR(0xAA, nr, size)`: direction 3 (read | write) in bits 30-31, size in 16-29.
const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xaa << 8) | nr
}

const UFFDIO_API: u64 = iowr(0x3f, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = iowr(0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_COPY: u64 = iowr(0x03, std::mem::size_of::<UffdioCopy>());

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_register` (its `struct uffdio_range` inlined).
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `struct uffd_msg` for `UFFD_EVENT_PAGEFAULT` (packed in the header; every field here
/// is naturally aligned, so `repr(C)` gives the same layout).
#[repr(C)]
#[derive(Default)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    flags: u64,
    address: u64,
    /// `feat.ptid` and the padding of the 24-byte union.
    _feat: u64,
}

const _: () = {
    assert!(std::mem::size_of::<UffdioApi>() == 24);
    assert!(std::mem::size_of::<UffdioRegister>() == 32);
    assert!(std::mem::size_of::<UffdioCopy>() == 40);
    assert!(std::mem::size_of::<UffdMsg>() == 32);
    assert!(UFFDIO_API == 0xc018_aa3f);
    assert!(UFFDIO_REGISTER == 0xc020_aa00);
    assert!(UFFDIO_COPY == 0xc028_aa03);
};

/// A userfaultfd ioctl whose refusal is reported as `step`.
fn ioctl<T>(uffd: RawFd, request: u64, arg: &mut T, step: &str) {
    // SAFETY: `arg` is the struct `request` reads and writes.
    sys::check(
        unsafe { libc::ioctl(uffd, request, std::ptr::from_mut(arg)) },
        step,
    );
}

/// Maps a file of `DIR` that is all hole, executable (`MAP_PRIVATE`), registers its first
/// page with a userfaultfd and calls it; a handler thread answers the fault by copying a
/// page holding `CODE` into place.
///
/// Kernel path: `userfaultfd(2)`, whose only LSM hook is the anonymous inode's
/// `security_inode_init_security_anon`; `UFFDIO_REGISTER` and `UFFDIO_COPY` through
/// `security_file_ioctl`; the instruction fetch faults in `shmem_fault`, which
/// hands a missing page to `handle_userfault`, and `mfill_atomic_pte_copy` installs an
/// anonymous page with the vma's protection (executable).
/// Injection: the file holds only holes, so no content of it ever runs; the page that
/// runs is anonymous memory written by the process. `DIR` must be on tmpfs: userfaultfd
/// registers only anonymous, shmem and hugetlb vmas.
pub(crate) fn userfaultfd(dir: &str) -> ! {
    // SAFETY: plain syscall.
    let uffd =
        unsafe { libc::syscall(libc::SYS_userfaultfd, UFFD_USER_MODE_ONLY | libc::O_CLOEXEC) };
    let uffd = RawFd::try_from(sys::check(uffd, "userfaultfd"))
        .unwrap_or_else(|_| technique::broken("userfaultfd returned no descriptor"));
    let uffd = sys::own(uffd);
    let raw = uffd.as_raw_fd();
    let mut api = UffdioApi {
        api: UFFD_API,
        ..UffdioApi::default()
    };
    ioctl(raw, UFFDIO_API, &mut api, "UFFDIO_API");
    println!("userfaultfd {raw}, features {:#x}", api.features);

    sys::work_dir(dir);
    sys::require_tmpfs(
        dir,
        "userfaultfd registers only anonymous, shmem and hugetlb memory",
    );
    let path = format!("{dir}/sparse");
    let _ = std::fs::remove_file(&path);
    let file = sys::open(
        &path,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600,
        "create",
    );
    let len = libc::off_t::try_from(2 * PAGE).unwrap_or_default();
    // SAFETY: plain syscall on our descriptor.
    sys::check(
        unsafe { libc::ftruncate(file.as_raw_fd(), len) },
        "ftruncate",
    );
    println!("{path}: {len} bytes of hole");
    let at = sys::map(
        2 * PAGE,
        libc::PROT_READ | libc::PROT_EXEC,
        libc::MAP_PRIVATE,
        file.as_raw_fd(),
        "map executable",
    );
    let mut register = UffdioRegister {
        start: at.addr() as u64,
        len: PAGE as u64,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    ioctl(raw, UFFDIO_REGISTER, &mut register, "UFFDIO_REGISTER");
    println!("registered the first page of {at:p} for missing faults");

    std::thread::spawn(move || handle_fault(raw));
    println!("calling {at:p}");
    // SAFETY: `at` is executable; its first page will hold CODE once the handler copied it.
    unsafe { technique::run_code(at) }
}

/// Reads one fault from `uffd` and answers it with a page holding `CODE`.
fn handle_fault(uffd: RawFd) {
    let mut msg = UffdMsg::default();
    let size = std::mem::size_of::<UffdMsg>();
    // SAFETY: `msg` is valid for `size` bytes.
    let n = sys::check(
        unsafe { libc::read(uffd, std::ptr::from_mut(&mut msg).cast(), size) },
        "read fault",
    );
    if n.unsigned_abs() != size || msg.event != UFFD_EVENT_PAGEFAULT {
        technique::broken(&format!("read fault: {n} bytes, event {:#x}", msg.event));
    }
    println!("fault at {:#x} (flags {:#x})", msg.address, msg.flags);
    let src = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        "map source page",
    );
    // SAFETY: `src` is a writable page.
    unsafe { sys::put_code(src) };
    let mut copy = UffdioCopy {
        dst: msg.address & !(PAGE as u64 - 1),
        src: src.addr() as u64,
        len: PAGE as u64,
        ..UffdioCopy::default()
    };
    ioctl(uffd, UFFDIO_COPY, &mut copy, "UFFDIO_COPY");
    println!("copied a page holding CODE to {:#x}", copy.dst);
}
