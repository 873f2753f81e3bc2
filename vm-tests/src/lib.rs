//! Shared by the runner and the fixtures.

/// Exit code of the `probe` fixture.
pub const PROBE_EXIT: i32 = 7;
/// Exit code of the `unlisted` fixture.
pub const UNLISTED_EXIT: i32 = 9;
