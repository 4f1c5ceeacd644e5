//! Failover with real Linux peers: a primary and a standby `holdfast run` in network namespaces, Linux
//! clients and servers streaming through the VIP, and a fault injected mid-transfer by
//! scripts/failover.sh: kill -9 of the primary, its data links cut, a SIGSTOP (and the fencing of the box
//! when it wakes), kill -9 of the standby, a planned switchover, a rejoin between two kills; the checksummed stream tool, iperf3 and curl against nginx.
//! Every run must end with 0 bytes lost, 0 duplicated and 0 connections reset.
//!
//! Root only: without root, or without the peers' packages, each test prints SKIP and passes. One at a
//! time, each under its own namespace prefix; the namespaces go away even when a test fails.

mod netns;

use netns::{namespaces, num, prefix, skip_reason, Bed, ONE_AT_A_TIME};
use serde_json::Value;
use std::time::Duration;

/// Runs failover.sh with `args`; `None` when this machine cannot (the reason is printed).
fn run(n: u32, what: &str, args: &[&str]) -> Option<(Value, Option<i32>, String)> {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP netns failover {what}: {why}");
        return None;
    }
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let p = prefix(n);
    let mut bed = Bed::run(&p, "failover.sh", args);
    let out = bed.finish(Duration::from_secs(90));
    drop(bed);
    assert!(namespaces(&p).is_empty(), "namespaces left behind: {:?}", namespaces(&p));
    eprintln!("{what}: {}", out.0);
    Some(out)
}

/// The invariants across one failure: everything the client saw acknowledged arrived, once, and no
/// connection was reset.
fn assert_clean(r: &Value, code: Option<i32>, err: &str) {
    let ctx = format!("report: {r}\nstderr:\n{err}");
    assert_eq!(r["fault_injected"], Value::Bool(true), "{ctx}");
    assert_eq!(num(r, &["bytes_lost"]), 0, "{ctx}");
    assert_eq!(num(r, &["bytes_duplicated"]), 0, "{ctx}");
    assert_eq!(num(r, &["connections_reset"]), 0, "{ctx}");
    assert_eq!(num(r, &["connections_failed"]), 0, "{ctx}");
    assert_eq!(num(r, &["bytes_acked"]), num(r, &["bytes_sent"]), "{ctx}");
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(code, Some(0), "{ctx}");
}

/// A stream run: every byte of the N MB verified at the server and echoed back.
fn assert_stream(r: &Value, code: Option<i32>, err: &str, mb: i64, conns: i64) {
    assert_clean(r, code, err);
    let total = mb * 1_000_000 + conns * 16;
    let ctx = format!("report: {r}\nstderr:\n{err}");
    assert_eq!(num(r, &["bytes_delivered"]), total, "{ctx}");
    assert_eq!(num(r, &["bytes_echoed"]), total, "{ctx}");
}

fn assert_took_over(r: &Value, flows: i64) {
    assert_eq!(r["standby_took_over"], Value::Bool(true), "{r}");
    assert_eq!(num(r, &["takeover_flows"]), flows, "every connection was resumed: {r}");
}

#[test]
fn netns_failover_primary_kill_backend() {
    let args = ["--fault", "kill", "--policy", "backend", "--mb", "40", "--fault-after-ms", "700"];
    let Some((r, code, err)) = run(11, "primary kill/backend", &args) else { return };
    assert_stream(&r, code, &err, 40, 4);
    assert_took_over(&r, 4);
    assert!(!r["takeover_ms"].is_null(), "every connection resumed: {r}");
}

/// The primary's client and server links die in the switch; the box lives on, so it must notice the
/// lost carrier and step down (its heartbeats stop) for the standby to take over.
#[test]
fn netns_failover_primary_links_down() {
    let args = ["--fault", "linkdown", "--policy", "backend", "--mb", "40", "--fault-after-ms", "700"];
    let Some((r, code, err)) = run(12, "primary links down/backend", &args) else { return };
    assert_stream(&r, code, &err, 40, 4);
    assert_took_over(&r, 4);
    assert_eq!(r["primary_stepped_down"], Value::Bool(true), "{r}");
    // Usually the lost carrier (after 50 ms); when the standby's takeover (about as fast) reaches the box
    // first, the later epoch fences it: either way it stops.
    let why = r["primary_step_down"].as_str().unwrap_or_default();
    assert!(why.contains("carrier") || why.contains("fenced"), "{r}");
}

/// Both boxes answer for the VIP with one virtual MAC: the client's ARP entry never changes, and the
/// bridge must relearn the MAC's port from the new primary's gratuitous ARP.
#[test]
fn netns_failover_primary_kill_virtual_mac() {
    let args =
        ["--fault", "kill", "--policy", "backend", "--mb", "40", "--fault-after-ms", "700", "--virtual-mac"];
    let Some((r, code, err)) = run(20, "primary kill/backend/virtual MAC", &args) else { return };
    assert_stream(&r, code, &err, 40, 4);
    assert_took_over(&r, 4);
}

/// A hung primary (SIGSTOP): the standby takes over; the primary, woken 2 s later mid-transfer, hears the
/// new primary's later epoch on the replication link and fences itself without disturbing the peers.
#[test]
fn netns_failover_stopped_primary_is_fenced_when_it_wakes() {
    let args = [
        "--fault",
        "stop",
        "--policy",
        "backend",
        "--mb",
        "60",
        "--fault-after-ms",
        "700",
        "--resume-after-ms",
        "1500",
    ];
    let Some((r, code, err)) = run(13, "primary stop/backend", &args) else { return };
    assert_stream(&r, code, &err, 60, 4);
    assert_took_over(&r, 4);
    assert_eq!(r["primary_stepped_down"], Value::Bool(true), "{r}");
    assert!(r["primary_step_down"].as_str().unwrap_or_default().contains("fenced"), "{r}");
}

/// A planned switchover mid-transfer (`holdfastctl switchover` on the primary): the standby takes over
/// when the primary says it has everything, the primary's run ends "switched over" with status 0, and
/// nothing is lost, duplicated or reset.
#[test]
fn netns_failover_planned_switchover() {
    for (n, policy) in [(21, "backend"), (22, "replica")] {
        let args = ["--fault", "switchover", "--policy", policy, "--mb", "40", "--fault-after-ms", "700"];
        let Some((r, code, err)) = run(n, &format!("switchover/{policy}"), &args) else { return };
        assert_stream(&r, code, &err, 40, 4);
        assert_took_over(&r, 4);
        assert_eq!(r["primary_switched_over"], Value::Bool(true), "{r}");
        assert_eq!(r["primary_stepped_down"], Value::Bool(false), "{r}");
        let reply = &r["switchover_reply"];
        assert_eq!((reply["ok"].as_bool(), reply["result"]["epoch"].as_u64()), (Some(true), Some(2)), "{r}");
    }
}

/// Rejoin: the primary is killed, the standby takes over, the dead box restarts as standby (its epoch
/// file still says 1), follows the new primary's epoch 2 and receives every flow in the bulk copy; then
/// the new primary is killed and the rejoined box takes over. One stream across both failures.
#[test]
fn netns_failover_kill_rejoin_kill() {
    let args =
        ["--fault", "kill-rejoin-kill", "--policy", "backend", "--mb", "200", "--fault-after-ms", "700"];
    let Some((r, code, err)) = run(23, "kill, rejoin, kill/backend", &args) else { return };
    assert_stream(&r, code, &err, 200, 4);
    assert_took_over(&r, 4);
    assert_eq!(r["rejoin_followed_epoch"], Value::Bool(true), "{r}");
    assert_eq!(r["rejoin_took_over"], Value::Bool(true), "{r}");
    assert_eq!(num(&r, &["rejoin_takeover_flows"]), 4, "{r}");
}

/// The standby dies: the primary carries on alone (degraded), and nothing is lost or reset.
#[test]
fn netns_failover_standby_kill() {
    let args = ["--fault", "standby-kill", "--policy", "backend", "--mb", "30", "--fault-after-ms", "700"];
    let Some((r, code, err)) = run(14, "standby kill/backend", &args) else { return };
    assert_stream(&r, code, &err, 30, 4);
    assert_eq!(r["standby_took_over"], Value::Bool(false), "{r}");
    assert_eq!(r["primary_stepped_down"], Value::Bool(false), "{r}");
}

/// iperf3 (a control and a data connection) across a primary kill: both survive, no error either side.
#[test]
fn netns_failover_iperf3_across_primary_kill() {
    let args = ["--fault", "kill", "--policy", "backend", "--load", "iperf", "--iperf-seconds", "3"];
    let Some((r, code, err)) = run(15, "iperf3 primary kill/backend", &args) else { return };
    assert_clean(&r, code, &err);
    assert_took_over(&r, 2);
    assert!(r.get("error").is_none(), "{r}");
    assert!(num(&r, &["bytes_delivered"]) > 0, "{r}");
}

/// curl downloading a file from nginx across a primary kill: the download completes and equals the file.
#[test]
fn netns_failover_curl_nginx_across_primary_kill() {
    let args = ["--fault", "kill", "--policy", "backend", "--load", "curl", "--mb", "20"];
    let Some((r, code, err)) = run(16, "curl primary kill/backend", &args) else { return };
    assert_clean(&r, code, &err);
    assert_took_over(&r, 1);
    assert_eq!(num(&r, &["bytes_delivered"]), 20_000_000, "{r}");
}

/// Policy replica across a primary kill, once the box accepts it (until then the script reports the
/// standby unavailable and this test says so).
#[test]
fn netns_failover_primary_kill_replica() {
    let args = ["--fault", "kill", "--policy", "replica", "--mb", "40", "--fault-after-ms", "700"];
    let Some((r, code, err)) = run(17, "primary kill/replica", &args) else { return };
    let failover = r["failover"].as_str().unwrap_or_default();
    if failover.starts_with("unavailable") && failover.contains("replica") {
        eprintln!("SKIP netns failover replica: the box does not run policy replica yet ({failover})");
        return;
    }
    assert_stream(&r, code, &err, 40, 4);
    assert_took_over(&r, 4);
}

/// The same primary kill with every port of both boxes on AF_XDP (copy mode on the veths), when the box
/// is built with the afxdp feature (scripts/test.sh does so when the packages are installed).
#[cfg(feature = "afxdp")]
#[test]
fn netns_failover_nic_afxdp_primary_kill() {
    let args = [
        "--fault",
        "kill",
        "--policy",
        "backend",
        "--backend",
        "afxdp",
        "--mb",
        "40",
        "--fault-after-ms",
        "700",
    ];
    let Some((r, code, err)) = run(18, "primary kill/backend/afxdp", &args) else { return };
    assert_eq!(r["backend"], "afxdp", "{r}");
    assert_stream(&r, code, &err, 40, 4);
    assert_took_over(&r, 4);
}

/// The same on DPDK (its af_packet virtual device on each veth; the replication link stays on AF_PACKET),
/// when the box is built with the dpdk feature.
#[cfg(feature = "dpdk")]
#[test]
fn netns_failover_nic_dpdk_primary_kill() {
    let args = [
        "--fault",
        "kill",
        "--policy",
        "backend",
        "--backend",
        "dpdk",
        "--mb",
        "40",
        "--fault-after-ms",
        "700",
    ];
    let Some((r, code, err)) = run(19, "primary kill/backend/dpdk", &args) else { return };
    assert_eq!(r["backend"], "dpdk", "{r}");
    assert_stream(&r, code, &err, 40, 4);
    assert_took_over(&r, 4);
}
