//! Takeovers during the close handshake (issue 5): the primary dies while the flows close, after its
//! server half sent the client's FIN on and before the standby heard that the backend answered with its
//! own. The backend's FIN went into the dead box; the standby must get it again from the backend (its
//! restored half's ACKs must reach a peer that already took our FIN, and must start a duplicate-ACK run
//! the peer counts), or the client and the backend wait for each other's last segment forever.
//!
//! The seeds are `holdfast sweep`'s that failed this way (sweep_scenario: two hosts, two connections
//! each, 200 kB both ways, 1 % loss on every link, the primary dying at 1 ms + seed x 7919 us mod 20 ms).

use control::sim::{run, Scenario};
use dataplane::gate::AckPolicy;
use dataplane::time::Duration;

fn sweep_scenario(seed: u64, policy: AckPolicy) -> Scenario {
    let mut sc = Scenario::demo(seed, policy);
    sc.client_hosts = 2;
    sc.conns_per_host = 2;
    sc.bytes_per_conn = 200_000;
    sc.time_limit = Duration::from_secs(60);
    sc.crash_primary_at = Some(Duration::from_micros(1000 + (seed.wrapping_mul(7919)) % 20_000));
    sc
}

fn assert_closes(seed: u64, policy: AckPolicy) {
    let r = match run(&sweep_scenario(seed, policy), |_| {}) {
        Ok(r) => r,
        Err(e) => panic!("seed {seed}: the simulation did not start: {e}"),
    };
    assert!(r.failover && r.flows_taken_over > 0, "seed {seed}: no takeover: {r:?}");
    assert_eq!(r.connections_complete, r.connections, "seed {seed}: a close never finished: {r:?}");
    assert_eq!((r.bytes_lost, r.bytes_duplicated, r.connections_reset), (0, 0, 0), "seed {seed}: {r:?}");
    assert_eq!(r.verdict, "pass", "seed {seed}: {r:?}");
}

#[test]
fn backend_fin_lost_with_the_primary_is_fetched_again_under_policy_backend() {
    // Each left the standby's server half in FIN-WAIT-2 and the backend in LAST-ACK before the fix.
    for seed in [17, 20, 45] {
        assert_closes(seed, AckPolicy::Backend);
    }
}

#[test]
fn backend_fin_lost_with_the_primary_is_fetched_again_under_policy_replica() {
    for seed in [65, 264] {
        assert_closes(seed, AckPolicy::Replica);
    }
}
