//! Whether this host really enforces, decided from facts the agent's loop gathers: a pure
//! function, so every way of failing is tested without a kernel.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the loop last saw. A `String` error is a sentence for the operator.
#[derive(Debug, Clone)]
pub struct ReadyFacts {
    /// Every program link and map pin is in place (an outside `unload` removes them).
    pub attached: Result<(), String>,
    /// The maps hold what the agent computed, and the last apply reported no problem.
    pub policy: Result<(), String>,
    /// When the loop last read the ring buffer (it does at least once per tick).
    pub last_drain: Option<Instant>,
    pub audit: AuditFacts,
    pub self_test: SelfTest,
}

/// The audit writer's state.
#[derive(Debug, Clone)]
pub struct AuditFacts {
    /// `Err` once a write failed: the log takes nothing until it is reopened.
    pub writable: Result<(), String>,
    /// When the last checkpoint was written; `None` until the log is open.
    pub last_checkpoint: Option<Instant>,
    /// Records written since then, which no checkpoint covers yet.
    pub uncovered: u64,
}

/// The start-up self-test's outcome (a failing one stops the agent before it serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfTest {
    Passed,
    /// `self_test = false`: nothing proved that the kernel enforces.
    Skipped,
}

impl ReadyFacts {
    /// Before the loop has looked at anything: nothing is known, so nothing is ready.
    #[must_use]
    pub fn unknown(self_test: SelfTest) -> Self {
        let not_yet = || Err("not checked yet: the agent is starting".to_owned());
        Self {
            attached: not_yet(),
            policy: not_yet(),
            last_drain: None,
            audit: AuditFacts {
                writable: not_yet(),
                last_checkpoint: None,
                uncovered: 0,
            },
            self_test,
        }
    }
}

/// How old a fact may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Since the last read of the ring buffer.
    pub drain: Duration,
    /// Since the last checkpoint, while records wait for one.
    pub checkpoint: Duration,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
}

/// One check and, when it failed, why, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `program`, `policy`, `ring-buffer`, `audit-log` or `self-test`.
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Readiness {
    /// The failed checks' problems.
    pub fn problems(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().filter_map(|c| c.problem.as_deref())
    }
}

fn seconds(d: Duration) -> u64 {
    d.as_secs()
}

/// Decides readiness at `now`.
#[must_use]
pub fn check(facts: &ReadyFacts, now: Instant, limits: &Limits) -> Readiness {
    let drain = match facts.last_drain {
        None => Err("the decision ring buffer has not been read yet".to_owned()),
        Some(at) if now.saturating_duration_since(at) > limits.drain => Err(format!(
            "the decision ring buffer was last read {} s ago (limit {} s): decisions are \
             not being drained into the audit log",
            seconds(now.saturating_duration_since(at)),
            seconds(limits.drain)
        )),
        Some(_) => Ok(()),
    };
    let audit = facts.audit.writable.clone().and_then(|()| {
        let a = &facts.audit;
        match a.last_checkpoint {
            None => Err("the audit log has no checkpoint yet".to_owned()),
            Some(at)
                if a.uncovered > 0 && now.saturating_duration_since(at) > limits.checkpoint =>
            {
                Err(format!(
                    "{} audit record(s) wait for a checkpoint; the last one was written {} s \
                     ago (limit {} s)",
                    a.uncovered,
                    seconds(now.saturating_duration_since(at)),
                    seconds(limits.checkpoint)
                ))
            }
            Some(_) => Ok(()),
        }
    });
    let self_test = match facts.self_test {
        SelfTest::Passed => Ok(()),
        SelfTest::Skipped => Err(
            "the start-up self-test was skipped (self_test = false): nothing proved that \
             this kernel enforces"
                .to_owned(),
        ),
    };
    let checks: Vec<Check> = [
        ("program", facts.attached.clone()),
        ("policy", facts.policy.clone()),
        ("ring-buffer", drain),
        ("audit-log", audit),
        ("self-test", self_test),
    ]
    .into_iter()
    .map(|(name, result)| Check {
        name: name.to_owned(),
        ok: result.is_ok(),
        problem: result.err(),
    })
    .collect();
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        drain: Duration::from_secs(10),
        checkpoint: Duration::from_secs(70),
    };

    fn healthy(now: Instant) -> ReadyFacts {
        ReadyFacts {
            attached: Ok(()),
            policy: Ok(()),
            last_drain: Some(now),
            audit: AuditFacts {
                writable: Ok(()),
                last_checkpoint: Some(now),
                uncovered: 3,
            },
            self_test: SelfTest::Passed,
        }
    }

    fn failed(r: &Readiness) -> Vec<&str> {
        r.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn ready_only_when_every_check_holds() {
        let now = Instant::now();
        let r = check(&healthy(now), now, &LIMITS);
        assert!(r.ready, "{r:?}");
        assert_eq!(r.checks.len(), 5);
        assert_eq!(r.problems().count(), 0);
    }

    #[test]
    fn a_starting_agent_is_not_ready() {
        let now = Instant::now();
        let r = check(&ReadyFacts::unknown(SelfTest::Passed), now, &LIMITS);
        assert!(!r.ready);
        assert_eq!(
            failed(&r),
            ["program", "policy", "ring-buffer", "audit-log"]
        );
    }

    #[test]
    fn each_failure_is_named_in_words() {
        let now = Instant::now();
        let later = now + Duration::from_secs(100);
        type Breaks = fn(&mut ReadyFacts, Instant);
        let cases: [(&str, &str, Breaks); 7] = [
            ("program", "pin", |f, _| {
                f.attached = Err("the link pin /sys/fs/bpf/enforcer/x is missing".into());
            }),
            ("policy", "another process", |f, _| {
                f.policy = Err("another process wrote the grant map".into());
            }),
            ("ring-buffer", "not being drained", |f, now| {
                f.last_drain = Some(now);
                f.audit.last_checkpoint = Some(now + Duration::from_secs(99));
            }),
            ("ring-buffer", "not been read", |f, _| f.last_drain = None),
            ("audit-log", "wait for a checkpoint", |f, now| {
                f.audit.last_checkpoint = Some(now);
                f.last_drain = Some(now + Duration::from_secs(99));
            }),
            ("audit-log", "write failed", |f, _| {
                f.audit.writable = Err("a write failed: disk full".into());
            }),
            ("self-test", "skipped", |f, _| {
                f.self_test = SelfTest::Skipped
            }),
        ];
        for (name, words, breaks) in cases {
            let mut facts = healthy(later);
            breaks(&mut facts, now);
            let r = check(&facts, later, &LIMITS);
            assert!(!r.ready, "{name}: {r:?}");
            assert_eq!(failed(&r), [name], "{r:?}");
            let problem = r.problems().next().expect("a problem");
            assert!(problem.contains(words), "{name}: {problem:?}");
        }
    }

    #[test]
    fn an_old_checkpoint_is_fine_when_nothing_waits_for_one() {
        let now = Instant::now();
        let mut facts = healthy(now + Duration::from_secs(500));
        facts.audit.last_checkpoint = Some(now);
        facts.audit.uncovered = 0;
        assert!(check(&facts, now + Duration::from_secs(500), &LIMITS).ready);
    }
}
