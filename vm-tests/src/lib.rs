//! Shared by the runner and the fixtures.

pub mod technique;

/// Exit code of the `probe` fixture.
pub const PROBE_EXIT: i32 = 7;
/// Exit code of the `unlisted` fixture.
pub const UNLISTED_EXIT: i32 = 9;

/// Exit codes of the `attacks` fixture.
pub mod attack {
    /// The technique worked.
    pub const WORKED: i32 = 0;
    /// Refused with EPERM.
    pub const EPERM: i32 = 1;
    /// Failed some other way (printed).
    pub const OTHER: i32 = 2;
    /// Refused with EACCES (ptrace checks behind /proc/PID/mem report this).
    pub const EACCES: i32 = 3;
    /// Exit code of injected machine code that really ran.
    pub const INJECTED_CODE: i32 = super::technique::INJECTED;
}
