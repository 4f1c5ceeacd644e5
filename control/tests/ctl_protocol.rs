//! The protocol document, the JSON Schema and the code agree: every example in docs/control-protocol.md
//! parses with our types (and errors exactly as documented), and validates against docs/control-schema.json
//! with a small validator of the keywords the schema uses (it refuses any other keyword, so the schema
//! cannot grow a rule this test does not check).

#![allow(clippy::unwrap_used)]

use control::ctl::protocol::{
    limits, parse_request, AckPolicy, BackendAction, CaptureArgs, FlowPhase, FlowsArgs, PeerFilter, PortName,
    Reply, Request, SetArgs, COMMANDS, SET_PARAMS,
};
use serde_json::{json, Value};
use std::net::SocketAddrV4;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-protocol.md")).unwrap()
}

fn schema() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Lines of every fenced block whose info string is exactly `json <kind>`.
fn blocks(doc: &str, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in doc.lines() {
        if let Some(info) = line.strip_prefix("```") {
            inside = !inside && info.trim() == format!("json {kind}");
            continue;
        }
        if inside && !line.trim().is_empty() {
            out.push(line.to_string());
        }
    }
    out
}

// ---- a validator for the subset of JSON Schema 2020-12 the schema uses ----

const ANNOTATIONS: &[&str] = &["$schema", "$id", "title", "description", "default", "$defs"];

fn resolve<'a>(root: &'a Value, reference: &str) -> &'a Value {
    let name = reference.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("unsupported $ref {reference}"));
    root.get("$defs").and_then(|d| d.get(name)).unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

fn valid(root: &Value, schema: &Value, v: &Value) -> bool {
    let Some(s) = schema.as_object() else { panic!("schema is not an object: {schema}") };
    let mut ok = true;
    for (key, rule) in s {
        ok &= match key.as_str() {
            k if ANNOTATIONS.contains(&k) => true,
            "$ref" => valid(root, resolve(root, rule.as_str().unwrap()), v),
            "type" => match rule {
                Value::String(t) => type_ok(t, v),
                Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
                _ => panic!("bad type rule"),
            },
            "enum" => rule.as_array().unwrap().contains(v),
            "const" => rule == v,
            "minimum" => v.as_f64().is_none_or(|x| x >= rule.as_f64().unwrap()),
            "maximum" => v.as_f64().is_none_or(|x| x <= rule.as_f64().unwrap()),
            "minLength" => v.as_str().is_none_or(|x| x.chars().count() as u64 >= rule.as_u64().unwrap()),
            "maxLength" => v.as_str().is_none_or(|x| x.chars().count() as u64 <= rule.as_u64().unwrap()),
            "required" => v
                .as_object()
                .is_none_or(|o| rule.as_array().unwrap().iter().all(|k| o.contains_key(k.as_str().unwrap()))),
            "properties" => v.as_object().is_none_or(|o| {
                rule.as_object().unwrap().iter().all(|(k, sub)| o.get(k).is_none_or(|x| valid(root, sub, x)))
            }),
            "additionalProperties" => {
                let declared = s.get("properties").and_then(Value::as_object);
                v.as_object().is_none_or(|o| {
                    o.iter().filter(|(k, _)| declared.is_none_or(|d| !d.contains_key(*k))).all(|(_, x)| {
                        match rule {
                            Value::Bool(b) => *b,
                            sub => valid(root, sub, x),
                        }
                    })
                })
            }
            "oneOf" => rule.as_array().unwrap().iter().filter(|sub| valid(root, sub, v)).count() == 1,
            other => panic!("schema keyword `{other}` is not checked by this test's validator"),
        };
    }
    ok
}

fn reply_schema(root: &Value) -> &Value {
    resolve(root, "#/$defs/reply")
}

// ---- the tests ----

#[test]
fn every_request_example_parses_validates_and_matches_the_schema() {
    let doc = doc();
    let root = schema();
    let lines = blocks(&doc, "request");
    assert!(lines.len() >= 20, "doc has request examples ({})", lines.len());
    let mut seen_cmds = std::collections::BTreeSet::new();
    let mut seen_params = std::collections::BTreeSet::new();
    for line in &lines {
        let parsed = parse_request(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {:?}", e.error));
        assert!(valid(&root, &root, &serde_json::from_str(line).unwrap()), "schema refuses {line}");
        // What the client would send for the same request parses back to it.
        let again = parse_request(parsed.request.to_line(&parsed.id).trim_end().as_bytes()).unwrap();
        assert_eq!(again, parsed);
        seen_cmds.insert(parsed.request.name());
        if let Request::Set(_) = parsed.request {
            let v: Value = serde_json::from_str(line).unwrap();
            seen_params.insert(v["args"]["param"].as_str().unwrap().to_string());
        }
    }
    for cmd in COMMANDS {
        assert!(seen_cmds.contains(cmd), "no example of `{cmd}` in the doc");
    }
    for p in SET_PARAMS {
        assert!(seen_params.contains(*p), "no example of set `{p}` in the doc");
    }
}

#[test]
fn every_reply_example_is_a_reply_and_matches_the_schema() {
    let doc = doc();
    let root = schema();
    let lines = blocks(&doc, "reply");
    assert!(lines.len() >= 3);
    for line in lines {
        let reply: Reply = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(reply.ok, reply.error.is_none());
        assert!(valid(&root, reply_schema(&root), &serde_json::from_str(&line).unwrap()), "{line}");
    }
}

#[test]
fn every_rejected_example_gets_exactly_the_documented_reply() {
    let doc = doc();
    let root = schema();
    let lines = blocks(&doc, "rejected");
    assert!(lines.len() >= 10 && lines.len() % 2 == 0);
    for pair in lines.chunks(2) {
        let (req, documented) = (&pair[0], &pair[1]);
        let rejected = parse_request(req.as_bytes()).err().unwrap_or_else(|| panic!("{req} was accepted"));
        let actual = serde_json::to_value(Reply::failure(rejected.id, rejected.error)).unwrap();
        let documented: Value = serde_json::from_str(documented).unwrap();
        assert_eq!(actual, documented, "for {req}");
        assert!(valid(&root, reply_schema(&root), &documented));
        // Where the schema can tell (envelope and range errors), it refuses the request too.
        if let Ok(v) = serde_json::from_str::<Value>(req) {
            let code = documented["error"]["code"].as_str().unwrap();
            let schema_can_tell = code != "invalid_argument" || !req.contains("\"file\"");
            if schema_can_tell {
                assert!(!valid(&root, &root, &v), "schema accepts {req}");
            }
        }
    }
}

#[test]
fn schema_lists_the_same_commands_params_and_ranges_as_the_code() {
    let root = schema();
    let cmds: Vec<&str> =
        root["properties"]["cmd"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(cmds, COMMANDS);
    let branches = root["oneOf"].as_array().unwrap();
    let branch_cmds: Vec<&str> =
        branches.iter().map(|b| b["properties"]["cmd"]["const"].as_str().unwrap()).collect();
    assert_eq!(branch_cmds, COMMANDS);
    let set = root["$defs"]["set_args"]["oneOf"].as_array().unwrap();
    let params: Vec<&str> = set.iter().map(|b| b["properties"]["param"]["const"].as_str().unwrap()).collect();
    assert_eq!(params, SET_PARAMS);
    let range = |param: &str, field: &str| {
        let b = set.iter().find(|b| b["properties"]["param"]["const"] == json!(param)).unwrap();
        let f = &b["properties"][field];
        (f["minimum"].as_u64().unwrap(), f["maximum"].as_u64().unwrap())
    };
    let widen = |(a, b): (u32, u32)| (u64::from(a), u64::from(b));
    assert_eq!(range("heartbeat_interval_ms", "value"), limits::HEARTBEAT_INTERVAL_MS);
    assert_eq!(range("miss_threshold", "value"), widen(limits::MISS_THRESHOLD));
    assert_eq!(range("batch_size", "value"), widen(limits::BATCH_SIZE));
    assert_eq!(range("flush_deadline_us", "value"), limits::FLUSH_DEADLINE_US);
    assert_eq!(range("backend", "weight"), widen(limits::BACKEND_WEIGHT));
    let cap = &root["$defs"]["capture_args"]["properties"];
    assert_eq!(
        (cap["count"]["minimum"].as_u64().unwrap(), cap["count"]["maximum"].as_u64().unwrap()),
        widen(limits::CAPTURE_COUNT)
    );
}

#[test]
fn typed_requests_round_trip_through_a_line() {
    let requests = vec![
        Request::Flows(FlowsArgs {
            listener: Some("web".into()),
            state: None,
            peer: Some(PeerFilter::try_from("198.18.0.9:4000".to_string()).unwrap()),
            limit: 7,
        }),
        Request::Set(SetArgs::AckPolicy { listener: "db-1".into(), policy: AckPolicy::App }),
        Request::Set(SetArgs::Backend {
            action: BackendAction::Remove,
            listener: "web".into(),
            addr: "198.19.0.2:8080".parse::<SocketAddrV4>().unwrap(),
            weight: None,
        }),
        Request::Capture(CaptureArgs {
            port: PortName::Server,
            count: 5,
            file: "/tmp/a.pcap".into(),
            snaplen: None,
        }),
    ];
    for (i, r) in requests.into_iter().enumerate() {
        let line = r.to_line(&json!(i));
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let parsed = parse_request(line.trim_end().as_bytes()).unwrap();
        assert_eq!(parsed.request, r);
        assert_eq!(parsed.id, json!(i));
    }
}

#[test]
fn validation_messages_name_the_field() {
    let cases = [
        (r#"{"id":1,"cmd":"flows","args":{"limit":0}}"#, "args.limit"),
        (r#"{"id":1,"cmd":"flows","args":{"peer":"nowhere"}}"#, "args.peer"),
        (r#"{"id":1,"cmd":"flows","args":{"listener":"has space"}}"#, "args.listener"),
        (
            r#"{"id":1,"cmd":"set","args":{"param":"backend","action":"add","listener":"w","addr":"198.19.0.2:0"}}"#,
            "args.addr",
        ),
        (
            r#"{"id":1,"cmd":"set","args":{"param":"backend","action":"add","listener":"w","addr":"224.0.0.1:80"}}"#,
            "args.addr",
        ),
        (
            r#"{"id":1,"cmd":"set","args":{"param":"backend","action":"grow","listener":"w","addr":"198.19.0.2:80"}}"#,
            "args.action",
        ),
        (
            r#"{"id":1,"cmd":"set","args":{"param":"ack_policy","listener":"w","policy":"maybe"}}"#,
            "args.policy",
        ),
        (r#"{"id":1,"cmd":"set","args":{"value":3}}"#, "args.param"),
        (r#"{"id":1,"cmd":"set","args":{"param":"batch_size","value":3,"extra":1}}"#, "extra"),
        (r#"{"id":1,"cmd":"capture","args":{"port":"client","count":0,"file":"/x"}}"#, "args.count"),
        (r#"{"id":1,"cmd":"capture","args":{"port":"client","count":1,"file":"/x/"}}"#, "args.file"),
        (r#"{"id":1,"cmd":"capture","args":{"port":"client","count":1,"file":"/x\u0000y"}}"#, "args.file"),
        (r#"{"id":1,"cmd":"drain","args":{"timeout_ms":0}}"#, "args.timeout_ms"),
        (r#"{"id":1,"cmd":"flow","args":{}}"#, "id"),
    ];
    for (line, field) in cases {
        let e = parse_request(line.as_bytes()).err().unwrap_or_else(|| panic!("{line} accepted"));
        assert_eq!(e.error.code.as_str(), "invalid_argument", "{line}");
        assert!(e.error.message.contains(field), "{line}: {}", e.error.message);
        assert_eq!(e.id, json!(1));
    }
}

#[test]
fn peer_filter_matches_address_or_exact_endpoint() {
    let ip_only = PeerFilter::try_from("198.18.0.10".to_string()).unwrap();
    let exact = PeerFilter::try_from("198.18.0.10:40000".to_string()).unwrap();
    let a: SocketAddrV4 = "198.18.0.10:40000".parse().unwrap();
    let b: SocketAddrV4 = "198.18.0.10:40001".parse().unwrap();
    let c: SocketAddrV4 = "198.18.0.11:40000".parse().unwrap();
    assert!(ip_only.matches(a) && ip_only.matches(b) && !ip_only.matches(c));
    assert!(exact.matches(a) && !exact.matches(b) && !exact.matches(c));
}

#[test]
fn flows_filters_combine_with_and() {
    let client: SocketAddrV4 = "198.18.0.10:40000".parse().unwrap();
    let backend: SocketAddrV4 = "198.19.0.2:80".parse().unwrap();
    let peers = [client, backend];
    let all = FlowsArgs::default();
    assert!(all.matches("web", FlowPhase::Opening, &peers));
    let f = FlowsArgs {
        listener: Some("web".into()),
        state: Some(FlowPhase::Established),
        peer: Some(PeerFilter::try_from("198.19.0.2".to_string()).unwrap()),
        limit: 10,
    };
    assert!(f.matches("web", FlowPhase::Established, &peers));
    assert!(!f.matches("db", FlowPhase::Established, &peers));
    assert!(!f.matches("web", FlowPhase::Closing, &peers));
    assert!(!f.matches("web", FlowPhase::Established, &[client]));
}
