//! Fuzz-ish property tests (seeded, so every run tries the same cases): random byte lines and random
//! request-shaped JSON never crash the server, always get exactly one reply line (or, over the size
//! limit, one reply and a close), and never reach the handler unvalidated.

#![allow(clippy::unwrap_used)]

mod ctl_fixture;

use control::ctl::protocol::{Reply, COMMANDS, SET_PARAMS};
use control::ctl::{respond, ServerConfig};
use ctl_fixture::{code, start, Conn, FixedHandler, Scratch};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn config(cases: u32, seed: u64) -> Config {
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

/// One reply line: newline-terminated, exactly one newline, a protocol reply.
fn check_reply_line(reply: &Reply) {
    let line = reply.to_line();
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1, "{line}");
    let back: Reply = serde_json::from_str(&line).unwrap();
    assert_eq!(back.ok, back.error.is_none());
    assert_eq!(back.ok, back.result.is_some());
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[ -~]{0,24}".prop_map(Value::from),
        prop_oneof![
            Just("web"),
            Just("client"),
            Just("198.19.0.2:80"),
            Just("198.18.0.10"),
            Just("/tmp/a.pcap"),
            Just("replica"),
            Just("add"),
            Just("debug"),
            Just("established"),
        ]
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const ARG_KEYS: &[&str] = &[
    "listener",
    "state",
    "peer",
    "limit",
    "id",
    "param",
    "value",
    "policy",
    "action",
    "addr",
    "weight",
    "level",
    "timeout_ms",
    "port",
    "count",
    "file",
    "snaplen",
    "bogus",
];

fn request_shaped() -> impl Strategy<Value = Value> {
    let cmd = prop_oneof![
        4 => prop::sample::select(COMMANDS).prop_map(Value::from),
        1 => json_leaf(),
    ];
    let param = prop::sample::select(SET_PARAMS).prop_map(Value::from);
    let args = prop::collection::btree_map(prop::sample::select(ARG_KEYS), json_leaf(), 0..5);
    (json_value(), cmd, param, args, prop::option::of(json_leaf()), any::<bool>()).prop_map(
        |(id, cmd, param, args, version, with_param)| {
            let mut a: Map<String, Value> = args.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if with_param {
                a.insert("param".into(), param);
            }
            let mut req = json!({"id": id, "cmd": cmd, "args": a});
            if let Some(v) = version {
                req["version"] = v;
            }
            req
        },
    )
}

proptest! {
    #![proptest_config(config(2000, 0x5eed_0001))]

    #[test]
    fn random_bytes_get_one_reply_and_never_reach_the_handler_unvalidated(
        line in prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..512)
    ) {
        let h = FixedHandler::default();
        let reply = respond(&line, &h);
        check_reply_line(&reply);
        prop_assert_eq!(h.unvalidated.load(Ordering::SeqCst), 0);
        let calls = h.calls.load(Ordering::SeqCst);
        prop_assert!(calls <= 1);
        if reply.ok {
            prop_assert_eq!(calls, 1);
        }
    }
}

#[test]
fn request_shaped_json_gets_one_reply_and_only_valid_requests_reach_the_handler() {
    let mut runner = proptest::test_runner::TestRunner::new(config(3000, 0x5eed_0002));
    let codes = std::cell::RefCell::new(std::collections::BTreeMap::<String, usize>::new());
    runner
        .run(&request_shaped(), |req| {
            let h = FixedHandler::default();
            let line = req.to_string();
            let reply = respond(line.as_bytes(), &h);
            check_reply_line(&reply);
            prop_assert_eq!(h.unvalidated.load(Ordering::SeqCst), 0);
            if reply.ok {
                prop_assert_eq!(h.calls.load(Ordering::SeqCst), 1);
            }
            // Whatever the outcome, the envelope's `id` is echoed exactly.
            prop_assert_eq!(&reply.id, &req["id"]);
            let key = reply.error.as_ref().map_or("ok", |e| e.code.as_str()).to_string();
            *codes.borrow_mut().entry(key).or_default() += 1;
            Ok(())
        })
        .unwrap();
    // The generator reaches past the envelope checks: some requests are accepted, some refused by type
    // or range checks, some name no command.
    let codes = codes.into_inner();
    for want in ["ok", "invalid_argument", "unknown_command", "bad_request"] {
        assert!(codes.get(want).copied().unwrap_or(0) > 0, "no `{want}` among {codes:?}");
    }
}

#[test]
fn random_lines_over_a_real_socket_get_one_reply_or_a_close() {
    let s = Scratch::new("fuzz");
    let mut cfg = ServerConfig::new(s.sock());
    cfg.max_line_bytes = 1024;
    let h = Arc::new(FixedHandler::default());
    let server = start(cfg, h.clone());
    let mut runner = proptest::test_runner::TestRunner::new(config(48, 0x5eed_0003));
    let strategy = prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..3000);
    runner
        .run(&strategy, |mut line| {
            let mut c = Conn::open(&s.sock());
            let long = line.len() > 1024;
            line.push(b'\n');
            c.send(&line);
            let reply = c.line().expect("one reply line");
            if long {
                prop_assert_eq!(code(&reply), "too_large");
                prop_assert!(c.at_eof());
            } else {
                // The connection survived whatever it was sent.
                prop_assert_eq!(&c.request(r#"{"id":"after","cmd":"status"}"#)["ok"], &json!(true));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(h.unvalidated.load(Ordering::SeqCst), 0);
    drop(server);
}
