//! Helpers of the agent-as-a-service scenarios: processes in a scope that a revocation
//! kills, an exec stream across agent restarts, systemd notifications, `enforcer status
//! --json`, and opening the control socket up by mistake.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use enforcer::service::control::protocol::{Listing, StatusReport};

use vm_tests::PROBE_EXIT;

use super::run::{Reaped, check_eperm, check_exit, enforcer_ok};
use super::signed::{Kit, LIVE, SOCKET};
use super::{Env, cgroup};

/// Starts `busybox sleep 300` in LIVE.
pub(crate) fn sleeper_in_scope() -> Reaped {
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["sleep", "300"]);
    enforcer::host::cgroup::spawn_into(&mut cmd, &cgroup(LIVE))
        .unwrap_or_else(|e| panic!("cannot prepare the move into {LIVE}: {e}"));
    Reaped(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("starting sleep in scope: {e}")),
    )
}

/// Waits up to `limit` for `child` to end, which must be by SIGKILL.
#[track_caller]
pub(crate) fn expect_killed(child: &mut Child, limit: Duration, context: &str) {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().expect("try_wait on sleep in scope") {
            Some(status) if status.signal() == Some(libc::SIGKILL) => return,
            Some(status) => panic!("sleep in scope ended with {status}, not SIGKILL ({context})"),
            None if Instant::now() > deadline => {
                panic!("sleep in scope still runs after {limit:?} ({context})")
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Execs in LIVE on a thread until finished: the granted probe must always run, the
/// unlisted program never. Dropped unfinished, it stops, so no exec outlives the scenario.
pub(crate) struct ExecStream {
    stop: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
    wrong: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl ExecStream {
    pub(crate) fn start(env: &Env) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (runs, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let thread = {
            let (stop, runs, wrong) = (stop.clone(), runs.clone(), wrong.clone());
            let (probe, unlisted) = (env.probe.clone(), env.unlisted.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for check in [
                        check_exit(Some(LIVE), &probe, PROBE_EXIT),
                        check_eperm(Some(LIVE), &unlisted),
                    ] {
                        runs.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = check {
                            wrong.fetch_add(1, Ordering::Relaxed);
                            failures.push(e);
                        }
                    }
                }
                failures
            })
        };
        Self {
            stop,
            runs,
            wrong,
            thread: Some(thread),
        }
    }

    /// Stops the stream: how many execs ran, how many were decided wrongly, and how.
    pub(crate) fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        let failures = thread.join().expect("exec stream panicked");
        (
            self.runs.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
            failures,
        )
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads notifications until one equals `want` (each datagram may hold several lines).
#[track_caller]
pub(crate) fn expect_notification(sock: &UnixDatagram, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        ))
        .expect("set a read timeout on the notify socket");
        let Ok(n) = sock.recv(&mut buf) else { break };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.lines().any(|l| l == want) {
            return;
        }
        seen.push(text);
    }
    panic!("no {want} notification within {timeout:?}; got {seen:?}");
}

/// `enforcer status --json`, read as the control protocol's own type.
#[track_caller]
pub(crate) fn status(env: &Env) -> StatusReport {
    json_of(&enforcer_ok(env, &["status", "--json"]))
}

/// `enforcer list --json`, read as the control protocol's own type.
#[track_caller]
pub(crate) fn listing(env: &Env) -> Listing {
    json_of(&enforcer_ok(env, &["list", "--json"]))
}

/// The JSON on the last line the CLI printed.
#[track_caller]
fn json_of<T: serde::de::DeserializeOwned>(out: &str) -> T {
    serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not what the control protocol says: {e}: {out}"))
}

/// Opens the control socket and its directory to everyone until the guard is dropped,
/// which puts back the modes the agent set.
pub(crate) fn socket_opened_up() -> super::ModesUntilDrop {
    super::ModesUntilDrop::set(&[(socket_dir(), 0o755), (Path::new(SOCKET), 0o666)])
}

fn socket_dir() -> &'static Path {
    Path::new(SOCKET).parent().expect("socket dir")
}

#[track_caller]
pub(crate) fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A datagram socket in the kit's directory to hear the agent's sd_notify messages on.
pub(crate) fn notify_socket(kit: &Kit) -> (UnixDatagram, PathBuf) {
    let path = kit.work.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket =
        UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
    (socket, path)
}

/// Writes the agent configuration of `kit` to `config`: its trust store and directories,
/// the LIVE scope, then `extra` (more keys of that scope, or more tables).
pub(crate) fn write_kit_config(kit: &Kit, config: &Path, extra: &str) {
    std::fs::write(
        config,
        format!(
            "trust = {:?}\nbundle_dir = {:?}\nstate_dir = {:?}\naudit_dir = {:?}\nsocket = {SOCKET:?}\n\
             [[scope]]\npath = \"/{LIVE}\"\n{extra}",
            kit.trust.display().to_string(),
            kit.bundle_dir.display().to_string(),
            kit.state.display().to_string(),
            kit.work.join("audit").display().to_string(),
        ),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
}

/// `enforcer run --config CONFIG`, notifying `notify` (watchdog every 2 s).
pub(crate) fn run_with_config(env: &Env, config: &Path, notify: &Path) -> Reaped {
    Reaped(
        env.enforcer()
            .args(["run", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", notify)
            .env("WATCHDOG_USEC", "2000000")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start enforcer run --config: {e}")),
    )
}

/// One HTTP/1.1 GET on `addr`: the status code and the body (0 and the error when the
/// connection fails, so that a caller can keep polling).
pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (0, format!("connect {addr}: {e}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return (0, format!("send to {addr}: {e}"));
    }
    let mut response = Vec::new();
    if let Err(e) = stream.read_to_end(&mut response) {
        return (0, format!("read from {addr}: {e}"));
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}
