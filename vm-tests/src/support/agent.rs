//! A background `enforcer run --json` whose stdout lines the scenario reads.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{AGENT_READY, Env};

/// A running agent. Dropped without [`Agent::stop`], [`Agent::kill`] or [`Agent::wait`]
/// (a scenario that failed half-way), it is stopped, so that no agent outlives its scenario:
/// the next scenario's `enforcer load` would refuse to start next to it.
pub(crate) struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    reaped: bool,
}

impl Agent {
    /// `enforcer run` on the shared unsigned policy.
    #[track_caller]
    pub(crate) fn start(env: &Env) -> Self {
        Self::start_with(env, &[])
    }

    /// `enforcer run` on the shared unsigned policy, with `extra` arguments.
    #[track_caller]
    pub(crate) fn start_with(env: &Env, extra: &[&str]) -> Self {
        let policy = env.policy.display().to_string();
        let mut args = vec!["--unsigned-policy", policy.as_str()];
        args.extend(extra);
        Self::spawn(env.enforcer().args(["run", "--json"]).args(args))
    }

    /// Starts `cmd` (an `enforcer run --json ...`) and waits until it follows decisions.
    #[track_caller]
    pub(crate) fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start enforcer run: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Self {
            child,
            lines,
            reaped: false,
        };
        agent.wait_for(AGENT_READY, "following decisions", |l| {
            l.starts_with("following decisions")
        });
        agent
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line matching `pred` (described by `what`), returning it.
    #[track_caller]
    pub(crate) fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("timed out waiting for agent output ({what}) after {timeout:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    self.reaped = true;
                    panic!("agent exited early ({status}) while waiting for {what}")
                }
            }
        }
    }

    /// Reads lines until one matches `pred`; after `timeout`, the lines it read instead.
    pub(crate) fn find_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => return Err(seen),
            }
        }
    }

    /// Waits for the agent's JSON decision about `path`.
    #[track_caller]
    pub(crate) fn decision_for(&mut self, path: &Path) -> serde_json::Value {
        let want = path.display().to_string();
        let line = self.wait_for(
            Duration::from_secs(20),
            &format!("a decision about {want}"),
            |l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|v| v["path"] == want.as_str())
            },
        );
        serde_json::from_str(&line).expect("the line parsed as JSON a moment ago")
    }

    /// Whether the agent has not exited.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the agent to exit, returning its exit code (None: killed by a signal).
    #[track_caller]
    pub(crate) fn wait(mut self) -> Option<i32> {
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("cannot wait for the agent: {e}"));
        self.reaped = true;
        status.code()
    }

    /// SIGTERM: the agent must exit 0 (and leave enforcement on).
    #[track_caller]
    pub(crate) fn stop(self) {
        self.signal(libc::SIGTERM);
        let code = self.wait();
        assert!(code == Some(0), "agent exited {code:?} on SIGTERM");
    }

    /// SIGKILL: the agent dies without a chance to clean up.
    #[track_caller]
    pub(crate) fn kill(self) {
        self.signal(libc::SIGKILL);
        self.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // It may be paused (SIGSTOP) by the scenario that failed.
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that the decision `v` has `key` = `want`.
#[track_caller]
pub(crate) fn expect_field(v: &serde_json::Value, key: &str, want: &str) {
    assert!(v[key] == want, "expected {key}={want}, got {v}");
}
