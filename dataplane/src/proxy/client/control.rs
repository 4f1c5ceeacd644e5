//! Core A's side of the control port: answering the control thread's requests between bursts (see
//! `proxy::control`). A child of `client` so that it reads the flow table directly, on the core's own
//! thread, with no copy kept up to date for it.

use super::{ClientCore, ClientFlow, Standby};
use crate::balance::Pool;
use crate::flow::FlowId;
use crate::gate::AckPolicy;
use crate::port::Port;
use crate::proxy::control::{
    Answer, BackendOp, ClientSnapshot, Command, ControlError, ControlPort, CoreRequest, EngineState,
    FlowDetail, FlowPhase, FlowSummary, ListenerSnapshot, Scan, ScanKind, Tally, REQUEST_QUEUE, SCAN_CHUNK,
};
use crate::time::Instant;
use std::net::SocketAddrV4;

impl<P: Port> ClientCore<P> {
    /// Attaches the control thread's channel; from the next step on, the core answers its requests.
    pub fn attach_control(&mut self, port: ControlPort) {
        self.ctl.attach(port);
    }

    /// Answers the requests waiting (a few per step at most) and moves a walk of the flow table one chunk
    /// on. Returns the work done (a walk in progress counts, so an adaptive loop does not nap on it).
    pub(super) fn serve_control(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while self.ctl.scan.is_none() {
            let Some(req) = self.ctl.deferred.pop_front() else { break };
            self.take_request(now, req);
        }
        while let Some(req) = self.ctl.next_request(n) {
            n += 1;
            self.take_request(now, req);
        }
        if self.ctl.scan.is_some() {
            self.scan_step(now);
            n += 1;
        }
        n
    }

    fn take_request(&mut self, now: Instant, req: CoreRequest) {
        let answer = match &req.command {
            Command::Snapshot | Command::Flows { .. } => return self.begin_scan(req),
            Command::Samples => Answer::Samples {
                ack_hold_ns: self.ctl.ack_hold.take_samples(),
                replication_rtt_ns: self.ctl.replication_rtt.take_samples(),
            },
            Command::Flow { id } => Answer::Flow(self.control_flow(*id).map(Box::new)),
            Command::SetPolicy { listener, policy } => {
                Answer::Done(self.control_set_policy(*listener, *policy))
            }
            Command::Backend { listener, op, addr, weight } => {
                Answer::Done(self.control_backend(*listener, *op, *addr, *weight))
            }
            Command::Drain { listener } => Answer::Done(self.ctl.drain(*listener)),
            Command::Capture { count, snaplen, sink } => {
                Answer::Done(self.io.capture.start(*count, *snaplen, sink.clone()))
            }
            Command::Intake { stop: true } => {
                self.stop_intake(now);
                Answer::Done(Ok(()))
            }
            Command::Intake { stop: false } => {
                self.intake_stopped = false;
                Answer::Done(Ok(()))
            }
            Command::Synced => {
                Answer::Done(if self.replication_synced() { Ok(()) } else { Err(ControlError::NotSynced) })
            }
        };
        req.answer(answer);
    }

    /// Starts a walk for `req`, or joins the census under way, or waits for the walk under way.
    fn begin_scan(&mut self, req: CoreRequest) {
        match (&mut self.ctl.scan, &req.command) {
            (Some(Scan { kind: ScanKind::Census(_), waiting, .. }), Command::Snapshot) => waiting.push(req),
            (Some(_), _) if self.ctl.deferred.len() >= REQUEST_QUEUE => {
                req.answer(Answer::Done(Err(ControlError::Busy)))
            }
            (Some(_), _) => self.ctl.deferred.push_back(req),
            (None, Command::Snapshot) => {
                let tallies = vec![Tally::default(); self.cfg.listeners.len()];
                self.ctl.scan = Some(Scan { kind: ScanKind::Census(tallies), cursor: 0, waiting: vec![req] });
            }
            (None, Command::Flows { filter, limit }) => {
                let kind = ScanKind::Flows { filter: *filter, limit: *limit, found: Vec::new() };
                self.ctl.scan = Some(Scan { kind, cursor: 0, waiting: vec![req] });
            }
            (None, _) => req.answer(Answer::Done(Err(ControlError::WrongCore))),
        }
    }

    /// One chunk of the walk under way; answers its requests when it is done.
    fn scan_step(&mut self, now: Instant) {
        let Some(mut scan) = self.ctl.scan.take() else { return };
        let (flows, next) = self.flows.scan(scan.cursor, SCAN_CHUNK);
        let mut full = false;
        match &mut scan.kind {
            ScanKind::Census(tallies) => {
                for (_, _, f) in flows {
                    if let Some(t) = tallies.get_mut(usize::from(f.listener)) {
                        t.active_flows += 1;
                        t.withheld_bytes += withheld(f);
                        if let Some(c) = f.conn() {
                            t.bytes_from_clients = t.bytes_from_clients.wrapping_add(c.counters().bytes_in);
                            t.bytes_to_clients = t.bytes_to_clients.wrapping_add(c.counters().bytes_out);
                        }
                    }
                }
            }
            ScanKind::Flows { filter, limit, found } => {
                for (id, key, f) in flows {
                    let s = self.summary(id, key.client, key.vip, f);
                    let mut peers = [s.client, s.client];
                    if let Some(b) = s.backend {
                        peers[1] = b;
                    }
                    if filter.matches(s.listener, s.phase, &peers) {
                        found.push(s);
                        if found.len() >= *limit {
                            full = true;
                            break;
                        }
                    }
                }
            }
        }
        scan.cursor = next;
        if next != 0 && !full {
            self.ctl.scan = Some(scan);
            return;
        }
        match scan.kind {
            ScanKind::Census(tallies) => {
                let mut snap = self.control_snapshot(now, &tallies);
                for req in scan.waiting {
                    let this = snap.clone();
                    // The samples go to one asker only: each is recorded once.
                    snap.ack_hold_ns.clear();
                    snap.replication_rtt_ns.clear();
                    req.answer(Answer::Client(Box::new(this)));
                }
            }
            ScanKind::Flows { found, .. } => {
                let mut found = Some(found);
                for req in scan.waiting {
                    req.answer(Answer::Flows(found.take().unwrap_or_default()));
                }
            }
        }
    }

    fn control_snapshot(&mut self, now: Instant, tallies: &[Tally]) -> ClientSnapshot {
        let listeners: Vec<ListenerSnapshot> = self
            .cfg
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let li = u16::try_from(i).unwrap_or(u16::MAX);
                let t = tallies.get(i).copied().unwrap_or_default();
                let mut counters = self.ctl.counters.get(i).copied().unwrap_or_default();
                // Closed flows' bytes are in the counters; open ones' come from the walk.
                counters.bytes_from_clients = counters.bytes_from_clients.wrapping_add(t.bytes_from_clients);
                counters.bytes_to_clients = counters.bytes_to_clients.wrapping_add(t.bytes_to_clients);
                ListenerSnapshot {
                    policy: self.ctl.policy(li).unwrap_or(l.policy),
                    draining: self.ctl.draining(li),
                    active_flows: t.active_flows,
                    withheld_bytes: t.withheld_bytes,
                    counters,
                    backends: self
                        .pools
                        .get(i)
                        .and_then(Option::as_ref)
                        .map(|p| p.backends().to_vec())
                        .unwrap_or_default(),
                }
            })
            .collect();
        ClientSnapshot {
            at: now,
            stats: self.stats.clone(),
            io: self.io.stats.clone(),
            port: self.io.port.stats(),
            flows: self.flows.len(),
            listeners,
            standby_attached: self.replicator.as_ref().map(|r| r.standby_attached()),
            draining_all: self.ctl.draining_all(),
            capture: self.io.capture.status(),
            ack_hold_ns: self.ctl.ack_hold.take_samples(),
            replication_rtt_ns: self.ctl.replication_rtt.take_samples(),
            samples_dropped: self.ctl.ack_hold.dropped + self.ctl.replication_rtt.dropped,
        }
    }

    fn summary(&self, id: FlowId, client: SocketAddrV4, vip: SocketAddrV4, f: &ClientFlow) -> FlowSummary {
        let backend = f.backend.and_then(|b| {
            self.pools.get(usize::from(f.listener)).and_then(Option::as_ref).and_then(|p| p.backend(b))
        });
        let state = f.conn().map(|c| c.state());
        FlowSummary {
            id: id.to_u64(),
            listener: f.listener,
            client,
            vip,
            backend: backend.map(|b| b.addr),
            policy: f.policy,
            phase: FlowPhase::of(state),
            state,
            withheld_bytes: withheld(f),
            bytes_from_client: f.conn().map_or(0, |c| c.counters().bytes_in),
            bytes_to_client: f.conn().map_or(0, |c| c.counters().bytes_out),
        }
    }

    fn control_flow(&self, id: u64) -> Option<FlowDetail> {
        let id = FlowId::from_u64(id);
        let f = self.flows.get(id)?;
        let key = self.flows.key(id)?;
        let engine = f.conn().map(EngineState::of);
        Some(FlowDetail {
            summary: self.summary(id, key.client, key.vip, f),
            engine,
            server_flow: f.server,
            c2s_sent: f.c2s_sent,
            c2s_done: f.c2s_done,
            fin_forwarded: f.fin_forwarded,
            s2c_backlog: f.s2c_backlog.len(),
            s2c_next: f.s2c_next,
            s2c_acked_told: f.s2c_acked_told,
            s2c_fin: f.s2c_fin,
            standby: match f.standby {
                Standby::NotReplicated => "not_replicated",
                Standby::ToOffer => "to_offer",
                Standby::Waiting => "waiting",
                Standby::Confirmed => "confirmed",
            },
        })
    }

    fn control_set_policy(&mut self, listener: u16, policy: AckPolicy) -> Result<(), ControlError> {
        let current = self.cfg.listeners.get(usize::from(listener)).ok_or(ControlError::NoSuchListener)?;
        // A listener's pool or application is built at start for its policy: only the two policies
        // that share a pool can trade places while the box runs.
        match (current.policy, policy) {
            (AckPolicy::App, p) if p != AckPolicy::App => Err(ControlError::Policy(
                p,
                "this listener is served by an application, which has no backends to relay to",
            )),
            (_, AckPolicy::App) => Err(ControlError::Policy(
                policy,
                "an application is attached to a listener at start (config: listeners.application)",
            )),
            (_, AckPolicy::Replica) => Err(ControlError::Policy(
                policy,
                "replica needs data deltas to the standby, which the cores do not send yet",
            )),
            _ => self.ctl.set_policy(listener, policy),
        }
    }

    fn control_backend(
        &mut self,
        listener: u16,
        op: BackendOp,
        addr: SocketAddrV4,
        weight: Option<u32>,
    ) -> Result<(), ControlError> {
        let pool: &mut Pool = match self.pools.get_mut(usize::from(listener)) {
            None => return Err(ControlError::NoSuchListener),
            Some(None) => return Err(ControlError::NoPool),
            Some(Some(p)) => p,
        };
        let found = pool.find(addr);
        let err = ControlError::Pool;
        match (op, found) {
            (BackendOp::Add, None) => pool.add_backend(addr, weight.unwrap_or(1)).map(|_| ()).map_err(err),
            // Back into service: a removed backend gets a weight again, a drained one new flows.
            (BackendOp::Add, Some(id)) => {
                let was = pool.backend(id).map_or(1, |b| b.weight);
                let w = weight.unwrap_or(if was == 0 { 1 } else { was });
                pool.set_weight(id, w).map_err(err)?;
                pool.set_draining(id, false).map(|_| ()).map_err(err)
            }
            // Backend ids are indices that core B's health checks also use: a removed backend keeps its
            // slot with weight zero (no new flows, ever, until added again); its flows finish.
            (BackendOp::Remove, Some(id)) => {
                pool.set_draining(id, true).map_err(err)?;
                pool.set_weight(id, 0).map(|_| ()).map_err(err)
            }
            (BackendOp::Drain, Some(id)) => pool.set_draining(id, true).map(|_| ()).map_err(err),
            (BackendOp::Remove | BackendOp::Drain, None) => Err(ControlError::NoSuchBackend),
        }
    }
}

/// Bytes received from the client and not yet acknowledged to it.
fn withheld(f: &ClientFlow) -> u64 {
    f.conn().map_or(0, |c| u64::from(c.rcv_nxt().wrapping_sub(c.ack_sent())).min(u64::from(u32::MAX >> 1)))
}
