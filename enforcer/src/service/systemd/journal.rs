//! Log records that journald stores with their fields: the native protocol (a datagram
//! of fields to [`JOURNAL_SOCKET`]) when stderr is the journal ([`stderr_is_journal`]);
//! see [`JournalLayer`].

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

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
        let sent = match self.socket.send_to(&record, &self.path) {
            // Over the datagram size limit: journald takes the record from a sealed memfd.
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                send_through_memfd(&self.path, &record)
            }
            other => other.map(drop),
        };
        if sent.is_err() {
            // Lines on the journal stream may not hold a newline: each would start a
            // record of its own, without the priority.
            let line = message.replace('\n', " ");
            let _ = writeln!(io::stderr().lock(), "<{priority}>{line}");
        }
    }
}

/// Sends `record` the way journald takes records too large for a datagram: written to a
/// memfd, sealed so it cannot change while journald reads it, and passed as the only
/// content of an empty datagram (SCM_RIGHTS).
fn send_through_memfd(path: &Path, record: &[u8]) -> io::Result<()> {
    // SAFETY: a NUL-terminated name and flags; the result is checked before use.
    let raw = unsafe {
        libc::memfd_create(
            c"enforcer-journal".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    std::fs::File::from(memfd.try_clone()?).write_all(record)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    send_fd(&socket, &memfd)
}

/// An empty datagram carrying one descriptor on a connected socket.
fn send_fd(socket: &UnixDatagram, fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let fd_bytes = libc::c_uint::try_from(size_of::<libc::c_int>()).map_err(io::Error::other)?;
    // SAFETY: CMSG_SPACE is a size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(size_of::<u64>())];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points at `control`, which holds one cmsghdr with room for one int;
    // the header and data pointers stay inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
    }
    // SAFETY: `msg` is fully initialised and its buffers outlive the call.
    if unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// A socket standing in for journald's, in a fresh directory.
    fn listener() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
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
        assert_eq!(field(&first, "ENFORCER_TARGET"), module_path!());
        assert!(field(&first, "CODE_FILE").ends_with(file!().rsplit('/').next().expect("name")));
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

    /// An empty datagram with one descriptor, and what that descriptor holds.
    fn receive_fd(sock: &UnixDatagram) -> (usize, Vec<u8>) {
        let mut data = [0u8; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut control = [0u64; 8];
        // SAFETY: an all-zero msghdr is a valid empty message; we point it at our buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: recvmsg into buffers that outlive the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
        let n = usize::try_from(n).expect("recvmsg");
        // SAFETY: the kernel filled the control buffer; the first header holds one fd.
        let fd = unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            assert!(!cmsg.is_null(), "no descriptor came with the datagram");
            assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
            OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg).cast::<libc::c_int>(),
            ))
        };
        let mut content = Vec::new();
        let mut file = std::fs::File::from(fd);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).expect("seek");
        std::io::Read::read_to_end(&mut file, &mut content).expect("read memfd");
        // SAFETY: F_GET_SEALS on a descriptor we own.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & libc::F_SEAL_WRITE, libc::F_SEAL_WRITE, "sealed");
        (n, content)
    }

    #[test]
    fn records_too_large_for_a_datagram_go_through_a_sealed_memfd() {
        let (_dir, path, sock) = listener();
        let layer = JournalLayer::new(&path).expect("layer");
        assert!(receive(&sock).is_empty(), "the probe datagram");
        let big = "x".repeat(512 * 1024);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(payload = %big, "a very large record");
        });
        let (len, content) = receive_fd(&sock);
        assert_eq!(len, 0, "the datagram itself is empty");
        let record = parse_record(&content);
        assert_eq!(field(&record, "PRIORITY"), "3");
        assert_eq!(field(&record, "ENFORCER_PAYLOAD"), big);
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
