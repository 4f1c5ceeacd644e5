//! Port and buffer costs: buffer alloc+free, freezing for retransmission, and frames through a mem link in
//! bursts of 32, on one thread and across two threads.

use std::hint::black_box;
use std::time::Duration as StdDuration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::buf::{PacketBuf, Pool};
use dataplane::port::mem::{self, MemConfig};
use dataplane::port::Port;
use dataplane::time::Instant;

const BURST: usize = 32;

fn frame(pool: &Pool, len: usize) -> Option<PacketBuf> {
    let mut b = pool.alloc()?;
    b.append(len).ok()?.fill(0x5a);
    Some(b)
}

fn bufs(c: &mut Criterion) {
    let pool = Pool::with_count(4096).expect("pool");
    let mut g = c.benchmark_group("buf");
    g.throughput(Throughput::Elements(1));
    g.bench_function("alloc_free", |b| b.iter(|| drop(black_box(pool.alloc()))));
    g.bench_function("alloc_free_cross_thread_return", |b| {
        // Buffers freed on another thread come back through the same queue; measure the round trip.
        let (tx, rx) = crossbeam_channel::bounded::<PacketBuf>(1024);
        let t = std::thread::spawn(move || while rx.recv().is_ok() {});
        b.iter(|| {
            if let Some(buf) = pool.alloc() {
                let _ = tx.send(buf);
            }
        });
        drop(tx);
        let _ = t.join();
    });
    g.bench_function("alloc_freeze_clone_free", |b| {
        b.iter(|| {
            if let Some(f) = pool.alloc() {
                let s = f.freeze();
                drop(black_box(s.clone()));
            }
        })
    });
    g.bench_function("try_clone_1500", |b| {
        let f = frame(&pool, 1500);
        b.iter(|| drop(black_box(f.as_ref().and_then(PacketBuf::try_clone))))
    });
    g.finish();
}

fn mem_link(c: &mut Criterion) {
    let pool = Pool::with_count(8192).expect("pool");
    let mut g = c.benchmark_group("mem_link");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("burst32_same_thread", |b| {
        let (mut a, mut z, _) = mem::link(&pool, &MemConfig::new("bench", 1));
        let mut tx = Vec::with_capacity(BURST);
        let mut rx = Vec::with_capacity(BURST);
        b.iter(|| {
            for _ in 0..BURST {
                if let Some(f) = frame(&pool, 64) {
                    tx.push(f);
                }
            }
            a.send(Instant::ZERO, &mut tx);
            tx.clear();
            z.recv(Instant::ZERO, &mut rx, BURST);
            rx.clear();
        })
    });
    g.bench_function("burst32_two_threads", |b| {
        b.iter_custom(|iters| {
            let (mut a, mut z, _) = mem::link(&pool, &MemConfig::new("bench", 1));
            let total = iters.saturating_mul(BURST as u64);
            let rx_thread = std::thread::spawn(move || {
                let mut rx = Vec::with_capacity(BURST);
                let mut got = 0u64;
                while got < total {
                    let n = z.recv(Instant::ZERO, &mut rx, BURST);
                    got += n as u64;
                    rx.clear();
                    if n == 0 {
                        std::thread::yield_now();
                    }
                }
            });
            let start = std::time::Instant::now();
            let mut tx = Vec::with_capacity(BURST);
            let mut sent = 0u64;
            while sent < total {
                while tx.len() < BURST {
                    match frame(&pool, 64) {
                        Some(f) => tx.push(f),
                        None => break,
                    }
                }
                let n = a.send(Instant::ZERO, &mut tx);
                sent += n as u64;
                if n == 0 {
                    std::thread::yield_now();
                }
            }
            let _ = rx_thread.join();
            let elapsed = start.elapsed();
            drop(tx);
            elapsed
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(StdDuration::from_secs(3)).warm_up_time(StdDuration::from_secs(1));
    targets = bufs, mem_link
}
criterion_main!(benches);
