//! `vm-test` and `demo`: one VM per kernel, results read from the console.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::Tally;
use crate::build::{self, Binary};
use crate::console;
use crate::exported;
use crate::initramfs::{self, Payload};
use crate::kernels::{self, KernelSpec};
use crate::qemu::{self, Boot, Forwards, Line};
use crate::workspace::Workspace;

/// Which scenarios `vm-tests` runs in the VM, and in which order.
#[derive(Default)]
pub(crate) struct Selection {
    /// Only the scenarios whose name contains this text.
    pub filter: Option<String>,
    pub order: Order,
    /// For [`Order::Shuffle`]; the same seed gives the same order.
    pub shuffle_seed: Option<u64>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Order {
    /// As declared in vm-tests/src/scenarios/.
    #[default]
    Declared,
    Reverse,
    Shuffle,
}

impl Selection {
    /// The runner's arguments: JSON events on the console, one per line, so that a result
    /// survives whatever else (the agent, the kernel) prints around it.
    fn runner_args(&self) -> Vec<String> {
        let mut args = vec!["--format".to_owned(), "json".to_owned()];
        match self.order {
            Order::Declared => {}
            Order::Reverse => args.extend(["--order".to_owned(), "reverse".to_owned()]),
            Order::Shuffle => args.extend(["--order".to_owned(), "shuffle".to_owned()]),
        }
        if let Some(seed) = self.shuffle_seed {
            args.extend(["--shuffle-seed".to_owned(), seed.to_string()]);
        }
        if let Some(filter) = &self.filter {
            args.extend(["--".to_owned(), filter.clone()]);
        }
        args
    }
}

/// What one kernel's VM run showed.
struct Report {
    kernel: &'static str,
    passed: Vec<String>,
    /// `name: reason` of each FAIL line.
    failed: Vec<String>,
    /// `name: reason` of each scenario this machine could not run.
    skipped: Vec<String>,
    /// The reason on the runner's SKIP line, until the scenario's `ignored` event.
    skip_reason: Option<(String, String)>,
    /// Why the run as a whole failed (no kernel, crash, timeout, BPF LSM inactive...).
    problems: Vec<String>,
    summary: Option<String>,
    /// The scenario that started and has no result yet, and since when.
    running: Option<(String, Instant)>,
    /// The runner's own count at the end: passed, failed.
    counted: Option<(usize, usize)>,
}

impl Report {
    /// A kernel's report before its runner said anything.
    fn new(kernel: &'static str) -> Self {
        Self {
            kernel,
            passed: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            skip_reason: None,
            problems: Vec::new(),
            summary: None,
            running: None,
            counted: None,
        }
    }

    fn tally(&self) -> Tally {
        Tally {
            passed: self.passed.len(),
            failed: self.failed.len() + self.problems.len(),
            skipped: self.skipped.len(),
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
        for skipped in &self.skipped {
            println!("{kernel}: SKIP {skipped}");
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
    selection: &Selection,
    timeout: Duration,
) -> Result<Tally> {
    let bins = build::binaries(ws)?;
    let args = selection.runner_args();
    let reports: Vec<Report> = kernels
        .iter()
        .map(|spec| test_kernel(ws, spec, &bins, &args, timeout))
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
    args: &[String],
    timeout: Duration,
) -> Report {
    let mut report = Report::new(spec.name);
    let payload = Payload::Tests { args };
    let prefix = format!("[{}] ", spec.name);
    // Only what this run exports is checked on the host.
    let files = exported::dir(&ws.target.join("vm").join(spec.name));
    let _ = std::fs::remove_dir_all(&files);
    // Files the VM exported that could not be saved, and step lines xtask cannot serve.
    let mut host_problems = Vec::new();
    let forwards = match Forwards::choose() {
        Ok(forwards) => forwards,
        Err(e) => {
            report.problems.push(format!("{e:#}"));
            return report;
        }
    };
    let mut host_steps = Vec::new();
    let booted = boot(ws, spec, bins, &payload, &forwards, timeout, |line| {
        let user = qemu::user_text(line.text);
        if let Some(rest) = user
            .strip_prefix(exported::FILE)
            .filter(|_| line.from_payload)
        {
            match exported::save(rest, &files) {
                Ok((name, size)) => println!("{prefix}exported {name} ({size} bytes)"),
                Err(e) => host_problems.push(format!("{e:#}")),
            }
            return;
        }
        if let Some(rest) = user
            .strip_prefix(console::STEP)
            .filter(|_| line.from_payload)
        {
            println!("{prefix}console: the VM asks for the browser test");
            match console::start(&ws.root, rest, &forwards, prefix.clone()) {
                Ok(step) => host_steps.push(step),
                Err(e) => host_problems.push(format!("{e:#}")),
            }
            return;
        }
        let shown = if line.from_payload {
            report.take(user)
        } else {
            None
        };
        match shown {
            Some(shown) => {
                println!(
                    "{prefix}{}",
                    shown.replace('\n', &format!("\n{prefix}    "))
                );
                // A kernel record that landed on the same console line.
                let kernel = &line.text[user.len()..];
                if !kernel.is_empty() {
                    println!("{prefix}{kernel}");
                }
            }
            None => println!("{prefix}{}", line.text),
        }
    });
    // A step outlives the VM only when the VM died under it; it ends on its own then.
    for step in host_steps {
        let _ = step.join();
    }
    let (boot, log) = match booted {
        Ok(booted) => booted,
        Err(err) => {
            report.problems.push(format!("{err:#}"));
            return report;
        }
    };
    report.summary = Some(describe(&boot));
    report.problems = boot.problems(timeout, &log);
    report.problems.extend(host_problems);
    if let Some((name, _)) = &report.running {
        report.problems.push(format!(
            "{name} started and has no result: the run ended during it"
        ));
    }
    let shown = (report.passed.len(), report.failed.len());
    match report.counted {
        Some(counted) if counted != shown => report.problems.push(format!(
            "vm-tests counted {} passed and {} failed, the console showed {} and {} \
             (a garbled result line? see {})",
            counted.0,
            counted.1,
            shown.0,
            shown.1,
            log.display()
        )),
        None if boot.exit_code.is_some() => report.problems.push(format!(
            "vm-tests printed no summary (see {})",
            log.display()
        )),
        _ => {}
    }
    if report.problems.is_empty() {
        match boot.exit_code {
            // A scenario skipped with its reason did run: the machine lacked what it needs.
            Some(0)
                if report.passed.is_empty()
                    && report.failed.is_empty()
                    && report.skipped.is_empty() =>
            {
                report
                    .problems
                    .push("vm-tests ran no scenario (does --filter match any?)".to_owned());
            }
            Some(code) if code != 0 && report.failed.is_empty() => {
                report
                    .problems
                    .push(format!("vm-tests exited with {code} without a FAIL line"));
            }
            _ => {}
        }
    }
    // After the runner's own count is checked: these are the host's results.
    if let Some(enforcer) = bins
        .iter()
        .find(|b| b.path.file_name() == Some("enforcer".as_ref()))
    {
        for (name, result) in exported::check(&files, &enforcer.path) {
            match result {
                Ok(()) => report.passed.push(name),
                Err(why) => report.failed.push(format!("{name}: {why}")),
            }
        }
    }
    report
}

/// Boots one kernel running `vm-tests/demo.sh`, shows what the script prints and returns
/// its exit code (1 if the VM itself failed).
pub(crate) fn demo(
    ws: &Workspace,
    spec: &'static KernelSpec,
    timeout: Duration,
    keep_console: bool,
) -> Result<u8> {
    let bins = build::binaries(ws)?;
    println!(
        "demo: booting Linux {} in qemu (TCG, this takes a few seconds)",
        spec.name
    );
    // Colours only for a person watching; a CI log gets plain text.
    let colour = std::io::stdout().is_terminal();
    let forwards = Forwards::choose()?;
    let show = |line: &Line| {
        let shown = if colour { line.coloured } else { line.text };
        let text = qemu::user_text(shown);
        if line.from_payload && console::demo_line(text, &forwards, keep_console) {
            return;
        }
        // A line that is only kernel log is noise here; a line cut by one is still shown.
        if line.from_payload && (shown.is_empty() || !text.is_empty()) {
            println!("{text}");
        }
    };
    let (boot, log) = boot(ws, spec, &bins, &Payload::Demo, &forwards, timeout, show)?;
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
    forwards: &Forwards,
    timeout: Duration,
    on_line: impl FnMut(&Line),
) -> Result<(Boot, PathBuf)> {
    let kernel = kernels::ensure(ws, spec)
        .with_context(|| format!("kernel {} is not available", spec.name))?;
    let dir = ws.target.join("vm").join(spec.name);
    let initrd = initramfs::build(ws, &dir, bins, &kernel.modules, payload)
        .with_context(|| format!("cannot pack the initramfs in {}", dir.display()))?;
    let log = dir.join("console.log");
    let boot = qemu::run(&kernel, &initrd, forwards, timeout, &log, on_line)?;
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

/// One line of `vm-tests --format json` (libtest's JSON events, as libtest-mimic prints
/// them).
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    event: String,
    name: Option<String>,
    /// A failure's message, as `Error: "<message>"` and a newline.
    stdout: Option<String>,
    test_count: Option<usize>,
    passed: Option<usize>,
    failed: Option<usize>,
    ignored: Option<usize>,
    filtered_out: Option<usize>,
    exec_time: Option<f64>,
}

impl Event {
    fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        if line.starts_with('{') {
            serde_json::from_str(line).ok()
        } else {
            None
        }
    }

    /// A failure's message without libtest-mimic's wrapping.
    fn message(&self) -> &str {
        let text = self.stdout.as_deref().unwrap_or_default().trim_end();
        text.strip_prefix("Error: \"")
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text)
    }
}

impl Report {
    /// Takes in one line the runner printed; returns the line to show for it, or None to
    /// show it as it is.
    fn take(&mut self, line: &str) -> Option<String> {
        // vm-tests says why it skips a scenario just before libtest's `ignored` event, which
        // has no field for it.
        if let Some((name, reason)) = line.strip_prefix("SKIP ").and_then(|l| l.split_once(": ")) {
            self.skip_reason = Some((name.to_owned(), reason.trim_end().to_owned()));
        }
        Event::parse(line).and_then(|e| self.record(e))
    }

    /// Takes in one runner event; returns the line to show for it, or None for a line
    /// that is not a runner event (shown as it is).
    fn record(&mut self, event: Event) -> Option<String> {
        let name = event.name.clone().unwrap_or_default();
        match (event.kind.as_str(), event.event.as_str()) {
            ("suite", "started") => Some(format!(
                "running {} scenarios",
                event.test_count.unwrap_or_default()
            )),
            ("suite", _) => {
                let (passed, failed) = (
                    event.passed.unwrap_or_default(),
                    event.failed.unwrap_or_default(),
                );
                self.counted = Some((passed, failed));
                Some(format!(
                    "vm-tests: {passed} passed, {failed} failed, {} skipped, {} filtered out ({:.1} s)",
                    event.ignored.unwrap_or_default(),
                    event.filtered_out.unwrap_or_default(),
                    event.exec_time.unwrap_or_default()
                ))
            }
            ("test", "started") => {
                self.running = Some((name.clone(), Instant::now()));
                Some(format!("RUN  {name}"))
            }
            ("test", outcome) => {
                let seconds = match self.running.take() {
                    Some((running, since)) if running == name => since.elapsed().as_secs_f64(),
                    _ => 0.0,
                };
                match outcome {
                    "ok" => {
                        self.passed.push(name.clone());
                        Some(format!("PASS {name} ({seconds:.1} s)"))
                    }
                    "failed" => {
                        let failure = format!("{name}: {}", event.message());
                        self.failed.push(failure.replace('\n', "\n    "));
                        Some(format!("FAIL {failure}"))
                    }
                    "ignored" => {
                        let reason = match self.skip_reason.take() {
                            Some((skipped, reason)) if skipped == name => reason,
                            _ => "no reason given".to_owned(),
                        };
                        self.skipped.push(format!("{name}: {reason}"));
                        Some(format!("SKIP {name} ({seconds:.1} s)"))
                    }
                    other => Some(format!("{other} {name}")),
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report::new("6.12")
    }

    fn feed(report: &mut Report, line: &str) -> Option<String> {
        report.take(line)
    }

    #[test]
    fn runner_events() {
        let mut r = report();
        let lines = [
            r#"{ "type": "suite", "event": "started", "test_count": 2 }"#,
            r#"{ "type": "test", "event": "started", "name": "memfd-exec-denied" }"#,
            r#"{ "type": "test", "name": "memfd-exec-denied", "event": "ok" }"#,
            r#"{ "type": "test", "event": "started", "name": "deny" }"#,
        ];
        for line in lines {
            assert!(feed(&mut r, line).is_some(), "{line}");
        }
        assert_eq!(r.running.as_ref().map(|(n, _)| n.as_str()), Some("deny"));
        // libtest-mimic escapes the message once, inside `Error: "..."`: it keeps its
        // quotes and its lines.
        let failed = r#"{ "type": "test", "name": "deny", "event": "failed", "stdout": "Error: \"expected \"x\"\ngot 0 (at a.rs:1:2)\"\n" }"#;
        assert_eq!(
            feed(&mut r, failed).as_deref(),
            Some("FAIL deny: expected \"x\"\ngot 0 (at a.rs:1:2)")
        );
        assert!(r.running.is_none());
        let summary = r#"{ "type": "suite", "event": "failed", "passed": 1, "failed": 1, "ignored": 0, "measured": 0, "filtered_out": 37, "exec_time": 12.5 }"#;
        assert_eq!(
            feed(&mut r, summary).as_deref(),
            Some("vm-tests: 1 passed, 1 failed, 0 skipped, 37 filtered out (12.5 s)")
        );
        assert_eq!(r.passed, ["memfd-exec-denied"]);
        assert_eq!(r.failed, ["deny: expected \"x\"\n    got 0 (at a.rs:1:2)"]);
        assert_eq!(r.counted, Some((1, 1)));
    }

    #[test]
    fn a_skipped_scenario_keeps_its_reason() {
        let mut r = report();
        feed(
            &mut r,
            r#"{ "type": "test", "event": "started", "name": "module-load" }"#,
        );
        assert_eq!(
            feed(&mut r, "SKIP module-load: module x is not packaged"),
            None
        );
        let ignored = r#"{ "type": "test", "name": "module-load", "event": "ignored" }"#;
        assert!(feed(&mut r, ignored).is_some_and(|l| l.starts_with("SKIP module-load")));
        assert_eq!(r.skipped, ["module-load: module x is not packaged"]);
        assert_eq!(r.tally().skipped, 1);
        assert_eq!(r.tally().failed, 0);
    }

    #[test]
    fn other_lines_are_not_events() {
        let mut r = report();
        for line in [
            "vm-tests: shuffled with --shuffle-seed 3",
            "    revocation denied after: 20ms",
            r#"{"decision":"deny","path":"/tmp/x"}"#,
            r#"{ "type": "test", "event": "started", "na"#,
        ] {
            assert_eq!(feed(&mut r, line), None, "{line}");
        }
    }

    #[test]
    fn selection_becomes_runner_arguments() {
        assert_eq!(Selection::default().runner_args(), ["--format", "json"]);
        let selection = Selection {
            filter: Some("-odd".to_owned()),
            order: Order::Shuffle,
            shuffle_seed: Some(9),
        };
        assert_eq!(
            selection.runner_args(),
            [
                "--format",
                "json",
                "--order",
                "shuffle",
                "--shuffle-seed",
                "9",
                "--",
                "-odd"
            ]
        );
    }
}
