//! `cargo xtask <verb>`: the one entry point for every workflow of this workspace.
//!
//! Everything that needs root-only kernel features (BPF LSM) runs in a qemu VM booted from a
//! Debian kernel and an initramfs this tool packs; the host only builds and orchestrates.

mod apt;
mod bench;
mod build;
mod cmd;
mod console;
mod exported;
mod fuzz;
mod host_tests;
mod initramfs;
mod kernels;
mod lint;
mod qemu;
mod setup;
mod vm;
mod workspace;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::kernels::KernelSpec;
use crate::workspace::Workspace;

/// Workflows for the enforcer workspace. Start with `cargo xtask setup`, then
/// `cargo xtask test` runs every test.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the host tools (Debian packages, bpf-linker) and download the VM test kernels
    /// into target/kernels. Installs only what is missing; a second run needs no network.
    Setup,
    /// Build the agent, the VM test runner and its fixtures (release mode).
    Build,
    /// Boot each kernel in qemu and run the VM scenarios there. A kernel that cannot run
    /// (download failed, BPF LSM not active, crash, timeout) counts as a failure.
    VmTest(VmTestArgs),
    /// Boot one kernel and run vm-tests/demo.sh inside it, showing its output.
    Demo(DemoArgs),
    /// Run a fuzz target from fuzz/ for a bounded time; fails if it finds a crash.
    Fuzz(FuzzArgs),
    /// Measure: host benchmarks (bundle verification, map loading, audit throughput) and
    /// the exec benchmark in a VM per kernel; prints a table. Both unless one is chosen.
    Bench(BenchArgs),
    /// Formatting and clippy (warnings are errors) on the host crates.
    Lint,
    /// Run every test: the lints, host unit tests, a short fuzz run of each parser of
    /// untrusted input, then the VM tests on every default kernel.
    Test(VmTimeout),
}

#[derive(Args)]
struct VmTestArgs {
    /// Kernel to boot; repeat for several. Default: every kernel known to run BPF LSM
    /// (6.1, 6.12, 6.19).
    #[arg(long = "kernel", value_name = "NAME", value_parser = kernels::parse_name)]
    kernels: Vec<&'static KernelSpec>,
    /// Run only the scenarios whose name contains this text.
    #[arg(long, value_name = "NAME")]
    filter: Option<String>,
    /// Order of the scenarios: every order must give the same verdicts, since each
    /// scenario sets up what it needs.
    #[arg(long, value_enum, default_value = "declared")]
    order: vm::Order,
    /// Seed for `--order shuffle`, to replay an order (default: from the clock, printed).
    #[arg(long, value_name = "N")]
    shuffle_seed: Option<u64>,
    #[command(flatten)]
    timeout: VmTimeout,
}

#[derive(Args)]
struct BenchArgs {
    /// Only the host benchmarks.
    #[arg(long, conflicts_with = "vm")]
    host: bool,
    /// Only the VM exec benchmark.
    #[arg(long)]
    vm: bool,
    /// Kernel to boot for the VM benchmark; repeat for several. Default: 6.1, 6.12, 6.19.
    #[arg(long = "kernel", value_name = "NAME", value_parser = kernels::parse_name)]
    kernels: Vec<&'static KernelSpec>,
    /// Only the digest-cache correctness checks in the VM, no timing.
    #[arg(long, conflicts_with = "host")]
    checks_only: bool,
    /// Rounds (A B B A) of the VM benchmark.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    rounds: u64,
    /// Execs per timed block.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    execs: u64,
    /// Seconds a VM may run before it is killed and counted as failed.
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 1200,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
}

#[derive(Args)]
struct DemoArgs {
    /// Kernel to boot.
    #[arg(long, value_name = "NAME", value_parser = kernels::parse_name, default_value = kernels::DEFAULT[0])]
    kernel: &'static KernelSpec,
    /// Keep the VM and its web console up at the end, until Enter is pressed (the VM's
    /// timeout becomes at least an hour).
    #[arg(long)]
    console: bool,
    #[command(flatten)]
    timeout: VmTimeout,
}

#[derive(Args)]
struct FuzzArgs {
    /// Fuzz target (a binary in fuzz/Cargo.toml).
    #[arg(default_value = "artifact")]
    target: String,
    /// How long to fuzz.
    #[arg(default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
}

#[derive(Args)]
struct VmTimeout {
    /// Seconds a VM may run before it is killed and counted as failed. A guard against
    /// hangs, not a speed target: one kernel's suite took 490 to 600 s under TCG on the
    /// 2-core CI machines, so the default leaves twice that.
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 1200,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
}

impl VmTimeout {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain: what failed and why.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ws = Workspace::load()?;
    match cli.command {
        Command::Setup => {
            setup::host(&ws)?;
            kernels::ensure_all(&ws, kernels::KNOWN)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build => {
            build::build(&ws)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::VmTest(args) => {
            setup::host(&ws)?;
            build::build(&ws)?;
            let kernels = if args.kernels.is_empty() {
                kernels::defaults()
            } else {
                args.kernels
            };
            let mut selection = vm::Selection {
                filter: args.filter,
                order: args.order,
                shuffle_seed: args.shuffle_seed,
            };
            if selection.order == vm::Order::Shuffle && selection.shuffle_seed.is_none() {
                // One seed for every kernel, so that they all run the same order.
                let seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                println!("vm-test: shuffled with --shuffle-seed {seed}");
                selection.shuffle_seed = Some(seed);
            }
            let tally = vm::test(&ws, &kernels, &selection, args.timeout.duration())?;
            Ok(finish("vm-test", tally))
        }
        Command::Demo(args) => {
            setup::host(&ws)?;
            build::build(&ws)?;
            let mut timeout = args.timeout.duration();
            if args.console {
                timeout = timeout.max(std::time::Duration::from_secs(3600));
            }
            let code = vm::demo(&ws, args.kernel, timeout, args.console)?;
            Ok(ExitCode::from(code))
        }
        Command::Bench(args) => {
            let vm = !args.host;
            let mut vm_args = vec![
                "--rounds".to_owned(),
                args.rounds.to_string(),
                "--execs".to_owned(),
                args.execs.to_string(),
            ];
            if args.checks_only {
                vm_args.push("--checks-only".to_owned());
            }
            if vm {
                setup::host(&ws)?;
            }
            let kernels = if args.kernels.is_empty() {
                kernels::defaults()
            } else {
                args.kernels
            };
            let opts = bench::Options {
                host: !args.vm && !args.checks_only,
                vm,
                kernels: &kernels,
                vm_args,
                timeout: Duration::from_secs(args.timeout),
            };
            let ok = bench::run(&ws, &opts)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Fuzz(args) => {
            fuzz::run(&args.target, args.seconds)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lint => Ok(finish("lint", lint::run(&ws)?)),
        Command::Test(timeout) => {
            setup::host(&ws)?;
            let lints = lint::run(&ws)?;
            let host = host_tests::run(&ws)?;
            let fuzzing = fuzz_briefly();
            build::build(&ws)?;
            let vm = vm::test(
                &ws,
                &kernels::defaults(),
                &vm::Selection::default(),
                timeout.duration(),
            )?;
            println!("lints: {lints}");
            println!("host tests: {host}");
            println!("fuzzing: {fuzzing}");
            println!("vm tests: {vm}");
            Ok(finish("test", lints + host + fuzzing + vm))
        }
    }
}

/// Counts of passed and failed tests, added up across host and VM runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    /// Scenarios this machine could not run, each with its reason on a SKIP line.
    pub skipped: usize,
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, other: Tally) -> Tally {
        Tally {
            passed: self.passed + other.passed,
            failed: self.failed + other.failed,
            skipped: self.skipped + other.skipped,
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// Parsers of untrusted input, each fuzzed for this long by `cargo xtask test`: enough to
/// catch a regression on the seeds and their near neighbours, short enough for CI.
const FUZZ_TARGETS: &[&str] = &["artifact", "note", "proof", "witness"];
const FUZZ_SECONDS: u64 = 30;

/// A short fuzz run of every target, each counted as one test.
fn fuzz_briefly() -> Tally {
    let mut tally = Tally::default();
    for target in FUZZ_TARGETS {
        match fuzz::run(target, FUZZ_SECONDS) {
            Ok(()) => tally.passed += 1,
            Err(err) => {
                eprintln!("fuzz {target}: {err:#}");
                tally.failed += 1;
            }
        }
    }
    tally
}

/// Prints the final `N passed, N failed` line and turns it into the exit code.
fn finish(verb: &str, tally: Tally) -> ExitCode {
    println!("{verb}: {tally}");
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
