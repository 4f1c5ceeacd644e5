//! The holdfast config file: a TOML document, parsed strictly (unknown fields are errors), then checked
//! as a whole, with every error naming the field it is about, e.g.
//! `listeners[1].backends[0]: "198.18.2.300:80" is not an IPv4 socket address`.
//!
//! `holdfast run --config FILE` and `holdfast check-config FILE` read it through [`Config::load`];
//! `holdfast demo` starts from [`Config::demo`]. `config/holdfast.example.toml` documents every field.

mod raw;
mod validate;

use dataplane::balance::health::HealthParams;
use dataplane::balance::Algorithm;
use dataplane::gate::{AckPolicy, NoStandby};
use dataplane::neigh::Subnet;
use dataplane::time::Duration;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub box_: BoxConfig,
    pub ports: Ports,
    pub addresses: Addresses,
    pub listeners: Vec<Listener>,
    pub limits: Limits,
    pub cores: Cores,
    /// Present when this box runs with a standby (or is one).
    pub replication: Option<Replication>,
    pub control: ControlConfig,
    pub log: LogConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Standby,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxConfig {
    pub name: String,
    pub role: Role,
    /// Where the box keeps its epoch (generation number), so a restarted stale primary is fenced.
    pub epoch_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortBackend {
    Mem,
    AfPacket,
    AfXdp,
    Dpdk,
}

impl PortBackend {
    pub const fn as_str(self) -> &'static str {
        match self {
            PortBackend::Mem => "mem",
            PortBackend::AfPacket => "afpacket",
            PortBackend::AfXdp => "afxdp",
            PortBackend::Dpdk => "dpdk",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    Auto,
    Skb,
    Native,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub backend: PortBackend,
    /// The network interface; `None` only for `mem`.
    pub interface: Option<String>,
    /// Hardware queues, one per core pair.
    pub queues: u16,
    /// Frames per ring (backend default when `None`).
    pub ring_size: Option<u32>,
    /// DPDK only: extra EAL arguments (e.g. `--no-huge`, `--vdev=net_af_packet0,iface=veth0`).
    pub eal_args: Vec<String>,
    /// AF_XDP only.
    pub xdp_mode: Option<XdpMode>,
    /// AF_XDP only: insist on zero-copy (`Some(true)`), forbid it, or let the driver decide (`None`).
    pub zero_copy: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    pub client: PortConfig,
    pub server: PortConfig,
    pub replication: Option<PortConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub vip: Ipv4Addr,
    pub snat: Ipv4Addr,
    pub client_subnet: Subnet,
    pub server_subnet: Subnet,
    pub client_gateway: Option<Ipv4Addr>,
    pub server_gateway: Option<Ipv4Addr>,
    /// A MAC address shared by primary and standby, which the switch relearns on takeover.
    pub virtual_mac: Option<[u8; 6]>,
    /// Source ports toward backends (inclusive).
    pub snat_ports: (u16, u16),
    /// Source ports of health-check probes (inclusive), disjoint from `snat_ports`.
    pub probe_ports: (u16, u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    pub addr: SocketAddrV4,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    /// The VIP port.
    pub port: u16,
    pub backends: Vec<BackendEntry>,
    pub balance: Algorithm,
    pub maglev_table_size: u32,
    pub ack_policy: AckPolicy,
    /// The hosted application's name, for policy `app`.
    pub application: Option<String>,
    pub no_standby: NoStandby,
    pub health: HealthParams,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Flows per core pair.
    pub max_flows: u32,
    pub client_buffer: u32,
    pub server_buffer: u32,
    pub idle_timeout: Duration,
    pub syn_backlog: u32,
    pub snat_quarantine: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Spin on the ports (appliances with dedicated cores).
    Busy,
    /// Back off to sleeping when idle (shared machines, CI).
    Adaptive,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cores {
    pub poll: PollMode,
    /// CPU ids to pin to: empty for no pinning, else two per core pair (A then B of each pair).
    pub pin: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    pub heartbeat_interval: Duration,
    /// Missed heartbeats before the standby declares the primary dead.
    pub miss_threshold: u32,
    pub batch_size: u32,
    pub flush_deadline: Duration,
    /// The peer's MAC on the replication link; broadcast when `None` (a back-to-back cable).
    pub peer_mac: Option<[u8; 6]>,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            heartbeat_interval: Duration::from_millis(1),
            miss_threshold: 5,
            batch_size: 32,
            flush_deadline: Duration::from_micros(100),
            peer_mac: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    pub socket: PathBuf,
    /// Permission bits of the socket.
    pub mode: u32,
    pub group: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `listeners[1].backends[0]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a config was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Not TOML, an unknown field, or a value of the wrong type (the message shows line and column).
    #[error("{0}")]
    Parse(String),
    /// Well-formed but wrong: every problem found, each naming its field.
    #[error("{}", display_all(.0))]
    Invalid(Vec<FieldError>),
}

fn display_all(errs: &[FieldError]) -> String {
    errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

impl ConfigError {
    /// The field errors, if the config parsed but did not validate.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(v) => v,
            _ => &[],
        }
    }
}

impl Config {
    /// Parses and validates a config document.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        validate::validate(&raw).map_err(ConfigError::Invalid)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Config::from_toml_str(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The embedded demo's box: in-memory ports (a standby link included), one listener on the VIP's
    /// port 5201 relaying to one backend under the `backend` policy, adaptive polling, no pinning.
    pub fn demo() -> Config {
        let mem = PortConfig {
            backend: PortBackend::Mem,
            interface: None,
            queues: 1,
            ring_size: None,
            eal_args: Vec::new(),
            xdp_mode: None,
            zero_copy: None,
        };
        Config {
            box_: BoxConfig { name: "demo".into(), role: Role::Primary, epoch_file: None },
            ports: Ports { client: mem.clone(), server: mem.clone(), replication: Some(mem) },
            addresses: Addresses {
                vip: Ipv4Addr::new(198, 18, 1, 1),
                snat: Ipv4Addr::new(198, 18, 2, 1),
                client_subnet: Subnet::containing([198, 18, 1, 0], 24),
                server_subnet: Subnet::containing([198, 18, 2, 0], 24),
                client_gateway: None,
                server_gateway: None,
                virtual_mac: None,
                snat_ports: (20_000, 59_999),
                probe_ports: (60_000, 60_999),
            },
            listeners: vec![Listener {
                name: "demo".into(),
                port: 5201,
                backends: vec![BackendEntry {
                    addr: SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 10), 5201),
                    weight: 1,
                }],
                balance: Algorithm::Maglev,
                maglev_table_size: dataplane::balance::DEFAULT_TABLE_SIZE,
                ack_policy: AckPolicy::Backend,
                application: None,
                no_standby: NoStandby::Degraded,
                health: HealthParams::default(),
            }],
            limits: Limits {
                max_flows: 100_000,
                client_buffer: 256 * 1024,
                server_buffer: 256 * 1024,
                idle_timeout: Duration::from_secs(300),
                syn_backlog: 4096,
                snat_quarantine: Duration::from_secs(60),
            },
            cores: Cores { poll: PollMode::Adaptive, pin: Vec::new() },
            replication: Some(Replication::default()),
            control: ControlConfig {
                socket: PathBuf::from("/run/holdfast/control.sock"),
                mode: 0o660,
                group: None,
                metrics_listen: None,
            },
            log: LogConfig { level: LogLevel::Info, format: LogFormat::Text },
        }
    }

    /// The listener on a VIP port.
    pub fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    /// Core pairs: one per queue of the client (and server) port.
    pub fn core_pairs(&self) -> u16 {
        self.ports.client.queues
    }

    /// A few lines saying what the config sets up (what `holdfast check-config` prints on success).
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let port = |p: &PortConfig| match &p.interface {
            Some(i) => format!("{} on {i}", p.backend.as_str()),
            None => p.backend.as_str().to_string(),
        };
        let role = match self.box_.role {
            Role::Primary => "primary",
            Role::Standby => "standby",
        };
        let mut s = format!(
            "box {} ({role}), {} core pair(s); client port {}, server port {}",
            self.box_.name,
            self.core_pairs(),
            port(&self.ports.client),
            port(&self.ports.server)
        );
        match (&self.ports.replication, &self.replication) {
            (Some(p), Some(_)) => {
                let _ = write!(s, ", replication port {}", port(p));
            }
            _ => s.push_str(", no standby"),
        }
        let _ = write!(s, "\nVIP {}, SNAT {}", self.addresses.vip, self.addresses.snat);
        for l in &self.listeners {
            let _ = write!(
                s,
                "\nlistener {} on port {}: {} backend(s), {}, ack policy {}",
                l.name,
                l.port,
                l.backends.len(),
                l.balance,
                l.ack_policy
            );
        }
        s
    }
}

#[cfg(test)]
mod tests;
