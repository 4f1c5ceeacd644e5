//! One connection half: its state, the stream API, the ack gate, timers and events.
//!
//! Segment input lives in `input.rs`, segment output in `output.rs`, export/import in `save.rs`; this file
//! holds the state they share and everything the owner calls between packets.

use super::buffer::{RecvBuffer, SendBuffer};
use super::config::Config;
use super::congestion::{Congestion, CongestionControl};
use super::isn;
use super::rtt::RttEstimator;
use super::scoreboard::Scoreboard;
use super::seq;
use crate::time::{Duration, Instant};
use crate::wire::TcpRepr;
use std::net::SocketAddrV4;

/// The RFC 9293 connection states (LISTEN lives in the proxy's flow table, not here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            State::Closed => 0,
            State::SynSent => 1,
            State::SynReceived => 2,
            State::Established => 3,
            State::FinWait1 => 4,
            State::FinWait2 => 5,
            State::CloseWait => 6,
            State::Closing => 7,
            State::LastAck => 8,
            State::TimeWait => 9,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<State> {
        Some(match v {
            0 => State::Closed,
            1 => State::SynSent,
            2 => State::SynReceived,
            3 => State::Established,
            4 => State::FinWait1,
            5 => State::FinWait2,
            6 => State::CloseWait,
            7 => State::Closing,
            8 => State::LastAck,
            9 => State::TimeWait,
            _ => return None,
        })
    }

    /// Whether the handshake is complete (the states in which both ISNs are known and acknowledged).
    pub fn is_synchronized(self) -> bool {
        !matches!(self, State::Closed | State::SynSent | State::SynReceived)
    }
}

/// Something the owner of a connection should know about; collected with [`Connection::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed.
    Connected,
    /// The peer's FIN arrived in order: no more bytes will come.
    PeerClosed,
    /// Both directions are closed and the connection is done (after TIME-WAIT or LAST-ACK).
    Closed,
    /// The peer reset the connection.
    Reset,
    /// The peer stopped answering (SYN retries, data retries or the idle timeout ran out); an RST was sent.
    TimedOut,
    /// In resync mode after a restore, the peer acknowledged `to`, beyond what the snapshot knew was sent
    /// (`from` was SND.UNA). SND.UNA and SND.NXT jumped there; `unbuffered` of the skipped bytes were never
    /// in this engine's send buffer, so the owner must skip them in the stream it feeds to `send` — poll
    /// events before calling `send` again.
    SendResynced { from: u32, to: u32, unbuffered: u32 },
}

/// Why a segment was not (fully) accepted. Every case is counted; none is fatal to the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("connection is closed")]
    Closed,
    #[error("segment outside the receive window")]
    OutOfWindow,
    #[error("timestamp older than the last one seen (PAWS)")]
    Paws,
    #[error("in-window RST or SYN answered with a challenge ACK")]
    Challenged,
    #[error("unacceptable acknowledgment number")]
    BadAck,
    #[error("segment without ACK in a synchronized state")]
    NoAck,
    #[error("unexpected segment for the handshake state")]
    Handshake,
    #[error("new SYN for a 4-tuple in TIME-WAIT; the owner may replace this connection")]
    TimeWaitSyn,
    #[error("RST in TIME-WAIT ignored (RFC 1337)")]
    TimeWaitRst,
}

/// A segment to send: its header (payload empty; the bytes are in the caller's buffer) and payload length.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub repr: TcpRepr<'static>,
    /// Bytes copied into the `payload_out` slice given to [`Connection::poll_transmit`].
    pub payload_len: usize,
}

/// Counters of one connection; the owner sums them into its statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub segs_in: u64,
    pub segs_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub retransmitted_segs: u64,
    pub fast_retransmits: u64,
    pub timeouts: u64,
    pub dup_acks_in: u64,
    pub out_of_order_segs: u64,
    pub duplicate_segs: u64,
    pub dropped_segs: u64,
    pub challenge_acks: u64,
    pub window_probes: u64,
}

const EVENT_SLOTS: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EventQueue {
    slots: [Option<Event>; EVENT_SLOTS],
    head: usize,
    len: usize,
}

impl EventQueue {
    pub(crate) fn push(&mut self, e: Event) {
        if self.len == EVENT_SLOTS {
            // Oldest events matter least once eight newer ones are waiting; the owner polls every packet.
            self.head = (self.head + 1) % EVENT_SLOTS;
            self.len -= 1;
        }
        self.slots[(self.head + self.len) % EVENT_SLOTS] = Some(e);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Event> {
        if self.len == 0 {
            return None;
        }
        let e = self.slots[self.head].take();
        self.head = (self.head + 1) % EVENT_SLOTS;
        self.len -= 1;
        e
    }
}

/// One TCP connection half, sans IO. See the module docs of [`crate::tcp`] for the calling pattern.
#[derive(Debug)]
pub struct Connection {
    pub(crate) cfg: Config,
    pub(crate) local: SocketAddrV4,
    pub(crate) remote: SocketAddrV4,
    pub(crate) state: State,
    pub(crate) iss: u32,
    pub(crate) irs: u32,
    pub(crate) relay_offset: u32,

    // Send side.
    pub(crate) snd_una: u32,
    pub(crate) snd_nxt: u32,
    pub(crate) snd_max: u32,
    pub(crate) snd_wnd: u32,
    pub(crate) snd_wl1: u32,
    pub(crate) snd_wl2: u32,
    pub(crate) max_snd_wnd: u32,
    pub(crate) send_buf: SendBuffer,
    pub(crate) fin_queued: bool,
    /// Our FIN was acknowledged (SND.UNA is then one past it).
    pub(crate) fin_acked: bool,
    pub(crate) peer_mss: u16,
    pub(crate) snd_wscale: u8,
    pub(crate) rcv_wscale: u8,
    pub(crate) wscale_ok: bool,
    pub(crate) sack_ok: bool,
    pub(crate) ts_ok: bool,

    // Timestamps (RFC 7323): TSval = now in ms + ts_offset.
    pub(crate) ts_offset: u32,
    pub(crate) ts_recent: u32,
    pub(crate) ts_last: u32,
    /// Echoes below this are from before a restore and give no RTT sample.
    pub(crate) ts_floor: u32,

    // Receive side.
    pub(crate) recv_buf: RecvBuffer,
    pub(crate) rcv_acked: u32,
    pub(crate) rcv_adv: u32,
    pub(crate) ack_limit: Option<u32>,
    pub(crate) fin_pending: Option<u32>,
    pub(crate) peer_fin_seen: bool,

    // What output owes.
    pub(crate) syn_pending: bool,
    pub(crate) ack_now: bool,
    pub(crate) delack_deadline: Option<Instant>,
    pub(crate) unacked_segs: u32,
    pub(crate) dupacks_to_send: u8,
    /// RCV.NXT when a pure ACK last showed the peer's send edge beyond it (see `process_data`).
    pub(crate) gap_reported_at: Option<u32>,
    /// The first of the duplicate ACKs advertises one window unit less (see `request_fast_retransmit`).
    pub(crate) dupack_run_break: bool,
    pub(crate) challenge_pending: bool,
    pub(crate) challenge_window: (Instant, u32),
    pub(crate) probe_pending: bool,
    /// After a takeover: probes repeat (with backoff) until the peer is heard, since a peer may ignore
    /// one (rate-limited challenge ACKs) and an idle peer says nothing by itself.
    pub(crate) probe_until_heard: bool,
    pub(crate) probe_deadline: Option<Instant>,
    pub(crate) probe_interval: Duration,
    pub(crate) rst_pending: bool,
    pub(crate) force_probe: bool,

    // Timers.
    pub(crate) rto_deadline: Option<Instant>,
    pub(crate) persist_deadline: Option<Instant>,
    pub(crate) persist_backoff: u32,
    /// A window update that reopened a shut window: resent until the peer sends again (see `after_read`).
    pub(crate) reopen_arm: bool,
    pub(crate) reopen_deadline: Option<Instant>,
    pub(crate) reopen_from: u32,
    pub(crate) reopen_tries: u8,
    pub(crate) time_wait_deadline: Option<Instant>,
    pub(crate) last_rx: Instant,
    pub(crate) retries: u8,
    pub(crate) rtt: RttEstimator,
    pub(crate) rtt_seq: Option<(u32, Instant)>,

    // Congestion and loss recovery.
    pub(crate) cc: Congestion,
    pub(crate) dupacks: u32,
    pub(crate) in_recovery: bool,
    pub(crate) recover: u32,
    pub(crate) rec_cwnd: u32,
    pub(crate) high_rxt: u32,
    pub(crate) rexmit_pending: bool,
    pub(crate) scoreboard: Scoreboard,

    /// After a restore: an ACK beyond SND.MAX moves the send edges instead of being refused.
    pub(crate) resync: bool,
    /// Resync mode lasts until then: the peer may still hold, out of order, bytes the old box sent, and
    /// acknowledge them whenever a hole below them fills.
    pub(crate) resync_until: Instant,
    pub(crate) events: EventQueue,
    pub(crate) counters: Counters,
}

impl Connection {
    pub(crate) fn blank(
        now: Instant,
        cfg: &Config,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: u32,
    ) -> Self {
        let mss = u32::from(cfg.mss.max(64));
        let cwnd = cfg.initial_window_segments.max(1).saturating_mul(mss);
        Connection {
            cfg: cfg.clone(),
            local,
            remote,
            state: State::Closed,
            iss,
            irs: 0,
            relay_offset: 0,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            snd_wl1: 0,
            snd_wl2: iss,
            max_snd_wnd: 0,
            send_buf: SendBuffer::new(cfg.send_buffer),
            fin_queued: false,
            fin_acked: false,
            peer_mss: 536,
            snd_wscale: 0,
            rcv_wscale: 0,
            wscale_ok: false,
            sack_ok: false,
            ts_ok: false,
            ts_offset: isn::ts_offset(&cfg.isn_secret, local, remote),
            ts_recent: 0,
            ts_last: 0,
            ts_floor: 0,
            recv_buf: RecvBuffer::new(cfg.recv_buffer, cfg.max_ooo_ranges, 0),
            rcv_acked: 0,
            rcv_adv: 0,
            ack_limit: None,
            fin_pending: None,
            peer_fin_seen: false,
            syn_pending: false,
            ack_now: false,
            delack_deadline: None,
            unacked_segs: 0,
            dupacks_to_send: 0,
            gap_reported_at: None,
            dupack_run_break: false,
            challenge_pending: false,
            challenge_window: (now, 0),
            probe_pending: false,
            probe_until_heard: false,
            probe_deadline: None,
            probe_interval: Duration::from_millis(50),
            rst_pending: false,
            force_probe: false,
            rto_deadline: None,
            persist_deadline: None,
            persist_backoff: 0,
            reopen_arm: false,
            reopen_deadline: None,
            reopen_from: 0,
            reopen_tries: 0,
            time_wait_deadline: None,
            last_rx: now,
            retries: 0,
            rtt: RttEstimator::new(cfg.rto_initial, cfg.rto_min, cfg.rto_max),
            rtt_seq: None,
            cc: Congestion::new(cfg.congestion, cwnd, u32::MAX),
            dupacks: 0,
            in_recovery: false,
            recover: iss,
            rec_cwnd: 0,
            high_rxt: iss,
            rexmit_pending: false,
            scoreboard: Scoreboard::default(),
            resync: false,
            resync_until: now,
            events: EventQueue::default(),
            counters: Counters::default(),
        }
    }

    /// Active open: the SYN goes out on the next [`poll_transmit`](Self::poll_transmit).
    pub fn connect(
        now: Instant,
        cfg: &Config,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        iss: u32,
    ) -> Connection {
        let mut c = Connection::blank(now, cfg, local, remote, iss);
        c.state = State::SynSent;
        c.syn_pending = true;
        c
    }

    /// Passive open from a client's SYN. The SYN-ACK goes out once the ack limit covers the SYN (at once
    /// when there is no limit). Returns `Err(Handshake)` when `syn` is not a plain SYN.
    pub fn accept(
        now: Instant,
        cfg: &Config,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        syn: &TcpRepr<'_>,
        iss: u32,
    ) -> Result<Connection, SegmentError> {
        use crate::wire::TcpFlags;
        if !syn.flags.contains(TcpFlags::SYN)
            || syn.flags.intersects(TcpFlags::ACK | TcpFlags::RST | TcpFlags::FIN)
        {
            return Err(SegmentError::Handshake);
        }
        let mut c = Connection::blank(now, cfg, local, remote, iss);
        c.state = State::SynReceived;
        c.take_syn_options(syn);
        c.set_irs(syn.seq);
        c.snd_wnd = u32::from(syn.window);
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = syn.seq;
        c.syn_pending = true;
        c.counters.segs_in += 1;
        Ok(c)
    }

    /// Negotiates options from the peer's SYN (or SYN-ACK), each only if both sides want it.
    pub(crate) fn take_syn_options(&mut self, syn: &TcpRepr<'_>) {
        let o = &syn.options;
        self.peer_mss = o.mss.unwrap_or(536).max(64);
        match o.window_scale {
            Some(ws) if self.cfg.window_scaling => {
                self.snd_wscale = ws.min(14);
                self.rcv_wscale = self.cfg.rcv_wscale();
                self.wscale_ok = true;
            }
            _ => {
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
                self.wscale_ok = false;
            }
        }
        self.sack_ok = self.cfg.sack && o.sack_permitted;
        match o.timestamps {
            Some(ts) if self.cfg.timestamps => {
                self.ts_ok = true;
                self.ts_recent = ts.tsval;
            }
            _ => self.ts_ok = false,
        }
    }

    pub(crate) fn set_irs(&mut self, irs: u32) {
        self.irs = irs;
        let start = irs.wrapping_add(1);
        self.recv_buf = RecvBuffer::new(self.cfg.recv_buffer, self.cfg.max_ooo_ranges, start);
        self.rcv_acked = irs;
        self.rcv_adv = start;
    }

    // ----- Stream API -----

    /// Queues bytes for sending; returns how many fit in the send buffer. Nothing is queued after
    /// [`close`](Self::close) or once the connection is closed.
    pub fn send(&mut self, data: &[u8]) -> usize {
        if self.fin_queued || matches!(self.state, State::Closed | State::TimeWait) {
            return 0;
        }
        self.send_buf.push(data)
    }

    /// Room left in the send buffer.
    pub fn send_capacity(&self) -> usize {
        if self.fin_queued {
            0
        } else {
            self.send_buf.free()
        }
    }

    /// Bytes in the send buffer: unacknowledged plus not yet sent.
    pub fn send_queue_len(&self) -> usize {
        self.send_buf.len()
    }

    /// Copies buffered send bytes, starting `offset` bytes after SND.UNA, into `out`; returns how many.
    /// This is what [`restore`](Self::restore) takes back (`offset` 0, everything).
    pub fn send_buffered(&self, offset: usize, out: &mut [u8]) -> usize {
        self.send_buf.copy_out(offset, out)
    }

    /// Copies received in-order bytes out; returns how many. Reading does not acknowledge them: that is
    /// the ack limit's business.
    pub fn recv(&mut self, out: &mut [u8]) -> usize {
        let n = self.recv_buf.read(out);
        if n > 0 {
            self.after_read();
        }
        n
    }

    /// The received in-order bytes, as up to two slices; consume them with [`recv_consume`](Self::recv_consume).
    pub fn recv_peek(&self) -> (&[u8], &[u8]) {
        self.recv_buf.peek()
    }

    /// Consumes up to `n` peeked bytes; returns how many.
    pub fn recv_consume(&mut self, n: usize) -> usize {
        let n = self.recv_buf.consume(n);
        if n > 0 {
            self.after_read();
        }
        n
    }

    /// In-order bytes waiting to be read.
    pub fn recv_available(&self) -> usize {
        self.recv_buf.readable()
    }

    /// Whether the peer's FIN has been received in order (and all bytes before it can be read).
    pub fn is_recv_closed(&self) -> bool {
        self.peer_fin_seen
    }

    fn after_read(&mut self) {
        // Tell the peer about the space the read freed once it is worth a segment (receiver-side SWS
        // avoidance, RFC 9293 §3.8.6.2.2).
        // Only as far as the window field can say.
        let max_wnd = u32::from(u16::MAX) << self.rcv_wscale;
        let edge = seq::min(self.recv_buf.right_edge(), self.ack_target().wrapping_add(max_wnd));
        let grown = seq::dist(self.rcv_adv, edge);
        let threshold = (self.recv_buf.capacity() as u32 / 2).min(2 * self.eff_mss());
        // After the peer's FIN nothing more can come, so the window means nothing; an update sent then may
        // reach a peer whose socket is already gone (a Linux passive closer after its FIN was acked), and
        // earns a RST.
        if self.state.is_synchronized() && !self.peer_fin_seen && grown >= threshold.max(1) {
            self.ack_now = true;
            // The update that reopens a window the peer saw as (nearly) shut is the only thing that
            // restarts the peer; if it is lost, a peer that does not probe zero windows waits forever.
            // So it is repeated, with backoff, until the peer sends again.
            let open = seq::dist(self.recv_buf.nxt(), self.rcv_adv);
            if open < self.eff_mss() {
                self.reopen_arm = true;
            }
        }
    }

    /// Sends FIN once everything queued has been sent.
    pub fn close(&mut self) {
        match self.state {
            State::SynSent => {
                self.state = State::Closed;
            }
            State::SynReceived | State::Established => {
                self.fin_queued = true;
                if self.state == State::Established {
                    self.state = State::FinWait1;
                }
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Resets the connection: an RST goes out on the next poll and the connection is closed.
    pub fn abort(&mut self) {
        if self.state != State::Closed && self.state != State::SynSent && self.state != State::TimeWait {
            self.rst_pending = true;
        }
        self.enter_closed();
    }

    pub(crate) fn enter_closed(&mut self) {
        self.state = State::Closed;
        self.rto_deadline = None;
        self.persist_deadline = None;
        self.delack_deadline = None;
        self.time_wait_deadline = None;
        self.ack_now = false;
        self.syn_pending = false;
    }

    // ----- Ack gate -----

    /// Sets the highest sequence number this side may acknowledge (`None`: no limit, plain TCP). The ACK
    /// number never goes back, so a limit below what was already acknowledged holds the ACK where it is.
    pub fn set_ack_limit(&mut self, limit: Option<u32>) {
        let before = self.ack_target();
        self.ack_limit = limit;
        if seq::gt(self.ack_target(), before) {
            self.ack_now = true;
        }
    }

    /// Raises the limit to `s` (never lowers it); with no limit set, nothing changes.
    pub fn allow_ack_up_to(&mut self, s: u32) {
        if let Some(l) = self.ack_limit {
            self.set_ack_limit(Some(seq::max(l, s)));
        }
    }

    pub fn ack_limit(&self) -> Option<u32> {
        self.ack_limit
    }

    /// The contiguous receive edge (RCV.NXT), including a received FIN.
    pub fn rcv_nxt(&self) -> u32 {
        self.recv_buf.nxt()
    }

    /// The last acknowledgment number sent to the peer.
    pub fn ack_sent(&self) -> u32 {
        self.rcv_acked
    }

    /// Out-of-order ranges held above [`rcv_nxt`](Self::rcv_nxt), sorted.
    pub fn ooo_ranges(&self) -> &[(u32, u32)] {
        self.recv_buf.ooo_ranges()
    }

    /// Moves RCV.NXT forward to `s` over bytes known to be delivered elsewhere (takeover); bytes below are
    /// forgotten and later copies of them are acknowledged and discarded.
    pub fn advance_rcv_edge(&mut self, s: u32) {
        if !self.state.is_synchronized() || !seq::gt(s, self.recv_buf.nxt()) {
            return;
        }
        self.recv_buf.advance_to(s);
        if let Some(f) = self.fin_pending {
            if seq::lt(f, s) {
                self.fin_pending = None;
            }
        }
        self.check_fin_pending();
        self.ack_now = true;
        if self.resync {
            // After a takeover this is the first ACK at the peer's real edge: it makes the peer
            // fast-retransmit what it sent into the dead box at once, instead of waiting for its RTO.
            // (A Linux peer that negotiated SACK counts no duplicates without SACK blocks and resends on
            // its RTO, >= 200 ms, whatever we send.)
            self.request_fast_retransmit();
        }
    }

    /// Queues a fresh run of duplicate ACKs that makes the peer fast-retransmit what it sent past
    /// RCV.NXT (after a takeover: into the dead box). Fresh: the dead box may already have sent the
    /// peer three or more duplicates of this ACK, and a peer counts a run only once (RFC 5681 §3.2;
    /// smoltcp even fires at exactly the third), so a run that merely continues that one does nothing —
    /// and a peer in LAST-ACK whose FIN was lost then never sends it again (smoltcp 0.12 stops its
    /// retransmission timer on every ACK that does not cover the FIN). The first ACK advertises one
    /// window unit less, which ends any run at the peer (a duplicate carries the same window, RFC 5681
    /// §2 (e)); the next restores the window, and three duplicates follow it. The first ACK usually
    /// also moves the peer's SND.UNA (the dead box had acknowledged less). Exactly three, no more: a
    /// smoltcp 0.12 peer in LAST-ACK cancels the retransmission the third one started on any ACK that
    /// follows it before it sends (measured: seven in a run fix fewer sweep seeds than five).
    pub(crate) fn request_fast_retransmit(&mut self) {
        self.dupacks_to_send = 5;
        self.dupack_run_break = true;
    }

    /// The ACK number output would use now: RCV.NXT cut at the limit, never below what was sent.
    pub(crate) fn ack_target(&self) -> u32 {
        let edge = self.recv_buf.nxt();
        let t = match self.ack_limit {
            Some(l) if self.state != State::SynSent => seq::min(edge, l),
            _ => edge,
        };
        seq::max(t, self.rcv_acked)
    }

    // ----- Takeover -----

    /// Queues a segment (an ACK with SEQ = SND.UNA - 1, like a keepalive) that makes the peer answer with
    /// its real edges.
    pub fn probe(&mut self) {
        if self.state.is_synchronized() {
            self.probe_pending = true;
            self.probe_until_heard = true;
        }
    }

    /// Whether a restored connection still accepts ACKs beyond SND.MAX (for `Config::resync_window` after
    /// the restore; ends at the first segment processed after that).
    pub fn is_resyncing(&self) -> bool {
        self.resync
    }

    // ----- Inspection -----

    pub fn state(&self) -> State {
        self.state
    }
    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }
    pub fn remote(&self) -> SocketAddrV4 {
        self.remote
    }
    pub fn iss(&self) -> u32 {
        self.iss
    }
    pub fn irs(&self) -> u32 {
        self.irs
    }
    pub fn snd_una(&self) -> u32 {
        self.snd_una
    }
    /// The highest sequence number sent so far (SND.MAX; SND.NXT after a timeout rewinds below it).
    pub fn snd_max(&self) -> u32 {
        self.snd_max
    }
    /// The peer's window, in bytes.
    pub fn snd_wnd(&self) -> u32 {
        self.snd_wnd
    }
    pub fn cwnd(&self) -> u32 {
        if self.in_recovery {
            self.rec_cwnd
        } else {
            self.cc.cwnd()
        }
    }
    pub fn srtt(&self) -> Duration {
        self.rtt.srtt()
    }
    pub fn rto(&self) -> Duration {
        self.rtt.rto()
    }
    pub fn relay_offset(&self) -> u32 {
        self.relay_offset
    }
    /// The fixed offset from this half's sequence space to the other half's; opaque to the engine, saved
    /// with it.
    pub fn set_relay_offset(&mut self, off: u32) {
        self.relay_offset = off;
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Negotiated options: (peer MSS, send shift, receive shift, SACK, timestamps).
    pub fn negotiated(&self) -> (u16, u8, u8, bool, bool) {
        (self.peer_mss, self.snd_wscale, self.rcv_wscale, self.sack_ok, self.ts_ok)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    // ----- Time -----

    /// The next time [`handle_timeout`](Self::handle_timeout) should be called, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = match (self.state, self.cfg.idle_timeout) {
            (State::Closed | State::TimeWait, _) | (_, None) => None,
            (_, Some(d)) => Some(self.last_rx + d),
        };
        [
            self.rto_deadline,
            self.persist_deadline,
            self.delack_deadline,
            self.time_wait_deadline,
            self.reopen_deadline,
            self.probe_deadline,
            idle,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.time_wait_deadline.is_some_and(|t| t <= now) {
            self.enter_closed();
            self.events.push(Event::Closed);
            return;
        }
        if let Some(idle) = self.cfg.idle_timeout {
            if self.state != State::TimeWait && self.last_rx + idle <= now {
                self.time_out();
                return;
            }
        }
        if self.delack_deadline.is_some_and(|t| t <= now) {
            self.delack_deadline = None;
            self.ack_now = true;
        }
        if self.probe_deadline.is_some_and(|t| t <= now) {
            self.probe_deadline = None;
            if self.probe_until_heard {
                self.probe_pending = true;
                self.probe_interval = (self.probe_interval * 2).min(Duration::from_secs(2));
            }
        }
        if self.reopen_deadline.is_some_and(|t| t <= now) {
            if self.recv_buf.nxt() == self.reopen_from && self.reopen_tries < 6 {
                self.reopen_tries += 1;
                self.ack_now = true;
                let d = self.rtt.rto().saturating_mul(1u32 << self.reopen_tries).min(self.cfg.rto_max);
                self.reopen_deadline = Some(now + d);
            } else {
                self.reopen_deadline = None;
            }
        }
        if self.persist_deadline.is_some_and(|t| t <= now) {
            self.persist_deadline = None;
            self.persist_backoff = self.persist_backoff.saturating_add(1);
            self.force_probe = true;
        }
        if self.rto_deadline.is_some_and(|t| t <= now) {
            self.rto_deadline = None;
            self.on_rto(now);
        }
        self.update_timers(now);
    }

    fn time_out(&mut self) {
        let was_syn_sent = self.state == State::SynSent;
        self.enter_closed();
        self.rst_pending = !was_syn_sent;
        self.events.push(Event::TimedOut);
    }

    fn on_rto(&mut self, now: Instant) {
        self.retries = self.retries.saturating_add(1);
        self.counters.timeouts += 1;
        self.rtt.back_off();
        self.rtt_seq = None;
        match self.state {
            State::SynSent | State::SynReceived => {
                if self.retries > self.cfg.syn_retries {
                    self.time_out();
                } else {
                    self.syn_pending = true;
                }
            }
            _ => {
                if self.retries > self.cfg.max_retries {
                    self.time_out();
                    return;
                }
                if self.snd_una == self.snd_max {
                    return;
                }
                let flight = seq::dist(self.snd_una, self.snd_max);
                self.cc.on_timeout(now, flight, self.eff_mss());
                // Go back N (RFC 5681 §3.1, RFC 6675 §5.1).
                self.snd_nxt = self.snd_una;
                // Go-back-N skips what the peer SACKed. Receivers may renege on SACKed data (RFC 2018
                // §8), so a second timeout in a row forgets the scoreboard and resends everything.
                if self.retries > 1 {
                    self.scoreboard.clear();
                }
                self.in_recovery = false;
                self.rexmit_pending = false;
                self.dupacks = 0;
                self.recover = self.snd_max;
                self.high_rxt = self.snd_una;
                if self.snd_wnd == 0 {
                    // The peer's window is shut: the retransmission becomes a window probe (RFC 9293
                    // §3.8.6.1), so the peer hears our current window even if its own update was lost
                    // (a peer that never probes a zero window, like smoltcp, would otherwise wait forever).
                    self.force_probe = true;
                }
            }
        }
    }

    /// The most payload a segment carries before option space is taken off.
    pub(crate) fn eff_mss(&self) -> u32 {
        u32::from(self.peer_mss.min(self.cfg.mss).max(64))
    }

    /// Sequence number of our FIN (one past the last queued byte); meaningful once `fin_queued`.
    pub(crate) fn fin_seq(&self) -> u32 {
        if self.fin_acked {
            self.snd_una.wrapping_sub(1)
        } else {
            self.snd_una.wrapping_add(self.send_buf.len() as u32)
        }
    }

    pub(crate) fn fin_sent(&self) -> bool {
        self.fin_queued && (self.fin_acked || seq::gt(self.snd_max, self.fin_seq()))
    }

    /// Arms or clears the RTO and persist timers after input or output changed the send side.
    pub(crate) fn update_timers(&mut self, now: Instant) {
        if !self.state.is_synchronized() {
            return;
        }
        if self.probe_until_heard && self.probe_deadline.is_none() {
            self.probe_deadline = Some(now + self.probe_interval);
        }
        if self.reopen_arm {
            self.reopen_arm = false;
            self.reopen_tries = 0;
            self.reopen_from = self.recv_buf.nxt();
            self.reopen_deadline = Some(now + self.rtt.rto());
        } else if self.reopen_deadline.is_some() && self.recv_buf.nxt() != self.reopen_from {
            self.reopen_deadline = None;
        }
        if self.snd_una == self.snd_max {
            self.rto_deadline = None;
        } else if self.rto_deadline.is_none() {
            // RFC 6298 (5.1): while data is outstanding the retransmission timer runs.
            self.rto_deadline = Some(now + self.rtt.rto());
        }
        let unsent = seq::dist(self.snd_nxt, self.snd_una.wrapping_add(self.send_buf.len() as u32));
        let window_shut = seq::ge(self.snd_nxt, self.snd_una.wrapping_add(self.snd_wnd));
        // Persist (RFC 9293 §3.8.6.1) when data waits behind a shut window and no retransmission timer runs
        // (after a timeout rewound SND.NXT, the probe byte itself waits here).
        if unsent > 0 && window_shut && self.rto_deadline.is_none() {
            if self.persist_deadline.is_none() && !self.force_probe {
                let shift = self.persist_backoff.min(16);
                let d = self.rtt.rto().saturating_mul(1u32 << shift).min(self.cfg.rto_max);
                self.persist_deadline = Some(now + d);
            }
        } else {
            self.persist_deadline = None;
            if !window_shut {
                self.persist_backoff = 0;
            }
        }
    }

    pub(crate) fn check_fin_pending(&mut self) {
        if let Some(f) = self.fin_pending {
            if f == self.recv_buf.nxt() {
                self.fin_pending = None;
                self.recv_buf.skip_fin();
                self.peer_fin();
            }
        }
    }

    /// The peer's FIN is now in order.
    fn peer_fin(&mut self) {
        self.peer_fin_seen = true;
        self.ack_now = true;
        self.events.push(Event::PeerClosed);
        match self.state {
            State::SynReceived | State::Established => self.state = State::CloseWait,
            State::FinWait1 => {
                if self.fin_acked {
                    self.state = State::TimeWait;
                } else {
                    self.state = State::Closing;
                }
            }
            State::FinWait2 => self.state = State::TimeWait,
            _ => {}
        }
    }

    pub(crate) fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        // Nothing more is sent or read in TIME-WAIT: its storage goes back now, not when it ends (a busy
        // proxy has many more flows lingering here than established).
        self.send_buf.release();
        self.recv_buf.release();
        self.rto_deadline = None;
        self.persist_deadline = None;
        self.time_wait_deadline = Some(now + self.cfg.time_wait);
    }

    /// Whether a challenge ACK may go out now (RFC 5961 §7 rate limit, per connection).
    pub(crate) fn challenge(&mut self, now: Instant) {
        let (start, n) = self.challenge_window;
        let (start, n) = if now.saturating_duration_since(start) >= Duration::from_secs(1) {
            (now, 0)
        } else {
            (start, n)
        };
        if n < self.cfg.challenge_ack_limit {
            self.challenge_window = (start, n + 1);
            self.challenge_pending = true;
            self.counters.challenge_acks += 1;
        } else {
            self.challenge_window = (start, n);
        }
    }

    /// Our timestamp clock: milliseconds plus the per-connection offset.
    pub(crate) fn tsval(&self, now: Instant) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }
}
