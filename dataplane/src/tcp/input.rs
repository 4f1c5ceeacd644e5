//! Segment input: the RFC 9293 §3.10.7 checks in order, with RFC 7323 PAWS, RFC 5961 challenge ACKs,
//! SACK scoreboard updates, RFC 6582/6675 loss recovery and the resync rule for restored connections.

use super::congestion::CongestionControl;
use super::connection::{Connection, Event, SegmentError, State};
use super::seq;
use crate::time::{Duration, Instant};
use crate::wire::{TcpFlags, TcpRepr};

impl Connection {
    /// Feeds one segment from the peer. Errors say why (part of) it was refused; every one is also counted.
    /// Nothing a peer sends can make this panic.
    pub fn handle_segment(&mut self, now: Instant, seg: &TcpRepr<'_>) -> Result<(), SegmentError> {
        self.counters.segs_in += 1;
        // The peer spoke: a takeover's probing has done its job.
        self.probe_until_heard = false;
        self.probe_deadline = None;
        let r = match self.state {
            State::Closed => Err(SegmentError::Closed),
            State::SynSent => self.input_syn_sent(now, seg),
            _ => self.input_synchronized(now, seg),
        };
        if r.is_err() {
            self.counters.dropped_segs += 1;
        }
        self.update_timers(now);
        if self.state == State::TimeWait && self.time_wait_deadline.is_none() {
            self.enter_time_wait(now);
        }
        r
    }

    fn input_syn_sent(&mut self, now: Instant, seg: &TcpRepr<'_>) -> Result<(), SegmentError> {
        let f = seg.flags;
        let ack_ok = f.contains(TcpFlags::ACK) && seg.ack == self.snd_max && self.snd_max != self.iss;
        if f.contains(TcpFlags::ACK) && !ack_ok {
            return Err(SegmentError::BadAck);
        }
        if f.contains(TcpFlags::RST) {
            if ack_ok {
                self.enter_closed();
                self.events.push(Event::Reset);
                return Ok(());
            }
            return Err(SegmentError::Handshake);
        }
        if !f.contains(TcpFlags::SYN) || !ack_ok {
            // Simultaneous open is not something a proxy does; the peer will retransmit or reset.
            return Err(SegmentError::Handshake);
        }
        self.take_syn_options(seg);
        self.set_irs(seg.seq);
        // The peer's SYN is acknowledged whatever the ack limit says: an active open's limit is set once
        // the IRS is known, and the ACK that completes the handshake carries no data of the peer's.
        self.rcv_acked = seg.seq.wrapping_add(1);
        self.snd_una = seg.ack;
        self.snd_nxt = seq::max(self.snd_nxt, seg.ack);
        self.snd_wnd = u32::from(seg.window);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        self.rto_deadline = None;
        if self.retries == 0 {
            if let Some((_, t)) = self.rtt_seq {
                self.rtt.sample(now.saturating_duration_since(t));
            }
        }
        self.rtt_seq = None;
        self.retries = 0;
        self.last_rx = now;
        self.state = State::Established;
        self.events.push(Event::Connected);
        self.ack_now = true;
        Ok(())
    }

    fn input_synchronized(&mut self, now: Instant, seg: &TcpRepr<'_>) -> Result<(), SegmentError> {
        let f = seg.flags;
        let rst = f.contains(TcpFlags::RST);
        let syn = f.contains(TcpFlags::SYN);

        // A SYN-ACK not yet sent: the peer's retransmitted SYN changes nothing, anything else is early.
        if self.state == State::SynReceived && self.snd_max == self.iss {
            if rst && seg.seq == self.recv_buf.nxt() {
                self.enter_closed();
                self.events.push(Event::Reset);
                return Ok(());
            }
            if syn && !f.contains(TcpFlags::ACK) && seg.seq == self.irs {
                return Ok(());
            }
            return Err(SegmentError::Handshake);
        }

        // A restored SYN-RECEIVED half whose peer had in fact completed the handshake with the dead box:
        // its ACK lies beyond our SYN-ACK. Complete the handshake here; the ACK's jump is then taken as
        // a resynchronization like any other.
        if self.state == State::SynReceived
            && self.resync
            && now < self.resync_until
            && f.contains(TcpFlags::ACK)
            && !rst
            && !syn
            && seq::gt(seg.ack, self.snd_max)
            && seq::le(seg.ack, self.snd_max.wrapping_add(self.cfg.send_buffer as u32).wrapping_add(1 << 30))
        {
            self.snd_una = self.snd_max;
            self.snd_nxt = self.snd_max;
            self.snd_wnd = u32::from(seg.window) << self.snd_wscale;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.rto_deadline = None;
            self.rtt_seq = None;
            self.retries = 0;
            self.state = if self.fin_queued { State::FinWait1 } else { State::Established };
            self.events.push(Event::Connected);
            self.dupacks_to_send = 3;
        }

        // RFC 7323 §5.3: PAWS, before the sequence check. RSTs are exempt, and so are segments without
        // data (a reordered pure ACK is no old duplicate; dropping it loses ACK information), as Linux
        // does; one tick of disorder is tolerated.
        if self.ts_ok && !rst && seg.segment_len() > 0 {
            if let Some(ts) = seg.options.timestamps {
                if seq::lt(ts.tsval.wrapping_add(1), self.ts_recent) {
                    self.ack_now = true;
                    return Err(SegmentError::Paws);
                }
            }
        }

        // Sequence acceptability, measured from the ACK we last sent (the peer's view of our edge), as
        // Linux does: retransmissions of bytes held but not yet acknowledged are acceptable, absorbed as
        // duplicates, and their ACK field is used.
        let seg_len = seg.segment_len() as u32;
        let seg_end = seg.seq.wrapping_add(seg_len);
        let left = self.rcv_acked;
        let right = seq::max(self.recv_buf.right_edge(), self.rcv_adv);
        let acceptable =
            seq::ge(seg_end, left) && (seq::lt(seg.seq, right) || (seg_len == 0 && seg.seq == right));

        if rst && self.state == State::TimeWait {
            // RFC 1337: a late RST must not cut TIME-WAIT short.
            return Err(SegmentError::TimeWaitRst);
        }
        if rst {
            // RFC 5961 §3.2: exact match resets; in window gets a challenge ACK; the rest is dropped.
            if seg.seq == self.recv_buf.nxt() || seg.seq == self.rcv_acked {
                self.enter_closed();
                self.events.push(Event::Reset);
                return Ok(());
            }
            if seq::in_range(seg.seq, left, right) {
                self.challenge(now);
                return Err(SegmentError::Challenged);
            }
            return Err(SegmentError::OutOfWindow);
        }

        if self.state == State::TimeWait
            && syn
            && !f.contains(TcpFlags::ACK)
            && seq::gt(seg.seq, self.recv_buf.nxt())
        {
            return Err(SegmentError::TimeWaitSyn);
        }

        if !acceptable {
            if self.resync && now < self.resync_until && f.contains(TcpFlags::ACK) && !syn {
                // A restored engine's receive state may be older than the peer's, so the peer's segments
                // lie beyond our window; their ACK field is still what the takeover needs (how far the
                // peer got), so it is taken before the segment is dropped.
                let _ = self.process_ack(now, seg);
            }
            self.ack_now = true;
            return Err(SegmentError::OutOfWindow);
        }

        if syn {
            // RFC 5961 §4: any SYN in a synchronized state is answered with a challenge ACK. In SYN-RECEIVED
            // it is the client retransmitting its SYN: resend the SYN-ACK instead.
            if self.state == State::SynReceived && seg.seq == self.irs && !f.contains(TcpFlags::ACK) {
                self.syn_pending = true;
                return Ok(());
            }
            self.challenge(now);
            return Err(SegmentError::Challenged);
        }

        if !f.contains(TcpFlags::ACK) {
            return Err(SegmentError::NoAck);
        }

        if self.state == State::SynReceived {
            if seg.ack != self.snd_max {
                return Err(SegmentError::BadAck);
            }
            self.snd_una = seg.ack;
            self.snd_nxt = seq::max(self.snd_nxt, seg.ack);
            self.snd_wnd = u32::from(seg.window) << self.snd_wscale;
            self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
            self.rto_deadline = None;
            if self.retries == 0 {
                if let Some((_, t)) = self.rtt_seq {
                    self.rtt.sample(now.saturating_duration_since(t));
                }
            }
            self.rtt_seq = None;
            self.retries = 0;
            self.state = if self.fin_queued { State::FinWait1 } else { State::Established };
            self.events.push(Event::Connected);
        }

        // RFC 7323 §4.3: remember the peer's TSval when the segment covers the edge we acknowledged.
        if self.ts_ok {
            if let Some(ts) = seg.options.timestamps {
                if seq::le(seg.seq, self.rcv_acked) && seq::ge(ts.tsval, self.ts_recent) {
                    self.ts_recent = ts.tsval;
                }
            }
        }
        self.last_rx = now;
        self.retries = 0;

        self.process_ack(now, seg)?;

        if self.state == State::Closed {
            return Ok(());
        }
        self.process_data(seg);
        Ok(())
    }

    fn process_ack(&mut self, now: Instant, seg: &TcpRepr<'_>) -> Result<(), SegmentError> {
        let ack = seg.ack;
        let fin_pending_ack = self.fin_sent() && !self.fin_acked;
        let fin_at = self.fin_seq();
        if self.resync && now >= self.resync_until {
            self.resync = false;
        }
        if seq::gt(ack, self.snd_max) {
            // After a restore the old box may have sent further than the snapshot knew, by any amount the
            // snapshot's age allows (a quarter of the sequence space keeps comparisons meaningful). The
            // segment already passed the receive-window check, so a blind forger still has to hit it.
            let bound = self.snd_una.wrapping_add(1 << 30);
            if self.resync && seq::le(ack, bound) {
                self.resync_to(ack);
            } else {
                self.ack_now = true;
                return Err(SegmentError::BadAck);
            }
        }
        let max_wnd = self.max_snd_wnd.max(u32::from(u16::MAX));
        if seq::lt(ack, self.snd_una.wrapping_sub(max_wnd)) {
            self.challenge(now);
            return Err(SegmentError::BadAck);
        }

        let mut sack_news = false;
        if self.sack_ok {
            for &(l, r) in seg.options.sack.as_slice() {
                let l = seq::max(l, self.snd_una);
                let r = seq::min(r, self.snd_max);
                if seq::lt(l, r) && seq::gt(l, ack) {
                    sack_news |= self.scoreboard.insert(l, r);
                } else if seq::lt(l, r) && seq::le(l, ack) && seq::gt(r, ack) {
                    sack_news |= self.scoreboard.insert(ack, r);
                }
            }
        }

        let new_wnd = u32::from(seg.window) << self.snd_wscale;
        if seq::gt(ack, self.snd_una) {
            self.on_new_ack(now, seg, ack);
        } else if ack == self.snd_una
            && seg.payload.is_empty()
            && !seg.flags.intersects(TcpFlags::SYN | TcpFlags::FIN)
            && self.snd_max != self.snd_una
            && (new_wnd == self.snd_wnd || sack_news)
        {
            self.counters.dup_acks_in += 1;
            self.on_dup_ack(now);
        }

        // RFC 9293 §3.10.7.4: update the window only from segments not older than the last update, and
        // never from an ACK below SND.UNA (its window is relative to an older edge).
        let newer = seq::lt(self.snd_wl1, seg.seq) || (self.snd_wl1 == seg.seq && seq::le(self.snd_wl2, ack));
        if newer && seq::ge(ack, self.snd_una) {
            self.snd_wnd = new_wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(new_wnd);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
        }

        // Our FIN acknowledged?
        if fin_pending_ack && seq::gt(self.snd_una, fin_at) {
            self.fin_acked = true;
            match self.state {
                State::FinWait1 => self.state = State::FinWait2,
                State::Closing => self.state = State::TimeWait,
                State::LastAck => {
                    self.enter_closed();
                    self.events.push(Event::Closed);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn resync_to(&mut self, ack: u32) {
        let from = self.snd_una;
        let jump = seq::dist(from, ack);
        let buffered = self.send_buf.len() as u32;
        self.send_buf.consume(jump as usize);
        self.snd_una = ack;
        self.snd_nxt = ack;
        self.snd_max = ack;
        self.snd_wl2 = ack;
        self.scoreboard.clear();
        self.in_recovery = false;
        self.rexmit_pending = false;
        self.dupacks = 0;
        self.recover = ack;
        self.high_rxt = ack;
        self.rtt_seq = None;
        self.rto_deadline = None;
        self.events.push(Event::SendResynced { from, to: ack, unbuffered: jump.saturating_sub(buffered) });
    }

    fn on_new_ack(&mut self, now: Instant, seg: &TcpRepr<'_>, ack: u32) {
        let acked = seq::dist(self.snd_una, ack);
        // RTT: timestamps when both sides use them (RFC 7323 §4.1), else one timed segment (Karn).
        let mut sampled = false;
        if self.ts_ok {
            if let Some(ts) = seg.options.timestamps {
                if ts.tsecr != 0 && seq::ge(ts.tsecr, self.ts_floor) {
                    let ms = self.tsval(now).wrapping_sub(ts.tsecr);
                    if ms < 0x8000_0000 {
                        self.rtt.sample(Duration::from_millis(u64::from(ms)));
                        sampled = true;
                    }
                }
            }
        }
        if let Some((s, t)) = self.rtt_seq {
            if seq::gt(ack, s) {
                if !sampled {
                    self.rtt.sample(now.saturating_duration_since(t));
                }
                self.rtt_seq = None;
            }
        }
        self.send_buf.consume(acked as usize);
        self.snd_una = ack;
        if seq::lt(self.snd_nxt, ack) {
            self.snd_nxt = ack;
        }
        self.scoreboard.prune(ack);
        self.high_rxt = seq::max(self.high_rxt, ack);
        let mss = self.eff_mss();
        if self.in_recovery {
            if seq::ge(ack, self.recover) {
                // Full ACK: recovery is over (RFC 6582 §3.2 step 3).
                self.in_recovery = false;
                self.cc.on_recovery_end(now);
                self.dupacks = 0;
            } else {
                // Partial ACK: retransmit the next hole at once and deflate (RFC 6582 §3.2 step 4).
                self.rec_cwnd = self.rec_cwnd.saturating_sub(acked);
                if acked >= mss {
                    self.rec_cwnd = self.rec_cwnd.saturating_add(mss);
                }
                self.rec_cwnd = self.rec_cwnd.max(mss);
                self.rexmit_pending = true;
                self.rto_deadline = Some(now + self.rtt.rto());
            }
        } else {
            self.dupacks = 0;
            self.cc.on_ack(now, acked, mss, self.rtt.srtt());
        }
        if self.snd_una == self.snd_max {
            self.rto_deadline = None;
        } else {
            self.rto_deadline = Some(now + self.rtt.rto());
        }
    }

    fn on_dup_ack(&mut self, now: Instant) {
        self.dupacks = self.dupacks.saturating_add(1);
        let mss = self.eff_mss();
        if self.in_recovery {
            self.rec_cwnd = self.rec_cwnd.saturating_add(mss);
            return;
        }
        let sack_loss = self.sack_ok && self.scoreboard.sacked_bytes() >= 3 * mss;
        // RFC 6582 §3.2 step 1: a new recovery only once the previous one's data is acknowledged.
        if (self.dupacks >= 3 || sack_loss) && seq::ge(self.snd_una, self.recover) {
            let flight = seq::dist(self.snd_una, self.snd_max);
            self.cc.on_congestion_event(now, flight, mss);
            self.in_recovery = true;
            self.recover = self.snd_max;
            self.high_rxt = self.snd_una;
            self.rec_cwnd = self.cc.ssthresh().saturating_add(3 * mss);
            self.rexmit_pending = true;
            self.rtt_seq = None;
            self.counters.fast_retransmits += 1;
        }
    }

    fn process_data(&mut self, seg: &TcpRepr<'_>) {
        let receiving = matches!(self.state, State::Established | State::FinWait1 | State::FinWait2);
        let nxt = self.recv_buf.nxt();
        if receiving
            && seg.segment_len() == 0
            && seq::gt(seg.seq, nxt)
            && seq::le(seg.seq, self.recv_buf.right_edge())
            && self.gap_reported_at != Some(nxt)
        {
            // A pure ACK whose sequence number lies beyond RCV.NXT: the peer sent bytes we never got. If
            // they were its last (a tail loss), nothing else would tell it before its RTO, which a peer
            // may have backed off to seconds; three duplicate ACKs start its fast retransmit now. Once per
            // RCV.NXT, since every pure ACK of the peer's shows the same gap.
            self.gap_reported_at = Some(nxt);
            self.dupacks_to_send = self.dupacks_to_send.max(3);
        }
        if !seg.payload.is_empty() {
            if !receiving {
                // After the peer's FIN nothing more can come; a retransmission gets an ACK.
                self.ack_now = true;
            } else {
                let before = self.ack_target();
                let out = self.recv_buf.write(seg.seq, seg.payload);
                self.counters.bytes_in += u64::from(out.advanced);
                if out.out_of_order {
                    self.counters.out_of_order_segs += 1;
                }
                if out.duplicate {
                    self.counters.duplicate_segs += 1;
                }
                if out.out_of_order || out.duplicate || out.refused {
                    // RFC 5681 §4.2: out-of-order and duplicate segments are acknowledged at once.
                    self.ack_now = true;
                } else if out.advanced > 0 {
                    if !self.recv_buf.ooo_ranges().is_empty()
                        || self.ooo_filled(out.advanced, seg.payload.len())
                    {
                        self.ack_now = true;
                    } else if seq::gt(self.ack_target(), before) || seq::gt(self.ack_target(), self.rcv_acked)
                    {
                        self.unacked_segs = self.unacked_segs.saturating_add(1);
                        if self.unacked_segs >= 2 {
                            self.ack_now = true;
                        } else if self.delack_deadline.is_none() {
                            self.delack_deadline = Some(self.last_rx + self.cfg.delayed_ack);
                        }
                    }
                }
            }
        }
        if seg.flags.contains(TcpFlags::FIN) && receiving {
            let fin = seg.seq.wrapping_add(seg.payload.len() as u32);
            if seq::ge(fin, self.recv_buf.nxt()) && seq::lt(fin, self.recv_buf.right_edge().wrapping_add(1)) {
                self.fin_pending = Some(fin);
            }
            self.ack_now = true;
        } else if seg.flags.contains(TcpFlags::FIN) && self.state == State::TimeWait {
            // A retransmitted FIN: our ACK was lost. Acknowledge again and restart the wait.
            self.ack_now = true;
            self.time_wait_deadline = None;
        }
        self.check_fin_pending();
    }

    /// Whether this segment filled a hole (the edge moved further than its own length).
    fn ooo_filled(&self, advanced: u32, len: usize) -> bool {
        advanced as usize > len
    }
}
