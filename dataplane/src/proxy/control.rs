//! The protocol cores' control port: how the control thread asks a pinned core for its counters and its
//! flows, or for a change (the ack policy of new flows, backends, drain, packet capture), without a lock and
//! without ever making the core wait.
//!
//! Each core owns a [`CoreControl`]. When the box attaches a [`ControlPort`] (the receiving end of a small
//! bounded channel, made by [`control_channel`]), the core drains it with `try_recv` once per step, at most
//! [`COMMANDS_PER_STEP`] requests, so a flood of requests costs any one step a bounded amount of work. Every
//! [`CoreRequest`] carries its own reply channel of capacity one; the core answers with `try_send`, which
//! never blocks (an asker that gave up is simply not answered). The asker waits off the core, with a timeout.
//!
//! Answers that walk the flow table (`Snapshot`'s per-listener gauges, `Flows`) walk it [`SCAN_CHUNK`]
//! slots per step, however big the table, and answer when the walk is done: a million-flow table costs
//! a few hundred short steps, never one long one.
//!
//! Packet capture ([`CaptureSlot`], in the core's port I/O) copies the first `snaplen` bytes of each frame
//! the port receives or sends into a bounded channel that a
//! writer thread of the box empties into a pcap file: the core never touches a file, and when the writer
//! falls behind, frames are counted as dropped rather than waited for.
//!
//! Latency is sampled, not traced per byte: a few [`Probes`] at a time follow one byte each, from the
//! moment its flow is serviced with it unacknowledged to the ACK that covers it (ACK hold), and one
//! flow-opened record each from its offer to the standby's confirmation (replication round trip). The
//! samples wait in a bounded buffer for the control thread; the core never touches a histogram.
//!
//! [`LogLimiter`] keeps hot-path logging (a flood of malformed frames) to a few lines a second, each
//! reporting how many were suppressed since the last.

use super::{ClientStats, IoStats, ServerStats};
use crate::balance::{Backend, PoolError};
use crate::gate::AckPolicy;
use crate::port::PortStats;
use crate::tcp::{Counters, State};
use crate::time::{Duration, Instant};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Requests a core takes per step at most; more wait for the next step.
pub const COMMANDS_PER_STEP: usize = 4;
/// Requests queued toward one core at most; a full queue makes the asker fail fast, never the core wait.
pub const REQUEST_QUEUE: usize = 64;
/// Captured frames queued toward the writer at most; beyond this they are counted as dropped.
pub const CAPTURE_QUEUE: usize = 4096;
/// Flow-table slots a walk covers per step.
pub const SCAN_CHUNK: usize = 4096;

/// Coarse phase of a flow, as `flows` filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowPhase {
    /// Waiting for the backend or the handshake.
    Opening,
    Established,
    /// A FIN or RST went either way.
    Closing,
}

impl FlowPhase {
    pub fn of(state: Option<State>) -> FlowPhase {
        match state {
            None | Some(State::SynSent | State::SynReceived) => FlowPhase::Opening,
            Some(State::Established) => FlowPhase::Established,
            Some(_) => FlowPhase::Closing,
        }
    }
}

/// Which flows `flows` lists; every set field must match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub listener: Option<u16>,
    pub phase: Option<FlowPhase>,
    /// Either peer (client or backend): an address, and a port if given.
    pub peer: Option<(Ipv4Addr, Option<u16>)>,
}

impl FlowFilter {
    pub fn matches(&self, listener: u16, phase: FlowPhase, peers: &[SocketAddrV4]) -> bool {
        self.listener.is_none_or(|l| l == listener)
            && self.phase.is_none_or(|p| p == phase)
            && self.peer.is_none_or(|(ip, port)| {
                peers.iter().any(|a| *a.ip() == ip && port.is_none_or(|p| p == a.port()))
            })
    }
}

/// What to do with a backend of a listener's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOp {
    /// Into the pool (or back into it after a remove or a drain).
    Add,
    /// Out of the pool for new flows, for good (its weight goes to zero); existing flows finish.
    Remove,
    /// No new flows; existing flows finish.
    Drain,
}

/// One frame a capture took, cut to the capture's snap length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// When the core received it, on the box's clock.
    pub at: Instant,
    /// The frame's full length on the wire.
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// What the control thread asks of a core.
#[derive(Debug)]
pub enum Command {
    /// Counters and gauges ([`Answer::Client`] from core A, [`Answer::Server`] from core B).
    Snapshot,
    /// Only the latency samples gathered since the last time ([`Answer::Samples`], core A): cheap, for
    /// collecting them before the core's buffer fills.
    Samples,
    /// Up to `limit` flows that pass the filter (core A).
    Flows { filter: FlowFilter, limit: usize },
    /// One flow's full state, by the id `Flows` shows (core A), or its server half by the id core A
    /// names in `FlowDetail::server_flow` (core B, [`Answer::ServerHalf`]).
    Flow { id: u64 },
    /// The ack policy of the listener's new flows from now on (core A); flows already open keep theirs.
    SetPolicy { listener: u16, policy: AckPolicy },
    /// A change to a listener's pool of backends (core A).
    Backend { listener: u16, op: BackendOp, addr: SocketAddrV4, weight: Option<u32> },
    /// Refuse new flows (one listener, or all when `None`) and let open ones finish (core A).
    Drain { listener: Option<u16> },
    /// Copy the next `count` received frames, cut to `snaplen` bytes, into `sink`.
    Capture { count: u32, snaplen: u32, sink: Sender<CapturedFrame> },
    /// A planned switchover: stop taking frames in (core A also offers every flow's progress now), or take
    /// them in again when the switchover is called off (both cores).
    Intake { stop: bool },
    /// Whether the standby confirmed everything core A offered: `Done(Ok)` when synced, else
    /// [`ControlError::NotSynced`] (core A).
    Synced,
}

/// A core's answer.
#[derive(Debug)]
pub enum Answer {
    Client(Box<ClientSnapshot>),
    Server(Box<ServerSnapshot>),
    Flows(Vec<FlowSummary>),
    Flow(Option<Box<FlowDetail>>),
    ServerHalf(Option<Box<ServerHalfDetail>>),
    Samples { ack_hold_ns: Vec<u64>, replication_rtt_ns: Vec<u64> },
    Done(Result<(), ControlError>),
}

/// Why a core refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no listener with that index on this box")]
    NoSuchListener,
    #[error("this core does not serve that command")]
    WrongCore,
    #[error("policy {0} is not available at run time: {1}")]
    Policy(AckPolicy, &'static str),
    #[error("the listener is served by an application and has no backends")]
    NoPool,
    #[error("backend pool: {0}")]
    Pool(PoolError),
    #[error("that backend is not in the listener's pool")]
    NoSuchBackend,
    #[error("a capture is already running on this port")]
    CaptureBusy,
    #[error("the core has too many requests waiting for a walk of its flow table; try again")]
    Busy,
    #[error("the standby has not yet confirmed everything offered to it")]
    NotSynced,
}

/// Per-listener counters that the control port keeps for core A.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerCounters {
    pub flows_opened: u64,
    pub flows_closed: u64,
    /// New flows refused: no backend eligible or reachable, or the listener draining.
    pub flows_refused: u64,
    /// Of those, refused because the listener (or the box) is draining.
    pub refused_draining: u64,
    /// Flows that ended in a reset (either peer's, or a timeout).
    pub flows_reset: u64,
    /// Payload bytes of closed flows (open flows are added at snapshot time).
    pub bytes_from_clients: u64,
    pub bytes_to_clients: u64,
}

/// One listener as core A sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// The policy its new flows get.
    pub policy: AckPolicy,
    pub draining: bool,
    pub active_flows: u64,
    /// Bytes received from clients and not yet acknowledged to them.
    pub withheld_bytes: u64,
    pub counters: ListenerCounters,
    /// The pool (empty for an application listener).
    pub backends: Vec<Backend>,
}

/// A capture's progress on one core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStatus {
    pub active: bool,
    /// Frames handed to the writer, over all captures.
    pub taken: u64,
    /// Frames a full writer queue lost, over all captures.
    pub dropped: u64,
}

/// Core A's counters and gauges at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSnapshot {
    pub at: Instant,
    pub stats: ClientStats,
    pub io: IoStats,
    pub port: PortStats,
    pub flows: usize,
    pub listeners: Vec<ListenerSnapshot>,
    /// `None` without replication; else whether a standby is attached and keeping up.
    pub standby_attached: Option<bool>,
    pub draining_all: bool,
    pub capture: CaptureStatus,
    /// Latency samples (nanoseconds) since the last snapshot, and how many were dropped in all.
    pub ack_hold_ns: Vec<u64>,
    pub replication_rtt_ns: Vec<u64>,
    pub samples_dropped: u64,
}

/// Core B's counters and gauges at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSnapshot {
    pub at: Instant,
    pub stats: ServerStats,
    pub io: IoStats,
    pub port: PortStats,
    pub flows: usize,
    pub capture: CaptureStatus,
}

/// One line of `flows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSummary {
    pub id: u64,
    pub listener: u16,
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub backend: Option<SocketAddrV4>,
    pub policy: AckPolicy,
    pub phase: FlowPhase,
    /// The client half's TCP state (`None` while the backend is being connected).
    pub state: Option<State>,
    pub withheld_bytes: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
}

/// The client half's engine, as `flow` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineState {
    pub state: State,
    pub iss: u32,
    pub irs: u32,
    pub snd_una: u32,
    pub snd_max: u32,
    pub snd_wnd: u32,
    pub rcv_nxt: u32,
    pub ack_sent: u32,
    pub ack_limit: Option<u32>,
    pub recv_available: usize,
    pub send_queue: usize,
    pub counters: Counters,
}

impl EngineState {
    /// One engine's state as the control socket shows it.
    pub fn of(c: &crate::tcp::Connection) -> EngineState {
        EngineState {
            state: c.state(),
            iss: c.iss(),
            irs: c.irs(),
            snd_una: c.snd_una(),
            snd_max: c.snd_max(),
            snd_wnd: c.snd_wnd(),
            rcv_nxt: c.rcv_nxt(),
            ack_sent: c.ack_sent(),
            ack_limit: c.ack_limit(),
            recv_available: c.recv_available(),
            send_queue: c.send_queue_len(),
            counters: *c.counters(),
        }
    }
}

/// One flow's full state on core A: the client half, the relay and where the standby stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDetail {
    pub summary: FlowSummary,
    pub engine: Option<EngineState>,
    /// Core B's id of the server half.
    pub server_flow: Option<u64>,
    pub c2s_sent: u64,
    pub c2s_done: u64,
    pub fin_forwarded: bool,
    pub s2c_backlog: usize,
    pub s2c_next: u64,
    pub s2c_acked_told: u64,
    pub s2c_fin: bool,
    /// `not_replicated`, `to_offer`, `waiting` or `confirmed`.
    pub standby: &'static str,
}

/// What a walk of the flow table adds up per listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub active_flows: u64,
    pub withheld_bytes: u64,
    pub bytes_from_clients: u64,
    pub bytes_to_clients: u64,
}

/// What a walk of the flow table is for.
#[derive(Debug)]
pub(crate) enum ScanKind {
    Census(Vec<Tally>),
    Flows { filter: FlowFilter, limit: usize, found: Vec<FlowSummary> },
}

/// A walk of the flow table in progress, and the requests waiting for it.
#[derive(Debug)]
pub(crate) struct Scan {
    pub kind: ScanKind,
    pub cursor: usize,
    pub waiting: Vec<CoreRequest>,
}

/// A flow's server half on core B, as `flow` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHalfDetail {
    pub snat: SocketAddrV4,
    pub backend: SocketAddrV4,
    pub connected: bool,
    pub engine: EngineState,
    /// Client bytes handed to the engine, waiting for room, and what the backend acknowledged.
    pub c2s_next: u64,
    pub c2s_backlog: usize,
    pub c2s_acked_told: u64,
    pub c2s_fin: bool,
    /// Backend bytes handed to core A, and what the client acknowledged of them.
    pub s2c_sent: u64,
    pub s2c_done: u64,
    pub fin_forwarded: bool,
}

/// One request to a core with the channel its answer goes back on.
#[derive(Debug)]
pub struct CoreRequest {
    pub command: Command,
    reply: Sender<Answer>,
}

impl CoreRequest {
    /// A request and the receiver its answer arrives on.
    pub fn new(command: Command) -> (CoreRequest, Receiver<Answer>) {
        let (reply, rx) = crossbeam_channel::bounded(1);
        (CoreRequest { command, reply }, rx)
    }

    /// Sends the answer without ever blocking: an asker that stopped waiting is not answered.
    pub fn answer(self, answer: Answer) {
        let _ = self.reply.try_send(answer);
    }
}

/// The core's end of the control channel.
#[derive(Debug)]
pub struct ControlPort {
    rx: Receiver<CoreRequest>,
}

/// A control channel: the sender for the control thread, the port to attach to a core.
pub fn control_channel() -> (Sender<CoreRequest>, ControlPort) {
    let (tx, rx) = crossbeam_channel::bounded(REQUEST_QUEUE);
    (tx, ControlPort { rx })
}

#[derive(Debug)]
struct Capture {
    remaining: u32,
    snaplen: usize,
    sink: Sender<CapturedFrame>,
}

/// A port's packet capture: idle, or taking the next frames in and out of the port. Lives beside the
/// port in the core's I/O, so both directions pass through it.
#[derive(Debug, Default)]
pub struct CaptureSlot {
    capture: Option<Capture>,
    taken: u64,
    dropped: u64,
}

impl CaptureSlot {
    /// Hands a frame to a running capture.
    #[inline]
    pub fn tap(&mut self, now: Instant, frame: &[u8]) {
        let Some(cap) = self.capture.as_mut() else { return };
        let data = frame.get(..cap.snaplen.min(frame.len())).unwrap_or(frame).to_vec();
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let done = match cap.sink.try_send(CapturedFrame { at: now, orig_len, data }) {
            Ok(()) => {
                self.taken += 1;
                cap.remaining = cap.remaining.saturating_sub(1);
                cap.remaining == 0
            }
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                false
            }
            // The writer is gone (its file failed, or the box stops): the capture ends.
            Err(TrySendError::Disconnected(_)) => true,
        };
        if done {
            // Dropping the sender tells the writer the capture is complete.
            self.capture = None;
        }
    }

    #[inline]
    pub fn is_active(&self) -> bool {
        self.capture.is_some()
    }

    pub fn start(
        &mut self,
        count: u32,
        snaplen: u32,
        sink: Sender<CapturedFrame>,
    ) -> Result<(), ControlError> {
        if self.capture.is_some() {
            return Err(ControlError::CaptureBusy);
        }
        if count > 0 {
            let snaplen = usize::try_from(snaplen).unwrap_or(usize::MAX).max(1);
            self.capture = Some(Capture { remaining: count, snaplen, sink });
        }
        Ok(())
    }

    pub fn status(&self) -> CaptureStatus {
        CaptureStatus { active: self.capture.is_some(), taken: self.taken, dropped: self.dropped }
    }
}

/// Keeps a log line on a hot path to at most `per_second` a second; the first line after a quiet spell
/// says how many were left out.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    per_second: u32,
    window: Instant,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(per_second: u32) -> LogLimiter {
        LogLimiter { per_second, window: Instant::ZERO, in_window: 0, suppressed: 0 }
    }

    /// `Some(lines suppressed since the last one logged)` when this line may be logged, else `None`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if now >= self.window + Duration::from_secs(1) {
            self.window = now;
            self.in_window = 0;
        }
        if self.in_window < self.per_second {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

/// Probes of each kind in flight at once per core.
pub const PROBES: usize = 8;
/// Samples kept for the control thread per kind; beyond this they are counted as dropped.
pub const SAMPLES: usize = 4096;
/// A new ACK-hold probe starts at most this often.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// A probe that has not completed after this long is abandoned (its flow closed, or was reset).
pub const PROBE_MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Probe {
    flow: u64,
    /// ACK hold: the sequence number the ACK must reach.
    target: u32,
    since: Instant,
}

/// A few latency probes of one kind and the samples they produced (nanoseconds).
#[derive(Debug)]
pub struct Probes {
    slots: [Option<Probe>; PROBES],
    next_start: Instant,
    samples: Vec<u64>,
    /// Samples lost to a full buffer (nobody read them in time).
    pub dropped: u64,
    /// Probes that never completed (their flow ended first).
    pub abandoned: u64,
}

impl Default for Probes {
    fn default() -> Self {
        Probes {
            slots: [None; PROBES],
            next_start: Instant::ZERO,
            samples: Vec::with_capacity(SAMPLES),
            dropped: 0,
            abandoned: 0,
        }
    }
}

impl Probes {
    fn record(&mut self, nanos: u64) {
        if self.samples.len() < SAMPLES {
            self.samples.push(nanos);
        } else {
            self.dropped += 1;
        }
    }

    /// The probe following `flow`, if any.
    fn find(&mut self, flow: u64) -> Option<&mut Option<Probe>> {
        self.slots.iter_mut().find(|s| s.is_some_and(|p| p.flow == flow))
    }

    /// Starts a probe if a slot is free (or holds one too old to ever complete).
    fn start(&mut self, probe: Probe) {
        let now = probe.since;
        for slot in &mut self.slots {
            match slot {
                None => {
                    *slot = Some(probe);
                    return;
                }
                Some(p) if now >= p.since + PROBE_MAX_AGE => {
                    self.abandoned += 1;
                    *slot = Some(probe);
                    return;
                }
                Some(_) => {}
            }
        }
    }

    /// The samples so far, for the control thread; the buffer starts over.
    pub fn take_samples(&mut self) -> Vec<u64> {
        std::mem::replace(&mut self.samples, Vec::with_capacity(SAMPLES))
    }
}

/// Lines a second that a core logs about bad input at most.
pub const BAD_INPUT_LOG_RATE: u32 = 5;

/// A core's control state: the attached port (if any), run-time overrides, and counters only the control
/// plane reads. Every method the fast path calls is a branch on data the core owns.
#[derive(Debug)]
pub struct CoreControl {
    port: Option<ControlPort>,
    policies: Vec<Option<AckPolicy>>,
    draining: Vec<bool>,
    drain_all: bool,
    pub(crate) counters: Vec<ListenerCounters>,
    pub(crate) bad_input_log: LogLimiter,
    pub(crate) ack_hold: Probes,
    pub(crate) replication_rtt: Probes,
    pub(crate) scan: Option<Scan>,
    /// Requests that need a walk of their own, waiting for the running one.
    pub(crate) deferred: std::collections::VecDeque<CoreRequest>,
}

impl CoreControl {
    pub fn new(listeners: usize) -> CoreControl {
        CoreControl {
            port: None,
            policies: vec![None; listeners],
            draining: vec![false; listeners],
            drain_all: false,
            counters: vec![ListenerCounters::default(); listeners],
            bad_input_log: LogLimiter::new(BAD_INPUT_LOG_RATE),
            ack_hold: Probes::default(),
            replication_rtt: Probes::default(),
            scan: None,
            deferred: std::collections::VecDeque::new(),
        }
    }

    /// Called when a flow has been serviced: completes its ACK-hold probe once the ACK sent covers the
    /// probed byte, or starts one (now and then) on a byte still unacknowledged.
    #[inline]
    pub fn ack_probe(&mut self, now: Instant, flow: u64, rcv_nxt: u32, ack_sent: u32) {
        let p = &mut self.ack_hold;
        if let Some(slot) = p.find(flow) {
            if let Some(probe) = *slot {
                if crate::gate::seq_le(probe.target, ack_sent) {
                    *slot = None;
                    p.record(now.saturating_duration_since(probe.since).as_nanos() as u64);
                }
            }
            return;
        }
        if now >= p.next_start && crate::gate::seq_lt(ack_sent, rcv_nxt) {
            p.next_start = now + PROBE_INTERVAL;
            p.start(Probe { flow, target: rcv_nxt, since: now });
        }
    }

    /// A flow's record was offered to the standby.
    #[inline]
    pub fn replication_offered(&mut self, now: Instant, flow: u64) {
        let p = &mut self.replication_rtt;
        if p.find(flow).is_none() {
            p.start(Probe { flow, target: 0, since: now });
        }
    }

    /// The standby confirmed a flow's record.
    #[inline]
    pub fn replication_confirmed(&mut self, now: Instant, flow: u64) {
        let p = &mut self.replication_rtt;
        if let Some(slot) = p.find(flow) {
            if let Some(probe) = slot.take() {
                p.record(now.saturating_duration_since(probe.since).as_nanos() as u64);
            }
        }
    }

    pub fn attach(&mut self, port: ControlPort) {
        self.port = Some(port);
    }

    /// The next request, if one waits and this step has room for it (`taken` so far this step).
    pub(crate) fn next_request(&mut self, taken: usize) -> Option<CoreRequest> {
        if taken >= COMMANDS_PER_STEP {
            return None;
        }
        self.port.as_ref()?.rx.try_recv().ok()
    }

    /// Whether a new flow on `listener` is admitted (not draining).
    #[inline]
    pub fn admits(&self, listener: u16) -> bool {
        !self.drain_all && !self.draining.get(usize::from(listener)).copied().unwrap_or(false)
    }

    /// The policy the listener's new flows get, if changed at run time.
    #[inline]
    pub fn policy(&self, listener: u16) -> Option<AckPolicy> {
        self.policies.get(usize::from(listener)).copied().flatten()
    }

    #[inline]
    pub fn count_refused(&mut self, listener: u16) {
        if let Some(c) = self.counters.get_mut(usize::from(listener)) {
            c.flows_refused += 1;
        }
    }

    #[inline]
    pub fn count_refused_draining(&mut self, listener: u16) {
        if let Some(c) = self.counters.get_mut(usize::from(listener)) {
            c.flows_refused += 1;
            c.refused_draining += 1;
        }
    }

    #[inline]
    pub fn count_reset(&mut self, listener: u16) {
        if let Some(c) = self.counters.get_mut(usize::from(listener)) {
            c.flows_reset += 1;
        }
    }

    #[inline]
    pub fn count_opened(&mut self, listener: u16) {
        if let Some(c) = self.counters.get_mut(usize::from(listener)) {
            c.flows_opened += 1;
        }
    }

    #[inline]
    pub fn count_closed(&mut self, listener: u16, from_client: u64, to_client: u64) {
        if let Some(c) = self.counters.get_mut(usize::from(listener)) {
            c.flows_closed += 1;
            c.bytes_from_clients = c.bytes_from_clients.wrapping_add(from_client);
            c.bytes_to_clients = c.bytes_to_clients.wrapping_add(to_client);
        }
    }

    pub(crate) fn set_policy(&mut self, listener: u16, policy: AckPolicy) -> Result<(), ControlError> {
        let slot = self.policies.get_mut(usize::from(listener)).ok_or(ControlError::NoSuchListener)?;
        *slot = Some(policy);
        Ok(())
    }

    pub(crate) fn drain(&mut self, listener: Option<u16>) -> Result<(), ControlError> {
        match listener {
            None => self.drain_all = true,
            Some(l) => {
                *self.draining.get_mut(usize::from(l)).ok_or(ControlError::NoSuchListener)? = true;
            }
        }
        Ok(())
    }

    pub(crate) fn draining(&self, listener: u16) -> bool {
        !self.admits(listener)
    }

    pub(crate) fn draining_all(&self) -> bool {
        self.drain_all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_a_few_lines_a_second_through_and_counts_the_rest() {
        let mut l = LogLimiter::new(3);
        let t0 = Instant::from_millis(10);
        let got: Vec<Option<u64>> = (0..10).map(|i| l.allow(t0 + Duration::from_millis(i))).collect();
        assert_eq!(got[..3], [Some(0), Some(0), Some(0)]);
        assert!(got[3..].iter().all(Option::is_none));
        // A second later the first line reports the seven left out.
        assert_eq!(l.allow(t0 + Duration::from_millis(1001)), Some(7));
        assert_eq!(l.allow(t0 + Duration::from_millis(1002)), Some(0));
    }

    #[test]
    fn a_capture_takes_count_frames_cut_to_snaplen_then_ends() {
        let mut c = CaptureSlot::default();
        let (tx, rx) = crossbeam_channel::bounded(2);
        c.start(3, 4, tx.clone()).unwrap();
        assert_eq!(c.start(1, 4, tx), Err(ControlError::CaptureBusy));
        let now = Instant::from_millis(5);
        c.tap(now, &[1, 2, 3, 4, 5, 6]);
        c.tap(now, &[7, 8]);
        // The writer is behind: this one is dropped and counted, not waited for.
        c.tap(now, &[9; 10]);
        assert_eq!(c.status(), CaptureStatus { active: true, taken: 2, dropped: 1 });
        let first = rx.recv().unwrap();
        assert_eq!((first.orig_len, first.data), (6, vec![1, 2, 3, 4]));
        assert_eq!(rx.recv().unwrap().data, vec![7, 8]);
        c.tap(now, &[10; 3]);
        assert!(!c.status().active, "three frames taken: the capture is over");
        assert_eq!(rx.recv().unwrap().data, vec![10; 3]);
        assert!(rx.recv().is_err(), "the sender is dropped when the capture ends");
    }

    #[test]
    fn ack_hold_probes_time_one_byte_from_service_to_its_ack() {
        let mut c = CoreControl::new(1);
        let t = |ms| Instant::from_millis(ms);
        // Nothing withheld: no probe.
        c.ack_probe(t(1), 7, 100, 100);
        // 50 bytes withheld on flow 7: a probe on byte 149.
        c.ack_probe(t(2), 7, 150, 100);
        // Too soon for another probe on flow 8.
        c.ack_probe(t(3), 8, 10, 5);
        c.ack_probe(t(5), 7, 200, 149);
        assert!(c.ack_hold.take_samples().is_empty(), "not yet covered");
        c.ack_probe(t(9), 7, 200, 150);
        assert_eq!(c.ack_hold.take_samples(), vec![7_000_000]);
        // Sequence numbers wrap.
        c.ack_probe(t(20), 9, 5, u32::MAX - 5);
        c.ack_probe(t(21), 9, 9, 6);
        assert_eq!(c.ack_hold.take_samples(), vec![1_000_000]);
        // Replication: offer to confirmation; a second offer of the same flow keeps the first time.
        c.replication_offered(t(30), 1);
        c.replication_offered(t(31), 1);
        c.replication_confirmed(t(33), 1);
        c.replication_confirmed(t(34), 2);
        assert_eq!(c.replication_rtt.take_samples(), vec![3_000_000]);
        // Probes whose flow went away are reused after PROBE_MAX_AGE.
        for f in 0..PROBES as u64 {
            c.replication_offered(t(40), 100 + f);
        }
        c.replication_offered(t(41), 999);
        c.replication_confirmed(t(42), 999);
        assert!(c.replication_rtt.take_samples().is_empty(), "every slot busy: not probed");
        let later = t(40) + PROBE_MAX_AGE;
        c.replication_offered(later, 999);
        c.replication_confirmed(later + Duration::from_millis(1), 999);
        assert_eq!((c.replication_rtt.take_samples(), c.replication_rtt.abandoned), (vec![1_000_000], 1));
    }

    #[test]
    fn drain_and_policy_overrides_apply_per_listener() {
        let mut c = CoreControl::new(2);
        assert!(c.admits(0) && c.admits(1));
        c.drain(Some(1)).unwrap();
        assert!(c.admits(0) && !c.admits(1));
        assert_eq!(c.drain(Some(2)), Err(ControlError::NoSuchListener));
        c.set_policy(0, AckPolicy::None).unwrap();
        assert_eq!((c.policy(0), c.policy(1)), (Some(AckPolicy::None), None));
        c.drain(None).unwrap();
        assert!(!c.admits(0) && c.draining_all());
        let f = FlowFilter { listener: Some(0), phase: None, peer: Some((Ipv4Addr::new(1, 2, 3, 4), None)) };
        let a = SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 80);
        assert!(f.matches(0, FlowPhase::Established, &[a]));
        assert!(!f.matches(1, FlowPhase::Established, &[a]));
        assert!(!f.matches(0, FlowPhase::Opening, &[SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80)]));
    }
}
