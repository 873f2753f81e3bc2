//! `cargo xtask bench`: the host benchmarks (bundle verification, map loading, audit
//! throughput; `enforcer/benches/host.rs`) and the exec benchmark in a VM per kernel
//! (`vm-tests/src/bin/vm-bench`), then one table of everything measured.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::build::Binary;
use crate::cmd;
use crate::initramfs::Payload;
use crate::kernels::KernelSpec;
use crate::qemu::{self, Forwards};
use crate::vm;
use crate::workspace::{Workspace, cargo};

pub(crate) struct Options<'a> {
    pub host: bool,
    pub vm: bool,
    pub kernels: &'a [&'static KernelSpec],
    /// Passed to vm-bench (`--rounds N` and the like).
    pub vm_args: Vec<String>,
    pub timeout: Duration,
}

/// What was measured, for the final table.
#[derive(Default)]
struct Results {
    host: Vec<Value>,
    /// (kernel, result line)
    vm: Vec<(&'static str, Value)>,
    /// (kernel, system call line)
    syscalls: Vec<(&'static str, Value)>,
    info: Vec<(&'static str, String)>,
    /// Failed checks and runs that produced no result.
    problems: Vec<String>,
    checks_passed: usize,
}

/// Runs what `opts` selects; returns whether every check held and every run finished.
pub(crate) fn run(ws: &Workspace, opts: &Options<'_>) -> Result<bool> {
    let mut results = Results::default();
    if opts.host {
        host(ws, &mut results)?;
    }
    if opts.vm {
        let bins = build(ws)?;
        for spec in opts.kernels {
            vm_kernel(ws, spec, &bins, opts, &mut results);
        }
    }
    print_table(&results);
    Ok(results.problems.is_empty())
}

/// `cargo bench` of the host harness, streamed; `HOST-RESULT {json}` lines are kept.
fn host(ws: &Workspace, results: &mut Results) -> Result<()> {
    let mut bench = cargo();
    bench
        .current_dir(&ws.root)
        .args(["bench", "--package", "enforcer", "--bench", "host"]);
    let status = cmd::stream(&mut bench, |line| {
        println!("{line}");
        if let Some(json) = line.strip_prefix("HOST-RESULT ") {
            match serde_json::from_str(json) {
                Ok(v) => results.host.push(v),
                Err(e) => results
                    .problems
                    .push(format!("host: unreadable result {json}: {e}")),
            }
        }
    })?;
    if !status.success() {
        results
            .problems
            .push(format!("host benchmarks failed ({status})"));
    }
    Ok(())
}

/// Builds only what the bench VM holds, so a scenario runner mid-edit does not stop it.
fn build(ws: &Workspace) -> Result<Vec<Binary>> {
    let bins = [
        ("vm-bench", "/usr/bin"),
        ("probe", "/usr/libexec/enforcer-tests"),
        ("unlisted", "/usr/libexec/enforcer-tests"),
    ];
    let mut build = cargo();
    build
        .current_dir(&ws.root)
        .args(["build", "--release", "--package", "vm-tests"]);
    for (name, _) in bins {
        build.args(["--bin", name]);
    }
    cmd::run(&mut build)
        .context("the build failed; if a tool is missing, run `cargo xtask setup`")?;
    Ok(bins
        .iter()
        .map(|(name, dir)| Binary {
            path: ws.release_dir().join(name),
            install_dir: dir,
        })
        .collect())
}

fn vm_kernel(
    ws: &Workspace,
    spec: &'static KernelSpec,
    bins: &[Binary],
    opts: &Options<'_>,
    results: &mut Results,
) {
    let kernel = spec.name;
    let prefix = format!("[{kernel}] ");
    let mut got_results = false;
    let payload = Payload::Bench {
        args: &opts.vm_args,
    };
    let forwards = match Forwards::choose() {
        Ok(forwards) => forwards,
        Err(err) => return results.problems.push(format!("{kernel}: {err:#}")),
    };
    let booted = vm::boot(ws, spec, bins, &payload, &forwards, opts.timeout, |line| {
        println!("{prefix}{}", line.text);
        if !line.from_payload {
            return;
        }
        let text = qemu::user_text(line.text).trim();
        if let Some(json) = text.strip_prefix("BENCH-RESULT ") {
            match serde_json::from_str(json) {
                Ok(v) => {
                    got_results = true;
                    results.vm.push((kernel, v));
                }
                Err(e) => results
                    .problems
                    .push(format!("{kernel}: unreadable result {json}: {e}")),
            }
        } else if let Some(json) = text.strip_prefix("BENCH-SYSCALL ") {
            match serde_json::from_str(json) {
                Ok(v) => results.syscalls.push((kernel, v)),
                Err(e) => results
                    .problems
                    .push(format!("{kernel}: unreadable result {json}: {e}")),
            }
        } else if let Some(info) = text.strip_prefix("BENCH-INFO ") {
            results.info.push((kernel, info.to_owned()));
        } else if text.starts_with("BENCH-CHECK PASS ") {
            results.checks_passed += 1;
        } else if let Some(failure) = text.strip_prefix("BENCH-CHECK FAIL ") {
            results
                .problems
                .push(format!("{kernel}: check failed: {failure}"));
        } else if let Some(error) = text.strip_prefix("BENCH-ERROR ") {
            results.problems.push(format!("{kernel}: {error}"));
        }
    });
    match booted {
        Ok((boot, log)) => {
            println!("{kernel}: {}", vm::describe(&boot));
            for problem in boot.problems(opts.timeout, &log) {
                results.problems.push(format!("{kernel}: {problem}"));
            }
            let checks_only = opts.vm_args.iter().any(|a| a == "--checks-only");
            if !got_results && !checks_only && results.problems.is_empty() {
                results
                    .problems
                    .push(format!("{kernel}: vm-bench printed no result"));
            }
        }
        Err(err) => results.problems.push(format!("{kernel}: {err:#}")),
    }
}

fn print_table(results: &Results) {
    println!();
    if !results.host.is_empty() {
        println!("host benchmarks");
        println!(
            "  {:<44} {:>14}  {:<12} target",
            "measurement", "result", "unit"
        );
        for v in &results.host {
            println!(
                "  {:<44} {:>14}  {:<12} {}",
                v["name"].as_str().unwrap_or("?"),
                format_number(&v["value"]),
                v["unit"].as_str().unwrap_or(""),
                v["target"].as_str().unwrap_or("")
            );
        }
    }
    if !results.vm.is_empty() {
        println!("exec benchmark (ratios: mean over rounds, 95% CI)");
        for (kernel, info) in &results.info {
            if info.starts_with("kernel=") || info.starts_with("ima=") {
                println!("  {kernel}: {info}");
            }
        }
        println!(
            "  {:<6} {:<6} {:<9} {:>9}  {:<9} {:>8}  95% CI",
            "kernel", "binary", "condition", "us/exec", "vs", "ratio"
        );
        for (kernel, v) in &results.vm {
            let Some(versus) = v["versus"].as_str() else {
                continue;
            };
            println!(
                "  {:<6} {:<6} {:<9} {:>9.0}  {:<9} {:>8.4}  [{:.4}, {:.4}]",
                kernel,
                v["binary"].as_str().unwrap_or("?"),
                v["condition"].as_str().unwrap_or("?"),
                v["us_per_exec"].as_f64().unwrap_or(f64::NAN),
                versus,
                v["ratio"].as_f64().unwrap_or(f64::NAN),
                v["low"].as_f64().unwrap_or(f64::NAN),
                v["high"].as_f64().unwrap_or(f64::NAN),
            );
        }
        println!("  cache checks passed: {}", results.checks_passed);
    }
    if !results.syscalls.is_empty() {
        println!("system calls in a scope: what the hooks add per call (95% CI)");
        println!(
            "  {:<6} {:<14} {:>10} {:>10} {:>9}  95% CI",
            "kernel", "call", "ns without", "ns with", "extra ns"
        );
        for (kernel, v) in &results.syscalls {
            let n = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {:<6} {:<14} {:>10.0} {:>10.0} {:>9.0}  [{:.0}, {:.0}]",
                kernel,
                v["call"].as_str().unwrap_or("?"),
                n("ns_without"),
                n("ns_with"),
                n("extra_ns"),
                n("low"),
                n("high"),
            );
        }
    }
    for problem in &results.problems {
        println!("FAIL {problem}");
    }
}

fn format_number(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "?".to_owned(),
    }
}
