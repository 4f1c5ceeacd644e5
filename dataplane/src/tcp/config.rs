//! Per-connection configuration of the TCP engine: option policy, buffer bounds and timer values.
//!
//! Every bound on a connection's memory comes from here: the send and receive buffers grow on demand up to
//! these sizes (and the windows are computed from them), and the out-of-order bookkeeping never grows past
//! `max_ooo_ranges`.

use crate::time::Duration;

/// Which congestion controller a connection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CongestionAlgorithm {
    /// RFC 5681 slow start and congestion avoidance with RFC 6582 recovery.
    NewReno,
    /// RFC 9438 CUBIC window growth with the same recovery.
    Cubic,
}

/// Configuration of one connection half. Cheap to clone; usually shared by all flows of a core.
#[derive(Clone, Debug)]
pub struct Config {
    /// The MSS we announce and the most payload we put in a segment (before option space is taken off).
    pub mss: u16,
    /// Offer window scaling (RFC 7323). The shift is derived from `recv_buffer`.
    pub window_scaling: bool,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Offer timestamps (RFC 7323).
    pub timestamps: bool,
    /// Bytes the send buffer holds (queued plus unacknowledged).
    pub send_buffer: usize,
    /// Bytes the receive buffer holds (in order unread plus out of order).
    pub recv_buffer: usize,
    /// How many separate out-of-order ranges are kept; a segment that would make one more is dropped.
    pub max_ooo_ranges: usize,
    pub rto_initial: Duration,
    pub rto_min: Duration,
    pub rto_max: Duration,
    /// Longest an ACK for in-order data waits for a second segment (RFC 9293 §3.8.6.3 allows up to 500 ms).
    pub delayed_ack: Duration,
    /// A connection that hears nothing from its peer for this long is aborted. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// How long TIME-WAIT lasts. A proxy keeps it short: its 4-tuples are spread by SNAT ports.
    pub time_wait: Duration,
    /// SYN or SYN-ACK retransmissions before the open is given up.
    pub syn_retries: u8,
    /// Retransmissions of the same data before the connection is aborted.
    pub max_retries: u8,
    /// Most challenge ACKs (RFC 5961) sent per second per connection.
    pub challenge_ack_limit: u32,
    pub congestion: CongestionAlgorithm,
    /// Initial congestion window, in segments (RFC 6928 allows 10).
    pub initial_window_segments: u32,
    /// Secret keying the RFC 6528 ISN hash and the timestamp offset.
    pub isn_secret: [u8; 16],
    /// How far the timestamp clock jumps ahead on restore, to cover the time between the snapshot and the
    /// takeover so that no peer's PAWS check sees our TSval go back.
    pub ts_restore_jump: Duration,
    /// How long after a restore an ACK beyond SND.MAX may move the send edges (resync mode).
    pub resync_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mss: 1460,
            window_scaling: true,
            sack: true,
            timestamps: true,
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            max_ooo_ranges: 16,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(60),
            delayed_ack: Duration::from_millis(40),
            idle_timeout: Some(Duration::from_secs(300)),
            time_wait: Duration::from_secs(2),
            syn_retries: 5,
            max_retries: 12,
            challenge_ack_limit: 10,
            congestion: CongestionAlgorithm::NewReno,
            initial_window_segments: 10,
            isn_secret: [0; 16],
            ts_restore_jump: Duration::from_secs(10),
            resync_window: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// The window shift we offer: the smallest that lets the window field cover the receive buffer.
    pub fn rcv_wscale(&self) -> u8 {
        if !self.window_scaling {
            return 0;
        }
        let mut shift = 0u8;
        while shift < 14 && (self.recv_buffer >> shift) > usize::from(u16::MAX) {
            shift += 1;
        }
        shift
    }
}
