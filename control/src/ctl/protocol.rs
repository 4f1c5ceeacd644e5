//! The control protocol's types: the request envelope, the typed `Request` enum (one variant per command,
//! tagged by `cmd`, its arguments under `args`), replies, stable error codes, and the parser that turns one
//! line of bytes into a validated request or a reply-ready error. The parser is the only door to a
//! `ControlHandler`: whatever reaches a handler has parsed and validated here.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::net::SocketAddrV4;
use std::path::PathBuf;

/// The protocol version this code speaks. A request without `version` means this one.
pub const PROTOCOL_VERSION: u64 = 1;

/// Every command name, as it appears in `cmd`.
pub const COMMANDS: &[&str] =
    &["status", "stats", "flows", "flow", "set", "switchover", "drain", "capture", "metrics"];

/// Largest `limit` a `flows` request may ask for; bigger lists are paged with filters.
pub const MAX_FLOWS_LIMIT: u32 = 10_000;
/// `limit` of a `flows` request that names none.
pub const DEFAULT_FLOWS_LIMIT: u32 = 100;

/// Stable error codes: scripts match on these, so they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not UTF-8 or not JSON.
    ParseError,
    /// Valid JSON, but not a request envelope (not an object, no `id`, bad `version`, unknown field).
    BadRequest,
    /// `cmd` names no command.
    UnknownCommand,
    /// `args` has a wrong type, a missing or unknown field, or a value out of range.
    InvalidArgument,
    /// The request line is longer than the server accepts; the server closes the connection.
    TooLarge,
    /// The server already serves its maximum number of clients; the server closes the connection.
    Busy,
    /// The handler failed in a way that is a bug, not the request's fault.
    Internal,
    /// The box cannot do this now (e.g. switchover with no standby attached).
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "parse_error",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reply: a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CtlError {
    pub code: ErrorCode,
    pub message: String,
}

impl CtlError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CtlError { code, message: message.into() }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// One request, tagged by `cmd`, its arguments in `args`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "snake_case")]
pub enum Request {
    /// Role, peer state, epoch, degraded or not, uptime.
    Status(NoArgs),
    /// Counters and latency percentiles.
    Stats(NoArgs),
    /// A filtered list of flows.
    Flows(FlowsArgs),
    /// One flow's full state.
    Flow(FlowArgs),
    /// One runtime setting.
    Set(SetArgs),
    /// Planned move of service to the standby.
    Switchover(SwitchoverArgs),
    /// Stop taking new flows (on one listener or all) and let the existing ones finish.
    Drain(DrainArgs),
    /// Write N packets of a port to a pcap file.
    Capture(CaptureArgs),
    /// Prometheus text exposition.
    Metrics(NoArgs),
}

/// Arguments of commands that take none; `args` may be omitted or `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// Coarse phase of a flow, the same for every TCP state the engine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowPhase {
    /// Handshake in progress on either half.
    Opening,
    /// Both halves established.
    Established,
    /// A FIN or RST has been seen; the flow is winding down.
    Closing,
}

/// A peer to filter flows by: an IPv4 address, optionally with a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerFilter {
    pub ip: std::net::Ipv4Addr,
    pub port: Option<u16>,
}

impl PeerFilter {
    /// Whether a peer address matches this filter.
    pub fn matches(&self, addr: SocketAddrV4) -> bool {
        *addr.ip() == self.ip && self.port.is_none_or(|p| p == addr.port())
    }
}

impl TryFrom<String> for PeerFilter {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Ok(sa) = s.parse::<SocketAddrV4>() {
            return Ok(PeerFilter { ip: *sa.ip(), port: Some(sa.port()) });
        }
        match s.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => Ok(PeerFilter { ip, port: None }),
            Err(_) => Err(format!("peer `{s}` is neither an IPv4 address nor IPv4:port")),
        }
    }
}

impl From<PeerFilter> for String {
    fn from(p: PeerFilter) -> String {
        match p.port {
            Some(port) => format!("{}:{port}", p.ip),
            None => p.ip.to_string(),
        }
    }
}

fn default_flows_limit() -> u32 {
    DEFAULT_FLOWS_LIMIT
}

/// Filters of `flows`; all optional, combined with AND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowsArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<FlowPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerFilter>,
    #[serde(default = "default_flows_limit")]
    pub limit: u32,
}

impl Default for FlowsArgs {
    fn default() -> Self {
        FlowsArgs { listener: None, state: None, peer: None, limit: DEFAULT_FLOWS_LIMIT }
    }
}

impl FlowsArgs {
    /// Whether a flow passes the filters (all that are set); `peers` are its client and backend
    /// addresses. The box applies this while walking its tables and stops at `limit` matches.
    pub fn matches(&self, listener: &str, phase: FlowPhase, peers: &[SocketAddrV4]) -> bool {
        self.listener.as_deref().is_none_or(|l| l == listener)
            && self.state.is_none_or(|s| s == phase)
            && self.peer.is_none_or(|p| peers.iter().any(|&a| p.matches(a)))
    }
}

/// `flow`: one flow by the id that `flows` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowArgs {
    pub id: u64,
}

/// Ack policies, as in DESIGN.md's ack gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckPolicy {
    None,
    Backend,
    Replica,
    App,
}

/// What to do with a backend of a listener's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendAction {
    /// Add to the pool (new flows may choose it).
    Add,
    /// Remove from the pool; its existing flows are left to finish.
    Remove,
    /// Keep its existing flows, give it no new ones.
    Drain,
}

/// Log levels; `off` silences the daemon's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Ports of a box, as `capture` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortName {
    Client,
    Server,
    Replication,
}

/// `set`: one runtime setting, tagged by `param`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "param", rename_all = "snake_case", deny_unknown_fields)]
pub enum SetArgs {
    AckPolicy {
        listener: String,
        policy: AckPolicy,
    },
    HeartbeatIntervalMs {
        value: u64,
    },
    MissThreshold {
        value: u32,
    },
    BatchSize {
        value: u32,
    },
    FlushDeadlineUs {
        value: u64,
    },
    Backend {
        action: BackendAction,
        listener: String,
        addr: SocketAddrV4,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight: Option<u32>,
    },
    LogLevel {
        level: LogLevel,
    },
}

/// Allowed ranges of the numeric settings, inclusive; the doc and the schema state the same numbers.
pub mod limits {
    pub const HEARTBEAT_INTERVAL_MS: (u64, u64) = (1, 10_000);
    pub const MISS_THRESHOLD: (u32, u32) = (1, 100);
    pub const BATCH_SIZE: (u32, u32) = (1, 4096);
    pub const FLUSH_DEADLINE_US: (u64, u64) = (0, 1_000_000);
    pub const BACKEND_WEIGHT: (u32, u32) = (1, 1000);
    pub const TIMEOUT_MS: (u64, u64) = (1, 600_000);
    pub const CAPTURE_COUNT: (u32, u32) = (1, 1_000_000);
    pub const CAPTURE_SNAPLEN: (u32, u32) = (64, 65_535);
    pub const LISTENER_NAME_MAX: usize = 64;
    pub const PATH_MAX: usize = 4096;
}

/// `switchover`: how long to wait for the standby to take over before giving up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `drain`: one listener, or the whole box when `listener` is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `capture`: `count` packets of `port` into a pcap file at the absolute path `file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureArgs {
    pub port: PortName,
    pub count: u32,
    pub file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

fn check_range<T: PartialOrd + fmt::Display + Copy>(
    field: &str,
    v: T,
    (lo, hi): (T, T),
) -> Result<(), CtlError> {
    if v < lo || v > hi {
        Err(CtlError::invalid_argument(format!("{field} must be between {lo} and {hi} (got {v})")))
    } else {
        Ok(())
    }
}

/// Listener names come from the config file; the same rule keeps typos from matching nothing silently.
fn check_listener(field: &str, name: &str) -> Result<(), CtlError> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if name.is_empty() || name.len() > limits::LISTENER_NAME_MAX || !ok_chars {
        return Err(CtlError::invalid_argument(format!(
            "{field} must be 1 to {} characters of A-Z a-z 0-9 _ - . (got {:?})",
            limits::LISTENER_NAME_MAX,
            name
        )));
    }
    Ok(())
}

fn check_timeout(field: &str, t: Option<u64>) -> Result<(), CtlError> {
    match t {
        Some(v) => check_range(field, v, limits::TIMEOUT_MS),
        None => Ok(()),
    }
}

impl Request {
    /// The command name, as in `cmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status(_) => "status",
            Request::Stats(_) => "stats",
            Request::Flows(_) => "flows",
            Request::Flow(_) => "flow",
            Request::Set(_) => "set",
            Request::Switchover(_) => "switchover",
            Request::Drain(_) => "drain",
            Request::Capture(_) => "capture",
            Request::Metrics(_) => "metrics",
        }
    }

    /// Range and shape checks that types alone cannot express. Messages name the field at fault.
    pub fn validate(&self) -> Result<(), CtlError> {
        match self {
            Request::Status(_) | Request::Stats(_) | Request::Metrics(_) | Request::Flow(_) => Ok(()),
            Request::Flows(a) => {
                if let Some(l) = &a.listener {
                    check_listener("args.listener", l)?;
                }
                check_range("args.limit", a.limit, (1, MAX_FLOWS_LIMIT))
            }
            Request::Set(s) => match s {
                SetArgs::AckPolicy { listener, .. } => check_listener("args.listener", listener),
                SetArgs::HeartbeatIntervalMs { value } => {
                    check_range("args.value (heartbeat_interval_ms)", *value, limits::HEARTBEAT_INTERVAL_MS)
                }
                SetArgs::MissThreshold { value } => {
                    check_range("args.value (miss_threshold)", *value, limits::MISS_THRESHOLD)
                }
                SetArgs::BatchSize { value } => {
                    check_range("args.value (batch_size)", *value, limits::BATCH_SIZE)
                }
                SetArgs::FlushDeadlineUs { value } => {
                    check_range("args.value (flush_deadline_us)", *value, limits::FLUSH_DEADLINE_US)
                }
                SetArgs::Backend { listener, addr, weight, .. } => {
                    check_listener("args.listener", listener)?;
                    let ip = addr.ip();
                    if addr.port() == 0 {
                        return Err(CtlError::invalid_argument(format!(
                            "args.addr: port 0 is not a backend ({addr})"
                        )));
                    }
                    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                        return Err(CtlError::invalid_argument(format!(
                            "args.addr: {ip} is not a unicast address a backend can have"
                        )));
                    }
                    match weight {
                        Some(w) => check_range("args.weight", *w, limits::BACKEND_WEIGHT),
                        None => Ok(()),
                    }
                }
                SetArgs::LogLevel { .. } => Ok(()),
            },
            Request::Switchover(a) => check_timeout("args.timeout_ms", a.timeout_ms),
            Request::Drain(a) => {
                if let Some(l) = &a.listener {
                    check_listener("args.listener", l)?;
                }
                check_timeout("args.timeout_ms", a.timeout_ms)
            }
            Request::Capture(a) => {
                check_range("args.count", a.count, limits::CAPTURE_COUNT)?;
                if let Some(s) = a.snaplen {
                    check_range("args.snaplen", s, limits::CAPTURE_SNAPLEN)?;
                }
                let text = a.file.as_os_str().as_encoded_bytes();
                if !a.file.is_absolute() {
                    return Err(CtlError::invalid_argument(format!(
                        "args.file must be an absolute path (got {:?}): the daemon's working directory is not yours",
                        a.file
                    )));
                }
                if text.contains(&0) || text.len() > limits::PATH_MAX || text.ends_with(b"/") {
                    return Err(CtlError::invalid_argument(format!(
                        "args.file must name a file: no NUL, no trailing '/', at most {} bytes",
                        limits::PATH_MAX
                    )));
                }
                Ok(())
            }
        }
    }

    /// The request as one line (with its `\n`), ready to write to the socket.
    pub fn to_line(&self, id: &Value) -> String {
        let mut obj = Map::new();
        obj.insert("id".into(), id.clone());
        obj.insert("version".into(), Value::from(PROTOCOL_VERSION));
        if let Ok(Value::Object(tagged)) = serde_json::to_value(self) {
            obj.extend(tagged);
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        line
    }
}

/// A request line that parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    pub id: Value,
    pub request: Request,
}

/// A request line that did not: the error to send, with whatever `id` could be recovered (else null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRequest {
    pub id: Value,
    pub error: CtlError,
}

const ENVELOPE_FIELDS: &[&str] = &["id", "cmd", "args", "version"];

/// Parses and validates one request line (without its `\n`; a trailing `\r` is allowed).
pub fn parse_request(line: &[u8]) -> Result<ParsedRequest, RejectedRequest> {
    let reject = |id: Value, error: CtlError| RejectedRequest { id, error };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| {
        reject(
            Value::Null,
            CtlError::new(
                ErrorCode::ParseError,
                format!("request is not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
            ),
        )
    })?;
    if text.trim().is_empty() {
        return Err(reject(Value::Null, CtlError::new(ErrorCode::ParseError, "empty request line")));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        reject(Value::Null, CtlError::new(ErrorCode::ParseError, format!("request is not JSON: {e}")))
    })?;
    let Value::Object(mut obj) = value else {
        return Err(reject(Value::Null, CtlError::bad_request("a request is a JSON object")));
    };
    let Some(id) = obj.remove("id") else {
        return Err(reject(Value::Null, CtlError::bad_request("missing field `id`")));
    };
    if let Some(unknown) = obj.keys().find(|k| !ENVELOPE_FIELDS.contains(&k.as_str())) {
        return Err(reject(
            id,
            CtlError::bad_request(format!(
                "unknown field `{unknown}`; a request has id, cmd, args and version"
            )),
        ));
    }
    match obj.remove("version") {
        None => {}
        Some(v) if v.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(reject(
                id,
                CtlError::bad_request(format!(
                    "unsupported version {v}; this server speaks version {PROTOCOL_VERSION}"
                )),
            ))
        }
    }
    let cmd = match obj.remove("cmd") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(reject(id, CtlError::bad_request("field `cmd` must be a string"))),
        None => return Err(reject(id, CtlError::bad_request("missing field `cmd`"))),
    };
    if !COMMANDS.contains(&cmd.as_str()) {
        let shown: String = cmd.chars().take(64).collect();
        return Err(reject(
            id,
            CtlError::new(
                ErrorCode::UnknownCommand,
                format!("unknown command `{shown}`; known: {}", COMMANDS.join(", ")),
            ),
        ));
    }
    let args = match obj.remove("args") {
        None => Map::new(),
        Some(Value::Object(a)) => a,
        Some(_) => return Err(reject(id, CtlError::invalid_argument("args must be a JSON object"))),
    };
    let request = typed_request(&cmd, args).map_err(|e| reject(id.clone(), e))?;
    if let Err(error) = request.validate() {
        return Err(reject(id, error));
    }
    Ok(ParsedRequest { id, request })
}

fn de<T: serde::de::DeserializeOwned>(prefix: &str, value: Value) -> Result<T, CtlError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        CtlError::invalid_argument(if path.is_empty() || path == "." {
            format!("{prefix}: {inner}")
        } else {
            format!("{prefix}.{path}: {inner}")
        })
    })
}

/// Fields of each `set` param; deserialized one param at a time (rather than through the tagged enum,
/// which buffers its content and so loses the path) so that errors name the field.
mod set_fields {
    use super::*;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct U64 {
        pub value: u64,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct U32 {
        pub value: u32,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Policy {
        pub listener: String,
        pub policy: AckPolicy,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Backend {
        pub action: BackendAction,
        pub listener: String,
        pub addr: SocketAddrV4,
        #[serde(default)]
        pub weight: Option<u32>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Level {
        pub level: LogLevel,
    }
}

/// Every `param` of `set`, as it appears on the wire.
pub const SET_PARAMS: &[&str] = &[
    "ack_policy",
    "heartbeat_interval_ms",
    "miss_threshold",
    "batch_size",
    "flush_deadline_us",
    "backend",
    "log_level",
];

fn typed_set(mut args: Map<String, Value>) -> Result<SetArgs, CtlError> {
    use set_fields as f;
    let param = match args.remove("param") {
        Some(Value::String(p)) => p,
        Some(_) => return Err(CtlError::invalid_argument("args.param must be a string")),
        None => {
            return Err(CtlError::invalid_argument(format!(
                "missing field `args.param`; one of: {}",
                SET_PARAMS.join(", ")
            )))
        }
    };
    let rest = Value::Object(args);
    Ok(match param.as_str() {
        "ack_policy" => {
            let x: f::Policy = de("args", rest)?;
            SetArgs::AckPolicy { listener: x.listener, policy: x.policy }
        }
        "heartbeat_interval_ms" => SetArgs::HeartbeatIntervalMs { value: de::<f::U64>("args", rest)?.value },
        "miss_threshold" => SetArgs::MissThreshold { value: de::<f::U32>("args", rest)?.value },
        "batch_size" => SetArgs::BatchSize { value: de::<f::U32>("args", rest)?.value },
        "flush_deadline_us" => SetArgs::FlushDeadlineUs { value: de::<f::U64>("args", rest)?.value },
        "backend" => {
            let x: f::Backend = de("args", rest)?;
            SetArgs::Backend { action: x.action, listener: x.listener, addr: x.addr, weight: x.weight }
        }
        "log_level" => SetArgs::LogLevel { level: de::<f::Level>("args", rest)?.level },
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(CtlError::invalid_argument(format!(
                "args.param: unknown setting `{shown}`; one of: {}",
                SET_PARAMS.join(", ")
            )));
        }
    })
}

/// Deserializes `args` for a known command straight into its argument type, so errors carry the path.
fn typed_request(cmd: &str, args: Map<String, Value>) -> Result<Request, CtlError> {
    let v = || Value::Object(args.clone());
    Ok(match cmd {
        "status" => Request::Status(de("args", v())?),
        "stats" => Request::Stats(de("args", v())?),
        "metrics" => Request::Metrics(de("args", v())?),
        "flows" => Request::Flows(de("args", v())?),
        "flow" => Request::Flow(de("args", v())?),
        "set" => Request::Set(typed_set(args)?),
        "switchover" => Request::Switchover(de("args", v())?),
        "drain" => Request::Drain(de("args", v())?),
        "capture" => Request::Capture(de("args", v())?),
        other => {
            return Err(CtlError::new(ErrorCode::UnknownCommand, format!("unknown command `{other}`")));
        }
    })
}

/// One reply line: `ok` with a `result`, or not `ok` with an `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CtlError>,
}

impl Reply {
    pub fn success(id: Value, result: Value) -> Self {
        Reply { id, ok: true, result: Some(result), error: None }
    }
    pub fn failure(id: Value, error: CtlError) -> Self {
        Reply { id, ok: false, result: None, error: Some(error) }
    }
    /// The reply as one line with its `\n`.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            // Only a non-string map key could fail here, and `Value` has none; answer anyway.
            format!(
                r#"{{"id":null,"ok":false,"error":{{"code":"internal","message":"reply not serializable: {}"}}}}"#,
                e.to_string().replace(['"', '\\'], "'")
            )
        });
        line.push('\n');
        line
    }
}
