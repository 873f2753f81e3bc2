//! Runs inside the test VM as root (see `cargo xtask vm-test`): drives the real `enforcer`
//! binary and asserts on what a user would observe — exit codes, errnos and reported
//! decisions. The scenarios are in `scenarios/`, one file per area; what they share is in
//! `support/`.
//!
//! A libtest-mimic harness, so it takes `cargo test`'s arguments: `vm-tests [FILTER]`
//! runs the scenarios whose name contains FILTER (`--exact`, `--skip`, `--list` as
//! usual), and `--format json` prints one event per line, which `cargo xtask vm-test`
//! reads from the console. Scenarios run one at a time whatever `--test-threads` says:
//! they share the kernel's state. Each sets up what it needs, so any one can run alone
//! and `--order reverse` or `--order shuffle` must give the same verdicts.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, ValueEnum};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::scenarios::Scenario;
use crate::support::{Env, Unavailable};

mod scenarios;
mod support;

/// Scenarios that prove enforcement, run inside a VM as root.
#[derive(Parser)]
#[command(name = "vm-tests")]
struct Cli {
    /// The order to run the scenarios in.
    #[arg(long, value_enum, default_value_t = Order::Declared)]
    order: Order,
    /// Seed for `--order shuffle` (default: from the clock; printed, to replay an order).
    #[arg(long, value_name = "N")]
    shuffle_seed: Option<u64>,
    #[command(flatten)]
    harness: Arguments,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Order {
    /// Area by area, as declared in `scenarios/`.
    Declared,
    Reverse,
    Shuffle,
}

/// [`Cli`] from the command line, with help that fits this runner: libtest-mimic's own
/// (flattened in) says that tests run in parallel by default.
fn parse_cli() -> Cli {
    let command = Cli::command()
        .help_template(
            "{about}\n\nUsage: vm-tests [OPTIONS] [FILTER]\n\n{all-args}\n\n{after-help}",
        )
        .after_help(
            "Scenarios run one at a time, whatever --test-threads says: they share the \
             kernel's state.",
        );
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli();
    let mut args = cli.harness;
    // The pinned program, its maps, the scope cgroups and the control socket are one per
    // machine: two scenarios at once would see each other's policy.
    args.test_threads = Some(1);
    let env: &'static Env = Box::leak(Box::new(Env::from_env()));
    let mut list: Vec<&'static Scenario> = scenarios::all().collect();
    match cli.order {
        Order::Declared => {}
        Order::Reverse => list.reverse(),
        Order::Shuffle => {
            let seed = cli.shuffle_seed.unwrap_or_else(clock_seed);
            if !args.list {
                println!("vm-tests: shuffled with --shuffle-seed {seed}");
            }
            shuffle(&mut list, seed);
        }
    }
    list.extend(scenarios::after_all());
    if !args.list {
        support::policy::write_fixtures(env);
        record_panic_locations();
    }
    let trials = list
        .into_iter()
        .map(|scenario| Trial::ignorable_test(scenario.name(), move || run(scenario, env)))
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

thread_local! {
    /// Where the last panic on this thread happened, for the FAIL line.
    static PANICKED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Keeps the standard report on stderr (it lands on the console next to what the agent
/// printed) and also remembers the location, which the FAIL line then names.
fn record_panic_locations() {
    let report = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if info.payload().is::<Unavailable>() {
            return;
        }
        let at = info.location().map(ToString::to_string);
        PANICKED_AT.with(|p| *p.borrow_mut() = at);
        report(info);
    }));
}

/// Runs one scenario; a panic becomes a failure whose message is the panic's, with where
/// it happened. A scenario that finds this machine lacks what it needs ([`Unavailable`]) is
/// skipped, and says why on a `SKIP` line that `cargo xtask vm-test` reports (libtest's
/// JSON has no field for the reason).
fn run(scenario: &Scenario, env: &Env) -> Result<Completion, Failed> {
    match panic::catch_unwind(AssertUnwindSafe(|| (scenario.run)(env))) {
        Ok(()) => Ok(Completion::Completed),
        Err(payload) => match payload.downcast::<Unavailable>() {
            Ok(unavailable) => {
                println!("SKIP {}: {}", scenario.name(), unavailable.0);
                Ok(Completion::ignored_with(unavailable.0))
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("panicked with a payload that is not text");
                Err(match PANICKED_AT.with(|p| p.borrow_mut().take()) {
                    Some(at) => format!("{message} (at {at})").into(),
                    None => message.into(),
                })
            }
        },
    }
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
}

/// Fisher-Yates with splitmix64: the same seed gives the same order on every machine.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = usize::try_from(next() % (i as u64 + 1)).expect("an index fits in usize");
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_fixed_by_its_seed() {
        let mut a: Vec<u32> = (0..39).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..39).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..39).collect::<Vec<_>>());
    }

    #[test]
    fn runner_options_sit_next_to_libtest_ones() {
        let cli = Cli::try_parse_from([
            "vm-tests",
            "--order",
            "shuffle",
            "--shuffle-seed",
            "3",
            "--format",
            "json",
            "--exact",
            "memfd-exec-denied",
        ])
        .expect("parses");
        assert!(cli.order == Order::Shuffle && cli.shuffle_seed == Some(3));
        assert_eq!(cli.harness.filter.as_deref(), Some("memfd-exec-denied"));
        assert!(cli.harness.exact);
    }

    #[test]
    fn a_panic_message_and_its_place_reach_the_failure() {
        fn fails(_: &Env) {
            panic!("expected exit 7, got ExecFailed(1)");
        }
        record_panic_locations();
        let scenario = Scenario::for_test("fails", fails);
        let Err(failed) = run(&scenario, &Env::from_env()) else {
            panic!("a panicking scenario passed");
        };
        let message = failed.message().unwrap_or_default();
        assert!(
            message.starts_with("expected exit 7, got ExecFailed(1) (at ")
                && message.contains("main.rs:"),
            "{message}"
        );
    }

    #[test]
    fn an_unavailable_scenario_is_skipped_with_its_reason() {
        fn cannot(_: &Env) {
            panic::panic_any(Unavailable("module x is not packaged".to_owned()));
        }
        record_panic_locations();
        let scenario = Scenario::for_test("cannot", cannot);
        match run(&scenario, &Env::from_env()) {
            Ok(Completion::Ignored { reason }) => {
                assert_eq!(reason.as_deref(), Some("module x is not packaged"));
            }
            Ok(Completion::Completed) => panic!("an unavailable scenario passed"),
            Err(failed) => panic!("an unavailable scenario failed: {:?}", failed.message()),
        }
    }
}
