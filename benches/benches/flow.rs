//! Flow table figures: ns per lookup, insert+remove and touch, at 1k, 100k and 1M flows, next to a
//! baseline: `std::collections::HashMap` with a fast hasher (the same mixing function) and `with_capacity`,
//! the alternative the table's design was measured against.
//!
//! Run with `cargo bench -p holdfast-benches --bench flow`. The keys are spread like real client 4-tuples
//! (many source addresses and ports toward one VIP), looked up in a pseudo-random order so the
//! larger tables pay their cache misses as a busy core would.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::flow::{ClientKey, FlowTable};
use dataplane::time::{Duration, Instant};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4};

/// A multiply-xor hasher finished with the flow table's own mixer, so the baseline pays the same
/// hashing cost and differs only in the table structure.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        dataplane::flow::mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.0 = (self.0.rotate_left(16) ^ u64::from(v)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(v)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

fn key(i: u32) -> ClientKey {
    ClientKey {
        client: SocketAddrV4::new(Ipv4Addr::from(0xC612_0000 | (i >> 14)), 1024 + (i & 0x3fff) as u16),
        vip: SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), 443),
    }
}

/// A fixed permutation walk (odd stride modulo a power of two visits every index once).
fn order(n: u32) -> Vec<u32> {
    let m = n.next_power_of_two();
    (0..m).map(|i| i.wrapping_mul(0x9E37_79B1) & (m - 1)).filter(|&i| i < n).collect()
}

fn filled(n: u32) -> FlowTable<ClientKey, [u64; 4]> {
    let mut t = FlowTable::new(n, Duration::from_secs(300), 0x5eed).expect("capacity");
    for i in 0..n {
        t.insert(key(i), [u64::from(i); 4], Instant::ZERO).expect("fits");
    }
    t
}

fn bench(c: &mut Criterion) {
    for &n in &[1_000u32, 100_000, 1_000_000] {
        let mut g = c.benchmark_group(format!("flow_table_{n}"));
        g.throughput(Throughput::Elements(1));
        let mut t = filled(n);
        let ord = order(n);
        let mut i = 0usize;
        g.bench_function("lookup_hit", |b| {
            b.iter(|| {
                i = (i + 1) % ord.len();
                black_box(t.lookup(&key(ord[i])))
            })
        });
        g.bench_function("lookup_miss", |b| {
            b.iter(|| {
                i = (i + 1) % ord.len();
                black_box(t.lookup(&key(ord[i] + n)))
            })
        });
        let mut now = Instant::ZERO;
        g.bench_function("find_mut_touch", |b| {
            b.iter(|| {
                i = (i + 1) % ord.len();
                now += Duration::from_nanos(100);
                black_box(t.find_mut(&key(ord[i]), now).map(|(_, v)| v[0]))
            })
        });
        // Remove one flow and insert it again: the per-connection cost at a steady occupancy.
        g.bench_function("remove_insert", |b| {
            b.iter_batched(
                || {
                    i = (i + 1) % ord.len();
                    ord[i]
                },
                |k| {
                    let id = t.lookup(&key(k)).expect("present");
                    let (kk, v) = t.remove(id).expect("present");
                    black_box(t.insert(kk, v, Instant::ZERO).is_ok())
                },
                BatchSize::SmallInput,
            )
        });
        drop(t);
        let mut h: HashMap<ClientKey, [u64; 4], BuildHasherDefault<MixHasher>> =
            HashMap::with_capacity_and_hasher(n as usize, BuildHasherDefault::default());
        for i in 0..n {
            h.insert(key(i), [u64::from(i); 4]);
        }
        g.bench_function("baseline_hashmap_lookup_hit", |b| {
            b.iter(|| {
                i = (i + 1) % ord.len();
                black_box(h.get(&key(ord[i])).map(|v| v[0]))
            })
        });
        g.bench_function("baseline_hashmap_remove_insert", |b| {
            b.iter_batched(
                || {
                    i = (i + 1) % ord.len();
                    ord[i]
                },
                |k| {
                    let v = h.remove(&key(k)).expect("present");
                    black_box(h.insert(key(k), v).is_none())
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
