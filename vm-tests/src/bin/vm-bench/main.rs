//! Exec overhead of the enforcer, measured inside the test VM (`cargo xtask bench --vm`).
//!
//! One boot, many rounds. Each round runs blocks in the order A B B A: A without the
//! enforcer (unloaded), B with it loaded and every enforced condition in turn (reversed
//! in the second B). A round's ratio is a condition's mean exec time over the round's
//! baseline mean; the report gives the mean ratio over rounds with a 95% t interval.
//!
//! Conditions, each for a small binary (the `probe` fixture) and a large one (`probe`
//! with 10 MiB appended: still a valid ELF, and the digest covers the whole file):
//! - `baseline`: no enforcer loaded;
//! - `cached`: granted, its digest already in the kernel program's cache;
//! - `denied`: not granted (refused with EPERM), after one earlier attempt;
//! - `uncached`: granted, but a fresh copy each time, so nothing is cached.
//!
//! Before the rounds, the digest-cache checks (`checks.rs`) prove that a cached digest
//! follows every kind of change to the file.
//!
//! Output lines for `cargo xtask bench`: `BENCH-INFO key=value`, `BENCH-CHECK PASS|FAIL
//! name`, `BENCH-RESULT {json}`; a table for people; exit status 1 if a check failed.

mod checks;
mod ops;
mod stats;
mod worker;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use enforcer::authz::policy::Policy;
use enforcer::kernel::{self, Enforcement, MapState};

use crate::stats::Estimate;
use crate::worker::{Outcome, Request, Worker};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The governed scope the worker runs in (relative to the cgroup root).
const SCOPE: &str = "enforcer-bench";
const WORK: &str = "/tmp/enforcer-bench";
const FIXTURES: &str = "/usr/libexec/enforcer-tests";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Size {
    Small,
    Large,
}

impl Size {
    const ALL: [Size; 2] = [Size::Small, Size::Large];

    fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Condition {
    Baseline,
    Cached,
    Denied,
    Uncached,
}

impl Condition {
    /// The enforced conditions, in the first B block's order.
    const ENFORCED: [Condition; 3] = [Condition::Cached, Condition::Denied, Condition::Uncached];

    fn name(self) -> &'static str {
        match self {
            Condition::Baseline => "baseline",
            Condition::Cached => "cached",
            Condition::Denied => "denied",
            Condition::Uncached => "uncached",
        }
    }
}

struct Options {
    /// Only the cache checks, no timing.
    checks_only: bool,
    rounds: usize,
    execs: usize,
    large_mib: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut opts = Self {
            checks_only: false,
            rounds: 30,
            execs: 10,
            large_mib: 10,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--checks-only" {
                opts.checks_only = true;
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let n: usize = value
                .parse()
                .map_err(|_| format!("{flag}: not a number: {value}"))?;
            match flag.as_str() {
                "--rounds" => opts.rounds = n.max(2),
                "--execs" => opts.execs = n.max(1),
                "--large-mib" => opts.large_mib = n,
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        Ok(opts)
    }

    /// Execs per block: fewer where each one hashes the file (and copies it first).
    fn execs(&self, condition: Condition, size: Size) -> usize {
        match (condition, size) {
            (Condition::Uncached, Size::Small) => (self.execs / 2).max(2),
            (Condition::Uncached, Size::Large) => 2,
            _ => self.execs,
        }
    }
}

/// The binaries under test.
struct Binaries {
    granted: BTreeMap<Size, PathBuf>,
    denied: BTreeMap<Size, PathBuf>,
    /// Granted too: `probe` with `checks::TAIL` bytes appended, for the truncation check.
    tailed: PathBuf,
}

impl Binaries {
    /// Copies the fixtures into the work directory: `probe` (granted) and `unlisted`
    /// (denied), each as is and with `large_mib` MiB of data appended.
    fn prepare(large_mib: usize) -> Result<Self, String> {
        std::fs::create_dir_all(WORK).map_err(|e| format!("{WORK}: {e}"))?;
        let make = |fixture: &str, name: &str, extra: usize| -> Result<PathBuf, String> {
            let mut bytes = std::fs::read(Path::new(FIXTURES).join(fixture))
                .map_err(|e| format!("{fixture}: {e}"))?;
            // A fixed pseudo-random tail: hashing costs the same for any content, but
            // real bytes rule out any shortcut for holes or zero pages.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            bytes.reserve(extra);
            for _ in 0..extra / 8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            let path = Path::new(WORK).join(name);
            std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            Ok(path)
        };
        let mib = large_mib << 20;
        Ok(Self {
            granted: BTreeMap::from([
                (Size::Small, make("probe", "small", 0)?),
                (Size::Large, make("probe", "large", mib)?),
            ]),
            denied: BTreeMap::from([
                (Size::Small, make("unlisted", "small-denied", 0)?),
                (Size::Large, make("unlisted", "large-denied", mib)?),
            ]),
            tailed: make("probe", "tailed", checks::TAIL)?,
        })
    }

    /// What to exec for a condition, and what must happen.
    fn target(&self, condition: Condition, size: Size) -> (&Path, bool, Outcome) {
        let ran = Outcome::Exited(vm_tests::PROBE_EXIT);
        match condition {
            Condition::Baseline | Condition::Cached => (&self.granted[&size], false, ran),
            Condition::Uncached => (&self.granted[&size], true, ran),
            Condition::Denied => (&self.denied[&size], false, Outcome::Refused(libc::EPERM)),
        }
    }
}

/// The enforcer, loaded and unloaded between blocks through the library (the same calls
/// `enforcer load` makes, minus parsing and the self-test).
struct Enforcer {
    pin_dir: PathBuf,
    desired: MapState,
    loaded: Option<Enforcement>,
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
}

impl Enforcer {
    fn new(granted: &[&Path]) -> Result<Self, String> {
        let files: Vec<String> = granted
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        let policy_path = Path::new(WORK).join("policy.toml");
        let text = format!(
            "[[scope]]\npath = \"/{SCOPE}\"\nwith_libraries = true\nfiles = [{}]\n",
            files.join(", ")
        );
        std::fs::write(&policy_path, text).map_err(|e| e.to_string())?;
        let mut policy = Policy::from_local_file(&policy_path).map_err(|e| e.to_string())?;
        // The agent gives every scope its writable roots from its settings; the bench
        // resolves the policy itself, so it asks default settings the same way: the worker
        // copies fixtures to /tmp.
        let settings = enforcer::agent::Settings::default();
        for (path, spec) in &mut policy.scopes {
            spec.writable = settings.writable(path);
        }
        let desired =
            kernel::resolve(&policy, Path::new(CGROUP_ROOT)).map_err(|e| e.to_string())?;
        Ok(Self {
            pin_dir: enforcer::paths::PIN_DIR.into(),
            desired,
            loaded: None,
            events: None,
        })
    }

    fn load(&mut self) -> Result<(), String> {
        let mut enforcement =
            Enforcement::open_or_load(&self.pin_dir).map_err(|e| format!("load: {e}"))?;
        enforcement
            .apply(&self.desired)
            .map_err(|e| format!("apply: {e}"))?;
        self.events = enforcement.take_events();
        self.loaded = Some(enforcement);
        Ok(())
    }

    /// Empties the decision ring buffer (between blocks, untimed), so the kernel side
    /// always finds room, as with an agent reading it.
    fn drain(&mut self) {
        if let Some(ring) = &mut self.events {
            while ring.next().is_some() {}
        }
    }

    fn unload(&mut self) -> Result<(), String> {
        self.events = None;
        self.loaded = None;
        kernel::unload(&self.pin_dir)
            .map(drop)
            .map_err(|e| format!("unload: {e}"))
    }
}

/// One round's block means (ns per exec) by condition and binary.
type Round = BTreeMap<(Condition, Size), Vec<f64>>;

struct Bench {
    opts: Options,
    worker: Worker,
    bins: Binaries,
    enforcer: Enforcer,
}

impl Bench {
    fn block(&mut self, condition: Condition, size: Size, round: &mut Round) -> Result<(), String> {
        let count = self.opts.execs(condition, size);
        let (program, fresh_copy, expected) = self.bins.target(condition, size);
        let req = Request {
            program,
            count,
            fresh_copy,
            env: &[],
            capture: false,
        };
        let nanos = self.worker.timed(&req, &expected)?;
        #[allow(
            clippy::cast_precision_loss,
            reason = "nanoseconds of a block fit f64 exactly enough"
        )]
        let per_exec = nanos as f64 / count as f64;
        round.entry((condition, size)).or_default().push(per_exec);
        self.enforcer.drain();
        Ok(())
    }

    fn baseline(&mut self, order: &[Size], round: &mut Round) -> Result<(), String> {
        for &size in order {
            self.block(Condition::Baseline, size, round)?;
        }
        Ok(())
    }

    fn enforced(&mut self, reverse: bool, round: &mut Round) -> Result<(), String> {
        let mut cells: Vec<(Condition, Size)> = Condition::ENFORCED
            .iter()
            .flat_map(|&c| Size::ALL.map(|s| (c, s)))
            .collect();
        if reverse {
            cells.reverse();
        }
        for (condition, size) in cells {
            self.block(condition, size, round)?;
        }
        Ok(())
    }

    /// Untimed execs so that page cache, IMA's cache and the denied files' first attempt
    /// are behind us.
    fn warm_up(&mut self) -> Result<(), String> {
        let mut scratch = Round::new();
        self.baseline(&Size::ALL, &mut scratch)?;
        self.load()?;
        self.enforced(false, &mut scratch)?;
        self.enforcer.unload()
    }

    /// Loads the enforcer and execs each binary once, untimed: a load starts with an
    /// empty digest cache (nothing that changed while it was unloaded may be trusted), and
    /// the `cached` and `denied` conditions are about a digest already in it.
    fn load(&mut self) -> Result<(), String> {
        self.enforcer.load()?;
        for size in Size::ALL {
            for condition in [Condition::Cached, Condition::Denied] {
                let (program, _, expected) = self.bins.target(condition, size);
                let req = Request {
                    program,
                    count: 1,
                    fresh_copy: false,
                    env: &[],
                    capture: false,
                };
                self.worker.timed(&req, &expected)?;
            }
        }
        self.enforcer.drain();
        Ok(())
    }

    fn rounds(&mut self, rounds: usize) -> Result<Vec<Round>, String> {
        self.warm_up()?;
        let started = Instant::now();
        let mut samples = Vec::with_capacity(rounds);
        for r in 0..rounds {
            let mut round = Round::new();
            self.baseline(&Size::ALL, &mut round)?;
            self.load()?;
            self.enforced(false, &mut round)?;
            self.enforced(true, &mut round)?;
            self.enforcer.unload()?;
            self.baseline(&[Size::Large, Size::Small], &mut round)?;
            samples.push(round);
            // One line per round: the console is read line by line.
            println!(
                "vm-bench: round {}/{rounds} ({:.0} s)",
                r + 1,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(samples)
    }
}

/// Per system call loop of [`ops::OPS`]: each round's ns per call, (without, with) the
/// enforcer.
type Calls = BTreeMap<&'static str, Vec<(f64, f64)>>;

/// Calls per loop: enough to dwarf the request's own round trip under TCG.
const CALLS: u64 = 2_000;

impl Bench {
    /// Times each system call loop without the enforcer, with it (twice, in both orders),
    /// and without again, per round.
    fn syscall_rounds(&mut self, rounds: usize) -> Result<Calls, String> {
        let mut calls = Calls::new();
        let ns = |nanos: u64| {
            #[allow(clippy::cast_precision_loss, reason = "nanoseconds fit f64")]
            let per = nanos as f64 / CALLS as f64;
            per
        };
        for r in 0..rounds {
            let mut without = BTreeMap::new();
            let mut with = BTreeMap::new();
            for (op, _) in ops::OPS {
                *without.entry(op).or_insert(0.0) += ns(self.worker.op(op, CALLS)?);
            }
            self.load()?;
            for (op, _) in ops::OPS.iter().chain(ops::OPS.iter().rev()) {
                *with.entry(*op).or_insert(0.0) += ns(self.worker.op(op, CALLS)?);
            }
            self.enforcer.drain();
            self.enforcer.unload()?;
            for (op, _) in ops::OPS.iter().rev() {
                *without.entry(*op).or_insert(0.0) += ns(self.worker.op(op, CALLS)?);
            }
            for (op, _) in ops::OPS {
                calls
                    .entry(op)
                    .or_default()
                    .push((without[op] / 2.0, with[op] / 2.0));
            }
            println!("vm-bench: system call round {}/{rounds}", r + 1);
        }
        Ok(calls)
    }
}

/// What each loop's hooks cost per call: the difference with and without the enforcer.
fn print_syscall_report(calls: &Calls) {
    println!();
    println!(
        "{:<14} {:>10} {:>10} {:>10}  {:<22} hooks",
        "call", "ns without", "ns with", "extra ns", "95% CI"
    );
    for (op, hooks) in ops::OPS {
        let Some(samples) = calls.get(op) else {
            continue;
        };
        let without: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let with: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let extra = Estimate::of(&samples.iter().map(|s| s.1 - s.0).collect::<Vec<_>>());
        let line = serde_json::json!({
            "call": op, "ns_without": stats::mean(&without), "ns_with": stats::mean(&with),
            "extra_ns": extra.mean, "low": extra.low, "high": extra.high,
            "rounds": samples.len(), "hooks": hooks,
        });
        println!("BENCH-SYSCALL {line}");
        println!(
            "{:<14} {:>10.0} {:>10.0} {:>10.0}  [{:>8.0}, {:>8.0}]  {hooks}",
            op,
            stats::mean(&without),
            stats::mean(&with),
            extra.mean,
            extra.low,
            extra.high
        );
    }
}

/// One line of the report: a condition's exec time relative to another's.
struct Row {
    size: Size,
    condition: Condition,
    versus: Condition,
    micros: f64,
    ratio: Estimate,
    rounds: usize,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "binary": self.size.name(),
            "condition": self.condition.name(),
            "versus": self.versus.name(),
            "us_per_exec": self.micros,
            "ratio": self.ratio.mean,
            "low": self.ratio.low,
            "high": self.ratio.high,
            "rounds": self.rounds,
        })
    }
}

fn round_mean(round: &Round, key: (Condition, Size)) -> Option<f64> {
    round.get(&key).map(|v| stats::mean(v))
}

/// Every enforced condition against the baseline, and the deny path against the allow path.
fn summarize(samples: &[Round]) -> Vec<Row> {
    let mut rows = Vec::new();
    for size in Size::ALL {
        let pairs = Condition::ENFORCED
            .iter()
            .map(|&c| (c, Condition::Baseline))
            .chain([(Condition::Denied, Condition::Cached)]);
        for (condition, versus) in pairs {
            let ratios: Vec<f64> = samples
                .iter()
                .filter_map(|r| {
                    Some(round_mean(r, (condition, size))? / round_mean(r, (versus, size))?)
                })
                .collect();
            let means: Vec<f64> = samples
                .iter()
                .filter_map(|r| round_mean(r, (condition, size)))
                .collect();
            if ratios.is_empty() {
                continue;
            }
            rows.push(Row {
                size,
                condition,
                versus,
                micros: stats::mean(&means) / 1e3,
                ratio: Estimate::of(&ratios),
                rounds: ratios.len(),
            });
        }
    }
    rows
}

fn print_report(samples: &[Round], rows: &[Row]) {
    let mut baseline_us = BTreeMap::new();
    for size in Size::ALL {
        let means: Vec<f64> = samples
            .iter()
            .filter_map(|r| round_mean(r, (Condition::Baseline, size)))
            .collect();
        let us = stats::mean(&means) / 1e3;
        baseline_us.insert(size, us);
        let line = serde_json::json!({
            "binary": size.name(), "condition": "baseline", "us_per_exec": us, "rounds": means.len(),
        });
        println!("BENCH-RESULT {line}");
    }
    for row in rows {
        println!("BENCH-RESULT {}", row.json());
    }
    println!();
    println!(
        "{:<6} {:<9} {:>9} {:>12}  {:<9} {:>8}  95% CI",
        "binary", "condition", "us/exec", "baseline us", "vs", "ratio"
    );
    for row in rows {
        println!(
            "{:<6} {:<9} {:>9.0} {:>12.0}  {:<9} {:>8.4}  [{:.4}, {:.4}]",
            row.size.name(),
            row.condition.name(),
            row.micros,
            baseline_us[&row.size],
            row.versus.name(),
            row.ratio.mean,
            row.ratio.low,
            row.ratio.high
        );
    }
}

fn run(opts: Options) -> Result<usize, String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("BENCH-INFO kernel={}", release.trim());
    match enforcer::host::ima::policy_in_force() {
        None => println!("BENCH-INFO ima=no policy: IMA hashes afresh on every request"),
        Some(why) => {
            println!("BENCH-INFO ima=policy in force ({why}): digests may come from IMA's cache")
        }
    }
    let bins = Binaries::prepare(opts.large_mib)?;
    for (size, path) in &bins.granted {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("BENCH-INFO binary.{}={} bytes", size.name(), len);
    }
    let mut granted: Vec<&Path> = bins.granted.values().map(PathBuf::as_path).collect();
    granted.push(&bins.tailed);
    let enforcer = Enforcer::new(&granted)?;
    let cgroup = Path::new(CGROUP_ROOT).join(SCOPE);
    let worker = Worker::start(&cgroup, &Path::new(WORK).join("fresh"))?;
    let mut bench = Bench {
        opts,
        worker,
        bins,
        enforcer,
    };

    bench.enforcer.load()?;
    let tailed = bench.bins.tailed.clone();
    let large = bench.bins.granted[&Size::Large].clone();
    let fixtures = checks::Fixtures {
        probe: &Path::new(FIXTURES).join("probe"),
        large: &large,
        tailed: &tailed,
        unlisted: &Path::new(FIXTURES).join("unlisted"),
        dir: Path::new(WORK).join("checks"),
    };
    let failed = checks::run_all(&mut bench.worker, &fixtures);
    bench.enforcer.unload()?;
    if !bench.opts.checks_only {
        let rounds = bench.opts.rounds;
        let samples = bench.rounds(rounds)?;
        print_report(&samples, &summarize(&samples));
        let calls = bench.syscall_rounds(rounds.min(10))?;
        print_syscall_report(&calls);
    }
    bench.worker.stop();
    Ok(failed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        let scratch = args
            .get(1)
            .map_or_else(|| Path::new(WORK).join("fresh"), PathBuf::from);
        return worker::serve(&scratch);
    }
    let opts = match Options::parse(&args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!(
                "vm-bench: {e}\nusage: vm-bench [--checks-only] [--rounds N] [--execs N] [--large-mib N]"
            );
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = run(opts);
    println!(
        "BENCH-INFO elapsed={:.0} s",
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            println!("vm-bench: {failed} check(s) failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("BENCH-ERROR {e}");
            ExitCode::FAILURE
        }
    }
}
