//! Running external tools with errors that name the command, and streaming their output.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Sender};
use std::thread;

use anyhow::{Context, Result, bail};

/// The command as a user would type it, for messages.
pub(crate) fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with inherited stdio and fails unless it exits with 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`: is it installed?", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its output whatever the exit status.
pub(crate) fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot start `{}`: is it installed?", display(cmd)))
}

/// Runs `cmd` and returns its stdout; on failure the error carries its stderr.
pub(crate) fn stdout(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Runs `cmd` with its stdout piped and hands each line to `on_line` as it comes (stderr
/// stays the terminal's); returns the exit status.
pub(crate) fn stream(cmd: &mut Command, mut on_line: impl FnMut(String)) -> Result<ExitStatus> {
    cmd.stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`: is it installed?", display(cmd)))?;
    let (tx, rx) = mpsc::channel();
    let reader = child
        .stdout
        .take()
        .map(|out| forward_lines(out, tx, |line| line));
    for line in rx {
        on_line(line);
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{}`", display(cmd)))?;
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    Ok(status)
}

/// Reads `source` line by line on a thread and sends each line, without its line ending,
/// through `sink` wrapped by `wrap`. Bytes that are not UTF-8 (a garbled serial console)
/// are replaced rather than ending the stream.
pub(crate) fn forward_lines<R, T, F>(source: R, sink: Sender<T>, wrap: F) -> thread::JoinHandle<()>
where
    R: Read + Send + 'static,
    T: Send + 'static,
    F: Fn(String) -> T + Send + 'static,
{
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if sink.send(wrap(line)).is_err() {
                        break;
                    }
                }
            }
        }
    })
}
