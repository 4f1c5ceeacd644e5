//! Test fixture for the control-plane tests: a `ControlHandler` that answers with fixed data, counts
//! what reaches it and checks that it only ever sees validated requests, plus a scratch directory for
//! sockets. It stands in for the box ONLY to test the socket/client plumbing; it is not the box.

#![allow(dead_code, clippy::unwrap_used)]

use control::ctl::protocol::{CtlError, Request};
use control::ctl::{ControlHandler, ControlServer, ServerConfig};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fixed answers: `status` a small object, `flows` a list whose size the test chooses, `switchover`
/// `unavailable`, `capture` a panic (to test the server's containment), `drain` a slow answer.
#[derive(Debug, Default)]
pub struct FixedHandler {
    pub calls: AtomicUsize,
    /// Requests that reached the handler without passing `validate` (must stay 0).
    pub unvalidated: AtomicUsize,
    pub flows_padding: usize,
    pub drain_delay: Duration,
}

impl ControlHandler for FixedHandler {
    fn handle(&self, req: Request) -> Result<Value, CtlError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if req.validate().is_err() {
            self.unvalidated.fetch_add(1, Ordering::SeqCst);
        }
        match req {
            Request::Status(_) => Ok(json!({
                "role": "primary", "peer": "up", "epoch": 7, "degraded": false, "uptime_s": 3600
            })),
            Request::Flows(a) => Ok(json!({
                "flows": [
                    {"id": 1, "listener": "web", "state": "established", "client": "198.18.0.10:40000",
                     "backend": "198.19.0.2:80", "withheld_bytes": 0, "pad": "x".repeat(self.flows_padding)},
                    {"id": 2, "listener": "web", "state": "opening", "client": "198.18.0.11:40001",
                     "backend": "198.19.0.3:80", "withheld_bytes": 1460, "pad": ""}
                ],
                "limit": a.limit
            })),
            Request::Flow(a) => Ok(json!({"id": a.id, "client_half": {"snd_una": 1, "rcv_nxt": 2}})),
            Request::Set(s) => Ok(json!({"applied": serde_json::to_value(s).unwrap()})),
            Request::Switchover(_) => Err(CtlError::unavailable("no standby attached")),
            Request::Drain(_) => {
                std::thread::sleep(self.drain_delay);
                Ok(json!({"draining": true}))
            }
            Request::Capture(_) => panic!("fixture: capture panics on purpose"),
            Request::Stats(_) | Request::Metrics(_) => Ok(json!({"fixture": true})),
        }
    }
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hfctl-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    pub fn sock(&self) -> PathBuf {
        self.0.join("ctl.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn start(config: ServerConfig, handler: Arc<FixedHandler>) -> ControlServer {
    ControlServer::start(config, handler).unwrap()
}

/// A raw connection with line helpers; every read is bounded by a generous timeout so a broken server
/// fails the test instead of hanging it.
pub struct Conn {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl Conn {
    pub fn open(path: &Path) -> Conn {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn { writer: s.try_clone().unwrap(), reader: BufReader::new(s) }
    }
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }
    /// Next reply line as JSON, or None at EOF.
    pub fn line(&mut self) -> Option<Value> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf).unwrap();
        if n == 0 {
            return None;
        }
        assert_eq!(buf.last(), Some(&b'\n'), "reply not newline-terminated");
        Some(serde_json::from_slice(&buf).unwrap())
    }
    pub fn request(&mut self, line: &str) -> Value {
        self.send(line.as_bytes());
        self.send(b"\n");
        self.line().expect("server closed instead of replying")
    }
    /// True once the server has closed the connection (reads to EOF, discarding). A server that closes
    /// with our unread bytes still queued makes Linux report ECONNRESET instead of EOF: closed all the same.
    pub fn at_eof(&mut self) -> bool {
        let mut sink = Vec::new();
        match self.reader.read_to_end(&mut sink) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

pub fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("")
}

/// Waits (bounded) until `cond` holds; returns whether it did.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}
