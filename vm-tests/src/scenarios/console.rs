//! The web console of an agent enforcing in this VM, in a real Chromium on the host.
//!
//! qemu forwards the agent's HTTP port and a step port to the host's loopback (xtask's
//! qemu.rs). This scenario sets the scene, then prints [`STEP`] with the API token: xtask
//! runs the browser test (enforcer/tests/console_vm.rs) against the forwarded port, and
//! the test asks this scenario, over the step port, for what only the VM can do: run an
//! exec in the scope while the live view is open, and unload the programs from outside the
//! agent. The host's verdict comes back on the same port and is this scenario's.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vm_tests::{PROBE_EXIT, UNLISTED_EXIT};

use crate::support::net::{self, GUEST_ADDR};
use crate::support::run::{enforcer_ok, expect_eperm, expect_exit, run_tool};
use crate::support::signed::{Kit, LIVE};
use crate::support::{Env, Unavailable, copy_executable, write_script};

pub(super) const SCENARIOS: &[super::Scenario] =
    scenarios![the_vm_agents_console_in_a_browser_on_the_host];

/// The console line that asks the host for its browser test: `ENFORCER-VM-STEP console
/// <console port> <step port> <token>`. xtask's vm.rs answers it.
const STEP: &str = "ENFORCER-VM-STEP console";
/// Where the agent's window listens in the guest; qemu forwards it.
const CONSOLE_PORT: u16 = 9464;
/// Where this scenario takes the host's steps; qemu forwards it.
const STEP_PORT: u16 = 7001;
/// How long the host may take: it may have to build the browser test first.
const HOST_PATIENCE: Duration = Duration::from_secs(900);
/// A test-only token: the window listens beyond loopback, so it needs one.
const TOKEN: &str = "vm-console-test-token";

fn the_vm_agents_console_in_a_browser_on_the_host(env: &Env) {
    net::up();
    let kit = Kit::new("console");
    // A granted script that runs a granted child and an ungranted one, for the lineage.
    let child = copy_executable(&env.probe, &kit.work.join("bin/console-child"));
    let refused = copy_executable(&env.unlisted, &kit.work.join("bin/console-refused"));
    let script = kit.work.join("bin/console-job.sh");
    write_script(
        &script,
        &format!("{}\n{} || true\nexit 0", child.display(), refused.display()),
    );
    let bundle = kit.bundle(
        env,
        "console",
        &[script.clone(), PathBuf::from("/bin/busybox"), child.clone()],
        &[],
    );

    // Signed checkpoints, so that the proof viewer has something to check.
    let host = kit.out("host");
    enforcer_ok(env, &["key", "generate", "--out", &host]);
    let token = kit.work.join("http-token");
    std::fs::write(&token, TOKEN).unwrap_or_else(|e| panic!("write the token: {e}"));
    let config = kit.work.join("http.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"0.0.0.0:{CONSOLE_PORT}\"\ntoken_file = {:?}\n",
            token.display().to_string()
        ),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
    let host_key = format!("{host}.key");
    let config_arg = config.display().to_string();
    let mut agent = kit.agent_with(
        env,
        &[
            "--config",
            &config_arg,
            "--host-key",
            &host_key,
            "--audit-origin",
            "vm.example/console",
            // A proof needs a checkpoint after its record: the test need not wait a minute.
            "--checkpoint-interval",
            "2s",
        ],
    );
    enforcer_ok(env, &["push", &bundle]);
    expect_exit(Some(LIVE), &script, 0);
    agent.decision_for(&child);

    let steps = TcpListener::bind(("0.0.0.0", STEP_PORT))
        .unwrap_or_else(|e| panic!("bind the step port {STEP_PORT}: {e}"));
    steps
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("step port: {e}"));
    // One write, so that nothing else lands inside the line.
    println!("{STEP} {CONSOLE_PORT} {STEP_PORT} {TOKEN}");
    let live = Live {
        env,
        dir: kit.work.join("live"),
        runs: 0,
    };
    take_steps(&steps, live);
    drop(agent);
}

/// What the host may ask for, one step per connection: a line in, a line out.
struct Live<'a> {
    env: &'a Env,
    dir: PathBuf,
    runs: u32,
}

impl Live<'_> {
    /// A fresh copy of the ungranted program, refused in the scope, and the granted probe
    /// run after it; the answer names both.
    fn exec(&mut self) -> String {
        self.runs += 1;
        let refused = copy_executable(
            &self.env.unlisted,
            &self.dir.join(format!("refused-{}", self.runs)),
        );
        expect_eperm(Some(LIVE), &refused);
        let allowed = copy_executable(
            &self.env.probe,
            &self.dir.join(format!("allowed-{}", self.runs)),
        );
        expect_exit(Some(LIVE), &allowed, PROBE_EXIT);
        // Outside every scope the refused one runs: the denial is the scope's doing.
        expect_exit(None, &refused, UNLISTED_EXIT);
        format!("ran {} {}", refused.display(), allowed.display())
    }

    fn unload(&self) -> String {
        let (code, out) = run_tool(self.env.enforcer().arg("unload"));
        assert!(code == 0, "enforcer unload exited {code}: {out}");
        "unloaded".to_owned()
    }
}

/// Serves the host's steps until it sends its verdict: `done pass`, `done skip REASON`
/// or `done fail REASON`.
fn take_steps(steps: &TcpListener, mut live: Live) {
    let start = Instant::now();
    loop {
        let stream = match steps.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < HOST_PATIENCE,
                    "the host sent no verdict within {HOST_PATIENCE:?} (is {GUEST_ADDR}:{STEP_PORT} \
                     forwarded? `cargo xtask vm-test` does it)"
                );
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => panic!("accept on the step port: {e}"),
        };
        let (line, mut reply) = read_step(stream);
        let answer = match line.split_once(' ').unwrap_or((&line, "")) {
            ("exec", _) => live.exec(),
            ("unload", _) => live.unload(),
            ("done", verdict) => return verdict_of(verdict),
            _ => format!("unknown step {line:?}"),
        };
        reply
            .write_all(format!("{answer}\n").as_bytes())
            .unwrap_or_else(|e| panic!("answer step {line:?}: {e}"));
    }
}

fn read_step(stream: TcpStream) -> (String, TcpStream) {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(30))))
        .unwrap_or_else(|e| panic!("step connection: {e}"));
    let reply = stream
        .try_clone()
        .unwrap_or_else(|e| panic!("step connection: {e}"));
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("read a step: {e}"));
    (line.trim_end().to_owned(), reply)
}

/// The host's verdict, as this scenario's.
fn verdict_of(verdict: &str) {
    match verdict.split_once(' ').unwrap_or((verdict, "")) {
        ("pass", _) => {}
        ("skip", why) => std::panic::panic_any(Unavailable(format!("on the host: {why}"))),
        ("fail", why) => panic!("the browser test on the host failed: {why}"),
        _ => panic!("the host sent an unknown verdict {verdict:?}"),
    }
}
