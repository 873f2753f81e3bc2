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
    // The agent may answer before it has read the whole request (a refusal by the
    // peer's credentials does not read it at all) and close: the rest of a large request
    // then fails with EPIPE, but the answer is already queued for us. Read it either way.
    let sent = stream.write_all(&line);
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    match (sent, read) {
        (_, Ok(_)) if !answer.is_empty() => {}
        (Err(e), _) | (Ok(()), Err(e)) => return Err(io(e)),
        (Ok(()), Ok(_)) => {}
    }
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::service::control::protocol::Data;

    #[test]
    fn an_answer_sent_before_the_request_was_read_still_arrives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        // An agent that refuses at once, reads nothing and closes, as the credential check
        // does.
        let agent = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let refusal = Reply::<Data>::error("permission denied: only root");
            let mut line = serde_json::to_vec(&refusal).expect("json");
            line.push(b'\n');
            conn.write_all(&line).expect("answer");
        });
        // Far more than the socket buffers hold: the write fails once the agent is gone.
        let big = Request::artifact(false, "big.json".into(), &vec![b'x'; 8 << 20]);
        let reply: Reply<Data> = request(&socket, &big).expect("the refusal is read");
        agent.join().expect("agent thread");
        assert!(!reply.ok);
        assert_eq!(reply.message, "permission denied: only root");
    }
}
