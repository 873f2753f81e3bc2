//! Getting code run outside the scope by someone else: services listening on unix
//! sockets, and a terminal read by an outside shell.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use vm_tests::technique;

use crate::sys;

/// `sockaddr_un` for `path`; a path longer than `sun_path` is a broken invocation.
fn unix_addr(path: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_un is valid (and NUL-terminates the path below).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or_default();
    let bytes = path.as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        technique::broken(&format!("{path}: too long for a unix socket address"));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>())
        .unwrap_or(libc::socklen_t::MAX);
    (addr, len)
}

/// A new unix socket of `kind`.
fn socket(kind: libc::c_int) -> OwnedFd {
    // SAFETY: plain syscall.
    let fd = sys::check(
        unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0) },
        "socket",
    );
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Connects a stream unix socket to `PATH`, then closes it.
///
/// Kernel path: `unix_stream_connect` → `security_unix_stream_connect` (and
/// `security_socket_connect`).
/// Escape: root-run services that take orders on a socket are deputies: systemd's private
/// socket starts units, container runtimes start containers, the agent's control socket
/// changes enforcement. Each runs what it is told outside the scope.
pub(crate) fn connect(path: &str) {
    let sock = socket(libc::SOCK_STREAM);
    let (addr, len) = unix_addr(path);
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    sys::check(
        unsafe { libc::connect(sock.as_raw_fd(), (&raw const addr).cast(), len) },
        "connect",
    );
    println!("connected to {path}");
}

/// Sends one byte from an unbound datagram unix socket to `PATH`.
///
/// Kernel path: `unix_dgram_sendmsg` → `security_unix_may_send` (and
/// `security_socket_sendmsg`).
/// Escape: as `connect-unix`, for services that take datagrams: journald's socket
/// (forged log lines), systemd's notify socket (a service's readiness and status).
pub(crate) fn sendto(path: &str) {
    let sock = socket(libc::SOCK_DGRAM);
    let (addr, len) = unix_addr(path);
    // SAFETY: a one-byte buffer; `addr` is a valid sockaddr_un of `len` bytes.
    sys::check(
        unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                b"x".as_ptr().cast(),
                1,
                0,
                (&raw const addr).cast(),
                len,
            )
        },
        "sendto",
    );
    println!("sent one byte to {path}");
}

/// Pushes a byte into the input queue of its own controlling terminal (TIOCSTI), then
/// reads it back from the terminal. Works unprivileged too: a process may inject into its
/// own controlling terminal (unless dev.tty.legacy_tiocsti is 0, since 6.2: then only
/// CAP_SYS_ADMIN may, and others get EIO). Runs in a child, since only a process that is
/// not a process group leader can make a new session; the exit code is the child's.
///
/// Kernel path: `tty_ioctl` → `tiocsti` (after `security_file_ioctl`).
/// Escape: what is injected is read as typed input by whatever reads the terminal next.
/// A scope started from an administrator's terminal (sudo, su, a console) types commands
/// that the administrator's shell, outside every scope, runs when the scope exits.
pub(crate) fn tiocsti() {
    // SAFETY: the process is single-threaded; the child only runs this fixture's code.
    let pid = sys::check(unsafe { libc::fork() }, "fork");
    if pid == 0 {
        tiocsti_child();
        std::process::exit(technique::WORKED);
    }
    let code = sys::wait_exit(pid);
    if code != technique::WORKED {
        std::process::exit(code);
    }
}

/// The session leader's part of [`tiocsti`].
fn tiocsti_child() {
    // SAFETY: plain syscall.
    sys::check(unsafe { libc::setsid() }, "setsid");
    // Closing the master at the end hangs the terminal up, and the kernel sends SIGHUP to
    // its session leader: this process.
    // SAFETY: SIG_IGN is a valid disposition for SIGHUP.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    // SAFETY: plain syscall.
    let master = sys::check(
        unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) },
        "posix_openpt",
    );
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: plain calls on our descriptor; `name` has room for `name.len()` bytes.
    unsafe {
        sys::check(libc::grantpt(master.as_raw_fd()), "grantpt");
        sys::check(libc::unlockpt(master.as_raw_fd()), "unlockpt");
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            technique::broken("ptsname_r failed");
        }
    }
    // SAFETY: ptsname_r NUL-terminated `name`.
    let slave_path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let slave = sys::open(
        &slave_path,
        libc::O_RDWR | libc::O_NOCTTY,
        0,
        &format!("open {slave_path}"),
    );
    let s = slave.as_raw_fd();
    // SAFETY: a session leader without a terminal takes one that is nobody else's.
    sys::check(unsafe { libc::ioctl(s, libc::TIOCSCTTY, 0) }, "TIOCSCTTY");
    println!("{slave_path} is the controlling terminal");
    raw_mode(s);
    let byte = b'x';
    // SAFETY: TIOCSTI reads one char.
    sys::check(
        unsafe { libc::ioctl(s, libc::TIOCSTI, &raw const byte) },
        "TIOCSTI",
    );
    println!("TIOCSTI pushed 'x'");
    let mut got = [0u8; 1];
    // SAFETY: a one-byte buffer.
    let n = unsafe { libc::read(s, got.as_mut_ptr().cast(), 1) };
    if n != 1 || got[0] != byte {
        technique::broken(&format!("read back {n} bytes {got:?} instead of 'x'"));
    }
    println!("read 'x' back from the terminal");
}

/// Raw mode, with a read that returns after at most a second rather than never.
fn raw_mode(fd: libc::c_int) {
    // SAFETY: an all-zero termios is a valid out-buffer for tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios; plain calls on our descriptor.
    unsafe {
        sys::check(libc::tcgetattr(fd, &raw mut t), "tcgetattr");
        libc::cfmakeraw(&raw mut t);
        t.c_cc[libc::VMIN] = 0;
        t.c_cc[libc::VTIME] = 10;
        sys::check(
            libc::tcsetattr(fd, libc::TCSANOW, &raw const t),
            "tcsetattr",
        );
    }
}
