//! The control socket against everything a client can do wrong, over a real Unix socket.

#![allow(clippy::unwrap_used)]

mod ctl_fixture;

use control::ctl::{ControlServer, ServerConfig, ServerError};
use ctl_fixture::{code, eventually, start, Conn, FixedHandler, Scratch};
use serde_json::json;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn config(s: &Scratch) -> ServerConfig {
    ServerConfig::new(s.sock())
}

#[test]
fn answers_and_echoes_any_id_with_socket_mode_0600() {
    let s = Scratch::new("basic");
    let h = Arc::new(FixedHandler::default());
    let server = start(config(&s), h.clone());
    let mode = std::fs::metadata(s.sock()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut c = Conn::open(&s.sock());
    let r = c.request(r#"{"id":{"seq":[1,"a"]},"cmd":"status","version":1}"#);
    assert_eq!(r["id"], json!({"seq":[1,"a"]}));
    assert_eq!(r["ok"], json!(true));
    assert_eq!(r["result"]["role"], json!("primary"));
    let r = c.request(r#"{"id":"x","cmd":"switchover"}"#);
    assert_eq!((r["ok"].clone(), code(&r)), (json!(false), "unavailable"));
    assert_eq!(r["id"], json!("x"));
    drop(c);
    server.shutdown();
    assert!(!s.sock().exists(), "shutdown removes the socket file");
}

#[test]
fn group_socket_is_0660_and_owned_by_the_group() {
    let s = Scratch::new("group");
    let gid = std::fs::metadata(&s.0).unwrap().gid();
    let mut cfg = config(&s);
    cfg.group = Some(gid.to_string());
    let _server = start(cfg, Arc::new(FixedHandler::default()));
    let meta = std::fs::metadata(s.sock()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
}

#[test]
fn unknown_group_is_refused() {
    let s = Scratch::new("nogroup");
    let mut cfg = config(&s);
    cfg.group = Some("no-such-group-hfctl".into());
    let err = ControlServer::start(cfg, Arc::new(FixedHandler::default())).unwrap_err();
    assert!(matches!(err, ServerError::UnknownGroup(_)), "{err}");
}

#[test]
fn stale_socket_is_replaced_but_a_live_one_or_a_file_is_not() {
    let s = Scratch::new("stale");
    // A socket file nobody listens on: left by a daemon that died.
    drop(UnixListener::bind(s.sock()).unwrap());
    assert!(s.sock().exists());
    let server = start(config(&s), Arc::new(FixedHandler::default()));
    // Now somebody listens: a second server must not steal the path.
    let err = ControlServer::start(config(&s), Arc::new(FixedHandler::default())).unwrap_err();
    assert!(matches!(err, ServerError::InUse(_)), "{err}");
    let mut c = Conn::open(&s.sock());
    assert_eq!(c.request(r#"{"id":1,"cmd":"status"}"#)["ok"], json!(true));
    drop(c);
    server.shutdown();
    // A regular file at the path is somebody's data: refuse, and leave it alone.
    std::fs::write(s.sock(), b"precious").unwrap();
    let err = ControlServer::start(config(&s), Arc::new(FixedHandler::default())).unwrap_err();
    assert!(matches!(err, ServerError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(s.sock()).unwrap(), b"precious");
}

#[test]
fn malformed_json_wrong_types_and_unknown_commands_get_errors_and_the_connection_goes_on() {
    let s = Scratch::new("bad");
    let h = Arc::new(FixedHandler::default());
    let _server = start(config(&s), h.clone());
    let mut c = Conn::open(&s.sock());
    let cases: &[(&str, &str)] = &[
        (r#"{"id":1,"cmd":"status""#, "parse_error"),
        ("not json at all", "parse_error"),
        ("", "parse_error"),
        ("[1,2,3]", "bad_request"),
        (r#"{"cmd":"status"}"#, "bad_request"),
        (r#"{"id":1,"cmd":"status","version":2}"#, "bad_request"),
        (r#"{"id":1,"cmd":"status","version":"1"}"#, "bad_request"),
        (r#"{"id":1,"cmd":"status","extra":true}"#, "bad_request"),
        (r#"{"id":1,"cmd":7}"#, "bad_request"),
        (r#"{"id":1,"cmd":"reboot"}"#, "unknown_command"),
        (r#"{"id":1,"cmd":"flows","args":[]}"#, "invalid_argument"),
        (r#"{"id":1,"cmd":"flows","args":{"limit":"ten"}}"#, "invalid_argument"),
        (r#"{"id":1,"cmd":"flow","args":{"id":-1}}"#, "invalid_argument"),
        (r#"{"id":1,"cmd":"set","args":{"param":"batch_size","value":0}}"#, "invalid_argument"),
        (r#"{"id":1,"cmd":"set","args":{"param":"mtu","value":1500}}"#, "invalid_argument"),
        (r#"{"id":1,"cmd":"status","args":{"verbose":true}}"#, "invalid_argument"),
    ];
    for (line, want) in cases {
        let r = c.request(line);
        assert_eq!(r["ok"], json!(false), "{line}");
        assert_eq!(code(&r), *want, "{line} -> {r}");
        assert!(!r["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = c.request(r#"{"id":"after","cmd":"status"}"#);
    assert_eq!(r["ok"], json!(true));
    assert_eq!(h.calls.load(Ordering::SeqCst), 1, "only the valid request reached the handler");
    assert_eq!(h.unvalidated.load(Ordering::SeqCst), 0);
}

#[test]
fn field_path_is_named_in_type_errors() {
    let s = Scratch::new("path");
    let _server = start(config(&s), Arc::new(FixedHandler::default()));
    let mut c = Conn::open(&s.sock());
    let r = c.request(r#"{"id":1,"cmd":"set","args":{"param":"heartbeat_interval_ms","value":"fast"}}"#);
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("value"), "{msg}");
    let r = c.request(r#"{"id":1,"cmd":"set","args":{"param":"heartbeat_interval_ms","value":0}}"#);
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("between 1 and 10000") && msg.contains("got 0"), "{msg}");
}

#[test]
fn non_utf8_bytes_get_parse_error() {
    let s = Scratch::new("utf8");
    let _server = start(config(&s), Arc::new(FixedHandler::default()));
    let mut c = Conn::open(&s.sock());
    c.send(b"{\"id\":1,\"cmd\":\"st\xff\xfeatus\"}\n");
    let r = c.line().unwrap();
    assert_eq!(code(&r), "parse_error");
    assert_eq!(r["id"], json!(null));
    assert_eq!(c.request(r#"{"id":2,"cmd":"status"}"#)["ok"], json!(true));
}

#[test]
fn over_long_line_gets_too_large_and_close() {
    let s = Scratch::new("large");
    let mut cfg = config(&s);
    cfg.max_line_bytes = 64 * 1024;
    let h = Arc::new(FixedHandler::default());
    let _server = start(cfg, h.clone());
    // No newline at all: cut off once the buffer passes the limit.
    let mut c = Conn::open(&s.sock());
    let big = vec![b'a'; 70 * 1024];
    c.send(&big);
    let r = c.line().unwrap();
    assert_eq!(code(&r), "too_large");
    assert!(c.at_eof());
    // A complete but over-long line (a valid request padded with spaces) is refused too.
    let mut c = Conn::open(&s.sock());
    let mut line = br#"{"id":1,"cmd":"status"}"#.to_vec();
    line.extend(std::iter::repeat_n(b' ', 65 * 1024));
    line.push(b'\n');
    c.send(&line);
    assert_eq!(code(&c.line().unwrap()), "too_large");
    assert!(c.at_eof());
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
    // Just under the limit is fine.
    let mut c = Conn::open(&s.sock());
    let mut line = br#"{"id":1,"cmd":"status"}"#.to_vec();
    line.extend(std::iter::repeat_n(b' ', 64 * 1024 - line.len()));
    line.push(b'\n');
    c.send(&line);
    assert_eq!(c.line().unwrap()["ok"], json!(true));
}

#[test]
fn half_line_staller_is_cut_off_without_blocking_others() {
    let s = Scratch::new("stall");
    let mut cfg = config(&s);
    cfg.line_deadline = Duration::from_millis(1500);
    let _server = start(cfg, Arc::new(FixedHandler::default()));
    let mut staller = Conn::open(&s.sock());
    staller.send(br#"{"id":1,"cmd":"sta"#);
    // Others are served while the staller holds its half line.
    let mut other = Conn::open(&s.sock());
    for i in 0..5 {
        assert_eq!(other.request(&format!(r#"{{"id":{i},"cmd":"status"}}"#))["ok"], json!(true));
    }
    // Trickling more bytes does not extend the deadline (it runs from the line's first byte).
    staller.send(b"tus\"");
    let r = staller.line().unwrap();
    assert_eq!(code(&r), "bad_request");
    assert!(r["error"]["message"].as_str().unwrap().contains("not completed"));
    assert!(staller.at_eof());
}

#[test]
fn idle_client_is_closed_after_the_idle_timeout() {
    let s = Scratch::new("idle");
    let mut cfg = config(&s);
    cfg.idle_timeout = Duration::from_millis(300);
    let server = start(cfg, Arc::new(FixedHandler::default()));
    let mut c = Conn::open(&s.sock());
    assert_eq!(c.request(r#"{"id":1,"cmd":"status"}"#)["ok"], json!(true));
    assert!(c.at_eof(), "idle connection closed with no reply");
    assert!(eventually(Duration::from_secs(5), || server.active_clients() == 0));
}

#[test]
fn clients_over_the_bound_get_busy_and_are_closed() {
    let s = Scratch::new("busy");
    let mut cfg = config(&s);
    cfg.max_clients = 4;
    let server = start(cfg, Arc::new(FixedHandler::default()));
    let mut held: Vec<Conn> = (0..4).map(|_| Conn::open(&s.sock())).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(c.request(&format!(r#"{{"id":{i},"cmd":"status"}}"#))["ok"], json!(true));
    }
    assert_eq!(server.active_clients(), 4);
    for _ in 0..3 {
        let mut extra = Conn::open(&s.sock());
        let r = extra.line().unwrap();
        assert_eq!(code(&r), "busy");
        assert!(extra.at_eof());
    }
    // The held clients are unaffected, and a freed slot is usable again.
    assert_eq!(held[0].request(r#"{"id":"still","cmd":"status"}"#)["ok"], json!(true));
    held.pop();
    assert!(eventually(Duration::from_secs(5), || server.active_clients() == 3));
    let mut again = Conn::open(&s.sock());
    assert_eq!(again.request(r#"{"id":"again","cmd":"status"}"#)["ok"], json!(true));
}

#[test]
fn client_that_never_reads_is_cut_off_by_the_write_timeout() {
    let s = Scratch::new("noread");
    let mut cfg = config(&s);
    cfg.write_timeout = Duration::from_millis(300);
    let h = Arc::new(FixedHandler { flows_padding: 256 * 1024, ..Default::default() });
    let server = start(cfg, h.clone());
    let mut hog = UnixStream::connect(s.sock()).unwrap();
    // 64 requests for ~256 KiB replies: far more than the socket buffers hold.
    let mut burst = String::new();
    for i in 0..64 {
        burst.push_str(&format!("{{\"id\":{i},\"cmd\":\"flows\"}}\n"));
    }
    std::io::Write::write_all(&mut hog, burst.as_bytes()).unwrap();
    // Meanwhile another client is served.
    let mut other = Conn::open(&s.sock());
    assert_eq!(other.request(r#"{"id":"o","cmd":"status"}"#)["ok"], json!(true));
    drop(other);
    assert!(
        eventually(Duration::from_secs(15), || server.active_clients() == 0),
        "the hog's thread must give up writing"
    );
    assert!(h.calls.load(Ordering::SeqCst) < 64, "server stopped serving the hog before its burst ended");
    // The hog finds its connection closed after whatever fit in the buffers.
    hog.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sink = Vec::new();
    let res = hog.read_to_end(&mut sink);
    assert!(res.is_ok() || res.unwrap_err().kind() == ErrorKind::ConnectionReset);
}

#[test]
fn handler_panic_answers_internal_and_the_connection_goes_on() {
    let s = Scratch::new("panic");
    let _server = start(config(&s), Arc::new(FixedHandler::default()));
    let mut c = Conn::open(&s.sock());
    let r = c.request(r#"{"id":9,"cmd":"capture","args":{"port":"client","count":10,"file":"/tmp/x.pcap"}}"#);
    assert_eq!(code(&r), "internal");
    assert_eq!(r["id"], json!(9));
    assert_eq!(c.request(r#"{"id":10,"cmd":"status"}"#)["ok"], json!(true));
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_final_unterminated_line_too() {
    let s = Scratch::new("pipe");
    let _server = start(config(&s), Arc::new(FixedHandler::default()));
    let mut c = Conn::open(&s.sock());
    let mut burst = String::new();
    for i in 0..50 {
        burst.push_str(&format!("{{\"id\":{i},\"cmd\":\"status\"}}\r\n"));
    }
    burst.push_str(r#"{"id":"last","cmd":"status"}"#);
    c.send(burst.as_bytes());
    c.writer.shutdown(std::net::Shutdown::Write).unwrap();
    for i in 0..50 {
        assert_eq!(c.line().unwrap()["id"], json!(i));
    }
    assert_eq!(c.line().unwrap()["id"], json!("last"));
    assert!(c.line().is_none());
}

#[test]
fn missing_parent_directory_is_created_and_long_paths_are_handled() {
    let s = Scratch::new("paths");
    let nested = s.0.join("run").join("holdfast").join("ctl.sock");
    let server = start(ServerConfig::new(&nested), Arc::new(FixedHandler::default()));
    assert_eq!(std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777, 0o600);
    server.shutdown();
    // A path near the 107-byte limit, where the private-directory detour would not fit.
    let base = s.0.to_str().unwrap().len() + 1;
    let name = "x".repeat(107 - base);
    let long = s.0.join(&name);
    assert_eq!(long.as_os_str().len(), 107);
    let server = start(ServerConfig::new(&long), Arc::new(FixedHandler::default()));
    assert_eq!(std::fs::metadata(&long).unwrap().permissions().mode() & 0o777, 0o600);
    let mut c = Conn::open(&long);
    assert_eq!(c.request(r#"{"id":1,"cmd":"status"}"#)["ok"], json!(true));
    drop(c);
    server.shutdown();
    let too_long = s.0.join("y".repeat(108 - base));
    let err =
        ControlServer::start(ServerConfig::new(&too_long), Arc::new(FixedHandler::default())).unwrap_err();
    assert!(matches!(err, ServerError::PathTooLong(_)), "{err}");
}
