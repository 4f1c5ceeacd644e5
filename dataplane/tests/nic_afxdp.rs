//! The `afxdp` port backend against a real kernel: an AF_XDP socket on one end of a veth pair, a kernel
//! AF_PACKET socket on the other, a few thousand frames of varied sizes each way, checked byte for byte
//! and in order. Also the crash path: a child process opens a port and aborts, leaving its XDP program on
//! the interface; the next open must detach it and work, and a clean drop must leave no program behind.
//! Root only (skips with a message otherwise).
//!
//! Run: `cargo test -p dataplane --features afxdp --test nic_afxdp -- --nocapture`
#![cfg(feature = "afxdp")]

mod nic_common;

use dataplane::buf::Pool;
use dataplane::port::afxdp::{xdp_attached, AfXdpConfig, AfXdpPort};
use dataplane::port::Port;
use dataplane::time::Instant;
use nic_common::{
    blast_rx, blast_tx, build_frame, check_frame, enter_netns, frame_seq, skip_reason, RawSocket, VethPair,
};
use std::process::Command;
use std::time::{Duration, Instant as WallClock};

const FRAMES: u32 = 3000;
const BATCH: u32 = 64;
/// Frames per direction in the throughput phase.
const BLAST: u32 = 20_000;
const WAIT: Duration = Duration::from_secs(5);
const NS_X: &str = "hfn-x";
const NS_Y: &str = "hfn-y";
const DEV_X: &str = "hfn-vx";
const DEV_Y: &str = "hfn-vy";
const TEST_NAME: &str = "afxdp_port_exchanges_frames_and_recovers_from_a_crash";
/// Set in the child process that plays the crashing holdfast.
const CHILD_ENV: &str = "HFN_AFXDP_CRASH_CHILD";

fn config(detach_stale: bool) -> AfXdpConfig {
    AfXdpConfig { ifname: DEV_X.into(), detach_stale, ..AfXdpConfig::default() }
}

#[test]
fn afxdp_port_exchanges_frames_and_recovers_from_a_crash() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: attach, then die without any cleanup, as a crash would.
        let opened = enter_netns(NS_X).and_then(|()| {
            let pool = Pool::new(64, 2048, 0).map_err(|e| e.to_string())?;
            AfXdpPort::open(&config(true), pool).map_err(|e| e.to_string())
        });
        match opened {
            Ok(port) => {
                eprintln!("child: opened {}, aborting", port.info().name);
                std::process::abort();
            }
            Err(e) => {
                eprintln!("child: {e}");
                std::process::exit(3);
            }
        }
    }
    if let Some(why) = skip_reason() {
        eprintln!("SKIP nic_afxdp: {why}");
        return;
    }
    let veth = VethPair::new(NS_X, NS_Y, DEV_X, DEV_Y, "198.18.211").expect("veth pair");
    let outcome = std::thread::spawn(run).join();
    drop(veth);
    match outcome {
        Ok(r) => r.expect("afxdp test"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run() -> Result<(), String> {
    // A crashed run: the child process attaches and aborts.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let status = Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .status()
        .map_err(|e| e.to_string())?;
    assert!(!status.success() && status.code().is_none(), "the child must die by a signal: {status}");

    enter_netns(NS_Y)?;
    let peer = RawSocket::open(DEV_Y)?;
    let mac_y = VethPair::mac(NS_Y, DEV_Y)?;
    enter_netns(NS_X)?;
    let mac_x = VethPair::mac(NS_X, DEV_X)?;
    assert_eq!(xdp_attached(DEV_X).map_err(|e| e.to_string()), Ok(true), "the crash left a program");
    eprintln!(
        "nic_afxdp: the crashed child left its XDP program on {DEV_X}:\n{}",
        VethPair::link_details(NS_X, DEV_X)
    );

    let mut port = AfXdpPort::open(&config(true), Pool::new(1024, 2048, 0).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let info = port.info();
    assert_eq!(info.mac, Some(mac_x));
    eprintln!("nic_afxdp: reopened after the crash: {} mtu {}", info.name, info.mtu);
    let now = Instant::ZERO;

    // AF_XDP -> kernel, in batches, each checked before the next goes out.
    let start = WallClock::now();
    let mut out = Vec::with_capacity(BATCH as usize);
    let mut buf = vec![0u8; 2048];
    for base in (0..FRAMES).step_by(BATCH as usize) {
        let end = (base + BATCH).min(FRAMES);
        for seq in base..end {
            let mut p = port.alloc().ok_or("pool empty")?;
            let n = build_frame(&mut buf, seq, mac_x, mac_y);
            p.extend_from_slice(&buf[..n]).map_err(|e| e.to_string())?;
            out.push(p);
        }
        let deadline = WallClock::now() + WAIT;
        while !out.is_empty() {
            port.send(now, &mut out);
            if WallClock::now() > deadline {
                return Err(format!("transmit stuck at frame {base}"));
            }
        }
        let mut seq = base;
        while seq < end {
            let n = peer.recv(&mut buf, WAIT).ok_or(format!("kernel peer: frame {seq} never arrived"))?;
            if frame_seq(&buf[..n], mac_x).is_none() {
                continue;
            }
            check_frame(&buf[..n], seq, mac_x, mac_y)?;
            seq += 1;
        }
    }
    let tx_secs = start.elapsed().as_secs_f64();

    // kernel -> AF_XDP.
    let start = WallClock::now();
    let mut got = Vec::with_capacity(64);
    for base in (0..FRAMES).step_by(BATCH as usize) {
        let end = (base + BATCH).min(FRAMES);
        for seq in base..end {
            let n = build_frame(&mut buf, seq, mac_y, mac_x);
            peer.send(&buf[..n])?;
        }
        let deadline = WallClock::now() + WAIT;
        let mut seq = base;
        while seq < end {
            got.clear();
            if port.recv(now, &mut got, 32) == 0 {
                if WallClock::now() > deadline {
                    return Err(format!("AF_XDP port: frame {seq} never arrived"));
                }
                std::thread::yield_now();
            }
            for p in &got {
                if frame_seq(p.data(), mac_y).is_none() {
                    continue;
                }
                check_frame(p.data(), seq, mac_y, mac_x)?;
                seq += 1;
            }
        }
    }
    let rx_secs = start.elapsed().as_secs_f64();

    let s = port.stats();
    assert!(s.tx_packets >= u64::from(FRAMES), "tx counted: {s:?}");
    assert!(s.rx_packets >= u64::from(FRAMES), "rx counted: {s:?}");
    eprintln!(
        "nic_afxdp: {FRAMES} frames each way, all intact and in order; lock-step batches of {BATCH}: \
         tx {:.0} frames/s, rx {:.0} frames/s ({} build, not a benchmark); {s:?}",
        f64::from(FRAMES) / tx_secs,
        f64::from(FRAMES) / rx_secs,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );

    // Unchecked throughput, for the report only (a shared 2-core machine: never asserted).
    let tx = blast_tx(&mut port, &peer, mac_x, mac_y, BLAST)?;
    let rx = blast_rx(&mut port, &peer, mac_y, mac_x, BLAST)?;
    eprintln!("nic_afxdp: 60-byte frames, port -> kernel: {tx:?}; kernel -> port: {rx:?}");

    // An oversized frame is dropped and counted, never sent truncated.
    let mut big = vec![port.alloc().ok_or("pool empty")?];
    big[0].set_len(1600).map_err(|e| e.to_string())?;
    assert_eq!(port.send(now, &mut big), 0);
    assert!(big.is_empty());
    assert_eq!(port.stats().tx_dropped_oversize, 1);

    drop(port);
    assert_eq!(
        xdp_attached(DEV_X).map_err(|e| e.to_string()),
        Ok(false),
        "a clean drop detaches the program"
    );
    Ok(())
}
