//! What replication costs the whole pipeline, per ack policy, in the same run: the simulator's demo
//! topology (smoltcp clients and backend, the proxy's two cores, 1 Gbit/s links without loss) streamed once without a standby
//! and once with one attached for the whole run (no crash), for `backend` and `replica`.
//!
//! Run with `cargo run --release -p holdfast-benches --bin replication_cost [-- --mb 4 --rounds 3]`.
//!
//! Figures (medians over the rounds): wall-clock throughput of the whole simulation (so the smoltcp peers'
//! own work is in both numbers: the ratio understates the proxy's share of the cost), the ratio with a
//! standby / without, replication bytes on the link per relayed data byte (both directions), and virtual
//! completion time (what the replica gate's wait for the standby adds on the simulated wire).

use control::sim::{run, Report, Scenario};
use dataplane::gate::AckPolicy;
use dataplane::port::mem::FaultConfig;
use dataplane::time::Duration;
use std::error::Error;

type Res<T> = Result<T, Box<dyn Error>>;

fn scenario(policy: AckPolicy, mb: u64, standby: bool) -> Scenario {
    let mut sc = Scenario::demo(7, policy);
    sc.bytes_per_conn = mb << 20;
    // The demo's links (1 Gbit/s, 100 µs) without loss, duplication or reordering.
    sc.faults = FaultConfig { loss: 0.0, duplicate: 0.0, reorder: 0.0, ..sc.faults };
    // A crash that never comes within the run keeps the standby attached throughout.
    sc.crash_primary_at = standby.then(|| Duration::from_secs(3600));
    sc.time_limit = Duration::from_secs(600);
    sc
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Figures {
    mbps: f64,
    repl_per_byte: f64,
    virtual_ms: f64,
}

fn measure(policy: AckPolicy, mb: u64, standby: bool, rounds: usize) -> Res<Figures> {
    let (mut mbps, mut repl, mut virt) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let r: Report = run(&scenario(policy, mb, standby), |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        if r.connections_complete != r.connections || r.bytes_lost != 0 || r.bytes_duplicated != 0 {
            return Err(format!("{policy} standby={standby}: the run did not complete cleanly: {r:?}").into());
        }
        // Both directions are relayed: the clients' bytes and the backend's echo.
        let relayed = (r.bytes_delivered + r.bytes_echoed) as f64;
        mbps.push(relayed / secs / 1e6);
        repl.push(r.replication_bytes as f64 / relayed);
        virt.push(r.virtual_ms as f64);
    }
    Ok(Figures { mbps: median(mbps), repl_per_byte: median(repl), virtual_ms: median(virt) })
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Res<()> {
    let mb = arg("--mb", 4);
    let rounds = usize::try_from(arg("--rounds", 3)).unwrap_or(3).max(1);
    println!("replication cost: 16 connections x {mb} MiB each way, no loss, median of {rounds} rounds");
    println!(
        "{:<8} {:>14} {:>14} {:>7} {:>16} {:>12} {:>12}",
        "policy", "alone MB/s", "standby MB/s", "ratio", "repl B/data B", "alone vms", "standby vms"
    );
    for policy in [AckPolicy::Backend, AckPolicy::Replica] {
        let alone = measure(policy, mb, false, rounds)?;
        let with = measure(policy, mb, true, rounds)?;
        println!(
            "{:<8} {:>14.1} {:>14.1} {:>7.3} {:>16.4} {:>12.0} {:>12.0}",
            policy.to_string(),
            alone.mbps,
            with.mbps,
            with.mbps / alone.mbps,
            with.repl_per_byte,
            alone.virtual_ms,
            with.virtual_ms
        );
    }
    Ok(())
}
