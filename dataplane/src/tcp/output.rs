//! Segment output: one segment per call, chosen in priority order (RST, SYN, retransmission, new data,
//! FIN, probes, pure ACK), with the ACK number always cut at the ack limit and an honest window.

use super::congestion::CongestionControl;
use super::connection::{Connection, State, Transmit};
use super::seq;
use crate::time::Instant;
use crate::wire::{SackBlocks, TcpFlags, TcpOptions, TcpRepr, Timestamps};

/// Option bytes: NOP NOP + timestamps (10).
const TS_LEN: u32 = 12;
/// RFC 6675 DupThresh, in segments.
const DUP_THRESH: u32 = 3;

impl Connection {
    /// The next segment to send, if any: its payload is copied into `payload_out` (the slice of the frame
    /// where the payload goes; at most its length is sent). Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant, payload_out: &mut [u8]) -> Option<Transmit> {
        let t = self.next_segment(now, payload_out);
        if let Some(t) = &t {
            self.counters.segs_out += 1;
            self.counters.bytes_out += t.payload_len as u64;
        }
        self.update_timers(now);
        if self.state == State::TimeWait && self.time_wait_deadline.is_none() {
            self.enter_time_wait(now);
        }
        t
    }

    fn next_segment(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.rst_pending {
            self.rst_pending = false;
            let mut repr = self.header(self.snd_max, TcpFlags::RST | TcpFlags::ACK);
            repr.ack = self.ack_target();
            return Some(Transmit { repr, payload_len: 0 });
        }
        match self.state {
            State::Closed => return None,
            State::SynSent => return self.syn(now),
            State::SynReceived if self.snd_max == self.iss || self.syn_pending => return self.syn_ack(now),
            _ => {}
        }
        if self.state == State::TimeWait {
            return self.pure_ack(now);
        }
        // After a restore: duplicate ACKs and the probe first, so the peer retransmits and tells its edges
        // before anything else arrives.
        if self.dupacks_to_send > 0 {
            return self.pure_ack(now);
        }
        if self.probe_pending {
            self.probe_pending = false;
            let mut repr = self.header(self.snd_una.wrapping_sub(1), TcpFlags::ACK);
            self.fill_ack(now, &mut repr);
            return Some(Transmit { repr, payload_len: 0 });
        }
        // A duplicate ACK for a hole goes out on its own: peers count only pure ACKs as duplicates
        // (RFC 5681 §2), so riding on data it would never start their fast retransmit.
        if self.ack_now && !self.recv_buf.ooo_ranges().is_empty() {
            return self.pure_ack(now);
        }
        if let Some(t) = self.data(now, out) {
            return Some(t);
        }
        self.pure_ack(now)
    }

    fn header(&self, seq_no: u32, flags: TcpFlags) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq: seq_no,
            ack: 0,
            flags,
            window: 0,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        }
    }

    fn syn(&mut self, now: Instant) -> Option<Transmit> {
        if !self.syn_pending {
            return None;
        }
        self.syn_pending = false;
        let mut repr = self.header(self.iss, TcpFlags::SYN);
        repr.window = self.recv_buf.capacity().min(usize::from(u16::MAX)) as u16;
        repr.options.mss = Some(self.cfg.mss);
        if self.cfg.window_scaling {
            repr.options.window_scale = Some(self.cfg.rcv_wscale());
        }
        repr.options.sack_permitted = self.cfg.sack;
        if self.cfg.timestamps {
            let tsval = self.tsval(now);
            self.ts_last = tsval;
            repr.options.timestamps = Some(Timestamps { tsval, tsecr: 0 });
        }
        self.snd_nxt = self.iss.wrapping_add(1);
        self.snd_max = self.snd_nxt;
        if self.retries == 0 {
            self.rtt_seq = Some((self.iss, now));
        }
        self.rto_deadline = Some(now + self.rtt.rto());
        Some(Transmit { repr, payload_len: 0 })
    }

    fn syn_ack(&mut self, now: Instant) -> Option<Transmit> {
        let syn_ack_no = self.irs.wrapping_add(1);
        if !self.syn_pending || self.ack_limit.is_some_and(|l| seq::lt(l, syn_ack_no)) {
            // Held until the limit covers the client's SYN (the standby knows the flow).
            return None;
        }
        self.syn_pending = false;
        let mut repr = self.header(self.iss, TcpFlags::SYN | TcpFlags::ACK);
        repr.ack = syn_ack_no;
        let win = self.recv_buf.capacity().min(usize::from(u16::MAX)) as u32;
        repr.window = win as u16;
        repr.options.mss = Some(self.cfg.mss);
        if self.wscale_ok {
            repr.options.window_scale = Some(self.rcv_wscale);
        }
        repr.options.sack_permitted = self.sack_ok;
        if self.ts_ok {
            let tsval = self.tsval(now);
            self.ts_last = tsval;
            repr.options.timestamps = Some(Timestamps { tsval, tsecr: self.ts_recent });
        }
        self.rcv_acked = syn_ack_no;
        self.rcv_adv = seq::max(self.rcv_adv, syn_ack_no.wrapping_add(win));
        self.snd_nxt = self.iss.wrapping_add(1);
        self.snd_max = self.snd_nxt;
        if self.retries == 0 {
            self.rtt_seq = Some((self.iss, now));
        }
        self.rto_deadline = Some(now + self.rtt.rto());
        self.ack_now = false;
        Some(Transmit { repr, payload_len: 0 })
    }

    /// Puts the ACK number, window and ACK-borne options on a header and records what was acknowledged.
    fn fill_ack(&mut self, now: Instant, repr: &mut TcpRepr<'static>) {
        let ack = self.ack_target();
        repr.flags |= TcpFlags::ACK;
        repr.ack = ack;
        let ws = u32::from(self.rcv_wscale);
        let unit = 1u32 << ws;
        // Honest: the right edge is the buffer's; never shrinking: at least the last advertised edge
        // (RFC 7323 §2.4), rounded up, which can overstate by less than one window unit.
        let honest = seq::dist(ack, self.recv_buf.right_edge()) >> ws;
        let keep = seq::dist(ack, self.rcv_adv).saturating_add(unit - 1) >> ws;
        let win = honest.max(keep).min(u32::from(u16::MAX));
        repr.window = win as u16;
        self.rcv_adv = seq::max(self.rcv_adv, ack.wrapping_add(win << ws));
        self.rcv_acked = ack;
        self.ack_now = false;
        self.delack_deadline = None;
        self.unacked_segs = 0;
        self.challenge_pending = false;
        let sack_room = if self.ts_ok {
            let tsval = self.tsval(now);
            self.ts_last = tsval;
            repr.options.timestamps = Some(Timestamps { tsval, tsecr: self.ts_recent });
            3
        } else {
            4
        };
        if self.sack_ok {
            repr.options.sack = self.sack_blocks(ack, sack_room);
        }
    }

    /// SACK blocks: the most recent out-of-order range, then bytes held below RCV.NXT but not acknowledged,
    /// then the other ranges.
    fn sack_blocks(&self, ack: u32, room: usize) -> SackBlocks {
        let mut b = SackBlocks::default();
        if ack == self.recv_buf.nxt() && self.recv_buf.ooo_ranges().is_empty() {
            return b;
        }
        let recent = self.recv_buf.recent_range();
        let ranges = self.recv_buf.ooo_ranges();
        if let Some(l) = recent {
            if let Some(&(l, r)) = ranges.iter().find(|&&(x, _)| x == l) {
                b.push(l, r);
            }
        }
        let nxt = self.recv_buf.nxt();
        if seq::lt(ack, nxt) && b.len() < room {
            b.push(ack, nxt);
        }
        for &(l, r) in ranges {
            if b.len() >= room {
                break;
            }
            if Some(l) != recent {
                b.push(l, r);
            }
        }
        b
    }

    fn options_len(&self, ack: u32) -> u32 {
        let mut n = 0;
        if self.ts_ok {
            n += TS_LEN;
        }
        if self.sack_ok {
            let room = if self.ts_ok { 3 } else { 4 };
            let blocks = self.sack_blocks(ack, room).len() as u32;
            if blocks > 0 {
                n += 4 + 8 * blocks;
            }
        }
        n
    }

    fn pure_ack(&mut self, now: Instant) -> Option<Transmit> {
        if !(self.ack_now || self.challenge_pending || self.dupacks_to_send > 0) {
            return None;
        }
        self.dupacks_to_send = self.dupacks_to_send.saturating_sub(1);
        // A pure ACK carries the highest sequence number the peer's window accepts (Linux's
        // tcp_acceptable_seq): after bytes went out past a window that then shut (a probe, or a peer that
        // shrank its window), SND.MAX lies beyond what a zero-window receiver finds acceptable, and it
        // would drop the segment — window update included — without reading its ACK.
        let window_end = self.snd_una.wrapping_add(self.snd_wnd);
        let seq = if seq::le(self.snd_max, window_end) { self.snd_max } else { window_end };
        let mut repr = self.header(seq, TcpFlags::ACK);
        if self.state == State::SynReceived {
            repr.seq = self.snd_max;
        }
        self.fill_ack(now, &mut repr);
        if self.dupack_run_break && self.dupacks_to_send > 0 {
            // One unit less for one ACK: it ends the peer's run of duplicates (see request_fast_retransmit).
            self.dupack_run_break = false;
            repr.window = repr.window.saturating_sub(1);
        }
        Some(Transmit { repr, payload_len: 0 })
    }

    /// Bytes of the flight the network is believed to hold during SACK recovery (RFC 6675 §4 "pipe").
    fn pipe(&self) -> u32 {
        self.scoreboard.pipe(self.snd_una, self.snd_max, self.high_rxt, DUP_THRESH * self.eff_mss())
    }

    fn data(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if !matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
        ) {
            return None;
        }
        let mss = self.eff_mss();
        let max_payload = mss.saturating_sub(self.options_len(self.ack_target())).max(1);
        let max_payload = max_payload.min(u32::try_from(out.len()).unwrap_or(u32::MAX));
        let buf_end = self.snd_una.wrapping_add(self.send_buf.len() as u32);
        let fin_unsent = self.fin_queued && !self.fin_acked && seq::le(self.snd_nxt, buf_end);

        // 1. Loss recovery retransmissions.
        let recovery_room = if !self.in_recovery {
            u32::MAX
        } else if self.sack_ok {
            self.cc_cwnd_in_recovery().saturating_sub(self.pipe())
        } else {
            self.rec_cwnd.saturating_sub(seq::dist(self.snd_una, self.snd_max))
        };
        if self.in_recovery || self.rexmit_pending {
            let hole = if self.sack_ok {
                // RFC 6675 NextSeg(): the first hole not yet retransmitted; a partial ACK whose new
                // SND.UNA was never retransmitted (and no SACK says more) resends it.
                let from = seq::max(self.high_rxt, self.snd_una);
                self.scoreboard.next_lost_hole(from, DUP_THRESH * mss).or_else(|| {
                    (self.rexmit_pending && seq::le(self.high_rxt, self.snd_una))
                        .then(|| (self.snd_una, seq::dist(self.snd_una, self.snd_max)))
                })
            } else if self.rexmit_pending {
                Some((self.snd_una, seq::dist(self.snd_una, self.snd_max)))
            } else {
                None
            };
            if let Some((s, hole_len)) = hole {
                if self.rexmit_pending || recovery_room >= mss.min(hole_len) {
                    self.rexmit_pending = false;
                    let data_left = seq::dist(s, buf_end);
                    let len = hole_len.min(max_payload).min(data_left);
                    let with_fin = self.fin_queued
                        && !self.fin_acked
                        && s.wrapping_add(len) == buf_end
                        && seq::lt(buf_end, self.snd_max);
                    if len > 0 || with_fin {
                        let t = self.emit_data(now, s, len, with_fin, out);
                        self.high_rxt = seq::max(self.high_rxt, s.wrapping_add(t.payload_len as u32));
                        return Some(t);
                    }
                }
            }
        }

        // 2. New data (or go-back-N retransmission after a timeout) from SND.NXT, stepping over what the
        // peer SACKed.
        let mut sacked_limit = u32::MAX;
        if seq::lt(self.snd_nxt, self.snd_max) {
            for &(l, r) in self.scoreboard.ranges() {
                if seq::le(l, self.snd_nxt) && seq::lt(self.snd_nxt, r) {
                    self.snd_nxt = r;
                } else if seq::gt(l, self.snd_nxt) {
                    sacked_limit = seq::dist(self.snd_nxt, l);
                    break;
                }
            }
        }
        let s = self.snd_nxt;
        let avail = seq::dist(s, buf_end).min(sacked_limit);
        let flight = seq::dist(self.snd_una, s).saturating_sub(self.scoreboard.sacked_below(s));
        let cwnd_room = if self.in_recovery {
            recovery_room
        } else {
            // RFC 3042 limited transmit: each of the first two duplicate ACKs lets one new segment out.
            let limited = self.dupacks.min(2).saturating_mul(mss);
            self.cc.cwnd().saturating_add(limited).saturating_sub(flight)
        };
        let wnd_room = seq::dist(s, self.snd_una.wrapping_add(self.snd_wnd));
        let mut len = avail.min(max_payload).min(cwnd_room).min(wnd_room);
        let retransmitting = seq::lt(s, self.snd_max);
        if len == 0 && avail > 0 && self.force_probe && wnd_room == 0 {
            // Zero-window probe (RFC 9293 §3.8.6.1): one byte past the window.
            len = 1;
            self.counters.window_probes += 1;
        }
        self.force_probe = false;
        if len > 0 {
            if len < max_payload && len < avail && flight > 0 && !retransmitting {
                // Sender-side SWS avoidance: wait for a full segment's room; ACKs are on their way.
                return None;
            }
            let with_fin = self.fin_queued && !self.fin_acked && s.wrapping_add(len) == buf_end;
            return Some(self.emit_data(now, s, len, with_fin, out));
        }
        if avail == 0 && fin_unsent && s == buf_end {
            return Some(self.emit_data(now, s, 0, true, out));
        }
        None
    }

    fn cc_cwnd_in_recovery(&self) -> u32 {
        self.cc.cwnd()
    }

    fn emit_data(&mut self, now: Instant, s: u32, len: u32, fin: bool, out: &mut [u8]) -> Transmit {
        let off = seq::dist(self.snd_una, s) as usize;
        let n = out.get_mut(..len as usize).map_or(0, |o| self.send_buf.copy_out(off, o));
        let mut flags = TcpFlags::ACK;
        if fin {
            flags |= TcpFlags::FIN;
        }
        if n > 0 {
            flags |= TcpFlags::PSH;
        }
        let mut repr = self.header(s, flags);
        self.fill_ack(now, &mut repr);
        let end = s.wrapping_add(n as u32).wrapping_add(u32::from(fin));
        if seq::lt(s, self.snd_max) {
            self.counters.retransmitted_segs += 1;
            if self.rtt_seq.is_some_and(|(t, _)| seq::ge(t, s) && seq::lt(t, end)) {
                self.rtt_seq = None;
            }
        } else if self.rtt_seq.is_none() {
            self.rtt_seq = Some((s, now));
        }
        if seq::gt(end, self.snd_max) {
            self.snd_max = end;
        }
        if s == self.snd_nxt {
            self.snd_nxt = end;
        }
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rtt.rto());
        }
        Transmit { repr, payload_len: n }
    }
}
