//! Handshake, teardown, RST, zero window and persist against smoltcp; RFC 5961, PAWS, TIME-WAIT and the
//! idle timeout with hand-made segments.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use dataplane::tcp::{Config, Connection, Event, SegmentError, State, Transmit};
use dataplane::time::{Duration, Instant};
use dataplane::wire::{TcpFlags, TcpOptions, TcpRepr, Timestamps};
use smoltcp::socket::tcp::State as PeerState;
use support::{eng_addr, peer_addr, Harness, LinkFaults, PeerOpts};

#[test]
fn syn_is_retransmitted() {
    let cfg = Config { rto_initial: Duration::from_millis(300), ..Config::default() };
    let mut h = Harness::active(cfg, PeerOpts::ALL, LinkFaults::clean(), 41);
    h.to_peer.cut = true;
    h.pump();
    h.to_peer.cut = false;
    h.establish();
    assert_eq!(h.eng.counters().timeouts, 1);
    assert!(h.now >= Instant::from_millis(300));
}

#[test]
fn syn_ack_is_retransmitted() {
    let cfg = Config { rto_initial: Duration::from_millis(300), ..Config::default() };
    let mut h = Harness::passive(cfg, PeerOpts::ALL, LinkFaults::clean(), 42, None);
    h.to_peer.cut = true;
    h.pump();
    h.to_peer.cut = false;
    h.establish();
    assert!(h.eng.counters().segs_out >= 2);
}

#[test]
fn syn_retries_run_out() {
    let cfg = Config { syn_retries: 2, rto_initial: Duration::from_millis(100), ..Config::default() };
    let mut h = Harness::active(cfg, PeerOpts::ALL, LinkFaults::clean(), 43);
    h.to_peer.cut = true;
    h.run_until(Duration::from_secs(10), |h| h.eng.state() == State::Closed);
    assert!(h.events.contains(&Event::TimedOut));
    assert_eq!(h.eng.counters().segs_out, 3);
}

#[test]
fn half_close_engine_first() {
    let mut h = Harness::active(Config::default(), PeerOpts::ALL, LinkFaults::lossy(0.01), 44);
    h.establish();
    h.eng_app.to_send = 50_000;
    h.eng_app.close_when_sent = true;
    h.peer_app.to_send = 200_000;
    // The engine's direction closes early; the peer's keeps flowing into the half-closed engine.
    h.run_until(Duration::from_secs(60), |h| {
        h.eng_app.received == 50_000 && h.eng.state() == State::FinWait2
    });
    assert_eq!(h.eng.state(), State::FinWait2);
    let before = h.eng.counters().bytes_in;
    // More from the peer after our FIN was acknowledged: it must still be taken in.
    h.peer_app.to_send += 2_000_000;
    h.peer_app.close_when_sent = true;
    h.run_until(Duration::from_secs(60), |h| h.transfers_done() && h.eng.state() == State::TimeWait);
    assert!(h.events.contains(&Event::PeerClosed));
    assert!(h.eng.counters().bytes_in > before);
    h.run_until(Duration::from_secs(10), |h| h.eng.state() == State::Closed);
    assert_eq!(h.events.last(), Some(&Event::Closed));
}

#[test]
fn half_close_peer_first() {
    let mut h = Harness::passive(Config::default(), PeerOpts::NONE, LinkFaults::lossy(0.01), 45, None);
    h.establish();
    h.peer_app.to_send = 200_000;
    h.peer_app.close_when_sent = true;
    h.eng_app.to_send = 800_000;
    h.run_until(Duration::from_secs(60), |h| h.peer_app.received == 200_000 && h.eng.is_recv_closed());
    assert_eq!(h.eng.state(), State::CloseWait);
    h.eng_app.close_when_sent = true;
    h.run_until(Duration::from_secs(60), |h| h.transfers_done() && h.eng.state() == State::Closed);
    assert_eq!(h.events, vec![Event::Connected, Event::PeerClosed, Event::Closed]);
    h.run_until(Duration::from_secs(10), |h| {
        matches!(h.sock().state(), PeerState::TimeWait | PeerState::Closed)
    });
}

#[test]
fn peer_reset_closes_engine() {
    let mut h = Harness::active(Config::default(), PeerOpts::ALL, LinkFaults::clean(), 46);
    h.establish();
    h.peer_app.to_send = 100_000;
    h.run_until(Duration::from_secs(10), |h| h.peer_app.received == 100_000);
    h.sock().abort();
    h.run_until(Duration::from_secs(10), |h| h.eng.state() == State::Closed);
    assert!(h.events.contains(&Event::Reset));
}

#[test]
fn engine_abort_resets_peer() {
    let mut h = Harness::passive(Config::default(), PeerOpts::ALL, LinkFaults::clean(), 47, None);
    h.establish();
    h.eng.abort();
    h.run_until(Duration::from_secs(10), |h| h.sock().state() == PeerState::Closed);
    assert_eq!(h.eng.state(), State::Closed);
}

#[test]
fn zero_window_and_persist() {
    let mut h = Harness::active(Config::default(), PeerOpts::ALL, LinkFaults::clean(), 48);
    h.establish();
    h.peer_reads = false;
    h.eng_app.to_send = 1 << 20;
    let until = h.now + Duration::from_secs(5);
    h.wake = Some(until);
    h.run_until(Duration::from_secs(10), |h| h.now >= until);
    assert_eq!(h.eng.snd_wnd(), 0, "the peer's window closed");
    assert!(h.eng.counters().window_probes >= 2, "{:?}", h.eng.counters());
    h.peer_reads = true;
    h.run_until(Duration::from_secs(120), |h| h.transfers_done());
}

// ----- Hand-made segments -----

const ISS: u32 = 0xffff_ff00;
const IRS: u32 = 0x7fff_fff0;

fn seg(seq: u32, ack: u32, flags: TcpFlags, payload: &'static [u8]) -> TcpRepr<'static> {
    TcpRepr {
        src_port: peer_addr().port(),
        dst_port: eng_addr().port(),
        seq,
        ack,
        flags,
        window: 1000,
        urgent: 0,
        options: TcpOptions::default(),
        payload,
    }
}

fn drain(c: &mut Connection, now: Instant) -> Vec<Transmit> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(t) = c.poll_transmit(now, &mut buf) {
        out.push(t);
        assert!(out.len() < 1000);
    }
    out
}

/// An engine established with a hand-made peer (timestamps on when `ts`).
fn established(ts: bool) -> Connection {
    let cfg =
        Config { challenge_ack_limit: 5, idle_timeout: Some(Duration::from_secs(30)), ..Config::default() };
    let mut syn = seg(IRS, 0, TcpFlags::SYN, &[]);
    syn.options.mss = Some(1460);
    syn.options.window_scale = Some(0);
    if ts {
        syn.options.timestamps = Some(Timestamps { tsval: 1000, tsecr: 0 });
    }
    let t0 = Instant::ZERO;
    let mut c = Connection::accept(t0, &cfg, eng_addr(), peer_addr(), &syn, ISS).unwrap();
    let out = drain(&mut c, t0);
    assert_eq!(out.len(), 1);
    assert!(out[0].repr.flags.contains(TcpFlags::SYN | TcpFlags::ACK));
    let mut ack = seg(IRS.wrapping_add(1), ISS.wrapping_add(1), TcpFlags::ACK, &[]);
    if ts {
        ack.options.timestamps =
            Some(Timestamps { tsval: 1001, tsecr: out[0].repr.options.timestamps.unwrap().tsval });
    }
    c.handle_segment(t0, &ack).unwrap();
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.poll_event(), Some(Event::Connected));
    c
}

#[test]
fn rst_in_window_gets_challenge_ack() {
    let mut c = established(false);
    let now = Instant::from_millis(1);
    let nxt = IRS.wrapping_add(1);
    let r = c.handle_segment(now, &seg(nxt.wrapping_add(100), 0, TcpFlags::RST, &[]));
    assert_eq!(r, Err(SegmentError::Challenged));
    assert_eq!(c.state(), State::Established);
    let out = drain(&mut c, now);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].repr.flags, out[0].repr.ack), (TcpFlags::ACK, nxt));
    // Out of window: silently dropped.
    let r = c.handle_segment(now, &seg(nxt.wrapping_add(1 << 30), 0, TcpFlags::RST, &[]));
    assert_eq!(r, Err(SegmentError::OutOfWindow));
    assert!(drain(&mut c, now).is_empty());
    // Exactly at RCV.NXT: reset.
    c.handle_segment(now, &seg(nxt, 0, TcpFlags::RST, &[])).unwrap();
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.poll_event(), Some(Event::Reset));
    assert!(drain(&mut c, now).is_empty());
}

#[test]
fn syn_in_established_gets_challenge_ack_rate_limited() {
    let mut c = established(false);
    let now = Instant::from_millis(1);
    let mut acks = 0;
    for i in 0..20u32 {
        let r = c.handle_segment(now, &seg(IRS.wrapping_add(10 + i), 0, TcpFlags::SYN, &[]));
        assert_eq!(r, Err(SegmentError::Challenged));
        acks += drain(&mut c, now).len();
    }
    assert_eq!(acks, 5, "challenge ACKs are limited per second");
    assert_eq!(c.state(), State::Established);
    // A second later the budget is back.
    let later = Instant::from_millis(1_100);
    let _ = c.handle_segment(later, &seg(IRS.wrapping_add(10), 0, TcpFlags::SYN, &[]));
    assert_eq!(drain(&mut c, later).len(), 1);
}

#[test]
fn ack_of_unsent_data_is_refused() {
    let mut c = established(false);
    let now = Instant::from_millis(1);
    let r = c.handle_segment(now, &seg(IRS.wrapping_add(1), ISS.wrapping_add(5000), TcpFlags::ACK, b"x"));
    assert_eq!(r, Err(SegmentError::BadAck));
    assert_eq!(c.recv_available(), 0, "the segment was dropped whole");
    let out = drain(&mut c, now);
    assert_eq!(out.len(), 1);
    assert_eq!(c.snd_una(), ISS.wrapping_add(1));
}

#[test]
fn paws_drops_old_timestamps() {
    let mut c = established(true);
    let now = Instant::from_millis(5);
    let nxt = IRS.wrapping_add(1);
    let mut s = seg(nxt, ISS.wrapping_add(1), TcpFlags::ACK, b"hello");
    s.options.timestamps = Some(Timestamps { tsval: 2000, tsecr: 0 });
    c.handle_segment(now, &s).unwrap();
    let mut old = seg(nxt.wrapping_add(5), ISS.wrapping_add(1), TcpFlags::ACK, b"world");
    old.options.timestamps = Some(Timestamps { tsval: 1500, tsecr: 0 });
    assert_eq!(c.handle_segment(now, &old), Err(SegmentError::Paws));
    let mut buf = [0u8; 16];
    assert_eq!(c.recv(&mut buf), 5);
    assert_eq!(&buf[..5], b"hello");
}

#[test]
fn out_of_order_is_reassembled_and_sacked() {
    let cfg_sack = |c: &mut Connection| c.negotiated();
    let mut c = established(false);
    let _ = cfg_sack(&mut c);
    let now = Instant::from_millis(1);
    let nxt = IRS.wrapping_add(1);
    let a = ISS.wrapping_add(1);
    c.handle_segment(now, &seg(nxt.wrapping_add(6), a, TcpFlags::ACK, b"world")).unwrap();
    assert_eq!(c.ooo_ranges(), &[(nxt.wrapping_add(6), nxt.wrapping_add(11))]);
    let out = drain(&mut c, now);
    assert_eq!(out.len(), 1, "an out-of-order segment is acknowledged at once");
    assert_eq!(out[0].repr.ack, nxt);
    c.handle_segment(now, &seg(nxt, a, TcpFlags::ACK, b"hello ")).unwrap();
    assert_eq!(c.rcv_nxt(), nxt.wrapping_add(11));
    let mut buf = [0u8; 32];
    assert_eq!(c.recv(&mut buf), 11);
    assert_eq!(&buf[..11], b"hello world");
    let out = drain(&mut c, now);
    assert_eq!(out.last().unwrap().repr.ack, nxt.wrapping_add(11), "filling a hole is acknowledged at once");
}

#[test]
fn a_hole_is_acknowledged_by_a_pure_ack_even_with_data_to_send() {
    // Peers count only pure ACKs as duplicates (RFC 5681 §2): a duplicate ACK that rode on our data
    // would never start their fast retransmit, and the hole would wait for their RTO.
    let mut c = established(false);
    let now = Instant::from_millis(1);
    let nxt = IRS.wrapping_add(1);
    let a = ISS.wrapping_add(1);
    assert_eq!(c.send(b"data waiting to go"), 18);
    c.handle_segment(now, &seg(nxt.wrapping_add(6), a, TcpFlags::ACK, b"world")).unwrap();
    let out = drain(&mut c, now);
    assert!(out.len() >= 2, "{out:?}");
    assert_eq!(out[0].payload_len, 0, "the duplicate ACK goes out alone, before the data");
    assert_eq!(out[0].repr.ack, nxt);
    assert!(out.iter().skip(1).any(|t| t.payload_len == 18), "the data follows");
}

#[test]
fn sack_blocks_report_held_bytes() {
    let cfg = Config::default();
    let mut syn = seg(IRS, 0, TcpFlags::SYN, &[]);
    syn.options.sack_permitted = true;
    let t0 = Instant::ZERO;
    let mut c = Connection::accept(t0, &cfg, eng_addr(), peer_addr(), &syn, ISS).unwrap();
    let nxt = IRS.wrapping_add(1);
    c.set_ack_limit(Some(nxt));
    assert_eq!(drain(&mut c, t0).len(), 1);
    c.handle_segment(t0, &seg(nxt, ISS.wrapping_add(1), TcpFlags::ACK, &[])).unwrap();
    c.handle_segment(t0, &seg(nxt, ISS.wrapping_add(1), TcpFlags::ACK, b"held")).unwrap();
    c.handle_segment(t0, &seg(nxt.wrapping_add(10), ISS.wrapping_add(1), TcpFlags::ACK, b"later")).unwrap();
    let out = drain(&mut c, t0);
    let last = out.last().unwrap();
    assert_eq!(last.repr.ack, nxt, "nothing beyond the limit");
    let blocks = last.repr.options.sack.as_slice();
    assert!(blocks.contains(&(nxt, nxt.wrapping_add(4))), "{blocks:?}");
    assert!(blocks.contains(&(nxt.wrapping_add(10), nxt.wrapping_add(15))), "{blocks:?}");
    // The limit moves: an ACK goes out at once.
    c.allow_ack_up_to(nxt.wrapping_add(4));
    let out = drain(&mut c, t0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].repr.ack, nxt.wrapping_add(4));
}

#[test]
fn idle_timeout_resets() {
    let mut c = established(false);
    let t = c.poll_timeout().unwrap();
    assert_eq!(t, Instant::from_secs_for_test(30));
    c.handle_timeout(t);
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.poll_event(), Some(Event::TimedOut));
    let out = drain(&mut c, t);
    assert_eq!(out.len(), 1);
    assert!(out[0].repr.flags.contains(TcpFlags::RST));
}

#[test]
fn time_wait_reports_new_syn() {
    let mut c = established(false);
    let now = Instant::from_millis(1);
    let nxt = IRS.wrapping_add(1);
    c.close();
    let out = drain(&mut c, now);
    assert!(out[0].repr.flags.contains(TcpFlags::FIN));
    c.handle_segment(now, &seg(nxt, ISS.wrapping_add(2), TcpFlags::ACK | TcpFlags::FIN, &[])).unwrap();
    assert_eq!(c.state(), State::TimeWait);
    let r = c.handle_segment(now, &seg(nxt.wrapping_add(100_000), 0, TcpFlags::SYN, &[]));
    assert_eq!(r, Err(SegmentError::TimeWaitSyn));
    let end = c.poll_timeout().unwrap();
    assert_eq!(end, now + Config::default().time_wait);
    c.handle_timeout(end);
    assert_eq!(c.state(), State::Closed);
}

trait ForTest {
    fn from_secs_for_test(s: u64) -> Instant;
}

impl ForTest for Instant {
    fn from_secs_for_test(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }
}

#[test]
fn advance_rcv_edge_skips_delivered_bytes() {
    let mut c = established(false);
    let now = Instant::from_millis(1);
    let nxt = IRS.wrapping_add(1);
    let a = ISS.wrapping_add(1);
    // Bytes 0..5 arrive, 5..10 are lost; 10..15 arrive out of order.
    c.handle_segment(now, &seg(nxt, a, TcpFlags::ACK, b"01234")).unwrap();
    c.handle_segment(now, &seg(nxt.wrapping_add(10), a, TcpFlags::ACK, b"abcde")).unwrap();
    let _ = drain(&mut c, now);
    // Bytes up to 10 are known delivered elsewhere: the edge jumps and swallows the held range above.
    c.advance_rcv_edge(nxt.wrapping_add(10));
    assert_eq!(c.rcv_nxt(), nxt.wrapping_add(15));
    let mut buf = [0u8; 16];
    assert_eq!(c.recv(&mut buf), 5);
    assert_eq!(&buf[..5], b"abcde");
    let out = drain(&mut c, now);
    assert_eq!(out.last().unwrap().repr.ack, nxt.wrapping_add(15));
    // A late copy of skipped bytes is a duplicate: acknowledged, not delivered.
    let r = c.handle_segment(now, &seg(nxt.wrapping_add(5), a, TcpFlags::ACK, b"56789"));
    assert_eq!(r, Err(SegmentError::OutOfWindow));
    assert_eq!(c.recv_available(), 0);
    assert_eq!(drain(&mut c, now).len(), 1);
}

#[test]
fn resync_jumps_send_edges_then_expires() {
    let mut c = established(true);
    let now = Instant::from_millis(10);
    assert_eq!(c.send(&[7u8; 3000]), 3000);
    let _ = drain(&mut c, now);
    let mut saved = c.save();
    // The snapshot knew of 1000 bytes sent of the 3000 queued.
    saved.snd_nxt = ISS.wrapping_add(1 + 1000);
    let cfg = Config {
        resync_window: Duration::from_secs(5),
        ts_restore_jump: Duration::from_secs(10),
        ..Config::default()
    };
    let later = Instant::from_millis(500);
    let mut r = Connection::restore(later, &cfg, &saved, &[7u8; 3000]).unwrap();
    assert!(r.is_resyncing());
    // A run of pure ACKs first (one advertising a window unit less, then four alike), with a TSval
    // ahead of anything the old box sent.
    let out = drain(&mut r, later);
    assert!(out.len() > 5);
    assert_eq!(out[0].repr.window + 1, out[1].repr.window);
    for t in &out[..5] {
        assert_eq!((t.repr.flags, t.payload_len, t.repr.ack), (TcpFlags::ACK, 0, IRS.wrapping_add(1)));
        let tsval = t.repr.options.timestamps.unwrap().tsval;
        assert!(
            tsval.wrapping_sub(saved.ts_last) >= 10_000 && tsval.wrapping_sub(saved.ts_last) < 0x8000_0000
        );
    }
    // The peer acknowledges 4000 bytes: 1000 beyond what this engine buffered.
    let mut ack = seg(IRS.wrapping_add(1), ISS.wrapping_add(1 + 4000), TcpFlags::ACK, &[]);
    ack.options.timestamps = Some(Timestamps { tsval: 5000, tsecr: 0 });
    r.handle_segment(later, &ack).unwrap();
    assert_eq!(
        r.poll_event(),
        Some(Event::SendResynced { from: ISS.wrapping_add(1), to: ISS.wrapping_add(4001), unbuffered: 1000 })
    );
    assert_eq!(
        (r.snd_una(), r.snd_max(), r.send_queue_len()),
        (ISS.wrapping_add(4001), ISS.wrapping_add(4001), 0)
    );
    // After the resync window an ACK beyond SND.MAX is refused again.
    let much_later = later + Duration::from_secs(6);
    ack.ack = ISS.wrapping_add(9001);
    ack.options.timestamps = Some(Timestamps { tsval: 6000, tsecr: 0 });
    assert_eq!(r.handle_segment(much_later, &ack), Err(SegmentError::BadAck));
    assert!(!r.is_resyncing());
}

#[test]
fn active_open_acks_the_syn_ack_whatever_the_limit() {
    let cfg = Config::default();
    let t0 = Instant::ZERO;
    let mut c = Connection::connect(t0, &cfg, eng_addr(), peer_addr(), ISS);
    c.set_ack_limit(Some(0));
    let out = drain(&mut c, t0);
    assert_eq!(out.len(), 1);
    let mut syn_ack = seg(IRS, ISS.wrapping_add(1), TcpFlags::SYN | TcpFlags::ACK, &[]);
    syn_ack.options.mss = Some(1400);
    c.handle_segment(t0, &syn_ack).unwrap();
    assert_eq!(c.state(), State::Established);
    let out = drain(&mut c, t0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].repr.ack, IRS.wrapping_add(1));
    // Data beyond the SYN waits for the limit, which the owner now sets relative to the IRS.
    c.set_ack_limit(Some(IRS.wrapping_add(1)));
    c.handle_segment(t0, &seg(IRS.wrapping_add(1), ISS.wrapping_add(1), TcpFlags::ACK, b"held")).unwrap();
    assert!(drain(&mut c, t0).iter().all(|t| t.repr.ack == IRS.wrapping_add(1)));
    c.allow_ack_up_to(IRS.wrapping_add(5));
    assert_eq!(drain(&mut c, t0).last().unwrap().repr.ack, IRS.wrapping_add(5));
}
