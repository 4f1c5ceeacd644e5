//! The withheld-ACK contract against smoltcp: no emitted segment acknowledges past the limit (checked on
//! every segment by the harness), the SYN-ACK waits for the limit, held bytes are SACKed and never dropped,
//! the window stays honest and never shrinks, and the peer's retransmissions are absorbed.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use dataplane::tcp::{seq, Config, State};
use dataplane::time::{Duration, Instant};
use std::collections::VecDeque;
use support::{Harness, LinkFaults, PeerOpts};

/// A gate that lets the limit trail RCV.NXT by `lag`, as a backend's ACKs would.
struct LaggingGate {
    lag: Duration,
    history: VecDeque<(Instant, u32)>,
}

impl LaggingGate {
    fn tick(&mut self, h: &mut Harness) {
        let now = h.now;
        if self.history.back().is_none_or(|&(_, s)| s != h.eng.rcv_nxt()) {
            self.history.push_back((now, h.eng.rcv_nxt()));
        }
        let mut allowed = None;
        while let Some(&(t, s)) = self.history.front() {
            if t + self.lag <= now {
                allowed = Some(s);
                self.history.pop_front();
            } else {
                break;
            }
        }
        if let Some(s) = allowed {
            let cur = h.checker.limit.unwrap_or(s);
            h.set_limit(Some(seq::max(cur, s)));
        }
        if h.wake.is_none() {
            h.wake = Some(now + Duration::from_millis(2));
        }
    }
}

fn gated(opts: PeerOpts, faults: LinkFaults, seed: u64, bytes: u64, lag: Duration) -> Harness {
    let cfg = Config { isn_secret: [seed as u8; 16], ..Config::default() };
    let mut h = Harness::passive(cfg, opts, faults, seed, None);
    let irs = h.eng.irs();
    // The limit does not cover the SYN yet: no SYN-ACK may leave.
    h.set_limit(Some(irs));
    let until = h.now + Duration::from_millis(300);
    h.wake = Some(until);
    h.run_until(Duration::from_secs(1), |h| h.now >= until);
    assert_eq!(h.checker.segments, 0, "a SYN-ACK left before the limit covered the SYN");
    assert_eq!(h.eng.state(), State::SynReceived);
    h.set_limit(Some(irs.wrapping_add(1)));
    h.establish();

    h.peer_app.to_send = bytes;
    h.eng_app.to_send = bytes / 4;
    let mut gate = LaggingGate { lag, history: VecDeque::new() };
    h.run_until(Duration::from_secs(300), |h| {
        gate.tick(h);
        h.transfers_done()
    });
    // Release the gate entirely: everything held is acknowledged.
    let edge = h.eng.rcv_nxt();
    h.set_limit(Some(edge));
    h.run_until(Duration::from_secs(10), |h| h.eng.ack_sent() == edge && h.to_peer.next_at().is_none());
    h
}

#[test]
fn limit_holds_syn_ack_and_every_ack_clean_link() {
    // A lag longer than the peer's RTO: it retransmits what the engine holds.
    let h = gated(PeerOpts::ALL, LinkFaults::clean(), 21, 2 << 20, Duration::from_millis(500));
    assert!(h.checker.acks_checked > 1000);
    // The peer retransmitted bytes whose ACK was held; the engine absorbed them as duplicates.
    assert!(h.eng.counters().duplicate_segs > 0, "{:?}", h.eng.counters());
    assert!(h.checker.held_sack_blocks > 0, "held bytes were SACKed");
}

#[test]
fn limit_with_loss_and_no_sack() {
    let h = gated(
        PeerOpts { sack: false, ..PeerOpts::ALL },
        LinkFaults::lossy(0.02),
        22,
        1 << 20,
        Duration::from_millis(30),
    );
    assert_eq!(h.checker.sack_blocks_seen, 0);
    assert!(h.checker.acks_checked > 100);
}

#[test]
fn frozen_limit_keeps_bytes_and_window_honest() {
    let cfg = Config { isn_secret: [23; 16], recv_buffer: 64 * 1024, ..Config::default() };
    let mut h = Harness::passive(cfg, PeerOpts::ALL, LinkFaults::clean(), 23, None);
    h.establish();
    let base = h.eng.rcv_nxt();
    h.set_limit(Some(base));
    // The application does not read either: the window closes on exactly the buffered bytes.
    h.eng_reads = false;
    h.peer_app.to_send = 200 * 1024;
    let until = h.now + Duration::from_secs(3);
    h.wake = Some(until);
    h.run_until(Duration::from_secs(5), |h| h.now >= until);
    assert_eq!(h.eng.ack_sent(), base, "nothing acknowledged past the frozen limit");
    let held = seq::dist(base, h.eng.rcv_nxt());
    assert!(held >= 60 * 1024, "the engine holds what fits in its buffer: {held}");
    assert_eq!(h.eng.recv_available() as u32, held, "held bytes are all still there");
    // Read and release: the stream completes intact.
    h.eng_reads = true;
    h.set_limit(None);
    h.run_until(Duration::from_secs(60), |h| h.transfers_done());
    assert!(h.eng.counters().duplicate_segs > 0, "peer retransmissions were absorbed");
}
