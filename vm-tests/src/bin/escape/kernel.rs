//! Putting code or probes into the kernel, and changing its global settings.

use std::os::fd::AsRawFd as _;
use std::path::Path;

use vm_tests::technique;

use crate::sys;

/// `MODULE_INIT_COMPRESSED_FILE` from include/uapi/linux/module.h: the kernel
/// decompresses the file itself (6.4+, CONFIG_MODULE_DECOMPRESS).
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

/// Whether `ko` is compressed, as the kernel's module loader would see it.
fn compressed(ko: &str) -> bool {
    [".xz", ".zst", ".gz"].iter().any(|ext| ko.ends_with(ext))
}

/// The name the kernel gives the module in `ko`: the file name up to its first '.', with
/// '-' as '_' (what modprobe assumes too; the real name is in the module's .modinfo).
fn module_name(ko: &str) -> String {
    let file = Path::new(ko)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.split('.').next().unwrap_or_default().replace('-', "_")
}

/// Ends the fixture when the module is already in: the load is refused with EEXIST before
/// any permission matters, which says nothing about the scope.
fn load_result(ret: libc::c_long, step: &str, name: &str) {
    if ret < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
        technique::broken(&format!(
            "{step}: module {name} is already loaded; unload it first"
        ));
    }
    sys::check(ret, step);
    println!("{step}: loaded {name}");
}

/// Unloads the module the technique loaded.
fn unload(name: &str) {
    let c = sys::cstr(name);
    // SAFETY: a valid C string.
    sys::undo(
        unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) },
        &format!("delete_module {name}"),
    );
    println!("unloaded {name}");
}

/// Loads the module file `KO` by descriptor (finit_module, 313), then unloads it.
///
/// Kernel path: `finit_module` → `security_kernel_read_file(READING_MODULE)` →
/// `load_module` → `security_kernel_load_data`/module signature checks.
/// Escape: module code runs in the kernel, above every check the enforcer makes.
pub(crate) fn load(ko: &str) {
    let name = module_name(ko);
    let file = sys::open(ko, libc::O_RDONLY, 0, &format!("open {ko}"));
    let flags = if compressed(ko) {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = sys::cstr("");
    // SAFETY: our descriptor and an empty parameter string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    load_result(ret, "finit_module", &name);
    unload(&name);
}

/// Loads the module image of `KO` from memory (init_module, 175), then unloads it. Only
/// for uncompressed files: init_module takes the ELF image itself.
///
/// Kernel path: `init_module` → `security_kernel_load_data(LOADING_MODULE)` →
/// `load_module`.
/// Escape: as `module-load`, by the path that has no file for a guard to look at.
pub(crate) fn load_mem(ko: &str) {
    if compressed(ko) {
        technique::broken(&format!("{ko}: init_module needs an uncompressed module"));
    }
    let name = module_name(ko);
    let image = std::fs::read(ko).unwrap_or_else(|err| sys::fail_io(&format!("read {ko}"), &err));
    let params = sys::cstr("");
    // SAFETY: `image` is valid for its length; an empty parameter string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len(),
            params.as_ptr(),
        )
    };
    load_result(ret, "init_module", &name);
    unload(&name);
}

/// The first 64 bytes of `struct perf_event_attr` (include/uapi/linux/perf_event.h,
/// `PERF_ATTR_SIZE_VER0`): type, size, config, then fields left zero here (sample period,
/// sample and read formats, the flag bits, wakeup and breakpoint fields).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    zero: [u64; 6],
}

const PERF_ATTR_SIZE_VER0: u32 = 64;
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == PERF_ATTR_SIZE_VER0 as usize);

/// `PERF_TYPE_SOFTWARE`, `PERF_COUNT_SW_CPU_CLOCK`, `PERF_FLAG_FD_CLOEXEC` from
/// include/uapi/linux/perf_event.h.
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// Opens a software perf event (CPU clock) on itself, then closes it.
///
/// Kernel path: `perf_event_open` → `perf_allow_cpu`/`security_perf_event_open`.
/// Escape: perf is the door to kprobes, tracepoints and bpf programs attached to them:
/// a scope that may open perf events may observe (or, with bpf, blind) the host.
pub(crate) fn perf_open() {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: PERF_ATTR_SIZE_VER0,
        config: PERF_COUNT_SW_CPU_CLOCK,
        ..PerfEventAttr::default()
    };
    // SAFETY: `attr` is a valid VER0 attribute; pid 0 = self, cpu -1 = any, no group.
    let fd = sys::check(
        unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &raw const attr,
                0,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        },
        "perf_event_open",
    );
    println!("perf_event_open: fd {fd}");
    if let Ok(fd) = libc::c_int::try_from(fd) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(fd) };
    }
}

/// Takes, then gives back, access to I/O port 0x80 (ioperm).
///
/// Kernel path: `ksys_ioperm` → `capable(CAP_SYS_RAWIO)` and
/// `security_locked_down(LOCKDOWN_IOPORT)`.
/// Escape: raw port I/O reaches hardware (DMA controllers, the PCI config space) beneath
/// the kernel, and through DMA the kernel's memory.
pub(crate) fn ioperm() {
    // SAFETY: plain syscall; port 0x80 (POST codes) is harmless to hold.
    sys::check(unsafe { libc::ioperm(0x80, 1, 1) }, "ioperm");
    println!("ioperm: port 0x80 granted");
    // SAFETY: as above, giving it back.
    sys::undo(unsafe { libc::ioperm(0x80, 1, 0) }, "ioperm release");
    println!("ioperm: released");
}

/// Calls kexec_load with no segments: it unloads the standby kernel image, of which there
/// is none, and succeeds.
///
/// Kernel path: `kexec_load` → `kexec_load_check`: `capable(CAP_SYS_BOOT)`, then
/// `security_kernel_load_data(LOADING_KEXEC_IMAGE)` and `security_locked_down(LOCKDOWN_KEXEC)`,
/// before any segment is read.
/// Escape: with segments, the image is a kernel of the caller's choosing that `reboot`
/// (or the next crash, for a crash kernel) boots in place of this one.
pub(crate) fn kexec() {
    // SAFETY: plain syscall; no segments, so no pointer is read.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    };
    sys::check(r, "kexec_load");
    println!("kexec_load: accepted (no segments: nothing was staged)");
}

/// Calls kexec_file_load with `KEXEC_FILE_UNLOAD`: it unloads the standby kernel image, of
/// which there is none, and succeeds without reading a file.
///
/// Kernel path: `kexec_file_load` → `kexec_load_permitted` (6.6+; on 6.1 the same test
/// inline): `capable(CAP_SYS_BOOT)`, before the flags are looked at. With files, the image
/// and initrd are then read through `kernel_read_file` (`READING_KEXEC_IMAGE`,
/// `READING_KEXEC_INITRAMFS`), which `security_kernel_read_file` and the lockdown checks
/// see.
/// Escape: as `kexec`, a kernel of the caller's choosing booted by the next `reboot`.
pub(crate) fn kexec_file() {
    const KEXEC_FILE_UNLOAD: libc::c_ulong = 1;
    // SAFETY: plain syscall; with KEXEC_FILE_UNLOAD no descriptor or pointer is used.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1 as libc::c_int,
            -1 as libc::c_int,
            0 as libc::c_ulong,
            std::ptr::null::<libc::c_char>(),
            KEXEC_FILE_UNLOAD,
        )
    };
    sys::check(r, "kexec_file_load");
    println!("kexec_file_load: accepted (unload: nothing was staged)");
}

/// Writes `VALUE` to the kernel-interface file `PATH` (a sysctl, a sysfs or debugfs
/// knob), then writes the old value back.
///
/// Kernel path: `proc_sys_write` → `sysctl_perm` → the table's handler; sysfs
/// `kernfs_fop_write_iter` → the attribute's store; debugfs `full_proxy_write`.
/// Escape: these files are host-wide: kernel.core_pattern ("|/path") makes the kernel run a
/// program as root outside every scope on the next crash (a usermode helper),
/// kernel.modprobe likewise, and others switch protections off; sysfs binds drivers and
/// suspends the host; debugfs changes the memory manager and drivers.
pub(crate) fn sysctl(path: &str, value: &str) {
    let old = std::fs::read(path).unwrap_or_else(|err| sys::fail_io(&format!("read {path}"), &err));
    println!("{path} was {:?}", String::from_utf8_lossy(&old).trim_end());
    sys::write_path(path, value.as_bytes(), &format!("write {path}"));
    println!("wrote {value:?} to {path}");
    sys::restore(path, &old, &format!("restore {path}"));
    println!("restored {path}");
}

/// Asks the kernel to load the firmware file `NAME` through the test_firmware module's
/// trigger, and checks that it was loaded: the module hands it back on `/dev/test_firmware`.
/// Nothing to undo: the module keeps its one buffer until the next request.
///
/// Kernel path: `trigger_request_store` → `request_firmware` → `fw_get_filesystem_firmware`
/// → `kernel_read_file_from_path_initns` (`security_kernel_read_file`, READING_FIRMWARE).
/// Escape: firmware is code for a device's processor; a driver's request reads it from
/// the host's files, and a scope that can make one ask, asks the host to run it there.
pub(crate) fn firmware_load(name: &str) {
    const TRIGGER: &str = "/sys/devices/virtual/misc/test_firmware/trigger_request";
    sys::write_path(TRIGGER, name.as_bytes(), &format!("write {TRIGGER}"));
    let loaded = std::fs::read("/dev/test_firmware")
        .unwrap_or_else(|err| technique::broken(&format!("read /dev/test_firmware: {err}")));
    println!("firmware {name}: {} bytes loaded", loaded.len());
    if loaded.is_empty() {
        technique::broken("the trigger succeeded and no firmware is loaded");
    }
}

/// Where tracefs is mounted (the VM's init mounts it, as systemd does).
const KPROBE_EVENTS: &str = "/sys/kernel/tracing/kprobe_events";

/// Defines a kprobe event through tracefs, then removes it.
///
/// Kernel path: `probes_write` → `trace_parse_run_command` → `create_or_delete_trace_kprobe`
/// (kernel/trace/trace_kprobe.c). Opened without O_TRUNC, which would clear every event.
/// Escape: a kprobe event is the kernel running a probe of the caller's choosing at any
/// kernel function, host-wide; with a filter or trigger it changes what the kernel does
/// and reads kernel memory for every process, the agent's included.
pub(crate) fn kprobe_event() {
    let fd = sys::open(
        KPROBE_EVENTS,
        libc::O_WRONLY | libc::O_APPEND,
        0,
        "open kprobe_events",
    );
    sys::write(
        fd.as_raw_fd(),
        b"p:enforcer_escape/probe vfs_read\n",
        "define a kprobe event",
    );
    println!("kprobe event enforcer_escape/probe defined on vfs_read");
    let remove = b"-:enforcer_escape/probe\n";
    // SAFETY: `remove` is valid for its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), remove.as_ptr().cast(), remove.len()) };
    sys::undo(n, "remove the kprobe event");
    println!("kprobe event removed");
}

/// Writes "h" to /proc/sysrq-trigger: the kernel prints the sysrq help to its log.
///
/// Kernel path: `write_sysrq_trigger` → `__handle_sysrq` (not gated by kernel.sysrq).
/// Escape: other letters reboot ('b'), crash ('c'), kill every task ('i') or remount
/// everything read-only ('u'), stopping the agent and the host from inside a scope.
pub(crate) fn sysrq() {
    sys::write_path("/proc/sysrq-trigger", b"h", "write /proc/sysrq-trigger");
    println!("sysrq: help printed to the kernel log");
}

/// `KEY_SPEC_PROCESS_KEYRING` (include/uapi/linux/keyctl.h).
const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;

/// Asks for a key nobody has, with callout data (request_key, 249).
///
/// Kernel path: `request_key` → `construct_key` → `request_key_auth_new` (the
/// authorization key, `key_alloc` in the caller's context) → `call_usermodehelper_keys`,
/// which runs /sbin/request-key as root in the root cgroup with the type, description and
/// callout the caller chose: a deputy outside the scope. The upcall cannot be seen from
/// here (the key just ends up negative): the runner's /sbin/request-key leaves a marker.
pub(crate) fn request_key() {
    let (kind, desc, callout) = (
        sys::cstr("user"),
        sys::cstr("enforcer-test"),
        sys::cstr("x"),
    );
    // SAFETY: valid C strings; the kernel copies them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_request_key,
            kind.as_ptr(),
            desc.as_ptr(),
            callout.as_ptr(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    };
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // The upcall ran and made nothing: the key is negative.
        _ if r >= 0 => {}
        Some(libc::ENOKEY | libc::EKEYREJECTED | libc::EKEYEXPIRED) => {
            println!("request_key: {err} (after the upcall)");
        }
        _ => sys::fail_io("request_key", &err),
    }
}

/// Asks for a netlink protocol no module provides yet (socket(AF_NETLINK, SOCK_RAW, 30)).
///
/// Kernel path: `netlink_create` → `request_module("net-pf-16-proto-30")` →
/// `security_kernel_module_request` → `call_modprobe`, which runs the `kernel.modprobe`
/// program as root in the root cgroup. The socket fails either way (no such protocol);
/// the runner's modprobe leaves a marker when it ran.
pub(crate) fn request_module() {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 30) };
    if fd >= 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }
    println!(
        "socket(AF_NETLINK, 30): {}",
        std::io::Error::last_os_error()
    );
}
