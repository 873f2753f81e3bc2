//! The worker: a process inside the benchmark's cgroup that runs the timed execs, so the
//! controller (which loads and unloads the enforcer, and may not use bpf() inside a
//! governed scope) stays outside it and no exec pays for a cgroup move.
//!
//! The controller sends one JSON request per line on the worker's stdin; the worker
//! answers each with one JSON line on stdout.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

/// What one exec did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Exited(i32),
    /// execve failed with this errno.
    Refused(i32),
    Signalled,
}

impl Outcome {
    fn encode(&self) -> String {
        match self {
            Self::Exited(code) => format!("exit:{code}"),
            Self::Refused(errno) => format!("errno:{errno}"),
            Self::Signalled => "signal".to_owned(),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("exit", code)) => code.parse().ok().map(Self::Exited),
            Some(("errno", errno)) => errno.parse().ok().map(Self::Refused),
            _ => (text == "signal").then_some(Self::Signalled),
        }
    }
}

/// What to run.
pub(crate) struct Request<'a> {
    pub program: &'a Path,
    pub count: usize,
    /// Copy `program` to a new file before each exec (untimed) and exec the copy, so the
    /// kernel has never seen the file: the uncached first exec.
    pub fresh_copy: bool,
    pub env: &'a [(&'a str, &'a str)],
    /// Return the last exec's stdout and stderr.
    pub capture: bool,
}

/// What came back.
pub(crate) struct Reply {
    /// Total time of the timed execs, fork to reaped exit.
    pub nanos: u64,
    /// Every distinct outcome, in the order first seen.
    pub outcomes: Vec<Outcome>,
    pub output: String,
}

/// The controller's handle on the worker.
pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts the worker (this binary, `worker` mode) inside the cgroup `dir`.
    pub(crate) fn start(dir: &Path, scratch: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("worker")
            .arg(scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        enforcer::host::cgroup::spawn_into(&mut cmd, dir)
            .map_err(|e| format!("cgroup move: {e}"))?;
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the worker: {e}"))?;
        let stdin = child.stdin.take().ok_or("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("worker stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    pub(crate) fn run(&mut self, req: &Request<'_>) -> Result<Reply, String> {
        let line = json!({
            "program": req.program,
            "count": req.count,
            "fresh_copy": req.fresh_copy,
            "env": req.env,
            "capture": req.capture,
        });
        writeln!(self.stdin, "{line}").map_err(|e| format!("worker: {e}"))?;
        let mut answer = String::new();
        match self.stdout.read_line(&mut answer) {
            Ok(0) => return Err("the worker exited".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("worker: {e}")),
        }
        let v: Value =
            serde_json::from_str(&answer).map_err(|e| format!("worker said {answer:?}: {e}"))?;
        if let Some(err) = v["error"].as_str() {
            return Err(format!("worker: {err}"));
        }
        let outcomes = v["outcomes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_str().and_then(Outcome::decode))
            .collect();
        Ok(Reply {
            nanos: v["nanos"].as_u64().unwrap_or(0),
            outcomes,
            output: v["output"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Runs `count` of the system call loop `op` ([`crate::ops`]); returns the loop's time.
    pub(crate) fn op(&mut self, op: &str, count: u64) -> Result<u64, String> {
        writeln!(self.stdin, "{}", json!({ "op": op, "count": count }))
            .map_err(|e| format!("worker: {e}"))?;
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .map_err(|e| format!("worker: {e}"))?;
        let v: Value =
            serde_json::from_str(&answer).map_err(|e| format!("worker said {answer:?}: {e}"))?;
        if let Some(err) = v["error"].as_str() {
            return Err(format!("worker: {op}: {err}"));
        }
        v["nanos"]
            .as_u64()
            .ok_or_else(|| format!("worker: {op}: no time in {answer:?}"))
    }

    /// Runs and checks that every exec ended in `expected`; returns the total time.
    pub(crate) fn timed(&mut self, req: &Request<'_>, expected: &Outcome) -> Result<u64, String> {
        let reply = self.run(req)?;
        if reply.outcomes != [expected.clone()] {
            return Err(format!(
                "{}: expected only {expected:?}, got {:?} {}",
                req.program.display(),
                reply.outcomes,
                reply.output
            ));
        }
        Ok(reply.nanos)
    }

    pub(crate) fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// The worker's loop: serve requests until stdin closes.
pub(crate) fn serve(scratch: &Path) -> std::process::ExitCode {
    if let Err(e) = std::fs::create_dir_all(scratch) {
        eprintln!("worker: cannot create {}: {e}", scratch.display());
        return std::process::ExitCode::FAILURE;
    }
    let stdout = std::io::stdout();
    let mut copies = 0u64;
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(req) => handle(&req, scratch, &mut copies).unwrap_or_else(|e| json!({ "error": e })),
            Err(e) => json!({ "error": format!("bad request {line:?}: {e}") }),
        };
        let mut out = stdout.lock();
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
}

fn handle(req: &Value, scratch: &Path, copies: &mut u64) -> Result<Value, String> {
    if let Some(op) = req["op"].as_str() {
        let count = req["count"].as_u64().ok_or("no count")?;
        return crate::ops::run(op, count, scratch).map(|nanos| json!({ "nanos": nanos }));
    }
    let program = PathBuf::from(req["program"].as_str().ok_or("no program")?);
    let count = req["count"].as_u64().ok_or("no count")?;
    let fresh = req["fresh_copy"].as_bool().unwrap_or(false);
    let capture = req["capture"].as_bool().unwrap_or(false);
    let env: Vec<(String, String)> = serde_json::from_value(req["env"].clone()).unwrap_or_default();
    let mut nanos = 0u64;
    let mut outcomes: Vec<String> = Vec::new();
    let mut output = String::new();
    for _ in 0..count {
        let target = if fresh {
            *copies += 1;
            let copy = scratch.join(format!("fresh-{copies}"));
            std::fs::copy(&program, &copy)
                .map_err(|e| format!("copy {}: {e}", program.display()))?;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("chmod: {e}"))?;
            copy
        } else {
            program.clone()
        };
        let mut cmd = Command::new(&target);
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let started = Instant::now();
        let (outcome, text) = if capture {
            match cmd.output() {
                Ok(out) => (
                    exit_outcome(out.status),
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                ),
                Err(e) => (
                    Outcome::Refused(e.raw_os_error().unwrap_or(-1)),
                    String::new(),
                ),
            }
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            match cmd.status() {
                Ok(status) => (exit_outcome(status), String::new()),
                Err(e) => (
                    Outcome::Refused(e.raw_os_error().unwrap_or(-1)),
                    String::new(),
                ),
            }
        };
        nanos += u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if fresh {
            let _ = std::fs::remove_file(&target);
        }
        let encoded = outcome.encode();
        if !outcomes.contains(&encoded) {
            outcomes.push(encoded);
        }
        output = text;
    }
    Ok(json!({ "nanos": nanos, "outcomes": outcomes, "output": output }))
}

fn exit_outcome(status: std::process::ExitStatus) -> Outcome {
    status.code().map_or(Outcome::Signalled, Outcome::Exited)
}
