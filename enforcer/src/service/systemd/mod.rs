//! Running as a systemd service: readiness, reload and watchdog notifications, and log
//! records that journald stores with their fields (`journal`).
//!
//! Notifications go through the `sd-notify` crate: one datagram of `KEY=value` lines to
//! the socket named by `$NOTIFY_SOCKET`. Outside systemd (`NOTIFY_SOCKET` unset) every
//! function here does nothing. A failed notification is never fatal: enforcement does
//! not depend on systemd knowing about it. The first failure is logged as a warning,
//! later ones at debug level, so a watchdog ping every 15 s cannot flood the log.

mod journal;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

pub use journal::{
    FIELD_PREFIX, JOURNAL_SOCKET, JournalLayer, SyslogPrefix, stderr_is_journal, syslog_priority,
};

/// Tells systemd the service is up (`Type=notify` then counts the start as done), with
/// a status line for `systemctl status`.
pub fn ready(status: &str) {
    let status = one_line(status);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tells systemd a reload (SIGHUP) has begun. `MONOTONIC_USEC` is what systemd 253+ asks
/// for with `Type=notify-reload`; older versions ignore it. Follow with
/// [`ready_after_reload`] whether the reload succeeded or not, or systemd waits.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Tells systemd the reload is over; `status` says how it went.
pub fn ready_after_reload(status: &str) {
    ready(status);
}

/// Tells systemd the agent is shutting down on purpose, so the exit is not a surprise.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Replaces the status line shown by `systemctl status enforcer`.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(&one_line(text))]);
}

/// Keeps the watchdog from firing; send at half of [`watchdog_interval`].
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// How often systemd expects a [`watchdog`] ping, if it expects any: `WATCHDOG_USEC`,
/// unless `WATCHDOG_PID` names another process (the variables were inherited).
#[must_use]
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Whether systemd listens for notifications: `NOTIFY_SOCKET` is set. This is the case
/// for a `Type=notify` service, and never for a command run from a shell.
#[must_use]
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// Set after the first failed notification: later failures are only debug records.
static NOTIFY_FAILED: AtomicBool = AtomicBool::new(false);

fn notify(states: &[NotifyState<'_>]) {
    if !under_systemd() {
        return;
    }
    if let Err(err) = sd_notify::notify(states) {
        let socket = std::env::var_os("NOTIFY_SOCKET").unwrap_or_default();
        let socket = socket.to_string_lossy();
        if NOTIFY_FAILED.swap(true, Ordering::Relaxed) {
            tracing::debug!(%err, %socket, "systemd notification failed");
        } else {
            tracing::warn!(%err, %socket, "systemd notification failed (further failures are logged at debug level)");
        }
    }
}

/// A value on one line: a newline in a status text would start another assignment
/// (`READY=1` smuggled in through a scope name, say).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::path::PathBuf;

    use super::*;

    /// Set in a child of the test binary: run the notifying half of the test.
    const CHILD: &str = "ENFORCER_SYSTEMD_TEST_CHILD";

    /// A socket standing in for systemd's, in a fresh directory.
    fn listener() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        (dir, path, sock)
    }

    /// Every datagram waiting on `sock`.
    fn received(sock: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8(buf[..n].to_vec()).expect("utf-8"));
        }
        out
    }

    /// The notification functions read the process environment. Rather than change this
    /// process's environment under other tests' threads, a test runs itself again as a
    /// child with the variables set, and that child (seeing [`CHILD`]) calls the API.
    fn run_child(test: &str, env: &[(&str, &std::ffi::OsStr)]) {
        let name = format!(
            "{}::{test}",
            module_path!().split_once("::").expect("crate::path").1
        );
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["--exact", &name, "--nocapture"])
            .env(CHILD, "1")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let out = cmd.output().expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test: {stdout}"
        );
    }

    fn in_child() -> bool {
        std::env::var_os(CHILD).is_some()
    }

    #[test]
    fn public_api_notifies_through_the_environment() {
        if in_child() {
            assert!(under_systemd());
            ready("up");
            reloading();
            ready_after_reload("reloaded");
            status("busy");
            watchdog();
            stopping();
            assert_eq!(watchdog_interval(), Some(Duration::from_secs(30)));
            return;
        }
        let (_dir, path, sock) = listener();
        run_child(
            "public_api_notifies_through_the_environment",
            &[
                ("NOTIFY_SOCKET", path.as_os_str()),
                ("WATCHDOG_USEC", "30000000".as_ref()),
            ],
        );
        let got = received(&sock);
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[0], "READY=1\nSTATUS=up\n");
        let usec = got[1]
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|rest| rest.strip_suffix('\n'))
            .expect(&got[1]);
        assert!(
            usec.parse::<u64>().expect("number") > 0,
            "the monotonic clock is read"
        );
        assert_eq!(
            got[2..],
            [
                "READY=1\nSTATUS=reloaded\n",
                "STATUS=busy\n",
                "WATCHDOG=1\n",
                "STOPPING=1\n"
            ]
        );
    }

    #[test]
    fn a_status_cannot_smuggle_another_assignment() {
        if in_child() {
            ready("ok\nREADY=0\r\0x");
            return;
        }
        assert!(!one_line("a\nb").contains('\n'));
        let (_dir, path, sock) = listener();
        run_child(
            "a_status_cannot_smuggle_another_assignment",
            &[("NOTIFY_SOCKET", path.as_os_str())],
        );
        assert_eq!(received(&sock), ["READY=1\nSTATUS=ok READY=0  x\n"]);
    }

    #[test]
    fn watchdog_interval_honours_the_pid() {
        if in_child() {
            let expected = std::env::var("EXPECTED").expect("EXPECTED");
            assert_eq!(format!("{:?}", watchdog_interval()), expected);
            return;
        }
        let me = "watchdog_interval_honours_the_pid";
        let cases: [(&str, Option<&str>, &str); 5] = [
            ("30000000", None, "Some(30s)"),
            ("30000000", Some("1"), "None"),
            ("30000000", Some("x"), "Some(30s)"),
            ("0", None, "None"),
            ("soon", None, "None"),
        ];
        for (usec, pid, expected) in cases {
            let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![
                ("WATCHDOG_USEC", usec.as_ref()),
                ("EXPECTED", expected.as_ref()),
            ];
            if let Some(pid) = pid {
                env.push(("WATCHDOG_PID", pid.as_ref()));
            }
            run_child(me, &env);
        }
    }

    #[test]
    fn bad_addresses_and_absent_listeners_are_errors_not_panics() {
        if in_child() {
            ready("x");
            watchdog();
            stopping();
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("nobody");
        for bad in [
            "relative/path",
            "@",
            "vsock:2:1234",
            gone.to_str().expect("utf-8"),
        ] {
            run_child(
                "bad_addresses_and_absent_listeners_are_errors_not_panics",
                &[("NOTIFY_SOCKET", bad.as_ref())],
            );
        }
    }

    #[test]
    fn without_notify_socket_nothing_is_sent() {
        // This process was not started by systemd (the test harness never sets it).
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!under_systemd());
            ready("x");
            watchdog();
        }
    }
}
