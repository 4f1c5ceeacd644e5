//! The safe wrapper's contract around the EAL, without any device: once per process, errors instead of
//! crashes for bad ids and names, and the shell build's single error. A binary of its own, because the
//! EAL can be initialized once per process.

use holdfast_dpdk_sys::{DpdkError, Eal, EthConfig, EthPort, Mempool, AVAILABLE};

fn args() -> Vec<String> {
    ["-l", "0", "--no-huge", "-m", "128", "--no-pci", "--file-prefix=hfn-eal-test", "--log-level=5"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn eal_is_once_per_process_and_bad_input_is_an_error() {
    if !AVAILABLE {
        assert_eq!(Eal::init(&args()).err(), Some(DpdkError::Missing));
        assert_eq!(DpdkError::Missing.to_string(), "built without DPDK (install libdpdk-dev)");
        return;
    }
    assert_eq!(
        Eal::init(&["bad\0arg".to_string()]).err(),
        Some(DpdkError::BadArgument("EAL argument contains NUL"))
    );
    let eal = match Eal::init(&args()) {
        Ok(eal) => eal,
        Err(e) => {
            // Without root the EAL cannot lock memory or open /dev/vfio: not this test's subject.
            let uid = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let root = uid.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
            assert!(!root, "EAL init as root failed: {e}");
            eprintln!("SKIP eal test: EAL init failed without root: {e}");
            return;
        }
    };
    assert_eq!(Eal::init(&args()).err(), Some(DpdkError::AlreadyInitialized));
    assert_eq!(eal.port_count(), 0, "--no-pci and no --vdev: no ports");
    assert!(matches!(eal.port_by_name("net_nothing0"), Err(DpdkError::Call { .. })));

    let pool = Mempool::new(&eal, "hfn_test_pool", 1023, 32, 2048 + 128).expect("mempool");
    assert_eq!(pool.max_frame(), 2048);
    assert!(
        matches!(Mempool::new(&eal, "hfn_test_pool", 1023, 32, 2176), Err(DpdkError::Call { .. })),
        "mempool names are unique"
    );
    assert_eq!(
        EthPort::open(&eal, 7, &EthConfig::default(), &pool).err(),
        Some(DpdkError::BadArgument("no such DPDK port id"))
    );
    let zero = EthConfig { rx_queues: 0, ..EthConfig::default() };
    assert_eq!(
        EthPort::open(&eal, 0, &zero, &pool).err(),
        Some(DpdkError::BadArgument("queue count must be 1..=64"))
    );
    drop(pool);
    drop(eal);
    // The EAL's runtime directory outlives rte_eal_cleanup: /var/run/dpdk as root, else
    // $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk.
    let mut dirs = vec!["/var/run/dpdk".to_string(), "/tmp/dpdk".to_string()];
    if let Ok(x) = std::env::var("XDG_RUNTIME_DIR") {
        dirs.push(format!("{x}/dpdk"));
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(format!("{d}/hfn-eal-test"));
    }
}
