//! Booting a kernel + initramfs under qemu (TCG: nested KVM does not work on our hosts) and
//! watching its serial console for the markers `/init` prints, crashes and a timeout.

use std::fs::File;
use std::io::{LineWriter, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cmd;
use crate::initramfs::{BOOTED, EXIT, LSM};
use crate::kernels::Kernel;

/// TCG because nested KVM hangs on our hosts. The NIC is [`Forwards::nic`]'s.
#[rustfmt::skip]
const QEMU_ARGS: &[&str] = &[
    "-accel", "tcg,thread=multi", "-cpu", "max", "-m", "1024", "-smp", "2",
    "-nographic", "-no-reboot",
];

/// Guest ports forwarded to the host's loopback: the agent's HTTP window (the console
/// scenario and the demo) and the console scenario's step port (vm-tests'
/// `scenarios/console.rs`, `support/net.rs`).
pub(crate) const FORWARDED: [u16; 2] = [9464, 7001];

/// Where on the host's loopback each of [`FORWARDED`] arrives: ports free when chosen.
pub(crate) struct Forwards(Vec<(u16, u16)>);

impl Forwards {
    pub(crate) fn choose() -> Result<Self> {
        let mut ports = Vec::new();
        // Held until all are chosen, so that no two are the same.
        let mut held = Vec::new();
        for guest in FORWARDED {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .context("cannot find a free port on the host's loopback")?;
            ports.push((guest, listener.local_addr()?.port()));
            held.push(listener);
        }
        Ok(Self(ports))
    }

    /// The host's port for guest port `guest`, when it is forwarded.
    pub(crate) fn host_port(&self, guest: u16) -> Option<u16> {
        self.0.iter().find(|(g, _)| *g == guest).map(|(_, h)| *h)
    }

    /// An e1000 NIC on qemu's user network with the forwards. `restrict=on`: the guest
    /// reaches neither the host nor anything beyond; only the forwards come in. A kernel
    /// without the e1000 module (6.19: no modules package) just has no interface.
    fn nic(&self) -> String {
        let mut nic = "user,model=e1000,restrict=on".to_owned();
        for (guest, host) in &self.0 {
            nic.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        nic
    }
}
/// Kernel log text that means the kernel is broken; the run is stopped shortly after.
const CRASH_SIGNS: &[&str] = &["Kernel panic", "soft lockup", "BUG:", "Oops"];
/// Time to keep reading after a crash line, so the log holds the trace.
const CRASH_GRACE: Duration = Duration::from_secs(3);
/// Time `poweroff -f` gets after the payload's exit marker.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

/// What one boot showed on the console.
#[derive(Default)]
pub(crate) struct Boot {
    /// `uname -r` in the VM, once `/init` started.
    pub release: Option<String>,
    pub booted_after: Option<Duration>,
    /// `/sys/kernel/security/lsm` in the VM.
    pub lsm: Option<String>,
    pub exit_code: Option<i32>,
    pub crash: Option<String>,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// What qemu itself printed on stderr (bad arguments, missing files).
    pub qemu_errors: Vec<String>,
}

impl Boot {
    /// Why this boot cannot count as a clean run; empty if it can.
    pub(crate) fn problems(&self, timeout: Duration, log: &Path) -> Vec<String> {
        let mut problems = Vec::new();
        let see = format!("see {}", log.display());
        if let Some(line) = &self.crash {
            problems.push(format!("kernel crashed: {line} ({see})"));
        }
        if self.timed_out {
            problems.push(format!("timed out after {} s ({see})", timeout.as_secs()));
        }
        match (&self.release, &self.lsm) {
            (None, _) => {
                let qemu = self.qemu_errors.join("; ");
                problems.push(
                    format!("the VM never reached /init ({see}) {qemu}")
                        .trim()
                        .to_owned(),
                );
            }
            (Some(_), Some(lsm)) if !lsm.split(',').any(|m| m == "bpf") => {
                problems.push(format!("BPF LSM is not active in the VM (lsm: {lsm})"));
            }
            // A run cut short before /init printed the LSM line is reported above.
            (Some(_), None) if problems.is_empty() => {
                problems.push(format!("/init printed no LSM line ({see})"));
            }
            _ => {}
        }
        if self.exit_code.is_none() && problems.is_empty() {
            problems.push(format!(
                "the VM stopped before the payload finished ({see})"
            ));
        }
        problems
    }
}

/// One line of the serial console.
pub(crate) struct Line<'a> {
    /// Without terminal escapes: what the log holds and results are parsed from.
    pub text: &'a str,
    /// With its colours, for showing on a terminal.
    pub coloured: &'a str,
    /// Printed while the payload ran (between the boot and exit markers).
    pub from_payload: bool,
}

/// Boots `kernel` with `initrd` and the port `forwards`, copying the console to `log`, and
/// calls `on_line` with each console line. Returns once qemu has exited or was killed.
pub(crate) fn run(
    kernel: &Kernel,
    initrd: &Path,
    forwards: &Forwards,
    timeout: Duration,
    log: &Path,
    mut on_line: impl FnMut(&Line),
) -> Result<Boot> {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(QEMU_ARGS)
        .arg("-nic")
        .arg(forwards.nic())
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(cmdline(kernel.config_lsm()?.as_deref()))
        // No stdin: CI has none, and a terminal on stdin would be switched to raw mode.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut log = LineWriter::new(
        File::create(log).with_context(|| format!("cannot create {}", log.display()))?,
    );
    // The exact command first, so a failed boot can be reproduced by hand.
    let _ = writeln!(log, "$ {}", cmd::display(&qemu));
    let start = Instant::now();
    let mut child = qemu
        .spawn()
        .context("cannot start qemu-system-x86_64: run `cargo xtask setup`")?;

    enum Msg {
        Console(String),
        Qemu(String),
    }
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(cmd::forward_lines(out, tx.clone(), Msg::Console));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(cmd::forward_lines(err, tx, Msg::Qemu));
    }

    let mut boot = Boot::default();
    let mut deadline = start + timeout;
    let mut in_payload = false;
    loop {
        let now = Instant::now();
        let Some(left) = deadline.checked_duration_since(now) else {
            boot.timed_out = boot.exit_code.is_none() && boot.crash.is_none();
            break;
        };
        let raw = match rx.recv_timeout(left) {
            Ok(Msg::Console(raw)) => raw,
            Ok(Msg::Qemu(line)) => {
                let _ = writeln!(log, "qemu: {line}");
                boot.qemu_errors.push(line);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let text = strip_escapes(&raw, false);
        let _ = writeln!(log, "{text}");
        if boot.crash.is_none() && is_crash(&text) {
            boot.crash = Some(text.clone());
            deadline = deadline.min(now + CRASH_GRACE);
        }
        let from_payload = if let Some(release) = marker(&text, BOOTED) {
            boot.release = Some(release.to_owned());
            boot.booted_after = Some(start.elapsed());
            in_payload = true;
            false
        } else if let Some(lsm) = marker(&text, LSM) {
            boot.lsm = Some(lsm.to_owned());
            false
        } else if let Some(code) = marker(&text, EXIT) {
            in_payload = false;
            // An unparsable code still means the payload failed.
            boot.exit_code = Some(code.parse().unwrap_or(-1));
            deadline = deadline.min(now + POWEROFF_GRACE);
            false
        } else {
            in_payload
        };
        on_line(&Line {
            text: &text,
            coloured: &strip_escapes(&raw, true),
            from_payload,
        });
    }
    // Killing a qemu that already exited is harmless; wait() reaps it either way.
    let _ = child.kill();
    child.wait().context("cannot wait for qemu")?;
    for reader in readers {
        let _ = reader.join();
    }
    boot.elapsed = start.elapsed();
    Ok(boot)
}

/// The kernel command line: serial console, reboot (so qemu exits) on panic, little kernel
/// noise, and BPF appended to the LSM order when the kernel's built-in order (`CONFIG_LSM`)
/// lacks it.
fn cmdline(config_lsm: Option<&str>) -> String {
    let mut line = "console=ttyS0 panic=-1 quiet".to_owned();
    if let Some(lsm) = config_lsm
        && !lsm.split(',').any(|m| m == "bpf")
    {
        let order = if lsm.is_empty() {
            "bpf".to_owned()
        } else {
            format!("{lsm},bpf")
        };
        line.push_str(&format!(" lsm={order}"));
    }
    line
}

/// `line` without terminal control sequences: SeaBIOS clears the screen, and colours would
/// garble the log file and the parsing of result lines. `keep_colours` keeps SGR (`ESC[..m`)
/// sequences for showing the line on a terminal.
fn strip_escapes(line: &str, keep_colours: bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
        } else if chars.next() == Some('[') {
            // CSI: parameters and intermediates up to a final byte in '@'..='~'.
            let mut sequence = String::from("\x1b[");
            for c in chars.by_ref() {
                sequence.push(c);
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
            if keep_colours && sequence.ends_with('m') {
                out.push_str(&sequence);
            }
        }
        // Any other escape is ESC plus one character, both dropped above.
    }
    out
}

/// The value after `marker` in a console line, up to any kernel record on the same line.
fn marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let start = line.find(marker)? + marker.len();
    Some(user_text(&line[start..]).trim())
}

fn is_crash(line: &str) -> bool {
    kernel_record_start(line)
        .is_some_and(|start| CRASH_SIGNS.iter().any(|sign| line[start..].contains(sign)))
}

/// The part of a console line that userspace printed: kernel records (`[  1.234567] ...`)
/// can start anywhere on a line because the kernel does not wait for a newline.
pub(crate) fn user_text(line: &str) -> &str {
    &line[..kernel_record_start(line).unwrap_or(line.len())]
}

/// Where a `[ seconds.micros]` kernel timestamp starts in `line`.
fn kernel_record_start(line: &str) -> Option<usize> {
    line.match_indices('[')
        .map(|(i, _)| i)
        .find(|&i| is_timestamp(&line[i + 1..]))
}

fn is_timestamp(text: &str) -> bool {
    let text = text.trim_start_matches(' ');
    let Some((seconds, rest)) = text.split_once('.') else {
        return false;
    };
    let Some((fraction, _)) = rest.split_once(']') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(seconds) && digits(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_records_are_found_anywhere_on_a_line() {
        assert_eq!(user_text("[    1.234567] Run /init"), "");
        assert_eq!(
            user_text("PASS exec[    3.000001] random: crng"),
            "PASS exec"
        );
        assert_eq!(user_text("FAIL x: got [1, 2]"), "FAIL x: got [1, 2]");
        assert_eq!(user_text("[1.5 s] not a record"), "[1.5 s] not a record");
    }

    #[test]
    fn crashes_only_in_kernel_records() {
        assert!(is_crash(
            "[   12.000000] Kernel panic - not syncing: Attempted to kill init!"
        ));
        assert!(is_crash(
            "[   40.100000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!"
        ));
        assert!(is_crash("out[    5.000000] Oops: general protection fault"));
        assert!(!is_crash("PASS oops_is_a_scenario_name"));
        assert!(!is_crash("[    1.000000] Run /init as init process"));
    }

    #[test]
    fn a_clean_run_needs_init_bpf_lsm_and_the_exit_marker() {
        let problems = |boot: &Boot| boot.problems(Duration::from_secs(9), Path::new("log"));
        let mut boot = Boot {
            release: Some("6.1.0-50-amd64".to_owned()),
            lsm: Some("lockdown,capability,bpf".to_owned()),
            exit_code: Some(0),
            ..Boot::default()
        };
        assert!(problems(&boot).is_empty());
        boot.exit_code = None;
        assert_eq!(
            problems(&boot),
            ["the VM stopped before the payload finished (see log)"]
        );
        boot.lsm = Some("lockdown,capability".to_owned());
        assert_eq!(
            problems(&boot),
            ["BPF LSM is not active in the VM (lsm: lockdown,capability)"]
        );
        boot.lsm = None;
        boot.timed_out = true;
        assert_eq!(problems(&boot), ["timed out after 9 s (see log)"]);
        let crashed = Boot {
            crash: Some("[ 1.0] Kernel panic".to_owned()),
            ..Boot::default()
        };
        assert_eq!(problems(&crashed).len(), 2, "crash and never reached /init");
    }

    #[test]
    fn bpf_is_appended_only_when_missing() {
        assert_eq!(cmdline(None), "console=ttyS0 panic=-1 quiet");
        assert_eq!(
            cmdline(Some("landlock,bpf")),
            "console=ttyS0 panic=-1 quiet"
        );
        assert_eq!(
            cmdline(Some("landlock,lockdown,yama")),
            "console=ttyS0 panic=-1 quiet lsm=landlock,lockdown,yama,bpf"
        );
        assert_eq!(cmdline(Some("")), "console=ttyS0 panic=-1 quiet lsm=bpf");
    }

    #[test]
    fn escapes_are_stripped() {
        let seabios = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)";
        assert_eq!(strip_escapes(seabios, false), "SeaBIOS (version 1.16.2)");
        assert_eq!(
            strip_escapes(seabios, true),
            "\x1b[0mSeaBIOS (version 1.16.2)"
        );
        let colour = "\x1b[2m2026-11-22T02:56:03Z\x1b[0m \x1b[33m WARN\x1b[0m unsigned";
        assert_eq!(
            strip_escapes(colour, false),
            "2026-11-22T02:56:03Z  WARN unsigned"
        );
        assert_eq!(strip_escapes(colour, true), colour);
        assert_eq!(strip_escapes("cut \x1b[", false), "cut ");
    }

    #[test]
    fn markers_stop_at_kernel_records() {
        assert_eq!(marker("ENFORCER-VM-EXIT 0", EXIT), Some("0"));
        assert_eq!(
            marker("ENFORCER-VM-EXIT 3[   9.1] reboot: Power down", EXIT),
            Some("3")
        );
        assert_eq!(
            marker("ENFORCER-VM-LSM lockdown,capability,bpf", LSM),
            Some("lockdown,capability,bpf")
        );
        assert_eq!(marker("unrelated", EXIT), None);
    }
}
