//! The control socket client that `holdfastctl` (and tests, and scripts in Rust) use: connect with a
//! timeout, send one request line, read one reply line, bounded in size and time.

use crate::ctl::protocol::{Reply, Request};
use serde_json::Value;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest reply a client accepts; a `flows` list at the maximum limit fits with room to spare.
pub const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// Why a call got no reply. (A reply that says `ok: false` is not an error here: it is a `Reply`.)
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no reply within the timeout")]
    Timeout,
    #[error("connection failed: {0}")]
    Io(#[source] io::Error),
    #[error("the server closed the connection without a reply")]
    Closed,
    #[error("reply is not a protocol reply: {0}")]
    BadReply(String),
}

fn from_io(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}

/// One connection to a control socket; calls are sequential.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects; `timeout` bounds every later read and write.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .map_err(|source| ClientError::Connect { path: path.to_path_buf(), source })?;
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        stream.set_read_timeout(timeout).map_err(ClientError::Io)?;
        stream.set_write_timeout(timeout).map_err(ClientError::Io)?;
        let writer = stream.try_clone().map_err(ClientError::Io)?;
        Ok(Client { reader: BufReader::new(stream), writer, next_id: 1 })
    }

    /// Sends a typed request with a fresh numeric id and reads its reply.
    pub fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let id = Value::from(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let reply = self.call_line(&request.to_line(&id))?;
        if reply.id != id && !reply.id.is_null() {
            return Err(ClientError::BadReply(format!(
                "reply id {} does not match request id {id}",
                reply.id
            )));
        }
        Ok(reply)
    }

    /// Sends one raw line (a newline is added if missing) and reads one reply line.
    pub fn call_line(&mut self, line: &str) -> Result<Reply, ClientError> {
        self.writer.write_all(line.as_bytes()).map_err(from_io)?;
        if !line.ends_with('\n') {
            self.writer.write_all(b"\n").map_err(from_io)?;
        }
        self.writer.flush().map_err(from_io)?;
        let mut buf = Vec::new();
        let n = (&mut self.reader).take(MAX_REPLY_BYTES).read_until(b'\n', &mut buf).map_err(from_io)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        if buf.last() != Some(&b'\n') {
            return Err(ClientError::BadReply("reply truncated or over the size limit".into()));
        }
        serde_json::from_slice(&buf).map_err(|e| ClientError::BadReply(e.to_string()))
    }
}
