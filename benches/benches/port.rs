//! Port and buffer costs: buffer alloc+free, freezing for retransmission, frames through a mem link in
//! bursts of 32 (one thread and two threads), and frames through AF_PACKET over a veth pair between two
//! namespaces (only as root with `HOLDFAST_BENCH_NETNS=1`; it creates and deletes hfp-ba/hfp-bb).

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::buf::{PacketBuf, Pool};
use dataplane::port::afpacket::{join_netns, AfPacketConfig, AfPacketPort};
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

/// Two namespaces joined by a veth pair with offloads off; deleted on drop.
struct VethPair;

const NS: [&str; 2] = ["hfp-ba", "hfp-bb"];
const DEV: [&str; 2] = ["hfp-bva", "hfp-bvb"];

impl VethPair {
    fn create() -> Option<VethPair> {
        let pair = VethPair;
        pair.remove();
        let sh = |args: &[&str]| {
            Command::new(args[0]).args(&args[1..]).status().map(|s| s.success()).unwrap_or(false)
        };
        for ns in NS {
            if !sh(&["ip", "netns", "add", ns])
                || !sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
                || !sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
            {
                return None;
            }
        }
        if !sh(&[
            "ip", "link", "add", DEV[0], "netns", NS[0], "type", "veth", "peer", "name", DEV[1], "netns",
            NS[1],
        ]) {
            return None;
        }
        for i in 0..2 {
            let off = ["gro", "off", "gso", "off", "tso", "off", "tx", "off", "rx", "off"];
            let mut args = vec!["ip", "netns", "exec", NS[i], "ethtool", "-K", DEV[i]];
            args.extend(off);
            if !sh(&args) || !sh(&["ip", "-n", NS[i], "link", "set", DEV[i], "up"]) {
                return None;
            }
        }
        Some(pair)
    }

    fn remove(&self) {
        for ns in NS {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        self.remove();
    }
}

fn open_in(i: usize, pool: &Pool) -> Option<AfPacketPort> {
    join_netns(std::path::Path::new(&format!("/var/run/netns/{}", NS[i]))).ok()?;
    AfPacketPort::open(&AfPacketConfig::new(DEV[i]), pool.clone()).ok()
}

fn afpacket(c: &mut Criterion) {
    if std::env::var_os("HOLDFAST_BENCH_NETNS").is_none() {
        eprintln!("afpacket bench skipped: set HOLDFAST_BENCH_NETNS=1 and run as root");
        return;
    }
    let Some(_pair) = VethPair::create() else {
        eprintln!("afpacket bench skipped: could not create namespaces (root, ip and ethtool needed)");
        return;
    };
    let pool = Pool::with_count(8192).expect("pool");
    // The receiver lives on its own thread in the second namespace for the whole group.
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rx_thread = {
        let (pool, received, stop) = (pool.clone(), Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            let Some(mut port) = open_in(1, &pool) else { return };
            let mut out = Vec::with_capacity(BURST);
            while !stop.load(Ordering::Relaxed) {
                let n = port.recv(Instant::ZERO, &mut out, BURST);
                out.clear();
                received.fetch_add(n as u64, Ordering::Release);
                if n == 0 {
                    let _ = port.wait_readable(StdDuration::from_millis(1));
                }
            }
        })
    };
    let (tx_port_tx, tx_port_rx) = crossbeam_channel::bounded(1);
    let tx_thread = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let _ = tx_port_tx.send(open_in(0, &pool));
        })
    };
    let port = tx_port_rx.recv().ok().flatten();
    let _ = tx_thread.join();
    if let Some(mut port) = port {
        let mut g = c.benchmark_group("afpacket");
        g.throughput(Throughput::Elements(BURST as u64));
        g.bench_function("veth_64B_burst32_windowed", |b| {
            b.iter_custom(|iters| {
                let total = iters.saturating_mul(BURST as u64);
                let base = received.load(Ordering::Acquire);
                let start = std::time::Instant::now();
                let mut tx = Vec::with_capacity(BURST);
                let mut sent = 0u64;
                // At most 512 frames in flight: the veth backlog (1000) never overflows.
                while received.load(Ordering::Acquire) - base < total {
                    let in_flight = sent - (received.load(Ordering::Acquire) - base);
                    while tx.len() < BURST
                        && sent + (tx.len() as u64) < total
                        && in_flight + (tx.len() as u64) < 512
                    {
                        match frame(&pool, 64) {
                            Some(f) => tx.push(f),
                            None => break,
                        }
                    }
                    let n = port.send(Instant::ZERO, &mut tx) as u64;
                    sent += n;
                    if n == 0 {
                        port.poll_at();
                        std::thread::yield_now();
                    }
                }
                start.elapsed()
            })
        });
        g.finish();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = rx_thread.join();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(StdDuration::from_secs(3)).warm_up_time(StdDuration::from_secs(1));
    targets = bufs, mem_link, afpacket
}
criterion_main!(benches);
