//! AF_PACKET ports over a veth pair between two network namespaces (root only; skipped otherwise).
//!
//! Namespaces hfp-a and hfp-b, veth hfp-va/hfp-vb with 198.18.200.1/.2, offloads and IPv6 off. Each side
//! opens its port on a thread that has joined its namespace, and both send 10,000 frames of sizes 60..=1514
//! to each other at once, with a window so that the veth's backlog never overflows; every frame must arrive
//! intact and in order.

// A test stops at the first surprise: unwrap is how it says so.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use dataplane::buf::{PacketBuf, Pool};
use dataplane::port::afpacket::{join_netns, AfPacketConfig, AfPacketPort};
use dataplane::port::Port;
use dataplane::time::{Clock, MonotonicClock};

const NS_A: &str = "hfp-a";
const NS_B: &str = "hfp-b";
const FRAMES: u64 = 10_000;
const WINDOW: u64 = 256;
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Deletes the namespaces (and with them the veths) however the test ends.
struct Namespaces;

impl Namespaces {
    fn create() -> Result<Namespaces, String> {
        let guard = Namespaces;
        guard.remove();
        for ns in [NS_A, NS_B] {
            run(&["ip", "netns", "add", ns])?;
            for key in ["all", "default"] {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                ])?;
            }
        }
        run(&[
            "ip", "link", "add", "hfp-va", "netns", NS_A, "type", "veth", "peer", "name", "hfp-vb", "netns",
            NS_B,
        ])?;
        for (ns, dev, addr) in [(NS_A, "hfp-va", "198.18.200.1/24"), (NS_B, "hfp-vb", "198.18.200.2/24")] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
            run(&[
                "ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off",
                "tx", "off", "rx", "off",
            ])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(guard)
    }

    fn remove(&self) {
        for ns in [NS_A, NS_B] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove();
    }
}

fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Some("not root".into());
    }
    for tool in ["ip", "ethtool"] {
        if Command::new(tool).arg("-V").output().map(|o| !o.status.success()).unwrap_or(true)
            && Command::new(tool).arg("--version").output().map(|o| !o.status.success()).unwrap_or(true)
        {
            return Some(format!("{tool} is missing (apt-get install iproute2 ethtool)"));
        }
    }
    None
}

fn frame_len(side: u8, seq: u64) -> usize {
    60 + ((seq * 7919 + u64::from(side) * 13) % 1455) as usize
}

fn fill(buf: &mut PacketBuf, side: u8, seq: u64, dst: [u8; 6], src: [u8; 6]) {
    let len = frame_len(side, seq);
    let d = buf.append(len).unwrap();
    d[0..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
    d[12..14].copy_from_slice(&ETHERTYPE);
    d[14..22].copy_from_slice(&seq.to_be_bytes());
    d[22] = side;
    for (i, b) in d[23..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8 ^ side;
    }
}

fn check(data: &[u8], side: u8, seq: u64) {
    assert_eq!(data.len(), frame_len(side, seq), "length of frame {seq} from side {side}");
    assert_eq!(u64::from_be_bytes(data[14..22].try_into().unwrap()), seq, "order from side {side}");
    assert_eq!(data[22], side);
    for (i, b) in data[23..].iter().enumerate() {
        assert_eq!(
            *b,
            (seq as usize).wrapping_mul(31).wrapping_add(i) as u8 ^ side,
            "byte {i} of frame {seq}"
        );
    }
}

struct Side {
    ns: &'static str,
    dev: &'static str,
    id: u8,
    peer_id: u8,
    my_rx: Arc<AtomicU64>,
    peer_rx: Arc<AtomicU64>,
    peer_mac: Arc<std::sync::Mutex<Option<[u8; 6]>>>,
    my_mac: Arc<std::sync::Mutex<Option<[u8; 6]>>>,
}

fn side(s: Side) -> Result<dataplane::port::PortStats, String> {
    join_netns(std::path::Path::new(&format!("/var/run/netns/{}", s.ns))).map_err(|e| e.to_string())?;
    let pool = Pool::with_count(2048).unwrap();
    let mut port = AfPacketPort::open(&AfPacketConfig::new(s.dev), pool).map_err(|e| e.to_string())?;
    let info = port.info();
    assert_eq!(info.mtu, 1500);
    *s.my_mac.lock().unwrap() = info.mac;
    let clock = MonotonicClock::new();
    let deadline = std::time::Instant::now() + StdDuration::from_secs(60);
    let peer_mac = loop {
        if let Some(m) = *s.peer_mac.lock().unwrap() {
            break m;
        }
        std::thread::sleep(StdDuration::from_millis(1));
    };
    let my_mac = info.mac.unwrap();

    // An oversize frame is refused and counted, never truncated.
    let mut big = port.alloc().unwrap();
    big.append(1515).unwrap().fill(0);
    let mut pkts = vec![big];
    assert_eq!(port.send(clock.now(), &mut pkts), 1);
    assert_eq!(port.stats().tx_dropped_oversize, 1);

    let (mut sent, mut rx) = (0u64, 0u64);
    let mut out = Vec::with_capacity(64);
    let mut other = 0u64;
    while sent < FRAMES || rx < FRAMES {
        assert!(std::time::Instant::now() < deadline, "timed out: side {} sent {sent} received {rx}", s.id);
        let mut busy = false;
        if port.recv(clock.now(), &mut out, 64) > 0 {
            busy = true;
        }
        for f in out.drain(..) {
            if f.data().get(12..14) != Some(&ETHERTYPE[..]) {
                other += 1;
                continue;
            }
            check(f.data(), s.peer_id, rx);
            rx += 1;
        }
        s.my_rx.store(rx, Ordering::Release);
        let room = (s.peer_rx.load(Ordering::Acquire) + WINDOW).saturating_sub(sent + pkts.len() as u64);
        let want = room.min(32).min(FRAMES - sent - pkts.len() as u64);
        for _ in 0..want {
            let mut b = port.alloc().unwrap();
            fill(&mut b, s.id, sent + pkts.len() as u64, peer_mac, my_mac);
            pkts.push(b);
        }
        if !pkts.is_empty() {
            let n = port.send(clock.now(), &mut pkts);
            sent += n as u64;
            busy |= n > 0;
        }
        if !busy {
            port.wait_readable(StdDuration::from_millis(2)).map_err(|e| e.to_string())?;
            port.poll_at();
        }
    }
    // Let the peer finish receiving before the sockets close.
    while s.peer_rx.load(Ordering::Acquire) < FRAMES {
        assert!(std::time::Instant::now() < deadline, "peer of side {} stalled", s.id);
        port.poll_at();
        std::thread::sleep(StdDuration::from_millis(1));
    }
    let _ = other;
    Ok(port.stats())
}

#[test]
fn veth_pair_carries_frames_intact_and_in_order() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED port_afpacket: {why}; needs root, ip and ethtool to make namespaces");
        return;
    }
    let _ns = Namespaces::create().unwrap();
    let rx = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let macs = [Arc::new(std::sync::Mutex::new(None)), Arc::new(std::sync::Mutex::new(None))];
    let mk = |ns, dev, id: usize| Side {
        ns,
        dev,
        id: id as u8,
        peer_id: (1 - id) as u8,
        my_rx: rx[id].clone(),
        peer_rx: rx[1 - id].clone(),
        my_mac: macs[id].clone(),
        peer_mac: macs[1 - id].clone(),
    };
    let a = mk(NS_A, "hfp-va", 0);
    let b = mk(NS_B, "hfp-vb", 1);
    let ta = std::thread::spawn(move || side(a));
    let tb = std::thread::spawn(move || side(b));
    let (sa, sb) = (ta.join().unwrap().unwrap(), tb.join().unwrap().unwrap());
    for s in [sa, sb] {
        assert_eq!(s.tx_packets, FRAMES + 1);
        assert!(s.rx_packets >= FRAMES);
        assert_eq!(s.tx_dropped_oversize, 1);
        assert_eq!((s.rx_dropped_oversize, s.rx_dropped_no_buffer, s.rx_dropped_ring), (0, 0, 0));
    }
}
