//! Running as a systemd service: readiness, reload and watchdog notifications, and log
//! records that journald stores with their fields.
//!
//! Notifications follow the `sd_notify` protocol: one datagram of `KEY=value` lines to
//! the Unix socket named by `$NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract
//! name. Outside systemd (`NOTIFY_SOCKET` unset) every function here does nothing. A
//! failed notification is never fatal: enforcement does not depend on systemd knowing
//! about it. The first failure is logged as a warning, later ones at debug level, so a
//! watchdog ping every 15 s cannot flood the log.
//!
//! Log records use journald's native protocol (a datagram of fields to
//! [`JOURNAL_SOCKET`]) when stderr is the journal ([`stderr_is_journal`]); see
//! [`JournalLayer`].

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::os::fd::AsFd as _;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Why a notification did not reach systemd.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract name (@name)")]
    Address(String),
    #[error("cannot send {message:?} to systemd at NOTIFY_SOCKET={socket:?}: {source}")]
    Send {
        socket: String,
        message: String,
        #[source]
        source: io::Error,
    },
}

/// Tells systemd the service is up (`Type=notify` then counts the start as done), with
/// a status line for `systemctl status`.
pub fn ready(status: &str) {
    notify(&ready_message(status));
}

/// Tells systemd a reload (SIGHUP) has begun. `MONOTONIC_USEC` is what systemd 253+ asks
/// for with `Type=notify-reload`; older versions ignore it. Follow with
/// [`ready_after_reload`] whether the reload succeeded or not, or systemd waits.
pub fn reloading() {
    notify(&reloading_message(monotonic_usec()));
}

/// Tells systemd the reload is over; `status` says how it went.
pub fn ready_after_reload(status: &str) {
    notify(&ready_message(status));
}

/// Tells systemd the agent is shutting down on purpose, so the exit is not a surprise.
pub fn stopping() {
    notify("STOPPING=1");
}

/// Replaces the status line shown by `systemctl status enforcer`.
pub fn status(text: &str) {
    notify(&format!("STATUS={}", one_line(text)));
}

/// Keeps the watchdog from firing; send at half of [`watchdog_interval`].
pub fn watchdog() {
    notify("WATCHDOG=1");
}

/// How often systemd expects a [`watchdog`] ping, if it expects any: `WATCHDOG_USEC`,
/// unless `WATCHDOG_PID` names another process (the variables were inherited).
#[must_use]
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// Whether systemd listens for notifications: `NOTIFY_SOCKET` is set. This is the case
/// for a `Type=notify` service, and never for a command run from a shell.
#[must_use]
pub fn under_systemd() -> bool {
    notify_socket().is_some()
}

fn notify_socket() -> Option<std::ffi::OsString> {
    std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())
}

/// Set after the first failed notification: later failures are only debug records.
static NOTIFY_FAILED: AtomicBool = AtomicBool::new(false);

fn notify(message: &str) {
    let Some(socket) = notify_socket() else {
        return;
    };
    if let Err(err) = send(&socket, message) {
        if NOTIFY_FAILED.swap(true, Ordering::Relaxed) {
            tracing::debug!(%err, "systemd notification failed");
        } else {
            tracing::warn!(%err, "systemd notification failed (further failures are logged at debug level)");
        }
    }
}

/// Sends one notification datagram to `socket` (the value of `NOTIFY_SOCKET`).
fn send(socket: &OsStr, message: &str) -> Result<(), NotifyError> {
    let fail = |source| NotifyError::Send {
        socket: socket.to_string_lossy().into_owned(),
        message: message.to_owned(),
        source,
    };
    let addr = notify_address(socket)?;
    let sock = UnixDatagram::unbound().map_err(fail)?;
    let sent = sock.send_to_addr(message.as_bytes(), &addr).map_err(fail)?;
    if sent != message.len() {
        return Err(fail(io::Error::new(
            io::ErrorKind::WriteZero,
            "datagram truncated",
        )));
    }
    Ok(())
}

fn notify_address(socket: &OsStr) -> Result<SocketAddr, NotifyError> {
    let bad = || NotifyError::Address(socket.to_string_lossy().into_owned());
    match socket.as_bytes() {
        [b'/', ..] => SocketAddr::from_pathname(Path::new(socket)).map_err(|_| bad()),
        [b'@', name @ ..] if !name.is_empty() => {
            SocketAddr::from_abstract_name(name).map_err(|_| bad())
        }
        // systemd 253+ may also hand out vsock:CID:PORT, for virtual machines only.
        _ => Err(bad()),
    }
}

fn ready_message(status: &str) -> String {
    format!("READY=1\nSTATUS={}", one_line(status))
}

fn reloading_message(monotonic_usec: Option<u64>) -> String {
    match monotonic_usec {
        Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}"),
        None => "RELOADING=1".to_owned(),
    }
}

/// A value on one line: a newline in a status text would start another assignment
/// (`READY=1` smuggled in through a scope name, say).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; no other memory is touched.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) } != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let micros = u64::try_from(ts.tv_nsec).ok()? / 1_000;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != own_pid
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Where journald receives native records.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether stderr is connected to journald: systemd sets `JOURNAL_STREAM=dev:inode` to
/// the stream it gave the service, and a child whose stderr was redirected elsewhere
/// inherits the variable but not the stream, hence the comparison.
#[must_use]
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // fstat through a duplicate: std has no safe fstat of a borrowed descriptor.
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    journal_stream_is(&value.to_string_lossy(), meta.dev(), meta.ino())
}

fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority journald stores for a level (`PRIORITY=`, or `<N>` at the start
/// of a line written to the journal stream).
#[must_use]
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Prefix of the journal fields made from event fields: `scope` becomes
/// `ENFORCER_SCOPE`, which cannot collide with journald's own fields (`ERRNO`,
/// `PRIORITY`, ...) and filters as `journalctl -u enforcer ENFORCER_SCOPE=/agents.slice`.
pub const FIELD_PREFIX: &str = "ENFORCER_";

/// A tracing layer that sends each event to journald as one native record.
///
/// `MESSAGE` is the line a person reads in `journalctl -u enforcer`: the message
/// followed by the event's fields as `key=value`, as on a terminal. Each field is also
/// a journal field of its own ([`FIELD_PREFIX`]), with `PRIORITY`, `CODE_FILE`,
/// `CODE_LINE` and `SYSLOG_IDENTIFIER`. A record journald does not take (too large for
/// a datagram, journald restarting) is written to stderr instead, with its `<N>`
/// priority prefix, so it still reaches the journal as text.
#[derive(Debug)]
pub struct JournalLayer {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournalLayer {
    /// A layer sending to `path` (normally [`JOURNAL_SOCKET`]). Fails when nothing
    /// listens there, so the caller can choose another way to log.
    pub fn new(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        // journald ignores an empty datagram: this only proves someone is listening.
        socket.send_to(&[], path)?;
        Ok(Self {
            socket,
            path: path.to_owned(),
        })
    }
}

/// The text of a span, kept in its extensions for the events inside it.
struct SpanText(String);

impl<S> tracing_subscriber::Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let mut text = span.name().to_owned();
        if !fields.line.is_empty() {
            let _ = write!(text, "{{{}}}", fields.line.trim_start());
        }
        span.extensions_mut().insert(SpanText(text));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);

        let mut message = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(text) = span.extensions().get::<SpanText>() {
                    message.push_str(&text.0);
                    message.push_str(": ");
                }
            }
        }
        message.push_str(&fields.message);
        message.push_str(&fields.line);
        let priority = syslog_priority(*meta.level());

        let mut record = Vec::with_capacity(256 + message.len());
        put_field(&mut record, "MESSAGE", message.as_bytes());
        put_field(&mut record, "PRIORITY", priority.to_string().as_bytes());
        put_field(&mut record, "SYSLOG_IDENTIFIER", b"enforcer");
        if let Some(file) = meta.file() {
            put_field(&mut record, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = meta.line() {
            put_field(&mut record, "CODE_LINE", line.to_string().as_bytes());
        }
        put_field(
            &mut record,
            &format!("{FIELD_PREFIX}TARGET"),
            meta.target().as_bytes(),
        );
        for (name, value) in &fields.structured {
            put_field(&mut record, &journal_field_name(name), value.as_bytes());
        }
        if self.socket.send_to(&record, &self.path).is_err() {
            // Lines on the journal stream may not hold a newline: each would start a
            // record of its own, without the priority.
            let line = message.replace('\n', " ");
            let _ = writeln!(io::stderr().lock(), "<{priority}>{line}");
        }
    }
}

/// An event's fields: the message, the `key=value` text after it, and each field alone.
#[derive(Default)]
struct Fields {
    message: String,
    line: String,
    structured: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
            return;
        }
        self.add(field, format!("{value:?}"), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message.push_str(&text);
            return;
        }
        self.add(field, text.clone(), text);
    }
}

impl Fields {
    fn add(&mut self, field: &Field, shown: String, raw: String) {
        let name = field.name();
        // Records bridged from the `log` crate carry their origin as `log.*` fields:
        // worth a journal field, noise in the line.
        if !name.starts_with("log.") {
            let _ = write!(self.line, " {name}={shown}");
        }
        self.structured.push((name, raw));
    }
}

/// A journal field name from a tracing field name: journald accepts only upper-case
/// letters, digits and `_`, at most 64 bytes, and keeps names starting with `_` for its
/// own trusted fields (the prefix rules that out).
fn journal_field_name(name: &str) -> String {
    let mut out = String::from(FIELD_PREFIX);
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out.truncate(64);
    out
}

/// Appends one field in journald's native format: `NAME=value\n`, or, when the value
/// holds a newline, `NAME\n`, its length as 64-bit little endian, the value and `\n`.
fn put_field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// Event formatting for the journal stream when journald's socket cannot be reached:
/// each line starts with `<N>`, the syslog priority, which journald turns into
/// `PRIORITY=` and removes. `inner` formats the rest (without a timestamp: journald
/// adds its own).
#[derive(Debug)]
pub struct SyslogPrefix<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for SyslogPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// A socket standing in for systemd's, in a fresh directory.
    fn listener() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (dir, path, sock)
    }

    fn receive(sock: &UnixDatagram) -> Vec<u8> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = sock.recv(&mut buf).expect("a datagram");
        buf.truncate(n);
        buf
    }

    #[test]
    fn each_message_arrives_as_exact_bytes() {
        let (_dir, path, sock) = listener();
        let cases = [
            (
                ready_message("enforcing 2 scopes"),
                "READY=1\nSTATUS=enforcing 2 scopes",
            ),
            (
                reloading_message(Some(123_456)),
                "RELOADING=1\nMONOTONIC_USEC=123456",
            ),
            (reloading_message(None), "RELOADING=1"),
            ("STOPPING=1".to_owned(), "STOPPING=1"),
            ("WATCHDOG=1".to_owned(), "WATCHDOG=1"),
        ];
        for (message, expected) in cases {
            send(path.as_os_str(), &message).expect("send");
            assert_eq!(receive(&sock), expected.as_bytes());
        }
    }

    #[test]
    fn abstract_socket_names_start_with_at() {
        let name = format!(
            "enforcer-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        send(OsStr::new(&format!("@{name}")), "WATCHDOG=1").expect("send");
        assert_eq!(receive(&sock), b"WATCHDOG=1");
    }

    #[test]
    fn a_status_cannot_smuggle_another_assignment() {
        assert_eq!(
            ready_message("ok\nREADY=0\r\0x"),
            "READY=1\nSTATUS=ok READY=0  x"
        );
        assert!(!one_line("a\nb").contains('\n'));
    }

    #[test]
    fn monotonic_clock_is_read() {
        let a = monotonic_usec().expect("clock");
        let b = monotonic_usec().expect("clock");
        assert!(a > 0 && b >= a, "{a} then {b}");
        assert!(reloading_message(Some(a)).ends_with(&format!("MONOTONIC_USEC={a}")));
    }

    #[test]
    fn bad_addresses_and_absent_listeners_are_errors_not_panics() {
        for bad in ["relative/path", "@", "vsock:2:1234"] {
            let err = send(OsStr::new(bad), "READY=1").expect_err(bad);
            assert!(matches!(err, NotifyError::Address(_)), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err} names the value");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("nobody");
        let err = send(gone.as_os_str(), "READY=1").expect_err("nobody listens");
        assert!(matches!(err, NotifyError::Send { .. }), "{err}");
    }

    #[test]
    fn watchdog_interval_honours_the_pid() {
        let me = 4242;
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("4242"), me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("1"), me),
            None,
            "another process's"
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("x"), me),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("0"), None, me),
            None,
            "0 means off"
        );
        assert_eq!(watchdog_interval_from(Some("soon"), None, me), None);
        assert_eq!(watchdog_interval_from(None, Some("4242"), me), None);
    }

    /// The public functions read the process environment. Rather than change this
    /// process's environment under other tests' threads, the test runs itself again as a
    /// child with `NOTIFY_SOCKET` set, and that child (the same test, seeing the marker
    /// variable) calls the API.
    #[test]
    fn public_api_notifies_through_the_environment() {
        const MARKER: &str = "ENFORCER_SYSTEMD_TEST_CHILD";
        if std::env::var_os(MARKER).is_some() {
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
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "systemd::tests::public_api_notifies_through_the_environment",
            ])
            .env(MARKER, "1")
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "30000000")
            .env_remove("WATCHDOG_PID")
            .output()
            .expect("run the child");
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let got: Vec<String> = (0..6)
            .map(|_| String::from_utf8(receive(&sock)).expect("utf-8"))
            .collect();
        assert_eq!(got[0], "READY=1\nSTATUS=up");
        let usec = got[1]
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .expect(&got[1]);
        assert!(usec.parse::<u64>().expect("number") > 0);
        assert_eq!(
            got[2..],
            [
                "READY=1\nSTATUS=reloaded",
                "STATUS=busy",
                "WATCHDOG=1",
                "STOPPING=1"
            ]
        );
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

    #[test]
    fn journal_stream_must_match_exactly() {
        assert!(journal_stream_is("8:1234", 8, 1234));
        assert!(!journal_stream_is("8:1235", 8, 1234));
        assert!(!journal_stream_is("9:1234", 8, 1234));
        assert!(!journal_stream_is("8", 8, 1234));
        assert!(!journal_stream_is("", 8, 1234));
        assert!(!journal_stream_is("8:1234:0", 8, 1234));
    }

    /// Parses journald's native format back into (name, value) pairs.
    fn parse_record(mut buf: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let nl = buf.iter().position(|&b| b == b'\n').expect("line end");
            let line = &buf[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).expect("name"),
                    String::from_utf8(line[eq + 1..].to_vec()).expect("value"),
                ));
                buf = &buf[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).expect("name");
                let rest = &buf[nl + 1..];
                let len = usize::try_from(u64::from_le_bytes(rest[..8].try_into().expect("len")))
                    .expect("len");
                let value = String::from_utf8(rest[8..8 + len].to_vec()).expect("value");
                assert_eq!(rest[8 + len], b'\n');
                out.push((name, value));
                buf = &rest[8 + len + 1..];
            }
        }
        out
    }

    fn field<'a>(record: &'a [(String, String)], name: &str) -> &'a str {
        record
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {record:?}"))
    }

    #[test]
    fn journal_records_are_readable_and_structured() {
        let (_dir, path, sock) = listener();
        let layer = JournalLayer::new(&path).expect("layer");
        assert!(receive(&sock).is_empty(), "the probe is an empty datagram");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reload", serial = 7);
            let _entered = span.enter();
            tracing::warn!(scope = "/agents.slice", grants = 3, "bundle refused");
            tracing::error!(detail = "two\nlines", "multi");
        });

        let first = parse_record(&receive(&sock));
        assert_eq!(
            field(&first, "MESSAGE"),
            "reload{serial=7}: bundle refused scope=\"/agents.slice\" grants=3"
        );
        assert_eq!(field(&first, "PRIORITY"), "4");
        assert_eq!(field(&first, "SYSLOG_IDENTIFIER"), "enforcer");
        assert_eq!(field(&first, "ENFORCER_SCOPE"), "/agents.slice");
        assert_eq!(field(&first, "ENFORCER_GRANTS"), "3");
        assert_eq!(field(&first, "ENFORCER_TARGET"), "enforcer::systemd::tests");
        assert!(field(&first, "CODE_FILE").ends_with("systemd.rs"));
        field(&first, "CODE_LINE")
            .parse::<u32>()
            .expect("line number");

        let second = parse_record(&receive(&sock));
        assert_eq!(field(&second, "PRIORITY"), "3");
        assert_eq!(
            field(&second, "ENFORCER_DETAIL"),
            "two\nlines",
            "binary form keeps newlines"
        );
    }

    #[test]
    fn journal_layer_needs_a_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        JournalLayer::new(&dir.path().join("none")).expect_err("nobody listens");
    }

    #[test]
    fn field_names_follow_journald_rules() {
        assert_eq!(journal_field_name("scope"), "ENFORCER_SCOPE");
        assert_eq!(journal_field_name("log.target"), "ENFORCER_LOG_TARGET");
        assert_eq!(journal_field_name("r#type"), "ENFORCER_R_TYPE");
        assert_eq!(journal_field_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn priorities_are_syslog_levels() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
    }
}
