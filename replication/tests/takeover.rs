//! Primary and standby wired together in virtual time over a seeded lossy replication link: the primary
//! opens flows (the SYN-ACK waits for the standby's confirmation), relays client bytes (policy
//! `replica`: acknowledged to the client only once confirmed), reports progress as the server
//! acknowledges, and closes flows; then it dies at a random moment. The standby's detector must take
//! over (both paths dead) in under 10 ms, and the flows it drains must back every promise the primary
//! made: invariants 1 and 2 of DESIGN.md, at the replication layer.

mod common;

use std::collections::HashMap;

use common::{Faults, Wire};
use dataplane::time::{Duration, Instant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use replication::channel::{Channel, ChannelConfig};
use replication::delta::{Direction, FlowKey, HalfProgress, Policy, Record, RelayOffsets, Role};
use replication::detector::{Detector, DetectorConfig, Event};
use replication::frame::LinkAddrs;
use replication::store::{FlowStore, StoreConfig, StoredFlow};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Opened(u64),
    /// Client bytes up to this (server-side) sequence number may be acknowledged to the client.
    Data(u64, u32),
    /// Nothing waits on this record.
    Nothing,
}

/// What the primary has promised, per flow.
#[derive(Default, Debug)]
struct Promises {
    /// The client saw a SYN-ACK.
    syn_acked: bool,
    closed: bool,
    /// Server-side sequence numbers: bytes offered, bytes acknowledged to the client, bytes the server
    /// acknowledged (and progress offered about).
    base: u32,
    sent: u32,
    client_acked: u32,
    server_acked: u32,
}

fn cfg(box_id: u32) -> ChannelConfig {
    ChannelConfig {
        box_id,
        link: LinkAddrs { src: [2, 0, 0, 0, 0, box_id as u8], dst: [2, 0, 0, 0, 0, 3 - box_id as u8] },
        window_frames: 64,
        window_bytes: 96 * 1024,
        ..ChannelConfig::default()
    }
}

fn check_takeover(seed: u64, flows: Vec<StoredFlow>, promises: &HashMap<u64, Promises>) -> usize {
    let by_id: HashMap<u64, StoredFlow> = flows.into_iter().map(|f| (f.id, f)).collect();
    let mut checked = 0;
    for (id, p) in promises {
        if !p.syn_acked || p.closed {
            continue;
        }
        // Invariant 2: a client that saw a SYN-ACK has a flow the standby knows.
        let f = by_id.get(id).unwrap_or_else(|| panic!("seed {seed}: flow {id} SYN-ACKed but not stored"));
        assert_eq!(f.client_half, id.to_be_bytes(), "seed {seed}: flow {id} state");
        // Invariant 1: every byte acknowledged to the client is held by the server (below the edge the
        // standby knows, which is never ahead of the truth) or by the standby.
        let edge = f.progress.map_or(p.base, |(_, server)| server.peer_acked);
        assert!(edge.wrapping_sub(p.base) <= p.server_acked.wrapping_sub(p.base), "seed {seed}: edge ahead");
        let mut at = edge;
        for c in f.data(Direction::ClientToServer) {
            assert_eq!(c.seq, at, "seed {seed}: flow {id} has a hole at {at}");
            for (k, b) in c.bytes.iter().enumerate() {
                let s = c.seq.wrapping_add(k as u32);
                assert_eq!(*b, (s.wrapping_mul(31) >> 3) as u8, "seed {seed}: flow {id} byte {s}");
            }
            at = c.seq.wrapping_add(c.bytes.len() as u32);
        }
        let covered = at.wrapping_sub(p.base);
        assert!(
            covered >= p.client_acked.wrapping_sub(p.base),
            "seed {seed}: flow {id}: client acked to {} but standby holds only to {at}",
            p.client_acked
        );
        checked += 1;
    }
    checked
}

/// Returns how many live flows the takeover was checked against.
fn run(seed: u64, faults: Faults) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t0 = Instant::from_millis(1);
    let mut now = t0;
    let mut pch: Channel<Token> = Channel::new(cfg(1), 1, now).expect("config");
    let mut sch: Channel<Token> = Channel::new(cfg(2), 1, now).expect("config");
    let mut pdet = Detector::new(DetectorConfig::default(), 1, Role::Primary, 1, now).expect("config");
    let mut sdet = Detector::new(DetectorConfig::default(), 2, Role::Standby, 1, now).expect("config");
    let mut store = FlowStore::new(StoreConfig::default());
    let (mut to_standby, mut to_primary) = (Wire::default(), Wire::default());
    let mut promises: HashMap<u64, Promises> = HashMap::new();
    let mut next_flow = 0u64;
    let crash_at = t0 + Duration::from_micros(rng.random_range(5_000..60_000));
    let mut crashed = false;
    let mut next_probe = t0;
    let mut takeover: Option<(Instant, u32)> = None;
    let step = Duration::from_micros(10);
    while takeover.is_none() {
        assert!(now < crash_at + Duration::from_millis(50), "seed {seed}: no takeover");
        if now >= crash_at {
            crashed = true;
        }
        if !crashed {
            // New flows: the SYN-ACK waits for the confirmation of FlowOpened.
            if rng.random_bool(0.02) {
                let id = next_flow;
                let base: u32 = rng.random();
                let rec = Record::FlowOpened {
                    flow: id,
                    key: FlowKey { client_port: id as u16, ..FlowKey::default() },
                    policy: Policy::Replica,
                    offsets: RelayOffsets { client_to_server: base, server_to_client: 0 },
                    client_half: &id.to_be_bytes(),
                    server_half: b"srv",
                };
                if pch.offer(now, &rec, Token::Opened(id)).is_ok() {
                    next_flow += 1;
                    promises.insert(
                        id,
                        Promises {
                            base,
                            sent: base,
                            client_acked: base,
                            server_acked: base,
                            ..Promises::default()
                        },
                    );
                }
            }
            // Client bytes on established flows, progress as the server acknowledges, and closes.
            let ids: Vec<u64> =
                promises.iter().filter(|(_, p)| p.syn_acked && !p.closed).map(|(i, _)| *i).collect();
            for id in ids {
                let Some(p) = promises.get_mut(&id) else { continue };
                match rng.random_range(0..1000) {
                    0..=29 => {
                        let len = rng.random_range(1..3000usize);
                        let bytes: Vec<u8> = (0..len)
                            .map(|k| (p.sent.wrapping_add(k as u32).wrapping_mul(31) >> 3) as u8)
                            .collect();
                        let end = p.sent.wrapping_add(len as u32);
                        if pch
                            .offer_data(
                                now,
                                id,
                                Direction::ClientToServer,
                                p.sent,
                                &bytes,
                                Token::Data(id, end),
                            )
                            .is_ok()
                        {
                            p.sent = end;
                        }
                    }
                    100..=129 => {
                        // The server acknowledged part of what was forwarded.
                        let inflight = p.sent.wrapping_sub(p.server_acked);
                        let acked = p.server_acked.wrapping_add(rng.random_range(0..=inflight));
                        let rec = Record::Progress {
                            flow: id,
                            client: HalfProgress::default(),
                            server: HalfProgress { peer_acked: acked, ..HalfProgress::default() },
                        };
                        if pch.offer(now, &rec, Token::Nothing).is_ok() {
                            p.server_acked = acked;
                        }
                    }
                    200 if pch.offer(now, &Record::Closed { flow: id }, Token::Nothing).is_ok() => {
                        p.closed = true;
                    }
                    _ => {}
                }
            }
            while let Some(tok) = pch.poll_confirmed() {
                match tok {
                    Token::Opened(id) => {
                        if let Some(p) = promises.get_mut(&id) {
                            p.syn_acked = true;
                        }
                    }
                    Token::Data(id, end) => {
                        if let Some(p) = promises.get_mut(&id) {
                            if end.wrapping_sub(p.base) > p.client_acked.wrapping_sub(p.base) {
                                p.client_acked = end;
                            }
                        }
                    }
                    Token::Nothing => {}
                }
            }
            while let Some(fr) = to_primary.pop_due(now) {
                let _ = pch.handle_frame(now, &fr);
            }
            if let Some((_, hb)) = pch.poll_heartbeat() {
                let ev = pdet.on_heartbeat(now, 2, &hb);
                assert!(!matches!(ev, Some(Event::StepDown { .. })), "seed {seed}: {ev:?}");
            }
            pch.set_status(pdet.role(), 0, promises.len() as u32);
            while let Some(fr) = pch.poll_transmit(now) {
                let fr = fr.to_vec();
                to_standby.send(&mut rng, faults, now, &fr, true);
            }
            assert_eq!(pdet.handle_timeout(now), None, "seed {seed}: primary must stay primary");
        }
        // The standby.
        while let Some(fr) = to_standby.pop_due(now) {
            let _ = sch.handle_frame(now, &fr);
            while let Some(batch) = sch.poll_deliver(now) {
                for r in batch {
                    let r = r.expect("validated");
                    let _ = store.apply(&r);
                }
            }
        }
        if let Some((_, hb)) = sch.poll_heartbeat() {
            let _ = sdet.on_heartbeat(now, 1, &hb);
        }
        if now >= next_probe {
            next_probe = now + Duration::from_millis(1);
            // The VIP holder answers on the client LAN while it lives.
            if let Some(Event::TakeOver { epoch }) = sdet.on_lan_probe(now, !crashed) {
                takeover = Some((now, epoch));
            }
        }
        if let Some(Event::TakeOver { epoch }) = sdet.handle_timeout(now) {
            takeover = Some((now, epoch));
        }
        sch.set_status(sdet.role(), 0, store.len() as u32);
        while let Some(fr) = sch.poll_transmit(now) {
            let fr = fr.to_vec();
            to_primary.send(&mut rng, faults, now, &fr, true);
        }
        now += step;
    }
    let (t, epoch) = takeover.unwrap_or((now, 0));
    assert!(t >= crash_at, "seed {seed}: took over from a live primary");
    assert!(t - crash_at < Duration::from_millis(10), "seed {seed}: detection took {:?}", t - crash_at);
    assert_eq!(epoch, 2);
    let flows: Vec<StoredFlow> = store.drain_for_takeover().collect();
    check_takeover(seed, flows, &promises)
}

#[test]
fn takeover_keeps_every_promise_on_a_clean_link() {
    let f = Faults { loss: 0.0, dup: 0.0, corrupt: 0.0, jitter_us: 0, base_us: 10 };
    let checked: usize = (0..10).map(|seed| run(seed, f)).sum();
    eprintln!("{checked} flows checked");
    assert!(checked > 50, "only {checked} flows checked");
}

#[test]
fn takeover_keeps_every_promise_on_a_lossy_link() {
    let f = Faults { loss: 0.05, dup: 0.02, corrupt: 0.01, jitter_us: 40, base_us: 10 };
    let checked: usize = (100..120).map(|seed| run(seed, f)).sum();
    eprintln!("{checked} flows checked");
    assert!(checked > 100, "only {checked} flows checked");
}
