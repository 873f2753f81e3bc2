//! Every well-known path of the agent, in one place: the defaults of its settings, what
//! `install-unit` writes, and what the kernel side expects.

/// The agent's configuration file.
pub const CONFIG: &str = "/etc/enforcer/config.toml";
/// Keys that may sign bundles, revocations and break-glass artifacts.
pub const TRUST: &str = "/etc/enforcer/trust.toml";
/// Signed artifacts, watched; pushed artifacts are kept here.
pub const BUNDLE_DIR: &str = "/etc/enforcer/bundles";
/// Accepted serials and revocations (rollback protection).
pub const STATE_DIR: &str = "/var/lib/enforcer/state";
/// The hash-chained audit log.
pub const AUDIT_DIR: &str = "/var/lib/enforcer/audit";
/// The key that signs audit checkpoints, used when the file exists.
pub const HOST_KEY: &str = "/etc/enforcer/audit-host.key";
/// The control socket, in a root-only directory.
pub const SOCKET: &str = "/run/enforcer/control.sock";
/// Where the programs, links and maps are pinned on bpffs.
pub const PIN_DIR: &str = "/sys/fs/bpf/enforcer";
/// The cgroup v2 mount; scope paths are relative to it.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where a governed task may write when the operator names nothing more for its scope:
/// scratch space nothing outside the scope runs from.
pub const DEFAULT_WRITABLE: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];
/// Unix sockets governed tasks may reach outside their scope by default: journald's, so
/// their logs are kept (systemd-journald runs nothing it is sent).
pub const DEFAULT_ALLOWED_SOCKETS: [&str; 3] = [
    "/run/systemd/journal/socket",
    "/run/systemd/journal/stdout",
    "/dev/log",
];

/// Where `enforcer bundle apt-hook` writes unsigned candidate bundles for the security team
/// to review and sign after an upgrade changes granted packages.
pub const APT_CANDIDATES: &str = "/var/lib/enforcer/apt-candidates";
