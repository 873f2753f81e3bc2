//! Runs inside the test VM as root (see `cargo xtask vm-test`): drives the real `enforcer`
//! binary and asserts on what a user would observe — exit codes, errnos and reported
//! decisions. Prints `PASS name` / `FAIL name: why` per scenario and a closing
//! `vm-tests: N passed, N failed` line.
//!
//! The scenarios are in `scenarios/`, one file per area; what they share is in `support/`.
//! Each sets up what it needs, so `vm-tests run FILTER` runs any of them alone.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Instant;

use crate::scenarios::Scenario;
use crate::support::Env;

mod scenarios;
mod support;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {}
        Some("list") => {
            scenarios::all().for_each(|s| println!("{}", s.name()));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("usage: vm-tests run [FILTER] | vm-tests list");
            return ExitCode::from(2);
        }
    }
    let filter = args.get(1).cloned().unwrap_or_default();
    let env = Env::from_env();
    support::policy::write_fixtures(&env);
    record_panic_locations();
    let (mut passed, mut failed) = (0, 0);
    for scenario in scenarios::all() {
        let name = scenario.name();
        if !name.contains(filter.as_str()) {
            continue;
        }
        let started = Instant::now();
        let result = run(scenario, &env);
        let secs = started.elapsed().as_secs_f32();
        match result {
            Ok(()) => {
                passed += 1;
                println!("PASS {name} ({secs:.1}s)");
            }
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {}", why.replace('\n', "\n    "));
            }
        }
    }
    println!("vm-tests: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
        let at = info.location().map(ToString::to_string);
        PANICKED_AT.with(|p| *p.borrow_mut() = at);
        report(info);
    }));
}

/// Runs one scenario; a panic becomes a failure whose message is the panic's, with where
/// it happened.
fn run(scenario: &Scenario, env: &Env) -> Result<(), String> {
    panic::catch_unwind(AssertUnwindSafe(|| (scenario.run)(env))).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("panicked with a payload that is not text");
        match PANICKED_AT.with(|p| p.borrow_mut().take()) {
            Some(at) => format!("{message} (at {at})"),
            None => message.to_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_and_its_place_reach_the_failure() {
        fn fails(_: &Env) {
            panic!("expected exit 7, got ExecFailed(1)");
        }
        record_panic_locations();
        let scenario = Scenario::for_test("fails", fails);
        let message = run(&scenario, &Env::from_env()).expect_err("it panics");
        assert!(
            message.starts_with("expected exit 7, got ExecFailed(1) (at ")
                && message.contains("main.rs:"),
            "{message}"
        );
    }
}
