//! The running box's answer to the control socket: [`BoxControl`] implements `ControlHandler` on the
//! control threads by asking the protocol cores through their control ports (`dataplane::proxy::control`)
//! and waiting for the answers off the cores, with a timeout. A standby that is still watching answers
//! `status` and `stats` from a [`StandbyView`] its loop refreshes; once it has taken over, its cores answer
//! like a primary's.
//!
//! What cannot change while the box runs says so: replication timing is read by the channel at start
//! (`set heartbeat_interval_ms` and friends answer `unavailable` and name the config field), and
//! `switchover` waits for the replication work that moves service on purpose ([`SwitchoverHook`]).

use crate::config::{self, Config};
use crate::ctl::protocol::{
    AckPolicy as WireAckPolicy, BackendAction, CaptureArgs, DrainArgs, FlowPhase as WirePhase, FlowsArgs,
    LogLevel, PortName, SetArgs, SwitchoverArgs,
};
use crate::ctl::{ControlHandler, CtlError, Request, PROMETHEUS_CONTENT_TYPE};
use crate::stats::histogram::Latency;
use crate::stats::{self, CoreSnapshot, DropCause, ListenerStats, PortStats, StatsLayout, StatsRegistry};
use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};
use dataplane::gate::AckPolicy;
use dataplane::proxy::control::{
    Answer, BackendOp, CapturedFrame, ClientSnapshot, Command, ControlError, CoreRequest, EngineState,
    FlowDetail, FlowFilter, FlowPhase, FlowSummary, ServerHalfDetail, ServerSnapshot, CAPTURE_QUEUE,
};
use dataplane::time::{Clock, Instant, MonotonicClock};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// How long a control thread waits for a core's answer. A core answers within one step; a core that
/// takes longer is stuck or gone, and the request fails rather than hang its client.
pub const CORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Changes the daemon's log level; `Err` says why it could not.
pub type LogLevelFn = Arc<dyn Fn(LogLevel) -> Result<(), String> + Send + Sync>;

/// A planned switchover, provided by the replication side when it exists.
pub type SwitchoverHook = Arc<dyn Fn(&SwitchoverArgs) -> Result<Value, CtlError> + Send + Sync>;

/// What a standby's loop tells the control plane; refreshed with `try_lock`, so the loop never waits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandbyInfo {
    /// Whether a primary's heartbeat was ever heard.
    pub heard_primary: bool,
    /// Flows held for a takeover.
    pub stored_flows: u64,
    pub apply_errors: u64,
    /// Set once the standby has taken over: its cores serve from then on.
    pub took_over: Option<TakeoverInfo>,
    /// Set when a takeover could not build the cores.
    pub failed: Option<String>,
    /// The epoch the standby follows (0: the box's own, from its epoch file).
    pub epoch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeoverInfo {
    pub epoch: u32,
    pub flows: u64,
    pub failed_flows: u64,
    /// From the detector's verdict to every stored flow installed.
    pub duration_ns: u64,
}

/// The standby's state as the control plane sees it.
#[derive(Debug, Default)]
pub struct StandbyView {
    info: Mutex<StandbyInfo>,
}

impl StandbyView {
    /// Called by the standby's loop; skipped (never waited for) when a control thread is reading.
    pub fn publish(&self, f: impl FnOnce(&mut StandbyInfo)) {
        if let Ok(mut info) = self.info.try_lock() {
            f(&mut info);
        }
    }

    /// Like `publish`, but waits: for the rare events (a takeover) that must not be lost.
    pub fn publish_now(&self, f: impl FnOnce(&mut StandbyInfo)) {
        f(&mut self.info.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn get(&self) -> StandbyInfo {
        self.info.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// One capture's progress, shown by `status`.
#[derive(Debug)]
struct CaptureJob {
    port: PortName,
    file: PathBuf,
    wanted: u32,
    written: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
}

/// The box's side of the control socket. See the module docs.
pub struct BoxControl {
    name: String,
    role: config::Role,
    listeners: Vec<(String, u16)>,
    replication: Option<config::Replication>,
    epoch: u32,
    started: std::time::Instant,
    clock: MonotonicClock,
    /// Wall time at the clock's `now()` when the box started: pcap timestamps are wall time.
    wall_base: (SystemTime, Instant),
    /// Core A's and core B's control channels.
    cores: [Sender<CoreRequest>; 2],
    standby: Option<Arc<StandbyView>>,
    registry: StatsRegistry,
    log: Option<LogLevelFn>,
    switchover: Option<SwitchoverHook>,
    captures: Mutex<Vec<CaptureJob>>,
    timeout: Duration,
}

impl std::fmt::Debug for BoxControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxControl").field("name", &self.name).field("role", &self.role).finish()
    }
}

impl BoxControl {
    /// The control side of a box built from `cfg`, talking to its cores on `cores` (core A, core B).
    /// A standby passes the view its loop publishes to.
    pub fn new(
        cfg: &Config,
        clock: MonotonicClock,
        cores: [Sender<CoreRequest>; 2],
        standby: Option<Arc<StandbyView>>,
    ) -> Result<BoxControl, stats::StatsError> {
        let layout =
            StatsLayout { cores: 2, listeners: cfg.listeners.iter().map(|l| l.name.clone()).collect() };
        Ok(BoxControl {
            name: cfg.box_.name.clone(),
            role: cfg.box_.role,
            listeners: cfg.listeners.iter().map(|l| (l.name.clone(), l.port)).collect(),
            replication: cfg.replication,
            epoch: 1,
            started: std::time::Instant::now(),
            clock,
            wall_base: (SystemTime::now(), clock.now()),
            cores,
            standby,
            registry: StatsRegistry::new(layout)?,
            log: None,
            switchover: None,
            captures: Mutex::new(Vec::new()),
            timeout: CORE_TIMEOUT,
        })
    }

    /// Lets `set log_level` change the daemon's log level.
    pub fn with_log_control(mut self, f: LogLevelFn) -> Self {
        self.log = Some(f);
        self
    }

    /// The epoch this box starts in (its epoch file's; 1 by default).
    pub fn with_epoch(mut self, epoch: u32) -> Self {
        self.epoch = epoch;
        self
    }

    /// Lets `switchover` move service (the replication side provides it).
    pub fn with_switchover(mut self, f: SwitchoverHook) -> Self {
        self.switchover = Some(f);
        self
    }

    /// How long a control thread waits for a core's answer (default [`CORE_TIMEOUT`]).
    pub fn with_core_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Records a takeover's duration in the `takeover` latency histogram.
    pub fn record_takeover(&self, nanos: u64) {
        self.registry.record_off_core(Latency::Takeover, nanos);
    }

    /// Whether the cores serve (a primary always; a standby once it has taken over).
    fn serving(&self) -> bool {
        match &self.standby {
            None => true,
            Some(v) => v.get().took_over.is_some(),
        }
    }

    fn ask(&self, core: usize, command: Command) -> Result<Answer, CtlError> {
        let which = if core == 0 { "core A" } else { "core B" };
        let tx = self.cores.get(core).ok_or_else(|| CtlError::internal("no such core"))?;
        let (req, rx) = CoreRequest::new(command);
        match tx.try_send(req) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(CtlError::unavailable(format!(
                    "{which} has too many control requests queued; try again"
                )))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(CtlError::unavailable(format!("{which} is not running")))
            }
        }
        match rx.recv_timeout(self.timeout) {
            Ok(a) => Ok(a),
            Err(RecvTimeoutError::Timeout) => Err(CtlError::unavailable(format!(
                "{which} did not answer within {} ms",
                self.timeout.as_millis()
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                Err(CtlError::unavailable(format!("{which} stopped before answering")))
            }
        }
    }

    fn done(&self, core: usize, command: Command) -> Result<(), CtlError> {
        match self.ask(core, command)? {
            Answer::Done(Ok(())) => Ok(()),
            Answer::Done(Err(e)) => Err(control_error(e)),
            other => Err(unexpected(other)),
        }
    }

    /// Core A's snapshot; the latency samples it carries go into the histograms on the way.
    fn client_snapshot(&self) -> Result<ClientSnapshot, CtlError> {
        match self.ask(0, Command::Snapshot)? {
            Answer::Client(mut s) => {
                for ns in std::mem::take(&mut s.ack_hold_ns) {
                    self.registry.record_off_core(Latency::AckHold, ns);
                }
                for ns in std::mem::take(&mut s.replication_rtt_ns) {
                    self.registry.record_off_core(Latency::ReplicationRtt, ns);
                }
                Ok(*s)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Collects the cores' latency samples before their buffers fill; the box calls it now and then
    /// (every second) from a thread of its own. Does nothing on a standby that is still watching.
    pub fn refresh(&self) {
        if !self.serving() {
            return;
        }
        if let Ok(Answer::Samples { ack_hold_ns, replication_rtt_ns }) = self.ask(0, Command::Samples) {
            for ns in ack_hold_ns {
                self.registry.record_off_core(Latency::AckHold, ns);
            }
            for ns in replication_rtt_ns {
                self.registry.record_off_core(Latency::ReplicationRtt, ns);
            }
        }
    }

    fn server_snapshot(&self) -> Result<ServerSnapshot, CtlError> {
        match self.ask(1, Command::Snapshot)? {
            Answer::Server(s) => Ok(*s),
            other => Err(unexpected(other)),
        }
    }

    fn listener_index(&self, name: &str) -> Result<u16, CtlError> {
        let i = self.listeners.iter().position(|(n, _)| n == name).ok_or_else(|| {
            let known: Vec<&str> = self.listeners.iter().map(|(n, _)| n.as_str()).collect();
            CtlError::invalid_argument(format!(
                "args.listener: no listener `{name}` on this box (known: {})",
                known.join(", ")
            ))
        })?;
        u16::try_from(i).map_err(|_| CtlError::internal("listener index out of range"))
    }

    fn listener_name(&self, index: u16) -> String {
        self.listeners.get(usize::from(index)).map_or_else(|| format!("#{index}"), |(n, _)| n.clone())
    }

    fn not_serving(&self, what: &str) -> CtlError {
        CtlError::unavailable(format!(
            "{what}: this box is a standby watching the primary; it serves no flows"
        ))
    }

    fn status(&self) -> Result<Value, CtlError> {
        let uptime_s = self.started.elapsed().as_secs();
        let captures = self.capture_status();
        let drained: Vec<&str> = Vec::new();
        match &self.standby {
            Some(view) => {
                let info = view.get();
                let own = if info.epoch == 0 { self.epoch } else { info.epoch };
                let (role, peer, epoch) = match (&info.took_over, &info.failed) {
                    (Some(t), _) => ("active", "down", t.epoch),
                    (None, Some(_)) => ("failed", "down", own),
                    (None, None) if info.heard_primary => ("standby", "up", own),
                    (None, None) => ("standby", "joining", own),
                };
                let mut v = json!({
                    "box": self.name,
                    "role": role,
                    "peer": peer,
                    "epoch": epoch,
                    // A standby that took over serves with no standby of its own.
                    "degraded": info.took_over.is_some() || info.failed.is_some(),
                    "uptime_s": uptime_s,
                    "stored_flows": info.stored_flows,
                    "apply_errors": info.apply_errors,
                    "captures": captures,
                });
                if let Some(t) = info.took_over {
                    v["takeover"] = json!({
                        "flows": t.flows,
                        "failed_flows": t.failed_flows,
                        "duration_ms": t.duration_ns as f64 / 1e6,
                    });
                    if let Ok(a) = self.client_snapshot() {
                        v["flows"] = json!(a.flows);
                    }
                }
                if let Some(e) = info.failed {
                    v["failure"] = json!(e);
                }
                Ok(v)
            }
            None => {
                let a = self.client_snapshot()?;
                let (role, peer, degraded) = match (self.replication.is_some(), a.standby_attached) {
                    (false, _) | (true, None) => ("alone", "none", false),
                    (true, Some(true)) => ("primary", "up", false),
                    (true, Some(false)) => ("primary", "down", true),
                };
                let mut draining = drained;
                for (i, l) in a.listeners.iter().enumerate() {
                    if l.draining {
                        if let Some((n, _)) = self.listeners.get(i) {
                            draining.push(n);
                        }
                    }
                }
                Ok(json!({
                    "box": self.name,
                    "role": role,
                    "peer": peer,
                    "epoch": self.epoch,
                    "degraded": degraded,
                    "uptime_s": uptime_s,
                    "flows": a.flows,
                    "degraded_flows": a.stats.degraded_flows,
                    "draining": a.draining_all,
                    "draining_listeners": draining,
                    "captures": captures,
                }))
            }
        }
    }

    fn capture_status(&self) -> Value {
        let jobs = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        Value::Array(
            jobs.iter()
                .map(|j| {
                    json!({
                        "port": port_str(j.port),
                        "file": j.file.display().to_string(),
                        "wanted": j.wanted,
                        "written": j.written.load(Ordering::Acquire),
                        "done": j.done.load(Ordering::Acquire),
                        "error": j.error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
                    })
                })
                .collect(),
        )
    }

    /// The `stats` reply: the cores' counters in the shape of `stats::StatsSnapshot`.
    pub fn stats_snapshot(&self) -> Result<stats::StatsSnapshot, CtlError> {
        Ok(self.gather()?.0)
    }

    /// The summary snapshot and, when the cores serve, their own snapshots (one request to each core).
    fn gather(&self) -> Result<(stats::StatsSnapshot, Option<(ClientSnapshot, ServerSnapshot)>), CtlError> {
        if !self.serving() {
            // A watching standby has no cores running: its latency figures (none yet) and zero counters.
            return Ok((self.registry.snapshot(), None));
        }
        let a = self.client_snapshot()?;
        let b = self.server_snapshot()?;
        let mut snap = self.registry.snapshot();
        let pa = port_stats(
            &a.port,
            &a.io,
            a.stats.ignored_frames,
            a.stats.stray_segments,
            &a.stats.segment_errors,
        );
        let pb = port_stats(
            &b.port,
            &b.io,
            b.stats.ignored_frames,
            b.stats.stray_segments,
            &b.stats.segment_errors,
        );
        snap.cores = vec![
            CoreSnapshot { core: 0, ports: BTreeMap::from([("client".to_string(), pa.clone())]) },
            CoreSnapshot { core: 1, ports: BTreeMap::from([("server".to_string(), pb.clone())]) },
        ];
        snap.ports = BTreeMap::from([("client".to_string(), pa), ("server".to_string(), pb)]);
        snap.listeners = a
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerStats {
                listener: self.listener_name(u16::try_from(i).unwrap_or(u16::MAX)),
                flows_opened: l.counters.flows_opened,
                flows_closed: l.counters.flows_closed,
                flows_refused: l.counters.flows_refused,
                flows_reset: l.counters.flows_reset,
                active_flows: l.active_flows,
                withheld_bytes: l.withheld_bytes,
                bytes_from_clients: l.counters.bytes_from_clients,
                bytes_from_backends: l.counters.bytes_to_clients,
            })
            .collect();
        Ok((snap, Some((a, b))))
    }

    fn stats(&self) -> Result<Value, CtlError> {
        let (snap, cores) = self.gather()?;
        let mut v = serde_json::to_value(&snap).map_err(|e| CtlError::internal(e.to_string()))?;
        if let Some((a, b)) = cores {
            // The cores' own counters, every one, beside the summary above.
            v["core_a"] = client_counters(&a);
            v["core_b"] = server_counters(&b);
            v["listener_state"] = Value::Array(
                a.listeners
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        json!({
                            "listener": self.listener_name(u16::try_from(i).unwrap_or(u16::MAX)),
                            "policy": l.policy.as_str(),
                            "draining": l.draining,
                            "refused_draining": l.counters.refused_draining,
                        })
                    })
                    .collect(),
            );
            v["backends"] = Value::Array(
                a.listeners
                    .iter()
                    .enumerate()
                    .flat_map(|(i, l)| {
                        let name = self.listener_name(u16::try_from(i).unwrap_or(u16::MAX));
                        l.backends.iter().map(move |b| {
                            json!({
                                "listener": name,
                                "addr": b.addr.to_string(),
                                "weight": b.weight,
                                "state": b.state().as_str(),
                                "active_flows": b.active,
                            })
                        })
                    })
                    .collect(),
            );
        }
        Ok(v)
    }

    fn flows(&self, args: &FlowsArgs) -> Result<Value, CtlError> {
        if !self.serving() {
            return Err(self.not_serving("flows"));
        }
        let filter = FlowFilter {
            listener: match &args.listener {
                Some(l) => Some(self.listener_index(l)?),
                None => None,
            },
            phase: args.state.map(|s| match s {
                WirePhase::Opening => FlowPhase::Opening,
                WirePhase::Established => FlowPhase::Established,
                WirePhase::Closing => FlowPhase::Closing,
            }),
            peer: args.peer.map(|p| (p.ip, p.port)),
        };
        let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
        match self.ask(0, Command::Flows { filter, limit })? {
            Answer::Flows(list) => {
                let truncated = list.len() >= limit;
                Ok(json!({
                    "flows": list.iter().map(|f| self.flow_json(f)).collect::<Vec<_>>(),
                    "truncated": truncated,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    fn flow_json(&self, f: &FlowSummary) -> Value {
        json!({
            "id": f.id,
            "listener": self.listener_name(f.listener),
            "client": f.client.to_string(),
            "vip": f.vip.to_string(),
            "backend": f.backend.map(|b| b.to_string()),
            "policy": f.policy.as_str(),
            "state": phase_str(f.phase),
            "tcp_state": f.state.map(|s| format!("{s:?}")),
            "withheld_bytes": f.withheld_bytes,
            "bytes_from_client": f.bytes_from_client,
            "bytes_to_client": f.bytes_to_client,
        })
    }

    fn flow(&self, id: u64) -> Result<Value, CtlError> {
        if !self.serving() {
            return Err(self.not_serving("flow"));
        }
        match self.ask(0, Command::Flow { id })? {
            Answer::Flow(Some(d)) => {
                let mut v = self.flow_detail_json(&d);
                // The server half lives on core B; a flow still connecting has none yet.
                v["server_half"] = match d.server_flow {
                    Some(sid) => match self.ask(1, Command::Flow { id: sid })? {
                        Answer::ServerHalf(Some(h)) => server_half_json(&h),
                        Answer::ServerHalf(None) => Value::Null,
                        other => return Err(unexpected(other)),
                    },
                    None => Value::Null,
                };
                Ok(v)
            }
            Answer::Flow(None) => Err(CtlError::invalid_argument(format!(
                "args.id: no flow {id} (it may have closed; `flows` lists the open ones)"
            ))),
            other => Err(unexpected(other)),
        }
    }

    fn flow_detail_json(&self, d: &FlowDetail) -> Value {
        let mut v = self.flow_json(&d.summary);
        v["client_half"] = d.engine.as_ref().map_or(Value::Null, engine_json);
        v["relay"] = json!({
            "server_flow": d.server_flow,
            "c2s_sent": d.c2s_sent,
            "c2s_acked_by_backend": d.c2s_done,
            "c2s_fin_forwarded": d.fin_forwarded,
            "s2c_backlog": d.s2c_backlog,
            "s2c_next": d.s2c_next,
            "s2c_acked_by_client": d.s2c_acked_told,
            "s2c_fin": d.s2c_fin,
        });
        v["standby"] = json!(d.standby);
        v
    }

    fn set(&self, args: &SetArgs) -> Result<Value, CtlError> {
        let restart = |param: &str, field: &str| {
            Err(CtlError::unavailable(format!(
                "{param} cannot change while the box runs: the replication channel and the failure detector \
                 read it at start. Set [replication] {field} in the config file and restart the box \
                 (the standby first)"
            )))
        };
        match args {
            SetArgs::HeartbeatIntervalMs { .. } => restart("heartbeat_interval_ms", "heartbeat_interval_us"),
            SetArgs::MissThreshold { .. } => restart("miss_threshold", "miss_threshold"),
            SetArgs::BatchSize { .. } => restart("batch_size", "batch_size"),
            SetArgs::FlushDeadlineUs { .. } => restart("flush_deadline_us", "flush_deadline_us"),
            SetArgs::LogLevel { level } => match &self.log {
                Some(f) => {
                    f(*level).map_err(CtlError::internal)?;
                    Ok(json!({"param": "log_level", "level": level_str(*level), "applied": true}))
                }
                None => Err(CtlError::unavailable("this box's log level is not adjustable at run time")),
            },
            SetArgs::AckPolicy { listener, policy } => {
                if !self.serving() {
                    return Err(self.not_serving("set ack_policy"));
                }
                let li = self.listener_index(listener)?;
                let p = match policy {
                    WireAckPolicy::None => AckPolicy::None,
                    WireAckPolicy::Backend => AckPolicy::Backend,
                    WireAckPolicy::Replica => AckPolicy::Replica,
                    WireAckPolicy::App => AckPolicy::App,
                };
                self.done(0, Command::SetPolicy { listener: li, policy: p })?;
                Ok(json!({
                    "param": "ack_policy", "listener": listener, "policy": p.as_str(), "applied": true,
                    "note": "new flows get this policy; open flows keep the one they started with",
                }))
            }
            SetArgs::Backend { action, listener, addr, weight } => {
                if !self.serving() {
                    return Err(self.not_serving("set backend"));
                }
                let li = self.listener_index(listener)?;
                let op = match action {
                    BackendAction::Add => BackendOp::Add,
                    BackendAction::Remove => BackendOp::Remove,
                    BackendAction::Drain => BackendOp::Drain,
                };
                self.done(0, Command::Backend { listener: li, op, addr: *addr, weight: *weight })?;
                let mut v = json!({
                    "param": "backend", "listener": listener, "addr": addr.to_string(),
                    "action": match action { BackendAction::Add => "add", BackendAction::Remove => "remove", BackendAction::Drain => "drain" },
                    "applied": true,
                });
                if *action == BackendAction::Add {
                    v["note"] = json!("a backend added at run time is not health-checked until the box restarts with it in the config");
                }
                Ok(v)
            }
        }
    }

    fn drain(&self, args: &DrainArgs) -> Result<Value, CtlError> {
        if !self.serving() {
            return Err(self.not_serving("drain"));
        }
        let li = match &args.listener {
            Some(l) => Some(self.listener_index(l)?),
            None => None,
        };
        self.done(0, Command::Drain { listener: li })?;
        let active = |a: &ClientSnapshot| -> u64 {
            match li {
                Some(i) => a.listeners.get(usize::from(i)).map_or(0, |l| l.active_flows),
                None => a.flows as u64,
            }
        };
        let mut remaining = active(&self.client_snapshot()?);
        if let Some(ms) = args.timeout_ms {
            // Waits on this control thread only; the cores keep serving.
            let until = std::time::Instant::now() + Duration::from_millis(ms);
            while remaining > 0 && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
                remaining = active(&self.client_snapshot()?);
            }
        }
        Ok(json!({
            "draining": args.listener.clone().unwrap_or_else(|| "all".into()),
            "active_flows": remaining,
            "drained": remaining == 0,
        }))
    }

    fn capture(&self, args: &CaptureArgs) -> Result<Value, CtlError> {
        let core = match args.port {
            PortName::Client => 0,
            PortName::Server => 1,
            PortName::Replication => {
                return Err(CtlError::unavailable(
                    "capture on the replication port is not supported yet: the replication channel owns that port",
                ))
            }
        };
        if !self.serving() {
            return Err(self.not_serving("capture"));
        }
        {
            let jobs = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
            if jobs.iter().any(|j| j.port == args.port && !j.done.load(Ordering::Acquire)) {
                return Err(CtlError::unavailable(format!(
                    "a capture of the {} port is already running",
                    port_str(args.port)
                )));
            }
        }
        let snaplen = args.snaplen.unwrap_or(crate::ctl::protocol::limits::CAPTURE_SNAPLEN.1);
        let mut file = open_capture_file(&args.file)?;
        let (tx, rx) = crossbeam_channel::bounded::<CapturedFrame>(CAPTURE_QUEUE);
        if let Err(e) = write_pcap_header(&mut file, snaplen) {
            let _ = std::fs::remove_file(&args.file);
            return Err(CtlError::unavailable(format!("args.file: {}: {e}", args.file.display())));
        }
        if let Err(e) = self.done(core, Command::Capture { count: args.count, snaplen, sink: tx }) {
            let _ = std::fs::remove_file(&args.file);
            return Err(e);
        }
        let job = CaptureJob {
            port: args.port,
            file: args.file.clone(),
            wanted: args.count,
            written: Arc::new(AtomicU64::new(0)),
            done: Arc::new(AtomicBool::new(false)),
            error: Arc::new(Mutex::new(None)),
        };
        let (written, done, error) = (job.written.clone(), job.done.clone(), job.error.clone());
        let base = self.wall_base;
        std::thread::Builder::new()
            .name("ctl-capture".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                // Ends when the core drops its sender: the count is reached or the box stops.
                for frame in rx {
                    if let Err(e) = write_pcap_record(&mut out, base, &frame) {
                        *error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                        break;
                    }
                    written.fetch_add(1, Ordering::AcqRel);
                }
                if let Err(e) = out.flush() {
                    *error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                }
                done.store(true, Ordering::Release);
            })
            .map_err(|e| CtlError::internal(format!("cannot start the capture writer: {e}")))?;
        let mut jobs = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        // Keep the finished ones of the last few captures for `status`.
        if jobs.len() >= 8 {
            if let Some(i) = jobs.iter().position(|j| j.done.load(Ordering::Acquire)) {
                jobs.remove(i);
            }
        }
        jobs.push(job);
        Ok(json!({
            "port": port_str(args.port),
            "file": args.file.display().to_string(),
            "count": args.count,
            "snaplen": snaplen,
            "started": true,
            "note": "frames the port receives and sends; `status` shows the progress",
        }))
    }

    fn metrics(&self) -> Result<Value, CtlError> {
        Ok(json!({"content_type": PROMETHEUS_CONTENT_TYPE, "text": self.metrics_text()?}))
    }

    /// Prometheus text of a fresh `stats` snapshot (the HTTP listener serves the same).
    pub fn metrics_text(&self) -> Result<String, CtlError> {
        Ok(stats::prometheus::render(&self.stats_snapshot()?))
    }

    /// The box's clock, for callers that time things against it.
    pub fn clock(&self) -> MonotonicClock {
        self.clock
    }
}

impl ControlHandler for BoxControl {
    fn handle(&self, req: Request) -> Result<Value, CtlError> {
        match req {
            Request::Status(_) => self.status(),
            Request::Stats(_) => self.stats(),
            Request::Flows(a) => self.flows(&a),
            Request::Flow(a) => self.flow(a.id),
            Request::Set(a) => self.set(&a),
            Request::Switchover(a) => match &self.switchover {
                Some(f) => f(&a),
                None => Err(CtlError::unavailable(
                    "switchover is not available here: only a primary replicating to a standby can hand over",
                )),
            },
            Request::Drain(a) => self.drain(&a),
            Request::Capture(a) => self.capture(&a),
            Request::Metrics(_) => self.metrics(),
        }
    }
}

/// An answer of the wrong kind: the core's refusal, or a bug.
fn unexpected(answer: Answer) -> CtlError {
    match answer {
        Answer::Done(Err(e)) => control_error(e),
        other => CtlError::internal(format!("unexpected answer {other:?}")),
    }
}

fn control_error(e: ControlError) -> CtlError {
    match e {
        ControlError::Policy(..)
        | ControlError::NoPool
        | ControlError::NoSuchBackend
        | ControlError::Pool(_) => CtlError::invalid_argument(e.to_string()),
        ControlError::NoSuchListener => CtlError::invalid_argument(format!("args.listener: {e}")),
        ControlError::CaptureBusy | ControlError::Busy | ControlError::NotSynced => {
            CtlError::unavailable(e.to_string())
        }
        ControlError::WrongCore => CtlError::internal(e.to_string()),
    }
}

fn port_stats(
    p: &dataplane::port::PortStats,
    io: &dataplane::proxy::IoStats,
    not_for_us: u64,
    no_flow: u64,
    rejected: &BTreeMap<&'static str, u64>,
) -> PortStats {
    let sum = |pat: &str| io.bad_frames.iter().filter(|(k, _)| k.contains(pat)).map(|(_, v)| *v).sum::<u64>();
    let checksum = sum("checksum");
    // Well-formed frames of a kind this box does not serve (IPv6, UDP, ARP for hardware it does not
    // speak): not malformed, just not for us.
    let unsupported = sum("unsupported");
    let malformed = io.bad_total().saturating_sub(checksum).saturating_sub(unsupported);
    let not_for_us = not_for_us.saturating_add(unsupported);
    let drops = DropCause::ALL
        .iter()
        .map(|&c| {
            let n = match c {
                DropCause::Malformed => malformed,
                DropCause::Checksum => checksum,
                DropCause::NotForUs => not_for_us,
                DropCause::NoFlow => no_flow,
                DropCause::TableFull => 0,
                DropCause::TxRingFull => io.tx_ring_full,
                DropCause::Rejected => rejected.values().sum(),
            };
            (c.as_str().to_string(), n)
        })
        .collect();
    PortStats {
        rx_packets: p.rx_packets,
        rx_bytes: p.rx_bytes,
        tx_packets: p.tx_packets,
        tx_bytes: p.tx_bytes,
        drops,
    }
}

fn engine_json(e: &EngineState) -> Value {
    json!({
        "tcp_state": format!("{:?}", e.state),
        "iss": e.iss, "irs": e.irs,
        "snd_una": e.snd_una, "snd_max": e.snd_max, "snd_wnd": e.snd_wnd,
        "rcv_nxt": e.rcv_nxt, "ack_sent": e.ack_sent, "ack_limit": e.ack_limit,
        "recv_available": e.recv_available, "send_queue": e.send_queue,
        "segs_in": e.counters.segs_in, "segs_out": e.counters.segs_out,
        "retransmitted_segs": e.counters.retransmitted_segs,
        "fast_retransmits": e.counters.fast_retransmits,
        "timeouts": e.counters.timeouts,
        "out_of_order_segs": e.counters.out_of_order_segs,
    })
}

fn server_half_json(h: &ServerHalfDetail) -> Value {
    let mut v = engine_json(&h.engine);
    let extra = json!({
        "snat": h.snat.to_string(),
        "backend": h.backend.to_string(),
        "connected": h.connected,
        "c2s_next": h.c2s_next,
        "c2s_backlog": h.c2s_backlog,
        "c2s_acked_by_backend": h.c2s_acked_told,
        "c2s_fin": h.c2s_fin,
        "s2c_sent": h.s2c_sent,
        "s2c_acked_by_client": h.s2c_done,
        "s2c_fin_forwarded": h.fin_forwarded,
    });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

fn counters_map(m: &BTreeMap<&'static str, u64>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

fn client_counters(a: &ClientSnapshot) -> Value {
    let s = &a.stats;
    json!({
        "flows": a.flows,
        "flows_opened": s.flows_opened, "flows_established": s.flows_established,
        "flows_closed": s.flows_closed, "flows_reset": s.flows_reset, "flows_refused": s.flows_refused,
        "table_full": s.table_full, "no_listener": s.no_listener, "stray_segments": s.stray_segments,
        "pending_drops": s.pending_drops, "segment_errors": counters_map(&s.segment_errors),
        "arp_replies": s.arp_replies, "icmp_replies": s.icmp_replies, "ignored_frames": s.ignored_frames,
        "stale_messages": s.stale_messages, "backpressure": s.backpressure,
        "bytes_from_clients": s.bytes_from_clients, "bytes_to_clients": s.bytes_to_clients,
        "app_aborts": s.app_aborts, "unprotected": s.unprotected, "relay_gaps": s.relay_gaps,
        "degraded_flows": s.degraded_flows,
        "bad_frames": counters_map(&a.io.bad_frames),
        "alloc_failed": a.io.alloc_failed, "build_failed": a.io.build_failed,
        "capture_taken": a.capture.taken, "capture_dropped": a.capture.dropped,
    })
}

fn server_counters(b: &ServerSnapshot) -> Value {
    let s = &b.stats;
    json!({
        "flows": b.flows,
        "flows_opened": s.flows_opened, "flows_connected": s.flows_connected,
        "flows_refused": s.flows_refused, "flows_closed": s.flows_closed, "flows_reset": s.flows_reset,
        "snat_exhausted": s.snat_exhausted, "syn_retries": s.syn_retries, "relay_gaps": s.relay_gaps,
        "table_full": s.table_full, "stray_segments": s.stray_segments,
        "segment_errors": counters_map(&s.segment_errors),
        "arp_replies": s.arp_replies, "arp_requests": s.arp_requests, "unresolved": s.unresolved,
        "icmp_replies": s.icmp_replies, "ignored_frames": s.ignored_frames,
        "stale_messages": s.stale_messages, "backpressure": s.backpressure,
        "health_probes": s.health_probes,
        "bytes_from_backends": s.bytes_from_backends, "bytes_to_backends": s.bytes_to_backends,
        "bad_frames": counters_map(&b.io.bad_frames),
        "alloc_failed": b.io.alloc_failed, "build_failed": b.io.build_failed,
        "capture_taken": b.capture.taken, "capture_dropped": b.capture.dropped,
    })
}

fn phase_str(p: FlowPhase) -> &'static str {
    match p {
        FlowPhase::Opening => "opening",
        FlowPhase::Established => "established",
        FlowPhase::Closing => "closing",
    }
}

fn port_str(p: PortName) -> &'static str {
    match p {
        PortName::Client => "client",
        PortName::Server => "server",
        PortName::Replication => "replication",
    }
}

fn level_str(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Off => "off",
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    }
}

/// Creates the capture file: never over an existing file or through a symlink (the daemon may run as
/// root, the path comes from a client), and readable by its owner only.
fn open_capture_file(path: &std::path::Path) -> Result<std::fs::File, CtlError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        // O_CREAT|O_EXCL also refuses a symlink in the last component.
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::AlreadyExists => "exists; a capture never overwrites a file".to_string(),
                std::io::ErrorKind::NotFound => "its directory does not exist".to_string(),
                _ => e.to_string(),
            };
            CtlError::invalid_argument(format!("args.file: {}: {why}", path.display()))
        })
}

/// The pcap global header (microsecond timestamps, Ethernet frames), little-endian.
fn write_pcap_header(w: &mut impl Write, snaplen: u32) -> std::io::Result<()> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&snaplen.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    w.write_all(&h)
}

fn write_pcap_record(
    w: &mut impl Write,
    base: (SystemTime, Instant),
    f: &CapturedFrame,
) -> std::io::Result<()> {
    let since = f.at.saturating_duration_since(base.1);
    let wall = base.0.checked_add(since).unwrap_or(base.0);
    let t = wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let caplen = u32::try_from(f.data.len()).unwrap_or(u32::MAX);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
    h[8..12].copy_from_slice(&caplen.to_le_bytes());
    h[12..16].copy_from_slice(&f.orig_len.to_le_bytes());
    w.write_all(&h)?;
    w.write_all(&f.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::protocol::{FlowsArgs, NoArgs};
    use crate::ctl::ErrorCode;
    use dataplane::proxy::control::{control_channel, REQUEST_QUEUE};

    #[test]
    fn a_core_that_does_not_answer_gets_a_clear_error_never_a_hang() {
        let (tx_a, port_a) = control_channel();
        let (tx_b, _port_b) = control_channel();
        let ctl = BoxControl::new(&Config::demo(), MonotonicClock::new(), [tx_a, tx_b], None)
            .unwrap()
            .with_core_timeout(Duration::from_millis(1));
        let e = ctl.handle(Request::Status(NoArgs {})).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(e.message.contains("core A did not answer within"), "{e}");
        // Unanswered requests stay queued; once the queue is full the asker fails at once.
        for _ in 1..REQUEST_QUEUE {
            let _ = ctl.handle(Request::Status(NoArgs {}));
        }
        let e = ctl.handle(Request::Flows(FlowsArgs::default())).unwrap_err();
        assert!(e.code == ErrorCode::Unavailable && e.message.contains("too many control requests"), "{e}");
        drop(port_a);
        let e = ctl.handle(Request::Status(NoArgs {})).unwrap_err();
        assert!(e.code == ErrorCode::Unavailable && e.message.contains("not running"), "{e}");
    }

    #[test]
    fn a_watching_standby_answers_status_and_stats_and_says_why_not_the_rest() {
        let (tx_a, _a) = control_channel();
        let (tx_b, _b) = control_channel();
        let view = Arc::new(StandbyView::default());
        let ctl = BoxControl::new(&Config::demo(), MonotonicClock::new(), [tx_a, tx_b], Some(view.clone()))
            .unwrap()
            .with_core_timeout(Duration::from_millis(1));
        let s = ctl.handle(Request::Status(NoArgs {})).unwrap();
        assert_eq!((s["role"].as_str(), s["peer"].as_str()), (Some("standby"), Some("joining")), "{s}");
        view.publish(|i| {
            i.heard_primary = true;
            i.stored_flows = 7;
        });
        let s = ctl.handle(Request::Status(NoArgs {})).unwrap();
        assert_eq!((s["peer"].as_str(), s["stored_flows"].as_u64()), (Some("up"), Some(7)), "{s}");
        let st = ctl.handle(Request::Stats(NoArgs {})).unwrap();
        assert_eq!(st["latency"]["takeover"]["count"], 0, "{st}");
        assert!(ctl.handle(Request::Metrics(NoArgs {})).unwrap()["text"].is_string());
        for req in [
            Request::Flows(FlowsArgs::default()),
            Request::Drain(Default::default()),
            Request::Set(SetArgs::AckPolicy { listener: "x".into(), policy: WireAckPolicy::None }),
        ] {
            let e = ctl.handle(req).unwrap_err();
            assert!(e.code == ErrorCode::Unavailable && e.message.contains("standby"), "{e}");
        }
        view.publish_now(|i| {
            i.failed = Some("no buffers".into());
        });
        let s = ctl.handle(Request::Status(NoArgs {})).unwrap();
        assert_eq!((s["role"].as_str(), s["failure"].as_str()), (Some("failed"), Some("no buffers")), "{s}");
    }

    #[test]
    fn pcap_records_carry_wall_time_and_both_lengths() {
        let mut out = Vec::new();
        write_pcap_header(&mut out, 128).unwrap();
        let base = (SystemTime::UNIX_EPOCH + Duration::from_secs(1_000), Instant::from_millis(10));
        let f = CapturedFrame { at: Instant::from_millis(1_510), orig_len: 60, data: vec![0xab; 20] };
        write_pcap_record(&mut out, base, &f).unwrap();
        assert_eq!(out.len(), 24 + 16 + 20);
        assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(out[16..20].try_into().unwrap()), 128, "snaplen");
        assert_eq!(u32::from_le_bytes(out[24..28].try_into().unwrap()), 1_001, "seconds");
        assert_eq!(u32::from_le_bytes(out[28..32].try_into().unwrap()), 500_000, "microseconds");
        assert_eq!(u32::from_le_bytes(out[32..36].try_into().unwrap()), 20, "captured");
        assert_eq!(u32::from_le_bytes(out[36..40].try_into().unwrap()), 60, "on the wire");
    }
}
