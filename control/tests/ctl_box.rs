//! The control socket of a real box, end to end: `boxrun::run_primary` runs a primary (its two protocol
//! cores on their own threads, the control socket and the metrics listener on theirs) on in-memory ports,
//! smoltcp clients stream through it to a smoltcp backend, and the test drives `status`, `stats`, `flows`,
//! `flow`, `set`, `drain`, `capture` and `metrics` through the socket, with the client library, with
//! `holdfastctl`, and over HTTP. No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use control::boxrun::run_primary;
use control::config::Config;
use control::ctl::protocol::{
    AckPolicy, BackendAction, CaptureArgs, DrainArgs, FlowArgs, FlowsArgs, LogLevel, NoArgs, PortName, Reply,
    Request, SetArgs,
};
use control::ctl::{Client, ErrorCode};
use control::sim::smol::{BackendHost, ClientHost, Outcome, SmolHost};
use dataplane::buf::Pool;
use dataplane::port::mem::{self, FaultConfig, MemConfig, MemPort};
use dataplane::time::{Clock, MonotonicClock};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
const PORT: u16 = 5001;
/// Long enough that the streams are still running when the test ends.
const ENDLESS: u64 = 1 << 40;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hf-ctlbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(sock: &Path, metrics_port: u16) -> Config {
    Config::from_toml_str(&format!(
        r#"
[box]
name = "ctl-e2e"

[ports.client]
backend = "mem"

[ports.server]
backend = "mem"

[addresses]
vip = "{VIP}"
snat = "198.18.2.1"
client_subnet = "198.18.1.0/24"
server_subnet = "198.18.2.0/24"

[[listeners]]
name = "echo"
port = {PORT}
backends = ["{BACKEND}:{PORT}"]

[[listeners]]
name = "spare"
port = 5002
backends = ["{BACKEND}:5002"]

[control]
socket = "{}"
# Others never get access, whatever the mode says.
mode = "0666"
metrics_listen = "127.0.0.1:{metrics_port}"
"#,
        sock.display()
    ))
    .unwrap()
}

/// What the peers' thread reports: each connection's outcome and whether it ever connected.
#[derive(Debug, Default, Clone)]
struct PeerView {
    conns: Vec<(u32, Outcome, bool)>,
    echoed: u64,
    /// Echoed bytes past a first mismatch: a lost, duplicated or corrupted byte.
    bad: u64,
}

/// The box on its threads, the peers on one more, and the socket.
struct Rig {
    _dir: Scratch,
    sock: PathBuf,
    dir: PathBuf,
    metrics_port: u16,
    stop_box: Arc<AtomicBool>,
    stop_peers: Arc<AtomicBool>,
    box_thread: Option<JoinHandle<Result<(), String>>>,
    peer_thread: Option<JoinHandle<()>>,
    connect: crossbeam_channel::Sender<(u16, u32)>,
    peers: Arc<Mutex<PeerView>>,
}

impl Rig {
    fn start(tag: &str) -> Rig {
        let scratch = Scratch::new(tag);
        let dir = scratch.0.clone();
        let sock = dir.join("c.sock");
        let metrics_port = free_tcp_port();
        let cfg = config(&sock, metrics_port);
        let pool = Pool::new(1 << 13, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).unwrap();
        // A rate on every link keeps the streams (and the CPU they take) modest.
        let faults = FaultConfig { rate_bps: Some(50_000_000), ..FaultConfig::NONE };
        let (mut client_lan, _c) = mem::switch(&pool, &MemConfig::new("client-lan", 1), 2);
        let (mut server_lan, _s) = mem::switch(&pool, &MemConfig::new("server-lan", 2), 2);
        for p in client_lan.iter_mut().chain(server_lan.iter_mut()) {
            p.set_faults(faults);
        }
        let box_client = client_lan.remove(0);
        let box_server = server_lan.remove(0);
        let client_port = client_lan.remove(0);
        let backend_port = server_lan.remove(0);
        let clock = MonotonicClock::new();

        let stop_box = Arc::new(AtomicBool::new(false));
        let stop = stop_box.clone();
        let box_thread = std::thread::spawn(move || {
            run_primary(&cfg, clock, box_client, box_server, None, &stop).map_err(|e| e.to_string())
        });

        let stop_peers = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(PeerView::default()));
        let (connect, connects) = crossbeam_channel::unbounded::<(u16, u32)>();
        let (stop_p, view) = (stop_peers.clone(), peers.clone());
        let peer_thread = std::thread::spawn(move || {
            run_peers(clock, client_port, backend_port, &stop_p, &view, &connects);
        });
        let rig = Rig {
            _dir: scratch,
            sock,
            dir,
            metrics_port,
            stop_box,
            stop_peers,
            box_thread: Some(box_thread),
            peer_thread: Some(peer_thread),
            connect,
            peers,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while !rig.sock.exists() {
            assert!(Instant::now() < until, "the box never opened its control socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        rig
    }

    fn client(&self) -> Client {
        Client::connect(&self.sock, Duration::from_secs(10)).unwrap()
    }

    fn call(&self, req: Request) -> Reply {
        self.client().call(&req).unwrap()
    }

    fn ok(&self, req: Request) -> Value {
        let r = self.call(req.clone());
        assert!(r.ok, "{req:?} failed: {:?}", r.error);
        r.result.unwrap()
    }

    fn err(&self, req: Request) -> (ErrorCode, String) {
        let r = self.call(req.clone());
        assert!(!r.ok, "{req:?} should fail but answered {:?}", r.result);
        let e = r.error.unwrap();
        (e.code, e.message)
    }

    /// Waits (bounded) until `f` holds of the peers' view.
    fn wait_peers(&self, what: &str, f: impl Fn(&PeerView) -> bool) -> PeerView {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.peers.lock().unwrap().clone();
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < until, "timed out waiting for {what}: {v:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        self.stop_peers.store(true, Ordering::Release);
        self.stop_box.store(true, Ordering::Release);
        if let Some(t) = self.peer_thread.take() {
            t.join().unwrap();
        }
        if let Some(t) = self.box_thread.take() {
            t.join().unwrap().unwrap();
        }
        assert!(!self.sock.exists(), "the socket file is removed when the box stops");
    }
}

fn run_peers(
    clock: MonotonicClock,
    client_port: MemPort,
    backend_port: MemPort,
    stop: &AtomicBool,
    view: &Mutex<PeerView>,
    connects: &crossbeam_channel::Receiver<(u16, u32)>,
) {
    let now = clock.now();
    let mut backend = BackendHost::new(
        SmolHost::new(backend_port, [2, 0x48, 0x46, 9, 0, 1], BACKEND, 24, 11, now),
        PORT,
        16,
        64 * 1024,
    );
    let mut host =
        ClientHost::new(SmolHost::new(client_port, [2, 0x48, 0x46, 20, 0, 1], CLIENT_IP, 24, 12, now));
    let mut published = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) {
        let now = clock.now();
        while let Ok((local_port, id)) = connects.try_recv() {
            host.connect((VIP, PORT), local_port, id, ENDLESS, 64 * 1024, now);
        }
        let (w1, _) = host.host.poll(now);
        let w2 = host.pump(now);
        let (w3, _) = backend.host.poll(now);
        let w4 = backend.pump();
        if published.elapsed() >= Duration::from_millis(10) {
            published = std::time::Instant::now();
            let mut v = view.lock().unwrap();
            v.conns = host.conns.iter().map(|c| (c.id, c.outcome, c.connected)).collect();
            v.echoed = host.conns.iter().map(|c| c.echo.report().good).sum();
            v.bad = host.conns.iter().map(|c| c.echo.report().bad).sum();
        }
        if !(w1 || w2 || w3 || w4) {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// Checks a real result against its definition in docs/control-schema.json: required fields present, and
/// `type`, `enum` and `const` of each declared field respected.
fn conforms(def: &str, v: &Value) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let d = &schema["$defs"][def];
    assert!(d.is_object(), "no $defs/{def} in the schema");
    for k in d["required"].as_array().unwrap() {
        assert!(v.get(k.as_str().unwrap()).is_some(), "{def}: `{k}` missing from {v}");
    }
    for (k, rule) in d["properties"].as_object().unwrap() {
        let Some(x) = v.get(k) else { continue };
        if let Some(e) = rule.get("enum") {
            assert!(e.as_array().unwrap().contains(x), "{def}.{k}: {x} not in {e}");
        }
        if let Some(c) = rule.get("const") {
            assert_eq!(c, x, "{def}.{k}");
        }
        let types: Vec<&str> = match rule.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
            _ => continue,
        };
        let ok = types.iter().any(|t| match *t {
            "object" => x.is_object(),
            "array" => x.is_array(),
            "string" => x.is_string(),
            "integer" => x.is_u64() || x.is_i64(),
            "boolean" => x.is_boolean(),
            "null" => x.is_null(),
            _ => false,
        });
        assert!(ok, "{def}.{k}: {x} is not {types:?}");
    }
}

#[test]
fn a_running_box_answers_every_command_through_its_socket() {
    let rig = Rig::start("main");
    for (i, port) in [40_001u16, 40_002, 40_003].into_iter().enumerate() {
        rig.connect.send((port, i as u32)).unwrap();
    }
    rig.wait_peers("three connections streaming", |v| {
        v.conns.len() == 3 && v.conns.iter().all(|c| c.2 && c.1 == Outcome::Running) && v.echoed > 100_000
    });

    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&rig.sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "control.mode, with the bits for others cleared");
    }

    // status: a primary without a standby.
    let s = rig.ok(Request::Status(NoArgs {}));
    assert_eq!(s["role"], "alone", "{s}");
    assert_eq!(s["peer"], "none");
    assert_eq!(s["degraded"], false);
    assert_eq!(s["box"], "ctl-e2e");
    assert_eq!(s["flows"], 3);
    conforms("status_result", &s);

    // stats: counters from both cores, per listener, per backend.
    let st = rig.ok(Request::Stats(NoArgs {}));
    assert!(st["ports"]["client"]["rx_packets"].as_u64().unwrap() > 10, "{st}");
    assert!(st["ports"]["server"]["tx_bytes"].as_u64().unwrap() > 100_000, "{st}");
    let echo = &st["listeners"][0];
    assert_eq!(echo["listener"], "echo");
    assert_eq!(echo["active_flows"], 3);
    assert_eq!(echo["flows_opened"], 3);
    assert!(echo["bytes_from_clients"].as_u64().unwrap() > 100_000, "{echo}");
    assert_eq!(st["listeners"][1]["active_flows"], 0);
    assert_eq!(st["core_a"]["flows_established"], 3);
    assert_eq!(st["core_b"]["flows_connected"], 3);
    assert_eq!(st["backends"][0]["addr"], format!("{BACKEND}:{PORT}"));
    assert_eq!(st["backends"][0]["active_flows"], 3);
    assert_eq!(st["latency"]["takeover"]["count"], 0, "no takeover on a primary");
    // Bytes wait for the backend's ACK under policy backend: the sampled hold times show it.
    let hold = &st["latency"]["ack_hold"];
    assert!(hold["count"].as_u64().unwrap() > 0, "{hold}");
    assert!(hold["p50"].as_u64().unwrap() > 0 && hold["max"].as_u64() >= hold["p50"].as_u64(), "{hold}");

    // flows with filters, then one flow's full state.
    let all = rig.ok(Request::Flows(FlowsArgs::default()));
    let list = all["flows"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{all}");
    conforms("flows_result", &all);
    list.iter().for_each(|f| conforms("flow_summary", f));
    assert!(list.iter().all(|f| f["state"] == "established" && f["backend"] == format!("{BACKEND}:{PORT}")));
    let by_peer = rig.ok(Request::Flows(FlowsArgs {
        peer: Some(format!("{CLIENT_IP}:40002").try_into().unwrap()),
        ..Default::default()
    }));
    assert_eq!(by_peer["flows"].as_array().unwrap().len(), 1, "{by_peer}");
    let none = rig.ok(Request::Flows(FlowsArgs { listener: Some("spare".into()), ..Default::default() }));
    assert!(none["flows"].as_array().unwrap().is_empty());
    let limited = rig.ok(Request::Flows(FlowsArgs { limit: 2, ..Default::default() }));
    assert_eq!((limited["flows"].as_array().unwrap().len(), &limited["truncated"]), (2, &Value::Bool(true)));
    let id = by_peer["flows"][0]["id"].as_u64().unwrap();
    let f = rig.ok(Request::Flow(FlowArgs { id }));
    assert_eq!(f["client"], format!("{CLIENT_IP}:40002"));
    assert_eq!(f["client_half"]["tcp_state"], "Established");
    assert_eq!(f["server_half"]["tcp_state"], "Established", "{f}");
    assert_eq!(f["server_half"]["backend"], format!("{BACKEND}:{PORT}"));
    assert_eq!(f["server_half"]["connected"], true);
    assert!(f["server_half"]["c2s_next"].as_u64().unwrap() > 0, "{f}");
    assert!(f["relay"]["c2s_sent"].as_u64().unwrap() > 0, "{f}");
    assert_eq!(f["standby"], "not_replicated");
    conforms("flow_result", &f);
    conforms("flow_summary", &f);
    let (code, msg) = rig.err(Request::Flow(FlowArgs { id: id ^ (1 << 40) }));
    assert_eq!(code, ErrorCode::InvalidArgument, "{msg}");

    // holdfastctl against the real socket: a table by default, JSON on request.
    let ctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_holdfastctl"))
            .arg("--socket")
            .arg(&rig.sock)
            .args(args)
            .output()
            .unwrap()
    };
    let o = ctl(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.lines().any(|l| l.starts_with("role") && l.trim_end().ends_with("alone")), "{text}");
    let o = ctl(&["--json", "flows", "--listener", "echo", "--state", "established"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"]["flows"].as_array().unwrap().len(), 3);
    let o = ctl(&["set", "heartbeat-interval-ms", "50"]);
    assert_eq!(o.status.code(), Some(1), "an error reply exits 1");

    // metrics: the same numbers over the socket and over HTTP.
    let m = rig.ok(Request::Metrics(NoArgs {}));
    let text = m["text"].as_str().unwrap();
    assert!(text.contains("listener=\"echo\""), "{text}");
    let mut http = std::net::TcpStream::connect(("127.0.0.1", rig.metrics_port)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("listener=\"echo\""), "{body}");

    // Many clients at once asking for the answers that cost a core the most: each gets a reply (a result,
    // or `unavailable` when a core's request queue is full), and the streams go on.
    let before = rig.peers.lock().unwrap().echoed;
    let askers: Vec<_> = (0..8)
        .map(|i| {
            let sock = rig.sock.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&sock, Duration::from_secs(10)).unwrap();
                let mut busy = 0;
                for j in 0..20 {
                    let req = if (i + j) % 2 == 0 {
                        Request::Stats(NoArgs {})
                    } else {
                        Request::Flows(FlowsArgs::default())
                    };
                    let r = c.call(&req).unwrap();
                    match r.error {
                        None => assert!(r.ok),
                        Some(e) if e.code == ErrorCode::Unavailable => busy += 1,
                        Some(e) => panic!("{e:?}"),
                    }
                }
                busy
            })
        })
        .collect();
    let busy: usize = askers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(busy < 160, "most requests are answered");
    rig.wait_peers("the streams to go on through a flood of control requests", |v| {
        v.echoed > before + 100_000 && v.conns.iter().all(|c| c.1 == Outcome::Running)
    });

    // capture: forty frames in and out of the client port into a pcap file, written off the core.
    let pcap = rig.dir.join("client.pcap");
    let c = rig.ok(Request::Capture(CaptureArgs {
        port: PortName::Client,
        count: 40,
        file: pcap.clone(),
        snaplen: Some(96),
    }));
    assert_eq!(c["started"], true);
    conforms("capture_result", &c);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = rig.ok(Request::Status(NoArgs {}));
        let job = &s["captures"][0];
        if job["done"] == true {
            assert_eq!(job["written"], 40, "{s}");
            assert!(job["error"].is_null(), "{s}");
            break;
        }
        assert!(Instant::now() < until, "the capture never finished: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let bytes = std::fs::read(&pcap).unwrap();
    assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes());
    let mut at = 24;
    let mut frames = 0;
    let (mut from_client, mut from_box) = (0, 0);
    while at < bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let orig = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap()) as usize;
        assert!(caplen <= 96 && caplen <= orig, "caplen {caplen} orig {orig}");
        let frame = &bytes[at + 16..at + 16 + caplen];
        assert!(matches!(frame[12..14], [0x08, 0x00] | [0x08, 0x06]), "an Ethernet frame: {frame:02x?}");
        at += 16 + caplen;
        frames += 1;
        match frame[6..12] {
            [2, 0x48, 0x46, 20, 0, 1] => from_client += 1,
            [2, 0, 0, 0, 0, 1] => from_box += 1,
            _ => {}
        }
    }
    assert_eq!(frames, 40);
    assert!(from_client > 0 && from_box > 0, "both directions: {from_client} in, {from_box} out");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&pcap).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // set: a policy for new flows, a backend added and drained, all visible in stats.
    let r = rig.ok(Request::Set(SetArgs::AckPolicy { listener: "echo".into(), policy: AckPolicy::None }));
    assert_eq!(r["applied"], true);
    conforms("set_result", &r);
    let extra: SocketAddrV4 = "198.18.2.11:5001".parse().unwrap();
    rig.ok(Request::Set(SetArgs::Backend {
        action: BackendAction::Add,
        listener: "echo".into(),
        addr: extra,
        weight: Some(3),
    }));
    rig.ok(Request::Set(SetArgs::Backend {
        action: BackendAction::Drain,
        listener: "echo".into(),
        addr: extra,
        weight: None,
    }));
    let st = rig.ok(Request::Stats(NoArgs {}));
    let added =
        st["backends"].as_array().unwrap().iter().find(|b| b["addr"] == extra.to_string()).unwrap().clone();
    assert_eq!((added["weight"].as_u64(), added["state"].as_str()), (Some(3), Some("draining")), "{st}");

    // A flow opened now gets the new policy: acknowledged on receipt.
    rig.connect.send((40_004, 3)).unwrap();
    rig.wait_peers("the fourth connection", |v| v.conns.len() == 4 && v.conns[3].2);
    let fourth = rig.ok(Request::Flows(FlowsArgs {
        peer: Some(format!("{CLIENT_IP}:40004").try_into().unwrap()),
        ..Default::default()
    }));
    assert_eq!(fourth["flows"][0]["policy"], "none", "{fourth}");
    let third = rig.ok(Request::Flows(FlowsArgs {
        peer: Some(format!("{CLIENT_IP}:40003").try_into().unwrap()),
        ..Default::default()
    }));
    assert_eq!(third["flows"][0]["policy"], "backend", "open flows keep theirs");

    // drain: open flows go on, a new connection is refused.
    let d = rig.ok(Request::Drain(DrainArgs { listener: Some("echo".into()), timeout_ms: None }));
    assert_eq!((d["draining"].as_str(), d["active_flows"].as_u64()), (Some("echo"), Some(4)), "{d}");
    conforms("drain_result", &d);
    let before = rig.peers.lock().unwrap().echoed;
    rig.connect.send((40_005, 4)).unwrap();
    let v =
        rig.wait_peers("the refused connection", |v| v.conns.len() == 5 && v.conns[4].1 == Outcome::Broken);
    assert!(!v.conns[4].2, "refused before it ever connected");
    rig.wait_peers("the open flows to keep streaming", |v| {
        v.echoed > before + 50_000 && v.conns[..4].iter().all(|c| c.1 == Outcome::Running)
    });
    let s = rig.ok(Request::Status(NoArgs {}));
    assert_eq!(s["draining_listeners"], serde_json::json!(["echo"]), "{s}");
    let st = rig.ok(Request::Stats(NoArgs {}));
    assert_eq!(st["listeners"][0]["flows_refused"], 1, "{st}");
    assert_eq!(st["listener_state"][0]["refused_draining"], 1, "{st}");
    assert_eq!(st["listener_state"][0]["policy"], "none", "{st}");
    assert_eq!(st["listener_state"][0]["draining"], true, "{st}");
    // A drain that waits: the flows are endless, so it reports what is left when time is up.
    let d = rig.ok(Request::Drain(DrainArgs { listener: None, timeout_ms: Some(100) }));
    assert_eq!((d["drained"].as_bool(), d["active_flows"].as_u64()), (Some(false), Some(4)), "{d}");

    rig.stop();
}

#[test]
fn set_and_capture_refuse_what_they_cannot_do_and_say_why() {
    // Before the box starts: the box picks up the reload handle when it builds its control side.
    control::logging::init(LogLevel::Warn);
    let rig = Rig::start("refuse");

    // Replication timing is read at start: the answer says so and names the config field.
    for req in [
        SetArgs::HeartbeatIntervalMs { value: 50 },
        SetArgs::MissThreshold { value: 3 },
        SetArgs::BatchSize { value: 64 },
        SetArgs::FlushDeadlineUs { value: 100 },
    ] {
        let (code, msg) = rig.err(Request::Set(req));
        assert_eq!(code, ErrorCode::Unavailable);
        assert!(msg.contains("restart") && msg.contains("[replication]"), "{msg}");
    }
    // Out of range never reaches the box.
    let line = r#"{"id":1,"cmd":"set","args":{"param":"heartbeat_interval_ms","value":0}}"#;
    let r = rig.client().call_line(line).unwrap();
    assert_eq!(r.error.unwrap().code, ErrorCode::InvalidArgument);
    let line = r#"{"id":2,"cmd":"set","args":{"param":"backend","action":"add","listener":"echo","addr":"198.18.2.12:80","weight":1001}}"#;
    let r = rig.client().call_line(line).unwrap();
    assert!(r.error.unwrap().message.contains("args.weight"));

    let policy =
        |listener: &str, policy| Request::Set(SetArgs::AckPolicy { listener: listener.into(), policy });
    let (code, msg) = rig.err(policy("nosuch", AckPolicy::None));
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(msg.contains("echo, spare"), "names the listeners there are: {msg}");
    for p in [AckPolicy::App, AckPolicy::Replica] {
        let (code, msg) = rig.err(policy("echo", p));
        assert_eq!(code, ErrorCode::InvalidArgument, "{msg}");
    }
    rig.ok(policy("echo", AckPolicy::Backend));

    let backend = |action, addr: &str, weight| {
        Request::Set(SetArgs::Backend {
            action,
            listener: "spare".into(),
            addr: addr.parse().unwrap(),
            weight,
        })
    };
    let (code, msg) = rig.err(backend(BackendAction::Remove, "198.18.2.99:5002", None));
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(msg.contains("not in the listener's pool"), "{msg}");
    let (code, msg) = rig.err(backend(BackendAction::Add, "198.18.2.99:5002", Some(300)));
    assert!(code == ErrorCode::InvalidArgument && msg.contains("weight"), "the pool's own limit: {msg}");
    // Remove keeps the slot with weight 0; add brings it back.
    rig.ok(backend(BackendAction::Remove, "198.18.2.10:5002", None));
    let st = rig.ok(Request::Stats(NoArgs {}));
    let b =
        st["backends"].as_array().unwrap().iter().find(|b| b["addr"] == "198.18.2.10:5002").unwrap().clone();
    assert_eq!((b["weight"].as_u64(), b["state"].as_str()), (Some(0), Some("draining")), "{b}");
    rig.ok(backend(BackendAction::Add, "198.18.2.10:5002", None));
    let st = rig.ok(Request::Stats(NoArgs {}));
    let b =
        st["backends"].as_array().unwrap().iter().find(|b| b["addr"] == "198.18.2.10:5002").unwrap().clone();
    // Back in the pool (its health check, which nothing answers on 5002, decides up or down).
    assert_eq!(b["weight"].as_u64(), Some(1), "{b}");
    assert_ne!(b["state"], "draining", "{b}");

    let r = rig.ok(Request::Set(SetArgs::LogLevel { level: LogLevel::Debug }));
    assert_eq!(r["level"], "debug");

    let (code, msg) = rig.err(Request::Switchover(Default::default()));
    assert!(code == ErrorCode::Unavailable && msg.contains("only a primary replicating"), "{msg}");

    // Capture limits: the protocol's ranges, then what only the box can check.
    let cap =
        |port, count, file: PathBuf, snaplen| Request::Capture(CaptureArgs { port, count, file, snaplen });
    for line in [
        r#"{"id":1,"cmd":"capture","args":{"port":"client","count":0,"file":"/tmp/x.pcap"}}"#,
        r#"{"id":2,"cmd":"capture","args":{"port":"client","count":1000001,"file":"/tmp/x.pcap"}}"#,
        r#"{"id":3,"cmd":"capture","args":{"port":"client","count":1,"file":"/tmp/x.pcap","snaplen":10}}"#,
        r#"{"id":4,"cmd":"capture","args":{"port":"client","count":1,"file":"x.pcap"}}"#,
        r#"{"id":5,"cmd":"capture","args":{"port":"wan","count":1,"file":"/tmp/x.pcap"}}"#,
    ] {
        let r = rig.client().call_line(line).unwrap();
        assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::InvalidArgument), "{line}");
    }
    let existing = rig.dir.join("exists.pcap");
    std::fs::write(&existing, b"keep me").unwrap();
    let (code, msg) = rig.err(cap(PortName::Client, 1, existing.clone(), None));
    assert!(code == ErrorCode::InvalidArgument && msg.contains("never overwrites"), "{msg}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    let (code, msg) = rig.err(cap(PortName::Client, 1, rig.dir.join("no/such/dir.pcap"), None));
    assert!(code == ErrorCode::InvalidArgument && msg.contains("directory"), "{msg}");
    let (code, msg) = rig.err(cap(PortName::Replication, 1, rig.dir.join("r.pcap"), None));
    assert!(code == ErrorCode::Unavailable && msg.contains("replication"), "{msg}");
    // One capture per port at a time; the server port is quiet, so this one stays running.
    rig.ok(cap(PortName::Server, 1_000_000, rig.dir.join("s1.pcap"), None));
    let (code, msg) = rig.err(cap(PortName::Server, 1, rig.dir.join("s2.pcap"), None));
    assert!(code == ErrorCode::Unavailable && msg.contains("already running"), "{msg}");
    assert!(!rig.dir.join("s2.pcap").exists(), "a refused capture leaves no file");

    rig.stop();
}

fn pair_config(role: &str, sock: &Path) -> Config {
    Config::from_toml_str(&format!(
        r#"
[box]
name = "ctl-{role}"
role = "{role}"

[ports.client]
backend = "mem"

[ports.server]
backend = "mem"

[ports.replication]
backend = "mem"

[addresses]
vip = "{VIP}"
snat = "198.18.2.1"
client_subnet = "198.18.1.0/24"
server_subnet = "198.18.2.0/24"
virtual_mac = "02:48:46:00:00:01"

[[listeners]]
name = "echo"
port = {PORT}
backends = ["{BACKEND}:{PORT}"]

# Generous timing: the threads of this test share two busy cores, and a late heartbeat must not look
# like a dead primary.
[replication]
heartbeat_interval_us = 20000
miss_threshold = 10

[control]
socket = "{}"
"#,
        sock.display()
    ))
    .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> Option<Value>) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_standby_answers_while_it_watches_and_serves_everything_once_it_took_over() {
    let scratch = Scratch::new("pair");
    let (psock, ssock) = (scratch.0.join("p.sock"), scratch.0.join("s.sock"));
    let pool = Pool::new(1 << 14, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).unwrap();
    let faults = FaultConfig { rate_bps: Some(50_000_000), ..FaultConfig::NONE };
    // Port 0 of each switch is the primary's, port 1 the standby's, port 2 the peer's.
    let (mut client_lan, client_ctl) = mem::switch(&pool, &MemConfig::new("client-lan", 3), 3);
    let (mut server_lan, server_ctl) = mem::switch(&pool, &MemConfig::new("server-lan", 4), 3);
    for p in client_lan.iter_mut().chain(server_lan.iter_mut()) {
        p.set_faults(faults);
    }
    let (mut p_client, mut s_client) = (client_lan.remove(0), client_lan.remove(0));
    let (mut p_server, mut s_server) = (server_lan.remove(0), server_lan.remove(0));
    // Each box probes and announces from its own client-port MAC (the VIP's is the shared virtual one);
    // the server side shares one MAC, as the simulator's boxes do, so the backend needs no new ARP entry.
    p_client.set_mac(Some([2, 0x48, 0x46, 1, 0, 1]));
    s_client.set_mac(Some([2, 0x48, 0x46, 2, 0, 1]));
    p_server.set_mac(Some([2, 0x48, 0x46, 0, 0, 2]));
    s_server.set_mac(Some([2, 0x48, 0x46, 0, 0, 2]));
    let (repl_p, repl_s, repl_ctl) = mem::link(&pool, &MemConfig::new("replication", 5));
    let clock = MonotonicClock::new();

    let pcfg = pair_config("primary", &psock);
    let link = replication::frame::LinkAddrs { src: [2, 0x48, 0x46, 1, 0, 3], dst: [0xff; 6] };
    let ch = replication::channel::ChannelConfig {
        box_id: 1,
        link,
        heartbeat_interval: dataplane::time::Duration::from_millis(20),
        ..Default::default()
    };
    let replicator = replication::node::PrimaryLink::new(ch, 1, repl_p, clock.now()).unwrap();
    let stop_primary = Arc::new(AtomicBool::new(false));
    let stop = stop_primary.clone();
    let primary = std::thread::spawn(move || {
        run_primary(&pcfg, clock, p_client, p_server, Some(Box::new(replicator)), &stop)
            .map_err(|e| e.to_string())
    });
    let scfg = pair_config("standby", &ssock);
    let stop_standby = Arc::new(AtomicBool::new(false));
    let stop = stop_standby.clone();
    let standby = std::thread::spawn(move || {
        let r = control::boxrun::run_standby_on(&scfg, clock, s_client, s_server, repl_s, &stop);
        if let Err(e) = &r {
            eprintln!("the standby stopped: {e}");
        }
        r.map_err(|e| e.to_string())
    });

    let stop_peers = Arc::new(AtomicBool::new(false));
    let view = Arc::new(Mutex::new(PeerView::default()));
    let (connect, connects) = crossbeam_channel::unbounded::<(u16, u32)>();
    let (stop_p, v) = (stop_peers.clone(), view.clone());
    let (client_port, backend_port) = (client_lan.remove(0), server_lan.remove(0));
    let peers =
        std::thread::spawn(move || run_peers(clock, client_port, backend_port, &stop_p, &v, &connects));

    let call = |sock: &Path, req: Request| -> Reply {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match Client::connect(sock, Duration::from_secs(10)) {
                Ok(mut c) => return c.call(&req).unwrap(),
                Err(e) => assert!(Instant::now() < until, "{}: {e}", sock.display()),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let status = |sock: &Path| call(sock, Request::Status(NoArgs {})).result.unwrap();

    // The standby hears the primary before any client connects: every flow is then protected.
    wait_for("the standby to hear the primary", || {
        let s = status(&ssock);
        (s["peer"] == "up").then_some(s)
    });
    wait_for("the primary to see its standby", || {
        let s = status(&psock);
        (s["peer"] == "up").then_some(s)
    });
    for (i, port) in [41_001u16, 41_002, 41_003].into_iter().enumerate() {
        connect.send((port, i as u32)).unwrap();
    }
    let until = Instant::now() + Duration::from_secs(30);
    while !{
        let v = view.lock().unwrap();
        v.conns.len() == 3 && v.conns.iter().all(|c| c.2) && v.echoed > 50_000
    } {
        assert!(Instant::now() < until, "streams never started: {:?}", view.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }

    // Each flow's record went to the standby and came back confirmed before its SYN-ACK.
    let st = call(&psock, Request::Stats(NoArgs {})).result.unwrap();
    let rtt = &st["latency"]["replication_rtt"];
    assert_eq!(rtt["count"], 3, "{rtt}");
    assert!(rtt["min"].as_u64().unwrap() > 0, "{rtt}");
    let p = status(&psock);
    assert_eq!(
        (p["role"].as_str(), p["peer"].as_str(), p["degraded"].as_bool()),
        (Some("primary"), Some("up"), Some(false)),
        "{p}"
    );
    conforms("status_result", &p);
    let s = wait_for("the standby to store the three flows", || {
        let s = status(&ssock);
        (s["stored_flows"] == 3).then_some(s)
    });
    assert_eq!(
        (s["role"].as_str(), s["peer"].as_str(), s["epoch"].as_u64()),
        (Some("standby"), Some("up"), Some(1)),
        "{s}"
    );
    conforms("status_result", &s);
    // While watching: stats answer (nothing runs yet), flows say why they cannot.
    let st = call(&ssock, Request::Stats(NoArgs {}));
    assert!(st.ok, "{:?}", st.error);
    assert_eq!(st.result.unwrap()["latency"]["takeover"]["count"], 0);
    let f = call(&ssock, Request::Flows(FlowsArgs::default()));
    let e = f.error.unwrap();
    assert!(e.code == ErrorCode::Unavailable && e.message.contains("standby"), "{e:?}");

    // The primary dies: its cores stop and its ports go dark.
    stop_primary.store(true, Ordering::Release);
    primary.join().unwrap().unwrap();
    client_ctl.set_up(0, false);
    server_ctl.set_up(0, false);
    repl_ctl.set_up(0, false);

    let s = wait_for("the standby to take over", || {
        let s = status(&ssock);
        (s["role"] == "active").then_some(s)
    });
    conforms("status_result", &s);
    assert_eq!(
        (s["peer"].as_str(), s["epoch"].as_u64(), s["degraded"].as_bool()),
        (Some("down"), Some(2), Some(true)),
        "{s}"
    );
    assert_eq!(
        (s["takeover"]["flows"].as_u64(), s["takeover"]["failed_flows"].as_u64()),
        (Some(3), Some(0)),
        "{s}"
    );
    // Its cores answer now, through the same socket.
    let st = call(&ssock, Request::Stats(NoArgs {})).result.unwrap();
    assert_eq!(st["latency"]["takeover"]["count"], 1, "{st}");
    assert!(st["core_a"]["flows_opened"].as_u64().unwrap() >= 3, "{st}");
    assert_eq!(st["listeners"][0]["flows_opened"], 3, "installed flows count as opened: {st}");
    let f = call(&ssock, Request::Flows(FlowsArgs::default()));
    assert!(f.ok, "{:?}", f.error);
    conforms("flows_result", f.result.as_ref().unwrap());

    stop_peers.store(true, Ordering::Release);
    stop_standby.store(true, Ordering::Release);
    peers.join().unwrap();
    standby.join().unwrap().unwrap();
    assert!(!ssock.exists() && !psock.exists(), "both sockets removed when the boxes stop");
}

/// Waits until the streams have echoed `more` bytes beyond `from`, none bad and none broken.
fn streams_advance(view: &Mutex<PeerView>, from: u64, more: u64, what: &str) -> u64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let v = view.lock().unwrap().clone();
        assert_eq!(v.bad, 0, "{what}: a byte lost, duplicated or corrupted: {v:?}");
        assert!(v.conns.iter().all(|c| c.1 == Outcome::Running), "{what}: a stream ended: {v:?}");
        if v.echoed >= from + more {
            return v.echoed;
        }
        assert!(Instant::now() < until, "{what}: the streams stalled: {v:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_planned_switchover_and_a_rejoin_keep_every_stream() {
    let scratch = Scratch::new("swo");
    let (psock, ssock, rsock) =
        (scratch.0.join("p.sock"), scratch.0.join("s.sock"), scratch.0.join("r.sock"));
    let (pepoch, sepoch) = (scratch.0.join("p.epoch"), scratch.0.join("s.epoch"));
    let pool = Pool::new(1 << 14, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).unwrap();
    let faults = FaultConfig { rate_bps: Some(50_000_000), ..FaultConfig::NONE };
    // Port 0 of each switch is the primary's, port 1 the standby's, port 2 the peer's, port 3 the old
    // primary's once it comes back as the standby.
    let (mut client_lan, client_ctl) = mem::switch(&pool, &MemConfig::new("client-lan", 3), 4);
    let (mut server_lan, server_ctl) = mem::switch(&pool, &MemConfig::new("server-lan", 4), 4);
    for p in client_lan.iter_mut().chain(server_lan.iter_mut()) {
        p.set_faults(faults);
    }
    let (mut p_client, mut s_client) = (client_lan.remove(0), client_lan.remove(0));
    let (mut p_server, mut s_server) = (server_lan.remove(0), server_lan.remove(0));
    let (client_port, backend_port) = (client_lan.remove(0), server_lan.remove(0));
    let (mut r_client, mut r_server) = (client_lan.remove(0), server_lan.remove(0));
    p_client.set_mac(Some([2, 0x48, 0x46, 1, 0, 1]));
    s_client.set_mac(Some([2, 0x48, 0x46, 2, 0, 1]));
    r_client.set_mac(Some([2, 0x48, 0x46, 3, 0, 1]));
    for p in [&mut p_server, &mut s_server, &mut r_server] {
        p.set_mac(Some([2, 0x48, 0x46, 0, 0, 2]));
    }
    let (mut repl, repl_ctl) = mem::switch(&pool, &MemConfig::new("replication", 5), 3);
    let (repl_p, repl_s, repl_r) = (repl.remove(0), repl.remove(0), repl.remove(0));
    let clock = MonotonicClock::new();

    let mut pcfg = pair_config("primary", &psock);
    pcfg.box_.epoch_file = Some(pepoch.clone());
    let link = replication::frame::LinkAddrs { src: [2, 0x48, 0x46, 1, 0, 3], dst: [0xff; 6] };
    let ch = replication::channel::ChannelConfig {
        box_id: 1,
        link,
        heartbeat_interval: dataplane::time::Duration::from_millis(20),
        ..Default::default()
    };
    let replicator = replication::node::PrimaryLink::new(ch, 1, repl_p, clock.now()).unwrap();
    let handover = control::switchover::Handover {
        flag: replicator.hand_over_flag(),
        superseded: replicator.superseded(),
        epoch: replicator.epoch(),
    };
    let watchdog = control::watch::Watchdog::new(Some(replicator.superseded()), Duration::ZERO);
    let stop_primary = Arc::new(AtomicBool::new(false));
    let stop = stop_primary.clone();
    let primary = std::thread::spawn(move || {
        let r = control::boxrun::run_primary_watched(
            &pcfg,
            clock,
            p_client,
            p_server,
            Some(Box::new(replicator)),
            Some(handover),
            watchdog,
            &stop,
        );
        r.map_err(|e| e.to_string())
    });
    let start_standby =
        |name: &'static str, sock: &Path, epoch: &Path, ports: (MemPort, MemPort, MemPort)| {
            let mut cfg = pair_config("standby", sock);
            cfg.box_.epoch_file = Some(epoch.to_path_buf());
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            let t = std::thread::spawn(move || {
                let r = control::boxrun::run_standby_on(&cfg, clock, ports.0, ports.1, ports.2, &s);
                if let Err(e) = &r {
                    eprintln!("{name} stopped: {e}");
                }
                r.map_err(|e| e.to_string())
            });
            (stop, t)
        };
    let (stop_standby, standby) = start_standby("the standby", &ssock, &sepoch, (s_client, s_server, repl_s));

    let stop_peers = Arc::new(AtomicBool::new(false));
    let view = Arc::new(Mutex::new(PeerView::default()));
    let (connect, connects) = crossbeam_channel::unbounded::<(u16, u32)>();
    let (stop_p, v) = (stop_peers.clone(), view.clone());
    let peers =
        std::thread::spawn(move || run_peers(clock, client_port, backend_port, &stop_p, &v, &connects));

    let call = |sock: &Path, req: Request| -> Reply {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match Client::connect(sock, Duration::from_secs(20)) {
                Ok(mut c) => return c.call(&req).unwrap(),
                Err(e) => assert!(Instant::now() < until, "{}: {e}", sock.display()),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let status = |sock: &Path| call(sock, Request::Status(NoArgs {})).result.unwrap();

    wait_for("the standby to hear the primary", || {
        let s = status(&ssock);
        (s["peer"] == "up").then_some(s)
    });
    wait_for("the primary to see its standby", || {
        let s = status(&psock);
        (s["peer"] == "up").then_some(s)
    });
    for (i, port) in [42_001u16, 42_002, 42_003].into_iter().enumerate() {
        connect.send((port, i as u32)).unwrap();
    }
    let until = Instant::now() + Duration::from_secs(30);
    while !{
        let v = view.lock().unwrap();
        v.conns.len() == 3 && v.conns.iter().all(|c| c.2)
    } {
        assert!(Instant::now() < until, "streams never started: {:?}", view.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let echoed = streams_advance(&view, 0, 50_000, "before the switchover");
    wait_for("the standby to store the three flows", || {
        let s = status(&ssock);
        (s["stored_flows"] == 3).then_some(s)
    });

    // The planned switchover, through the primary's socket, while the streams run.
    let r = call(
        &psock,
        Request::Switchover(control::ctl::protocol::SwitchoverArgs { timeout_ms: Some(10_000) }),
    );
    assert!(r.ok, "{:?}", r.error);
    let r = r.result.unwrap();
    assert_eq!((r["switched_over"].as_bool(), r["epoch"].as_u64()), (Some(true), Some(2)), "{r}");
    // The old primary's run ends on its own, and well.
    primary.join().unwrap().unwrap();
    assert!(!psock.exists(), "the old primary's socket is gone");
    // Off for its upgrade: its ports go dark.
    client_ctl.set_up(0, false);
    server_ctl.set_up(0, false);
    repl_ctl.set_up(0, false);
    let s = status(&ssock);
    assert_eq!((s["role"].as_str(), s["epoch"].as_u64()), (Some("active"), Some(2)), "{s}");
    assert_eq!(
        (s["takeover"]["flows"].as_u64(), s["takeover"]["failed_flows"].as_u64()),
        (Some(3), Some(0)),
        "{s}"
    );
    assert_eq!(std::fs::read_to_string(&sepoch).unwrap().trim(), "2", "the new epoch is on disk");
    let echoed = streams_advance(&view, echoed, 200_000, "after the switchover");

    // The old box comes back as the standby: it never wrote an epoch (it stayed in 1), hears the new
    // primary in epoch 2, follows it, and receives every flow in the bulk copy.
    assert!(!pepoch.exists());
    let (stop_rejoined, rejoined) =
        start_standby("the rejoined box", &rsock, &pepoch, (r_client, r_server, repl_r));
    let r = wait_for("the rejoined box to receive the three flows", || {
        let s = status(&rsock);
        // (The switch queued the old primary's epoch-1 frames for this port while it was unplugged: it
        // may store those first, then drops them when it follows epoch 2.)
        (s["stored_flows"] == 3 && s["peer"] == "up" && s["epoch"] == 2).then_some(s)
    });
    assert_eq!(std::fs::read_to_string(&pepoch).unwrap().trim(), "2");
    assert_eq!((r["role"].as_str(), r["epoch"].as_u64()), (Some("standby"), Some(2)), "{r}");
    let echoed = streams_advance(&view, echoed, 100_000, "with the rejoined standby");

    // Now the new primary dies: the rejoined box takes over from its copy.
    stop_standby.store(true, Ordering::Release);
    standby.join().unwrap().unwrap();
    client_ctl.set_up(1, false);
    server_ctl.set_up(1, false);
    repl_ctl.set_up(1, false);
    let r = wait_for("the rejoined box to take over", || {
        let s = status(&rsock);
        (s["role"] == "active").then_some(s)
    });
    assert_eq!(r["epoch"].as_u64(), Some(3), "{r}");
    assert_eq!(
        (r["takeover"]["flows"].as_u64(), r["takeover"]["failed_flows"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    assert_eq!(std::fs::read_to_string(&pepoch).unwrap().trim(), "3");
    streams_advance(&view, echoed, 200_000, "after the second takeover");

    stop_peers.store(true, Ordering::Release);
    stop_rejoined.store(true, Ordering::Release);
    peers.join().unwrap();
    rejoined.join().unwrap().unwrap();
}
