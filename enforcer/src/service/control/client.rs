//! The client side: one request per connection, answered with a typed [`Reply`].

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::ControlError;
use super::protocol::{Reply, Request};

/// How long a client waits for the agent; applying 100k grants takes well under this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends one request to the agent listening on `socket` and returns its answer.
pub fn request<T: DeserializeOwned>(
    socket: &Path,
    request: &Request,
) -> Result<Reply<T>, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.into(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: socket.into(),
        source,
    })?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ControlError::BadAnswer {
        path: socket.into(),
        message: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(ControlError::BadAnswer {
            path: socket.into(),
            message: "the agent closed the connection without answering".into(),
        });
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::BadAnswer {
        path: socket.into(),
        message: e.to_string(),
    })
}
