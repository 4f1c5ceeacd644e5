//! The box assembled from its configuration: ports opened, the two protocol cores spawned on their pinned
//! threads, and the process kept alive until it is told to stop.
//!
//! What runs today: a primary without a standby, on AF_PACKET ports (or in-memory ports, for trying a
//! config). Listeners with policy `replica`, a standby role, and the AF_XDP and DPDK backends are refused
//! with a clear error until the pieces that serve them are wired in.

use crate::apps::ingest::IngestApp;
use crate::config::{self, Config, PortBackend, PortConfig};
use crate::runtime::{spawn_core, CoreSpec, PollMode};
use dataplane::app::Application;
use dataplane::buf::Pool;
use dataplane::gate::AckPolicy;
use dataplane::port::afpacket::{AfPacketConfig, AfPacketPort};
use dataplane::port::Port;
use dataplane::proxy::{ClientCore, ListenerConfig, ProxyConfig, ServerCore};
use dataplane::time::{Clock, Duration, MonotonicClock};
use dataplane::wire::{ChecksumMode, EthernetAddress};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why a box did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Unsupported(String),
    #[error("ports.{port}: {message}")]
    Port { port: &'static str, message: String },
    #[error("{0}")]
    Core(#[from] dataplane::proxy::CoreError),
    #[error("{0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("listeners[{0}].application: {1}")]
    Application(usize, String),
}

/// The dataplane's view of a validated configuration.
pub fn proxy_config(cfg: &Config, client_mac: [u8; 6], server_mac: [u8; 6]) -> ProxyConfig {
    let mut client_tcp = dataplane::tcp::Config::default();
    let mut server_tcp = dataplane::tcp::Config::default();
    client_tcp.recv_buffer = cfg.limits.client_buffer as usize;
    client_tcp.send_buffer = cfg.limits.client_buffer as usize;
    server_tcp.recv_buffer = cfg.limits.server_buffer as usize;
    server_tcp.send_buffer = cfg.limits.server_buffer as usize;
    // Fresh ISN secrets per start (RFC 6528): read from the kernel's random source, hashed with the time.
    client_tcp.isn_secret = secret(1);
    server_tcp.isn_secret = secret(2);
    let listeners = cfg
        .listeners
        .iter()
        .map(|l| ListenerConfig {
            port: l.port,
            policy: l.ack_policy,
            backends: l.backends.iter().map(|b| (b.addr, b.weight)).collect(),
            balance: l.balance,
            health: Some(l.health),
        })
        .collect();
    let sn = cfg.addresses.server_subnet;
    ProxyConfig {
        vip: cfg.addresses.vip,
        client_mac: EthernetAddress(cfg.addresses.virtual_mac.unwrap_or(client_mac)),
        snat: cfg.addresses.snat,
        server_mac: EthernetAddress(server_mac),
        server_net: (std::net::Ipv4Addr::from(sn.addr()), sn.prefix()),
        gateway: cfg.addresses.server_gateway,
        listeners,
        client_tcp,
        server_tcp,
        max_flows: cfg.limits.max_flows,
        flow_idle_timeout: cfg.limits.idle_timeout + Duration::from_secs(60),
        snat_ports: cfg.addresses.snat_ports,
        probe_ports: cfg.addresses.probe_ports,
        snat_quarantine: cfg.limits.snat_quarantine,
        burst: 32,
        checksum: ChecksumMode::Verify,
        seed: u64::from_le_bytes(secret(3)[..8].try_into().unwrap_or([0; 8])),
    }
}

/// Lowers the MSS a half advertises to what its port carries (IPv4 and TCP headers without options take
/// 40 bytes). Peers size their segments by the MSS we advertise, not by our MTU: advertise more than the
/// port carries and every full-sized segment is dropped as oversize, so a box on a 1400-byte link (a VF,
/// a tunnel underlay) facing 1500-byte peers carried no data at all.
pub fn fit_mss(tcp: &mut dataplane::tcp::Config, mtu: usize) {
    let fits = u16::try_from(mtu.saturating_sub(40)).unwrap_or(u16::MAX).max(MIN_MSS);
    tcp.mss = tcp.mss.min(fits);
}

/// The smallest MSS a box advertises whatever its MTU claims (RFC 9293's default, 536).
const MIN_MSS: u16 = 536;

fn secret(salt: u8) -> [u8; 16] {
    let mut out = [salt; 16];
    if let Ok(bytes) = std::fs::read("/proc/sys/kernel/random/uuid") {
        for (i, b) in bytes.iter().enumerate() {
            if let Some(slot) = out.get_mut(i % 16) {
                *slot ^= b.rotate_left(i as u32 % 8);
            }
        }
    }
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    for (slot, b) in out.iter_mut().zip(t.to_le_bytes()) {
        *slot ^= b;
    }
    out
}

fn open_afpacket(port: &'static str, pc: &PortConfig, pool: &Pool) -> Result<AfPacketPort, RunError> {
    let Some(ifname) = pc.interface.clone() else {
        return Err(RunError::Port { port, message: "the afpacket backend needs an interface".into() });
    };
    let mut c = AfPacketConfig::new(&ifname);
    c.promisc = true;
    AfPacketPort::open(&c, pool.clone())
        .map_err(|e| RunError::Port { port, message: format!("{ifname}: {e}") })
}

fn applications(cfg: &Config) -> Result<Vec<Option<Box<dyn Application>>>, RunError> {
    // Applications keep their files beside the epoch file (the box's state directory).
    let dir = cfg
        .box_
        .epoch_file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/lib/holdfast"));
    let mut apps: Vec<Option<Box<dyn Application>>> = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        if l.ack_policy != AckPolicy::App {
            apps.push(None);
            continue;
        }
        let name = l.application.clone().unwrap_or_default();
        if name != "ingest" && name != "line-ingest" {
            return Err(RunError::Application(i, format!("unknown application {name:?} (known: ingest)")));
        }
        let path = dir.join(format!("ingest-{}.log", l.name));
        let app = IngestApp::open(&path, 1 << 20).map_err(|e| RunError::Application(i, e.to_string()))?;
        tracing::info!(listener = %l.name, file = %path.display(), "ingest application");
        apps.push(Some(Box::new(app)));
    }
    Ok(apps)
}

fn channel_config(cfg: &Config, box_id: u32, own: [u8; 6]) -> replication::channel::ChannelConfig {
    let mut c = replication::channel::ChannelConfig { box_id, ..Default::default() };
    c.link = replication::frame::LinkAddrs { src: own, dst: [0xff; 6] };
    if let Some(r) = &cfg.replication {
        c.heartbeat_interval = r.heartbeat_interval;
        c.batch_records = (r.batch_size as usize).max(1);
        c.flush_delay = r.flush_deadline;
        if let Some(peer) = r.peer_mac {
            c.link.dst = peer;
        }
    }
    c
}

/// Runs a standby: watches the primary over the replication link and the client LAN, takes over when
/// both fall silent, and then serves every flow it stored (both cores on this thread, for now).
fn run_standby(cfg: &Config, pool: &Pool, stop: &AtomicBool) -> Result<(), RunError> {
    let (Some(repl_pc), Some(rc)) = (&cfg.ports.replication, &cfg.replication) else {
        return Err(RunError::Unsupported(
            "box.role = standby needs [ports.replication] and [replication]".into(),
        ));
    };
    if repl_pc.backend != PortBackend::AfPacket {
        return Err(RunError::Unsupported(
            "ports.replication: a standby runs on afpacket ports for now".into(),
        ));
    }
    let client = open_afpacket("client", &cfg.ports.client, pool)?;
    let server = open_afpacket("server", &cfg.ports.server, pool)?;
    let repl = open_afpacket("replication", repl_pc, pool)?;
    let clock = MonotonicClock::new();
    let now = clock.now();
    let own_client_mac = client.info().mac.unwrap_or([2, 0, 0, 0, 2, 1]);
    let mut pc = proxy_config(cfg, own_client_mac, server.info().mac.unwrap_or([2, 0, 0, 0, 2, 2]));
    fit_mss(&mut pc.client_tcp, client.info().mtu);
    fit_mss(&mut pc.server_tcp, server.info().mtu);
    let pc = Arc::new(pc);
    let ch = channel_config(cfg, 2, repl.info().mac.unwrap_or([2, 0, 0, 0, 2, 3]));
    let det = replication::detector::DetectorConfig {
        heartbeat_interval: rc.heartbeat_interval,
        miss_threshold: rc.miss_threshold,
        ..Default::default()
    };
    let node = replication::node::StandbyNode::new(ch, det, Default::default(), 1, 1, repl, now)
        .map_err(|e| RunError::Unsupported(format!("replication: {e}")))?;
    let mut standby = crate::pair::Standby::new(node, client, server, own_client_mac);
    tracing::info!(box_name = %cfg.box_.name, "standby: watching the primary");
    while !stop.load(Ordering::Acquire) {
        let now = clock.now();
        let (work, next, takeover) = standby.step(now, &pc);
        if let Some(t) = takeover {
            tracing::warn!(flows = t.flows, failed = t.failed_flows, "took over from a dead primary");
        }
        if !work {
            let nap = next.saturating_duration_since(clock.now()).min(std::time::Duration::from_micros(200));
            if !nap.is_zero() {
                std::thread::sleep(nap);
            }
        }
    }
    Ok(())
}

/// Starts the box and runs until `stop` is set.
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    let pool = Pool::new(1 << 15, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM)
        .map_err(|e| RunError::Unsupported(format!("buffer pool: {e:?}")))?;
    if cfg.box_.role == config::Role::Standby {
        return run_standby(cfg, &pool, &stop);
    }
    let mode = match cfg.cores.poll {
        config::PollMode::Busy => PollMode::Busy,
        config::PollMode::Adaptive => PollMode::default(),
    };
    let pin = |i: usize| cfg.cores.pin.get(i).copied();
    let clock = MonotonicClock::new();
    let (to_server, from_client) = crossbeam_channel::bounded(1 << 16);
    let (to_client, from_server) = crossbeam_channel::bounded(1 << 16);
    let apps = applications(cfg)?;
    match (cfg.ports.client.backend, cfg.ports.server.backend) {
        (PortBackend::AfPacket, PortBackend::AfPacket) => {
            let client = open_afpacket("client", &cfg.ports.client, &pool)?;
            let server = open_afpacket("server", &cfg.ports.server, &pool)?;
            let mut pc = proxy_config(
                cfg,
                client.info().mac.unwrap_or([2, 0, 0, 0, 0, 1]),
                server.info().mac.unwrap_or([2, 0, 0, 0, 0, 2]),
            );
            fit_mss(&mut pc.client_tcp, client.info().mtu);
            fit_mss(&mut pc.server_tcp, server.info().mtu);
            let pc = Arc::new(pc);
            let mut a = ClientCore::new(pc.clone(), client, to_server, from_server, apps)?;
            if let (Some(repl_pc), Some(_)) = (&cfg.ports.replication, &cfg.replication) {
                // A standby is expected: every flow is replicated before its SYN-ACK.
                let repl = open_afpacket("replication", repl_pc, &pool)?;
                let ch = channel_config(cfg, 1, repl.info().mac.unwrap_or([2, 0, 0, 0, 1, 3]));
                let link = replication::node::PrimaryLink::new(ch, 1, repl, clock.now())
                    .map_err(|e| RunError::Unsupported(format!("replication: {e}")))?;
                a.set_replicator(Box::new(link));
            }
            let replicated = cfg.ports.replication.is_some() && cfg.replication.is_some();
            let mut b = ServerCore::new(pc, server, to_client, from_client, clock.now())?;
            b.set_report_progress(replicated);
            let ha = spawn_core(CoreSpec { name: "core-a".into(), pin: pin(0), mode }, clock, a)?;
            let hb = spawn_core(CoreSpec { name: "core-b".into(), pin: pin(1), mode }, clock, b)?;
            tracing::info!(box_name = %cfg.box_.name, "serving");
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = ha.stop();
            let _ = hb.stop();
            Ok(())
        }
        (c, s) => Err(RunError::Unsupported(format!(
            "ports: {}/{} — `holdfast run` opens afpacket ports for now (mem ports are for `holdfast demo`; \
             afxdp and dpdk are built as cargo features and not yet wired into the runtime)",
            c.as_str(),
            s.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::fit_mss;

    #[test]
    fn the_mss_fits_the_port() {
        let mut t = dataplane::tcp::Config::default();
        let default = t.mss;
        fit_mss(&mut t, 1500);
        assert_eq!(t.mss, default.min(1460));
        fit_mss(&mut t, 1400);
        assert_eq!(t.mss, 1360);
        fit_mss(&mut t, 9000);
        assert_eq!(t.mss, 1360, "never raised");
        fit_mss(&mut t, 100);
        assert_eq!(t.mss, 536);
    }
}
