//! Issue 12: an unprivileged process (uid 65534, no capabilities) in an enforcing scope
//! runs no machine code of its own. One scenario per row of the enumeration in
//! docs/threat-model.md ("Code that changes after its check", "Executable memory without
//! a checked file"): each technique runs its injected code outside every scope, and is
//! refused in the scope with its errno and an audit record.

use std::path::Path;

use libc::{EPERM, ETXTBSY};

use crate::support::contained::{Case, Fixture, Who};
use crate::support::{Env, ModesUntilDrop, SCOPE, Unavailable, WORK, fuse, modules, mounts};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![
    writing_a_mapped_copy_of_granted_code_refused,
    mapping_a_copy_with_a_writer_refused,
    mapping_a_copy_with_a_shared_writable_mapping_refused,
    truncating_mapped_code_refused,
    executable_memfd_mapping_refused,
    executable_mapping_of_a_deleted_file_refused,
    executable_sysv_shared_memory_refused,
    executable_shared_anonymous_memory_refused,
    executable_huge_pages_refused,
    read_implies_exec_refused,
    read_implies_exec_heap_refused,
    executable_dev_zero_refused,
    executable_packet_ring_refused,
    executable_xdp_ring_refused,
    executable_dma_buf_refused,
    mapping_code_served_by_fuse_refused,
    userfaultfd_refused,
    io_uring_refused,
    direct_io_refused,
    writing_own_code_through_proc_self_mem_refused,
    ptrace_poke_into_a_child_refused,
    executable_stack_killed_before_it_runs,
    executable_stack_of_an_ia32_program_killed_before_it_runs,
    executable_zero_fill_killed_before_it_runs,
    overlay_mount_in_a_user_namespace_refused,
    writing_an_overlay_layer_of_mapped_code_refused,
];

/// A technique of the `inject` fixture with a granted library and a directory of its own.
const fn inject<'a>(
    name: &'a str,
    args: &'a [&'a str],
    errno: i32,
    by: (&'a str, &'a str),
) -> Case<'a> {
    Case::refused(name, Fixture::Inject, Who::Nobody, args, errno, by)
}

fn writing_a_mapped_copy_of_granted_code_refused(env: &Env) {
    // A granted library copied to /tmp and mapped executable: its bytes are checked, and
    // no one may write them while they are mapped.
    inject(
        "write-after-map",
        &["write-after-map", "{lib}", "{dir}"],
        ETXTBSY,
        ("file_open", "code-in-use"),
    )
    .check(env);
}

fn mapping_a_copy_with_a_writer_refused(env: &Env) {
    inject(
        "write-before-map",
        &["write-before-map", "{lib}", "{dir}"],
        EPERM,
        ("mmap_file", "writable-code"),
    )
    .check(env);
}

fn mapping_a_copy_with_a_shared_writable_mapping_refused(env: &Env) {
    inject(
        "shared-writable-map",
        &["shared-writable-map", "{lib}", "{dir}"],
        EPERM,
        ("mmap_file", "writable-code"),
    )
    .check(env);
}

fn truncating_mapped_code_refused(env: &Env) {
    // Truncated, a mapped file's pages go; written again, the mapping shows the new bytes.
    inject(
        "truncate-refill",
        &["truncate-refill", "{lib}", "{dir}"],
        ETXTBSY,
        ("inode_setattr", "code-in-use"),
    )
    .check(env);
}

fn executable_memfd_mapping_refused(env: &Env) {
    inject(
        "memfd-map",
        &["memfd-map"],
        EPERM,
        ("mmap_file", "anonymous-exec"),
    )
    .check(env);
}

fn executable_mapping_of_a_deleted_file_refused(env: &Env) {
    inject(
        "deleted-map",
        &["deleted-map", "{lib}", "{dir}"],
        EPERM,
        ("mmap_file", "anonymous-exec"),
    )
    .check(env);
}

fn executable_sysv_shared_memory_refused(env: &Env) {
    inject(
        "sysv-shm",
        &["sysv-shm"],
        EPERM,
        ("mmap_file", "anonymous-exec"),
    )
    .check(env);
}

fn executable_shared_anonymous_memory_refused(env: &Env) {
    inject(
        "shared-anon",
        &["shared-anon"],
        EPERM,
        ("mmap_file", "anonymous-exec"),
    )
    .check(env);
}

fn executable_huge_pages_refused(env: &Env) {
    let _pages = HugePages::reserve(4);
    inject(
        "hugetlb",
        &["hugetlb"],
        EPERM,
        ("mmap_file", "anonymous-exec"),
    )
    .check(env);
}

fn read_implies_exec_refused(env: &Env) {
    // personality(2) itself cannot be refused; every mapping under it is.
    inject(
        "read-implies-exec",
        &["read-implies-exec"],
        EPERM,
        ("mmap_file", "anonymous-exec"),
    )
    .check(env);
}

fn read_implies_exec_heap_refused(env: &Env) {
    // brk(2) makes no mapping call: only mmap_addr sees the heap grow.
    inject(
        "read-implies-exec-brk",
        &["read-implies-exec-brk"],
        libc::ENOMEM,
        ("mmap_addr", "anonymous-exec"),
    )
    .check(env);
}

fn executable_dev_zero_refused(env: &Env) {
    // A device's content is nothing a digest can vouch for.
    inject(
        "dev-zero",
        &["dev-zero"],
        EPERM,
        ("mmap_file", "not-a-regular-file"),
    )
    .check(env);
}

fn executable_packet_ring_refused(env: &Env) {
    // A socket's ring buffer is memory the process writes: a file type no digest covers.
    inject(
        "packet-ring",
        &["packet-ring"],
        EPERM,
        ("mmap_file", "not-a-regular-file"),
    )
    .check(env);
}

fn executable_xdp_ring_refused(env: &Env) {
    // An AF_XDP ring: the same rule by inode type as the packet ring, another socket family.
    inject(
        "xdp-ring",
        &["xdp-ring"],
        EPERM,
        ("mmap_file", "not-a-regular-file"),
    )
    .check(env);
}

/// The system DMA heap's device (CONFIG_DMABUF_HEAPS_SYSTEM).
const DMA_HEAP: &str = "/dev/dma_heap/system";

fn executable_dma_buf_refused(env: &Env) {
    // A dma-buf is an anonymous inode on the kernel's `dmabuf` mount: not a regular file
    // (and, were it one, not on a filesystem whose content a digest pins).
    let heap = Path::new(DMA_HEAP);
    if !heap.exists() {
        std::panic::panic_any(Unavailable(format!(
            "{DMA_HEAP} is missing: this kernel has no system DMA heap \
             (CONFIG_DMABUF_HEAPS_SYSTEM), so it makes no dma-buf a process can map"
        )));
    }
    // As a host that gives the heap to its users does, and an operator who allows it to
    // the scope (`devices`): then the mapping is what must be refused.
    let _opened = ModesUntilDrop::set(&[(heap, 0o666)]);
    let config = Path::new(WORK).join("dma-heap.toml");
    std::fs::write(
        &config,
        format!("[[scope]]\npath = \"/{SCOPE}\"\ndevices = [\"{DMA_HEAP}\"]\n"),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
    inject(
        "dma-heap",
        &["dma-heap", DMA_HEAP],
        EPERM,
        ("mmap_file", "not-a-regular-file"),
    )
    .check_with(env, &["--config", config.to_str().expect("utf-8")]);
}

/// Where the FUSE scenario mounts its filesystem, and its one file.
const SERVED_DIR: &str = "/run/enforcer-tests/fuse";
const SERVED_FILE: &str = "/run/enforcer-tests/fuse/code";

fn mapping_code_served_by_fuse_refused(env: &Env) {
    // A process outside every scope serves CODE from a FUSE file (as a user's sshfs mount
    // or a FUSE daemon would); whoever is in the scope may read it. The scope cannot mount
    // FUSE itself (the mount rows), but reaches mounts made outside.
    modules::load("fuse");
    let _served = fuse::Served::mount(
        Path::new(SERVED_DIR),
        "code",
        vm_tests::technique::CODE.to_vec(),
    );
    inject(
        "fuse-map",
        &["map-served", SERVED_FILE],
        EPERM,
        ("mmap_file", "untrusted-filesystem"),
    )
    .check(env);
}

fn userfaultfd_refused(env: &Env) {
    // The handler fills a hole of a checked executable mapping with its own bytes.
    inject(
        "userfaultfd",
        &["userfaultfd", "{dir}"],
        EPERM,
        ("inode_init_security_anon", "userfaultfd"),
    )
    .check(env);
}

fn io_uring_refused(env: &Env) {
    // Registered buffers pin page-cache pages that the kernel writes long after the check.
    inject(
        "io-uring",
        &["io-uring", "{lib}", "{dir}"],
        EPERM,
        ("inode_init_security_anon", "pinned-io"),
    )
    .check(env);
}

fn direct_io_refused(env: &Env) {
    // O_DIRECT reads fill pinned user pages after the syscall's checks: the race cannot be
    // reproduced on demand, so the open is the step both runs take. tmpfs has O_DIRECT
    // from 6.6; before, the open fails outside with EINVAL, after the hook: in the scope,
    // EPERM still shows the hook's refusal.
    let mut case = inject(
        "o-direct",
        &["o-direct", "{lib}", "{dir}"],
        EPERM,
        ("file_open", "pinned-io"),
    );
    case.works = if kernel_at_least(6, 6) {
        vm_tests::technique::WORKED
    } else {
        vm_tests::technique::refused_with(libc::EINVAL)
    };
    case.check(env);
}

/// Whether the running kernel is `major.minor` or newer.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

fn writing_own_code_through_proc_self_mem_refused(env: &Env) {
    inject(
        "proc-self-mem",
        &["proc-self-mem"],
        EPERM,
        ("file_open", "tamper"),
    )
    .check(env);
}

fn ptrace_poke_into_a_child_refused(env: &Env) {
    inject(
        "ptrace-poke",
        &["ptrace-poke"],
        EPERM,
        ("ptrace_traceme", "tamper"),
    )
    .check(env);
}

fn executable_stack_killed_before_it_runs(env: &Env) {
    // Granted content whose stack is executable: the exec passes, and the program dies
    // at the kernel's first mapping of it, before any of its code runs.
    Case::killed(
        "exec-stack",
        Fixture::ExecStack,
        &["stack-code"],
        ("mmap_file", "anonymous-exec"),
    )
    .check(env);
}

fn executable_stack_of_an_ia32_program_killed_before_it_runs(env: &Env) {
    // A 32-bit program without PT_GNU_STACK gets an executable stack by default; no
    // marking needed, and no 64-bit loader involved: the kernel maps its one segment.
    Case::killed(
        "ia32-stack",
        Fixture::Ia32Stack,
        &[],
        ("mmap_file", "anonymous-exec"),
    )
    .check(env);
}

fn executable_zero_fill_killed_before_it_runs(env: &Env) {
    // Granted content whose executable segment is longer in memory than in the file: the
    // kernel zero-fills the rest with vm_brk_flags(VM_EXEC), anonymous and writable, and
    // the program writes its code there. Refused at the zero-fill's mmap_addr check,
    // before the program runs: the exec is past its point of no return and dies.
    Case::killed(
        "exec-zero-fill",
        Fixture::ZeroFill,
        &[],
        ("mmap_addr", "anonymous-exec"),
    )
    .check(env);
}

fn overlay_mount_in_a_user_namespace_refused(env: &Env) {
    // Writes to an overlay's upper file change what the overlay file maps; in a user
    // namespace anyone may mount one.
    modules::load("overlay");
    inject(
        "overlay",
        &["overlay", "{lib}", "{dir}"],
        EPERM,
        ("sb_mount", "mount"),
    )
    .check(env);
}

/// Where the layer scenario mounts its overlay: below /tmp, a writable root of the scope.
const OVERLAY_DIR: &str = "/tmp/vmtest-overlay";

fn writing_an_overlay_layer_of_mapped_code_refused(env: &Env) {
    // An overlay mounted outside every scope, as a container's root file system is: a file
    // mapped through it maps the layer's own file, which the layer's path opens directly.
    // The upper layer is the user's here, as a rootless container's is, and lies below a
    // writable root of the scope.
    modules::load("overlay");
    let overlay = mounts::Overlay::mount(Path::new(OVERLAY_DIR));
    let (merged, upper) = (overlay.merged(), overlay.upper());
    inject(
        "write-layer-after-map",
        &["write-layer-after-map", "{lib}", &merged, &upper],
        ETXTBSY,
        ("file_open", "code-in-use"),
    )
    .check(env);
}

/// Huge pages reserved for a scenario, given back when dropped.
struct HugePages(String);

impl HugePages {
    const SYSCTL: &str = "/proc/sys/vm/nr_hugepages";

    fn reserve(pages: u32) -> Self {
        let before = std::fs::read_to_string(Self::SYSCTL)
            .unwrap_or_else(|e| panic!("read {}: {e}", Self::SYSCTL));
        std::fs::write(Self::SYSCTL, pages.to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", Self::SYSCTL));
        Self(before.trim().to_owned())
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::SYSCTL, &self.0);
    }
}
