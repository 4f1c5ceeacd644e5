//! The control socket server: a Unix socket served by an acceptor thread and one thread per client, never
//! on a protocol core. Each client speaks one JSON request per line and gets one reply line per request.
//! Everything a client can do wrong — bytes that are not UTF-8 or JSON, a line over the size limit, half
//! a line and silence, never reading replies, connecting when the server is full — gets an error reply
//! or a closed connection, and never reaches the `ControlHandler`, stalls another client, or crashes.

use crate::ctl::protocol::{parse_request, CtlError, ErrorCode, Reply, Request};
use serde_json::Value;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the box implements to answer commands. Called on a control thread, one call per request; calls
/// for different clients may run at once. The request has already been parsed and validated.
pub trait ControlHandler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Result<Value, CtlError>;
}

impl<H: ControlHandler + ?Sized> ControlHandler for Arc<H> {
    fn handle(&self, req: Request) -> Result<Value, CtlError> {
        (**self).handle(req)
    }
}

/// Limits and timeouts of the control socket. `new` gives the defaults an appliance wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where the socket lives.
    pub path: PathBuf,
    /// A group (name or numeric gid) whose members may connect: the socket becomes 0660 and owned by it.
    /// Without one the socket is 0600: only the daemon's own user may connect.
    pub group: Option<String>,
    /// Permission bits of the socket (config `control.mode`); the bits for others are always cleared.
    /// `None`: 0660 with a group, 0600 without.
    pub mode: Option<u32>,
    /// Clients served at once; one more gets `busy` and is closed.
    pub max_clients: usize,
    /// Longest request line, without its newline; a longer one gets `too_large` and is closed.
    pub max_line_bytes: usize,
    /// Time from the first byte of a request line to its newline before the client is cut off.
    pub line_deadline: Duration,
    /// Time a connection may sit with no request in progress before it is closed.
    pub idle_timeout: Duration,
    /// How long writing one reply may block (a client that never reads) before the client is cut off.
    pub write_timeout: Duration,
}

impl ServerConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ServerConfig {
            path: path.into(),
            group: None,
            mode: None,
            max_clients: 16,
            max_line_bytes: 64 * 1024,
            line_deadline: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another process is listening on {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    #[error("socket path {0} is longer than the 107 bytes a Unix socket address holds")]
    PathTooLong(PathBuf),
    #[error("group `{0}` not found in /etc/group")]
    UnknownGroup(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Time slice of a blocked read: how soon a client thread notices a deadline or a shutdown.
const READ_SLICE: Duration = Duration::from_millis(100);
/// A `busy` reply goes to a client the server will not serve; it may not hold the acceptor longer.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

struct Shared {
    handler: Arc<dyn ControlHandler>,
    config: ServerConfig,
    active: AtomicUsize,
    stopping: AtomicBool,
}

/// A running control socket. Dropping it (or `shutdown`) stops accepting, lets the client threads end,
/// and removes the socket file.
pub struct ControlServer {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.shared.config.path)
            .field("active", &self.active_clients())
            .finish()
    }
}

impl ControlServer {
    /// Binds the socket (removing a stale one that nobody listens on) and starts serving.
    pub fn start(
        config: ServerConfig,
        handler: Arc<dyn ControlHandler>,
    ) -> Result<ControlServer, ServerError> {
        let listener = bind_socket(&config)?;
        let shared = Arc::new(Shared {
            handler,
            config,
            active: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("ctl-accept".into())
            .spawn(move || accept_loop(listener, acceptor_shared))
            .map_err(|source| ServerError::Io {
                what: "spawning the acceptor for",
                path: shared.config.path.clone(),
                source,
            })?;
        Ok(ControlServer { shared, acceptor: Some(acceptor) })
    }

    pub fn path(&self) -> &Path {
        &self.shared.config.path
    }

    /// Clients being served right now.
    pub fn active_clients(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Stops the server and waits (bounded) for client threads to notice.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // The acceptor blocks in accept(); a connection of our own wakes it. If that fails (the file was
        // removed under us), the acceptor is left to end with the process rather than hang this call.
        let woke = UnixStream::connect(&self.shared.config.path).is_ok();
        if let Some(handle) = self.acceptor.take() {
            if woke {
                let _ = handle.join();
            }
        }
        let _ = std::fs::remove_file(&self.shared.config.path);
        let give_up = Instant::now() + self.shared.config.write_timeout + READ_SLICE * 3;
        while self.shared.active.load(Ordering::Acquire) > 0 && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ServerError + 'a {
    move |source| ServerError::Io { what, path: path.to_path_buf(), source }
}

/// Removes a socket file left by a dead daemon; refuses if someone still listens or it is not a socket.
fn remove_stale(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspecting", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(io_err("removing stale socket", path))
        }
        Err(e) => Err(io_err("probing existing socket", path)(e)),
    }
}

/// Resolves a group name or numeric gid without libc: /etc/group is what getgrnam reads on this system.
fn resolve_group(group: &str) -> Result<u32, ServerError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group").map_err(io_err("reading", Path::new("/etc/group")))?;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| ServerError::UnknownGroup(group.to_string()))
}

/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

fn set_access(sock: &Path, gid: Option<u32>, mode: Option<u32>) -> Result<(), ServerError> {
    if let Some(gid) = gid {
        std::os::unix::fs::chown(sock, None, Some(gid)).map_err(io_err("chown", sock))?;
    }
    let mode = mode.map_or(if gid.is_some() { 0o660 } else { 0o600 }, |m| m & 0o770);
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", sock))
}

/// Binds inside a fresh 0700 directory, sets mode and group there, then renames into place: the socket
/// is never reachable with the process umask's permissions, not even for an instant. Only when that
/// detour would exceed the socket path limit does it bind in place and chmod right after.
fn bind_socket(config: &ServerConfig) -> Result<UnixListener, ServerError> {
    let path = config.path.as_path();
    if path.as_os_str().len() > SUN_PATH_MAX {
        return Err(ServerError::PathTooLong(path.to_path_buf()));
    }
    let gid = config.group.as_deref().map(resolve_group).transpose()?;
    remove_stale(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_err("creating directory", &parent))?;
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let private =
        parent.join(format!(".hfctl.{}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
    let tmp = private.join("s");
    if tmp.as_os_str().len() > SUN_PATH_MAX {
        let listener = UnixListener::bind(path).map_err(io_err("binding", path))?;
        return match set_access(path, gid, config.mode) {
            Ok(()) => Ok(listener),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        };
    }
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(io_err("creating", &private))?;
    let result = (|| {
        let listener = UnixListener::bind(&tmp).map_err(io_err("binding", &tmp))?;
        set_access(&tmp, gid, config.mode)?;
        std::fs::rename(&tmp, path).map_err(io_err("moving socket into place at", path))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    result
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            // EMFILE and friends: back off briefly instead of spinning on a full descriptor table.
            Err(_) => {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        // Reserve a slot first, so the bound holds however fast clients arrive.
        let prev = shared.active.fetch_add(1, Ordering::AcqRel);
        if prev >= shared.config.max_clients {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            let msg =
                format!("server busy: {} clients already connected; try again", shared.config.max_clients);
            send_and_close(stream, &Reply::failure(Value::Null, CtlError::new(ErrorCode::Busy, msg)));
            continue;
        }
        let client_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new().name("ctl-client".into()).spawn(move || {
            let _slot = SlotGuard(&client_shared.active);
            serve_client(stream, &client_shared);
        });
        if spawned.is_err() {
            // The closure (and its guard) never ran: give the slot back here.
            shared.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct SlotGuard<'a>(&'a AtomicUsize);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn send_and_close(mut stream: UnixStream, reply: &Reply) {
    let _ = stream.set_write_timeout(Some(BUSY_WRITE_TIMEOUT));
    let _ = stream.write_all(reply.to_line().as_bytes());
}

/// Answers one complete line. The handler sees only requests that parsed and validated; a handler that
/// panics answers `internal` and the connection goes on.
pub fn respond(line: &[u8], handler: &dyn ControlHandler) -> Reply {
    match parse_request(line) {
        Err(rejected) => Reply::failure(rejected.id, rejected.error),
        Ok(parsed) => {
            let cmd = parsed.request.name();
            match catch_unwind(AssertUnwindSafe(|| handler.handle(parsed.request))) {
                Ok(Ok(result)) => Reply::success(parsed.id, result),
                Ok(Err(error)) => Reply::failure(parsed.id, error),
                Err(_) => Reply::failure(parsed.id, CtlError::internal(format!("handler failed on `{cmd}`"))),
            }
        }
    }
}

enum Next {
    Continue,
    Close,
}

fn write_reply(stream: &mut UnixStream, reply: &Reply) -> Next {
    match stream.write_all(reply.to_line().as_bytes()).and_then(|()| stream.flush()) {
        Ok(()) => Next::Continue,
        // Timed out (a client that does not read) or gone: either way this client is done.
        Err(_) => Next::Close,
    }
}

fn serve_client(mut stream: UnixStream, shared: &Shared) {
    let cfg = &shared.config;
    if stream.set_write_timeout(Some(cfg.write_timeout)).is_err() {
        return;
    }
    let mut pending: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // Where in `pending` the newline search resumes, so a trickled line is scanned once, not per read.
    let mut scanned = 0usize;
    let mut line_started: Option<Instant> = None;
    let mut last_activity = Instant::now();
    loop {
        while let Some(off) = pending.get(scanned..).and_then(|rest| rest.iter().position(|&b| b == b'\n')) {
            let end = scanned + off;
            if end > cfg.max_line_bytes {
                too_large(&mut stream, cfg.max_line_bytes);
                return;
            }
            let reply = respond(pending.get(..end).unwrap_or_default(), &*shared.handler);
            pending.drain(..=end);
            scanned = 0;
            last_activity = Instant::now();
            line_started = if pending.is_empty() { None } else { Some(last_activity) };
            if let Next::Close = write_reply(&mut stream, &reply) {
                return;
            }
            if shared.stopping.load(Ordering::Acquire) {
                return;
            }
        }
        scanned = pending.len();
        if pending.len() > cfg.max_line_bytes {
            too_large(&mut stream, cfg.max_line_bytes);
            return;
        }
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let deadline = match line_started {
            Some(t) => t + cfg.line_deadline,
            None => last_activity + cfg.idle_timeout,
        };
        if now >= deadline {
            if line_started.is_some() {
                let msg = format!(
                    "request line not completed within {} ms; closing",
                    cfg.line_deadline.as_millis()
                );
                let _ = write_reply(&mut stream, &Reply::failure(Value::Null, CtlError::bad_request(msg)));
            }
            return;
        }
        let slice = (deadline - now).clamp(Duration::from_millis(1), READ_SLICE);
        if stream.set_read_timeout(Some(slice)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                // The client closed its side: a final line without newline still gets its answer.
                if !pending.is_empty() {
                    let reply = respond(&pending, &*shared.handler);
                    let _ = write_reply(&mut stream, &reply);
                }
                return;
            }
            Ok(n) => {
                if line_started.is_none() {
                    line_started = Some(Instant::now());
                }
                pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

fn too_large(stream: &mut UnixStream, max: usize) {
    let msg = format!("request line longer than {max} bytes; closing");
    let _ = write_reply(stream, &Reply::failure(Value::Null, CtlError::new(ErrorCode::TooLarge, msg)));
}
