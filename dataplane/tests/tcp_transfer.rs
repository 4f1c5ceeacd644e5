//! Bulk transfers between the engine and an independent TCP (smoltcp), byte for byte, across loss,
//! reordering and duplication, with each option on and off on the peer's side.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use dataplane::tcp::{Config, State};
use dataplane::time::Duration;
use support::{Harness, LinkFaults, PeerOpts};

const MB: u64 = 1 << 20;

fn transfer(active: bool, opts: PeerOpts, faults: LinkFaults, seed: u64, bytes: u64) -> Harness {
    let cfg = Config { isn_secret: [seed as u8; 16], ..Config::default() };
    let mut h = if active {
        Harness::active(cfg, opts, faults, seed)
    } else {
        Harness::passive(cfg, opts, faults, seed, None)
    };
    h.eng_app.to_send = bytes;
    h.peer_app.to_send = bytes;
    h.run_until(Duration::from_secs(600), |h| h.transfers_done());
    assert!(h.checker.segments > 0);
    h
}

#[test]
fn clean_both_ways_all_options() {
    let mut h = transfer(true, PeerOpts::ALL, LinkFaults::clean(), 1, 4 * MB);
    let (_, sws, rws, sack, ts) = h.eng.negotiated();
    assert!(sws > 0 && rws > 0 && sack && ts);
    assert_eq!(h.eng.counters().retransmitted_segs, 0);
    h.flush_engine();
    let s = h.summary();
    assert_eq!(h.eng.state(), State::Established, "{:?} {s}", h.events);
}

#[test]
fn clean_passive_no_options() {
    let h = transfer(false, PeerOpts::NONE, LinkFaults::clean(), 2, 2 * MB);
    let (mss, sws, rws, sack, ts) = h.eng.negotiated();
    assert_eq!((sws, rws, sack, ts), (0, 0, false, false));
    assert!(mss >= 1460);
}

#[test]
fn one_percent_loss_all_options_passive() {
    let h = transfer(false, PeerOpts::ALL, LinkFaults::lossy(0.01), 3, 3 * MB);
    assert!(h.eng.counters().retransmitted_segs > 0);
}

#[test]
fn one_percent_loss_no_sack_active() {
    let h = transfer(true, PeerOpts { sack: false, ..PeerOpts::ALL }, LinkFaults::lossy(0.01), 4, 3 * MB);
    assert!(!h.eng.negotiated().3);
}

#[test]
fn one_percent_loss_no_timestamps_passive() {
    let h =
        transfer(false, PeerOpts { timestamps: false, ..PeerOpts::ALL }, LinkFaults::lossy(0.01), 5, 3 * MB);
    assert!(!h.eng.negotiated().4);
}

#[test]
fn one_percent_loss_no_window_scale_active() {
    let h = transfer(true, PeerOpts { wscale: false, ..PeerOpts::ALL }, LinkFaults::lossy(0.01), 6, 3 * MB);
    assert_eq!(h.eng.negotiated().1, 0);
}

#[test]
fn five_percent_loss_all_options_active() {
    let h = transfer(true, PeerOpts::ALL, LinkFaults::lossy(0.05), 7, 3 * MB);
    assert!(h.eng.counters().retransmitted_segs > 0);
    assert!(h.eng.counters().out_of_order_segs > 0);
}

#[test]
fn five_percent_loss_no_options_passive() {
    let h = transfer(false, PeerOpts::NONE, LinkFaults::lossy(0.05), 8, 3 * MB);
    assert!(h.eng.counters().retransmitted_segs > 0);
}
