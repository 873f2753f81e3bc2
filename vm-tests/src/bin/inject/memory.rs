//! Executable memory that is not a mapping of a granted file: shared memory objects, huge
//! pages, personality flags and the stack.

use vm_tests::technique;

use crate::sys::{self, PAGE};

/// Runs `CODE`, which `at` holds.
fn run(at: *const u8) -> ! {
    println!("calling {at:p}: {}", sys::maps_line(at));
    // SAFETY: every caller copied CODE to `at` and made it executable.
    unsafe { technique::run_code(at) }
}

/// Writes `CODE` to a memfd and maps it executable (`MAP_SHARED`).
///
/// Kernel path: `do_mmap` → `security_mmap_file` with `PROT_EXEC` on a shmem file that
/// lives on the internal `memfd:` mount and was never on any filesystem.
/// Injection: the content is whatever the process wrote; no file of it exists to grant.
pub(crate) fn memfd_map() -> ! {
    let name = sys::cstr("inject");
    // SAFETY: `name` is a valid C string for the duration of the call.
    let fd = sys::check(
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) },
        "memfd_create",
    );
    let fd = sys::own(fd);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut page = vec![0u8; PAGE];
    page[..technique::CODE.len()].copy_from_slice(&technique::CODE);
    sys::pwrite(raw, &page, 0, "write code");
    println!("memfd {raw} holds CODE");
    let at = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_EXEC,
        libc::MAP_SHARED,
        raw,
        "map executable",
    );
    run(at)
}

/// Creates a System V shared memory segment, attaches it writable, copies `CODE` into it
/// and attaches it a second time with `SHM_EXEC`.
///
/// Kernel path: `do_shmat` → `security_shm_shmat`, then `do_mmap` →
/// `security_mmap_file` with `PROT_EXEC` on the segment's shmem file (`SYSV…`).
/// Injection: the segment holds what the process copied into it through the first
/// attachment. Its mode is 0700: `SHM_EXEC` asks `ipcperms` for execute permission, so a
/// 0600 segment is refused with EACCES whatever any LSM says.
pub(crate) fn sysv_shm() -> ! {
    // SAFETY: plain syscall.
    let id = sys::check(
        unsafe { libc::shmget(libc::IPC_PRIVATE, PAGE, libc::IPC_CREAT | 0o700) },
        "shmget",
    );
    println!("created segment {id}");
    // SAFETY: a new attachment at an address the kernel picks.
    let rw = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    let attach_errno = sys::errno();
    // The segment goes away with its last attachment (Linux still lets a marked segment
    // be attached by id), so nothing is left behind whatever happens next.
    // SAFETY: plain syscall; a NULL buffer is allowed for IPC_RMID.
    if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } != 0 {
        technique::broken(&format!(
            "shmctl IPC_RMID {id}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if rw.addr() == usize::MAX {
        sys::fail_errno("attach writable", attach_errno);
    }
    // SAFETY: `rw` is a writable attachment of a page.
    unsafe { sys::put_code(rw.cast()) };
    println!("attached it writable at {rw:p} and copied CODE; marked it for removal");
    // SAFETY: a new attachment at an address the kernel picks.
    let rx = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY | libc::SHM_EXEC) };
    if rx.addr() == usize::MAX {
        technique::fail("attach executable");
    }
    run(rx.cast())
}

/// Maps anonymous shared memory readable, writable and executable and copies `CODE`
/// into it.
///
/// Kernel path: `do_mmap` → `shmem_zero_setup` gives the vma a shmem file
/// (`/dev/zero (deleted)`); `security_mmap_file` sees `PROT_EXEC` with no file, and
/// `security_file_mprotect` is never involved.
/// Injection: writable and executable memory that is not `MAP_PRIVATE` anonymous, for a
/// check that only looks at private anonymous mappings.
pub(crate) fn shared_anon() -> ! {
    let at = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        -1,
        "map shared anonymous RWX",
    );
    // SAFETY: `at` is a writable page.
    unsafe { sys::put_code(at) };
    run(at)
}

/// Maps a private anonymous huge page readable, writable and executable and copies
/// `CODE` into it. Needs reserved huge pages (`vm.nr_hugepages`); without them mmap
/// fails with ENOMEM, which is reported as a broken setup.
///
/// Kernel path: `do_mmap` → `hugetlb_file_setup` gives the vma a file on the internal
/// hugetlbfs mount; `security_mmap_file` sees `PROT_EXEC` with no file passed in.
/// Injection: writable and executable memory backed by a hugetlbfs file, for a check
/// that treats file-backed vmas as file mappings.
pub(crate) fn hugetlb() -> ! {
    const HUGE: usize = 2 << 20;
    // SAFETY: a new mapping at an address the kernel picks.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            HUGE,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    };
    if at == libc::MAP_FAILED {
        if sys::errno() == libc::ENOMEM {
            technique::broken("map huge page RWX: ENOMEM: no free huge page (vm.nr_hugepages)");
        }
        technique::fail("map huge page RWX");
    }
    // SAFETY: `at` is a writable huge page.
    unsafe { sys::put_code(at.cast()) };
    run(at.cast())
}

/// Sets the `READ_IMPLIES_EXEC` personality, maps private anonymous memory readable and
/// writable (which the kernel then makes executable too) and copies `CODE` into it.
///
/// Kernel path: `do_mmap` adds `PROT_EXEC` to `PROT_READ` for this personality before
/// `security_mmap_file` (which sees `reqprot` without, `prot` with `PROT_EXEC`).
/// Injection: the process asked for no executable memory, yet writes code to memory that
/// runs; a check on the requested protection alone misses it.
pub(crate) fn read_implies_exec() -> ! {
    read_implies_exec_persona();
    let at = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        "map readable memory",
    );
    // SAFETY: `at` is a writable page.
    unsafe { sys::put_code(at) };
    run(at)
}

/// Adds `READ_IMPLIES_EXEC` to the process's personality (which no LSM hook sees).
fn read_implies_exec_persona() {
    // SAFETY: 0xffffffff only queries the persona.
    let current = sys::check(
        unsafe { libc::personality(0xffff_ffff) },
        "query personality",
    );
    let persona = current | libc::READ_IMPLIES_EXEC;
    // SAFETY: plain syscall; the persona is a non-negative int.
    sys::check(
        unsafe { libc::personality(persona.unsigned_abs().into()) },
        "personality",
    );
    println!("personality {current:#x} -> {persona:#x}");
}

/// Sets the `READ_IMPLIES_EXEC` personality, grows the heap by a page with brk(2) and
/// copies `CODE` there.
///
/// Kernel path: `do_brk_flags` gives the new heap `VM_DATA_DEFAULT_FLAGS`, executable under
/// this personality; neither `mmap_file` nor `file_mprotect` runs, only `mmap_addr`
/// (`check_brk_limits` → `get_unmapped_area`). brk(2) reports a refusal by returning the
/// old break, which `sbrk` turns into ENOMEM.
/// Injection: an executable heap, with no mapping call at all.
pub(crate) fn read_implies_exec_brk() -> ! {
    read_implies_exec_persona();
    // SAFETY: plain syscalls on the process's own break.
    let at = unsafe { libc::sbrk(PAGE as libc::intptr_t) };
    if at as isize == -1 {
        technique::fail("grow the heap");
    }
    // SAFETY: the page just added to the heap is writable.
    unsafe { sys::put_code(at.cast()) };
    run(at.cast())
}

/// Maps /dev/zero shared and executable, duplicates the mapping with mremap, makes the
/// copy writable, writes `CODE` through it and runs it through the first one.
///
/// Kernel path: `mmap_zero` turns a shared /dev/zero mapping into shmem
/// (`shmem_zero_setup`), after `security_mmap_file` saw a character device; `mremap` with
/// an old size of 0 makes a second mapping of the same pages; `mprotect` to read-write
/// adds no execute permission.
/// Injection: the device's "content" is empty, so no digest says anything about it.
pub(crate) fn dev_zero() -> ! {
    let zero = sys::open("/dev/zero", libc::O_RDWR, 0, "open /dev/zero");
    let code = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_EXEC,
        libc::MAP_SHARED,
        std::os::fd::AsRawFd::as_raw_fd(&zero),
        "map /dev/zero executable",
    );
    // SAFETY: duplicates our own shared mapping at an address the kernel picks.
    let alias = unsafe { libc::mremap(code.cast(), 0, PAGE, libc::MREMAP_MAYMOVE) };
    if alias == libc::MAP_FAILED {
        technique::fail("duplicate the mapping");
    }
    // SAFETY: our own new mapping.
    if unsafe { libc::mprotect(alias, PAGE, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
        technique::fail("make the duplicate writable");
    }
    // SAFETY: the duplicate is writable and shares its page with `code`.
    unsafe { sys::put_code(alias.cast()) };
    run(code)
}

/// `SOL_PACKET` and `PACKET_RX_RING` (include/linux/socket.h, uapi/linux/if_packet.h).
const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;

/// Maps an AF_PACKET receive ring writable, writes `CODE` into it, maps it again
/// executable and calls it. Unprivileged: the socket is made in a user and network
/// namespace of its own, where the caller has `CAP_NET_RAW`.
///
/// Kernel path: `packet_mmap` (net/packet/af_packet.c), which checks the size but not the
/// protection, via `security_mmap_file` with `PROT_EXEC` on a socket's file.
/// Injection: the ring is kernel memory the process may write; a second mapping of the
/// same pages runs what the first wrote. No digest says anything about it (a socket
/// hashes as the empty file).
pub(crate) fn packet_ring() -> ! {
    // struct tpacket_req: one block of one page, two frames. Protocol 0: the socket
    // receives nothing, but its ring is set up all the same.
    let page = u32::try_from(PAGE).expect("page size");
    let ring: [u32; 4] = [page, 1, page / 2, 2];
    socket_ring(
        libc::AF_PACKET,
        "AF_PACKET",
        SOL_PACKET,
        PACKET_RX_RING,
        &ring,
    )
}

/// In a user and network namespace of its own (where the caller has `CAP_NET_RAW`), makes
/// a raw socket of `family`, sets up its receive ring with `setsockopt(level, option,
/// request)`, then writes `CODE` into the ring and runs it ([`write_then_run`]).
fn socket_ring(
    family: libc::c_int,
    name: &str,
    level: libc::c_int,
    option: libc::c_int,
    request: &[u32],
) -> ! {
    // SAFETY: plain syscall.
    sys::check(
        unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) },
        "unshare",
    );
    // SAFETY: plain syscall.
    let fd = sys::own(sys::check(
        unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) },
        &format!("socket {name}"),
    ));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: `request` is valid for its length for the duration of the call.
    sys::check(
        unsafe {
            libc::setsockopt(
                fd,
                level,
                option,
                request.as_ptr().cast(),
                libc::socklen_t::try_from(size_of_val(request)).expect("small"),
            )
        },
        "set up the receive ring",
    );
    write_then_run(fd, "the ring")
}

/// Maps the first page of `fd` writable, writes `CODE` through it, maps the same page
/// again executable and calls it: for kernel memory a process may write (rings, buffers),
/// which no digest can vouch for.
fn write_then_run(fd: libc::c_int, what: &str) -> ! {
    let rw = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fd,
        &format!("map {what} writable"),
    );
    // SAFETY: `rw` is our own writable mapping of a page.
    unsafe { sys::put_code(rw) };
    let code = sys::map(
        PAGE,
        libc::PROT_READ | libc::PROT_EXEC,
        libc::MAP_SHARED,
        fd,
        &format!("map {what} executable"),
    );
    run(code)
}

/// `SOL_XDP` and `XDP_RX_RING` (include/linux/socket.h, uapi/linux/if_xdp.h).
const SOL_XDP: libc::c_int = 283;
const XDP_RX_RING: libc::c_int = 2;

/// Maps an AF_XDP socket's receive ring writable, writes `CODE` into it, maps it again
/// executable and calls it. Unprivileged as the packet ring is: `xsk_create` asks for
/// `CAP_NET_RAW` in the network namespace's user namespace, which the caller owns.
///
/// Kernel path: `xsk_mmap` (net/xdp/xsk.c) checks the offset and the size, not the
/// protection; the ring is set up by `setsockopt(XDP_RX_RING)` alone, before any UMEM or
/// bind. Then `security_mmap_file` with `PROT_EXEC` on the socket's file.
/// Injection: as the packet ring.
pub(crate) fn xdp_ring() -> ! {
    // 64 descriptors of 16 bytes and the ring's indexes fit in one page.
    socket_ring(libc::AF_XDP, "AF_XDP", SOL_XDP, XDP_RX_RING, &[64])
}

/// `struct dma_heap_allocation_data` (uapi/linux/dma-heap.h).
#[repr(C)]
struct DmaHeapAllocation {
    len: u64,
    fd: u32,
    fd_flags: u32,
    heap_flags: u64,
}

/// `DMA_HEAP_IOCTL_ALLOC`: `_IOWR('H', 0x0, struct dma_heap_allocation_data)`.
const DMA_HEAP_IOCTL_ALLOC: libc::c_ulong = 0xc018_4800;

/// Allocates a dma-buf from the system DMA heap `HEAP`, maps it writable, writes `CODE`
/// into it, maps it again executable and calls it. The heap's device is root's by
/// default; a host that gives it to users (media and graphics stacks do) lets any of them
/// allocate buffers.
///
/// Kernel path: `dma_heap_ioctl_allocate` returns a dma-buf file (an anonymous inode on the
/// kernel's internal `dmabuf` mount); `dma_buf_mmap_internal` checks the size, not the
/// protection. Then `security_mmap_file` with `PROT_EXEC` on the dma-buf's file.
/// Injection: a buffer shared with devices, written by the process.
pub(crate) fn dma_heap(heap: &str) -> ! {
    let dev = sys::open(heap, libc::O_RDONLY | libc::O_CLOEXEC, 0, "open the heap");
    let mut request = DmaHeapAllocation {
        len: PAGE as u64,
        fd: 0,
        fd_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        heap_flags: 0,
    };
    // SAFETY: `request` is a valid allocation request for the duration of the call.
    sys::check(
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&dev),
                DMA_HEAP_IOCTL_ALLOC,
                &raw mut request,
            )
        },
        "allocate a buffer",
    );
    let buf = sys::own(i32::try_from(request.fd).expect("a descriptor"));
    write_then_run(std::os::fd::AsRawFd::as_raw_fd(&buf), "the buffer")
}

/// Copies `CODE` into an array on the main thread's stack and calls it.
///
/// Kernel path: `setup_arg_pages` gives the stack `VM_EXEC` when the program's
/// `PT_GNU_STACK` asks for it (`EXSTACK_ENABLE_X`); no mmap or mprotect is involved.
/// Injection: the stack is written by the process; with an executable stack the copy
/// runs. The kernel kills a process whose stack is not executable with SIGSEGV, so the
/// runner runs a copy marked by `mark-exec-stack`.
pub(crate) fn stack_code() -> ! {
    let mut buf = [0u8; 64];
    buf[..technique::CODE.len()].copy_from_slice(&technique::CODE);
    let at = std::hint::black_box(&mut buf).as_ptr();
    run(at)
}
