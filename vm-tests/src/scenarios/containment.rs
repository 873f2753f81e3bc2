//! Issue 13: root with every capability in an enforcing scope stays in it, cannot switch
//! enforcement off or blind it, cannot change the agent's or the host's files outside the
//! scope's writable roots, gets nothing run outside the scope and puts no code into the
//! kernel. One scenario per route of docs/threat-model.md ("Root in a scope"): each
//! technique works outside every scope, and is refused in the scope with its errno and an
//! audit record.

use std::io::{BufRead as _, BufReader};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use libc::{EACCES, EPERM};
use vm_tests::PROBE_EXIT;

use crate::support::audit::{audit_records, find_key};
use crate::support::contained::{Case, Fixture, Shows, Who};
use crate::support::run::{
    Reaped, bystander, check_exit, enforcer_ok, expect_eperm, run_tool, within,
};
use crate::support::signed::{Kit, LIVE};
use crate::support::{Env, WORK, cgroup, copy_executable, modules};

pub(super) const SCENARIOS: &[super::Scenario] = scenarios![
    writing_cgroup_procs_refused,
    clone_into_another_cgroup_refused,
    inherited_cgroup_descriptor_refused,
    freezing_a_cgroup_refused,
    mounting_refused,
    new_mount_api_refused,
    mounting_in_a_user_namespace_refused,
    unmounting_bpffs_refused,
    joining_the_initial_mount_namespace_refused,
    loading_a_kernel_module_refused,
    perf_events_refused,
    raw_port_access_refused,
    kexec_load_refused,
    kexec_file_load_refused,
    setting_core_pattern_refused,
    writing_a_sysfs_knob_refused,
    writing_a_debugfs_knob_refused,
    defining_a_kprobe_event_refused,
    writing_a_securityfs_file_refused,
    writing_a_configfs_attribute_refused,
    triggering_a_firmware_load_refused,
    sysrq_refused,
    creating_an_autostart_file_refused,
    changing_the_trust_store_refused,
    changing_inode_flags_refused,
    reading_the_audit_host_key_refused,
    locking_the_pin_directory_refused,
    raising_the_agents_oom_score_refused,
    making_a_device_node_refused,
    writing_a_raw_device_refused,
    killing_a_process_outside_refused,
    renicing_a_process_outside_refused,
    setting_limits_of_another_process_refused,
    sigio_to_the_agent_refused,
    connecting_to_a_socket_outside_refused,
    sending_to_a_socket_outside_refused,
    terminal_injection_refused,
    terminal_injection_by_root_refused,
    request_key_upcall_refused,
    module_autoload_refused,
    using_up_inotify_instances_does_not_blind_the_agent,
];

/// A technique of the `escape` fixture run as root.
const fn escape(
    name: &'static str,
    args: &'static [&'static str],
    errno: i32,
    by: (&'static str, &'static str),
) -> Case<'static> {
    Case::refused(name, Fixture::Escape, Who::Root, args, errno, by)
}

/// A refused capability in the initial user namespace: the first barrier for most of
/// root's ways into the kernel and the host.
const CAPABILITY: (&str, &str) = ("capable", "capability");

fn writing_cgroup_procs_refused(env: &Env) {
    escape(
        "cgroup-write",
        &["cgroup-write", "{elsewhere}"],
        EPERM,
        ("file_open", "escape"),
    )
    .check(env);
}

fn clone_into_another_cgroup_refused(env: &Env) {
    escape(
        "clone-into-cgroup",
        &["clone-into-cgroup", "{elsewhere}"],
        EPERM,
        ("task_alloc", "escape"),
    )
    .check(env);
}

fn inherited_cgroup_descriptor_refused(env: &Env) {
    // cgroup.procs opened before entering the scope: the write is checked again.
    let mut case = escape(
        "inherited-cgroup-fd",
        &["inherited-cgroup-fd", "{into}", "{elsewhere}"],
        EPERM,
        ("file_permission", "escape"),
    );
    case.enters_itself = true;
    case.check(env);
}

fn freezing_a_cgroup_refused(env: &Env) {
    escape(
        "freeze",
        &["freeze", "{elsewhere}"],
        EPERM,
        ("file_open", "escape"),
    )
    .check(env);
}

fn mounting_refused(env: &Env) {
    // The mount hook comes before the capability check.
    escape(
        "mount-tmpfs",
        &["mount-tmpfs", "{dir}"],
        EPERM,
        ("sb_mount", "mount"),
    )
    .check(env);
}

fn new_mount_api_refused(env: &Env) {
    escape(
        "new-mount-api",
        &["new-mount-api", "{dir}"],
        EPERM,
        CAPABILITY,
    )
    .check(env);
}

fn mounting_in_a_user_namespace_refused(env: &Env) {
    // Root of its own user namespace has every capability there: sb_mount refuses, at the
    // step that makes the mounts private.
    escape(
        "userns-mount",
        &["userns-mount", "{dir}"],
        EPERM,
        ("sb_mount", "mount"),
    )
    .check(env);
}

fn unmounting_bpffs_refused(env: &Env) {
    // Outside, a throwaway mount goes; in the scope, the pins' bpffs would.
    let target = Path::new(WORK).join("contained/umount-target");
    std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let (code, out) = run_tool(
        Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(&target),
    );
    assert!(code == 0, "mount a tmpfs to unmount: {out}");
    let target = target.display().to_string();
    let mut case = escape("umount", &[], EPERM, CAPABILITY);
    let (outside, inside) = (["umount", target.as_str()], ["umount", "/sys/fs/bpf"]);
    case.args = &outside;
    case.inside_args = Some(&inside);
    case.check(env);
}

fn joining_the_initial_mount_namespace_refused(env: &Env) {
    escape("setns", &["setns-init-mnt"], EPERM, CAPABILITY).check(env);
}

fn loading_a_kernel_module_refused(env: &Env) {
    let ko = modules::required("nls_iso8859-2");
    let ko = ko.display().to_string();
    let args = ["module-load", ko.as_str()];
    let mut case = escape("module-load", &[], EPERM, CAPABILITY);
    case.args = &args;
    case.check(env);
}

fn perf_events_refused(env: &Env) {
    // Debian's perf_event_paranoid answers EACCES once the capabilities are refused.
    escape("perf-open", &["perf-open"], EACCES, CAPABILITY).check(env);
}

fn raw_port_access_refused(env: &Env) {
    escape("ioperm", &["ioperm"], EPERM, CAPABILITY).check(env);
}

fn kexec_load_refused(env: &Env) {
    // Refused at CAP_SYS_BOOT, before the kernel_load_data hook would see it.
    escape("kexec", &["kexec"], EPERM, CAPABILITY).check(env);
}

fn kexec_file_load_refused(env: &Env) {
    // The file-based loader passes the same capability check before it reads a file.
    escape("kexec-file", &["kexec-file"], EPERM, CAPABILITY).check(env);
}

fn setting_core_pattern_refused(env: &Env) {
    // A piped core_pattern runs its program as root outside every scope at the next crash.
    escape(
        "core-pattern",
        &[
            "sysctl-write",
            "/proc/sys/kernel/core_pattern",
            "|/bin/false %p",
        ],
        EPERM,
        ("file_open", "read-only"),
    )
    .check(env);
}

fn writing_a_sysfs_knob_refused(env: &Env) {
    // sysfs binds and unbinds drivers, suspends the host and tunes the memory manager for
    // every process; KSM's scan interval stands in for them, being harmless to change.
    escape(
        "sysfs-knob",
        &["sysctl-write", "/sys/kernel/mm/ksm/sleep_millisecs", "25"],
        EPERM,
        ("file_open", "read-only"),
    )
    .check(env);
}

fn writing_a_debugfs_knob_refused(env: &Env) {
    // debugfs writes reach drivers and the memory manager with no permission model of
    // their own; the fault-around size stands in, being harmless to change. debugfs asks
    // lockdown before it opens a writable file at all, for reading too
    // (`debugfs_locked_down`), so the technique's first step, reading the old value, is
    // the one refused.
    escape(
        "debugfs-knob",
        &[
            "sysctl-write",
            "/sys/kernel/debug/fault_around_bytes",
            "4096",
        ],
        EPERM,
        ("locked_down", "kernel"),
    )
    .check(env);
}

fn defining_a_kprobe_event_refused(env: &Env) {
    escape(
        "kprobe-event",
        &["kprobe-event"],
        EPERM,
        ("file_open", "read-only"),
    )
    .check(env);
}

fn writing_a_securityfs_file_refused(env: &Env) {
    // securityfs is where LSM policies are loaded and replaced (AppArmor profiles, IMA and
    // TOMOYO policies, lockdown's level). TOMOYO's query file stands in: answering a
    // query nobody asked ("A0=0") changes nothing, and TOMOYO runs on all three kernels.
    escape(
        "securityfs-file",
        &[
            "sysctl-write",
            "/sys/kernel/security/tomoyo/query",
            "A0=0\n",
        ],
        EPERM,
        ("file_open", "read-only"),
    )
    .check(env);
}

/// Where systemd mounts configfs.
const CONFIGFS: &str = "/sys/kernel/config";

fn writing_a_configfs_attribute_refused(env: &Env) {
    // configfs is where kernel objects are made by writing files: USB gadgets, NVMe and
    // SCSI targets, netconsole targets that send the kernel log to the network. A
    // netconsole target stands in (made outside, never enabled): its remote port is
    // harmless to change while it is off. configfs and netconsole are modules on the
    // Debian kernels; the runner loads them from outside every scope.
    modules::load("configfs");
    modules::load("netconsole");
    let root = Path::new(CONFIGFS);
    if !root.join("netconsole").exists() {
        run_tool(Command::new("mount").args(["-t", "configfs", "configfs", CONFIGFS]));
    }
    let target = root.join("netconsole/enforcer-test");
    if !target.exists() {
        std::fs::create_dir(&target).unwrap_or_else(|e| panic!("mkdir {}: {e}", target.display()));
    }
    let port = target.join("remote_port");
    let port = port.to_str().expect("utf-8");
    let args = ["sysctl-write", port, "6667"];
    let mut case = escape("configfs-attribute", &[], EPERM, ("file_open", "read-only"));
    case.args = &args;
    case.check(env);
    let _ = std::fs::remove_dir(&target);
}

fn triggering_a_firmware_load_refused(env: &Env) {
    // A driver reads firmware from the host's files when asked: the test_firmware module
    // (built as a module by Debian; the runner loads it from outside every scope) asks on
    // a sysfs write, as a real driver does on a device's probe or reset. The file is the
    // runner's: what the scope must not get is the request.
    modules::load("test_firmware");
    let dir = Path::new("/lib/firmware");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let blob = dir.join("enforcer-test.bin");
    std::fs::write(&blob, b"enforcer test firmware\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", blob.display()));
    escape(
        "firmware",
        &["firmware-load", "enforcer-test.bin"],
        EPERM,
        ("file_open", "read-only"),
    )
    .check(env);
}

fn sysrq_refused(env: &Env) {
    escape("sysrq", &["sysrq"], EPERM, ("file_open", "read-only")).check(env);
}

fn creating_an_autostart_file_refused(env: &Env) {
    // Run by the dynamic loader of every program on the host.
    escape(
        "ld-so-preload",
        &["write-file", "/etc/ld.so.preload"],
        EPERM,
        ("inode_create", "read-only"),
    )
    .check(env);
}

fn changing_the_trust_store_refused(env: &Env) {
    escape(
        "trust-store",
        &["write-file", "/usr/share/enforcer/policies/trust.toml"],
        EPERM,
        ("file_open", "read-only"),
    )
    .check(env);
}

fn changing_inode_flags_refused(env: &Env) {
    // An ioctl on a read-only descriptor: immutable or append-only agent files would stop
    // its updates and its audit log.
    escape(
        "chattr",
        &["chattr", "/usr/share/enforcer/policies/trust.toml"],
        EPERM,
        ("file_ioctl", "read-only"),
    )
    .check(env);
}

fn reading_the_audit_host_key_refused(env: &Env) {
    // Not the case's own directory, which its start empties.
    let dir = Path::new(WORK).join("contained/keys");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let (code, out) = run_tool(
        env.enforcer()
            .args(["key", "generate", "--out"])
            .arg(dir.join("host")),
    );
    assert!(code == 0 || out.contains("exists"), "key generate: {out}");
    let key = dir.join("host.key").display().to_string();
    let args = ["read-file", key.as_str()];
    let mut case = escape("host-key", &[], EPERM, ("file_open", "secret"));
    case.args = &args;
    case.check_with(env, &["--host-key", &key]);
}

fn locking_the_pin_directory_refused(env: &Env) {
    // Outside, a plain directory: the pin directory itself would hold the agent off while
    // the lock lasts.
    let target = Path::new(WORK).join("contained/lock-target");
    std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let target = target.display().to_string();
    let (outside, inside) = (
        ["flock", target.as_str()],
        ["flock", enforcer::paths::PIN_DIR],
    );
    let mut case = Case::refused(
        "flock",
        Fixture::Escape,
        Who::Root,
        &outside,
        EPERM,
        ("file_open", "tamper"),
    );
    case.inside_args = Some(&inside);
    case.check(env);
}

fn raising_the_agents_oom_score_refused(env: &Env) {
    // /proc of another process: the OOM killer would pick the agent first.
    let victim = bystander();
    let file = format!("/proc/{}/oom_score_adj", victim.0.id());
    let outside = ["sysctl-write", file.as_str(), "1000"];
    let case = Case::refused(
        "oom-score",
        Fixture::Escape,
        Who::Root,
        &outside,
        EPERM,
        ("file_open", "read-only"),
    );
    let mut session = case.start(env, &[]);
    session.works_outside();
    let agent = format!("/proc/{}/oom_score_adj", session.agent_pid());
    session.set_inside_args(&["sysctl-write", agent.as_str(), "1000"]);
    session.refused_inside();
    session.audited();
}

fn making_a_device_node_refused(env: &Env) {
    // A block device node over a disk, even in a writable directory.
    escape(
        "mknod",
        &["mknod", "{dir}/disk"],
        EPERM,
        ("inode_mknod", "kernel"),
    )
    .check(env);
}

fn writing_a_raw_device_refused(env: &Env) {
    escape(
        "device-write",
        &["device-write", "/dev/kmsg"],
        EPERM,
        ("file_open", "kernel"),
    )
    .check(env);
}

/// A technique of root against a process started for each run, outside every scope.
fn against_bystander(env: &Env, technique: &str, extra: &[&str], by: (&str, &str)) {
    let (outside, inside) = (bystander(), bystander());
    let (o, i) = (outside.0.id().to_string(), inside.0.id().to_string());
    let with = |pid: &str| -> Vec<String> {
        [technique, pid]
            .into_iter()
            .chain(extra.iter().copied())
            .map(str::to_owned)
            .collect()
    };
    let (out_args, in_args) = (with(&o), with(&i));
    let out_args: Vec<&str> = out_args.iter().map(String::as_str).collect();
    let in_args: Vec<&str> = in_args.iter().map(String::as_str).collect();
    let mut case = Case::refused(technique, Fixture::Escape, Who::Root, &out_args, EPERM, by);
    case.inside_args = Some(&in_args);
    case.check(env);
}

fn killing_a_process_outside_refused(env: &Env) {
    against_bystander(env, "kill", &["9"], ("task_kill", "outside-scope"));
}

fn renicing_a_process_outside_refused(env: &Env) {
    against_bystander(env, "renice", &[], ("task_setnice", "outside-scope"));
}

fn setting_limits_of_another_process_refused(env: &Env) {
    against_bystander(env, "prlimit", &[], ("task_prlimit", "tamper"));
}

fn sigio_to_the_agent_refused(env: &Env) {
    // F_SETOWN + F_SETSIG(SIGKILL) + O_ASYNC: one write kills the owner without kill(2).
    // The caller sees nothing: the target survives, and the record says why.
    let mut case = escape("sigio", &[], 0, ("file_send_sigiotask", "tamper"));
    case.shows = Shows::Nothing;
    let mut victim = bystander();
    let victim_pid = victim.0.id().to_string();
    let outside = ["sigio", victim_pid.as_str()];
    case.args = &outside;
    let mut session = case.start(env, &[]);
    session.works_outside();
    let status = victim
        .0
        .wait()
        .unwrap_or_else(|e| panic!("wait for the bystander: {e}"));
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL),
        "sigio outside every scope should have killed the bystander: {status:?}"
    );
    let agent = session.agent_pid().to_string();
    let inside = ["sigio", agent.as_str()];
    session.set_inside_args(&inside);
    session.refused_inside();
    assert!(session.agent_alive(), "the agent died of SIGIO");
    session.audited();
}

/// A Unix socket outside every scope, served by the runner.
fn listener(path: &Path) -> UnixListener {
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    listener
}

fn connecting_to_a_socket_outside_refused(env: &Env) {
    // systemd's, D-Bus's or a container runtime's socket would run what it is asked to.
    let path = Path::new(WORK).join("contained/deputy.sock");
    let _listener = listener(&path);
    let path = path.display().to_string();
    let args = ["connect-unix", path.as_str()];
    let mut case = escape(
        "connect-unix",
        &[],
        EPERM,
        ("unix_stream_connect", "deputy"),
    );
    case.args = &args;
    case.check(env);
}

fn sending_to_a_socket_outside_refused(env: &Env) {
    let path = Path::new(WORK).join("contained/deputy.dgram");
    let _ = std::fs::remove_file(&path);
    let _socket = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind: {e}"));
    let path = path.display().to_string();
    let args = ["sendto-unix", path.as_str()];
    let mut case = escape("sendto-unix", &[], EPERM, ("unix_may_send", "deputy"));
    case.args = &args;
    case.check(env);
}

/// Lets unprivileged processes use TIOCSTI on their own terminal (6.2+ can forbid it),
/// so that the technique works outside; restored when dropped.
struct LegacyTiocsti(Option<String>);

impl LegacyTiocsti {
    const SYSCTL: &str = "/proc/sys/dev/tty/legacy_tiocsti";

    fn allow() -> Self {
        let before = std::fs::read_to_string(Self::SYSCTL).ok();
        if before.is_some() {
            std::fs::write(Self::SYSCTL, "1").unwrap_or_else(|e| panic!("{}: {e}", Self::SYSCTL));
        }
        Self(before)
    }
}

impl Drop for LegacyTiocsti {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = std::fs::write(Self::SYSCTL, before.trim());
        }
    }
}

fn terminal_injection_refused(env: &Env) {
    // Typed into the terminal the scope shares with the shell that started it, which runs
    // it outside the scope once the scope's process exits. No privilege needed.
    let _legacy = LegacyTiocsti::allow();
    Case::refused(
        "tiocsti",
        Fixture::Escape,
        Who::Nobody,
        &["tiocsti"],
        EPERM,
        ("file_ioctl", "deputy"),
    )
    .check(env);
}

fn terminal_injection_by_root_refused(env: &Env) {
    escape(
        "tiocsti-root",
        &["tiocsti"],
        EPERM,
        ("file_ioctl", "deputy"),
    )
    .check(env);
}

/// A program the kernel runs as a usermode helper, which leaves a marker when it ran.
struct Helper {
    marker: std::path::PathBuf,
}

impl Helper {
    fn install(path: &Path, marker: &Path) -> Self {
        let _ = std::fs::remove_file(marker);
        crate::support::write_script(path, &format!("echo \"$0 $*\" >> {}", marker.display()));
        Self {
            marker: marker.to_path_buf(),
        }
    }

    fn ran(&self) -> bool {
        // The kernel runs the helper asynchronously.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if self.marker.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn forget(&self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

fn request_key_upcall_refused(env: &Env) {
    let helper = Helper::install(
        Path::new("/sbin/request-key"),
        &Path::new(WORK).join("contained/request-key.ran"),
    );
    let case = escape(
        "request-key",
        &["request-key"],
        EPERM,
        ("key_alloc", "deputy"),
    );
    let mut session = case.start(env, &[]);
    session.works_outside();
    assert!(
        helper.ran(),
        "request_key outside every scope did not run /sbin/request-key"
    );
    helper.forget();
    session.refused_inside();
    assert!(
        !helper.ran(),
        "request_key in the scope ran /sbin/request-key"
    );
    session.audited();
}

/// `kernel.modprobe` pointed at a helper for the length of a scenario.
struct Modprobe(String);

impl Modprobe {
    const SYSCTL: &str = "/proc/sys/kernel/modprobe";

    fn point_at(path: &Path) -> Self {
        let before = std::fs::read_to_string(Self::SYSCTL).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(Self::SYSCTL, path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        Self(before.trim().to_owned())
    }
}

impl Drop for Modprobe {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::SYSCTL, &self.0);
    }
}

fn module_autoload_refused(env: &Env) {
    // The kernel runs modprobe as root outside the scope for a module a socket asked for.
    let script = Path::new(WORK).join("contained/modprobe.sh");
    let helper = Helper::install(&script, &Path::new(WORK).join("contained/modprobe.ran"));
    let _modprobe = Modprobe::point_at(&script);
    let mut case = escape(
        "request-module",
        &["request-module"],
        0,
        ("kernel_module_request", "kernel"),
    );
    case.shows = Shows::Nothing;
    let mut session = case.start(env, &[]);
    session.works_outside();
    assert!(
        helper.ran(),
        "a netlink socket outside every scope did not run modprobe"
    );
    helper.forget();
    session.refused_inside();
    assert!(!helper.ran(), "a netlink socket in the scope ran modprobe");
    session.audited();
}

/// Root in a scope uses up uid 0's inotify instances, which the agent shares. No LSM hook
/// sees an instance being made, so nothing refuses it: what must hold is that it does not
/// blind the agent. Outside every scope the exhaustion bites (inotify_init1 fails with
/// EMFILE); an agent started then still starts, and still applies a bundle dropped into
/// its directory, through its periodic resync, and records it.
fn using_up_inotify_instances_does_not_blind_the_agent(env: &Env) {
    let kit = Kit::new("inotify");
    let first = kit.bundle(
        env,
        "inotify-escape",
        std::slice::from_ref(&env.escape),
        &[],
    );
    let agent = kit.agent(env);
    enforcer_ok(env, &["push", &first]);
    let mut holder = Command::new(&env.escape);
    holder
        .arg("inotify-exhaust")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    enforcer::host::cgroup::spawn_into(&mut holder, &cgroup(LIVE))
        .unwrap_or_else(|e| panic!("cannot prepare the move into {LIVE}: {e}"));
    let mut holder = Reaped(holder.spawn().expect("start escape inotify-exhaust"));
    let mut said = String::new();
    BufReader::new(holder.0.stdout.take().expect("piped"))
        .read_line(&mut said)
        .expect("read what the holder holds");
    assert!(
        said.starts_with("holding ") && !said.starts_with("holding 0 "),
        "escape inotify-exhaust in {LIVE}: {said:?}"
    );

    // The exhaustion bites outside the scope too: uid 0's instances are all taken.
    // SAFETY: plain syscall; a descriptor it returns is closed at once.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    let err = std::io::Error::last_os_error();
    if fd >= 0 {
        // SAFETY: the descriptor just made.
        unsafe { libc::close(fd) };
    }
    assert!(
        fd < 0 && err.raw_os_error() == Some(libc::EMFILE),
        "inotify_init1 outside every scope, after {said:?}: {fd} ({err})"
    );

    // An agent started now cannot watch its directories: it starts anyway, and a bundle
    // dropped into the directory (no push) takes effect by the resync.
    agent.stop();
    let agent = kit.agent(env);
    let watches = inotify_descriptors(agent.pid());
    assert!(
        watches == 0,
        "the restarted agent holds {watches} inotify descriptor(s): the holder let one go"
    );
    let late = copy_executable(&env.probe, &kit.work.join("bin/late-tool"));
    expect_eperm(Some(LIVE), &late);
    let second = kit.bundle(env, "inotify-late", std::slice::from_ref(&late), &[]);
    std::fs::copy(&second, kit.bundle_dir.join("inotify-late.json"))
        .unwrap_or_else(|e| panic!("drop {second} into the bundle directory: {e}"));
    within(Duration::from_secs(60), || {
        check_exit(Some(LIVE), &late, PROBE_EXIT)
    });
    drop(holder);
    agent.stop();
    let accepted = audit_records(env, &kit.audit_dir())
        .into_iter()
        .filter(|r| {
            let field = |k: &str| find_key(r, k).and_then(|v| v.as_str());
            field("bundle_id") == Some("inotify-late") && field("change") == Some("accepted")
        })
        .count();
    assert!(
        accepted == 1,
        "the audit log records the dropped bundle inotify-late as accepted {accepted} times"
    );
}

/// How many inotify instances process `pid` holds (its descriptors' links say
/// `anon_inode:inotify`).
fn inotify_descriptors(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "anon_inode:inotify")
        .count()
}
