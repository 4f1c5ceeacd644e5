//! The deterministic simulator: a whole topology in one thread on a virtual clock.
//!
//! Client hosts and a backend run smoltcp (an independent TCP implementation) on in-memory switches with
//! seeded fault injection; the proxy's two protocol cores are the same [`ClientCore`]/[`ServerCore`] that
//! run pinned on a NIC, stepped here one after the other. Every run replays exactly from its seed.
//!
//! The simulator checks the invariants of DESIGN.md as it goes: invariant 1 (a byte the proxy
//! acknowledged to a client is held by the backend) on every step, and invariant 3's "exactly once, in
//! order, no reset" at the end, byte for byte, through checksummed streams.

pub mod scale;
pub mod smol;
pub mod stream;

use crate::pair;
use dataplane::buf::Pool;
use dataplane::gate::AckPolicy;
use dataplane::port::mem::{self, FaultConfig, MemConfig, MemPort};
use dataplane::proxy::{ListenerConfig, ProxyConfig};
use dataplane::time::{Clock, Duration, Instant, VirtualClock};
use dataplane::wire::{ChecksumMode, EthernetAddress};
use serde::Serialize;
use smol::{BackendHost, ClientHost, Outcome, SmolHost};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub policy: AckPolicy,
    pub client_hosts: usize,
    pub conns_per_host: usize,
    /// Body bytes each connection streams to the backend (and gets echoed back).
    pub bytes_per_conn: u64,
    /// Faults on every link direction.
    pub faults: FaultConfig,
    /// Give up after this much virtual time.
    pub time_limit: Duration,
    pub max_flows: u32,
    /// Socket buffers of the smoltcp peers.
    pub peer_buffer: usize,
    /// With a standby attached: the primary dies at this moment (virtual time) and the standby takes over.
    pub crash_primary_at: Option<Duration>,
    /// A planned switchover at this moment instead of a crash: the primary stops taking frames in, syncs
    /// the standby, goes silent, and the standby takes over without waiting for detection.
    pub switchover_at: Option<Duration>,
    /// After the takeover, the box that died (or handed over) comes back this much later as the new
    /// standby, and receives a bulk copy of every flow while traffic flows.
    pub rejoin_after: Option<Duration>,
    /// After a rejoin, the new primary dies at this moment, and the rejoined box takes over.
    pub second_crash_at: Option<Duration>,
    /// With a standby attached: the standby dies at this moment; the primary must carry on, degraded.
    pub crash_standby_at: Option<Duration>,
    /// With a standby attached: the replication link is down from the first moment for the second's
    /// length. Neither box dies, so the standby must not take over (invariant 4).
    pub replication_outage: Option<(Duration, Duration)>,
}

impl Scenario {
    /// The demo's default: a few clients streaming a few MB each over lossy, reordering links.
    pub fn demo(seed: u64, policy: AckPolicy) -> Scenario {
        Scenario {
            seed,
            policy,
            client_hosts: 4,
            conns_per_host: 4,
            bytes_per_conn: 2 << 20,
            faults: FaultConfig {
                loss: 0.01,
                duplicate: 0.002,
                reorder: 0.005,
                reorder_delay: Duration::from_micros(300),
                delay: Duration::from_micros(100),
                jitter: Duration::from_micros(20),
                rate_bps: Some(1_000_000_000),
                ..FaultConfig::NONE
            },
            time_limit: Duration::from_secs(120),
            max_flows: 4096,
            peer_buffer: 256 * 1024,
            crash_primary_at: None,
            switchover_at: None,
            rejoin_after: None,
            second_crash_at: None,
            crash_standby_at: None,
            replication_outage: None,
        }
    }

    fn with_standby(&self) -> bool {
        self.crash_primary_at.is_some()
            || self.switchover_at.is_some()
            || self.crash_standby_at.is_some()
            || self.replication_outage.is_some()
    }
}

/// What happened, in the shape `holdfast demo --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdict: &'static str,
    pub policy: String,
    pub seed: u64,
    pub connections: usize,
    pub connections_complete: usize,
    pub connections_reset: usize,
    /// Body bytes the clients wrote.
    pub bytes_sent: u64,
    /// Bytes the proxy acknowledged to the clients.
    pub bytes_acked: u64,
    /// Body bytes that reached the backend intact, in order, once.
    pub bytes_delivered: u64,
    /// Bytes the proxy acknowledged to a client that never reached the backend.
    pub bytes_lost: u64,
    /// Bytes that arrived twice, out of place or corrupted (at the backend or in the echo).
    pub bytes_duplicated: u64,
    pub bytes_echoed: u64,
    /// Steps on which a client had an acknowledgment for a byte the backend did not hold (invariant 1).
    pub invariant1_violations: u64,
    /// Longest time a client's echo made no progress, in virtual milliseconds.
    pub stall_ms: u64,
    pub failover: bool,
    /// When the primary died, in virtual milliseconds (with a standby attached).
    pub crash_at_ms: Option<u64>,
    /// From the primary's death to the standby serving every stored flow.
    pub takeover_ms: Option<f64>,
    pub flows_taken_over: usize,
    /// With a rejoin and a second crash: from the new primary's death to the rejoined box serving, and
    /// how many flows the rejoined box took over (all of them came to it in the bulk copy or after).
    pub second_takeover_ms: Option<f64>,
    pub second_flows_taken_over: usize,
    /// Bytes the standby received on the replication link while it watched (frames, retransmissions
    /// included); 0 once it took over.
    pub replication_bytes: u64,
    /// When the standby died, in virtual milliseconds.
    pub standby_crash_at_ms: Option<u64>,
    /// The primary reported its standby gone (degraded) after the standby died.
    pub degraded: bool,
    /// Steps on which the primary was alive and the standby had taken over: two boxes serving the VIP.
    pub invariant4_violations: u64,
    pub virtual_ms: u64,
    pub wall_ms: u64,
    pub frames_lost_by_links: u64,
    pub notes: Vec<String>,
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const SERVICE_PORT: u16 = 5001;

fn mac(box_id: u8, port: u8) -> [u8; 6] {
    [0x02, 0x48, 0x46, 0x00, box_id, port]
}

/// The proxy configuration the simulator runs.
pub fn proxy_config(policy: AckPolicy, max_flows: u32, seed: u64) -> ProxyConfig {
    let mut client_tcp = dataplane::tcp::Config::default();
    let mut server_tcp = dataplane::tcp::Config::default();
    client_tcp.isn_secret = [7; 16];
    server_tcp.isn_secret = [9; 16];
    client_tcp.time_wait = Duration::from_secs(1);
    // Without progress records the standby's timestamp clock may be as old as the handshake: jump far
    // enough ahead that no peer's PAWS check ever sees it go back.
    client_tcp.ts_restore_jump = Duration::from_secs(600);
    server_tcp.ts_restore_jump = Duration::from_secs(600);
    server_tcp.time_wait = Duration::from_secs(1);
    ProxyConfig {
        vip: VIP,
        client_mac: EthernetAddress(mac(1, 1)),
        snat: SNAT,
        server_mac: EthernetAddress(mac(1, 2)),
        server_net: (Ipv4Addr::new(198, 18, 2, 0), 24),
        gateway: None,
        listeners: vec![ListenerConfig {
            port: SERVICE_PORT,
            policy,
            backends: vec![(SocketAddrV4::new(BACKEND, SERVICE_PORT), 1)],
            balance: dataplane::balance::Algorithm::Maglev,
            health: None,
        }],
        client_tcp,
        server_tcp,
        max_flows,
        flow_idle_timeout: Duration::from_secs(300),
        snat_ports: (10_000, 60_999),
        probe_ports: (61_000, 61_999),
        snat_quarantine: Duration::from_secs(2),
        burst: 32,
        checksum: ChecksumMode::Verify,
        seed,
    }
}

/// Errors setting a simulation up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("buffer pool: {0:?}")]
    Pool(dataplane::buf::PoolError),
    #[error("proxy: {0}")]
    Core(#[from] dataplane::proxy::CoreError),
    #[error("replication: {0}")]
    Replication(replication::channel::ConfigError),
    #[error("standby: {0}")]
    Standby(String),
}

/// Runs a scenario to the end; `progress` is called now and then with a line to show.
pub fn run(sc: &Scenario, mut progress: impl FnMut(&str)) -> Result<Report, SimError> {
    let wall = std::time::Instant::now();
    let clock = VirtualClock::new(Instant::ZERO);
    let pool = Pool::new(1 << 16, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).map_err(SimError::Pool)?;

    let lan = |name: &str, seed: u64| MemConfig { queue_len: 8192, ..MemConfig::new(name, seed) };
    // Switch port 0 is the primary's, port 1 the standby's; hosts follow.
    // A box that rejoins gets a port of its own on each segment (the last one).
    let spare = usize::from(sc.rejoin_after.is_some());
    let (mut client_lan, client_ctl) =
        mem::switch(&pool, &lan("client-lan", sc.seed), sc.client_hosts + 2 + spare);
    let (mut server_lan, server_ctl) = mem::switch(&pool, &lan("server-lan", sc.seed ^ 0xabcd), 3 + spare);
    for p in client_lan.iter_mut().chain(server_lan.iter_mut()) {
        p.set_faults(sc.faults);
    }
    let proxy_client_port = client_lan.remove(0);
    let standby_client_port = client_lan.remove(0);
    let proxy_server_port = server_lan.remove(0);
    let standby_server_port = server_lan.remove(0);
    let backend_port = server_lan.remove(0);
    let mut rejoin_ports = match (sc.rejoin_after, client_lan.pop(), server_lan.pop()) {
        (Some(_), Some(c), Some(s)) => Some((c, s)),
        (Some(_), _, _) => return Err(SimError::Standby("no port for the rejoining box".into())),
        (None, c, _) => {
            // Without a rejoin there is no spare: the popped port is a client host's.
            client_lan.extend(c);
            None
        }
    };

    // Both boxes share the configuration, virtual MACs included: a takeover needs no ARP change at the
    // peers, only a switch that relearns where the MACs are (the standby's gratuitous ARP does that).
    let cfg = Arc::new(proxy_config(sc.policy, sc.max_flows, sc.seed));
    let mut primary = Some(pair::Cores::new(&cfg, proxy_client_port, proxy_server_port, clock.now())?);
    // With a rejoin the replication segment is a three-port switch: the rejoining box plugs into the third.
    let repl_cfg = MemConfig::new("replication", sc.seed ^ 0x5151);
    let (mut repl_a, mut repl_b, mut repl_spare, repl_ctl) = if sc.rejoin_after.is_some() {
        let (mut ports, ctl) = mem::switch(&pool, &repl_cfg, 3);
        let spare = ports.pop();
        let (Some(b), Some(a)) = (ports.pop(), ports.pop()) else {
            return Err(SimError::Standby("replication switch without ports".into()));
        };
        (a, b, spare, ctl)
    } else {
        let (a, b, ctl) = mem::link(&pool, &repl_cfg);
        (a, b, None, ctl)
    };
    let mut standby = None;
    if sc.with_standby() {
        repl_a.set_faults(sc.faults);
        repl_b.set_faults(sc.faults);
        let link = replication::frame::LinkAddrs { src: mac(1, 3), dst: mac(2, 3) };
        let ch_a = replication::channel::ChannelConfig { box_id: 1, link, ..Default::default() };
        let back = replication::frame::LinkAddrs { src: mac(2, 3), dst: mac(1, 3) };
        let ch_b = replication::channel::ChannelConfig { box_id: 2, link: back, ..Default::default() };
        let now = clock.now();
        let link_a =
            replication::node::PrimaryLink::new(ch_a, 1, repl_a, now).map_err(SimError::Replication)?;
        if let Some(p) = primary.as_mut() {
            p.a.set_replicator(Box::new(link_a));
            p.b.set_report_progress(true);
        }
        let node = replication::node::StandbyNode::new(
            ch_b,
            replication::detector::DetectorConfig::default(),
            replication::store::StoreConfig::default(),
            1,
            1,
            repl_b,
            now,
        )
        .map_err(|e| SimError::Standby(e.to_string()))?;
        standby = Some(pair::Standby::new(node, standby_client_port, standby_server_port, mac(2, 1)));
    }
    let mut crashed_at: Option<Instant> = None;
    let mut standby_crashed_at: Option<Instant> = None;
    let mut degraded = false;
    let mut invariant4 = 0u64;
    let mut outage_state = 0u8; // 0 before, 1 during, 2 after
    let mut takeover: Option<pair::Takeover> = None;
    let mut switching_since: Option<Instant> = None;
    let mut rejoined: Option<pair::Standby<MemPort>> = None;
    let mut second_crashed_at: Option<Instant> = None;
    let mut second_takeover: Option<pair::Takeover> = None;

    let total_conns = sc.client_hosts * sc.conns_per_host;
    let mut backend: BackendHost<MemPort> = BackendHost::new(
        SmolHost::new(backend_port, mac(9, 1), BACKEND, 24, sc.seed ^ 1, clock.now()),
        SERVICE_PORT,
        total_conns + 8,
        sc.peer_buffer,
    );
    let mut clients: Vec<ClientHost<MemPort>> = Vec::new();
    for (i, port) in client_lan.into_iter().enumerate() {
        let ip = Ipv4Addr::new(198, 18, 1, 10 + i as u8);
        let mut host = ClientHost::new(SmolHost::new(
            port,
            mac(20 + i as u8, 1),
            ip,
            24,
            sc.seed ^ (100 + i as u64),
            clock.now(),
        ));
        for j in 0..sc.conns_per_host {
            let id = (i * sc.conns_per_host + j) as u32;
            host.connect(
                (VIP, SERVICE_PORT),
                40_000 + j as u16,
                id,
                sc.bytes_per_conn,
                sc.peer_buffer,
                clock.now(),
            );
        }
        clients.push(host);
    }

    let mut violations = 0u64;
    let mut iterations = 0u64;
    let mut standby_copy: HashMap<(usize, u16), (u64, u64)> = HashMap::new();
    let mut last_progress = std::time::Instant::now();
    let deadline = Instant::ZERO + sc.time_limit;
    loop {
        let now = clock.now();
        let mut work = false;
        let mut next = Instant::FAR_FUTURE;
        // With a standby, clients start once it answers heartbeats (before that, flows are served
        // unprotected, as a box without a standby does, and a crash may lose them: not what is tested here).
        let clients_start = if standby.is_some() { Instant::from_millis(5) } else { Instant::ZERO };
        for c in clients.iter_mut().filter(|_| now >= clients_start) {
            let (w, t) = c.host.poll(now);
            work |= w;
            work |= c.pump(now);
            next = next.min(t);
        }
        if now < clients_start {
            next = next.min(clients_start);
        }
        let (w, t) = backend.host.poll(now);
        work |= w;
        work |= backend.pump();
        next = next.min(t);
        let busy_debug = std::env::var_os("HOLDFAST_SIM_BUSY").is_some() && iterations % 100_000 == 0;
        if busy_debug {
            eprintln!("iter {iterations} t={now} work so far={work}");
        }
        if let Some(p) = primary.as_mut() {
            let (w, t) = p.step(now);
            work |= w;
            next = next.min(t);
        }
        // Policy replica: what the standby holds of each client's stream, as of just before it takes over
        // (it hands those bytes to its restored flows, so they stay covered after the takeover).
        if sc.policy == AckPolicy::Replica && (iterations % 16 == 15 || crashed_at.is_some()) {
            for node in [standby.as_ref(), rejoined.as_ref()].into_iter().flatten().filter_map(|s| s.node()) {
                note_standby_copy(&mut standby_copy, node, &clients);
            }
        }
        if let Some(sb) = standby.as_mut() {
            let (w, t, tk) = sb.step(now, &cfg);
            if busy_debug {
                eprintln!("  standby work={w} next={t}");
            }
            work |= w;
            next = next.min(t);
            if tk.is_some() {
                takeover = tk;
                progress(&format!(
                    "  t={:>7.3}s virtual  the standby takes over",
                    now.as_micros() as f64 / 1e6
                ));
            }
        }
        if let (Some(at), None) = (sc.crash_standby_at, standby_crashed_at) {
            let at = Instant::ZERO + at;
            if now >= at {
                // The standby dies: nothing reaches or leaves its ports any more.
                standby = None;
                client_ctl.set_up(1, false);
                server_ctl.set_up(1, false);
                repl_ctl.set_up(1, false);
                standby_crashed_at = Some(now);
                progress(&format!("  t={:>7.3}s virtual  the standby dies", now.as_micros() as f64 / 1e6));
            } else {
                next = next.min(at);
            }
        }
        if let Some((from, len)) = sc.replication_outage {
            let (from, to) = (Instant::ZERO + from, Instant::ZERO + from + len);
            if outage_state == 0 && now >= from {
                repl_ctl.set_up(0, false);
                repl_ctl.set_up(1, false);
                outage_state = 1;
            }
            if outage_state == 1 && now >= to {
                repl_ctl.set_up(0, true);
                repl_ctl.set_up(1, true);
                outage_state = 2;
            }
            match outage_state {
                0 => next = next.min(from),
                1 => next = next.min(to),
                _ => {}
            }
        }
        if standby_crashed_at.is_some() {
            if let Some(p) = &primary {
                degraded |= p.a.standby_attached() == Some(false);
            }
        }
        if primary.is_some() && matches!(standby, Some(pair::Standby::Active(_))) {
            invariant4 += 1;
        }
        if let (Some(at), None) = (sc.crash_primary_at, crashed_at) {
            let at = Instant::ZERO + at;
            if now >= at {
                // The primary dies: its cores stop, and nothing reaches or leaves its ports any more.
                primary = None;
                client_ctl.set_up(0, false);
                server_ctl.set_up(0, false);
                repl_ctl.set_up(0, false);
                crashed_at = Some(now);
                progress(&format!("  t={:>7.3}s virtual  the primary dies", now.as_micros() as f64 / 1e6));
            } else {
                next = next.min(at);
            }
        }
        if let (Some(at), None) = (sc.switchover_at, switching_since) {
            let at = Instant::ZERO + at;
            if now >= at {
                if let Some(p) = primary.as_mut() {
                    p.stop_intake(now);
                }
                switching_since = Some(now);
                progress(&format!(
                    "  t={:>7.3}s virtual  planned switchover: the primary stops taking data in",
                    now.as_micros() as f64 / 1e6
                ));
            } else {
                next = next.min(at);
            }
        }
        if let (Some(since), None) = (switching_since, crashed_at) {
            if primary.as_ref().is_some_and(|p| p.synced()) {
                // Synced: the primary goes silent and the standby takes over at once.
                primary = None;
                client_ctl.set_up(0, false);
                server_ctl.set_up(0, false);
                repl_ctl.set_up(0, false);
                crashed_at = Some(since);
                if let Some(tk) = standby.as_mut().and_then(|sb| sb.switch_over(now, &cfg)) {
                    takeover = Some(tk);
                    work = true;
                    progress(&format!(
                        "  t={:>7.3}s virtual  the standby takes over (switchover)",
                        now.as_micros() as f64 / 1e6
                    ));
                }
            } else {
                next = next.min(now + Duration::from_micros(10));
            }
        }
        if let (Some(tk), Some(after), true) = (takeover, sc.rejoin_after, rejoined.is_none()) {
            let at = tk.at + after;
            if now >= at {
                if let (Some((client_port, server_port)), Some(repl)) =
                    (rejoin_ports.take(), repl_spare.take())
                {
                    // The box that died comes back under its own replication address, as box 1.
                    let link = replication::frame::LinkAddrs { src: mac(1, 3), dst: mac(2, 3) };
                    let ch = replication::channel::ChannelConfig { box_id: 1, link, ..Default::default() };
                    let node = replication::node::StandbyNode::new(
                        ch,
                        replication::detector::DetectorConfig::default(),
                        replication::store::StoreConfig::default(),
                        tk.epoch,
                        2,
                        repl,
                        now,
                    )
                    .map_err(|e| SimError::Standby(e.to_string()))?;
                    rejoined = Some(pair::Standby::new(node, client_port, server_port, mac(3, 1)));
                    progress(&format!(
                        "  t={:>7.3}s virtual  the old box rejoins as the standby",
                        now.as_micros() as f64 / 1e6
                    ));
                }
            } else {
                next = next.min(at);
            }
        }
        if let Some(rj) = rejoined.as_mut() {
            let (w, t, tk) = rj.step(now, &cfg);
            work |= w;
            next = next.min(t);
            if tk.is_some() {
                second_takeover = tk;
                progress(&format!(
                    "  t={:>7.3}s virtual  the rejoined box takes over",
                    now.as_micros() as f64 / 1e6
                ));
            }
        }
        if let (Some(at), None, true) = (sc.second_crash_at, second_crashed_at, rejoined.is_some()) {
            let at = Instant::ZERO + at;
            if now >= at {
                // The new primary dies: the rejoined box must take over from the copy it received.
                standby = None;
                client_ctl.set_up(1, false);
                server_ctl.set_up(1, false);
                repl_ctl.set_up(1, false);
                second_crashed_at = Some(now);
                progress(&format!(
                    "  t={:>7.3}s virtual  the new primary dies",
                    now.as_micros() as f64 / 1e6
                ));
            } else {
                next = next.min(at);
            }
        }

        iterations += 1;
        // Invariant 1 (checked under every policy; `none` is the baseline that is expected to break it).
        if iterations % 16 == 0 {
            for (i, h) in clients.iter().enumerate() {
                for c in &h.conns {
                    let held = backend.held(c.id);
                    let by_standby = standby_copy
                        .get(&(i, c.local_port))
                        .is_some_and(|&(start, end)| start <= held && c.acked <= end);
                    if c.acked > held && !by_standby {
                        violations += 1;
                    }
                }
            }
        }

        let done = clients.iter().all(|h| h.conns.iter().all(|c| c.outcome != Outcome::Running));
        if done || now >= deadline {
            break;
        }
        if last_progress.elapsed() >= std::time::Duration::from_millis(500) {
            last_progress = std::time::Instant::now();
            let complete = clients
                .iter()
                .flat_map(|h| h.conns.iter())
                .filter(|c| c.outcome == Outcome::Complete)
                .count();
            let echoed: u64 = clients.iter().flat_map(|h| h.conns.iter()).map(|c| c.echo.report().good).sum();
            progress(&format!(
                "  t={:>7.3}s virtual  {complete}/{total_conns} connections done  {:.1} MB echoed",
                now.as_micros() as f64 / 1e6,
                echoed as f64 / 1e6
            ));
        }
        if work {
            clock.advance(Duration::from_micros(1));
        } else {
            clock.advance_to(next.max(now + Duration::from_micros(1)).min(deadline));
        }
    }

    if std::env::var_os("HOLDFAST_SIM_DEBUG").is_some() {
        if let Some(p) = &primary {
            eprint!("primary:\n{}{}", p.a.debug_flows(), p.b.debug_flows());
        }
        if let Some(pair::Standby::Active(c)) = &standby {
            eprint!("standby:\n{}{}", c.a.debug_flows(), c.b.debug_flows());
        }
        if let Some(pair::Standby::Active(c)) = &rejoined {
            eprint!("rejoined:\n{}{}", c.a.debug_flows(), c.b.debug_flows());
        }
        for c in clients.iter() {
            for conn in &c.conns {
                let s = c.host.sockets.get::<smoltcp::socket::tcp::Socket>(conn.handle);
                eprintln!(
                    "client {} id={} {:?} written={} acked={} echo_good={} sendq={} recvq={} longest_stall={:?} from {}",
                    conn.local_port,
                    conn.id,
                    s.state(),
                    conn.written,
                    conn.acked,
                    conn.echo.report().good,
                    s.send_queue(),
                    s.recv_queue(),
                    conn.longest_stall,
                    conn.longest_stall_from
                );
            }
        }
        eprintln!("backend: {}", backend.debug());
    }
    let conns: Vec<&smol::ClientConn> = clients.iter().flat_map(|h| h.conns.iter()).collect();
    let header = stream::HEADER_LEN as u64;
    let bytes_sent: u64 = conns.iter().map(|c| c.written.saturating_sub(header)).sum();
    let bytes_acked: u64 = conns.iter().map(|c| c.acked.saturating_sub(header)).sum();
    let mut reports = backend.finished.clone();
    reports.extend(backend.open_reports());
    let bytes_delivered: u64 = reports.iter().map(|(r, _)| r.good).sum();
    let backend_bad: u64 = reports.iter().map(|(r, _)| r.bad).sum();
    let echo_bad: u64 = conns.iter().map(|c| c.echo.report().bad).sum();
    let bytes_echoed: u64 = conns.iter().map(|c| c.echo.report().good).sum();
    let complete = conns.iter().filter(|c| c.outcome == Outcome::Complete).count();
    let broken = conns.iter().filter(|c| c.outcome == Outcome::Broken).count();
    let stall = conns.iter().map(|c| c.longest_stall).max().unwrap_or_default();
    let bytes_lost = bytes_acked.saturating_sub(bytes_delivered);
    let frames_lost_by_links = pool_loss_note(&clients, &backend);
    let mut notes = Vec::new();
    if complete < conns.len() {
        notes.push(format!(
            "{} connections did not finish within {:?} of virtual time",
            conns.len() - complete,
            sc.time_limit
        ));
    }
    if !sc.with_standby() {
        notes.push(
            "no standby attached: this run shows the relay and the ack gate, without a failover".into(),
        );
    }
    if let Some(pair::Standby::Failed(e)) = &standby {
        notes.push(format!("the standby could not take over: {e}"));
    }
    if crashed_at.is_some() && takeover.is_none() {
        notes.push("the primary died and the standby never took over".into());
    }
    if let Some(t) = takeover {
        if t.failed_flows > 0 {
            notes.push(format!("{} stored flows could not be restored", t.failed_flows));
        }
    }
    let gated = sc.policy != AckPolicy::None;
    if !gated && violations > 0 {
        notes.push(format!(
            "policy none acknowledges on receipt: {violations} times a client held an ACK for bytes the backend did not have yet (the unprotected baseline)"
        ));
    }
    if second_crashed_at.is_some() && second_takeover.is_none() {
        notes.push("the new primary died and the rejoined box never took over".into());
    }
    let planned = sc.crash_primary_at.is_some() || sc.switchover_at.is_some();
    let failover_ok = (!planned || takeover.is_some_and(|t| t.failed_flows == 0))
        && (sc.second_crash_at.is_none() || second_takeover.is_some_and(|t| t.failed_flows == 0));
    if standby_crashed_at.is_some() && !degraded {
        notes.push("the standby died and the primary never reported itself degraded".into());
    }
    if invariant4 > 0 {
        notes.push(format!("invariant 4: both boxes served the VIP on {invariant4} steps"));
    }
    let standby_ok = standby_crashed_at.is_none() || degraded;
    let pass = failover_ok
        && standby_ok
        && invariant4 == 0
        && complete == conns.len()
        && broken == 0
        && bytes_lost == 0
        && backend_bad == 0
        && echo_bad == 0
        && (violations == 0 || !gated);
    Ok(Report {
        verdict: if pass { "pass" } else { "fail" },
        policy: sc.policy.to_string(),
        seed: sc.seed,
        connections: conns.len(),
        connections_complete: complete,
        connections_reset: broken,
        bytes_sent,
        bytes_acked,
        bytes_delivered,
        bytes_lost,
        bytes_duplicated: backend_bad + echo_bad,
        bytes_echoed,
        invariant1_violations: violations,
        stall_ms: stall.as_millis() as u64,
        failover: crashed_at.is_some() && takeover.is_some(),
        crash_at_ms: crashed_at.map(|t| t.as_millis()),
        takeover_ms: match (crashed_at, takeover) {
            (Some(c), Some(t)) => Some((t.at - c).as_micros() as f64 / 1000.0),
            _ => None,
        },
        flows_taken_over: takeover.map_or(0, |t| t.flows),
        second_takeover_ms: match (second_crashed_at, second_takeover) {
            (Some(c), Some(t)) => Some((t.at - c).as_micros() as f64 / 1000.0),
            _ => None,
        },
        second_flows_taken_over: second_takeover.map_or(0, |t| t.flows),
        replication_bytes: standby.as_ref().and_then(|s| s.node()).map_or(0, |n| n.port_stats().rx_bytes),
        standby_crash_at_ms: standby_crashed_at.map(|t| t.as_millis()),
        degraded,
        invariant4_violations: invariant4,
        virtual_ms: clock.now().as_millis(),
        wall_ms: wall.elapsed().as_millis() as u64,
        frames_lost_by_links,
        notes,
    })
}

/// Records, per (client host, client port), the stream offsets of the client bytes the standby holds:
/// policy replica's half of invariant 1 (a byte acknowledged to a client that the backend does not have
/// yet must be there).
fn note_standby_copy(
    copy: &mut HashMap<(usize, u16), (u64, u64)>,
    node: &replication::node::StandbyNode<MemPort>,
    clients: &[ClientHost<MemPort>],
) {
    // A rejoined box's store mid-way through its bulk copy holds only part of the owed bytes: until the
    // copy ends they are on the primary alone (which took them over), and the last complete record stands.
    if matches!(node.store().snapshot_state(), replication::store::SnapshotState::Loading { .. }) {
        return;
    }
    for f in node.store().flows() {
        let host = f.key.client_ip.wrapping_sub(u32::from(Ipv4Addr::new(198, 18, 1, 10)));
        let Ok(host) = usize::try_from(host) else { continue };
        if host >= clients.len() {
            continue;
        }
        if let Some(run) = replication::resume::held_run(f, replication::delta::Direction::ClientToServer) {
            copy.insert((host, f.key.client_port), run);
        }
    }
}

fn pool_loss_note(clients: &[ClientHost<MemPort>], backend: &BackendHost<MemPort>) -> u64 {
    use dataplane::port::Port;
    let mut lost = 0;
    for c in clients {
        lost += c.host.device_port().stats().fault_lost;
    }
    lost + backend.host.device_port().stats().fault_lost
}
