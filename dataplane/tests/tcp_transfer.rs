//! Bulk transfers between the engine and an independent TCP (smoltcp), byte for byte, across loss,
//! reordering and duplication, with each option on and off on the peer's side.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use dataplane::tcp::{Config, CongestionAlgorithm, State};
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

/// Runs the same transfer under several seeds (each a different loss, reorder and duplication pattern).
fn sweep(
    active: bool,
    opts: PeerOpts,
    faults: LinkFaults,
    seeds: std::ops::Range<u64>,
    bytes: u64,
) -> Vec<Harness> {
    seeds.map(|seed| transfer(active, opts, faults, seed, bytes)).collect()
}

fn total(hs: &[Harness], f: impl Fn(&Harness) -> u64) -> u64 {
    hs.iter().map(f).sum()
}

#[test]
fn clean_both_ways_all_options() {
    let mut h = transfer(true, PeerOpts::ALL, LinkFaults::clean(), 1, 4 * MB);
    let (_, sws, rws, sack, ts) = h.eng.negotiated();
    assert!(sws > 0 && rws > 0 && sack && ts);
    assert_eq!(h.eng.counters().retransmitted_segs, 0);
    h.flush_engine();
    assert_eq!(h.eng.state(), State::Established, "{:?}", h.events);
}

#[test]
fn clean_passive_no_options() {
    let h = transfer(false, PeerOpts::NONE, LinkFaults::clean(), 2, 4 * MB);
    let (mss, sws, rws, sack, ts) = h.eng.negotiated();
    assert_eq!((sws, rws, sack, ts), (0, 0, false, false));
    assert!(mss >= 1460);
}

#[test]
fn reordering_and_duplication_without_loss() {
    let faults = LinkFaults {
        loss: 0.0,
        dup: 0.03,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(3),
    };
    let hs = sweep(true, PeerOpts::ALL, faults, 10..13, 4 * MB);
    assert!(total(&hs, |h| h.eng.counters().out_of_order_segs) > 0);
    assert!(total(&hs, |h| h.eng.counters().duplicate_segs) > 0);
}

#[test]
fn one_percent_loss_all_options() {
    let hs = sweep(false, PeerOpts::ALL, LinkFaults::lossy(0.01), 20..23, 4 * MB);
    assert!(total(&hs, |h| h.eng.counters().retransmitted_segs) > 0);
    assert!(total(&hs, |h| h.eng.counters().fast_retransmits) > 0);
}

#[test]
fn one_percent_loss_no_sack() {
    let hs = sweep(true, PeerOpts { sack: false, ..PeerOpts::ALL }, LinkFaults::lossy(0.01), 30..33, 4 * MB);
    assert!(hs.iter().all(|h| !h.eng.negotiated().3));
}

#[test]
fn one_percent_loss_no_timestamps() {
    let hs = sweep(
        false,
        PeerOpts { timestamps: false, ..PeerOpts::ALL },
        LinkFaults::lossy(0.01),
        40..43,
        4 * MB,
    );
    assert!(hs.iter().all(|h| !h.eng.negotiated().4));
}

#[test]
fn one_percent_loss_no_window_scale() {
    let hs =
        sweep(true, PeerOpts { wscale: false, ..PeerOpts::ALL }, LinkFaults::lossy(0.01), 50..53, 4 * MB);
    assert!(hs.iter().all(|h| h.eng.negotiated().1 == 0));
}

#[test]
fn five_percent_loss_all_options() {
    let hs = sweep(true, PeerOpts::ALL, LinkFaults::lossy(0.05), 60..63, 4 * MB);
    assert!(total(&hs, |h| h.eng.counters().retransmitted_segs) > 0);
    assert!(total(&hs, |h| h.eng.counters().out_of_order_segs) > 0);
}

#[test]
fn five_percent_loss_no_options() {
    let hs = sweep(false, PeerOpts::NONE, LinkFaults::lossy(0.05), 70..73, 4 * MB);
    assert!(total(&hs, |h| h.eng.counters().retransmitted_segs) > 0);
}

#[test]
fn cubic_with_loss() {
    for seed in 80..82 {
        let cfg = Config {
            isn_secret: [seed as u8; 16],
            congestion: CongestionAlgorithm::Cubic,
            ..Config::default()
        };
        let mut h = Harness::active(cfg, PeerOpts::ALL, LinkFaults::lossy(0.01), seed);
        h.eng_app.to_send = 4 * MB;
        h.peer_app.to_send = 4 * MB;
        h.run_until(Duration::from_secs(600), |h| h.transfers_done());
        assert_eq!(h.eng.save().congestion, CongestionAlgorithm::Cubic);
    }
}
