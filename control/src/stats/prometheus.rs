//! Prometheus text exposition, format 0.0.4: a small writer that keeps the format's rules (HELP and TYPE
//! once per family before its samples, valid names, escaped label values and help text, one family's
//! samples together) and `render`, which writes a `StatsSnapshot` with it. The box may append its own
//! families (role, epoch) through the same writer.

use super::histogram::Latency;
use super::{DropCause, ListenerStats, PortStats, StatsSnapshot};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Metric types of format 0.0.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Summary,
    Untyped,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }
}

/// A sample value: integers print exactly, floats as Prometheus reads them (`+Inf`, `-Inf`, `NaN`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// Writes one exposition. Names with characters outside `[a-zA-Z0-9_:]` have them replaced by `_`.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
    families: BTreeSet<String>,
    current: Option<String>,
}

fn sanitize_name(name: &str, colon_ok: bool) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || (colon_ok && c == ':') { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn escape(text: &str, quote: bool) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if quote => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s
}

impl TextWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family; its samples must follow before the next family starts. Returns false (and
    /// writes nothing) for a family name already written, which the format forbids repeating.
    pub fn family(&mut self, name: &str, help: &str, ty: MetricType) -> bool {
        let name = sanitize_name(name, true);
        if !self.families.insert(name.clone()) {
            self.current = None;
            return false;
        }
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {}", ty.as_str());
        self.current = Some(name);
        true
    }

    /// One sample of the current family; `suffix` is "" or a summary's `_sum` / `_count`.
    /// Samples for a family that was refused are dropped.
    pub fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: Value) {
        let Some(family) = &self.current else { return };
        let suffix_ok = suffix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let _ = write!(self.out, "{family}{}", if suffix_ok { suffix } else { "" });
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{}=\"{}\"", sanitize_name(k, false), escape(v, true));
            }
            self.out.push('}');
        }
        let _ = match value {
            Value::Int(v) => writeln!(self.out, " {v}"),
            Value::Float(f) if f.is_nan() => writeln!(self.out, " NaN"),
            Value::Float(f) if f.is_infinite() => {
                writeln!(self.out, " {}", if f > 0.0 { "+Inf" } else { "-Inf" })
            }
            Value::Float(f) => writeln!(self.out, " {f}"),
        };
    }

    pub fn finish(self) -> String {
        self.out
    }
}

const NS_PER_S: f64 = 1e9;

fn port_family(
    w: &mut TextWriter,
    snap: &StatsSnapshot,
    name: &str,
    help: &str,
    get: impl Fn(&PortStats) -> u64,
) {
    w.family(name, help, MetricType::Counter);
    for core in &snap.cores {
        let core_label = core.core.to_string();
        for (port, stats) in &core.ports {
            w.sample("", &[("core", &core_label), ("port", port)], Value::Int(get(stats)));
        }
    }
}

fn listener_family(
    w: &mut TextWriter,
    snap: &StatsSnapshot,
    name: &str,
    help: &str,
    ty: MetricType,
    get: impl Fn(&ListenerStats) -> u64,
) {
    w.family(name, help, ty);
    for l in &snap.listeners {
        w.sample("", &[("listener", &l.listener)], Value::Int(get(l)));
    }
}

/// Writes a snapshot's families into `w`.
pub fn write_snapshot(w: &mut TextWriter, snap: &StatsSnapshot) {
    port_family(w, snap, "holdfast_port_rx_packets_total", "Packets received on a port.", |s| s.rx_packets);
    port_family(w, snap, "holdfast_port_rx_bytes_total", "Bytes received on a port.", |s| s.rx_bytes);
    port_family(w, snap, "holdfast_port_tx_packets_total", "Packets transmitted on a port.", |s| {
        s.tx_packets
    });
    port_family(w, snap, "holdfast_port_tx_bytes_total", "Bytes transmitted on a port.", |s| s.tx_bytes);
    w.family("holdfast_port_drops_total", "Packets dropped on a port, by cause.", MetricType::Counter);
    for core in &snap.cores {
        let core_label = core.core.to_string();
        for (port, stats) in &core.ports {
            for cause in DropCause::ALL {
                let n = stats.drops.get(cause.as_str()).copied().unwrap_or(0);
                w.sample(
                    "",
                    &[("core", &core_label), ("port", port), ("cause", cause.as_str())],
                    Value::Int(n),
                );
            }
        }
    }
    use MetricType::{Counter, Gauge};
    listener_family(w, snap, "holdfast_listener_flows_opened_total", "Flows opened.", Counter, |l| {
        l.flows_opened
    });
    listener_family(w, snap, "holdfast_listener_flows_closed_total", "Flows closed.", Counter, |l| {
        l.flows_closed
    });
    listener_family(w, snap, "holdfast_listener_flows_refused_total", "New flows refused.", Counter, |l| {
        l.flows_refused
    });
    listener_family(
        w,
        snap,
        "holdfast_listener_flows_reset_total",
        "Flows ended by a reset.",
        Counter,
        |l| l.flows_reset,
    );
    listener_family(
        w,
        snap,
        "holdfast_listener_bytes_from_clients_total",
        "Bytes relayed client to backend.",
        Counter,
        |l| l.bytes_from_clients,
    );
    listener_family(
        w,
        snap,
        "holdfast_listener_bytes_from_backends_total",
        "Bytes relayed backend to client.",
        Counter,
        |l| l.bytes_from_backends,
    );
    listener_family(w, snap, "holdfast_listener_active_flows", "Flows open now.", Gauge, |l| l.active_flows);
    listener_family(
        w,
        snap,
        "holdfast_listener_withheld_bytes",
        "Bytes received and not yet acknowledged.",
        Gauge,
        |l| l.withheld_bytes,
    );
    for kind in Latency::ALL {
        let Some(s) = snap.latency.get(kind.as_str()) else { continue };
        let name = format!("holdfast_{}_seconds", kind.as_str());
        w.family(&name, kind.help(), MetricType::Summary);
        for (q, v) in [("0.5", s.p50), ("0.9", s.p90), ("0.99", s.p99), ("0.999", s.p99_9)] {
            let value = if s.count == 0 { f64::NAN } else { v as f64 / NS_PER_S };
            w.sample("", &[("quantile", q)], Value::Float(value));
        }
        w.sample("_sum", &[], Value::Float(s.sum as f64 / NS_PER_S));
        w.sample("_count", &[], Value::Int(s.count));
        let max_name = format!("holdfast_{}_max_seconds", kind.as_str());
        w.family(&max_name, "Largest sample of the summary of the same name.", MetricType::Gauge);
        w.sample("", &[], Value::Float(s.max as f64 / NS_PER_S));
    }
}

/// The whole exposition of one snapshot.
pub fn render(snap: &StatsSnapshot) -> String {
    let mut w = TextWriter::new();
    write_snapshot(&mut w, snap);
    w.finish()
}
