//! The optional HTTP listener for Prometheus scrapes, on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use control::ctl::http::{MetricsHttpServer, MAX_CONNECTIONS, MAX_HEAD_BYTES};
use control::stats::{Port, PortCounter, StatsLayout, StatsRegistry};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

fn server() -> (MetricsHttpServer, Arc<StatsRegistry>) {
    let reg = Arc::new(StatsRegistry::new(StatsLayout { cores: 1, listeners: vec!["web".into()] }).unwrap());
    let r = Arc::clone(&reg);
    let srv = MetricsHttpServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(move || r.prometheus_text()))
        .unwrap();
    (srv, reg)
}

fn exchange(srv: &MetricsHttpServer, request: &[u8]) -> String {
    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn get_metrics_serves_the_exposition() {
    let (srv, reg) = server();
    let mut core = reg.core(0).unwrap();
    core.port_add(Port::Client, PortCounter::RxPackets, 77);
    let resp = exchange(&srv, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(head.contains("Connection: close"));
    let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
    assert_eq!(len, body.len());
    assert!(body.contains("holdfast_port_rx_packets_total{core=\"0\",port=\"client\"} 77\n"));
    // A query string is fine; HEAD gets the head only.
    assert!(exchange(&srv, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
    let head_only = exchange(&srv, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head_only.starts_with("HTTP/1.1 200") && head_only.ends_with("\r\n\r\n"));
}

#[test]
fn everything_else_gets_a_clear_status() {
    let (srv, _reg) = server();
    assert!(exchange(&srv, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(exchange(&srv, b"GET /metricsx HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    let r = exchange(&srv, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET, HEAD"));
    assert!(exchange(&srv, b"garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(exchange(&srv, b"\xff\xfe /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while huge.len() <= MAX_HEAD_BYTES {
        huge.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert!(exchange(&srv, &huge).starts_with("HTTP/1.1 431"));
}

#[test]
fn a_silent_client_does_not_block_scrapes() {
    let (srv, _reg) = server();
    let _silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(srv.local_addr()).unwrap()).collect();
    assert!(exchange(&srv, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    // A half-sent head is dropped after the I/O timeout, without a response.
    let mut half = TcpStream::connect(srv.local_addr()).unwrap();
    half.write_all(b"GET /met").unwrap();
    half.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = String::new();
    half.read_to_string(&mut out).unwrap();
    assert_eq!(out, "");
}

#[test]
fn connections_over_the_bound_get_503_and_the_bound_frees_up() {
    let (srv, _reg) = server();
    let silent: Vec<TcpStream> =
        (0..MAX_CONNECTIONS).map(|_| TcpStream::connect(srv.local_addr()).unwrap()).collect();
    let r = exchange(&srv, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    drop(silent);
    // Each silent connection's thread ends at EOF (or its I/O timeout); then scrapes work again.
    let mut served = false;
    for _ in 0..200 {
        if exchange(&srv, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(served);
}
