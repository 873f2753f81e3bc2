//! Running the built `enforcer` binary from the CLI integration tests.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// What one run of the binary said and how it ended.
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built binary with `args` in `dir`. The signing key and trust store a
/// developer may have in the environment are not passed on: every test names its own.
pub(crate) fn enforcer<I, S>(dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args(args)
        .current_dir(dir)
        .env_remove("ENFORCER_TRUST")
        .env_remove("ENFORCER_SIGNING_KEY")
        .output()
        .expect("run enforcer");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
