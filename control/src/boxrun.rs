//! The box assembled from its configuration: ports opened, the two protocol cores spawned on their pinned
//! threads, the control socket served on threads of its own (`boxctl`), and the process kept alive until
//! it is told to stop.
//!
//! What runs today: a primary and a standby, on AF_PACKET ports, and on AF_XDP and DPDK ports when built
//! with the control crate's `afxdp` and `dpdk` features (crate::ports). A listener with policy `replica`
//! and no standby attached runs under `backend` and is reported degraded (`AckPolicy::effective`).

use crate::apps::ingest::IngestApp;
use crate::config::{self, Config};
use crate::runtime::{spawn_core, CoreSpec, PollMode};
use dataplane::app::Application;
use dataplane::buf::Pool;
use dataplane::gate::AckPolicy;
use dataplane::port::Port;
use dataplane::proxy::control::control_channel;
use dataplane::proxy::replicate::Replicator;
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
    #[error("control.socket: {0}")]
    Control(#[from] crate::ctl::ServerError),
    #[error("control.metrics_listen: {0}")]
    Metrics(std::io::Error),
    #[error("statistics: {0}")]
    Stats(#[from] crate::stats::StatsError),
    #[error("stepped down: {0}")]
    SteppedDown(#[from] crate::watch::StepDown),
    #[error("{0}")]
    Epoch(#[from] crate::epoch::EpochError),
}

/// The control socket (and the metrics listener, if configured) of a running box; stopped on drop.
#[derive(Debug)]
pub struct ControlThreads {
    pub server: crate::ctl::ControlServer,
    pub metrics: Option<crate::ctl::http::MetricsHttpServer>,
}

/// Starts serving the control socket from `cfg.control` with `handler`, on threads of its own.
pub fn start_control(
    cfg: &Config,
    handler: Arc<crate::boxctl::BoxControl>,
) -> Result<ControlThreads, RunError> {
    let mut sc = crate::ctl::ServerConfig::new(cfg.control.socket.clone());
    sc.group = cfg.control.group.clone();
    sc.mode = Some(cfg.control.mode);
    let server = crate::ctl::ControlServer::start(sc, handler.clone())?;
    let metrics = match cfg.control.metrics_listen {
        Some(addr) => {
            let h = handler.clone();
            let render: crate::ctl::http::MetricsFn = Arc::new(move || {
                h.metrics_text().unwrap_or_else(|e| format!("# holdfast: metrics unavailable: {e}\n"))
            });
            let m = crate::ctl::http::MetricsHttpServer::start(addr, render).map_err(RunError::Metrics)?;
            tracing::info!(addr = %m.local_addr(), "metrics listener");
            Some(m)
        }
        None => None,
    };
    tracing::info!(socket = %cfg.control.socket.display(), "control socket");
    Ok(ControlThreads { server, metrics })
}

fn box_control(
    cfg: &Config,
    clock: MonotonicClock,
    cores: [crossbeam_channel::Sender<dataplane::proxy::control::CoreRequest>; 2],
    standby: Option<Arc<crate::boxctl::StandbyView>>,
) -> Result<crate::boxctl::BoxControl, RunError> {
    let mut b = crate::boxctl::BoxControl::new(cfg, clock, cores, standby)?;
    if let Some(f) = crate::logging::level_control() {
        b = b.with_log_control(f);
    }
    Ok(b)
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
    let (Some(repl_pc), Some(_)) = (&cfg.ports.replication, &cfg.replication) else {
        return Err(RunError::Unsupported(
            "box.role = standby needs [ports.replication] and [replication]".into(),
        ));
    };
    let mut ports = crate::ports::Opener::new(&[&cfg.ports.client, &cfg.ports.server, repl_pc]);
    let client = ports.open("client", &cfg.ports.client, pool)?;
    let server = ports.open("server", &cfg.ports.server, pool)?;
    let repl = ports.open("replication", repl_pc, pool)?;
    run_standby_on(cfg, MonotonicClock::new(), client, server, repl, stop)
}

/// Runs a standby on open ports until `stop` is set, on the calling thread; its control socket (and
/// metrics listener) on threads of their own. Generic over the port backend, like [`run_primary`].
pub fn run_standby_on<P: Port + 'static>(
    cfg: &Config,
    clock: MonotonicClock,
    client: P,
    server: P,
    repl: P,
    stop: &AtomicBool,
) -> Result<(), RunError> {
    let Some(rc) = &cfg.replication else {
        return Err(RunError::Unsupported("box.role = standby needs [replication]".into()));
    };
    let now = clock.now();
    let own_client_mac = client.info().mac.unwrap_or([2, 0, 0, 0, 2, 1]);
    let mut pc = proxy_config(cfg, own_client_mac, server.info().mac.unwrap_or([2, 0, 0, 0, 2, 2]));
    fit_mss(&mut pc.client_tcp, client.info().mtu);
    fit_mss(&mut pc.server_tcp, server.info().mtu);
    let pc = Arc::new(pc);
    let ch = channel_config(cfg, 2, repl.info().mac.unwrap_or([2, 0, 0, 0, 2, 3]));
    // Both paths wait as long as the configured heartbeat silence: a LAN timeout fixed at the 1 ms defaults
    // made a standby on a loaded machine take over from a live primary whose ARP answer came a few ms late.
    let silence = rc.heartbeat_interval.saturating_mul(rc.miss_threshold);
    let det = replication::detector::DetectorConfig {
        heartbeat_interval: rc.heartbeat_interval,
        miss_threshold: rc.miss_threshold,
        lan_timeout: silence,
        isolation_timeout: silence
            .saturating_sub(rc.heartbeat_interval.saturating_mul(2))
            .max(Duration::from_micros(1)),
    };
    let epoch_file = cfg.box_.epoch_file.as_deref();
    let mut epoch = crate::epoch::load(epoch_file)?;
    // A box that served or followed in a later epoch starts there: a primary still in an older one is
    // stale, and this box must not follow it.
    let node = replication::node::StandbyNode::new(ch, det, Default::default(), epoch, 1, repl, now)
        .map_err(|e| RunError::Unsupported(format!("replication: {e}")))?;
    let mut standby = crate::pair::Standby::new(node, client, server, own_client_mac);
    let (tx_a, port_a) = control_channel();
    let (tx_b, port_b) = control_channel();
    let mut ports = Some((port_a, port_b));
    let view = Arc::new(crate::boxctl::StandbyView::default());
    let ctl = Arc::new(box_control(cfg, clock, [tx_a, tx_b], Some(view.clone()))?.with_epoch(epoch));
    let _control = start_control(cfg, ctl.clone())?;
    standby.set_probe_interval(rc.heartbeat_interval);
    standby.prepare(clock.now(), &pc);
    tracing::info!(box_name = %cfg.box_.name, epoch, "standby: watching the primary");
    let mut published = clock.now();
    while !stop.load(Ordering::Acquire) {
        let now = clock.now();
        let (work, next, takeover) = standby.step(now, &pc);
        if let Some(e) = standby.node().map(|n| n.epoch()).filter(|e| *e > epoch) {
            // Joined a primary serving in a later epoch (this box restarted after a takeover).
            tracing::info!(epoch = e, "standby: following the primary in its epoch");
            epoch = e;
            persist_epoch(epoch_file, epoch);
        }
        if let Some(t) = takeover {
            let took = clock.now().saturating_duration_since(t.at);
            epoch = t.epoch;
            persist_epoch(epoch_file, epoch);
            tracing::warn!(
                flows = t.flows,
                failed = t.failed_flows,
                install_us = took.as_micros(),
                epoch = t.epoch,
                "{}",
                if t.planned { "took over: planned switchover" } else { "took over from a dead primary" }
            );
            ctl.record_takeover(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            match (&mut standby, ports.take()) {
                (crate::pair::Standby::Active(cores), Some((a, b))) => {
                    cores.a.attach_control(a);
                    cores.b.attach_control(b);
                }
                (crate::pair::Standby::Failed(e), _) => {
                    let e = e.clone();
                    view.publish_now(|i| i.failed = Some(e));
                }
                _ => {}
            }
            view.publish_now(|i| {
                i.took_over = Some(crate::boxctl::TakeoverInfo {
                    epoch: t.epoch,
                    flows: t.flows as u64,
                    failed_flows: t.failed_flows as u64,
                    duration_ns: u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
                })
            });
        }
        if now >= published + Duration::from_millis(100) {
            published = now;
            if let crate::pair::Standby::Watching { node, .. } = &standby {
                let (heard, flows, errors) = (node.has_heard_primary(), node.flows(), node.apply_errors());
                view.publish(|i| {
                    i.epoch = epoch;
                    i.heard_primary = heard;
                    i.stored_flows = flows as u64;
                    i.apply_errors = errors;
                });
            }
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

/// Writes a new epoch; a box that cannot is logged loudly but keeps serving (it already moved on; the
/// file only guards its next start).
fn persist_epoch(path: Option<&Path>, epoch: u32) {
    if let Err(e) = crate::epoch::store(path, epoch) {
        tracing::error!("cannot persist epoch {epoch}: {e}");
    }
}

/// Starts the box and runs until `stop` is set.
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    let pool = Pool::new(1 << 15, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM)
        .map_err(|e| RunError::Unsupported(format!("buffer pool: {e:?}")))?;
    if cfg.box_.role == config::Role::Standby {
        return run_standby(cfg, &pool, &stop);
    }
    match (cfg.ports.client.backend, cfg.ports.server.backend) {
        (c, s) if crate::ports::runnable(c) && crate::ports::runnable(s) => {
            let mut all = vec![&cfg.ports.client, &cfg.ports.server];
            all.extend(cfg.ports.replication.as_ref());
            let mut ports = crate::ports::Opener::new(&all);
            let client = ports.open("client", &cfg.ports.client, &pool)?;
            let server = ports.open("server", &cfg.ports.server, &pool)?;
            let clock = MonotonicClock::new();
            let mut replicator: Option<Box<dyn Replicator>> = None;
            let mut superseded = None;
            let mut grace = None;
            let mut handover = None;
            if let (Some(repl_pc), Some(rc)) = (&cfg.ports.replication, &cfg.replication) {
                // A standby is expected: every flow is replicated before its SYN-ACK.
                let repl = ports.open("replication", repl_pc, &pool)?;
                let ch = channel_config(cfg, 1, repl.info().mac.unwrap_or([2, 0, 0, 0, 1, 3]));
                let epoch = crate::epoch::load(cfg.box_.epoch_file.as_deref())?;
                let link = replication::node::PrimaryLink::new(ch, epoch, repl, clock.now())
                    .map_err(|e| RunError::Unsupported(format!("replication: {e}")))?;
                superseded = Some(link.superseded());
                handover = Some(crate::switchover::Handover {
                    flag: link.hand_over_flag(),
                    superseded: link.superseded(),
                    epoch,
                });
                // Step down on a dead data link within the standby's takeover delay (heartbeat silence).
                grace = Some(rc.heartbeat_interval.saturating_mul(rc.miss_threshold));
                replicator = Some(Box::new(link));
            }
            let mut watchdog = crate::watch::Watchdog::new(superseded, grace.unwrap_or_default());
            // Only a box with a standby steps down on a dead link: a lone primary rides out the outage.
            for (name, port) in [("client", &cfg.ports.client), ("server", &cfg.ports.server)] {
                if let (Some(ifname), Some(_)) = (&port.interface, grace) {
                    watchdog.watch_carrier(name, ifname);
                }
            }
            run_primary_watched(cfg, clock, client, server, replicator, handover, watchdog, &stop)
        }
        (c, s) => Err(RunError::Unsupported(format!(
            "ports: {}/{} — this build of `holdfast run` opens afpacket ports{}{} (mem ports are for \
             `holdfast demo`; afxdp and dpdk are cargo features of the control crate)",
            c.as_str(),
            s.as_str(),
            if cfg!(feature = "afxdp") { ", afxdp" } else { "" },
            if cfg!(feature = "dpdk") { ", dpdk" } else { "" },
        ))),
    }
}

/// Runs a primary on open ports until `stop` is set: its two cores on pinned threads, the control socket
/// (and metrics listener) on threads of their own. Generic over the port backend, so a test can run the
/// very same box on in-memory ports.
pub fn run_primary<P: Port + Send + 'static>(
    cfg: &Config,
    clock: MonotonicClock,
    client: P,
    server: P,
    replicator: Option<Box<dyn Replicator>>,
    stop: &AtomicBool,
) -> Result<(), RunError> {
    let watchdog = crate::watch::Watchdog::new(None, std::time::Duration::ZERO);
    run_primary_watched(cfg, clock, client, server, replicator, None, watchdog, stop)
}

/// [`run_primary`], stepping down when `watchdog` says so: a later epoch took over, or a data link died
/// while a standby stands ready to take over. With `handover` (the replicator's handles, see
/// [`crate::switchover`]) the control socket's `switchover` moves service to the standby, and the run
/// then ends with `Ok` ("switched over").
// The box's parts, each passed once: a struct for them would only move the list elsewhere.
#[allow(clippy::too_many_arguments)]
pub fn run_primary_watched<P: Port + Send + 'static>(
    cfg: &Config,
    clock: MonotonicClock,
    client: P,
    server: P,
    replicator: Option<Box<dyn Replicator>>,
    handover: Option<crate::switchover::Handover>,
    mut watchdog: crate::watch::Watchdog,
    stop: &AtomicBool,
) -> Result<(), RunError> {
    let mode = match cfg.cores.poll {
        config::PollMode::Busy => PollMode::Busy,
        config::PollMode::Adaptive => PollMode::default(),
    };
    let pin = |i: usize| cfg.cores.pin.get(i).copied();
    let (to_server, from_client) = crossbeam_channel::bounded(1 << 16);
    let (to_client, from_server) = crossbeam_channel::bounded(1 << 16);
    let apps = applications(cfg)?;
    let mut pc = proxy_config(
        cfg,
        client.info().mac.unwrap_or([2, 0, 0, 0, 0, 1]),
        server.info().mac.unwrap_or([2, 0, 0, 0, 0, 2]),
    );
    fit_mss(&mut pc.client_tcp, client.info().mtu);
    fit_mss(&mut pc.server_tcp, server.info().mtu);
    let pc = Arc::new(pc);
    let mut a = ClientCore::new(pc.clone(), client, to_server, from_server, apps)?;
    // Core B reports its halves' progress to core A only when there is a standby to pass it on to.
    let replicated = replicator.is_some();
    if let Some(r) = replicator {
        a.set_replicator(r);
    }
    let mut b = ServerCore::new(pc, server, to_client, from_client, clock.now())?;
    b.set_report_progress(replicated);
    let (tx_a, port_a) = control_channel();
    let (tx_b, port_b) = control_channel();
    a.attach_control(port_a);
    b.attach_control(port_b);
    let switchover =
        handover.map(|h| Arc::new(crate::switchover::Switchover::new([tx_a.clone(), tx_b.clone()], h)));
    let mut bc = box_control(cfg, clock, [tx_a, tx_b], None)?;
    if let Some(s) = &switchover {
        bc = bc.with_epoch(s.epoch());
    }
    if let Some(s) = &switchover {
        bc = bc.with_switchover(s.hook());
    }
    let ctl = Arc::new(bc);
    let control = start_control(cfg, ctl.clone())?;
    let ha = spawn_core(CoreSpec { name: "core-a".into(), pin: pin(0), mode }, clock, a)?;
    let hb = spawn_core(CoreSpec { name: "core-b".into(), pin: pin(1), mode }, clock, b)?;
    tracing::info!(box_name = %cfg.box_.name, "serving");
    let mut refreshed = std::time::Instant::now();
    let mut stepped_down = None;
    while !stop.load(Ordering::Acquire) {
        // Often enough that a stale primary waking from a stop goes quiet within a few ms.
        std::thread::sleep(std::time::Duration::from_millis(2));
        stepped_down = watchdog.check(std::time::Instant::now());
        if let (Some(crate::watch::StepDown::Superseded(epoch)), Some(s)) = (&stepped_down, &switchover) {
            if s.handing_over() {
                // The standby took over because this box asked it to: wait (briefly) for the
                // switchover request to see it and answer before the control socket closes.
                let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
                while s.switched_over().is_none() && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                tracing::warn!(box_name = %cfg.box_.name, epoch, "switched over: the standby serves now");
                stepped_down = None;
                break;
            }
        }
        if let Some(why) = &stepped_down {
            tracing::error!(box_name = %cfg.box_.name, "stepping down: {why}");
            break;
        }
        if refreshed.elapsed() >= std::time::Duration::from_secs(1) {
            refreshed = std::time::Instant::now();
            ctl.refresh();
        }
    }
    let _ = ha.stop();
    let _ = hb.stop();
    control.server.shutdown();
    drop(control.metrics);
    stepped_down.map_or(Ok(()), |why| Err(why.into()))
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
