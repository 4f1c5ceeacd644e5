//! Property tests: no segment a peer can send, in any state, and no sequence of owner calls makes the
//! engine panic, loop, overrun a buffer or break the ack limit; decoding arbitrary bytes never panics.

use dataplane::tcp::{seq, Config, Connection, SavedConnection};
use dataplane::time::{Duration, Instant};
use dataplane::wire::{SackBlocks, TcpFlags, TcpOptions, TcpRepr, Timestamps};
use proptest::prelude::*;
use std::net::SocketAddrV4;

#[derive(Clone, Debug)]
enum Op {
    Segment {
        seq_rel: bool,
        seq: u32,
        ack_rel: bool,
        ack: u32,
        flags: u8,
        window: u16,
        opts: u8,
        ts: (u32, u32),
        sack: Vec<(u32, u32)>,
        len: usize,
    },
    Time(u16),
    Send(usize),
    Recv(usize),
    Close,
    Abort,
    Limit(Option<u32>),
    AdvanceEdge(u32),
    Probe,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), any::<u32>(), any::<bool>(), any::<u32>(), any::<u8>(), any::<u16>(), any::<u8>(), any::<(u32, u32)>(),
            prop::collection::vec(any::<(u32, u32)>(), 0..5), 0usize..3000)
            .prop_map(|(seq_rel, seq, ack_rel, ack, flags, window, opts, ts, sack, len)| Op::Segment {
                seq_rel, seq, ack_rel, ack, flags, window, opts, ts, sack, len
            }),
        2 => any::<u16>().prop_map(Op::Time),
        1 => (0usize..100_000).prop_map(Op::Send),
        1 => (0usize..100_000).prop_map(Op::Recv),
        1 => Just(Op::Close),
        1 => Just(Op::Abort),
        1 => proptest::option::of(any::<u32>()).prop_map(Op::Limit),
        1 => any::<u32>().prop_map(Op::AdvanceEdge),
        1 => Just(Op::Probe),
    ]
}

fn addrs() -> (SocketAddrV4, SocketAddrV4) {
    (
        "198.18.0.1:80".parse().unwrap_or(SocketAddrV4::new([0, 0, 0, 0].into(), 0)),
        "198.18.0.2:4000".parse().unwrap_or(SocketAddrV4::new([0, 0, 0, 0].into(), 0)),
    )
}

fn small_cfg() -> Config {
    Config { send_buffer: 16 * 1024, recv_buffer: 16 * 1024, max_ooo_ranges: 4, ..Config::default() }
}

/// Small offsets (mostly near the edges), or anything at all.
fn rel(base: u32, off: u32, relative: bool) -> u32 {
    if relative {
        base.wrapping_add((off % 70_000).wrapping_sub(35_000))
    } else {
        off
    }
}

fn start(kind: u8, cfg: &Config, saved: &SavedConnection) -> Connection {
    let (l, r) = addrs();
    let t0 = Instant::ZERO;
    let mut syn = TcpRepr {
        src_port: 4000,
        dst_port: 80,
        seq: 1000,
        ack: 0,
        flags: TcpFlags::SYN,
        window: 5000,
        urgent: 0,
        options: TcpOptions {
            mss: Some(1000),
            window_scale: Some(3),
            sack_permitted: true,
            sack: SackBlocks::default(),
            timestamps: Some(Timestamps { tsval: 5, tsecr: 0 }),
        },
        payload: &[],
    };
    match kind % 4 {
        0 => Connection::connect(t0, cfg, l, r, 77),
        1 => {
            syn.options.timestamps = None;
            match Connection::accept(t0, cfg, l, r, &syn, 77) {
                Ok(c) => c,
                Err(_) => Connection::connect(t0, cfg, l, r, 77),
            }
        }
        2 => {
            let mut c = match Connection::accept(t0, cfg, l, r, &syn, 77) {
                Ok(c) => c,
                Err(_) => Connection::connect(t0, cfg, l, r, 77),
            };
            let mut buf = [0u8; 64];
            while c.poll_transmit(t0, &mut buf).is_some() {}
            let mut ack = syn;
            ack.flags = TcpFlags::ACK;
            ack.seq = 1001;
            ack.ack = 78;
            let _ = c.handle_segment(t0, &ack);
            c
        }
        _ => Connection::restore(t0, cfg, saved, &[7u8; 3000])
            .unwrap_or_else(|_| Connection::connect(t0, cfg, l, r, 77)),
    }
}

fn saved_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 99..=99)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn no_panic_in_any_state(kind in any::<u8>(), raw in saved_strategy(), ops in prop::collection::vec(op(), 1..100)) {
        let cfg = small_cfg();
        let mut raw = raw;
        raw[0] = 1;
        raw[1] %= 10;
        let saved = SavedConnection::decode(&raw).map(|(s, _)| s);
        let (l, r) = addrs();
        let fallback = Connection::connect(Instant::ZERO, &cfg, l, r, 1).save();
        let saved = saved.unwrap_or(fallback);
        let mut c = start(kind, &cfg, &saved);
        let mut now = Instant::ZERO;
        let payload = vec![0x5au8; 3000];
        let mut frame = vec![0u8; 1500];
        let mut sink = vec![0u8; 100_000];
        for op in ops {
            match op {
                Op::Segment { seq_rel, seq: s, ack_rel, ack, flags, window, opts, ts, sack, len } => {
                    let mut o = TcpOptions::default();
                    if opts & 1 != 0 { o.mss = Some(u16::from(opts)); }
                    if opts & 2 != 0 { o.window_scale = Some(opts >> 3); }
                    if opts & 4 != 0 { o.sack_permitted = true; }
                    if opts & 8 != 0 { o.timestamps = Some(Timestamps { tsval: ts.0, tsecr: ts.1 }); }
                    for (a, b) in sack {
                        o.sack.push(rel(c.snd_una(), a, opts & 16 != 0), rel(c.snd_una(), b, opts & 16 != 0));
                    }
                    let seg = TcpRepr {
                        src_port: 4000, dst_port: 80,
                        seq: rel(c.rcv_nxt(), s, seq_rel),
                        ack: rel(c.snd_una(), ack, ack_rel),
                        flags: TcpFlags(flags), window, urgent: 0, options: o,
                        payload: &payload[..len],
                    };
                    let _ = c.handle_segment(now, &seg);
                }
                Op::Time(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    if c.poll_timeout().is_some_and(|t| t <= now) {
                        c.handle_timeout(now);
                    }
                }
                Op::Send(n) => { let _ = c.send(&sink[..n.min(sink.len())]); }
                Op::Recv(n) => { let n = n.min(sink.len()); let _ = c.recv(&mut sink[..n]); }
                Op::Close => c.close(),
                Op::Abort => c.abort(),
                Op::Limit(l) => {
                    c.set_ack_limit(l);
                }
                Op::AdvanceEdge(off) => c.advance_rcv_edge(rel(c.rcv_nxt(), off, true)),
                Op::Probe => c.probe(),
            }
            let mut n = 0;
            let acked_before = c.ack_sent();
            while let Some(t) = c.poll_transmit(now, &mut frame) {
                n += 1;
                prop_assert!(n < 2000, "output never ends");
                prop_assert!(t.payload_len <= frame.len());
                if let (Some(l), true) = (c.ack_limit(), t.repr.flags.contains(TcpFlags::ACK)) {
                    // Never past the limit, unless it was already acknowledged before the limit came down.
                    prop_assert!(seq::le(t.repr.ack, l) || t.repr.ack == acked_before, "ack {} limit {}", t.repr.ack, l);
                }
            }
            prop_assert!(c.ooo_ranges().len() <= cfg.max_ooo_ranges);
            prop_assert!(c.send_queue_len() <= cfg.send_buffer);
            prop_assert!(c.recv_available() <= cfg.recv_buffer);
            while c.poll_event().is_some() {}
        }
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok((s, used)) = SavedConnection::decode(&bytes) {
            prop_assert_eq!(used, 99);
            let mut v = Vec::new();
            s.encode(&mut v);
            prop_assert_eq!(SavedConnection::decode(&v).map(|(d, _)| d), Ok(s));
        }
    }
}
