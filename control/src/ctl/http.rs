//! An optional, tiny HTTP listener on a management address that serves `GET /metrics` (Prometheus text)
//! and nothing else: std `TcpListener`, one request per connection, bounded in header size, time and
//! concurrent connections, `Connection: close` always.

use crate::ctl::PROMETHEUS_CONTENT_TYPE;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Renders the metrics text on each request.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Largest request head read; a scraper's GET is a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Time a connection has to send its request head, and to take the response.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more get 503 at once.
pub const MAX_CONNECTIONS: usize = 8;

/// A running metrics listener; dropping it stops it.
pub struct MetricsHttpServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsHttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHttpServer").field("addr", &self.addr).finish()
    }
}

impl MetricsHttpServer {
    /// Binds `addr` (port 0 picks one; see `local_addr`) and serves until dropped.
    pub fn start(addr: SocketAddr, metrics: MetricsFn) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        // Refusals go to one thread of their own: a graceful close takes a moment, which the acceptor
        // must not spend, and a thread per refusal would undo the bound. If it falls behind, refused
        // connections are simply closed.
        let (refuse_tx, refuse_rx) = std::sync::mpsc::sync_channel::<TcpStream>(MAX_CONNECTIONS);
        thread::Builder::new().name("ctl-metrics-busy".into()).spawn(move || {
            for mut stream in refuse_rx {
                let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = write_response(&mut stream, "503 Service Unavailable", "text/plain", b"busy\n", true);
                close_gracefully(stream);
            }
        })?;
        let acceptor = thread::Builder::new().name("ctl-metrics".into()).spawn(move || {
            let active = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(stream) = conn else {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    let _ = refuse_tx.try_send(stream);
                    continue;
                }
                let metrics = Arc::clone(&metrics);
                let slot = Arc::clone(&active);
                let spawned = thread::Builder::new().name("ctl-metrics-conn".into()).spawn(move || {
                    serve(stream, &*metrics);
                    slot.fetch_sub(1, Ordering::AcqRel);
                });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
        Ok(MetricsHttpServer { addr, stopping, acceptor: Some(acceptor) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsHttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wake the blocked accept(); if we cannot reach ourselves, leave the thread rather than hang.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(h) = self.acceptor.take() {
            if woke {
                let _ = h.join();
            }
        }
    }
}

fn write_response(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
    send_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" }
    );
    stream.write_all(head.as_bytes())?;
    if send_body {
        stream.write_all(body)?;
    }
    stream.flush()
}

enum Head {
    Complete(usize),
    TooLarge,
    Incomplete,
}

fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Head {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_head_end(buf) {
            return Head::Complete(end);
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Head::TooLarge;
        }
        let now = Instant::now();
        if now >= deadline || stream.set_read_timeout(Some(deadline - now)).is_err() {
            return Head::Incomplete;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Head::Incomplete,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Head::Incomplete,
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Closing a TCP socket with unread input sends RST, which can destroy the response before the client
/// reads it; so half-close, then discard what the client still sends, bounded in bytes and time.
fn close_gracefully(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let mut budget = 256 * 1024usize;
    while budget > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}

fn serve(mut stream: TcpStream, metrics: &(dyn Fn() -> String + Send + Sync)) {
    respond(&mut stream, metrics);
    close_gracefully(stream);
}

fn respond(stream: &mut TcpStream, metrics: &(dyn Fn() -> String + Send + Sync)) {
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::with_capacity(512);
    let end = match read_head(stream, &mut buf) {
        Head::Complete(end) => end,
        Head::TooLarge => {
            let _ = write_response(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"too large\n",
                true,
            );
            return;
        }
        Head::Incomplete => return,
    };
    let head = buf.get(..end).unwrap_or_default();
    let request_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let request_line = std::str::from_utf8(request_line).unwrap_or("").trim_end_matches('\r');
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let well_formed = parts.next().is_none() && version.is_some_and(|v| v.starts_with("HTTP/1."));
    let (Some(method), Some(target), true) = (method, target, well_formed) else {
        let _ = write_response(stream, "400 Bad Request", "text/plain", b"bad request\n", true);
        return;
    };
    let path = target.split('?').next().unwrap_or(target);
    let result = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let text = metrics();
            write_response(stream, "200 OK", PROMETHEUS_CONTENT_TYPE, text.as_bytes(), method == "GET")
        }
        ("GET" | "HEAD", _) => {
            write_response(stream, "404 Not Found", "text/plain", b"not found\n", method == "GET")
        }
        _ => write_response(stream, "405 Method Not Allowed", "text/plain", b"method not allowed\n", true),
    };
    let _ = result;
}
