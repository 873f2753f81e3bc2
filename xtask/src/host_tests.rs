//! The host half of `cargo xtask test`: `cargo test` on the default workspace members,
//! streamed, with the libtest summaries added up.

use anyhow::Result;

use crate::Tally;
use crate::cmd;
use crate::workspace::{Workspace, cargo};

pub(crate) fn run(ws: &Workspace) -> Result<Tally> {
    // --no-fail-fast: one failing test binary must not hide the others' results.
    let mut test = cargo();
    test.current_dir(&ws.root).args(["test", "--no-fail-fast"]);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let status = cmd::stream(&mut test, |line| {
        println!("{line}");
        if let Some(result) = parse_summary(&line) {
            tally = tally + result;
        } else if let Some(name) = failed_test(&line) {
            failures.push(name.to_owned());
        }
    })?;
    // Repeated at the end, so that a log cut to its last lines still names what failed.
    for name in &failures {
        println!("host tests: FAIL {name}");
    }
    if !status.success() && tally.failed == 0 {
        // A build error or a crashed test binary prints no failed count of its own.
        eprintln!(
            "host tests: `cargo test` failed ({status}) without a failing test; counted as one failure"
        );
        tally.failed += 1;
    }
    Ok(tally)
}

/// The name in libtest's `test audit::tests::x ... FAILED` line.
fn failed_test(line: &str) -> Option<&str> {
    line.strip_prefix("test ")?.strip_suffix(" ... FAILED")
}

/// libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
fn parse_summary(line: &str) -> Option<Tally> {
    let (_, counts) = line.strip_prefix("test result: ")?.split_once(". ")?;
    let mut tally = Tally::default();
    for part in counts.split("; ") {
        match part.split_once(' ') {
            Some((n, "passed")) => tally.passed = n.parse().ok()?,
            Some((n, "failed")) => tally.failed = n.parse().ok()?,
            Some((n, "ignored")) => tally.skipped = n.parse().ok()?,
            _ => {}
        }
    }
    Some(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_summaries() {
        let ok = "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(
            parse_summary(ok),
            Some(Tally {
                passed: 12,
                failed: 0,
                skipped: 1
            })
        );
        let bad = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(
            parse_summary(bad),
            Some(Tally {
                passed: 3,
                failed: 2,
                skipped: 0
            })
        );
        assert_eq!(parse_summary("running 3 tests"), None);
        assert_eq!(failed_test("test a::b ... FAILED"), Some("a::b"));
        assert_eq!(failed_test("test a::b ... ok"), None);
    }
}
