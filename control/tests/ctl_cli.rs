//! `holdfastctl`, the real binary, against a control server running in this test process.

#![allow(clippy::unwrap_used)]

mod ctl_fixture;

use control::ctl::{ControlServer, ServerConfig, WithStats};
use control::stats::{Latency, Port, PortCounter, StatsLayout, StatsRegistry};
use ctl_fixture::{FixedHandler, Scratch};
use serde_json::Value;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

fn ctl(sock: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_holdfastctl")).arg("--socket").arg(sock).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

struct Box_ {
    s: Scratch,
    _server: ControlServer,
    reg: Arc<StatsRegistry>,
}

fn start(drain_delay: Duration) -> Box_ {
    let s = Scratch::new("cli");
    let reg = Arc::new(StatsRegistry::new(StatsLayout { cores: 2, listeners: vec!["web".into()] }).unwrap());
    let h = WithStats::new(Arc::new(FixedHandler { drain_delay, ..Default::default() }), Arc::clone(&reg));
    let server = ControlServer::start(ServerConfig::new(s.sock()), Arc::new(h)).unwrap();
    Box_ { s, _server: server, reg }
}

#[test]
fn status_prints_a_table_and_json_prints_the_reply() {
    let b = start(Duration::ZERO);
    let o = ctl(&b.s.sock(), &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.lines().any(|l| l.starts_with("role") && l.trim_end().ends_with("primary")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("epoch") && l.trim_end().ends_with('7')), "{text}");

    let o = ctl(&b.s.sock(), &["--json", "status"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(stdout(&o).trim_end()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"]["role"], "primary");
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn flows_render_as_a_table_with_a_header() {
    let b = start(Duration::ZERO);
    let o = ctl(
        &b.s.sock(),
        &["flows", "--listener", "web", "--state", "established", "--peer", "198.18.0.10", "--limit", "5"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("ID") && l.contains("LISTENER"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(lines[header + 1].starts_with('1') && lines[header + 1].contains("198.18.0.10:40000"));
    assert!(lines[header + 2].starts_with('2') && lines[header + 2].contains("opening"));
    assert!(text.lines().any(|l| l.starts_with("limit") && l.trim_end().ends_with('5')), "{text}");
}

#[test]
fn stats_and_metrics_come_from_the_registry() {
    let b = start(Duration::ZERO);
    let mut core = b.reg.core(1).unwrap();
    core.port_add(Port::Client, PortCounter::RxPackets, 1234);
    core.record(Latency::AckHold, 25_000);
    core.publish();
    let o = ctl(&b.s.sock(), &["stats"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("ports:") && text.contains("latency:") && text.contains("listeners:"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("client") && l.contains("1234")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ack_hold") && l.contains("25000")), "{text}");
    let o = ctl(&b.s.sock(), &["metrics"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("holdfast_port_rx_packets_total{core=\"1\",port=\"client\"} 1234\n"));
}

#[test]
fn set_sends_typed_requests() {
    let b = start(Duration::ZERO);
    let cases: &[(&[&str], &str)] = &[
        (&["set", "ack-policy", "web", "replica"], "\"policy\":\"replica\""),
        (&["set", "heartbeat-interval-ms", "2"], "\"param\":\"heartbeat_interval_ms\""),
        (&["set", "miss-threshold", "3"], "\"value\":3"),
        (&["set", "batch-size", "64"], "\"param\":\"batch_size\""),
        (&["set", "flush-deadline-us", "0"], "\"param\":\"flush_deadline_us\""),
        (&["set", "backend", "add", "web", "198.19.0.4:80", "--weight", "10"], "\"weight\":10"),
        (&["set", "log-level", "debug"], "\"level\":\"debug\""),
    ];
    for (args, want) in cases {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let o = ctl(&b.s.sock(), &full);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains(want), "{args:?}: {}", stdout(&o));
    }
}

#[test]
fn an_error_reply_exits_1() {
    let b = start(Duration::ZERO);
    let o = ctl(&b.s.sock(), &["switchover"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no standby attached") && stderr(&o).contains("unavailable"),
        "{}",
        stderr(&o)
    );
    let o = ctl(&b.s.sock(), &["--json", "capture", "client", "10", "/tmp/x.pcap"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(stdout(&o).trim_end()).unwrap();
    assert_eq!(v["error"]["code"], "internal");
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    let nowhere = std::path::Path::new("/nonexistent/holdfast.sock");
    for args in [
        &["frobnicate"][..],
        &["set", "batch-size", "0"],
        &["set", "batch-size", "many"],
        &["set", "ack-policy", "web", "sometimes"],
        &["flows", "--peer", "not-an-ip"],
        &["capture", "client", "10", "relative.pcap"],
        &["--timeout", "0", "status"],
        &[],
    ] {
        let o = ctl(nowhere, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
    let o = ctl(nowhere, &["--help"]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn unreachable_or_slow_server_exits_3() {
    let o = ctl(std::path::Path::new("/nonexistent/holdfast.sock"), &["status"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
    let b = start(Duration::from_millis(1500));
    let o = ctl(&b.s.sock(), &["--timeout", "200", "drain"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("no reply within"), "{}", stderr(&o));
}
