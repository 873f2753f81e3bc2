//! enforcer: execution is conditional on authorization.
//!
//! Inside a governed scope (a cgroup v2 subtree) a program may execute only when the
//! SHA-256 of its content is covered by a live, unrevoked authorization signed by trusted
//! keys. The decision is taken in the kernel by BPF LSM programs; this crate is the agent
//! that verifies authorizations and loads them into the programs' maps, and the command
//! line that security teams use to build and sign them.
//!
//! The map, in the order data flows:
//! - [`authz`]: the authorization pipeline. Signed artifacts (bundles, revocations,
//!   break-glass), the trust store, verification, the acceptor's state (serials,
//!   revocations), and the [`authz::policy::Policy`] they amount to.
//! - [`kernel`]: the kernel side as the agent sees it. The BPF object, the running
//!   kernel's layout (BTF), load/attach/pin, the pinned maps and their ABI, and the
//!   atomic switch of a policy into them.
//! - [`host`]: facts about this host. cgroups, IMA, file digests, ELF library closures,
//!   and the checks that say whether enforcement can start here.
//! - [`agent`]: the agent as a service. Its settings, start-up, reconcile, on_revoke
//!   kills, push staging, status and the serving loop.
//! - [`service`]: the plumbing a service talks through. The control socket's typed
//!   protocol, the read-only HTTP window (probes, metrics and the JSON API), and systemd (readiness,
//!   watchdog, journald).
//! - [`audit`]: the tamper-evident audit log of decisions, and execution lineage; a
//!   transparency log since format 2 (`audit::tlog`: Merkle proofs, signed checkpoints,
//!   tiles; `audit::proof`: one record proven offline).
//! - [`witness`]: a transparency-log witness (C2SP `tlog-witness`), both sides: the
//!   server that cosigns a log's checkpoints only while they extend what it saw, and the
//!   client a log asks witnesses with.
//! - [`debian`]: Debian packages as a source of grants. Contents authenticated through
//!   apt's signed chain (InRelease, Packages, .deb), dpkg's view of a root, and drift.
//! - [`cli`]: the command line.
//! - [`fsutil`] and [`clock`]: one helper for each filesystem habit and each clock.

pub mod agent;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod debian;
pub mod fsutil;
pub mod host;
pub mod kernel;
pub mod paths;
pub mod service;
#[cfg(test)]
mod testing;
pub mod witness;
