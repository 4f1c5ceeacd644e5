//! The config file as written: serde structures that mirror the TOML one to one.
//!
//! Addresses, names of choices and numbers stay as text or `i64` here, so that [`super::validate`] can
//! check them and name the field and the value in its message, which serde's own errors cannot.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(rename = "box")]
    pub box_: RawBox,
    pub ports: RawPorts,
    pub addresses: RawAddresses,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub cores: RawCores,
    pub replication: Option<RawReplication>,
    #[serde(default)]
    pub control: RawControl,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBox {
    pub name: String,
    #[serde(default = "d_role")]
    pub role: String,
    pub epoch_file: Option<String>,
}

fn d_role() -> String {
    "primary".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPorts {
    pub client: RawPort,
    pub server: RawPort,
    pub replication: Option<RawPort>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub backend: String,
    pub interface: Option<String>,
    #[serde(default = "d_one")]
    pub queues: i64,
    pub ring_size: Option<i64>,
    pub eal_args: Option<Vec<String>>,
    pub xdp_mode: Option<String>,
    pub zero_copy: Option<bool>,
}

fn d_one() -> i64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAddresses {
    pub vip: String,
    pub snat: String,
    pub client_subnet: String,
    pub server_subnet: String,
    pub client_gateway: Option<String>,
    pub server_gateway: Option<String>,
    pub virtual_mac: Option<String>,
    #[serde(default = "d_snat_min")]
    pub snat_port_min: i64,
    #[serde(default = "d_snat_max")]
    pub snat_port_max: i64,
    #[serde(default = "d_probe_min")]
    pub probe_port_min: i64,
    #[serde(default = "d_probe_max")]
    pub probe_port_max: i64,
}

fn d_snat_min() -> i64 {
    20_000
}
fn d_snat_max() -> i64 {
    59_999
}
fn d_probe_min() -> i64 {
    60_000
}
fn d_probe_max() -> i64 {
    60_999
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub port: i64,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    #[serde(default = "d_balance")]
    pub balance: String,
    #[serde(default = "d_policy")]
    pub ack_policy: String,
    pub application: Option<String>,
    #[serde(default = "d_no_standby")]
    pub no_standby: String,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default = "d_table")]
    pub maglev_table_size: i64,
}

fn d_balance() -> String {
    "maglev".into()
}
fn d_policy() -> String {
    "backend".into()
}
fn d_no_standby() -> String {
    "degraded".into()
}
fn d_table() -> i64 {
    i64::from(dataplane::balance::DEFAULT_TABLE_SIZE)
}

/// A backend: `"ip:port"` (weight 1) or `{ addr = "ip:port", weight = N }`.
#[derive(Debug)]
pub struct RawBackend {
    pub addr: String,
    pub weight: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendTable {
    addr: String,
    #[serde(default = "d_one")]
    weight: i64,
}

impl<'de> Deserialize<'de> for RawBackend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis;
        impl<'de> Visitor<'de> for Vis {
            type Value = RawBackend;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a backend: \"ip:port\" or { addr = \"ip:port\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBackend, E> {
                Ok(RawBackend { addr: v.to_owned(), weight: 1 })
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<RawBackend, A::Error> {
                let t = RawBackendTable::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(RawBackend { addr: t.addr, weight: t.weight })
            }
        }
        d.deserialize_any(Vis)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default = "d_interval")]
    pub interval_ms: i64,
    #[serde(default = "d_timeout")]
    pub timeout_ms: i64,
    #[serde(default = "d_rise")]
    pub rise: i64,
    #[serde(default = "d_fall")]
    pub fall: i64,
}

fn d_interval() -> i64 {
    2_000
}
fn d_timeout() -> i64 {
    1_000
}
fn d_rise() -> i64 {
    2
}
fn d_fall() -> i64 {
    3
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth { interval_ms: d_interval(), timeout_ms: d_timeout(), rise: d_rise(), fall: d_fall() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "d_max_flows")]
    pub max_flows: i64,
    #[serde(default = "d_buffer")]
    pub client_buffer: i64,
    #[serde(default = "d_buffer")]
    pub server_buffer: i64,
    #[serde(default = "d_idle")]
    pub idle_timeout_s: i64,
    #[serde(default = "d_backlog")]
    pub syn_backlog: i64,
    #[serde(default = "d_quarantine")]
    pub snat_quarantine_s: i64,
}

fn d_max_flows() -> i64 {
    100_000
}
fn d_buffer() -> i64 {
    256 * 1024
}
fn d_idle() -> i64 {
    300
}
fn d_backlog() -> i64 {
    4096
}
fn d_quarantine() -> i64 {
    60
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_flows: d_max_flows(),
            client_buffer: d_buffer(),
            server_buffer: d_buffer(),
            idle_timeout_s: d_idle(),
            syn_backlog: d_backlog(),
            snat_quarantine_s: d_quarantine(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCores {
    #[serde(default = "d_poll")]
    pub poll: String,
    #[serde(default)]
    pub pin: Vec<i64>,
}

fn d_poll() -> String {
    "adaptive".into()
}

impl Default for RawCores {
    fn default() -> Self {
        RawCores { poll: d_poll(), pin: Vec::new() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplication {
    #[serde(default = "d_heartbeat")]
    pub heartbeat_interval_us: i64,
    #[serde(default = "d_miss")]
    pub miss_threshold: i64,
    #[serde(default = "d_batch")]
    pub batch_size: i64,
    #[serde(default = "d_flush")]
    pub flush_deadline_us: i64,
    pub peer_mac: Option<String>,
}

fn d_heartbeat() -> i64 {
    1_000
}
fn d_miss() -> i64 {
    5
}
fn d_batch() -> i64 {
    32
}
fn d_flush() -> i64 {
    100
}

impl Default for RawReplication {
    fn default() -> Self {
        RawReplication {
            heartbeat_interval_us: d_heartbeat(),
            miss_threshold: d_miss(),
            batch_size: d_batch(),
            flush_deadline_us: d_flush(),
            peer_mac: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    #[serde(default = "d_socket")]
    pub socket: String,
    #[serde(default = "d_mode")]
    pub mode: String,
    pub group: Option<String>,
    pub metrics_listen: Option<String>,
}

fn d_socket() -> String {
    "/run/holdfast/control.sock".into()
}
fn d_mode() -> String {
    "0660".into()
}

impl Default for RawControl {
    fn default() -> Self {
        RawControl { socket: d_socket(), mode: d_mode(), group: None, metrics_listen: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default = "d_level")]
    pub level: String,
    #[serde(default = "d_format")]
    pub format: String,
}

fn d_level() -> String {
    "info".into()
}
fn d_format() -> String {
    "text".into()
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { level: d_level(), format: d_format() }
    }
}
