//! In-memory ports: determinism, fault rates, virtual-clock delay, link down, switch learning, threads.

// A test stops at the first surprise: unwrap is how it says so.
#![allow(clippy::unwrap_used)]

use dataplane::buf::{PacketBuf, Pool};
use dataplane::port::mem::{self, FaultConfig, MemConfig, MemPort};
use dataplane::port::Port;
use dataplane::time::{Duration, Instant};

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
const BCAST: [u8; 6] = [0xff; 6];

fn frame(pool: &Pool, dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> PacketBuf {
    let mut b = pool.alloc().expect("pool has room");
    b.extend_from_slice(&dst).unwrap();
    b.extend_from_slice(&src).unwrap();
    b.extend_from_slice(&[0x88, 0xb5]).unwrap();
    b.extend_from_slice(&seq.to_be_bytes()).unwrap();
    let pad = len.saturating_sub(b.len());
    for i in 0..pad {
        b.extend_from_slice(&[(seq as usize + i) as u8]).unwrap();
    }
    b
}

fn seq_of(b: &PacketBuf) -> u32 {
    u32::from_be_bytes(b.data()[14..18].try_into().unwrap())
}

/// Sends `n` frames one per microsecond from `tx` and collects everything `rx` receives until the link is
/// quiet, stepping a virtual clock. Returns (arrival time, frame bytes).
fn run(tx: &mut MemPort, rx: &mut MemPort, pool: &Pool, n: u32) -> Vec<(Instant, Vec<u8>)> {
    let mut now = Instant::ZERO;
    let mut got = Vec::new();
    let mut out = Vec::with_capacity(64);
    let mut pkts = Vec::with_capacity(1);
    for seq in 0..n {
        pkts.push(frame(pool, B, A, seq, 64 + (seq as usize % 200)));
        tx.send(now, &mut pkts);
        assert!(pkts.is_empty(), "ring full at {seq}");
        rx.recv(now, &mut out, 64);
        got.extend(out.drain(..).map(|b| (now, b.data().to_vec())));
        now += Duration::from_micros(1);
    }
    while let Some(t) = rx.poll_at() {
        now = now.max(t);
        rx.recv(now, &mut out, 64);
        got.extend(out.drain(..).map(|b| (now, b.data().to_vec())));
    }
    got
}

fn faulty() -> FaultConfig {
    FaultConfig {
        loss: 0.1,
        duplicate: 0.05,
        reorder: 0.05,
        reorder_delay: Duration::from_micros(20),
        corrupt: 0.02,
        delay: Duration::from_micros(50),
        jitter: Duration::from_micros(10),
        rate_bps: None,
    }
}

fn faulty_link(pool: &Pool, seed: u64) -> (MemPort, MemPort) {
    let (mut a, b, _) = mem::link(pool, &MemConfig::new("l", seed));
    a.set_faults(faulty());
    (a, b)
}

#[test]
fn same_seed_same_delivery() {
    let pool = Pool::with_count(4096).unwrap();
    let (mut a1, mut b1) = faulty_link(&pool, 7);
    let first = run(&mut a1, &mut b1, &pool, 2000);
    let (mut a2, mut b2) = faulty_link(&pool, 7);
    let second = run(&mut a2, &mut b2, &pool, 2000);
    assert_eq!(first, second);
    assert_eq!(a1.stats(), a2.stats());
    let (mut a3, mut b3) = faulty_link(&pool, 8);
    assert_ne!(first, run(&mut a3, &mut b3, &pool, 2000));
    assert_eq!(pool.available(), 4096);
}

#[test]
fn fault_rates_within_bounds() {
    let pool = Pool::with_count(4096).unwrap();
    let (mut a, mut b) = faulty_link(&pool, 42);
    let n = 20_000u32;
    let got = run(&mut a, &mut b, &pool, n);
    let s = a.stats();
    let frac = |x: u64| x as f64 / f64::from(n);
    assert_eq!(s.tx_packets, u64::from(n));
    assert!((0.08..0.12).contains(&frac(s.fault_lost)), "loss {}", frac(s.fault_lost));
    // Duplication, reordering and corruption are only rolled for frames that were not lost.
    assert!((0.035..0.055).contains(&frac(s.fault_duplicated)), "dup {}", frac(s.fault_duplicated));
    assert!((0.035..0.055).contains(&frac(s.fault_reordered)), "reorder {}", frac(s.fault_reordered));
    assert!((0.013..0.023).contains(&frac(s.fault_corrupted)), "corrupt {}", frac(s.fault_corrupted));
    assert_eq!(got.len() as u64, u64::from(n) - s.fault_lost + s.fault_duplicated);
    assert_eq!(b.stats().rx_packets, got.len() as u64);

    // Frames arrive out of order only where one was held back.
    let seqs: Vec<u32> = got.iter().map(|(_, d)| u32::from_be_bytes(d[14..18].try_into().unwrap())).collect();
    let late = seqs.windows(2).filter(|w| w[1] < w[0]).count() as u64;
    assert!(late > 0 && late <= s.fault_reordered + s.fault_corrupted, "{late} inversions");

    // A corrupted frame differs from what was sent in exactly one byte.
    let mut corrupted = 0;
    for (_, d) in &got {
        let seq = u32::from_be_bytes(d[14..18].try_into().unwrap());
        let want = frame(&pool, B, A, seq, 64 + (seq as usize % 200));
        if want.data().len() == d.len() {
            let diff = want.data().iter().zip(d).filter(|(x, y)| x != y).count();
            assert!(diff <= 1);
            corrupted += diff;
        }
    }
    assert!(corrupted as u64 <= s.fault_corrupted + s.fault_duplicated && corrupted > 0);
}

#[test]
fn delay_follows_the_virtual_clock() {
    let pool = Pool::with_count(64).unwrap();
    let (mut a, mut b, _) = mem::link(&pool, &MemConfig::new("d", 1));
    a.set_faults(FaultConfig { delay: Duration::from_millis(5), ..FaultConfig::NONE });
    let t0 = Instant::from_millis(100);
    a.send(t0, &mut vec![frame(&pool, B, A, 1, 60)]);
    let mut out = Vec::new();
    assert_eq!(b.poll_at(), Some(t0 + Duration::from_millis(5)));
    assert_eq!(b.recv(t0 + Duration::from_micros(4999), &mut out, 8), 0);
    assert_eq!(b.recv(t0 + Duration::from_millis(5), &mut out, 8), 1);
    assert_eq!(b.poll_at(), None);

    // A bandwidth cap serializes frames: 1000 bytes at 1 Mbit/s take 8 ms each.
    a.set_faults(FaultConfig { rate_bps: Some(1_000_000), ..FaultConfig::NONE });
    let t1 = Instant::from_millis(200);
    let mut burst: Vec<_> = (0..3).map(|i| frame(&pool, B, A, i, 1000)).collect();
    assert_eq!(a.send(t1, &mut burst), 3);
    let mut due = Vec::new();
    while let Some(t) = b.poll_at() {
        b.recv(t, &mut out, 1);
        due.push(t - t1);
    }
    assert_eq!(due, [8, 16, 24].map(Duration::from_millis));
    assert_eq!(out.iter().map(seq_of).collect::<Vec<_>>(), [1, 0, 1, 2]);
}

#[test]
fn link_down_drops_and_up_resumes() {
    let pool = Pool::with_count(64).unwrap();
    let (mut a, mut b, ctl) = mem::link(&pool, &MemConfig::new("u", 1));
    a.set_faults(FaultConfig { delay: Duration::from_millis(1), ..FaultConfig::NONE });
    let mut out = Vec::new();
    a.send(Instant::ZERO, &mut vec![frame(&pool, B, A, 0, 60)]);
    ctl.set_up(1, false);
    assert!(!ctl.is_up(1));
    // In flight when b went down: lost on arrival.
    assert_eq!(b.recv(Instant::from_millis(2), &mut out, 8), 0);
    assert_eq!(b.stats().rx_dropped_link_down, 1);
    // Sent to a down port: dropped at once.
    a.send(Instant::from_millis(2), &mut vec![frame(&pool, B, A, 1, 60)]);
    assert_eq!(a.stats().tx_dropped_link_down, 1);
    ctl.set_up(1, true);
    ctl.set_up(0, false);
    a.send(Instant::from_millis(3), &mut vec![frame(&pool, B, A, 2, 60)]);
    assert_eq!(a.stats().tx_dropped_link_down, 2);
    ctl.set_up(0, true);
    a.send(Instant::from_millis(4), &mut vec![frame(&pool, B, A, 3, 60)]);
    assert_eq!(b.recv(Instant::from_millis(5), &mut out, 8), 1);
    assert_eq!(seq_of(&out[0]), 3);
    assert_eq!(a.stats().tx_packets, 4);
    drop(out);
    assert_eq!(pool.available(), 64);
}

#[test]
fn full_ring_pushes_back() {
    let pool = Pool::with_count(64).unwrap();
    let cfg = MemConfig { queue_len: 4, ..MemConfig::new("f", 1) };
    let (mut a, mut b, _) = mem::link(&pool, &cfg);
    let mut pkts: Vec<_> = (0..10).map(|i| frame(&pool, B, A, i, 60)).collect();
    // The receiver's inbox and its pending heap hold four frames each.
    assert_eq!(a.send(Instant::ZERO, &mut pkts), 4);
    b.poll_at();
    assert_eq!(a.send(Instant::ZERO, &mut pkts), 4);
    assert_eq!(a.send(Instant::ZERO, &mut pkts), 0);
    assert_eq!(pkts.len(), 2);
    assert_eq!(seq_of(&pkts[0]), 8);
    assert_eq!(a.stats().tx_ring_full, 6 + 2 + 2);
    let mut out = Vec::new();
    assert_eq!(b.recv(Instant::ZERO, &mut out, 100), 4);
    assert_eq!(b.recv(Instant::ZERO, &mut out, 100), 4);
    assert_eq!(a.send(Instant::ZERO, &mut pkts), 2);
    assert_eq!(b.recv(Instant::ZERO, &mut out, 100), 2);
    assert_eq!(out.iter().map(seq_of).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
}

fn recv_seqs(p: &mut MemPort, now: Instant) -> Vec<u32> {
    let mut out = Vec::new();
    p.recv(now, &mut out, 64);
    out.iter().map(seq_of).collect()
}

#[test]
fn switch_learns_floods_and_relearns() {
    let pool = Pool::with_count(64).unwrap();
    let (mut ports, ctl) = mem::switch(&pool, &MemConfig::new("sw", 3), 3);
    let t = Instant::ZERO;
    let (p0, rest) = ports.split_at_mut(1);
    let (p1, p2) = rest.split_at_mut(1);
    let (a, b, c) = (&mut p0[0], &mut p1[0], &mut p2[0]);

    // Unknown destination: flooded to both others, never back to the sender.
    a.send(t, &mut vec![frame(&pool, B, A, 1, 60)]);
    assert_eq!((recv_seqs(a, t), recv_seqs(b, t), recv_seqs(c, t)), (vec![], vec![1], vec![1]));
    assert_eq!(ctl.learned(A), Some(0));
    assert_eq!(a.stats().flooded, 1);

    // B answers: A is known, so only A gets it; now B is known too.
    b.send(t, &mut vec![frame(&pool, A, B, 2, 60)]);
    assert_eq!((recv_seqs(a, t), recv_seqs(c, t)), (vec![2], vec![]));
    a.send(t, &mut vec![frame(&pool, B, A, 3, 60)]);
    assert_eq!((recv_seqs(b, t), recv_seqs(c, t)), (vec![3], vec![]));

    // Broadcast goes everywhere else.
    c.send(t, &mut vec![frame(&pool, BCAST, C, 4, 60)]);
    assert_eq!((recv_seqs(a, t), recv_seqs(b, t)), (vec![4], vec![4]));

    // Takeover: port 2 announces B's address (gratuitous ARP); the switch moves B there at once.
    c.send(t, &mut vec![frame(&pool, BCAST, B, 5, 60)]);
    assert_eq!(ctl.learned(B), Some(2));
    assert_eq!((recv_seqs(a, t), recv_seqs(b, t)), (vec![5], vec![5]));
    a.send(t, &mut vec![frame(&pool, B, A, 6, 60)]);
    assert_eq!((recv_seqs(b, t), recv_seqs(c, t)), (vec![], vec![6]));
    drop(ports);
    assert_eq!(pool.available(), 64);
}

#[test]
fn link_carries_frames_across_threads_in_order() {
    let pool = Pool::with_count(512).unwrap();
    let cfg = MemConfig { queue_len: 64, ..MemConfig::new("t", 9) };
    let (mut a, mut b, _) = mem::link(&pool, &cfg);
    let n = 20_000u32;
    let tx_pool = pool.clone();
    let sender = std::thread::spawn(move || {
        let mut pkts = Vec::with_capacity(32);
        let mut seq = 0u32;
        while seq < n || !pkts.is_empty() {
            while pkts.len() < 32 && seq < n {
                pkts.push(frame(&tx_pool, B, A, seq, 60 + (seq as usize % 1400)));
                seq += 1;
            }
            if a.send(Instant::ZERO, &mut pkts) == 0 {
                std::thread::yield_now();
            }
        }
        a.stats()
    });
    let mut out = Vec::with_capacity(32);
    let mut next = 0u32;
    while next < n {
        if b.recv(Instant::ZERO, &mut out, 32) == 0 {
            std::thread::yield_now();
        }
        for f in out.drain(..) {
            assert_eq!(seq_of(&f), next);
            assert_eq!(f.len(), 60 + (next as usize % 1400));
            next += 1;
        }
    }
    let s = sender.join().unwrap();
    assert_eq!((s.tx_packets, b.stats().rx_packets), (u64::from(n), u64::from(n)));
    assert_eq!(b.stats().rx_bytes, s.tx_bytes);
    assert_eq!(pool.available(), 512);
}
