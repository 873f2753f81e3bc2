//! Fixture: ways for root with every capability to escape a scope. Each technique leaves
//! the scope, switches enforcement off, blinds or stops the agent, changes host files,
//! gets code run outside the scope, or puts code into the kernel.
//!
//! `escape <technique> [args...]`. The runner runs every technique twice: outside every
//! scope, where it must work (so the test can fail), and inside one, where the kernel must
//! refuse a step. The exit code follows `vm_tests::technique`: `WORKED` when the technique
//! reached its effect, `ERRNO_BASE + errno` when the printed step was refused, 2 for a
//! broken setup. A technique that works undoes what it did (each says what it cannot
//! undo), since the outside run is real.

mod cgroup;
mod files;
mod ipc;
mod kernel;
mod mount;
mod process;
mod sys;

use vm_tests::technique;

/// Every technique with its arguments, for the usage message.
const USAGE: &str = "usage: escape <technique> [args...]
  cgroup-write CGROUP_DIR | clone-into-cgroup CGROUP_DIR
  inherited-cgroup-fd SCOPE_DIR OUT_DIR | freeze CGROUP_DIR
  mount-tmpfs DIR | new-mount-api DIR | userns-mount DIR | umount PATH | setns-init-mnt
  bpf-mount DIR | module-load KO | module-load-mem KO | perf-open | ioperm | kexec
  kexec-file
  request-key | request-module | firmware-load NAME
  sysctl-write PATH VALUE | kprobe-event | sysrq | write-file PATH | read-file PATH | flock DIR | mknod PATH
  device-write PATH | chattr PATH | kill PID SIG | renice PID | prlimit PID | sigio PID
  connect-unix PATH | sendto-unix PATH | tiocsti | inotify-exhaust";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some((&name, rest)) = args.split_first() else {
        technique::broken(USAGE)
    };
    match (name, rest) {
        ("cgroup-write", [dir]) => cgroup::write(dir),
        ("clone-into-cgroup", [dir]) => cgroup::clone_into(dir),
        ("inherited-cgroup-fd", [scope, out]) => cgroup::inherited_fd(scope, out),
        ("freeze", [dir]) => cgroup::freeze(dir),
        ("mount-tmpfs", [dir]) => mount::tmpfs(dir),
        ("new-mount-api", [dir]) => mount::new_api(dir),
        ("userns-mount", [dir]) => mount::userns(dir),
        ("umount", [path]) => mount::umount(path),
        ("setns-init-mnt", []) => mount::setns_init(),
        ("bpf-mount", [dir]) => mount::bpffs(dir),
        ("module-load", [ko]) => kernel::load(ko),
        ("module-load-mem", [ko]) => kernel::load_mem(ko),
        ("perf-open", []) => kernel::perf_open(),
        ("ioperm", []) => kernel::ioperm(),
        ("kexec", []) => kernel::kexec(),
        ("kexec-file", []) => kernel::kexec_file(),
        ("request-key", []) => kernel::request_key(),
        ("request-module", []) => kernel::request_module(),
        ("firmware-load", [name]) => kernel::firmware_load(name),
        ("sysctl-write", [path, value]) => kernel::sysctl(path, value),
        ("kprobe-event", []) => kernel::kprobe_event(),
        ("sysrq", []) => kernel::sysrq(),
        ("write-file", [path]) => files::write(path),
        ("read-file", [path]) => files::read(path),
        ("flock", [path]) => files::flock(path),
        ("mknod", [path]) => files::mknod(path),
        ("device-write", [path]) => files::device_write(path),
        ("chattr", [path]) => files::chattr(path),
        ("kill", [pid, sig]) => process::kill(sys::number(pid, "PID"), sys::number(sig, "SIG")),
        ("renice", [pid]) => process::renice(sys::number(pid, "PID")),
        ("prlimit", [pid]) => process::prlimit(sys::number(pid, "PID")),
        ("sigio", [pid]) => process::sigio(sys::number(pid, "PID")),
        ("connect-unix", [path]) => ipc::connect(path),
        ("sendto-unix", [path]) => ipc::sendto(path),
        ("tiocsti", []) => ipc::tiocsti(),
        ("inotify-exhaust", []) => files::inotify_exhaust(),
        _ => technique::broken(&format!(
            "unknown technique or wrong arguments: {args:?}\n{USAGE}"
        )),
    }
    println!("{name}: worked");
    std::process::exit(technique::WORKED);
}
