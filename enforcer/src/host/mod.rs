//! Facts about the host the agent runs on: cgroup v2 scopes, IMA, the digests that
//! identify programs, their shared-library closure, and whether enforcement can start.

pub mod cgroup;
pub mod digest;
pub mod elf;
pub mod ima;
pub mod preflight;
