//! Throughput of one TCP engine receiving in-order 1,460-byte segments and emitting its ACKs: segments per
//! second and ns per segment (criterion reports time per element; throughput is elements per second).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::tcp::{Config, Connection};
use dataplane::time::{Duration, Instant};
use dataplane::wire::{SackBlocks, TcpFlags, TcpOptions, TcpRepr, Timestamps};
use std::hint::black_box;
use std::net::SocketAddrV4;

const SEGMENTS: u64 = 1024;
const MSS: usize = 1460;
const IRS: u32 = 0xffff_0000;
const ISS: u32 = 1000;

fn addrs() -> (SocketAddrV4, SocketAddrV4) {
    (SocketAddrV4::new([198, 18, 0, 1].into(), 80), SocketAddrV4::new([198, 18, 0, 2].into(), 40000))
}

fn seg(seq: u32, flags: TcpFlags, payload: &[u8], tsval: u32) -> TcpRepr<'_> {
    TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq,
        ack: ISS.wrapping_add(1),
        flags,
        window: 8192,
        urgent: 0,
        options: TcpOptions {
            mss: None,
            window_scale: None,
            sack_permitted: false,
            sack: SackBlocks::default(),
            timestamps: Some(Timestamps { tsval, tsecr: 0 }),
        },
        payload,
    }
}

/// An engine established with a hand-made peer that offered every option.
fn established(limit: bool) -> Connection {
    let cfg = Config { recv_buffer: 1 << 20, ..Config::default() };
    let (l, r) = addrs();
    let mut syn = seg(IRS, TcpFlags::SYN, &[], 1);
    syn.options.mss = Some(1460);
    syn.options.window_scale = Some(7);
    syn.options.sack_permitted = true;
    let now = Instant::ZERO;
    let Ok(mut c) = Connection::accept(now, &cfg, l, r, &syn, ISS) else { panic!("SYN refused") };
    let mut frame = [0u8; 64];
    while c.poll_transmit(now, &mut frame).is_some() {}
    let ack = seg(IRS.wrapping_add(1), TcpFlags::ACK, &[], 2);
    c.handle_segment(now, &ack).ok();
    if limit {
        c.set_ack_limit(Some(IRS.wrapping_add(1)));
    }
    c
}

/// Feeds `SEGMENTS` in-order segments, draining the payload and the ACKs as a proxy core would.
fn run(
    c: &mut Connection,
    next_seq: &mut u32,
    now: &mut Instant,
    gate: bool,
    payload: &[u8],
    frame: &mut [u8],
    sink: &mut [u8],
) -> u64 {
    let mut acks = 0;
    for _ in 0..SEGMENTS {
        *now += Duration::from_micros(1);
        let s =
            seg(*next_seq, TcpFlags::ACK | TcpFlags::PSH, payload, (now.as_millis() as u32).wrapping_add(3));
        let _ = c.handle_segment(*now, &s);
        *next_seq = next_seq.wrapping_add(MSS as u32);
        c.recv(sink);
        if gate {
            // The other half confirms what it holds: the limit follows one segment behind.
            c.allow_ack_up_to(next_seq.wrapping_sub(MSS as u32));
        }
        while let Some(t) = c.poll_transmit(*now, frame) {
            acks += 1;
            black_box(t.payload_len);
        }
    }
    acks
}

fn bench(crit: &mut Criterion) {
    let payload = vec![0xa5u8; MSS];
    let mut g = crit.benchmark_group("tcp_engine_rx");
    g.throughput(Throughput::Elements(SEGMENTS));
    for (name, gate) in [("in_order_1460_plain", false), ("in_order_1460_ack_limit", true)] {
        // One long-lived connection, as on a core: its rings are warm after the first lap, so the figure is
        // the steady state rather than first-touch page faults of a fresh connection.
        let mut c = established(gate);
        let mut next_seq = IRS.wrapping_add(1);
        let mut now = Instant::from_millis(1);
        let mut frame = vec![0u8; 2048];
        let mut sink = vec![0u8; 4096];
        run(&mut c, &mut next_seq, &mut now, gate, &payload, &mut frame, &mut sink);
        g.bench_function(name, |b| {
            b.iter(|| black_box(run(&mut c, &mut next_seq, &mut now, gate, &payload, &mut frame, &mut sink)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
