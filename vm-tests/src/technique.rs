//! The protocol of the technique fixtures (`inject`, `escape`): each runs one technique to
//! its end and says how it ended in its exit code, so the runner can assert the exact
//! errno of a refusal and tell a technique that really worked from one that failed.
//!
//! - [`INJECTED`]: injected machine code ran (it returns this value itself);
//! - [`WORKED`]: a technique with no code of its own reached its effect;
//! - `ERRNO_BASE + errno`: the step the fixture printed was refused with `errno`;
//! - anything else: the fixture failed for another reason (printed), or was killed.

/// Exit code of injected code that really ran: `CODE` returns it.
pub const INJECTED: i32 = 42;
/// Exit code of a technique without injected code that reached its effect.
pub const WORKED: i32 = 0;
/// Exit code base of a refused step: `ERRNO_BASE + errno`.
pub const ERRNO_BASE: i32 = 100;

/// x86_64 machine code: `mov eax, 42; ret` (the immediate in little-endian bytes).
pub const CODE: [u8; 6] = {
    let imm = INJECTED.to_le_bytes();
    [0xb8, imm[0], imm[1], imm[2], imm[3], 0xc3]
};

/// The exit code that says `errno` refused a step.
#[must_use]
pub const fn refused_with(errno: i32) -> i32 {
    ERRNO_BASE + errno
}

/// What an exit code says, for messages.
#[must_use]
pub fn describe(code: i32) -> String {
    match code {
        INJECTED => "injected code ran".into(),
        WORKED => "the technique worked".into(),
        c if c > ERRNO_BASE && c < ERRNO_BASE + 134 => {
            let errno = c - ERRNO_BASE;
            format!("refused: {}", std::io::Error::from_raw_os_error(errno))
        }
        c => format!("failed otherwise (exit {c})"),
    }
}

/// Ends the fixture after `step` failed with the last OS error: prints it and exits with
/// `ERRNO_BASE + errno`.
pub fn fail(step: &str) -> ! {
    let err = std::io::Error::last_os_error();
    println!("{step}: {err}");
    std::process::exit(refused_with(err.raw_os_error().unwrap_or(0)))
}

/// Ends the fixture after a failure that is not a refusal (a broken setup).
pub fn broken(what: &str) -> ! {
    println!("{what}");
    std::process::exit(2)
}

/// Calls the code at `at` and exits with what it returns.
///
/// # Safety
/// `at` must hold [`CODE`] (or other code that returns) and be executable.
pub unsafe fn run_code(at: *const u8) -> ! {
    // SAFETY: the caller promises executable code that returns an int.
    let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(at) };
    std::process::exit(f())
}
