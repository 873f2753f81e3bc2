//! `vm-test` and `demo`: one VM per kernel, results read from the console.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::Tally;
use crate::build::{self, Binary};
use crate::initramfs::{self, Payload};
use crate::kernels::{self, KernelSpec};
use crate::qemu::{self, Boot, Line};
use crate::workspace::Workspace;

/// What one kernel's VM run showed.
struct Report {
    kernel: &'static str,
    passed: Vec<String>,
    /// `name: reason` of each FAIL line.
    failed: Vec<String>,
    /// Why the run as a whole failed (no kernel, crash, timeout, BPF LSM inactive...).
    problems: Vec<String>,
    summary: Option<String>,
}

impl Report {
    fn tally(&self) -> Tally {
        Tally {
            passed: self.passed.len(),
            failed: self.failed.len() + self.problems.len(),
        }
    }

    fn print(&self) {
        let kernel = self.kernel;
        if let Some(summary) = &self.summary {
            println!("{kernel}: {summary}");
        }
        for name in &self.passed {
            println!("{kernel}: PASS {name}");
        }
        for failure in &self.failed {
            println!("{kernel}: FAIL {failure}");
        }
        for problem in &self.problems {
            println!("{kernel}: FAIL kernel: {problem}");
        }
    }
}

/// Runs the scenarios on each kernel in turn and prints every kernel's results.
pub(crate) fn test(
    ws: &Workspace,
    kernels: &[&'static KernelSpec],
    filter: Option<&str>,
    timeout: Duration,
) -> Result<Tally> {
    let bins = build::binaries(ws)?;
    let reports: Vec<Report> = kernels
        .iter()
        .map(|spec| test_kernel(ws, spec, &bins, filter, timeout))
        .collect();
    println!();
    let mut tally = Tally::default();
    for report in &reports {
        report.print();
        tally = tally + report.tally();
    }
    Ok(tally)
}

fn test_kernel(
    ws: &Workspace,
    spec: &'static KernelSpec,
    bins: &[Binary],
    filter: Option<&str>,
    timeout: Duration,
) -> Report {
    let mut report = Report {
        kernel: spec.name,
        passed: Vec::new(),
        failed: Vec::new(),
        problems: Vec::new(),
        summary: None,
    };
    let payload = Payload::Tests { filter };
    let prefix = format!("[{}] ", spec.name);
    let booted = boot(ws, spec, bins, &payload, timeout, |line| {
        println!("{prefix}{}", line.text);
        if line.from_payload {
            match parse_result(qemu::user_text(line.text)) {
                Some(Ok(name)) => report.passed.push(name.to_owned()),
                Some(Err(failure)) => report.failed.push(failure.to_owned()),
                None => {}
            }
        }
    });
    let (boot, log) = match booted {
        Ok(booted) => booted,
        Err(err) => {
            report.problems.push(format!("{err:#}"));
            return report;
        }
    };
    report.summary = Some(describe(&boot));
    report.problems = boot.problems(timeout, &log);
    if report.problems.is_empty() {
        match boot.exit_code {
            Some(0) if report.passed.is_empty() && report.failed.is_empty() => report
                .problems
                .push("vm-tests ran no scenario (does --filter match any?)".to_owned()),
            Some(code) if code != 0 && report.failed.is_empty() => {
                report
                    .problems
                    .push(format!("vm-tests exited with {code} without a FAIL line"));
            }
            _ => {}
        }
    }
    report
}

/// Boots one kernel running `vm-tests/demo.sh`, shows what the script prints and returns
/// its exit code (1 if the VM itself failed).
pub(crate) fn demo(ws: &Workspace, spec: &'static KernelSpec, timeout: Duration) -> Result<u8> {
    let bins = build::binaries(ws)?;
    println!(
        "demo: booting Linux {} in qemu (TCG, this takes a few seconds)",
        spec.name
    );
    // Colours only for a person watching; a CI log gets plain text.
    let colour = std::io::stdout().is_terminal();
    let show = |line: &Line| {
        let shown = if colour { line.coloured } else { line.text };
        let text = qemu::user_text(shown);
        // A line that is only kernel log is noise here; a line cut by one is still shown.
        if line.from_payload && (shown.is_empty() || !text.is_empty()) {
            println!("{text}");
        }
    };
    let (boot, log) = boot(ws, spec, &bins, &Payload::Demo, timeout, show)?;
    println!("demo: {}", describe(&boot));
    let problems = boot.problems(timeout, &log);
    for problem in &problems {
        eprintln!("demo: {problem}");
    }
    match boot.exit_code {
        Some(code) if problems.is_empty() => Ok(u8::try_from(code).unwrap_or(1)),
        _ => Ok(1),
    }
}

/// Gets the kernel, packs the initramfs for `payload` and boots them.
pub(crate) fn boot(
    ws: &Workspace,
    spec: &'static KernelSpec,
    bins: &[Binary],
    payload: &Payload,
    timeout: Duration,
    on_line: impl FnMut(&Line),
) -> Result<(Boot, PathBuf)> {
    let kernel = kernels::ensure(ws, spec)
        .with_context(|| format!("kernel {} is not available", spec.name))?;
    let dir = ws.target.join("vm").join(spec.name);
    let initrd = initramfs::build(ws, &dir, bins, payload)
        .with_context(|| format!("cannot pack the initramfs in {}", dir.display()))?;
    let log = dir.join("console.log");
    let boot = qemu::run(&kernel, &initrd, timeout, &log, on_line)?;
    Ok((boot, log))
}

pub(crate) fn describe(boot: &Boot) -> String {
    let seconds = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    match (&boot.release, boot.booted_after) {
        (Some(release), Some(after)) => format!(
            "Linux {release} booted in {}, ran {} in all; lsm: {}",
            seconds(after),
            seconds(boot.elapsed),
            boot.lsm.as_deref().unwrap_or("unknown")
        ),
        _ => format!("did not boot ({} in qemu)", seconds(boot.elapsed)),
    }
}

/// A runner line: `PASS <name>` gives the name, `FAIL <name>: <reason>` the rest.
fn parse_result(line: &str) -> Option<Result<&str, &str>> {
    let line = line.trim();
    if let Some(name) = line.strip_prefix("PASS ") {
        Some(Ok(name.trim()))
    } else {
        line.strip_prefix("FAIL ").map(|rest| Err(rest.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_lines() {
        assert_eq!(parse_result("PASS exec_allowed"), Some(Ok("exec_allowed")));
        assert_eq!(
            parse_result("FAIL deny: got exit 0"),
            Some(Err("deny: got exit 0"))
        );
        assert_eq!(parse_result("vm-tests: 1 passed, 1 failed"), None);
        assert_eq!(parse_result("PASSED"), None);
    }
}
