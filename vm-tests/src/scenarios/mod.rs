//! The scenarios, one file per area. Each is a plain function that panics with what was
//! expected and what happened, and sets up what it needs itself: any one of them can run
//! alone, and the whole list in any order, with the same verdicts.

/// One scenario: its name is its function's name in kebab case.
pub(crate) struct Scenario {
    function: &'static str,
    pub(crate) run: fn(&crate::support::Env),
}

impl Scenario {
    /// The name filters match and results report, e.g. `memfd-exec-denied`.
    pub(crate) fn name(&self) -> String {
        self.function.replace('_', "-")
    }

    #[cfg(test)]
    pub(crate) fn for_test(function: &'static str, run: fn(&crate::support::Env)) -> Self {
        Self { function, run }
    }
}

/// `scenarios![f, g]`: the table of an area, named after the functions.
macro_rules! scenarios {
    ($($function:ident),* $(,)?) => {
        &[$($crate::scenarios::Scenario { function: stringify!($function), run: $function }),*]
    };
}

mod artifacts;
mod audit;
mod console;
mod containment;
mod exec;
mod injection;
mod mappings;
mod service;
mod tamper;
mod workload;

/// Every scenario, area by area.
pub(crate) fn all() -> impl Iterator<Item = &'static Scenario> {
    [
        exec::SCENARIOS,
        mappings::SCENARIOS,
        tamper::SCENARIOS,
        injection::SCENARIOS,
        containment::SCENARIOS,
        workload::SCENARIOS,
        audit::SCENARIOS,
        artifacts::SCENARIOS,
        service::SCENARIOS,
        console::SCENARIOS,
    ]
    .into_iter()
    .flatten()
}

/// Scenarios that read what the others left, run after them whatever the order.
pub(crate) fn after_all() -> impl Iterator<Item = &'static Scenario> {
    audit::AFTER_ALL.iter()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_and_kebab_case() {
        let names: Vec<String> = all().chain(after_all()).map(Scenario::name).collect();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "duplicate scenario names: {names:?}"
        );
        for name in &names {
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name} is not kebab case"
            );
        }
    }
}
