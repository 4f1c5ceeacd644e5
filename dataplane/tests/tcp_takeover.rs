//! save()/restore() mid-transfer against smoltcp: a fresh engine fed only the saved state and the held
//! send bytes carries on, also when the snapshot is older than what the peer has seen (resync mode,
//! `advance_rcv_edge`, probes, duplicate ACKs, timestamp jump).

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use dataplane::tcp::{Config, Connection, Event, SavedConnection, State, SAVED_LEN};
use dataplane::time::Duration;
use dataplane::wire::TcpFlags;
use support::{Harness, LinkFaults, PeerOpts};

const BYTES: u64 = 3 << 20;

fn snapshot(h: &mut Harness) -> (SavedConnection, Vec<u8>) {
    // The application has taken every in-order byte: what the engine held is "delivered elsewhere".
    h.run_apps();
    let saved = h.eng.save();
    let mut enc = Vec::new();
    saved.encode(&mut enc);
    assert_eq!(enc.len(), SAVED_LEN);
    let (dec, used) = SavedConnection::decode(&enc).unwrap();
    assert_eq!((dec, used), (saved, SAVED_LEN));
    let mut bytes = vec![0u8; h.eng.send_queue_len()];
    assert_eq!(h.eng.send_buffered(0, &mut bytes), bytes.len());
    (dec, bytes)
}

/// Replaces the engine by one restored from `saved`; the applications re-align to it.
fn take_over(h: &mut Harness, cfg: &Config, saved: &SavedConnection, bytes: &[u8]) {
    h.eng = Connection::restore(h.now, cfg, saved, bytes).unwrap();
    h.dead = false;
    h.checker.reset_edges();
    // The engine-side application re-feeds its stream from the end of the restored send buffer...
    let iss = saved.iss;
    h.eng_app.sent = u64::from(saved.snd_una.wrapping_sub(iss).wrapping_sub(1)) + bytes.len() as u64;
    // ...and every byte it received before is known delivered: the receive edge moves there.
    let delivered_edge = saved.irs.wrapping_add(1).wrapping_add(h.peer_app.received as u32);
    h.eng.advance_rcv_edge(delivered_edge);
    h.eng.probe();
}

fn setup(seed: u64, faults: LinkFaults) -> (Config, Harness) {
    let cfg = Config { isn_secret: [seed as u8; 16], ..Config::default() };
    let mut h = Harness::active(cfg.clone(), PeerOpts::ALL, faults, seed);
    h.establish();
    h.eng_app.to_send = BYTES;
    h.peer_app.to_send = BYTES;
    (cfg, h)
}

#[test]
fn restore_from_current_state_carries_on() {
    let (cfg, mut h) = setup(31, LinkFaults::lossy(0.01));
    h.run_until(Duration::from_secs(60), |h| {
        h.eng_app.received > BYTES / 3 && h.peer_app.received > BYTES / 3
    });
    let (saved, bytes) = snapshot(&mut h);
    take_over(&mut h, &cfg, &saved, &bytes);
    // The first segments of the restored engine are a fresh run of duplicate ACKs: one advertising a
    // window unit less (it ends any run the dead box started at the peer), then four alike.
    let mut frame = vec![0u8; 2048];
    let mut acks = Vec::new();
    for _ in 0..5 {
        let t = h.eng.poll_transmit(h.now, &mut frame).unwrap();
        if t.payload_len == 0 && t.repr.flags == TcpFlags::ACK {
            acks.push((t.repr.ack, t.repr.window));
        }
        // Hand them to the peer like any other segment.
        h.checker.check(&h.eng, &t.repr);
        let b = support::emit(&t.repr, &[], h.opts);
        h.to_peer.send(h.now, b);
    }
    assert_eq!(acks.len(), 5, "restore announces itself with a run of pure ACKs: {acks:?}");
    let (ack, win) = acks[1];
    assert_eq!(acks[0], (ack, win - 1), "{acks:?}");
    assert!(acks[1..].iter().all(|&a| a == (ack, win)), "{acks:?}");
    h.run_until(Duration::from_secs(120), |h| h.transfers_done());
}

fn stale_takeover(seed: u64, faults: LinkFaults) -> Harness {
    let (cfg, mut h) = setup(seed, faults);
    if h.debug {
        eprintln!("seed {seed}");
    }
    h.run_until(Duration::from_secs(60), |h| {
        h.eng_app.received > BYTES / 4 && h.peer_app.received > BYTES / 4
    });
    let (saved, bytes) = snapshot(&mut h);
    let ts_saved = saved.ts_last;
    // The primary carries on for a while: the peer sees data and ACKs this snapshot never heard of.
    let until = h.now + Duration::from_millis(300);
    h.wake = Some(until);
    h.run_until(Duration::from_secs(5), |h| h.now >= until);
    let old_max = h.eng.snd_max();
    assert_ne!(old_max, saved.snd_nxt, "the old engine moved on after the snapshot");
    // Then it dies; its port swallows everything for a while.
    h.dead = true;
    let until = h.now + Duration::from_millis(200);
    h.wake = Some(until);
    h.run_until(Duration::from_secs(5), |h| h.now >= until);
    take_over(&mut h, &cfg, &saved, &bytes);
    assert!(h.eng.is_resyncing());
    h.run_until(Duration::from_secs(120), |h| h.transfers_done());
    let resynced = h.events.iter().any(|e| matches!(e, Event::SendResynced { .. }));
    assert!(resynced, "the peer's ACK beyond the snapshot moved the send edge: {:?}", h.events);
    assert_eq!(h.eng.state(), State::Established);
    // The timestamp clock went forward, not back.
    let after = h.eng.save().ts_last;
    assert!(after.wrapping_sub(ts_saved) < 0x8000_0000 && after != ts_saved);
    h
}

#[test]
fn restore_from_stale_snapshot_resyncs() {
    for seed in 100..108 {
        stale_takeover(seed, LinkFaults::lossy(0.01));
    }
}

#[test]
fn restore_from_stale_snapshot_with_heavy_loss() {
    for seed in 200..205 {
        stale_takeover(seed, LinkFaults::lossy(0.05));
    }
}

#[test]
fn restore_before_the_syn_ack() {
    // The flow is saved when it opens (the standby learns it before the SYN-ACK may leave).
    let cfg = Config { isn_secret: [38; 16], ..Config::default() };
    let mut h = Harness::passive(cfg.clone(), PeerOpts::ALL, LinkFaults::clean(), 38, None);
    let irs = h.eng.irs();
    h.set_limit(Some(irs));
    h.pump();
    assert_eq!(h.checker.segments, 0);
    let mut enc = Vec::new();
    h.eng.save().encode(&mut enc);
    let (saved, _) = SavedConnection::decode(&enc).unwrap();
    assert_eq!(saved.state, State::SynReceived);
    // The primary dies before sending anything; the standby restores and opens the gate.
    h.eng = Connection::restore(h.now, &cfg, &saved, &[]).unwrap();
    h.set_limit(Some(irs.wrapping_add(1)));
    h.establish();
    h.set_limit(None);
    h.eng_app.to_send = 1 << 20;
    h.peer_app.to_send = 1 << 20;
    h.run_until(Duration::from_secs(60), |h| h.transfers_done());
}
