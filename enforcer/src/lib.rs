//! enforcer: execution is conditional on authorization.
//!
//! Inside a governed scope (a cgroup v2 subtree) a program may execute only when the
//! SHA-256 of its content is covered by a live, unrevoked authorization signed by trusted
//! keys. The decision is taken in the kernel by a BPF LSM program; this crate is the agent
//! that verifies authorizations and loads them into the program's maps, and the command
//! line that security teams use to build and sign them.
//!
//! One module per concept:
//! - [`digest`]: SHA-256 file digests, the identity of a program.
//! - [`digest_cache`]: what the kernel's cache of file digests needs from the loader.
//! - [`elf`]: the shared-library closure of a program.
//! - [`policy`]: what the kernel should enforce, and the local (test-only) policy file.
//! - [`btf`]: struct layouts from the running kernel's BTF.
//! - [`cgroup`]: governed scopes as cgroup v2 directories.
//! - [`ima`]: whether an IMA policy hands out cached digests underneath ours.
//! - [`kernel`]: loading, attaching, pinning and filling the BPF program and maps.
//! - [`artifact`]: signed artifacts (bundles, revocations): envelope, schema, parsing.
//! - [`trust`]: trusted keys, roles and k-of-n thresholds; signing keys.
//! - [`verify`]: the one place that decides whether an artifact is authorized.
//! - [`state`]: accepted serials and revocations, persisted atomically.
//! - [`audit`]: the tamper-evident audit log of decisions, and execution lineage.
//! - [`config`]: the agent's configuration file.
//! - [`control`]: the local control socket's protocol, server and client.
//! - [`daemon`]: the agent as a service: live updates, expiry, on_revoke, signals.
//! - [`systemd`]: running under systemd: sd_notify readiness, reload, watchdog; journald.
//! - [`cli`]: the command line.

pub mod artifact;
pub mod audit;
pub mod authz;
pub mod btf;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod digest;
pub mod digest_cache;
pub mod elf;
pub mod ima;
pub mod kernel;
pub mod policy;
pub mod preflight;
pub mod state;
pub mod systemd;
pub mod trust;
pub mod verify;
