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
use dataplane::port::afxdp::{xdp_attached, AfXdpConfig, AfXdpPort, XdpMode};
use dataplane::port::Port;
use dataplane::time::Instant;
use nic_common::{blast_rx, blast_tx, enter_netns, exchange_checked, skip_reason, RawSocket, VethPair};
use std::process::Command;

const FRAMES: u32 = 3000;
const BATCH: u32 = 64;
/// Frames per direction in the throughput phase.
const BLAST: u32 = 20_000;
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

    let rates = exchange_checked(&mut port, &peer, mac_x, mac_y, FRAMES, BATCH)?;
    let s = port.stats();
    assert!(s.tx_packets >= u64::from(FRAMES), "tx counted: {s:?}");
    assert!(s.rx_packets >= u64::from(FRAMES), "rx counted: {s:?}");
    eprintln!(
        "nic_afxdp: {FRAMES} frames each way, all intact and in order; lock-step batches of {BATCH}: \
         tx {:.0} frames/s, rx {:.0} frames/s ({} build, not a benchmark); {s:?}",
        rates.tx_frames_per_sec,
        rates.rx_frames_per_sec,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );

    // Unchecked throughput, for the report only (a shared 2-core machine: never asserted).
    let tx = blast_tx(&mut port, &peer, mac_x, mac_y, BLAST)?;
    let rx = blast_rx(&mut port, &peer, mac_y, mac_x, BLAST)?;
    eprintln!("nic_afxdp: 60-byte frames, port -> kernel: {tx:?}; kernel -> port: {rx:?}");

    // An oversized frame is taken, dropped and counted, never sent truncated.
    let mut big = vec![port.alloc().ok_or("pool empty")?];
    big[0].set_len(1600).map_err(|e| e.to_string())?;
    assert_eq!(port.send(now, &mut big), 1);
    assert!(big.is_empty());
    assert_eq!(port.stats().tx_dropped_oversize, 1);

    drop(port);
    assert_eq!(
        xdp_attached(DEV_X).map_err(|e| e.to_string()),
        Ok(false),
        "a clean drop detaches the program"
    );

    // Generic (SKB) mode, what any interface without native XDP gets.
    let generic = AfXdpConfig { mode: XdpMode::Generic, ..config(true) };
    let mut port = AfXdpPort::open(&generic, Pool::new(256, 2048, 0).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let details = VethPair::link_details(NS_X, DEV_X);
    assert!(details.contains("xdpgeneric"), "attached in generic mode: {details}");
    let rates = exchange_checked(&mut port, &peer, mac_x, mac_y, 500, BATCH)?;
    eprintln!("nic_afxdp: generic mode: 500 frames each way intact and in order ({rates:?})");
    drop(port);
    assert_eq!(xdp_attached(DEV_X).map_err(|e| e.to_string()), Ok(false));
    Ok(())
}
