//! Wire-layer costs per packet: parsing and validating an Ethernet/IPv4/TCP frame with timestamps (with
//! and without checksum verification, 64 B and 1460 B payloads), building one, and rewriting addresses,
//! port, sequence and acknowledgment numbers with incremental checksum updates versus full recomputation.
//!
//! Run: `cargo bench -p holdfast-benches --bench wire -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::wire::{
    build_tcp_frame, parse_frame_with, rewrite_tcp_ipv4, ChecksumMode, EthernetAddress, FrameHeader,
    Ipv4Address, Ipv4Packet, TcpFlags, TcpOptions, TcpPacket, TcpRepr, TcpRewrite, Timestamps,
};

const PAYLOADS: [usize; 2] = [64, 1460];
const L3: usize = 14;

/// A data segment as Linux sends it in an established flow: ACK|PSH with the timestamps option.
fn frame(payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31) as u8).collect();
    let header = FrameHeader::new(
        EthernetAddress([0x02, 0, 0, 0, 0, 1]),
        EthernetAddress([0x02, 0, 0, 0, 0, 2]),
        Ipv4Address::new(198, 18, 0, 1),
        Ipv4Address::new(198, 18, 0, 2),
    );
    let tcp = TcpRepr {
        src_port: 51_000,
        dst_port: 443,
        seq: 0x1234_5678,
        ack: 0x9abc_def0,
        flags: TcpFlags::ACK | TcpFlags::PSH,
        window: 502,
        urgent: 0,
        options: TcpOptions {
            timestamps: Some(Timestamps { tsval: 1_000_000, tsecr: 2_000_000 }),
            ..TcpOptions::default()
        },
        payload: &payload,
    };
    let mut buf = vec![0u8; 2048];
    let len = build_tcp_frame(&mut buf, &header, &tcp).expect("frame fits");
    buf.truncate(len);
    buf
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/parse");
    group.throughput(Throughput::Elements(1));
    for len in PAYLOADS {
        let bytes = frame(len);
        for (name, mode) in [("verify", ChecksumMode::Verify), ("skip-checksum", ChecksumMode::Skip)] {
            group.bench_with_input(BenchmarkId::new(name, len), &bytes, |b, bytes| {
                b.iter(|| {
                    let frame = parse_frame_with(black_box(bytes), mode).expect("valid frame");
                    black_box(frame.tcp().map(|(_, tcp)| tcp.seq))
                })
            });
        }
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/build");
    group.throughput(Throughput::Elements(1));
    for len in PAYLOADS {
        let bytes = frame(len);
        let parsed = parse_frame_with(&bytes, ChecksumMode::Verify).expect("valid frame");
        let (ip, tcp) = parsed.tcp().expect("a TCP frame");
        let header =
            FrameHeader::new(parsed.ethernet.src_addr, parsed.ethernet.dst_addr, ip.src_addr, ip.dst_addr);
        let tcp = *tcp;
        let mut out = vec![0u8; 2048];
        group.bench_function(BenchmarkId::new("tcp-frame", len), |b| {
            b.iter(|| black_box(build_tcp_frame(black_box(&mut out), &header, black_box(&tcp))))
        });
    }
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/rewrite-dst-addr-port-seq-ack");
    group.throughput(Throughput::Elements(1));
    let new_dst = Ipv4Address::new(198, 19, 0, 10);
    for len in PAYLOADS {
        let mut bytes = frame(len);
        let mut step: u32 = 0;
        group.bench_function(BenchmarkId::new("incremental", len), |b| {
            b.iter(|| {
                step = step.wrapping_add(1);
                let rw = TcpRewrite {
                    dst_addr: Some(new_dst),
                    dst_port: Some(8080),
                    seq: Some(step),
                    ack: Some(step.wrapping_mul(3)),
                    ..TcpRewrite::default()
                };
                rewrite_tcp_ipv4(black_box(&mut bytes[L3..]), &rw).expect("valid packet")
            })
        });
        let mut bytes = frame(len);
        group.bench_function(BenchmarkId::new("full-recompute", len), |b| {
            b.iter(|| {
                step = step.wrapping_add(1);
                let mut ip = Ipv4Packet::new_unchecked(black_box(&mut bytes[L3..]));
                ip.set_dst_addr(new_dst);
                ip.fill_checksum();
                let src = ip.src_addr();
                let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
                tcp.set_dst_port(8080);
                tcp.set_seq_number(step);
                tcp.set_ack_number(step.wrapping_mul(3));
                tcp.fill_checksum(src, new_dst);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, build, rewrite);
criterion_main!(benches);
