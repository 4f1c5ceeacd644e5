//! Replication benches: records per second encoded and framed (and carried end to end through a pair
//! of channels in memory), and the wire bytes a Progress record costs.
//!
//! Run: `cargo bench -p holdfast-benches --bench replication`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::time::{Duration, Instant};
use replication::channel::{Channel, ChannelConfig};
use replication::delta::{self, HalfProgress, Record, PROGRESS_RECORD_LEN};
use replication::frame::{self, FrameHeader, FrameKind, LinkAddrs, HEADER_LEN, PREFIX_LEN};
use replication::store::{FlowStore, StoreConfig};

fn progress(i: u64) -> Record<'static> {
    let h = HalfProgress {
        peer_acked: i as u32,
        snd_nxt: i as u32 + 1460,
        rcv_nxt: 7,
        snd_wnd: 65535,
        rcv_wnd: 65535,
        ts_recent: 1,
        ts_val: 2,
    };
    Record::Progress { flow: i % 10_000, client: h, server: h }
}

fn cfg(box_id: u32, mtu: usize) -> ChannelConfig {
    ChannelConfig {
        box_id,
        mtu,
        window_frames: 1024,
        window_bytes: 16 << 20,
        batch_records: 1024,
        ..ChannelConfig::default()
    }
}

/// Wire bytes per Progress record when frames are full: Ethernet + header + version byte amortized.
fn progress_wire_bytes(mtu: usize) -> (usize, f64) {
    let per_frame = (mtu - HEADER_LEN - 1) / PROGRESS_RECORD_LEN;
    let wire = frame::ETHERNET_HEADER_LEN + HEADER_LEN + 1 + per_frame * PROGRESS_RECORD_LEN;
    (per_frame, wire as f64 / per_frame as f64)
}

fn encode_and_frame(c: &mut Criterion) {
    for mtu in [1500usize, 9000] {
        let (per_frame, bytes) = progress_wire_bytes(mtu);
        eprintln!(
            "Progress record: {PROGRESS_RECORD_LEN} bytes encoded; mtu {mtu}: {per_frame} per frame, {bytes:.1} wire bytes each"
        );
    }
    let mut g = c.benchmark_group("replication");
    // Encode a full 1500-byte frame of Progress records and finish it (headers + CRC32C).
    let per_frame = progress_wire_bytes(1500).0;
    g.throughput(Throughput::Elements(per_frame as u64));
    let mut buf = Vec::with_capacity(1600);
    let link = LinkAddrs::default();
    let mut n = 0u64;
    g.bench_function("encode_frame_progress_1500", |b| {
        b.iter(|| {
            buf.clear();
            buf.resize(PREFIX_LEN, 0);
            buf.push(delta::DELTA_VERSION);
            for _ in 0..per_frame {
                n += 1;
                let _ = progress(n).encode(&mut buf);
            }
            let h = FrameHeader {
                kind: FrameKind::Records,
                flags: 1,
                queue: 0,
                sender: 1,
                epoch: 1,
                seq: n,
                ack: 0,
            };
            frame::finish(&mut buf, link, &h);
            black_box(&buf);
        })
    });

    // End to end through two channels: offer, batch, frame, parse, validate, deliver, apply to the store,
    // acknowledge, confirm. 4096 records per iteration.
    const BATCH: u64 = 4096;
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("channel_store_progress_1500", |b| {
        let mut now = Instant::from_millis(1);
        let mut a: Channel<u64> = Channel::new(cfg(1, 1500), 1, now).expect("config");
        let mut s: Channel<u64> = Channel::new(cfg(2, 1500), 1, now).expect("config");
        let mut store = FlowStore::new(StoreConfig::default());
        let opened = |i: u64| Record::FlowOpened {
            flow: i,
            key: Default::default(),
            policy: delta::Policy::Replica,
            offsets: Default::default(),
            client_half: &[0u8; 120],
            server_half: &[0u8; 120],
        };
        for i in 0..10_000 {
            let _ = store.apply(&opened(i));
        }
        let mut i = 0u64;
        let mut wire = Vec::with_capacity(2000);
        b.iter(|| {
            let mut confirmed = 0u64;
            for _ in 0..BATCH {
                i += 1;
                if a.offer(now, &progress(i), i).is_err() {
                    panic!("window must hold one iteration");
                }
            }
            a.flush();
            while let Some(f) = a.poll_transmit(now) {
                wire.clear();
                wire.extend_from_slice(f);
                let _ = s.handle_frame(now, &wire);
                while let Some(batch) = s.poll_deliver(now) {
                    for r in batch.flatten() {
                        let _ = store.apply(&r);
                    }
                }
            }
            now += Duration::from_millis(1);
            while let Some(f) = s.poll_transmit(now) {
                wire.clear();
                wire.extend_from_slice(f);
                let _ = a.handle_frame(now, &wire);
            }
            while a.poll_confirmed().is_some() {
                confirmed += 1;
            }
            assert_eq!(confirmed, BATCH);
            // Drain the sender's own heartbeat.
            while a.poll_transmit(now).is_some() {}
        })
    });
    g.finish();
}

criterion_group!(benches, encode_and_frame);
criterion_main!(benches);
