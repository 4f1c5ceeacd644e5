//! The replication channel over a seeded lossy, reordering, duplicating, corrupting in-memory link, in
//! virtual time: every record is delivered exactly once and in order, and every confirmation is true
//! (the receiver had stored the record when the sender was told).

mod common;

use common::{Faults, Wire};
use dataplane::time::{Duration, Instant};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use replication::channel::{Channel, ChannelConfig, OfferError};
use replication::delta::{Direction, HalfProgress, Record};
use replication::frame::LinkAddrs;

fn cfg(box_id: u32, mtu: usize) -> ChannelConfig {
    ChannelConfig {
        box_id,
        link: LinkAddrs { src: [2, 0, 0, 0, 0, box_id as u8], dst: [2, 0, 0, 0, 0, 9] },
        mtu,
        window_frames: 32,
        window_bytes: 64 * 1024,
        batch_records: 16,
        reorder_frames: 16,
        ..ChannelConfig::default()
    }
}

/// Record `i` of the test stream: a mix of kinds, with the index recoverable from what is delivered.
fn record_for(i: u64, payload: &mut Vec<u8>) -> Record<'_> {
    match i % 3 {
        0 => Record::Progress {
            flow: i,
            client: HalfProgress { peer_acked: i as u32, ..HalfProgress::default() },
            server: HalfProgress::default(),
        },
        1 => Record::Closed { flow: i },
        _ => {
            payload.clear();
            payload.extend((0..(i % 700) as usize).map(|k| (k as u64 ^ i) as u8));
            Record::Data { flow: i, dir: Direction::ServerToClient, seq: i as u32, bytes: payload }
        }
    }
}

fn index_of(r: &Record<'_>) -> u64 {
    match r {
        Record::Progress { flow, .. } | Record::Closed { flow } => *flow,
        Record::Data { flow, bytes, .. } => {
            for (k, b) in bytes.iter().enumerate() {
                assert_eq!(*b, (k as u64 ^ *flow) as u8, "data bytes of record {flow} corrupted");
            }
            *flow
        }
        other => panic!("unexpected record {other:?}"),
    }
}

struct Outcome {
    virtual_ms: u64,
    retransmitted: u64,
    malformed: u64,
    srtt: Option<Duration>,
}

/// Runs `n` records from A to B; panics on any broken promise.
fn run(seed: u64, n: u64, f: Faults, mtu: usize) -> Outcome {
    run_lagging(seed, n, f, mtu, 0.3)
}

/// `lag`: the chance that the receiving application does not take what arrived at a given moment.
fn run_lagging(seed: u64, n: u64, f: Faults, mtu: usize, lag: f64) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t0 = Instant::from_millis(1);
    let mut a: Channel<u64> = Channel::new(cfg(1, mtu), 1, t0).expect("config");
    let mut b: Channel<u64> = Channel::new(cfg(2, mtu), 1, t0).expect("config");
    let (mut ab, mut ba) = (Wire::default(), Wire::default());
    let mut now = t0;
    let mut next_offer = 0u64;
    let mut stored: Vec<u64> = Vec::new();
    let mut confirmed = 0u64;
    let mut payload = Vec::new();
    let deadline = t0 + Duration::from_secs(60);
    while confirmed < n {
        assert!(now < deadline, "seed {seed}: no progress; stored {} confirmed {confirmed}", stored.len());
        // The sender offers as much as the window takes.
        while next_offer < n {
            let rec = record_for(next_offer, &mut payload);
            match a.offer(now, &rec, next_offer) {
                Ok(()) => next_offer += 1,
                Err(OfferError::WindowFull) => break,
                Err(e) => panic!("offer failed: {e}"),
            }
        }
        while let Some(fr) = ab.pop_due(now) {
            let _ = b.handle_frame(now, &fr);
        }
        // The receiving application sometimes lags behind the channel: confirmations must wait for it.
        if !rng.random_bool(lag) {
            while let Some(batch) = b.poll_deliver(now) {
                for r in batch {
                    let r = r.expect("delivered batches are valid");
                    stored.push(index_of(&r));
                }
            }
        }
        while let Some(fr) = ba.pop_due(now) {
            let _ = a.handle_frame(now, &fr);
        }
        while let Some(tok) = a.poll_confirmed() {
            assert_eq!(tok, confirmed, "seed {seed}: confirmations out of order");
            assert!(
                (tok as usize) < stored.len() && stored[tok as usize] == tok,
                "seed {seed}: record {tok} confirmed but not stored"
            );
            confirmed += 1;
        }
        while let Some(fr) = a.poll_transmit(now) {
            let fr = fr.to_vec();
            ab.send(&mut rng, f, now, &fr, true);
        }
        while let Some(fr) = b.poll_transmit(now) {
            let fr = fr.to_vec();
            ba.send(&mut rng, f, now, &fr, true);
        }
        let next = [a.poll_timeout(), b.poll_timeout(), ab.next_time(), ba.next_time()]
            .into_iter()
            .min()
            .unwrap_or(Instant::FAR_FUTURE);
        now = next.max(now + Duration::from_nanos(1));
    }
    assert_eq!(stored, (0..n).collect::<Vec<_>>(), "seed {seed}: not exactly once in order");
    assert!(a.is_idle());
    Outcome {
        virtual_ms: (now - t0).as_millis() as u64,
        retransmitted: a.stats().frames_retransmitted,
        malformed: b.stats().malformed + a.stats().malformed,
        srtt: a.srtt(),
    }
}

const CLEAN: Faults = Faults { loss: 0.0, dup: 0.0, corrupt: 0.0, jitter_us: 0, base_us: 10 };

#[test]
fn clean_link_delivers_without_retransmission() {
    let o = run_lagging(1, 5_000, CLEAN, 1500, 0.0);
    assert_eq!(o.retransmitted, 0);
    assert_eq!(o.malformed, 0);
    // 10 µs each way, plus the receiver's delayed ack (20 µs) and flush delay at most.
    let srtt = o.srtt.expect("measured");
    assert!(srtt >= Duration::from_micros(20) && srtt <= Duration::from_micros(60), "srtt {srtt:?}");
}

#[test]
fn hostile_link_delivers_exactly_once_in_order() {
    let f = Faults { loss: 0.1, dup: 0.05, corrupt: 0.02, jitter_us: 80, base_us: 10 };
    for seed in 0..8 {
        let o = run(seed, 3_000, f, 1500);
        assert!(o.retransmitted > 0, "seed {seed}: a 10% loss link must cause retransmissions");
        assert!(o.malformed > 0, "seed {seed}: corruption must be caught and counted");
    }
}

#[test]
fn jumbo_frames_and_heavy_loss() {
    let f = Faults { loss: 0.3, dup: 0.1, corrupt: 0.0, jitter_us: 200, base_us: 5 };
    let o = run(77, 2_000, f, 9000);
    assert!(o.virtual_ms > 0);
}

#[test]
fn confirmations_wait_for_the_receiver_to_take_the_batch() {
    let t0 = Instant::ZERO;
    let mut a: Channel<u32> = Channel::new(cfg(1, 1500), 1, t0).expect("config");
    let mut b: Channel<u32> = Channel::new(cfg(2, 1500), 1, t0).expect("config");
    a.offer(t0, &Record::Closed { flow: 1 }, 7).expect("room");
    a.flush();
    let mut sent = 0;
    while let Some(fr) = a.poll_transmit(t0) {
        let fr = fr.to_vec();
        b.handle_frame(t0, &fr).expect("valid");
        sent += 1;
    }
    assert_eq!(sent, 2, "a heartbeat and the record frame");
    // B received it but its application has not taken it: whatever B sends must not confirm it.
    let t1 = t0 + Duration::from_millis(5);
    while let Some(fr) = b.poll_transmit(t1) {
        let fr = fr.to_vec();
        let _ = a.handle_frame(t1, &fr);
    }
    assert_eq!(a.poll_confirmed(), None);
    let got: Vec<_> = b.poll_deliver(t1).expect("one batch").collect();
    assert_eq!(got, vec![Ok(Record::Closed { flow: 1 })]);
    let t2 = t1 + Duration::from_millis(1);
    while let Some(fr) = b.poll_transmit(t2) {
        let fr = fr.to_vec();
        let _ = a.handle_frame(t2, &fr);
    }
    assert_eq!(a.poll_confirmed(), Some(7));
}

#[test]
fn full_window_refuses_and_keeps_everything() {
    let t0 = Instant::ZERO;
    let c = ChannelConfig { window_frames: 2, batch_records: 1, ..cfg(1, 1500) };
    let mut a: Channel<u32> = Channel::new(c, 1, t0).expect("config");
    a.offer(t0, &Record::Closed { flow: 1 }, 1).expect("room");
    a.offer(t0, &Record::Closed { flow: 2 }, 2).expect("room");
    assert_eq!(a.offer(t0, &Record::Closed { flow: 3 }, 3), Err(OfferError::WindowFull));
    assert_eq!(a.stats().offers_refused, 1);
    assert_eq!(a.frames_in_window(), 2);
}

#[test]
fn large_data_is_split_and_confirmed_with_its_last_piece() {
    let t0 = Instant::ZERO;
    let mut a: Channel<u32> = Channel::new(cfg(1, 1500), 1, t0).expect("config");
    let mut b: Channel<u32> = Channel::new(cfg(2, 1500), 1, t0).expect("config");
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    a.offer_data(t0, 5, Direction::ClientToServer, u32::MAX - 100, &data, 42).expect("room");
    a.flush();
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    let mut now = t0;
    for _ in 0..50 {
        while let Some(fr) = a.poll_transmit(now) {
            assert!(fr.len() <= 14 + 1500);
            let fr = fr.to_vec();
            b.handle_frame(now, &fr).expect("valid");
        }
        while let Some(batch) = b.poll_deliver(now) {
            for r in batch {
                if let Ok(Record::Data { seq, bytes, .. }) = r {
                    seqs.push(seq);
                    got.extend_from_slice(bytes);
                }
            }
        }
        while let Some(fr) = b.poll_transmit(now) {
            let fr = fr.to_vec();
            let _ = a.handle_frame(now, &fr);
        }
        now += Duration::from_micros(50);
    }
    assert_eq!(got, data);
    assert!(seqs.len() >= 7);
    assert_eq!(seqs[1], (u32::MAX - 100).wrapping_add((seqs.len() > 1) as u32 * (1500 - 41 - 16)));
    assert_eq!(a.poll_confirmed(), Some(42));
    assert_eq!(a.poll_confirmed(), None);
}

#[test]
fn retransmissions_back_off_exponentially_up_to_rto_max() {
    let t0 = Instant::ZERO;
    let c = ChannelConfig {
        rto_initial: Duration::from_millis(1),
        rto_max: Duration::from_millis(16),
        heartbeat_interval: Duration::from_secs(10),
        ..cfg(1, 1500)
    };
    let mut a: Channel<u32> = Channel::new(c, 1, t0).expect("config");
    a.offer(t0, &Record::Closed { flow: 1 }, 1).expect("room");
    a.flush();
    let mut now = t0;
    let mut sends = Vec::new();
    // The peer is gone: nothing ever comes back.
    while now < t0 + Duration::from_millis(100) {
        while let Some(fr) = a.poll_transmit(now) {
            if replication::frame::parse(fr, 1500).map(|f| f.header.kind)
                == Ok(replication::frame::FrameKind::Records)
            {
                sends.push(now.as_millis());
            }
        }
        now = a.poll_timeout().max(now + Duration::from_micros(1));
    }
    assert_eq!(sends, vec![0, 1, 3, 7, 15, 31, 47, 63, 79, 95]);
    assert_eq!(a.stats().frames_retransmitted, 9);
    assert_eq!(a.poll_confirmed(), None);
}

#[test]
fn stale_epoch_frames_are_rejected_and_counted() {
    let t0 = Instant::ZERO;
    let mut old: Channel<u32> = Channel::new(cfg(1, 1500), 1, t0).expect("config");
    let mut new: Channel<u32> = Channel::new(cfg(2, 1500), 2, t0).expect("config");
    let hb = old.poll_transmit(t0).expect("heartbeat").to_vec();
    assert_eq!(new.handle_frame(t0, &hb), Err(replication::channel::RecvError::StaleEpoch));
    assert_eq!(new.stats().stale_epoch, 1);
    let hb = new.poll_transmit(t0).expect("heartbeat").to_vec();
    assert_eq!(old.handle_frame(t0, &hb), Err(replication::channel::RecvError::NewerEpoch(2)));
    let (_, seen) = old.poll_heartbeat().expect("the newer heartbeat is still reported");
    assert_eq!(seen.epoch, 2);
}

#[test]
fn heartbeats_flow_when_idle() {
    let t0 = Instant::ZERO;
    let mut a: Channel<u32> = Channel::new(cfg(1, 1500), 1, t0).expect("config");
    let mut sent = 0;
    let mut now = t0;
    while now < t0 + Duration::from_millis(10) {
        while a.poll_transmit(now).is_some() {
            sent += 1;
        }
        now = a.poll_timeout();
    }
    assert_eq!(sent, 10);
    assert_eq!(a.stats().heartbeats_sent, 10);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xc4a7),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_seed_any_faults(seed in any::<u64>(), loss in 0.0f64..0.35, dup in 0.0f64..0.2,
                           corrupt in 0.0f64..0.05, jitter_us in 0u64..300, n in 1u64..600) {
        run(seed, n, Faults { loss, dup, corrupt, jitter_us, base_us: 5 }, 1500);
    }
}
