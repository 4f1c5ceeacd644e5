//! The `dpdk` port backend against a real kernel: DPDK's `net_af_packet` virtual device on one end of a veth
//! pair, a kernel AF_PACKET socket on the other, a few thousand frames of varied sizes each way, checked
//! byte for byte and in order. Root only (skips with a message otherwise, or when built without DPDK).
//!
//! A test binary of its own because the DPDK EAL can be initialized only once per process.
//!
//! Run: `cargo test -p dataplane --features dpdk --test nic_dpdk -- --nocapture`
#![cfg(feature = "dpdk")]

mod nic_common;

use dataplane::buf::Pool;
use dataplane::port::dpdk::{DpdkConfig, DpdkPort, Eal};
use dataplane::port::Port;
use dataplane::time::Instant;
use nic_common::{blast_rx, blast_tx, enter_netns, exchange_checked, skip_reason, RawSocket, VethPair};

const FRAMES: u32 = 3000;
const BATCH: u32 = 64;
/// Frames per direction in the throughput phase.
const BLAST: u32 = 20_000;

#[test]
fn dpdk_port_exchanges_frames_with_a_kernel_peer() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP nic_dpdk: {why}");
        return;
    }
    if !holdfast_dpdk_sys::AVAILABLE {
        eprintln!("SKIP nic_dpdk: built without DPDK (install libdpdk-dev: scripts/install-nic-deps.sh)");
        return;
    }
    let veth = VethPair::new("hfn-a", "hfn-b", "hfn-da", "hfn-db", "198.18.210").expect("veth pair");
    let (ns_a, ns_b, dev_a, dev_b) =
        (veth.ns_a.clone(), veth.ns_b.clone(), veth.dev_a.clone(), veth.dev_b.clone());
    // setns on a thread of our own, so nothing else of the harness moves namespace.
    let outcome = std::thread::spawn(move || exchange(&ns_a, &ns_b, &dev_a, &dev_b)).join();
    drop(veth);
    match outcome {
        Ok(r) => r.expect("exchange"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn exchange(ns_a: &str, ns_b: &str, dev_a: &str, dev_b: &str) -> Result<(), String> {
    enter_netns(ns_b)?;
    let peer = RawSocket::open(dev_b)?;
    let mac_b = VethPair::mac(ns_b, dev_b)?;
    let mac_a = VethPair::mac(ns_a, dev_a)?;

    // The af_packet virtual device opens its socket in this thread's namespace during EAL init.
    enter_netns(ns_a)?;
    let args: Vec<String> = [
        "-l",
        "0",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--file-prefix=hfn-test",
        &format!("--vdev=net_af_packet0,iface={dev_a}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).map_err(|e| format!("EAL init: {e}"))?;
    assert!(Eal::init(&args).is_err(), "a second EAL init in one process must fail");
    let cfg = DpdkConfig {
        eal_args: args,
        device: Some("net_af_packet0".into()),
        rx_ring: 512,
        tx_ring: 512,
        mbufs: 4095,
        ..DpdkConfig::default()
    };
    let mut port = DpdkPort::open(&eal, &cfg, Pool::new(1024, 2048 + 128, 128).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let info = port.info();
    assert_eq!(info.mac, Some(mac_a), "the vdev reports the veth's MAC");
    eprintln!("nic_dpdk: {} mac {:02x?} mtu {}", info.name, mac_a, info.mtu);
    let now = Instant::ZERO;

    let rates = exchange_checked(&mut port, &peer, mac_a, mac_b, FRAMES, BATCH)?;
    let s = port.stats();
    assert!(s.tx_packets >= u64::from(FRAMES), "tx counted: {s:?}");
    assert!(s.rx_packets >= u64::from(FRAMES), "rx counted: {s:?}");
    assert_eq!(s.tx_dropped_oversize + s.rx_dropped_oversize, 0);
    eprintln!(
        "nic_dpdk: {FRAMES} frames each way, all intact and in order; lock-step batches of {BATCH}: \
         tx {:.0} frames/s, rx {:.0} frames/s ({} build, not a benchmark); {s:?}",
        rates.tx_frames_per_sec,
        rates.rx_frames_per_sec,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );

    // Unchecked throughput, for the report only (a shared 2-core machine: never asserted).
    let tx = blast_tx(&mut port, &peer, mac_a, mac_b, BLAST)?;
    let rx = blast_rx(&mut port, &peer, mac_b, mac_a, BLAST)?;
    eprintln!("nic_dpdk: 60-byte frames, port -> kernel: {tx:?}; kernel -> port: {rx:?}");

    // An oversized frame is taken, dropped and counted, never sent truncated.
    let mut big = vec![port.alloc().ok_or("pool empty")?];
    big[0].set_len(2048).map_err(|e| e.to_string())?;
    assert_eq!(port.send(now, &mut big), 1);
    assert!(big.is_empty());
    assert_eq!(port.stats().tx_dropped_oversize, 1);

    drop(port);
    drop(eal);
    // The EAL's runtime directory outlives rte_eal_cleanup.
    let _ = std::fs::remove_dir_all("/var/run/dpdk/hfn-test");
    Ok(())
}
