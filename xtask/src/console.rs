//! The host's half of the VM's console scenario (vm-tests' `scenarios/console.rs`).
//!
//! When the scenario prints `ENFORCER-VM-STEP console <console port> <step port> <token>`,
//! the browser test (enforcer/tests/console_vm.rs) runs here, in Debian's headless
//! Chromium, against the guest ports that qemu forwards to this host's loopback. Its
//! verdict goes back to the scenario through the step port, and becomes the scenario's:
//! the result is reported once, on the scenario's own line.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd;
use crate::qemu::Forwards;
use crate::workspace::cargo;

/// The console marker of the scenario's request.
pub(crate) const STEP: &str = "ENFORCER-VM-STEP console ";

/// Starts the browser test that the step line `rest` (after [`STEP`]) asks for, on a
/// thread that prints its output with `prefix` and then sends the verdict to the VM.
pub(crate) fn start(
    root: &Path,
    rest: &str,
    forwards: &Forwards,
    prefix: String,
) -> Result<JoinHandle<()>> {
    let mut words = rest.split_whitespace();
    let (Some(console), Some(steps), Some(token), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        bail!("a console step line that is not `<console port> <step port> <token>`: {rest:?}");
    };
    let host_port = |guest: &str| -> Result<u16> {
        let guest: u16 = guest
            .parse()
            .with_context(|| format!("console step: {guest:?} is not a port"))?;
        forwards
            .host_port(guest)
            .with_context(|| format!("console step: guest port {guest} is not forwarded"))
    };
    let console = host_port(console)?;
    let steps = host_port(steps)?;
    let token = token.to_owned();
    let root = root.to_path_buf();
    Ok(std::thread::spawn(move || {
        let verdict = verdict(&root, console, steps, &token, &prefix);
        println!("{prefix}console: the browser test's verdict: {verdict}");
        if let Err(e) = send_verdict(steps, &verdict) {
            println!("{prefix}console: {e:#}");
        }
    }))
}

/// `pass`, `skip REASON` or `fail REASON`, as the scenario's step port takes them.
fn verdict(root: &Path, console: u16, steps: u16, token: &str, prefix: &str) -> String {
    // No `-p`: the same package selection as the host tests' `cargo test`, so that both
    // resolve the same features and share one build.
    let mut test = cargo();
    test.current_dir(root)
        .args(["test", "--test", "console_vm", "--"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env("ENFORCER_VM_CONSOLE", format!("http://127.0.0.1:{console}"))
        .env("ENFORCER_VM_STEPS", format!("127.0.0.1:{steps}"))
        .env("ENFORCER_VM_TOKEN", token);
    match run_shown(&mut test, &format!("{prefix}console: ")) {
        Ok(Shown {
            ok: true,
            skipped: Some(why),
            ..
        }) => format!("skip {why}"),
        Ok(Shown { ok: true, .. }) => "pass".to_owned(),
        Ok(Shown {
            panic: Some(why), ..
        }) => format!("fail {why}"),
        Ok(Shown { .. }) => format!("fail `{}` failed; see its lines above", cmd::display(&test)),
        Err(e) => format!("fail {e:#}"),
    }
}

/// What a test run showed.
struct Shown {
    ok: bool,
    /// The message of the first panic it printed.
    panic: Option<String>,
    /// Why it did not run its checks: the browser module's `SKIPPED: why` line (no
    /// Chromium on this host, outside CI).
    skipped: Option<String>,
}

/// Runs `cmd`, printing its stdout and stderr lines with `prefix`.
fn run_shown(cmd: &mut Command, prefix: &str) -> Result<Shown> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::display(cmd)))?;
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(cmd::forward_lines(out, tx.clone(), |l| l));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(cmd::forward_lines(err, tx, |l| l));
    }
    let (mut panicked, mut message, mut skipped) = (false, None, None);
    for line in rx {
        println!("{prefix}{line}");
        if let Some(why) = line.strip_prefix("SKIPPED: ") {
            skipped.get_or_insert_with(|| why.to_owned());
        }
        // `thread '…' panicked at FILE:LINE:COL:` then the message on the next line.
        if message.is_none() {
            if panicked {
                message = Some(line.trim().to_owned());
            }
            panicked = line.contains(" panicked at ");
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{}`", cmd::display(cmd)))?;
    for reader in readers {
        let _ = reader.join();
    }
    Ok(Shown {
        ok: status.success(),
        panic: message,
        skipped,
    })
}

/// Sends `done VERDICT` to the scenario's step port.
fn send_verdict(steps: u16, verdict: &str) -> Result<()> {
    // A few tries: the guest may be busy.
    send_line(steps, &format!("done {}\n", verdict.replace('\n', " ")), 10)
}

/// Sends `line` to the guest's port forwarded to `port`, in up to `tries` tries a second
/// apart.
fn send_line(port: u16, line: &str, tries: u32) -> Result<()> {
    let mut last = None;
    for attempt in 0..tries {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        match TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| s.write_all(line.as_bytes()))
        {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no attempt"), Into::into)).with_context(|| {
        format!(
            "cannot send {:?} to the VM's port forwarded to {port}",
            line.trim_end()
        )
    })
}

/// The demo's line that names the console: `ENFORCER-DEMO-CONSOLE <port> <token>`.
const DEMO_CONSOLE: &str = "ENFORCER-DEMO-CONSOLE ";
/// The demo's line before it waits for the host's word: `ENFORCER-DEMO-HOLD <port>`.
const DEMO_HOLD: &str = "ENFORCER-DEMO-HOLD ";

/// Takes the demo's console lines (vm-tests/demo.sh), which are for this host and not
/// shown as they are; whether `text` was one. The console line becomes the address of the
/// console on this host. At the hold line the demo waits for a word on its hold port:
/// with `keep` (`cargo xtask demo --console`) once Enter is pressed here, else at once.
pub(crate) fn demo_line(text: &str, forwards: &Forwards, keep: bool) -> bool {
    let port = |word: Option<&str>| {
        word.and_then(|p| p.parse().ok())
            .and_then(|guest| forwards.host_port(guest))
    };
    if let Some(rest) = text.strip_prefix(DEMO_CONSOLE) {
        let mut words = rest.split_whitespace();
        match (port(words.next()), words.next()) {
            (Some(host), Some(token)) => {
                println!(
                    "\n  The agent's web console: http://127.0.0.1:{host}/  (API token: {token})"
                );
                if !keep {
                    println!(
                        "  It lives as long as the demo; `cargo xtask demo --console` keeps it up at the end."
                    );
                }
            }
            _ => println!("demo: a console line xtask cannot read: {text}"),
        }
        return true;
    }
    let Some(rest) = text.strip_prefix(DEMO_HOLD) else {
        return false;
    };
    let Some(host) = port(Some(rest.trim())) else {
        println!("demo: a hold line xtask cannot read: {text}");
        return true;
    };
    std::thread::spawn(move || {
        if keep {
            println!("\n  The console stays up. Press Enter here to end the demo.");
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        // Again each second for a while: the demo's `nc` may not listen yet when the
        // first word comes, and a word to a port nobody listens on is lost. Once the
        // demo took one, the rest find the port closed, harmlessly.
        for _ in 0..30 {
            let _ = send_line(host, "done\n", 1);
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    true
}
