//! The gates every change passes before the VM suite: formatting, and clippy with
//! warnings as errors on the host crates. enforcer-ebpf is left out: it builds only for
//! the BPF target with Debian's rustc (enforcer's build script builds it, and the
//! verifier is its strictest lint).

use anyhow::Result;

use crate::Tally;
use crate::cmd;
use crate::workspace::{Workspace, cargo};

/// Runs each gate and counts it as one test.
pub(crate) fn run(ws: &Workspace) -> Result<Tally> {
    let gates: [(&str, &[&str]); 2] = [
        ("cargo fmt --check", &["fmt", "--all", "--check"]),
        (
            "cargo clippy -D warnings",
            &[
                "clippy",
                "--workspace",
                "--exclude",
                "enforcer-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
    ];
    let mut tally = Tally::default();
    for (name, args) in gates {
        let status = cmd::stream(cargo().current_dir(&ws.root).args(args), |line| {
            println!("{line}");
        })?;
        if status.success() {
            println!("lint: PASS {name}");
            tally.passed += 1;
        } else {
            println!("lint: FAIL {name} ({status}): fix what it printed above");
            tally.failed += 1;
        }
    }
    Ok(tally)
}
