//! The two roles of a box around its protocol cores: [`Cores`] (an active box's core A and core B) and
//! [`Standby`], which watches the primary (heartbeats on the replication link, ARP probes of the VIP on
//! the client LAN) and, when both fall silent, installs every stored flow into cores of its own and claims
//! the addresses. Used by the simulator and by `holdfast run` alike; generic over the port backend.

use dataplane::port::Port;
use dataplane::proxy::{ClientCore, CoreError, ProxyConfig, ServerCore};
use dataplane::step::Steppable;
use dataplane::tcp::Connection;
use dataplane::time::{Duration, Instant};
use dataplane::wire::{
    build_arp_frame, parse_frame, ArpOperation, ArpRepr, EthernetAddress, FramePayload, Ipv4Address,
};
use replication::node::{ack_policy_of, PrimaryLink, StandbyNode};
use replication::resume::resume;
use std::sync::Arc;

/// The two protocol cores of an active box.
pub struct Cores<P> {
    pub a: ClientCore<P>,
    pub b: ServerCore<P>,
    /// After a takeover: when to repeat the gratuitous ARPs, the gap after that, and how many remain.
    reannounce: Option<(Instant, Duration, u8)>,
}

impl<P> std::fmt::Debug for Cores<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cores").field("a", &self.a).field("b", &self.b).finish()
    }
}

impl<P: Port> Cores<P> {
    pub fn new(cfg: &Arc<ProxyConfig>, client: P, server: P, now: Instant) -> Result<Cores<P>, CoreError> {
        let (to_server, from_client) = crossbeam_channel::bounded(4096);
        let (to_client, from_server) = crossbeam_channel::bounded(4096);
        let a = ClientCore::new(cfg.clone(), client, to_server, from_server, Vec::new())?;
        let b = ServerCore::new(cfg.clone(), server, to_client, from_client, now)?;
        Ok(Cores { a, b, reannounce: None })
    }

    /// A planned switchover, primary side: both cores stop taking frames in and core A offers every flow's
    /// progress now; once [`Cores::synced`] says the standby has it all, the box goes silent.
    pub fn stop_intake(&mut self, now: Instant) {
        self.a.stop_intake(now);
        self.b.stop_intake();
    }

    /// Whether the standby confirmed everything this box offered.
    pub fn synced(&self) -> bool {
        self.a.replication_synced()
    }

    /// Steps both cores; returns (work done, next deadline).
    pub fn step(&mut self, now: Instant) -> (bool, Instant) {
        let a = self.a.step(now);
        let b = self.b.step(now);
        let mut next = a.next_deadline.min(b.next_deadline);
        if let Some((at, gap, left)) = self.reannounce {
            if now >= at {
                self.a.announce(now);
                self.b.announce(now);
                self.reannounce = (left > 1).then(|| (now + gap, gap * 2, left - 1));
            }
        }
        if let Some((at, _, _)) = self.reannounce {
            next = next.min(at);
        }
        (a.work > 0 || b.work > 0, next)
    }
}

/// Probes the VIP's holder on the client LAN with ARP, from the standby's own MAC (never the VIP's).
#[derive(Debug)]
pub struct LanProbe {
    mac: EthernetAddress,
    interval: Duration,
    next: Instant,
    outstanding: Option<Instant>,
}

/// A watching standby's cores: its ports until the first step builds the cores around them, ahead of
/// any takeover (a core's tables hold every flow it may ever carry, allocated and written at creation:
/// ~200 ms for 100,000 flows, which a takeover must not wait for).
// One per standby, replaced once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Prepared<P> {
    Ports(P, P),
    Cores(Cores<P>),
}

impl<P> std::fmt::Debug for Prepared<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prepared::Ports(..) => write!(f, "Ports"),
            Prepared::Cores(c) => write!(f, "{c:?}"),
        }
    }
}

/// What the standby is doing.
// One per box, moved only at a takeover: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Standby<P> {
    Watching {
        node: StandbyNode<P>,
        prepared: Prepared<P>,
        probe: LanProbe,
    },
    Active(Cores<P>),
    /// Set up failed at takeover; the message says why.
    Failed(String),
}

impl<P> std::fmt::Debug for Standby<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Standby::Watching { node, .. } => write!(f, "Watching({node:?})"),
            Standby::Active(c) => write!(f, "Active({c:?})"),
            Standby::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// What a takeover did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Takeover {
    pub at: Instant,
    pub flows: usize,
    pub failed_flows: usize,
    /// Flows resumed from progress newer than their last full save.
    pub advanced_flows: usize,
    /// Bytes the standby held (policy replica) and handed to the restored halves to send.
    pub held_bytes: usize,
    /// The epoch this box serves in from now on.
    pub epoch: u32,
    /// A planned switchover (the primary asked, or [`Standby::switch_over`]), not a failure.
    pub planned: bool,
}

impl<P: Port + Send + 'static> Standby<P> {
    pub fn new(node: StandbyNode<P>, client: P, server: P, own_mac: [u8; 6]) -> Standby<P> {
        Standby::Watching {
            node,
            prepared: Prepared::Ports(client, server),
            probe: LanProbe {
                mac: EthernetAddress(own_mac),
                interval: Duration::from_millis(1),
                next: Instant::ZERO,
                outstanding: None,
            },
        }
    }

    /// How often the VIP's holder is probed on the client LAN, and how long an answer may take (1 ms by
    /// default; a box on a loaded machine wants its heartbeat interval here).
    pub fn set_probe_interval(&mut self, interval: Duration) {
        if let Standby::Watching { probe, .. } = self {
            probe.interval = interval;
        }
    }

    /// The replication node while the standby watches (before a takeover).
    pub fn node(&self) -> Option<&StandbyNode<P>> {
        match self {
            Standby::Watching { node, .. } => Some(node),
            _ => None,
        }
    }

    /// Steps the standby; returns (work done, next deadline, a takeover if it happened now).
    pub fn step(&mut self, now: Instant, cfg: &Arc<ProxyConfig>) -> (bool, Instant, Option<Takeover>) {
        self.prepare(now, cfg);
        match self {
            Standby::Active(cores) => {
                let (w, t) = cores.step(now);
                (w, t, None)
            }
            Standby::Failed(_) => (false, Instant::FAR_FUTURE, None),
            Standby::Watching { node, prepared, probe } => {
                let client = match prepared {
                    Prepared::Ports(c, _) => c,
                    Prepared::Cores(k) => k.a.port_mut(),
                };
                let (work, mut takeover) = node.step(now);
                let vip = Ipv4Address(cfg.vip.octets());
                // The second path: did the VIP's holder answer the last probe?
                let mut rx = Vec::new();
                client.recv(now, &mut rx, 64);
                for buf in &rx {
                    if let Ok(frame) = parse_frame(buf.data()) {
                        if let FramePayload::Arp(arp) = frame.payload {
                            if arp.operation == ArpOperation::Reply && arp.source_protocol_addr == vip {
                                probe.outstanding = None;
                                takeover = takeover.or(node.on_lan_probe(now, true));
                            }
                        }
                    }
                }
                if let Some(sent) = probe.outstanding {
                    if now >= sent + probe.interval {
                        probe.outstanding = None;
                        takeover = takeover.or(node.on_lan_probe(now, false));
                    }
                }
                if now >= probe.next && probe.outstanding.is_none() {
                    let req = ArpRepr {
                        operation: ArpOperation::Request,
                        source_hardware_addr: probe.mac,
                        source_protocol_addr: Ipv4Address::UNSPECIFIED,
                        target_hardware_addr: EthernetAddress::UNSPECIFIED,
                        target_protocol_addr: vip,
                    };
                    if let Some(mut buf) = client.alloc() {
                        let room = buf.tailroom();
                        let built = match buf.append(room) {
                            Ok(space) => {
                                build_arp_frame(space, probe.mac, EthernetAddress::BROADCAST, None, &req).ok()
                            }
                            Err(_) => None,
                        };
                        if let Some(len) = built {
                            buf.truncate(len);
                            let mut v = vec![buf];
                            client.send(now, &mut v);
                        }
                    }
                    probe.outstanding = Some(now);
                    probe.next = now + probe.interval;
                }
                let next = node
                    .poll_at()
                    .min(probe.next)
                    .min(probe.outstanding.map_or(Instant::FAR_FUTURE, |t| t + probe.interval));
                let mut done = None;
                if let (Some(epoch), true) = (takeover, node.has_heard_primary()) {
                    let planned = node.handed_over();
                    let mut t = self.take_over(now, cfg, epoch);
                    t.planned = planned;
                    done = Some(t);
                }
                (work > 0 || done.is_some(), next, done)
            }
        }
    }

    /// Builds the cores around a watching standby's ports, once; true when it did so now. A box calls it
    /// before its first [`Standby::step`]: the build takes long (~200 ms for 100,000 flows), and a step
    /// whose `now` was read before it feeds the detector a stale time that counts the whole build as the
    /// primary's silence (a rejoining box took over a live primary that way).
    pub fn prepare(&mut self, now: Instant, cfg: &Arc<ProxyConfig>) -> bool {
        if !matches!(self, Standby::Watching { prepared: Prepared::Ports(..), .. }) {
            return false;
        }
        let old = std::mem::replace(self, Standby::Failed("preparing the cores".into()));
        let Standby::Watching { node, prepared: Prepared::Ports(client, server), probe } = old else {
            *self = old;
            return false;
        };
        *self = match Cores::new(cfg, client, server, now) {
            Ok(cores) => Standby::Watching { node, prepared: Prepared::Cores(cores), probe },
            Err(e) => Standby::Failed(e.to_string()),
        };
        true
    }

    /// A planned switchover, standby side: takes over now, without waiting for the primary to fail (the
    /// primary has gone silent after [`Cores::synced`]). `None` when this box is not a watching standby
    /// that heard a primary.
    pub fn switch_over(&mut self, now: Instant, cfg: &Arc<ProxyConfig>) -> Option<Takeover> {
        let Standby::Watching { node, .. } = self else { return None };
        let epoch = node.take_over_now()?;
        let mut t = self.take_over(now, cfg, epoch);
        t.planned = true;
        Some(t)
    }

    /// Installs every stored flow into the cores built on the standby's ports and claims the addresses. The
    /// replication port then carries this box's own replication, for a standby that joins later.
    fn take_over(&mut self, now: Instant, cfg: &Arc<ProxyConfig>, epoch: u32) -> Takeover {
        let old = std::mem::replace(self, Standby::Failed("takeover in progress".into()));
        let Standby::Watching { mut node, prepared, .. } = old else {
            *self = old;
            return Takeover::default();
        };
        let built = match prepared {
            Prepared::Cores(k) => Ok(k),
            Prepared::Ports(client, server) => Cores::new(cfg, client, server, now),
        };
        let mut cores = match built {
            Ok(c) => c,
            Err(e) => {
                *self = Standby::Failed(e.to_string());
                return Takeover::default();
            }
        };
        let mut t = Takeover { at: now, epoch, ..Default::default() };
        for f in node.take_flows() {
            let Ok(r) = resume(&f) else {
                t.failed_flows += 1;
                continue;
            };
            t.advanced_flows += usize::from(r.advanced);
            t.held_bytes += r.client_send.len() + r.server_send.len();
            let policy = ack_policy_of(f.policy);
            let restored =
                Connection::restore(now, &cfg.client_tcp, &r.client, &r.client_send).and_then(|c| {
                    Connection::restore(now, &cfg.server_tcp, &r.server, &r.server_send).map(|s| (c, s))
                });
            let Ok((cconn, sconn)) = restored else {
                t.failed_flows += 1;
                continue;
            };
            let client = cconn.remote();
            let Ok(sid) = cores.b.install(now, policy, sconn) else {
                t.failed_flows += 1;
                continue;
            };
            match cores.a.install(now, client, sid, policy, cconn, r.client_mac) {
                Ok(cid) => {
                    cores.b.link(sid, cid);
                    t.flows += 1;
                }
                Err(_) => t.failed_flows += 1,
            }
        }
        cores.b.finish_takeover(now);
        cores.a.announce(now);
        cores.b.announce(now);
        // One gratuitous ARP can be lost, and a stale primary waking up may still ask for its peers'
        // addresses from the VIP: repeat the claim 50, 150, 350 and 750 ms later (keepalived sends five).
        cores.reannounce = Some((now + Duration::from_millis(50), Duration::from_millis(100), 4));
        node.takeover_complete(now);
        // Keep heartbeating on the replication port in the new epoch: that is what fences the old
        // primary if it was only stopped and wakes up (new flows run degraded until a standby attaches);
        // the same port carries this box's replication to a standby that joins later.
        let (ch_cfg, repl) = node.into_link();
        // A link that cannot be set up leaves this box serving alone (its flows degraded), never down.
        if let Ok(link) = PrimaryLink::new(ch_cfg, epoch, repl, now) {
            cores.a.set_replicator(Box::new(link));
            cores.b.set_report_progress(true);
        }
        *self = Standby::Active(cores);
        t
    }
}
