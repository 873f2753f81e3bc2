//! Types shared between the kernel programs (`enforcer-ebpf`) and the agent (`enforcer`).
//!
//! Every type here is `#[repr(C)]` with explicit padding: a hash-map lookup compares raw
//! key bytes, so an implicit padding hole with stale bytes would make a lookup miss. The
//! layout tests at the bottom pin sizes and offsets so that a change is a conscious one.
#![no_std]

/// Length of a SHA-256 digest, the only algorithm enforcement accepts.
pub const DIGEST_LEN: usize = 32;

/// IMA's identifier for SHA-256 (`enum hash_algo` in include/uapi/linux/hash_info.h).
pub const HASH_ALGO_SHA256: i64 = 4;

/// Deepest cgroup level the kernel program walks when it looks for a governed ancestor.
/// The agent refuses scopes deeper than this, so no governed cgroup can be out of reach.
pub const MAX_SCOPE_LEVEL: u32 = 16;

/// Capacity of the scope map.
pub const MAX_SCOPES: u32 = 1024;
/// Capacity of the grant map (all scopes together, both slots).
pub const MAX_GRANTS: u32 = 262_144;
/// Grant sets the grant map holds side by side (`GrantKey::slot`): the active one, and
/// the idle one the agent fills before it switches to it.
pub const GRANT_SLOTS: u32 = 2;
/// Most grants one policy may hold: during a switch both slots are full, so a policy gets
/// half the map.
pub const MAX_POLICY_GRANTS: u32 = MAX_GRANTS / GRANT_SLOTS;
/// Size of the decision ring buffer in bytes (a power of two, as the kernel requires).
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Length of the exec path carried in an event (truncated, NUL-terminated). The event
/// stays at 256 bytes: above that, LLVM zeroes and copies it through calls to `memset`
/// and `memmove`, which 6.1's verifier cannot follow.
pub const EVENT_PATH_LEN: usize = 120;
/// Length of the authorization id prefix carried in grants and events.
pub const AUTH_ID_LEN: usize = 16;
/// Processes governed tasks may not signal (the agent's, `names::PROTECTED`).
pub const MAX_PROTECTED: u32 = 64;
/// Processes whose current image the lineage map remembers (least recently used go).
pub const MAX_TRACKED_IMAGES: u32 = 65_536;

/// Names of the maps and globals, shared so the loader and the program cannot disagree.
pub mod names {
    pub const PROTECTED: &str = "ENFORCER_PROTECTED";
    pub const FILE_INODE_OFFSET: &str = "FILE_INODE_OFFSET";
    pub const FILE_DENTRY_OFFSET: &str = "FILE_DENTRY_OFFSET";
    pub const DENTRY_NAME_OFFSET: &str = "DENTRY_NAME_OFFSET";
    pub const INODE_NLINK_OFFSET: &str = "INODE_NLINK_OFFSET";
    pub const VMA_FILE_OFFSET: &str = "VMA_FILE_OFFSET";
    pub const VMA_FLAGS_OFFSET: &str = "VMA_FLAGS_OFFSET";
    pub const FILE_MODE_OFFSET: &str = "FILE_MODE_OFFSET";
    pub const INODE_SB_OFFSET: &str = "INODE_SB_OFFSET";
    pub const SB_MAGIC_OFFSET: &str = "SB_MAGIC_OFFSET";
    /// Digest cache: `inode::i_writecount`, `dentry::d_inode`, and which argument of the
    /// `inode_setattr` hook is the dentry (it gained an idmap argument in 6.3).
    pub const INODE_WRITECOUNT_OFFSET: &str = "INODE_WRITECOUNT_OFFSET";
    pub const DENTRY_INODE_OFFSET: &str = "DENTRY_INODE_OFFSET";
    pub const SETATTR_DENTRY_ARG: &str = "SETATTR_DENTRY_ARG";
    pub const SCOPES: &str = "ENFORCER_SCOPES";
    pub const GRANTS: &str = "ENFORCER_GRANTS";
    /// One-element array: which grant slot the program looks grants up in
    /// ([`crate::active_slot_of`]).
    pub const ACTIVE_SLOT: &str = "ENFORCER_ACTIVE_SLOT";
    pub const EVENTS: &str = "ENFORCER_EVENTS";
    pub const DROPPED: &str = "ENFORCER_DROPPED";
    pub const BPRM_FILE_OFFSET: &str = "BPRM_FILE_OFFSET";
    pub const BPRM_INTERP_OFFSET: &str = "BPRM_INTERP_OFFSET";
    pub const EXEC_SEQ: &str = "ENFORCER_EXEC_SEQ";
    pub const IMAGES: &str = "ENFORCER_IMAGES";
    pub const TASK_REAL_PARENT_OFFSET: &str = "TASK_REAL_PARENT_OFFSET";
    pub const TASK_GROUP_LEADER_OFFSET: &str = "TASK_GROUP_LEADER_OFFSET";
    pub const TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
    pub const TASK_START_TIME_OFFSET: &str = "TASK_START_TIME_OFFSET";
    /// Inodes the programs know by identity ([`crate::InodeKey`]): writable roots of a
    /// scope, allowed sockets, secrets.
    pub const INODES: &str = "ENFORCER_INODES";
    pub const INODE_INO_OFFSET: &str = "INODE_INO_OFFSET";
    pub const INODE_MODE_OFFSET: &str = "INODE_MODE_OFFSET";
    pub const SB_DEV_OFFSET: &str = "SB_DEV_OFFSET";
    pub const DENTRY_PARENT_OFFSET: &str = "DENTRY_PARENT_OFFSET";
    pub const QSTR_NAME_OFFSET: &str = "QSTR_NAME_OFFSET";
    pub const TASK_PERSONALITY_OFFSET: &str = "TASK_PERSONALITY_OFFSET";
    pub const USERNS_LEVEL_OFFSET: &str = "USERNS_LEVEL_OFFSET";
    pub const SOCK_CGROUP_OFFSET: &str = "SOCK_CGROUP_OFFSET";
    pub const CGROUP_KN_OFFSET: &str = "CGROUP_KN_OFFSET";
    pub const KERNFS_ID_OFFSET: &str = "KERNFS_ID_OFFSET";
    pub const CGROUP_PARENT_OFFSET: &str = "CGROUP_PARENT_OFFSET";
    pub const UNIX_DENTRY_OFFSET: &str = "UNIX_DENTRY_OFFSET";
    pub const SOCKET_SK_OFFSET: &str = "SOCKET_SK_OFFSET";
    pub const BPRM_VMA_OFFSET: &str = "BPRM_VMA_OFFSET";
    pub const FILE_FLAGS_OFFSET: &str = "FILE_FLAGS_OFFSET";
    pub const INODE_RDEV_OFFSET: &str = "INODE_RDEV_OFFSET";
    pub const TASK_CGROUPS_OFFSET: &str = "TASK_CGROUPS_OFFSET";
    pub const CSS_SET_DFL_CGRP_OFFSET: &str = "CSS_SET_DFL_CGRP_OFFSET";
    pub const TASK_THREAD_PID_OFFSET: &str = "TASK_THREAD_PID_OFFSET";
    pub const PID_LEVEL_OFFSET: &str = "PID_LEVEL_OFFSET";
    pub const KEY_TYPE_OFFSET: &str = "KEY_TYPE_OFFSET";
    pub const KEY_TYPE_NAME_OFFSET: &str = "KEY_TYPE_NAME_OFFSET";
    /// `file::private_data`, set only where the kernel has no `mmap_backing_file` hook
    /// (6.1): there an overlayfs file keeps its layer's file in it, and the mapping guard
    /// reaches the layer through it.
    pub const OVERLAY_REAL_FILE_OFFSET: &str = "OVERLAY_REAL_FILE_OFFSET";
}

/// Scope modes (`ScopePolicy::mode`).
pub mod mode {
    /// Deny any exec that no live grant covers.
    pub const ENFORCE: u32 = 0;
    /// Allow, but report what would have been denied (rollout, break-glass).
    pub const MONITOR: u32 = 1;
}

/// Opt-ins a scope may carry (`ScopePolicy::flags`). Without them, doubt means deny.
pub mod scope_flags {
    /// Anonymous executable memory (mmap or mprotect with PROT_EXEC and no file): JIT
    /// runtimes need it.
    pub const ALLOW_ANON_EXEC: u32 = 1;
    /// Exec or executable mapping of a file with no name left (memfd, deleted file).
    pub const ALLOW_FILELESS: u32 = 2;
}

/// Value of the scope map, keyed by cgroup id (the cgroup directory's inode number).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopePolicy {
    /// One of [`mode`].
    pub mode: u32,
    /// Bits of [`scope_flags`].
    pub flags: u32,
    /// Break-glass: until this CLOCK_BOOTTIME deadline (nanoseconds), exec and mapping
    /// decisions in an enforcing scope are made as in monitor mode; 0 for none. The kernel
    /// compares it at every decision, so enforcement returns on time even when the agent
    /// is dead. Tamper checks keep denying meanwhile.
    pub monitor_until_boot_ns: u64,
}

/// The LSM hooks enforcer attaches to; `ExecEvent::hook` names one by index.
pub mod hook {
    pub const BPRM_CHECK_SECURITY: u32 = 0;
    pub const MMAP_FILE: u32 = 1;
    pub const FILE_MPROTECT: u32 = 2;
    pub const PTRACE_ACCESS_CHECK: u32 = 3;
    pub const PTRACE_TRACEME: u32 = 4;
    pub const BPF: u32 = 5;
    pub const TASK_KILL: u32 = 6;
    pub const FILE_OPEN: u32 = 7;
    /// Invalidates cached digests when a file's attributes (its size among them) change.
    pub const INODE_SETATTR: u32 = 8;
    /// Refuse removing or moving the pins in bpffs from a governed scope.
    pub const INODE_UNLINK: u32 = 9;
    pub const INODE_RENAME: u32 = 10;
    /// The end of a `struct file`: an executable mapping's file stops pinning its inode.
    pub const FILE_FREE_SECURITY: u32 = 11;
    /// brk and every mmap: refused under READ_IMPLIES_EXEC (an executable heap).
    pub const MMAP_ADDR: u32 = 12;
    /// Anonymous inodes: userfaultfd.
    pub const INODE_INIT_SECURITY_ANON: u32 = 13;
    pub const CAPABLE: u32 = 14;
    pub const SB_MOUNT: u32 = 15;
    pub const SB_UMOUNT: u32 = 16;
    pub const SB_PIVOTROOT: u32 = 17;
    pub const MOVE_MOUNT: u32 = 18;
    pub const SB_KERN_MOUNT: u32 = 19;
    pub const TASK_ALLOC: u32 = 20;
    pub const KERNEL_MODULE_REQUEST: u32 = 21;
    pub const KERNEL_LOAD_DATA: u32 = 22;
    pub const KERNEL_READ_FILE: u32 = 23;
    pub const LOCKED_DOWN: u32 = 24;
    pub const PERF_EVENT_OPEN: u32 = 25;
    pub const TASK_SETSCHEDULER: u32 = 26;
    pub const TASK_SETNICE: u32 = 27;
    pub const TASK_SETIOPRIO: u32 = 28;
    pub const TASK_PRLIMIT: u32 = 29;
    pub const UNIX_STREAM_CONNECT: u32 = 30;
    pub const UNIX_MAY_SEND: u32 = 31;
    pub const INODE_CREATE: u32 = 32;
    pub const INODE_LINK: u32 = 33;
    pub const INODE_SYMLINK: u32 = 34;
    pub const INODE_MKDIR: u32 = 35;
    pub const INODE_RMDIR: u32 = 36;
    pub const INODE_MKNOD: u32 = 37;
    pub const INODE_SETXATTR: u32 = 38;
    pub const INODE_REMOVEXATTR: u32 = 39;
    /// 6.2+ only (before, ACLs are set through setxattr): attached where the kernel has it.
    pub const INODE_SET_ACL: u32 = 40;
    pub const INODE_REMOVE_ACL: u32 = 41;
    /// An inode leaves memory: its guard count goes with it.
    pub const INODE_FREE_SECURITY: u32 = 42;
    /// After an exec's point of no return: remembers its stack, which the exec's first
    /// mapping checks.
    pub const BPRM_COMMITTED_CREDS: u32 = 43;
    /// fcntl(F_SETFL, O_DIRECT).
    pub const FILE_FCNTL: u32 = 44;
    /// 6.12+ only: the layer file an overlayfs mapping really maps.
    pub const MMAP_BACKING_FILE: u32 = 45;
    /// Terminal input injection (TIOCSTI, TIOCLINUX), and ioctls that change an inode.
    pub const FILE_IOCTL: u32 = 46;
    /// SIGIO and its F_SETSIG replacements, sent for a file's owner.
    pub const FILE_SEND_SIGIOTASK: u32 = 47;
    /// Writes through a descriptor opened elsewhere, to the kernel's own files.
    pub const FILE_PERMISSION: u32 = 48;
    /// `file_ioctl` for 32-bit callers: 6.8+ and stable kernels, attached where present.
    pub const FILE_IOCTL_COMPAT: u32 = 49;
    /// request_key(2)'s upcall: the kernel runs /sbin/request-key outside the scope.
    pub const KEY_ALLOC: u32 = 50;
    /// Not an LSM hook but a kernel function, traced on entry: the ELF loader's executable
    /// zero-fill, which `mmap_addr` then refuses (see [`TRACED`]).
    pub const VM_BRK_FLAGS: u32 = 51;
    /// Number of hooks.
    pub const COUNT: usize = 52;
    /// Kernel hook names, by index.
    pub const NAMES: [&str; COUNT] = [
        "bprm_check_security",
        "mmap_file",
        "file_mprotect",
        "ptrace_access_check",
        "ptrace_traceme",
        "bpf",
        "task_kill",
        "file_open",
        "inode_setattr",
        "inode_unlink",
        "inode_rename",
        "file_free_security",
        "mmap_addr",
        "inode_init_security_anon",
        "capable",
        "sb_mount",
        "sb_umount",
        "sb_pivotroot",
        "move_mount",
        "sb_kern_mount",
        "task_alloc",
        "kernel_module_request",
        "kernel_load_data",
        "kernel_read_file",
        "locked_down",
        "perf_event_open",
        "task_setscheduler",
        "task_setnice",
        "task_setioprio",
        "task_prlimit",
        "unix_stream_connect",
        "unix_may_send",
        "inode_create",
        "inode_link",
        "inode_symlink",
        "inode_mkdir",
        "inode_rmdir",
        "inode_mknod",
        "inode_setxattr",
        "inode_removexattr",
        "inode_set_acl",
        "inode_remove_acl",
        "inode_free_security",
        "bprm_committed_creds",
        "file_fcntl",
        "mmap_backing_file",
        "file_ioctl",
        "file_send_sigiotask",
        "file_permission",
        "file_ioctl_compat",
        "key_alloc",
        "vm_brk_flags",
    ];
    /// Hooks that not every supported kernel has: attached where present.
    pub const OPTIONAL: [u32; 4] = [
        INODE_SET_ACL,
        INODE_REMOVE_ACL,
        MMAP_BACKING_FILE,
        FILE_IOCTL_COMPAT,
    ];
    /// Kernel functions traced on entry (fentry) rather than LSM hooks: where no hook sees
    /// what a rule needs. They only note it; an LSM hook decides.
    pub const TRACED: [u32; 1] = [VM_BRK_FLAGS];

    /// Whether hook `index` is a traced kernel function ([`TRACED`]).
    #[must_use]
    pub fn is_traced(index: usize) -> bool {
        TRACED.iter().any(|&t| t as usize == index)
    }
}

/// Capabilities refused to governed tasks in the initial user namespace, root included:
/// each is a way to reach the kernel, the host or the enforcer that no agent or CI job
/// needs. Bit `n` is capability `n` (include/uapi/linux/capability.h).
pub mod capability {
    pub const CHOWN: u32 = 0;
    pub const LINUX_IMMUTABLE: u32 = 9;
    pub const NET_ADMIN: u32 = 12;
    pub const SYS_MODULE: u32 = 16;
    pub const SYS_RAWIO: u32 = 17;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_BOOT: u32 = 22;
    pub const SYS_NICE: u32 = 23;
    pub const SYS_RESOURCE: u32 = 24;
    pub const SYS_TIME: u32 = 25;
    pub const SYS_TTY_CONFIG: u32 = 26;
    pub const AUDIT_CONTROL: u32 = 30;
    pub const MAC_OVERRIDE: u32 = 32;
    pub const MAC_ADMIN: u32 = 33;
    pub const SYSLOG: u32 = 34;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
    pub const CHECKPOINT_RESTORE: u32 = 40;

    /// The refused capabilities with their names: one list, so that the set and the names
    /// in reports cannot drift apart.
    const REFUSED_NAMED: [(u32, &str); 18] = [
        (LINUX_IMMUTABLE, "CAP_LINUX_IMMUTABLE"),
        (NET_ADMIN, "CAP_NET_ADMIN"),
        (SYS_MODULE, "CAP_SYS_MODULE"),
        (SYS_RAWIO, "CAP_SYS_RAWIO"),
        (SYS_PTRACE, "CAP_SYS_PTRACE"),
        (SYS_ADMIN, "CAP_SYS_ADMIN"),
        (SYS_BOOT, "CAP_SYS_BOOT"),
        (SYS_NICE, "CAP_SYS_NICE"),
        (SYS_RESOURCE, "CAP_SYS_RESOURCE"),
        (SYS_TIME, "CAP_SYS_TIME"),
        (SYS_TTY_CONFIG, "CAP_SYS_TTY_CONFIG"),
        (AUDIT_CONTROL, "CAP_AUDIT_CONTROL"),
        (MAC_OVERRIDE, "CAP_MAC_OVERRIDE"),
        (MAC_ADMIN, "CAP_MAC_ADMIN"),
        (SYSLOG, "CAP_SYSLOG"),
        (PERFMON, "CAP_PERFMON"),
        (BPF, "CAP_BPF"),
        (CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE"),
    ];

    /// The refused set.
    pub const REFUSED: u64 = {
        let mut set = 0u64;
        let mut i = 0;
        while i < REFUSED_NAMED.len() {
            set |= 1 << REFUSED_NAMED[i].0;
            i += 1;
        }
        set
    };

    /// Whether `cap` is refused to governed tasks.
    #[must_use]
    pub const fn refused(cap: u32) -> bool {
        cap < 64 && REFUSED & (1 << cap) != 0
    }

    /// The name of a refused capability, for reports.
    #[must_use]
    pub const fn name(cap: u32) -> &'static str {
        let mut i = 0;
        while i < REFUSED_NAMED.len() {
            if REFUSED_NAMED[i].0 == cap {
                return REFUSED_NAMED[i].1;
            }
            i += 1;
        }
        "another capability"
    }
}

/// What an [`InodeKey`] entry says about the inode (bits of the `ENFORCER_INODES` value).
pub mod inode_rule {
    /// Governed tasks of the key's scope may create, change and remove files below this
    /// directory (or this file).
    pub const WRITABLE_ROOT: u32 = 1;
    /// Governed tasks may connect to this Unix socket although its owner lies outside their
    /// scope (journald's sockets). Scope 0: every scope.
    pub const SOCKET: u32 = 2;
    /// Governed tasks may not open this file at all, not even to read (the audit host
    /// key). Scope 0: every scope.
    pub const SECRET: u32 = 4;
    /// Governed tasks of the key's scope may open this device node (beside the harmless
    /// ones every scope may use).
    pub const DEVICE: u32 = 8;
}

/// Key of the inode map: an inode named by its device and number, for one scope (0: for
/// every scope).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub scope_id: u64,
    pub ino: u64,
    /// `super_block::s_dev` (the kernel's encoding: major << 20 | minor).
    pub dev: u32,
    /// Always zero: the kernel compares key bytes.
    pub _pad: u32,
}

impl InodeKey {
    #[must_use]
    pub const fn new(scope_id: u64, dev: u32, ino: u64) -> Self {
        Self {
            scope_id,
            ino,
            dev,
            _pad: 0,
        }
    }
}

/// Capacity of the inode map.
pub const MAX_INODE_RULES: u32 = 4096;

/// Value of the digest cache, an inode storage map: a file's SHA-256, kept until the file
/// may have changed, so an exec or executable mapping of an unchanged file costs a lookup
/// instead of a hash of the whole file.
///
/// Every way to change a file's content needs write access to it, which is taken by an
/// open for writing or by a size change (`truncate(2)` by path): both bump `generation`
/// (hooks `file_open` and `inode_setattr`). A digest is stored only when no writer exists
/// before and after hashing and `generation` did not move meanwhile, and it is used only
/// while `valid_for == generation + 1`. `docs/performance.md` has the reasoning.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedDigest {
    /// Moves whenever the file may have changed.
    pub generation: u64,
    /// `generation + 1` of the moment `digest` was computed; 0 when never.
    pub valid_for: u64,
    /// Programs filling the entry now; only the one that found 0 stores its digest.
    pub fillers: u64,
    pub digest: [u8; DIGEST_LEN],
}

/// Key of the grant map: a file digest allowed in one scope, in one of the two grant sets.
///
/// The map holds two complete grant sets, told apart by `slot`; the program looks grants
/// up only in the slot the `ACTIVE_SLOT` array names. The agent writes a new set into the
/// idle slot while the active one keeps deciding, then switches every later lookup to it
/// with one array write: no exec ever sees half of an update.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GrantKey {
    /// cgroup id of the governed scope (not of a descendant).
    pub scope_id: u64,
    /// Which grant set (below [`GRANT_SLOTS`]).
    pub slot: u32,
    /// Always zero: the kernel compares key bytes.
    pub _pad: u32,
    /// SHA-256 of the file's content.
    pub digest: [u8; DIGEST_LEN],
}

/// The grant slot an `ACTIVE_SLOT` value selects: its low bit. The bits above count the
/// agent's writes to the grant map, so an agent that remembers what the map holds can tell
/// that another process wrote it since.
#[must_use]
pub const fn active_slot_of(value: u32) -> u32 {
    value % GRANT_SLOTS
}

impl GrantKey {
    /// A key with its padding zeroed, as every lookup and update must use.
    #[must_use]
    pub const fn new(scope_id: u64, slot: u32, digest: [u8; DIGEST_LEN]) -> Self {
        Self {
            scope_id,
            slot,
            _pad: 0,
            digest,
        }
    }
}

/// A kernel grant entry: the value of the grant map, for one (scope, slot, digest) key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntry {
    /// Expiry on CLOCK_BOOTTIME in nanoseconds, checked by the kernel at every exec so a
    /// grant dies on time even when the agent is dead. `u64::MAX` never expires.
    pub not_after_boot_ns: u64,
    /// Serial of the authorization that carries this grant.
    pub auth_serial: u64,
    /// First bytes of the authorization's identity (SHA3-512 of its payload).
    pub auth_id: [u8; AUTH_ID_LEN],
}

impl GrantEntry {
    /// No grant: what a decision carries when none matched.
    pub const ZERO: Self = Self {
        not_after_boot_ns: 0,
        auth_serial: 0,
        auth_id: [0; AUTH_ID_LEN],
    };
}

/// Value of the lineage map, keyed by tgid: the image a process runs now, and the
/// authorization that let it start.
///
/// The start time of the process (its thread-group leader's `start_time`) guards against
/// pid reuse: a record whose start time differs belongs to an earlier process. The
/// authorization lets the agent find the processes a revoked authorization started.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub exec_id: u64,
    /// CLOCK_MONOTONIC start time of the process's thread-group leader.
    pub leader_start_ns: u64,
    /// Governed scope the exec was decided in.
    pub scope_id: u64,
    /// Serial of the authorization whose grant allowed the exec; 0, with `auth_id` zero,
    /// when no grant did (monitor mode or break-glass let it run). For a script, the
    /// interpreter's exec, decided last, is the one recorded.
    pub auth_serial: u64,
    /// Identity prefix of that authorization.
    pub auth_id: [u8; AUTH_ID_LEN],
}

/// What the kernel decided (`ExecEvent::decision`).
pub mod decision {
    pub const ALLOW: u32 = 1;
    pub const DENY: u32 = 2;
    /// Monitor mode: would have been denied, was allowed.
    pub const WOULD_DENY: u32 = 3;
}

/// Why (`ExecEvent::reason`).
pub mod reason {
    /// A live grant for this scope covers the digest.
    pub const GRANTED: u32 = 0;
    /// No grant for this digest in this scope.
    pub const NOT_GRANTED: u32 = 1;
    /// The grant exists but its expiry has passed.
    pub const EXPIRED: u32 = 2;
    /// IMA could not produce a digest for the file.
    pub const DIGEST_UNAVAILABLE: u32 = 3;
    /// IMA produced a digest with another algorithm than SHA-256.
    pub const UNEXPECTED_ALGORITHM: u32 = 4;
    /// The loader did not configure the program (no file offset).
    pub const NOT_CONFIGURED: u32 = 5;
    /// Exec or executable mapping of a file with no name (memfd, deleted).
    pub const FILELESS: u32 = 6;
    /// Anonymous executable memory.
    pub const ANON_EXEC: u32 = 7;
    /// A file mapping made executable after it was mapped (its digest was never checked).
    pub const LATE_EXEC: u32 = 8;
    /// ptrace, /proc/PID/mem, bpf() or a signal to the agent: tampering.
    pub const TAMPER: u32 = 9;
    /// Executable mapping of a file someone can write (an open writable descriptor or a
    /// shared writable mapping): its code could change after the check.
    pub const WRITABLE_CODE: u32 = 10;
    /// Opening for writing, or truncating, a file that a governed task has mapped
    /// executable: like ETXTBSY for a running program. Refused to every task.
    pub const CODE_IN_USE: u32 = 11;
    /// Executable code from a filesystem whose content can change outside this kernel's
    /// view (FUSE, network and cluster filesystems).
    pub const UNTRUSTED_FS: u32 = 12;
    /// userfaultfd: fills pages of a mapping from outside it.
    pub const USERFAULTFD: u32 = 13;
    /// A capability governed tasks may not use (`ExecEvent::detail` names it).
    pub const CAPABILITY: u32 = 14;
    /// Mounting, unmounting, pivot_root, moving mounts.
    pub const MOUNT: u32 = 15;
    /// Leaving the scope: cgroup files, CLONE_INTO_CGROUP.
    pub const ESCAPE: u32 = 16;
    /// Code or data into the kernel: modules, kexec, firmware, lockdown reasons, perf.
    pub const KERNEL: u32 = 17;
    /// Writing outside the scope's writable roots.
    pub const READ_ONLY: u32 = 18;
    /// Connecting to a listener outside the scope (a deputy).
    pub const DEPUTY: u32 = 19;
    /// Opening a secret of the enforcer (the audit host key).
    pub const SECRET: u32 = 20;
    /// Code from something that is not a regular file (a device, a kernel ring buffer):
    /// its digest says nothing about what the mapping will hold.
    pub const NOT_REGULAR: u32 = 21;
    /// io_uring or O_DIRECT: the kernel writes into pinned pages after the fact, which is how
    /// code could change under a checked mapping.
    pub const PINNED_IO: u32 = 22;
    /// Acting on a process outside the scope: signalling it, or changing its scheduling.
    pub const OUTSIDE: u32 = 23;

    /// Whether a refusal for `reason` protects containment (the enforcer, the scope's
    /// boundary, the kernel, the host) rather than the content rule: such refusals hold in
    /// monitor mode and during break-glass too.
    #[must_use]
    pub const fn is_containment(reason: u32) -> bool {
        matches!(
            reason,
            TAMPER | CAPABILITY | MOUNT | ESCAPE | KERNEL | READ_ONLY | DEPUTY | SECRET | OUTSIDE
        )
    }

    /// Short, stable name used in logs and audit records.
    #[must_use]
    pub const fn name(reason: u32) -> &'static str {
        match reason {
            GRANTED => "granted",
            NOT_GRANTED => "not-granted",
            EXPIRED => "expired",
            DIGEST_UNAVAILABLE => "digest-unavailable",
            UNEXPECTED_ALGORITHM => "unexpected-algorithm",
            NOT_CONFIGURED => "not-configured",
            FILELESS => "fileless",
            ANON_EXEC => "anonymous-exec",
            LATE_EXEC => "late-exec-mapping",
            TAMPER => "tamper",
            WRITABLE_CODE => "writable-code",
            CODE_IN_USE => "code-in-use",
            UNTRUSTED_FS => "untrusted-filesystem",
            USERFAULTFD => "userfaultfd",
            CAPABILITY => "capability",
            MOUNT => "mount",
            ESCAPE => "escape",
            KERNEL => "kernel",
            READ_ONLY => "read-only",
            DEPUTY => "deputy",
            SECRET => "secret",
            NOT_REGULAR => "not-a-regular-file",
            PINNED_IO => "pinned-io",
            OUTSIDE => "outside-scope",
            _ => "unknown",
        }
    }
}

/// The content rule's decision, one function for the kernel programs and for replaying the
/// audit log (`enforcer audit replay`): what a grant lookup and the clock mean, and what
/// monitor mode and break-glass make of a refusal.
///
/// Times are nanoseconds on one clock, whichever the caller uses: the kernel passes
/// CLOCK_BOOTTIME, with grant deadlines converted to it by the agent; replay passes wall
/// time, with deadlines from the signed artifacts. The clock is read through a closure so
/// that the kernel calls its helper only where a deadline is compared, as before.
///
/// The maps hold only what the agent resolved: a grant not yet valid, or withdrawn by a
/// revocation, is left out of them, so its lookup misses and the answer is
/// [`reason::NOT_GRANTED`]. Replay resolves the same way and gets the same answer.
///
/// Everything here is `#[inline(always)]`, loop-free and index-free: the verifier sees it
/// as part of each hook.
pub mod decide {
    use super::{GrantEntry, ScopePolicy, decision, mode, reason};

    /// What a grant lookup amounts to, before monitor mode.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Content {
        pub allowed: bool,
        /// [`reason::GRANTED`], [`reason::NOT_GRANTED`] or [`reason::EXPIRED`].
        pub reason: u32,
        /// The grant found ([`GrantEntry::ZERO`] when none): an expired one too, so that
        /// the report names the authorization that lapsed.
        pub grant: GrantEntry,
    }

    /// The content rule on the result of a grant lookup: allowed while the grant lives;
    /// its deadline is the first moment it no longer allows.
    #[inline(always)]
    pub fn content(grant: Option<GrantEntry>, now: impl FnOnce() -> u64) -> Content {
        let Some(grant) = grant else {
            return Content {
                allowed: false,
                reason: reason::NOT_GRANTED,
                grant: GrantEntry::ZERO,
            };
        };
        if now() >= grant.not_after_boot_ns {
            return Content {
                allowed: false,
                reason: reason::EXPIRED,
                grant,
            };
        }
        Content {
            allowed: true,
            reason: reason::GRANTED,
            grant,
        }
    }

    /// Whether a denial for `why` in a scope with `policy` is only reported. Monitor mode,
    /// and a break-glass window until its deadline, relax the content rule alone: which
    /// code may run. Containment (tampering with the enforcer, leaving the scope, reaching
    /// the kernel or the host) is refused in every mode, so a rollout or an incident never
    /// opens the enforcer itself. The deadline is compared at every decision, so
    /// enforcement comes back on time even when the agent is dead.
    #[inline(always)]
    pub fn monitoring(policy: &ScopePolicy, why: u32, now: impl FnOnce() -> u64) -> bool {
        if reason::is_containment(why) {
            return false;
        }
        policy.mode == mode::MONITOR
            || (policy.monitor_until_boot_ns != 0 && now() < policy.monitor_until_boot_ns)
    }

    /// The final decision ([`decision`]) on a verdict: allowed, or refused as the scope's
    /// mode makes it.
    #[inline(always)]
    pub fn outcome(
        allowed: bool,
        why: u32,
        policy: &ScopePolicy,
        now: impl FnOnce() -> u64,
    ) -> u32 {
        if allowed {
            decision::ALLOW
        } else if monitoring(policy, why, now) {
            decision::WOULD_DENY
        } else {
            decision::DENY
        }
    }

    /// Whether a recorded decision for `why` is the content rule's alone, so that the
    /// grants, the clock and the scope's mode (all in the audit log) decide it again.
    /// Every other reason depends on kernel state the log does not hold (the file's
    /// filesystem, its link count, its writers, the task's cgroup...).
    #[must_use]
    pub const fn redecidable(why: u32) -> bool {
        matches!(why, reason::GRANTED | reason::NOT_GRANTED | reason::EXPIRED)
    }
}

/// One decision in a governed scope, sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// CLOCK_BOOTTIME of the decision.
    pub boot_ns: u64,
    /// cgroup the task ran in.
    pub cgroup_id: u64,
    /// Governed scope that matched (the cgroup itself or an ancestor).
    pub scope_id: u64,
    /// Serial of the matching authorization (0 when none matched).
    pub auth_serial: u64,
    /// Per-boot id of this exec decision (1, 2, 3...): with the boot id it names one
    /// exec uniquely.
    pub exec_id: u64,
    /// Exec id of the image that started this one: the image this task ran before (an
    /// exec chain), else its parent process's current image; 0 when unknown (started
    /// before enforcement, or outside every governed scope).
    pub parent_exec_id: u64,
    pub pid: u32,
    pub tgid: u32,
    /// Parent's tgid (the process that forked this one).
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// One of [`decision`].
    pub decision: u32,
    /// One of [`reason`].
    pub reason: u32,
    /// One of [`hook`]: which operation was decided.
    pub hook: u32,
    /// SHA-256 of the file (zero when unavailable).
    pub digest: [u8; DIGEST_LEN],
    /// Identity prefix of the matching authorization (zero when none matched).
    pub auth_id: [u8; AUTH_ID_LEN],
    /// What a containment refusal was about: the capability, the lockdown reason, the
    /// kernel_read_file id, the clone flags' high word (0: nothing to add).
    pub detail: u64,
    /// For execs, the file really loaded (`bprm->interp`: for a script's second pass, the
    /// interpreter); for mappings, the file's name; truncated, NUL-terminated.
    pub path: [u8; EVENT_PATH_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` data without padding holes (checked by the layout tests); every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::ScopePolicy {}
    unsafe impl aya::Pod for super::GrantKey {}
    unsafe impl aya::Pod for super::GrantEntry {}
    unsafe impl aya::Pod for super::ExecEvent {}
    unsafe impl aya::Pod for super::Image {}
    unsafe impl aya::Pod for super::CachedDigest {}
    unsafe impl aya::Pod for super::InodeKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn scope_policy_layout() {
        assert_eq!(offset_of!(ScopePolicy, flags), 4);
        assert_eq!(offset_of!(ScopePolicy, monitor_until_boot_ns), 8);
        assert_eq!(size_of::<ScopePolicy>(), 16);
    }

    #[test]
    fn grant_key_has_no_padding() {
        assert_eq!(offset_of!(GrantKey, slot), 8);
        assert_eq!(offset_of!(GrantKey, _pad), 12);
        assert_eq!(offset_of!(GrantKey, digest), 16);
        assert_eq!(size_of::<GrantKey>(), 16 + DIGEST_LEN);
    }

    #[test]
    fn grant_layout() {
        assert_eq!(size_of::<GrantEntry>(), 16 + AUTH_ID_LEN);
        assert_eq!(offset_of!(GrantEntry, auth_id), 16);
    }

    #[test]
    fn image_layout() {
        assert_eq!(offset_of!(Image, leader_start_ns), 8);
        assert_eq!(offset_of!(Image, scope_id), 16);
        assert_eq!(offset_of!(Image, auth_serial), 24);
        assert_eq!(offset_of!(Image, auth_id), 32);
        assert_eq!(size_of::<Image>(), 32 + AUTH_ID_LEN);
    }

    #[test]
    fn cached_digest_layout() {
        assert_eq!(offset_of!(CachedDigest, valid_for), 8);
        assert_eq!(offset_of!(CachedDigest, fillers), 16);
        assert_eq!(offset_of!(CachedDigest, digest), 24);
        assert_eq!(size_of::<CachedDigest>(), 24 + DIGEST_LEN);
    }

    #[test]
    fn event_layout_has_no_padding() {
        assert_eq!(offset_of!(ExecEvent, exec_id), 32);
        assert_eq!(offset_of!(ExecEvent, pid), 48);
        assert_eq!(offset_of!(ExecEvent, hook), 76);
        assert_eq!(offset_of!(ExecEvent, digest), 80);
        assert_eq!(offset_of!(ExecEvent, auth_id), 112);
        assert_eq!(offset_of!(ExecEvent, detail), 128);
        assert_eq!(offset_of!(ExecEvent, path), 136);
        assert_eq!(size_of::<ExecEvent>(), 256);
    }

    #[test]
    fn inode_key_has_no_padding() {
        assert_eq!(offset_of!(InodeKey, ino), 8);
        assert_eq!(offset_of!(InodeKey, dev), 16);
        assert_eq!(offset_of!(InodeKey, _pad), 20);
        assert_eq!(size_of::<InodeKey>(), 24);
    }

    #[test]
    fn refused_capabilities_are_named_and_chown_is_not_refused() {
        for cap in 0..64 {
            if capability::refused(cap) {
                assert!(capability::name(cap).starts_with("CAP_"), "{cap}");
            }
        }
        assert!(!capability::refused(capability::CHOWN));
        assert!(capability::refused(capability::SYS_ADMIN));
        assert!(
            !capability::refused(64),
            "out of range is not refused by accident"
        );
    }

    fn grant(not_after: u64) -> GrantEntry {
        GrantEntry {
            not_after_boot_ns: not_after,
            auth_serial: 3,
            auth_id: [7; AUTH_ID_LEN],
        }
    }

    #[test]
    fn a_grant_allows_until_its_deadline_and_not_at_it() {
        let live = decide::content(Some(grant(100)), || 99);
        assert_eq!((live.allowed, live.reason), (true, reason::GRANTED));
        assert_eq!(live.grant, grant(100));
        let lapsed = decide::content(Some(grant(100)), || 100);
        assert_eq!((lapsed.allowed, lapsed.reason), (false, reason::EXPIRED));
        assert_eq!(lapsed.grant.auth_serial, 3, "the lapsed grant is reported");
        let none = decide::content(None, || panic!("no deadline to compare"));
        assert_eq!((none.allowed, none.reason), (false, reason::NOT_GRANTED));
        assert_eq!(none.grant, GrantEntry::ZERO);
    }

    #[test]
    fn monitor_mode_and_break_glass_relax_only_the_content_rule() {
        let enforce = ScopePolicy::default();
        let monitor = ScopePolicy {
            mode: mode::MONITOR,
            ..ScopePolicy::default()
        };
        let glass = ScopePolicy {
            monitor_until_boot_ns: 50,
            ..ScopePolicy::default()
        };
        let at = |t: u64| move || t;
        assert_eq!(
            decide::outcome(true, reason::GRANTED, &enforce, at(0)),
            decision::ALLOW
        );
        assert_eq!(
            decide::outcome(false, reason::NOT_GRANTED, &enforce, at(0)),
            decision::DENY
        );
        assert_eq!(
            decide::outcome(false, reason::NOT_GRANTED, &monitor, at(0)),
            decision::WOULD_DENY
        );
        assert_eq!(
            decide::outcome(false, reason::EXPIRED, &glass, at(49)),
            decision::WOULD_DENY
        );
        assert_eq!(
            decide::outcome(false, reason::EXPIRED, &glass, at(50)),
            decision::DENY,
            "break-glass ends at its deadline"
        );
        assert_eq!(
            decide::outcome(false, reason::TAMPER, &monitor, at(0)),
            decision::DENY,
            "containment holds in monitor mode"
        );
    }

    #[test]
    fn only_content_reasons_are_redecidable() {
        for why in 0..=reason::OUTSIDE {
            let content = matches!(why, reason::GRANTED | reason::NOT_GRANTED | reason::EXPIRED);
            assert_eq!(decide::redecidable(why), content, "{}", reason::name(why));
            if reason::is_containment(why) {
                assert!(!decide::redecidable(why));
            }
        }
    }

    #[test]
    fn reason_names_are_distinct() {
        let all = [
            reason::GRANTED,
            reason::NOT_GRANTED,
            reason::EXPIRED,
            reason::DIGEST_UNAVAILABLE,
            reason::UNEXPECTED_ALGORITHM,
            reason::NOT_CONFIGURED,
            reason::FILELESS,
            reason::ANON_EXEC,
            reason::LATE_EXEC,
            reason::TAMPER,
            reason::WRITABLE_CODE,
            reason::CODE_IN_USE,
            reason::UNTRUSTED_FS,
            reason::USERFAULTFD,
            reason::CAPABILITY,
            reason::MOUNT,
            reason::ESCAPE,
            reason::KERNEL,
            reason::READ_ONLY,
            reason::DEPUTY,
            reason::SECRET,
            reason::NOT_REGULAR,
            reason::PINNED_IO,
        ];
        for (i, a) in all.iter().enumerate() {
            assert_ne!(reason::name(*a), "unknown");
            for b in &all[i + 1..] {
                assert_ne!(reason::name(*a), reason::name(*b));
            }
        }
    }
}
