//! The replication channel: the "additional stateful protocol connection" of one queue, sans-IO.
//!
//! One [`Channel`] is one end of a queue's link and is symmetric: it sends its own records (the primary's
//! deltas) and receives the peer's (the standby sends none, only acknowledgments and heartbeats).
//!
//! Sender: records are appended to an open batch; the batch becomes a frame with the next sequence
//! number when it holds `batch_records` records, when it is full, or `flush_delay` after its first record.
//! Frames stay in a bounded window (frames and bytes) until the peer acknowledges them; when the window is
//! full, [`Channel::offer`] refuses, and the caller's gate holds (state is never dropped). Lost frames are
//! resent after an RTO estimated from RTT samples as in RFC 6298 (Karn's rule, exponential backoff), or
//! at once after three duplicate acknowledgments. Each offered record carries a caller token; once the
//! peer's cumulative acknowledgment covers the record's frame the token comes out of
//! [`Channel::poll_confirmed`]: that is what releases the `replica` gate and the SYN-ACK gate.
//!
//! Receiver: frames are put in order (a bounded reorder buffer), duplicates are dropped, and batches are
//! handed out by [`Channel::poll_deliver`]. The acknowledgment covers only what was handed out, so a
//! confirmation always means "the standby's application took it" (the caller applies each batch to the
//! store before polling the next). Acknowledgments ride on outgoing frames or go alone after
//! `ack_delay` (at once when frames arrive out of order or twice, to trigger fast retransmission).
//!
//! Heartbeats go out every `heartbeat_interval`, even when idle, in unsequenced frames; a lost
//! heartbeat is not resent. Frames from a lower epoch are rejected and counted (a stale primary is
//! fenced); a higher epoch is reported to the caller, whose detector decides.

use std::collections::VecDeque;

use dataplane::time::{Duration, Instant};

use crate::delta::{self, Direction, FlowId, Heartbeat, Record, Records, Role, DATA_RECORD_OVERHEAD};
use crate::frame::{self, FrameError, FrameHeader, FrameKind, LinkAddrs, HEADER_LEN, PREFIX_LEN};

/// The channel's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// This box's id, written in every frame.
    pub box_id: u32,
    /// The queue (protocol core) this channel carries.
    pub queue: u16,
    pub link: LinkAddrs,
    /// Bound on the Ethernet payload of a frame (replication header + records): 1500, or 9000 for jumbo.
    pub mtu: usize,
    /// Unacknowledged frames, the open batch included.
    pub window_frames: usize,
    /// Unacknowledged payload bytes, the open batch included.
    pub window_bytes: usize,
    /// A batch becomes a frame once it holds this many records.
    pub batch_records: usize,
    /// A non-empty batch becomes a frame at the latest this long after its first record.
    pub flush_delay: Duration,
    /// How long an acknowledgment may wait for a frame to ride on.
    pub ack_delay: Duration,
    /// Acknowledge at once after this many frames were delivered without one.
    pub ack_every: u32,
    pub rto_initial: Duration,
    pub rto_min: Duration,
    pub rto_max: Duration,
    pub heartbeat_interval: Duration,
    /// Frames beyond the next expected one that the receiver keeps (out of order).
    pub reorder_frames: usize,
}

impl Default for ChannelConfig {
    /// Tuned for a back-to-back link with round trips of tens of microseconds.
    fn default() -> Self {
        ChannelConfig {
            box_id: 0,
            queue: 0,
            link: LinkAddrs::default(),
            mtu: 1500,
            window_frames: 256,
            window_bytes: 1 << 20,
            batch_records: 64,
            flush_delay: Duration::from_micros(20),
            ack_delay: Duration::from_micros(20),
            ack_every: 4,
            rto_initial: Duration::from_millis(2),
            rto_min: Duration::from_micros(200),
            rto_max: Duration::from_millis(100),
            heartbeat_interval: Duration::from_millis(1),
            reorder_frames: 256,
        }
    }
}

/// A configuration that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("mtu must be between 256 and 9216")]
    Mtu,
    #[error("window_frames, window_bytes, batch_records, ack_every and reorder_frames must be at least 1")]
    Zero,
    #[error("window_bytes is smaller than one frame")]
    WindowBytes,
    #[error("rto_min <= rto_initial <= rto_max, all non-zero, is required")]
    Rto,
    #[error("heartbeat_interval must be non-zero")]
    Heartbeat,
}

impl ChannelConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(frame::MIN_MTU..=frame::MAX_MTU).contains(&self.mtu) {
            return Err(ConfigError::Mtu);
        }
        if self.window_frames == 0
            || self.window_bytes == 0
            || self.batch_records == 0
            || self.ack_every == 0
            || self.reorder_frames == 0
        {
            return Err(ConfigError::Zero);
        }
        if self.window_bytes < self.mtu {
            return Err(ConfigError::WindowBytes);
        }
        if self.rto_min.is_zero() || self.rto_min > self.rto_initial || self.rto_initial > self.rto_max {
            return Err(ConfigError::Rto);
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Heartbeat);
        }
        Ok(())
    }

    /// The most record bytes one frame carries (after the batch's version byte).
    pub fn max_records_bytes(&self) -> usize {
        self.mtu.saturating_sub(HEADER_LEN + 1)
    }

    /// The most data bytes one Data record carries.
    pub fn max_data_chunk(&self) -> usize {
        self.max_records_bytes().saturating_sub(DATA_RECORD_OVERHEAD)
    }
}

/// Why a record was refused. Nothing was queued; the caller keeps its gate closed and offers again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum OfferError {
    #[error("send window full")]
    WindowFull,
    #[error("record larger than a frame")]
    TooLarge,
}

/// Why a received frame was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RecvError {
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("malformed batch: {0}")]
    Delta(#[from] delta::DeltaError),
    #[error("frame for another queue")]
    WrongQueue,
    #[error("frame from a lower epoch (stale peer, fenced)")]
    StaleEpoch,
    #[error("frame from a higher epoch {0}: the peer took over")]
    NewerEpoch(u32),
    #[error("acknowledgment of a frame never sent")]
    AckBeyondSent,
    #[error("heartbeat frame without exactly one heartbeat record")]
    BadHeartbeat,
}

/// Counters, for statistics and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub records_offered: u64,
    pub offers_refused: u64,
    pub frames_sent: u64,
    pub frames_retransmitted: u64,
    pub fast_retransmits: u64,
    pub rto_expirations: u64,
    pub acks_sent: u64,
    pub heartbeats_sent: u64,
    pub frames_received: u64,
    pub frames_delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub reorder_overflow: u64,
    pub heartbeats_received: u64,
    pub malformed: u64,
    pub stale_epoch: u64,
    pub newer_epoch: u64,
    pub wrong_queue: u64,
    pub bad_acks: u64,
}

#[derive(Debug)]
struct Outgoing {
    seq: u64,
    /// `PREFIX_LEN` header bytes then the batch.
    buf: Vec<u8>,
    sent_at: Option<Instant>,
    retransmitted: bool,
    needs_resend: bool,
}

/// One end of a replication queue. `T` is the caller's confirmation token (e.g. `(flow, seq)`).
#[derive(Debug)]
pub struct Channel<T> {
    cfg: ChannelConfig,
    epoch: u32,

    // Sender.
    /// The batch being filled: `PREFIX_LEN` reserved bytes, the version byte, records.
    open: Vec<u8>,
    open_records: usize,
    open_since: Option<Instant>,
    next_seq: u64,
    /// Frames `una..next_seq`, in order.
    unacked: VecDeque<Outgoing>,
    una: u64,
    /// Frames from this sequence number on have never been sent.
    next_unsent: u64,
    /// Frames marked for resending (so `poll_transmit` scans only when there are some).
    resend_pending: usize,
    window_bytes_used: usize,
    tokens: VecDeque<(u64, T)>,
    confirmed: VecDeque<T>,
    dupacks: u32,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    backoff: u32,
    next_heartbeat: Instant,
    status: (Role, u8, u32),

    // Receiver.
    /// Slot `i` holds frame `rcv_next + i` when it arrived early.
    reorder: VecDeque<Option<Vec<u8>>>,
    rcv_next: u64,
    deliverable: VecDeque<Vec<u8>>,
    current: Vec<u8>,
    /// Every frame below this one was handed to the application: what we acknowledge.
    delivered: u64,
    ack_pending: bool,
    ack_due: Instant,
    unacked_deliveries: u32,
    heartbeat_in: Option<(Instant, Heartbeat)>,

    /// Spare buffers, so a steady state allocates nothing per frame.
    pool: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    stats: ChannelStats,
}

impl<T: Copy> Channel<T> {
    /// A channel in `epoch`, starting at sequence number 0 in both directions.
    pub fn new(cfg: ChannelConfig, epoch: u32, now: Instant) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut ch = Channel {
            cfg,
            epoch,
            open: Vec::with_capacity(frame::ETHERNET_HEADER_LEN + cfg.mtu),
            open_records: 0,
            open_since: None,
            next_seq: 0,
            unacked: VecDeque::with_capacity(cfg.window_frames),
            una: 0,
            next_unsent: 0,
            resend_pending: 0,
            window_bytes_used: 0,
            tokens: VecDeque::new(),
            confirmed: VecDeque::new(),
            dupacks: 0,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: cfg.rto_initial,
            backoff: 0,
            next_heartbeat: now,
            status: (Role::Standby, 0, 0),
            reorder: (0..cfg.reorder_frames).map(|_| None).collect(),
            rcv_next: 0,
            deliverable: VecDeque::new(),
            current: Vec::new(),
            delivered: 0,
            ack_pending: false,
            ack_due: Instant::FAR_FUTURE,
            unacked_deliveries: 0,
            heartbeat_in: None,
            pool: Vec::new(),
            scratch: Vec::with_capacity(PREFIX_LEN + 64),
            stats: ChannelStats::default(),
        };
        ch.reset_open();
        Ok(ch)
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.cfg
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// What the next heartbeats announce: our role, heartbeat flags and flow count.
    pub fn set_status(&mut self, role: Role, flags: u8, flows: u32) {
        self.status = (role, flags, flows);
    }

    /// Every frame below this sequence number is confirmed by the peer.
    pub fn confirmed_edge(&self) -> u64 {
        self.una
    }

    /// Frames in the send window, the open batch included.
    pub fn frames_in_window(&self) -> usize {
        self.unacked.len() + usize::from(self.open_records > 0)
    }

    /// True when nothing is waiting for the peer's acknowledgment.
    pub fn is_idle(&self) -> bool {
        self.open_records == 0 && self.unacked.is_empty()
    }

    fn take_buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(|| Vec::with_capacity(frame::ETHERNET_HEADER_LEN + self.cfg.mtu))
    }

    fn reset_open(&mut self) {
        self.open.clear();
        self.open.resize(PREFIX_LEN, 0);
        self.open.push(delta::DELTA_VERSION);
        self.open_records = 0;
        self.open_since = None;
    }

    fn open_payload_len(&self) -> usize {
        self.open.len().saturating_sub(PREFIX_LEN)
    }

    /// Whether `bytes` more encoded bytes, opening up to `frames` new frames, fit in the window now.
    fn fits(&self, bytes: usize, frames: usize) -> bool {
        let open = usize::from(self.open_records > 0);
        self.unacked.len() + open + frames <= self.cfg.window_frames
            && self.window_bytes_used + self.open_payload_len() + bytes <= self.cfg.window_bytes
    }

    /// Queues one record; `token` comes back from [`Channel::poll_confirmed`] once the peer has it.
    pub fn offer(&mut self, now: Instant, record: &Record<'_>, token: T) -> Result<(), OfferError> {
        self.offer_inner(now, record, Some(token))
    }

    /// Queues a Data record, split into as many records as the MTU asks; `token` is confirmed with the
    /// last piece. All or nothing: when the whole does not fit the window, nothing is queued.
    pub fn offer_data(
        &mut self,
        now: Instant,
        flow: FlowId,
        dir: Direction,
        seq: u32,
        bytes: &[u8],
        token: T,
    ) -> Result<(), OfferError> {
        let chunk = self.cfg.max_data_chunk().max(1);
        let pieces = bytes.len().div_ceil(chunk).max(1);
        // Conservative: each piece may open a frame of its own.
        if !self.fits(bytes.len() + pieces * DATA_RECORD_OVERHEAD, pieces) {
            self.stats.offers_refused += 1;
            return Err(OfferError::WindowFull);
        }
        if bytes.is_empty() {
            let rec = Record::Data { flow, dir, seq, bytes };
            return self.offer_inner(now, &rec, Some(token));
        }
        let mut off = 0usize;
        let mut chunks = bytes.chunks(chunk).peekable();
        while let Some(piece) = chunks.next() {
            let s = seq.wrapping_add(u32::try_from(off).unwrap_or(u32::MAX));
            let rec = Record::Data { flow, dir, seq: s, bytes: piece };
            let last = chunks.peek().is_none();
            self.offer_inner(now, &rec, last.then_some(token))?;
            off += piece.len();
        }
        Ok(())
    }

    fn offer_inner(&mut self, now: Instant, record: &Record<'_>, token: Option<T>) -> Result<(), OfferError> {
        let len = record.encoded_len();
        if len > self.cfg.max_records_bytes() {
            self.stats.offers_refused += 1;
            return Err(OfferError::TooLarge);
        }
        let room = self.open_payload_len() + len <= self.cfg.mtu.saturating_sub(HEADER_LEN);
        let new_frame = self.open_records == 0 || !room;
        // A new frame beside a still-open batch takes two slots: the sealed one and the new one.
        let slots = if new_frame { 1 } else { 0 };
        if !self.fits(len, slots) {
            self.stats.offers_refused += 1;
            return Err(OfferError::WindowFull);
        }
        if !room {
            self.seal();
        }
        if record.encode(&mut self.open).is_err() {
            self.stats.offers_refused += 1;
            return Err(OfferError::TooLarge);
        }
        if self.open_records == 0 {
            self.open_since = Some(now);
        }
        self.open_records += 1;
        self.stats.records_offered += 1;
        if let Some(t) = token {
            self.tokens.push_back((self.next_seq, t));
        }
        if self.open_records >= self.cfg.batch_records {
            self.seal();
        }
        Ok(())
    }

    /// Turns the open batch into a frame now instead of at its flush deadline.
    pub fn flush(&mut self) {
        self.seal();
    }

    fn seal(&mut self) {
        if self.open_records == 0 {
            return;
        }
        let fresh = self.take_buf();
        let buf = core::mem::replace(&mut self.open, fresh);
        self.window_bytes_used += buf.len().saturating_sub(PREFIX_LEN);
        self.unacked.push_back(Outgoing {
            seq: self.next_seq,
            buf,
            sent_at: None,
            retransmitted: false,
            needs_resend: false,
        });
        self.next_seq += 1;
        self.reset_open();
    }

    fn current_ack(&self) -> u64 {
        self.delivered
    }

    fn header(&self, kind: FrameKind, seq: u64) -> FrameHeader {
        FrameHeader {
            kind,
            flags: frame::flags::ACK,
            queue: self.cfg.queue,
            sender: self.cfg.box_id,
            epoch: self.epoch,
            seq,
            ack: self.current_ack(),
        }
    }

    fn rto_deadline(&self) -> Option<Instant> {
        // Frames already marked for resending do not count: they go out at the next poll_transmit.
        let sent = self.unacked.iter().filter(|o| !o.needs_resend).filter_map(|o| o.sent_at).min()?;
        Some(sent + self.current_rto())
    }

    fn current_rto(&self) -> Duration {
        let r = self.rto.saturating_mul(1u32.checked_shl(self.backoff).unwrap_or(u32::MAX));
        r.min(self.cfg.rto_max)
    }

    /// Advances timers: seals a batch whose flush deadline passed, marks frames whose RTO expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(since) = self.open_since {
            if now >= since + self.cfg.flush_delay {
                self.seal();
            }
        }
        if let Some(deadline) = self.rto_deadline() {
            if now >= deadline {
                let rto = self.current_rto();
                for o in self.unacked.iter_mut() {
                    if !o.needs_resend && o.sent_at.is_some_and(|t| now >= t + rto) {
                        o.needs_resend = true;
                        self.resend_pending += 1;
                    }
                }
                self.stats.rto_expirations += 1;
                if self.current_rto() < self.cfg.rto_max {
                    self.backoff = self.backoff.saturating_add(1);
                }
            }
        }
    }

    /// The next time [`Channel::handle_timeout`] or [`Channel::poll_transmit`] has work, assuming
    /// `poll_transmit` was drained after the last input.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_heartbeat;
        if let Some(since) = self.open_since {
            t = t.min(since + self.cfg.flush_delay);
        }
        if let Some(d) = self.rto_deadline() {
            t = t.min(d);
        }
        if self.ack_pending {
            t = t.min(self.ack_due);
        }
        t
    }

    /// The next frame to put on the wire, if any; call until `None` after every input and timeout.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        self.handle_timeout(now);
        // A due heartbeat goes first: a busy sender must not look dead to the detector.
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.cfg.heartbeat_interval;
            let (role, flags, flows) = self.status;
            let hb = Record::Heartbeat(Heartbeat {
                epoch: self.epoch,
                role,
                flags,
                time_ns: now.as_nanos(),
                flows,
            });
            let header = self.header(FrameKind::Heartbeat, self.next_seq);
            self.scratch.clear();
            self.scratch.resize(PREFIX_LEN, 0);
            self.scratch.push(delta::DELTA_VERSION);
            // A heartbeat record always fits in a frame.
            let _ = hb.encode(&mut self.scratch);
            frame::finish(&mut self.scratch, self.cfg.link, &header);
            self.stats.heartbeats_sent += 1;
            self.ack_pending = false;
            self.unacked_deliveries = 0;
            return Some(&self.scratch);
        }
        let resend =
            if self.resend_pending > 0 { self.unacked.iter().position(|o| o.needs_resend) } else { None };
        let unsent = (self.next_unsent < self.next_seq)
            .then(|| usize::try_from(self.next_unsent.saturating_sub(self.una)).ok())
            .flatten();
        let pick = resend.or(unsent);
        if let Some(i) = pick {
            let header = self.header(FrameKind::Records, 0);
            let link = self.cfg.link;
            let o = self.unacked.get_mut(i)?;
            if o.sent_at.is_some() {
                o.retransmitted = true;
                self.stats.frames_retransmitted += 1;
            } else {
                self.next_unsent = o.seq + 1;
            }
            if o.needs_resend {
                o.needs_resend = false;
                self.resend_pending = self.resend_pending.saturating_sub(1);
            }
            o.sent_at = Some(now);
            frame::finish(&mut o.buf, link, &FrameHeader { seq: o.seq, ..header });
            self.stats.frames_sent += 1;
            self.ack_pending = false;
            self.unacked_deliveries = 0;
            return self.unacked.get(i).map(|o| o.buf.as_slice());
        }
        if self.ack_pending && now >= self.ack_due {
            let header = self.header(FrameKind::Ack, self.next_seq);
            self.scratch.clear();
            self.scratch.resize(PREFIX_LEN, 0);
            frame::finish(&mut self.scratch, self.cfg.link, &header);
            self.stats.acks_sent += 1;
            self.ack_pending = false;
            self.unacked_deliveries = 0;
            return Some(&self.scratch);
        }
        None
    }

    /// The next token whose record the peer has confirmed, in offer order.
    pub fn poll_confirmed(&mut self) -> Option<T> {
        self.confirmed.pop_front()
    }

    /// The most recent heartbeat from the peer, once (with the time it arrived).
    pub fn poll_heartbeat(&mut self) -> Option<(Instant, Heartbeat)> {
        self.heartbeat_in.take()
    }

    /// Takes one received frame. On `Ok`, call [`Channel::poll_deliver`] and [`Channel::poll_transmit`].
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<FrameHeader, RecvError> {
        let f = match frame::parse(bytes, self.cfg.mtu) {
            Ok(f) => f,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e.into());
            }
        };
        let h = f.header;
        if h.queue != self.cfg.queue {
            self.stats.wrong_queue += 1;
            return Err(RecvError::WrongQueue);
        }
        if h.epoch < self.epoch {
            self.stats.stale_epoch += 1;
            return Err(RecvError::StaleEpoch);
        }
        // Check the payload before acting on anything in the frame. A heartbeat from a higher epoch is
        // still recorded: it is how the detector learns that the peer took over.
        match h.kind {
            FrameKind::Records => {
                if let Err(e) = delta::validate(f.payload) {
                    self.stats.malformed += 1;
                    return Err(e.into());
                }
            }
            FrameKind::Heartbeat => {
                let mut it = delta::records(f.payload).inspect_err(|_| self.stats.malformed += 1)?;
                match (it.next(), it.next()) {
                    (Some(Ok(Record::Heartbeat(hb))), None) => {
                        self.heartbeat_in = Some((now, hb));
                        self.stats.heartbeats_received += 1;
                    }
                    _ => {
                        self.stats.malformed += 1;
                        return Err(RecvError::BadHeartbeat);
                    }
                }
            }
            FrameKind::Ack => {}
        }
        if h.epoch > self.epoch {
            self.stats.newer_epoch += 1;
            return Err(RecvError::NewerEpoch(h.epoch));
        }
        self.stats.frames_received += 1;
        if let Some(ack) = h.ack() {
            self.on_ack(now, ack, h.kind == FrameKind::Ack)?;
        }
        if h.kind == FrameKind::Records {
            self.on_records(now, h.seq, f.payload);
        }
        Ok(h)
    }

    fn on_ack(&mut self, now: Instant, ack: u64, standalone: bool) -> Result<(), RecvError> {
        if ack > self.next_seq {
            self.stats.bad_acks += 1;
            return Err(RecvError::AckBeyondSent);
        }
        if ack <= self.una {
            // Only standalone acks count as duplicates: heartbeats repeat the ack every interval.
            if standalone && ack == self.una && self.unacked.front().is_some_and(|o| o.sent_at.is_some()) {
                self.dupacks = self.dupacks.saturating_add(1);
                if self.dupacks == 3 {
                    if let Some(o) = self.unacked.front_mut() {
                        if !o.needs_resend {
                            o.needs_resend = true;
                            self.resend_pending += 1;
                        }
                        self.stats.fast_retransmits += 1;
                    }
                }
            }
            return Ok(());
        }
        let mut sample = None;
        while self.unacked.front().is_some_and(|o| o.seq < ack) {
            let Some(o) = self.unacked.pop_front() else { break };
            if o.needs_resend {
                self.resend_pending = self.resend_pending.saturating_sub(1);
            }
            if !o.retransmitted {
                if let Some(t) = o.sent_at {
                    sample = Some(now.saturating_duration_since(t));
                }
            }
            self.window_bytes_used =
                self.window_bytes_used.saturating_sub(o.buf.len().saturating_sub(PREFIX_LEN));
            self.pool.push(o.buf);
        }
        self.una = ack;
        self.next_unsent = self.next_unsent.max(ack);
        self.dupacks = 0;
        self.backoff = 0;
        if let Some(r) = sample {
            self.rtt_sample(r);
        }
        while self.tokens.front().is_some_and(|(s, _)| *s < ack) {
            if let Some((_, t)) = self.tokens.pop_front() {
                self.confirmed.push_back(t);
            }
        }
        Ok(())
    }

    /// RFC 6298, section 2, with a clock granularity of zero.
    fn rtt_sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + r) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        self.rto = (srtt + self.rttvar * 4).clamp(self.cfg.rto_min, self.cfg.rto_max);
    }

    /// The smoothed round-trip time, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    fn on_records(&mut self, now: Instant, seq: u64, payload: &[u8]) {
        let Some(idx) = seq.checked_sub(self.rcv_next) else {
            self.stats.duplicates += 1;
            self.ack_now(now);
            return;
        };
        let slot = usize::try_from(idx).ok().filter(|i| *i < self.reorder.len());
        let Some(slot) = slot else {
            self.stats.reorder_overflow += 1;
            self.ack_now(now);
            return;
        };
        if self.reorder.get(slot).is_some_and(Option::is_some) {
            self.stats.duplicates += 1;
            self.ack_now(now);
            return;
        }
        let mut buf = self.take_buf();
        buf.clear();
        buf.extend_from_slice(payload);
        if let Some(s) = self.reorder.get_mut(slot) {
            *s = Some(buf);
        }
        if slot > 0 {
            self.stats.out_of_order += 1;
            self.ack_now(now);
            return;
        }
        while let Some(Some(_)) = self.reorder.front() {
            if let Some(Some(b)) = self.reorder.pop_front() {
                self.deliverable.push_back(b);
            }
            self.reorder.push_back(None);
            self.rcv_next += 1;
        }
    }

    fn ack_now(&mut self, now: Instant) {
        self.ack_pending = true;
        self.ack_due = now;
    }

    /// The next batch of the peer's records, in order, each exactly once. Apply it before polling again:
    /// polling is what the acknowledgment (and so the peer's confirmation) covers.
    pub fn poll_deliver(&mut self, now: Instant) -> Option<Records<'_>> {
        let next = self.deliverable.pop_front()?;
        let old = core::mem::replace(&mut self.current, next);
        if old.capacity() > 0 {
            self.pool.push(old);
        }
        self.delivered += 1;
        self.stats.frames_delivered += 1;
        self.unacked_deliveries = self.unacked_deliveries.saturating_add(1);
        if !self.ack_pending {
            self.ack_pending = true;
            self.ack_due = now + self.cfg.ack_delay;
        }
        if self.unacked_deliveries >= self.cfg.ack_every {
            self.ack_due = now;
        }
        // Validated when the frame arrived.
        delta::records(&self.current).ok()
    }
}
