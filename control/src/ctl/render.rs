//! How `holdfastctl` shows a result to a person: scalars as aligned `key  value` lines, arrays of
//! objects and objects of objects as tables with one column per field, nested objects in a cell as a
//! compact `k=v` list. Generic over the JSON, so commands the box answers in its own shapes still read
//! well; `stats` gets its per-core counters turned into one row per core and port first.

use serde_json::{Map, Value};
use std::fmt::Write as _;

/// The text `holdfastctl` prints for a successful reply to `cmd`.
pub fn render(cmd: &str, result: &Value) -> String {
    if cmd == "metrics" {
        if let Some(text) = result.get("text").and_then(Value::as_str) {
            return text.to_string();
        }
    }
    let shaped = if cmd == "stats" { reshape_stats(result) } else { result.clone() };
    let mut out = String::new();
    render_value(&mut out, None, &shaped);
    out
}

/// `cores: [{core, ports: {name: {...}}}]` becomes `cores: [{core, port, ...}]`.
fn reshape_stats(result: &Value) -> Value {
    let mut result = result.clone();
    if let Some(cores) = result.get_mut("cores").and_then(Value::as_array_mut) {
        let mut rows = Vec::new();
        for core in cores.iter() {
            let id = core.get("core").cloned().unwrap_or(Value::Null);
            if let Some(ports) = core.get("ports").and_then(Value::as_object) {
                for (name, stats) in ports {
                    let mut row = Map::new();
                    row.insert("core".into(), id.clone());
                    row.insert("port".into(), Value::String(name.clone()));
                    if let Some(fields) = stats.as_object() {
                        row.extend(fields.clone());
                    }
                    rows.push(Value::Object(row));
                }
            }
        }
        *cores = rows;
    }
    result
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        Value::Object(map) => {
            // Zero counters are noise in a cell ("drops": most causes are 0 most of the time).
            let parts: Vec<String> = map
                .iter()
                .filter(|(_, v)| v.as_u64() != Some(0))
                .map(|(k, v)| format!("{k}={}", scalar(v)))
                .collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(" ")
            }
        }
    }
}

fn is_table_rows(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(Value::is_object)
}

fn render_value(out: &mut String, title: Option<&str>, v: &Value) {
    match v {
        Value::Object(map) => render_object(out, title, map),
        Value::Array(items) if is_table_rows(items) => {
            let rows: Vec<(Option<String>, &Map<String, Value>)> =
                items.iter().filter_map(Value::as_object).map(|m| (None, m)).collect();
            section(out, title);
            table(out, &rows);
        }
        other => {
            section(out, title);
            let _ = writeln!(out, "{}", scalar(other));
        }
    }
}

fn section(out: &mut String, title: Option<&str>) {
    if let Some(t) = title {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "{t}:");
    }
}

fn render_object(out: &mut String, title: Option<&str>, map: &Map<String, Value>) {
    let all_objects = !map.is_empty() && map.values().all(Value::is_object);
    // An object of objects with scalar fields (ports by name, latency by kind) reads best as a table.
    if title.is_some() && all_objects {
        let rows: Vec<(Option<String>, &Map<String, Value>)> =
            map.iter().filter_map(|(k, v)| v.as_object().map(|m| (Some(k.clone()), m))).collect();
        section(out, title);
        table(out, &rows);
        return;
    }
    section(out, title);
    let scalars: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !is_section(v)).collect();
    let width = scalars.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &scalars {
        let _ = writeln!(out, "{k:<width$}  {}", scalar(v));
    }
    // Sections in the order an operator looks for them; others after, as they come.
    const ORDER: &[&str] = &["ports", "listeners", "latency", "cores"];
    let mut sections: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| is_section(v)).collect();
    sections.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    for (k, v) in sections {
        let t = match title {
            Some(t) => format!("{t}.{k}"),
            None => k.clone(),
        };
        render_value(out, Some(&t), v);
    }
}

/// A value shown under its own heading rather than on a `key  value` line.
fn is_section(v: &Value) -> bool {
    v.as_object().is_some_and(|m| !m.is_empty()) || is_rows(v)
}

fn is_rows(v: &Value) -> bool {
    v.as_array().is_some_and(|items| is_table_rows(items))
}

fn table(out: &mut String, rows: &[(Option<String>, &Map<String, Value>)]) {
    let mut columns: Vec<String> = Vec::new();
    if rows.iter().any(|(name, _)| name.is_some()) {
        columns.push("name".into());
    }
    // JSON objects arrive with sorted keys; identifying columns read best on the left.
    const FIRST: &[&str] = &[
        "id",
        "core",
        "port",
        "listener",
        "state",
        "rx_packets",
        "rx_bytes",
        "tx_packets",
        "tx_bytes",
        "count",
        "min",
        "p50",
        "p90",
        "p99",
        "p99_9",
        "max",
    ];
    for first in FIRST {
        if rows.iter().any(|(_, row)| row.contains_key(*first)) {
            columns.push((*first).to_string());
        }
    }
    for (_, row) in rows {
        for k in row.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, row)| {
            columns
                .iter()
                .map(|c| match (c.as_str(), name) {
                    ("name", Some(n)) if !row.contains_key("name") => n.clone(),
                    _ => row.get(c).map_or_else(|| "-".into(), scalar),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells.iter().filter_map(|r| r.get(i)).map(|s| s.chars().count()).max().unwrap_or(0).max(c.len())
        })
        .collect();
    let line = |out: &mut String, items: &[String]| {
        let mut s = String::new();
        for (i, item) in items.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                s.push_str("  ");
            }
            let _ = write!(s, "{item:<w$}");
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    line(out, &header);
    for row in &cells {
        line(out, row);
    }
}
