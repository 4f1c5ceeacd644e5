//! End to end through the proxy's two cores, with smoltcp clients and backend over lossy in-memory links:
//! every byte arrives exactly once, in order, no connection is reset, and (under a gating policy) no client
//! ever holds an ACK for a byte the backend does not have (invariant 1 of DESIGN.md).

use control::sim::{run, Scenario};
use dataplane::gate::AckPolicy;

fn small(seed: u64, policy: AckPolicy, loss: f64) -> Scenario {
    let mut sc = Scenario::demo(seed, policy);
    sc.client_hosts = 2;
    sc.conns_per_host = 3;
    sc.bytes_per_conn = 150_000;
    sc.faults.loss = loss;
    sc
}

#[test]
fn backend_policy_relays_exactly_once_over_lossy_links() {
    for seed in 1..=3 {
        let r = run(&small(seed, AckPolicy::Backend, 0.02), |_| {}).unwrap();
        assert_eq!(r.verdict, "pass", "seed {seed}: {r:?}");
        assert_eq!(r.connections_complete, 6, "seed {seed}: {r:?}");
        assert_eq!(r.bytes_delivered, 6 * 150_000, "seed {seed}: {r:?}");
        assert_eq!((r.bytes_lost, r.bytes_duplicated, r.connections_reset), (0, 0, 0), "seed {seed}: {r:?}");
        assert_eq!(r.invariant1_violations, 0, "seed {seed}: {r:?}");
        assert!(r.frames_lost_by_links > 0, "the links must actually have lost frames: {r:?}");
    }
}

#[test]
fn policy_none_is_the_unprotected_baseline_and_the_check_sees_it() {
    // Acknowledging on receipt still relays correctly, but a client holds ACKs for bytes the backend has
    // not received yet: the invariant-1 check must notice, or it would prove nothing for `backend`.
    let r = run(&small(7, AckPolicy::None, 0.0), |_| {}).unwrap();
    assert_eq!(r.verdict, "pass", "{r:?}");
    assert_eq!(r.bytes_delivered, 6 * 150_000, "{r:?}");
    assert!(r.invariant1_violations > 0, "{r:?}");
}

#[test]
fn a_run_replays_from_its_seed() {
    let a = run(&small(11, AckPolicy::Backend, 0.01), |_| {}).unwrap();
    let b = run(&small(11, AckPolicy::Backend, 0.01), |_| {}).unwrap();
    assert_eq!(
        (a.virtual_ms, a.frames_lost_by_links, a.stall_ms),
        (b.virtual_ms, b.frames_lost_by_links, b.stall_ms)
    );
}

#[test]
fn the_standby_takes_over_a_dead_primary_with_nothing_lost_duplicated_or_reset() {
    // Crashes mid-stream. (A crash while a FIN is in flight is a known gap: the standby's snapshot does
    // not say that the dead primary relayed a FIN; see the replication issue's closing note.)
    #[allow(clippy::single_element_loop)] // more seeds once the close-handshake gap is fixed
    for (seed, crash_ms) in [(21, 40)] {
        let mut sc = small(seed, AckPolicy::Backend, 0.01);
        sc.bytes_per_conn = 1_000_000;
        sc.crash_primary_at = Some(dataplane::time::Duration::from_millis(crash_ms));
        let r = run(&sc, |_| {}).unwrap();
        assert!(r.failover, "seed {seed}: no takeover: {r:?}");
        assert!(r.flows_taken_over > 0, "seed {seed}: {r:?}");
        assert_eq!(r.verdict, "pass", "seed {seed}: {r:?}");
        assert_eq!(r.bytes_delivered, 6 * 1_000_000, "seed {seed}: {r:?}");
        assert_eq!((r.bytes_lost, r.bytes_duplicated, r.connections_reset), (0, 0, 0), "seed {seed}: {r:?}");
        assert_eq!(r.invariant1_violations, 0, "seed {seed}: {r:?}");
        // Detection (5 missed 1 ms heartbeats) plus installation, in virtual time.
        assert!(r.takeover_ms.is_some_and(|t| t < 50.0), "seed {seed}: {r:?}");
    }
}

#[test]
fn a_dead_standby_leaves_the_primary_serving_degraded_with_nothing_lost() {
    // At 3 ms the standby dies before the clients connect (at 5 ms the primary still believes in it and
    // holds their SYN-ACKs until it notices); at 30 ms it dies mid-stream.
    for (seed, crash_ms) in [(31, 3), (32, 30)] {
        let mut sc = small(seed, AckPolicy::Backend, 0.01);
        sc.crash_standby_at = Some(dataplane::time::Duration::from_millis(crash_ms));
        let r = run(&sc, |_| {}).unwrap();
        assert_eq!(r.verdict, "pass", "seed {seed}: {r:?}");
        assert!(r.degraded, "seed {seed}: the primary never reported its standby gone: {r:?}");
        assert!(!r.failover, "seed {seed}: {r:?}");
        assert_eq!(r.bytes_delivered, 6 * 150_000, "seed {seed}: {r:?}");
        assert_eq!((r.bytes_lost, r.bytes_duplicated, r.connections_reset), (0, 0, 0), "seed {seed}: {r:?}");
    }
}

#[test]
fn a_replication_outage_never_makes_two_active_boxes() {
    // Heartbeats stop for 300 ms while both boxes live: the standby's second path (probing the VIP) must
    // keep it from taking over (invariant 4), and the streams go on.
    let mut sc = small(41, AckPolicy::Backend, 0.01);
    sc.replication_outage =
        Some((dataplane::time::Duration::from_millis(10), dataplane::time::Duration::from_millis(300)));
    let r = run(&sc, |_| {}).unwrap();
    assert_eq!(r.verdict, "pass", "{r:?}");
    assert_eq!(r.invariant4_violations, 0, "{r:?}");
    assert!(!r.failover, "{r:?}");
    assert_eq!(r.bytes_delivered, 6 * 150_000, "{r:?}");
}
