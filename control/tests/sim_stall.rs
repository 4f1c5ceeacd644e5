//! Liveness under loss: the demo's workload (16 smoltcp clients streaming 2 MiB each through the proxy to a
//! smoltcp backend and back, 1 % loss on every link) must never leave a stream without progress for
//! seconds. The bound is on virtual time, so the test is deterministic.
//!
//! Before the fixes this seed stalled a stream for 9.9 s: the proxy's duplicate ACKs rode on its data
//! segments, which peers do not count as duplicates, and smoltcp 0.12 postponed its RTO while it had new
//! data to send (third_party/smoltcp/holdfast.patch). Slow in a debug build, where it runs an eighth of the
//! bytes: run with `cargo test --release -p control --test sim_stall`.

use control::sim::{run, Scenario};
use dataplane::gate::AckPolicy;

#[test]
fn the_demo_workload_never_stalls_a_stream_for_a_second() {
    let mut sc = Scenario::demo(1, AckPolicy::Backend);
    if cfg!(debug_assertions) {
        sc.bytes_per_conn /= 8;
    }
    let r = run(&sc, |_| {}).unwrap();
    assert_eq!(r.verdict, "pass", "{r:?}");
    assert!(r.stall_ms < 1000, "a stream stalled for {} ms of virtual time: {r:?}", r.stall_ms);
}
