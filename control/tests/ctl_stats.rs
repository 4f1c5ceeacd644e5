//! The stats registry (per-core counters summed on read, histogram hand-over, percentiles), the
//! Prometheus text checked against the rules of exposition format 0.0.4, and `WithStats`.

#![allow(clippy::unwrap_used)]

mod ctl_fixture;

use control::ctl::protocol::{NoArgs, Request};
use control::ctl::{ControlHandler, WithStats};
use control::stats::prometheus::{MetricType, TextWriter, Value as PVal};
use control::stats::{DropCause, Latency, ListenerCounter, Port, PortCounter, StatsLayout, StatsRegistry};
use ctl_fixture::FixedHandler;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn registry(cores: usize, listeners: &[&str]) -> Arc<StatsRegistry> {
    Arc::new(
        StatsRegistry::new(StatsLayout {
            cores,
            listeners: listeners.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap(),
    )
}

#[test]
fn counters_from_concurrent_cores_sum_exactly() {
    let reg = registry(2, &["web"]);
    let mut writers: Vec<_> = (0..2).map(|i| reg.core(i).unwrap()).collect();
    assert!(reg.core(0).is_none(), "each core's writer is handed out once");
    assert!(reg.core(2).is_none());
    const N: u64 = 50_000;
    let handles: Vec<_> = writers
        .drain(..)
        .map(|mut w| {
            std::thread::spawn(move || {
                for _ in 0..N {
                    w.port_add(Port::Client, PortCounter::RxPackets, 1);
                    w.port_add(Port::Client, PortCounter::RxBytes, 60);
                    w.count_drop(Port::Server, DropCause::Checksum);
                    w.listener_add(0, ListenerCounter::BytesFromClients, 3);
                    w.listener_add(9, ListenerCounter::BytesFromClients, 3); // unknown listener: ignored
                }
                w
            })
        })
        .collect();
    // Reads while the cores write see monotone values.
    let mut last = 0;
    for _ in 0..50 {
        let now = reg.snapshot().ports["client"].rx_packets;
        assert!(now >= last);
        last = now;
    }
    let writers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let snap = reg.snapshot();
    assert_eq!(snap.ports["client"].rx_packets, 2 * N);
    assert_eq!(snap.ports["client"].rx_bytes, 2 * N * 60);
    assert_eq!(snap.ports["server"].drops["checksum"], 2 * N);
    assert_eq!(snap.ports["server"].drops["malformed"], 0);
    assert_eq!(snap.cores.len(), 2);
    assert_eq!(snap.cores[1].ports["client"].rx_packets, N);
    assert_eq!(snap.listeners[0].bytes_from_clients, 2 * N * 3);
    drop(writers);
}

#[test]
fn listener_gauges_and_active_flows() {
    let reg = registry(2, &["web", "db"]);
    let (mut a, mut b) = (reg.core(0).unwrap(), reg.core(1).unwrap());
    a.listener_add(1, ListenerCounter::FlowsOpened, 5);
    b.listener_add(1, ListenerCounter::FlowsClosed, 2);
    a.set_withheld_bytes(1, 1000);
    b.set_withheld_bytes(1, 460);
    a.set_withheld_bytes(1, 500); // a gauge: replaces, does not add
    let snap = reg.snapshot();
    let db = &snap.listeners[1];
    assert_eq!((db.listener.as_str(), db.active_flows, db.withheld_bytes), ("db", 3, 960));
    assert_eq!(snap.listeners[0].active_flows, 0);
}

#[test]
fn histograms_hand_over_and_give_percentiles() {
    let reg = registry(2, &[]);
    let (mut a, mut b) = (reg.core(0).unwrap(), reg.core(1).unwrap());
    // 1..=1000 µs spread over two cores.
    for us in 1..=1000u64 {
        let w = if us % 2 == 0 { &mut a } else { &mut b };
        w.record(Latency::AckHold, us * 1000);
    }
    assert_eq!(reg.snapshot().latency["ack_hold"].count, 0, "nothing is visible before publish");
    a.publish();
    b.publish();
    let s = reg.snapshot().latency["ack_hold"].clone();
    assert_eq!(s.count, 1000);
    assert_eq!(s.sum, (1..=1000u64).sum::<u64>() * 1000);
    let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.002;
    assert!(close(s.p50, 500_000), "p50 {}", s.p50);
    assert!(close(s.p90, 900_000), "p90 {}", s.p90);
    assert!(close(s.p99, 990_000), "p99 {}", s.p99);
    assert!(close(s.p99_9, 999_000), "p99.9 {}", s.p99_9);
    assert!(close(s.max, 1_000_000) && close(s.min, 1000));
    assert_eq!(s.unit, "ns");
}

#[test]
fn a_full_slot_keeps_samples_on_the_core_until_the_control_side_drains_it() {
    let reg = registry(1, &[]);
    let mut a = reg.core(0).unwrap();
    a.record(Latency::ReplicationRtt, 10);
    a.publish(); // slot now holds 1 sample
    a.record(Latency::ReplicationRtt, 20);
    a.publish(); // slot still full: the core keeps its sample
    assert_eq!(reg.snapshot().latency["replication_rtt"].count, 1);
    a.publish(); // slot drained by the snapshot: hand-over happens now
    let s = reg.snapshot().latency["replication_rtt"].clone();
    assert_eq!((s.count, s.sum), (2, 30));
    a.publish(); // nothing new: nothing changes
    assert_eq!(reg.snapshot().latency["replication_rtt"].count, 2);
}

#[test]
fn off_core_samples_and_out_of_range_values() {
    let reg = registry(1, &[]);
    reg.record_off_core(Latency::Takeover, 7_000_000);
    let mut a = reg.core(0).unwrap();
    a.record(Latency::Takeover, u64::MAX); // clamped to the histogram's top, not a panic
    a.publish();
    let s = reg.snapshot().latency["takeover"].clone();
    assert_eq!(s.count, 2);
    assert!(s.max >= 99_000_000_000);
}

// ---- Prometheus text format 0.0.4 ----

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !s.starts_with("__")
}

/// Parses `{a="x",b="y"}` with the format's escapes; returns the labels and the rest of the line.
type Labels = Vec<(String, String)>;
type Samples = BTreeMap<(String, Labels), String>;

fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = s.strip_prefix('{') else { return Ok((vec![], s)) };
    let mut labels = vec![];
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().ok_or("unterminated label value")?;
            match c {
                '"' => break i,
                '\\' => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                '\n' => return Err("raw newline in label value".into()),
                c => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Checks a whole exposition; returns samples by (name, labels).
fn check_exposition(text: &str) -> Samples {
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut finished_families = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples: Samples = BTreeMap::new();
    let family_of = |name: &str, types: &BTreeMap<String, String>| -> String {
        for suffix in ["_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if types.get(base).map(String::as_str) == Some("summary") {
                    return base.to_string();
                }
            }
        }
        name.to_string()
    };
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) =
                (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match kw {
                "HELP" => {
                    assert!(is_metric_name(name), "HELP name {name}");
                    assert!(helps.insert(name.to_string()), "second HELP for {name}");
                    assert!(!arg.contains('\n'));
                }
                "TYPE" => {
                    assert!(is_metric_name(name), "TYPE name {name}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                        "type {arg}"
                    );
                    assert!(
                        !samples.keys().any(|(n, _)| family_of(n, &types) == *name),
                        "TYPE after samples"
                    );
                    assert!(
                        types.insert(name.to_string(), arg.to_string()).is_none(),
                        "second TYPE for {name}"
                    );
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(is_metric_name(name), "sample name {name:?}");
        let (labels, rest) = parse_labels(&line[name_end..]).unwrap_or_else(|e| panic!("{line}: {e}"));
        let mut fields = rest.trim_start().split(' ');
        let value = fields.next().unwrap();
        assert!(absent_or_timestamp(fields.next()), "{line}");
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "value {value:?} in {line}"
        );
        let family = family_of(name, &types);
        let ty = types.get(&family).unwrap_or_else(|| panic!("{name} has no TYPE")).clone();
        assert!(helps.contains(&family), "{family} has no HELP");
        if current.as_deref() != Some(&family) {
            if let Some(prev) = current.take() {
                finished_families.insert(prev);
            }
            assert!(!finished_families.contains(&family), "samples of {family} are not grouped");
            current = Some(family.clone());
        }
        let has_quantile = labels.iter().any(|(k, _)| k == "quantile");
        match ty.as_str() {
            "summary" if name == family => {
                assert!(has_quantile, "summary sample without quantile: {line}");
                let q = &labels.iter().find(|(k, _)| k == "quantile").unwrap().1;
                let q: f64 = q.parse().unwrap();
                assert!((0.0..=1.0).contains(&q));
            }
            "summary" => assert!(!has_quantile, "{line}"),
            "counter" => {
                assert!(name.ends_with("_total"), "counter {name} should end in _total");
                let v: f64 = value.parse().unwrap();
                assert!(v >= 0.0);
            }
            _ => assert!(!has_quantile),
        }
        let mut sorted = labels.clone();
        sorted.sort();
        assert!(
            samples.insert((name.to_string(), sorted), value.to_string()).is_none(),
            "duplicate series {line}"
        );
    }
    // Every summary has its _sum and _count.
    for (name, ty) in &types {
        if ty == "summary" {
            assert!(samples.keys().any(|(n, _)| *n == format!("{name}_sum")), "{name}_sum");
            assert!(samples.keys().any(|(n, _)| *n == format!("{name}_count")), "{name}_count");
        }
    }
    samples
}

fn absent_or_timestamp(field: Option<&str>) -> bool {
    field.is_none_or(|t| t.parse::<i64>().is_ok())
}

fn sample(s: &Samples, name: &str, labels: &[(&str, &str)]) -> String {
    let mut key: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    key.sort();
    s.get(&(name.to_string(), key)).unwrap_or_else(|| panic!("no sample {name} {labels:?}")).clone()
}

#[test]
fn prometheus_text_follows_format_0_0_4() {
    // A listener name that needs escaping (the registry takes any name; the format must cope).
    let reg = registry(2, &["web", "odd \"name\" \\ with\nnewline"]);
    let (mut a, mut b) = (reg.core(0).unwrap(), reg.core(1).unwrap());
    a.port_add(Port::Client, PortCounter::RxPackets, 10);
    b.port_add(Port::Replication, PortCounter::TxBytes, 4242);
    a.count_drop(Port::Client, DropCause::Malformed);
    a.listener_add(1, ListenerCounter::FlowsOpened, 2);
    for v in [1_000u64, 2_000, 3_000] {
        a.record(Latency::AckHold, v);
    }
    a.publish();
    let text = reg.prometheus_text();
    let s = check_exposition(&text);
    assert_eq!(sample(&s, "holdfast_port_rx_packets_total", &[("core", "0"), ("port", "client")]), "10");
    assert_eq!(sample(&s, "holdfast_port_tx_bytes_total", &[("core", "1"), ("port", "replication")]), "4242");
    assert_eq!(
        sample(&s, "holdfast_port_drops_total", &[("core", "0"), ("port", "client"), ("cause", "malformed")]),
        "1"
    );
    assert_eq!(
        sample(&s, "holdfast_listener_flows_opened_total", &[("listener", "odd \"name\" \\ with\nnewline")]),
        "2"
    );
    assert_eq!(sample(&s, "holdfast_ack_hold_seconds_count", &[]), "3");
    assert_eq!(sample(&s, "holdfast_ack_hold_seconds_sum", &[]).parse::<f64>().unwrap(), 6e-6);
    let p50: f64 = sample(&s, "holdfast_ack_hold_seconds", &[("quantile", "0.5")]).parse().unwrap();
    assert!((p50 - 2e-6).abs() < 1e-8, "{p50}");
    // An empty summary says NaN for its quantiles, as Prometheus clients do.
    assert_eq!(sample(&s, "holdfast_takeover_seconds", &[("quantile", "0.99")]), "NaN");
    assert_eq!(sample(&s, "holdfast_takeover_seconds_count", &[]), "0");
}

#[test]
fn text_writer_refuses_a_repeated_family_and_sanitizes_names() {
    let mut w = TextWriter::new();
    assert!(w.family("holdfast_role", "Role: 1 primary, 0 standby.", MetricType::Gauge));
    w.sample("", &[("box", "a")], PVal::Int(1));
    assert!(!w.family("holdfast_role", "again", MetricType::Gauge));
    w.sample("", &[("box", "b")], PVal::Int(0)); // dropped: its family was refused
    assert!(w.family("9bad-name.x", "help with \\ and\nnewline", MetricType::Untyped));
    w.sample("", &[("bad-label", "v")], PVal::Float(f64::INFINITY));
    let text = w.finish();
    let s = check_exposition(&text);
    assert_eq!(s.len(), 2, "{text}");
    assert_eq!(sample(&s, "_9bad_name_x", &[("bad_label", "v")]), "+Inf");
    assert!(text.contains("# HELP _9bad_name_x help with \\\\ and\\nnewline\n"));
}

#[test]
fn with_stats_answers_stats_and_metrics_and_forwards_the_rest() {
    let reg = registry(1, &["web"]);
    let mut a = reg.core(0).unwrap();
    a.port_add(Port::Server, PortCounter::TxPackets, 3);
    let inner = Arc::new(FixedHandler::default());
    let h = WithStats::new(inner.clone(), reg);
    let stats = h.handle(Request::Stats(NoArgs {})).unwrap();
    assert_eq!(stats["ports"]["server"]["tx_packets"], 3);
    assert_eq!(stats["latency"]["ack_hold"]["count"], 0);
    let metrics = h.handle(Request::Metrics(NoArgs {})).unwrap();
    check_exposition(metrics["text"].as_str().unwrap());
    assert!(metrics["content_type"].as_str().unwrap().contains("version=0.0.4"));
    assert_eq!(h.handle(Request::Status(NoArgs {})).unwrap()["role"], "primary");
    assert_eq!(inner.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}
