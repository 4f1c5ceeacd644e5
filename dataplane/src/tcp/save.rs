//! Export and import of a connection's state (`save()` / `restore()`), and its compact binary encoding.
//!
//! What travels: the 4-tuple, ISNs, the proxy's relay offset, negotiated options, the send and receive
//! edges, the ack limit, windows, timestamp and congestion state. Buffered bytes do not: the proxy
//! replicates them as data deltas and hands the send side's back to [`Connection::restore`].
//!
//! Encoding (version 1, little-endian, 99 bytes): version, state, flags, snd_wscale, rcv_wscale, peer_mss
//! (u16), local ip+port, remote ip+port, then twenty u32 fields in the order of [`SavedConnection`].

use super::config::{Config, CongestionAlgorithm};
use super::congestion::{Congestion, CongestionControl};
use super::connection::{Connection, State};
use super::rtt::RttEstimator;
use super::seq;
use crate::time::Instant;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Everything another box needs to resume a connection, except the buffered bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedConnection {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: State,
    pub iss: u32,
    pub irs: u32,
    /// The proxy's fixed offset to the other half; opaque here.
    pub relay_offset: u32,
    pub snd_una: u32,
    /// Highest sequence number sent (SND.MAX).
    pub snd_nxt: u32,
    pub snd_wnd: u32,
    pub snd_wl1: u32,
    pub snd_wl2: u32,
    pub max_snd_wnd: u32,
    /// Contiguous receive edge, including a received FIN.
    pub rcv_nxt: u32,
    /// Last ACK number sent.
    pub ack_sent: u32,
    /// Right edge of the last advertised window.
    pub rcv_adv: u32,
    pub ack_limit: Option<u32>,
    /// Last TSval sent: the base the restored clock continues from (and jumps ahead of).
    pub ts_last: u32,
    pub ts_recent: u32,
    pub cwnd: u32,
    pub ssthresh: u32,
    pub srtt_us: u32,
    pub rttvar_us: u32,
    pub rto_ms: u32,
    pub peer_mss: u16,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub wscale_ok: bool,
    pub sack_ok: bool,
    pub ts_ok: bool,
    /// `close()` was called: a FIN follows the buffered bytes.
    pub fin_queued: bool,
    /// The peer's FIN was received in order.
    pub peer_fin: bool,
    pub congestion: CongestionAlgorithm,
}

/// Why bytes did not decode into a [`SavedConnection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("saved connection truncated")]
    Truncated,
    #[error("unknown saved-connection version {0}")]
    Version(u8),
    #[error("unknown connection state {0}")]
    State(u8),
}

/// Why a saved connection could not be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} buffered bytes do not fit the configured send buffer")]
    SendBufferTooSmall(usize),
}

const VERSION: u8 = 1;
/// Size of an encoded [`SavedConnection`].
pub const SAVED_LEN: usize = 99;

const F_WSCALE: u8 = 1;
const F_SACK: u8 = 2;
const F_TS: u8 = 4;
const F_FIN_QUEUED: u8 = 8;
const F_PEER_FIN: u8 = 16;
const F_LIMIT: u8 = 32;
const F_CUBIC: u8 = 64;

impl SavedConnection {
    fn words(&self) -> [u32; 20] {
        [
            self.iss,
            self.irs,
            self.relay_offset,
            self.snd_una,
            self.snd_nxt,
            self.snd_wnd,
            self.snd_wl1,
            self.snd_wl2,
            self.max_snd_wnd,
            self.rcv_nxt,
            self.ack_sent,
            self.rcv_adv,
            self.ack_limit.unwrap_or(0),
            self.ts_last,
            self.ts_recent,
            self.cwnd,
            self.ssthresh,
            self.srtt_us,
            self.rttvar_us,
            self.rto_ms,
        ]
    }

    /// Appends the encoding ([`SAVED_LEN`] bytes) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0u8;
        for (on, bit) in [
            (self.wscale_ok, F_WSCALE),
            (self.sack_ok, F_SACK),
            (self.ts_ok, F_TS),
            (self.fin_queued, F_FIN_QUEUED),
            (self.peer_fin, F_PEER_FIN),
            (self.ack_limit.is_some(), F_LIMIT),
            (self.congestion == CongestionAlgorithm::Cubic, F_CUBIC),
        ] {
            if on {
                flags |= bit;
            }
        }
        out.extend_from_slice(&[VERSION, self.state.to_u8(), flags, self.snd_wscale, self.rcv_wscale]);
        out.extend_from_slice(&self.peer_mss.to_le_bytes());
        for a in [self.local, self.remote] {
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        for w in self.words() {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Decodes one saved connection from the front of `bytes`; returns it and the bytes it used.
    pub fn decode(bytes: &[u8]) -> Result<(SavedConnection, usize), DecodeError> {
        let b = bytes.get(..SAVED_LEN).ok_or(DecodeError::Truncated)?;
        if b[0] != VERSION {
            return Err(DecodeError::Version(b[0]));
        }
        let state = State::from_u8(b[1]).ok_or(DecodeError::State(b[1]))?;
        let flags = b[2];
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let addr_at =
            |i: usize| SocketAddrV4::new(Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]), u16_at(i + 4));
        let w = |k: usize| u32_at(19 + 4 * k);
        let s = SavedConnection {
            local: addr_at(7),
            remote: addr_at(13),
            state,
            iss: w(0),
            irs: w(1),
            relay_offset: w(2),
            snd_una: w(3),
            snd_nxt: w(4),
            snd_wnd: w(5),
            snd_wl1: w(6),
            snd_wl2: w(7),
            max_snd_wnd: w(8),
            rcv_nxt: w(9),
            ack_sent: w(10),
            rcv_adv: w(11),
            ack_limit: (flags & F_LIMIT != 0).then(|| w(12)),
            ts_last: w(13),
            ts_recent: w(14),
            cwnd: w(15),
            ssthresh: w(16),
            srtt_us: w(17),
            rttvar_us: w(18),
            rto_ms: w(19),
            peer_mss: u16_at(5),
            snd_wscale: b[3].min(14),
            rcv_wscale: b[4].min(14),
            wscale_ok: flags & F_WSCALE != 0,
            sack_ok: flags & F_SACK != 0,
            ts_ok: flags & F_TS != 0,
            fin_queued: flags & F_FIN_QUEUED != 0,
            peer_fin: flags & F_PEER_FIN != 0,
            congestion: if flags & F_CUBIC != 0 {
                CongestionAlgorithm::Cubic
            } else {
                CongestionAlgorithm::NewReno
            },
        };
        Ok((s, SAVED_LEN))
    }
}

impl Connection {
    /// The state another box needs to resume this connection (buffered bytes excluded).
    pub fn save(&self) -> SavedConnection {
        SavedConnection {
            local: self.local,
            remote: self.remote,
            state: self.state,
            iss: self.iss,
            irs: self.irs,
            relay_offset: self.relay_offset,
            snd_una: self.snd_una,
            snd_nxt: self.snd_max,
            snd_wnd: self.snd_wnd,
            snd_wl1: self.snd_wl1,
            snd_wl2: self.snd_wl2,
            max_snd_wnd: self.max_snd_wnd,
            rcv_nxt: self.recv_buf.nxt(),
            ack_sent: self.rcv_acked,
            rcv_adv: self.rcv_adv,
            ack_limit: self.ack_limit,
            ts_last: self.ts_last,
            ts_recent: self.ts_recent,
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
            srtt_us: self.rtt.srtt_us(),
            rttvar_us: self.rtt.rttvar_us(),
            rto_ms: u32::try_from(self.rtt.rto().as_millis()).unwrap_or(u32::MAX),
            peer_mss: self.peer_mss,
            snd_wscale: self.snd_wscale,
            rcv_wscale: self.rcv_wscale,
            wscale_ok: self.wscale_ok,
            sack_ok: self.sack_ok,
            ts_ok: self.ts_ok,
            fin_queued: self.fin_queued,
            peer_fin: self.peer_fin_seen,
            congestion: self.cc.algorithm(),
        }
    }

    /// Resumes a saved connection on this box. `send_bytes` are the buffered bytes from SND.UNA on (what
    /// was unacknowledged plus what was queued). The restored engine is in resync mode, jumps its timestamp
    /// clock ahead, sends three duplicate ACKs so the peer fast-retransmits at once, and retransmits from
    /// SND.UNA as its window allows.
    pub fn restore(
        now: Instant,
        cfg: &Config,
        saved: &SavedConnection,
        send_bytes: &[u8],
    ) -> Result<Connection, RestoreError> {
        if send_bytes.len() > cfg.send_buffer.max(1) {
            return Err(RestoreError::SendBufferTooSmall(send_bytes.len()));
        }
        let s = saved;
        let mut c = Connection::blank(now, cfg, s.local, s.remote, s.iss);
        c.state = s.state;
        c.relay_offset = s.relay_offset;
        c.peer_mss = s.peer_mss.max(64);
        c.snd_wscale = s.snd_wscale.min(14);
        c.rcv_wscale = s.rcv_wscale.min(14);
        c.wscale_ok = s.wscale_ok;
        c.sack_ok = s.sack_ok;
        c.ts_ok = s.ts_ok;
        c.fin_queued = s.fin_queued;
        c.fin_acked = s.fin_queued && matches!(s.state, State::FinWait2 | State::TimeWait | State::Closed);
        c.peer_fin_seen = s.peer_fin;

        c.irs = s.irs;
        c.recv_buf = super::buffer::RecvBuffer::new(cfg.recv_buffer, cfg.max_ooo_ranges, s.rcv_nxt);
        c.rcv_acked = s.ack_sent;
        c.rcv_adv = s.rcv_adv;
        c.ack_limit = s.ack_limit;

        c.snd_una = s.snd_una;
        c.snd_max = s.snd_nxt;
        c.snd_nxt = s.snd_una;
        c.snd_wnd = s.snd_wnd;
        c.snd_wl1 = s.snd_wl1;
        c.snd_wl2 = s.snd_wl2;
        c.max_snd_wnd = s.max_snd_wnd;
        c.send_buf.push(send_bytes);
        c.recover = s.snd_una;
        c.high_rxt = s.snd_una;

        // The clock continues from the saved base, ahead by the configured jump: no TSval goes back.
        let jump = u32::try_from(cfg.ts_restore_jump.as_millis()).unwrap_or(0x4000_0000).min(0x4000_0000);
        let base = s.ts_last.wrapping_add(jump);
        c.ts_offset = base.wrapping_sub(now.as_millis() as u32);
        c.ts_floor = base;
        c.ts_last = base;
        c.ts_recent = s.ts_recent;

        c.rtt = RttEstimator::from_saved(s.srtt_us, s.rttvar_us, s.rto_ms, cfg.rto_min, cfg.rto_max);
        let mss = c.eff_mss();
        c.cc = Congestion::new(s.congestion, s.cwnd.max(mss), s.ssthresh.max(2 * mss));

        match s.state {
            State::SynSent => c.syn_pending = true,
            State::SynReceived => {
                c.syn_pending = true;
                c.snd_max = c.iss;
                c.snd_una = c.iss;
                c.snd_nxt = c.iss;
                // The snapshot cannot say whether the SYN-ACK reached the peer: a peer that already got
                // it (and maybe data after it) answers the resent SYN-ACK with an ACK beyond it, which
                // then completes the handshake and resynchronizes (see input).
                c.resync = true;
                c.resync_until = now + cfg.resync_window;
            }
            State::Closed => {}
            State::TimeWait => c.time_wait_deadline = Some(now + cfg.time_wait),
            _ => {
                c.resync = true;
                c.resync_until = now + cfg.resync_window;
                c.request_fast_retransmit();
                if c.snd_una != c.snd_max {
                    c.rto_deadline = Some(now + c.rtt.rto());
                }
            }
        }
        if seq::lt(c.snd_max, c.snd_una) {
            c.snd_max = c.snd_una;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedConnection {
        SavedConnection {
            local: "198.18.0.1:80".parse().unwrap(),
            remote: "198.18.0.2:40000".parse().unwrap(),
            state: State::Established,
            iss: 1,
            irs: 2,
            relay_offset: 3,
            snd_una: 4,
            snd_nxt: 5,
            snd_wnd: 6,
            snd_wl1: 7,
            snd_wl2: 8,
            max_snd_wnd: 9,
            rcv_nxt: 10,
            ack_sent: 11,
            rcv_adv: 12,
            ack_limit: Some(13),
            ts_last: 14,
            ts_recent: 15,
            cwnd: 16,
            ssthresh: 17,
            srtt_us: 18,
            rttvar_us: 19,
            rto_ms: 20,
            peer_mss: 1460,
            snd_wscale: 7,
            rcv_wscale: 2,
            wscale_ok: true,
            sack_ok: true,
            ts_ok: false,
            fin_queued: true,
            peer_fin: false,
            congestion: CongestionAlgorithm::Cubic,
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let mut v = vec![0xaa];
        s.encode(&mut v);
        assert_eq!(v.len(), 1 + SAVED_LEN);
        let (d, used) = SavedConnection::decode(&v[1..]).unwrap();
        assert_eq!(used, SAVED_LEN);
        assert_eq!(d, s);
        let mut none = s;
        none.ack_limit = None;
        let mut v = Vec::new();
        none.encode(&mut v);
        assert_eq!(SavedConnection::decode(&v).unwrap().0, none);
    }

    #[test]
    fn rejects_bad_input() {
        let mut v = Vec::new();
        sample().encode(&mut v);
        assert_eq!(SavedConnection::decode(&v[..50]), Err(DecodeError::Truncated));
        let mut w = v.clone();
        w[0] = 9;
        assert_eq!(SavedConnection::decode(&w), Err(DecodeError::Version(9)));
        let mut w = v.clone();
        w[1] = 77;
        assert_eq!(SavedConnection::decode(&w), Err(DecodeError::State(77)));
    }
}
