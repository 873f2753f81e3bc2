//! The clocks the agent reads, each once here: the kernel programs compare deadlines with
//! CLOCK_BOOTTIME, systemd compares `MONOTONIC_USEC` with CLOCK_MONOTONIC, and /proc
//! reports start times in boot-time clock ticks.

use std::io;

/// A clock as nanoseconds since its epoch.
fn read_ns(clock: libc::clockid_t) -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; no other memory is touched.
    if unsafe { libc::clock_gettime(clock, &raw mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).map_err(io::Error::other)?;
    let nanos = u64::try_from(ts.tv_nsec).map_err(io::Error::other)?;
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// CLOCK_BOOTTIME in nanoseconds: runs on during suspend; what grant deadlines and
/// break-glass windows in the kernel are measured against.
pub fn boot_ns() -> io::Result<u64> {
    read_ns(libc::CLOCK_BOOTTIME)
}

/// CLOCK_MONOTONIC in nanoseconds: stops during suspend; `task_struct::start_time`.
pub fn monotonic_ns() -> io::Result<u64> {
    read_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds per clock tick (`_SC_CLK_TCK`), the unit of start times in /proc.
#[must_use]
pub fn ns_per_tick() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    1_000_000_000 / hz.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward_and_boot_includes_monotonic() {
        let mono = monotonic_ns().expect("monotonic");
        let boot = boot_ns().expect("boot");
        assert!(mono > 0 && boot >= mono, "boot {boot} < monotonic {mono}");
        assert!(boot_ns().expect("boot") >= boot);
        assert!(ns_per_tick() > 0);
    }

    #[test]
    fn boot_clock_moves_forward() {
        let a = boot_ns().expect("clock");
        let b = boot_ns().expect("clock");
        assert!(b >= a && a > 0);
    }
}
