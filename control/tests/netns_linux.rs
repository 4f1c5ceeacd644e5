//! Real Linux TCP peers through a real `holdfast run` primary on AF_PACKET ports, in network namespaces:
//! the checksummed stream tool (several connections, several MB each way, every byte verified), curl
//! against nginx, iperf3 both ways, under policies `none` and `backend`, on clean links and with random
//! loss in the switch. The scenarios are scripts (scripts/linux-peers.sh, scripts/failover.sh) so they can
//! be run by hand too; these tests run them against the binary cargo built and hold them to the invariants.
//!
//! Root only: without root, or without the peers' packages, each test prints SKIP and passes. The tests
//! run one at a time (2 cores, and each brings up its own namespaces under its own `hfl*` prefix); a guard
//! removes the namespaces and every process in them even when a test fails or the script hangs.

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A namespace prefix unique to this test and this process: another copy of the suite (another worktree,
/// a CI run of the merged tree) may run on the same machine at the same time.
fn prefix(n: u32) -> String {
    format!("hfl{n}p{}", std::process::id())
}

const TOOLS: &[&str] = &["ip", "ethtool", "nft", "nginx", "curl", "iperf3", "/usr/bin/python3"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn missing_tools() -> Vec<&'static str> {
    TOOLS
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .collect()
}

/// Why this machine cannot run the namespace tests, if it cannot.
fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces, AF_PACKET)".into());
    }
    let missing = missing_tools();
    if !missing.is_empty() {
        return Some(format!(
            "missing {missing:?} (apt-get install --no-install-recommends iperf3 nginx curl socat python3 ethtool \
             nftables iproute2)"
        ));
    }
    None
}

fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

/// A scenario script running under a namespace prefix; dropping it ends the script, every process left in
/// its namespaces, and the namespaces.
struct Bed {
    prefix: String,
    child: Option<Child>,
}

impl Bed {
    fn run(prefix: &str, script: &str, args: &[&str]) -> Bed {
        let child = Command::new("bash")
            .arg(repo().join("scripts").join(script))
            .args(["--prefix", prefix])
            .args(args)
            .env("HOLDFAST_BIN", env!("CARGO_BIN_EXE_holdfast"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the scenario script");
        Bed { prefix: prefix.to_owned(), child: Some(child) }
    }

    /// Waits for the script (at most `limit`) and returns its JSON report, its exit code and its stderr.
    fn finish(&mut self, limit: Duration) -> (Value, Option<i32>, String) {
        let mut child = self.child.take().expect("running");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // Read both pipes while waiting, so a chatty script never blocks on a full pipe.
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if start.elapsed() > limit {
                // TERM lets the script's trap clean up; the guard below catches what it leaves.
                let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        let json =
            out.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).unwrap_or_else(|| {
                panic!("no JSON report (timed out: {}); stderr:\n{err}", status.is_none())
            });
        (json, status.and_then(|s| s.code()), err)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
        for ns in namespaces(&self.prefix) {
            let pids = Command::new("ip")
                .args(["netns", "pids", &ns])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            for pid in String::from_utf8_lossy(&pids).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("bash")
            .arg(repo().join("scripts/netns.sh"))
            .arg("down")
            .env("HF_PREFIX", &self.prefix)
            .stdout(Stdio::null())
            .status();
    }
}

fn num(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_i64().unwrap_or_else(|| panic!("{path:?} missing or not a number in {v}"))
}

fn peers(prefix: &str, policy: &str, loss_permille: u32, extra: &[&str]) {
    let Some(_serial) = (match skip_reason() {
        Some(why) => {
            eprintln!("SKIP netns {policy}/loss {loss_permille}‰: {why}");
            None
        }
        None => Some(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())),
    }) else {
        return;
    };
    let conns = 4u32;
    let bytes = 3_000_000u32;
    let loss = loss_permille.to_string();
    let mut args = vec![
        "--policy",
        policy,
        "--loss",
        &loss,
        "--conns",
        "4",
        "--bytes",
        "3000000",
        "--iperf-seconds",
        "2",
    ];
    args.extend_from_slice(extra);
    let mut bed = Bed::run(prefix, "linux-peers.sh", &args);
    let (r, code, err) = bed.finish(Duration::from_secs(110));
    drop(bed);
    assert!(namespaces(prefix).is_empty(), "namespaces left behind: {:?}", namespaces(prefix));
    eprintln!("{r}");
    let ctx = format!("report: {r}\nstderr:\n{err}");

    // Every stream byte arrived exactly once, each way, and every byte the clients saw acknowledged was
    // delivered.
    let total = i64::from(conns) * (i64::from(bytes) + 16);
    assert_eq!(num(&r, &["stream", "bytes_sent"]), total, "{ctx}");
    assert_eq!(num(&r, &["stream", "bytes_acked"]), total, "{ctx}");
    assert_eq!(num(&r, &["stream", "bytes_delivered"]), total, "{ctx}");
    assert_eq!(num(&r, &["stream", "bytes_echoed"]), total, "{ctx}");
    assert_eq!(num(&r, &["bytes_lost"]), 0, "{ctx}");
    assert_eq!(num(&r, &["bytes_duplicated"]), 0, "{ctx}");
    assert_eq!(num(&r, &["connections_reset"]), 0, "{ctx}");
    assert_eq!(num(&r, &["stream", "connections_failed"]), 0, "{ctx}");
    // No RST on a stream or HTTP connection, on either side of the box.
    assert_eq!(num(&r, &["rst_frames", "stream"]), 0, "{ctx}");
    assert_eq!(num(&r, &["rst_frames", "http"]), 0, "{ctx}");
    // curl: three downloads compared with the files, an upload, ten short connections.
    assert_eq!(num(&r, &["curl", "ok"]), 14, "{ctx}");
    assert_eq!(num(&r, &["curl", "failed"]), 0, "{ctx}");
    for dir in ["forward", "reverse"] {
        assert!(r["iperf3"][dir]["error"].is_null(), "iperf3 {dir}: {ctx}");
        assert!(num(&r, &["iperf3", dir, "bytes"]) > 0, "iperf3 {dir}: {ctx}");
    }
    if loss_permille > 0 {
        assert!(num(&r, &["frames_dropped_by_switch"]) > 0, "the loss rule dropped nothing: {ctx}");
    }
    assert_eq!(r["primary_alive"], Value::Bool(true), "{ctx}");
    assert_eq!(r["ok"], Value::Bool(true), "{ctx}");
    assert_eq!(code, Some(0), "{ctx}");
}

#[test]
fn netns_policy_none_clean_links() {
    peers(&prefix(1), "none", 0, &[]);
}

#[test]
fn netns_policy_backend_clean_links() {
    peers(&prefix(2), "backend", 0, &[]);
}

#[test]
fn netns_policy_none_lossy_switch() {
    peers(&prefix(3), "none", 20, &[]);
}

#[test]
fn netns_policy_backend_lossy_switch() {
    peers(&prefix(4), "backend", 20, &[]);
}

/// The box's links have a smaller MTU (1400) than the peers' (1500): the MSS it advertises must fit its ports.
#[test]
fn netns_box_mtu_below_the_peers() {
    peers(&prefix(7), "backend", 0, &["--box-mtu", "1400"]);
}

/// Peers and switch with transmit checksum offload on (a veth's default): the box's ports receive frames
/// whose checksums the kernel left partial, and must complete them rather than drop them.
#[test]
fn netns_peers_with_checksum_offload() {
    peers(&prefix(6), "backend", 0, &["--tx-csum-offload"]);
}

/// The failover script's CLI and JSON: with no standby available it must say so and measure the primary
/// alone; with the fault forced on a lone primary (policy none) it must report the damage, not hide it.
#[test]
fn netns_failover_script_reports_honestly() {
    let Some(_serial) = (match skip_reason() {
        Some(why) => {
            eprintln!("SKIP netns failover script: {why}");
            None
        }
        None => Some(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())),
    }) else {
        return;
    };
    let fields = [
        "verdict",
        "bytes_sent",
        "bytes_acked",
        "bytes_delivered",
        "bytes_lost",
        "bytes_duplicated",
        "connections_reset",
        "stall_ms",
        "takeover_ms",
        "failover",
    ];

    let p = prefix(5);
    let mut bed = Bed::run(&p, "failover.sh", &["--fault", "kill", "--policy", "backend", "--mb", "4"]);
    let (r, code, err) = bed.finish(Duration::from_secs(60));
    drop(bed);
    let ctx = format!("report: {r}\nstderr:\n{err}");
    for f in fields {
        assert!(r.get(f).is_some(), "field {f} missing: {ctx}");
    }
    let failover = r["failover"].as_str().unwrap_or_default();
    if failover.starts_with("unavailable") {
        assert!(failover.contains("no standby yet"), "{ctx}");
        assert_eq!(r["fault_injected"], Value::Bool(false), "{ctx}");
        assert!(r["takeover_ms"].is_null(), "{ctx}");
    }
    assert_eq!(r["verdict"], "pass", "{ctx}");
    assert_eq!(code, Some(0), "{ctx}");
    assert_eq!(num(&r, &["bytes_delivered"]), 4_000_000 + 4 * 16, "{ctx}");
    assert_eq!(num(&r, &["bytes_lost"]), 0, "{ctx}");
    assert_eq!(num(&r, &["bytes_duplicated"]), 0, "{ctx}");
    assert_eq!(num(&r, &["connections_reset"]), 0, "{ctx}");

    // A lone primary killed mid-transfer: the transfer cannot finish, and the report must say so.
    let mut bed = Bed::run(
        &p,
        "failover.sh",
        &["--fault", "kill", "--policy", "none", "--mb", "400", "--conns", "2", "--fault-without-standby"],
    );
    let (r, code, err) = bed.finish(Duration::from_secs(60));
    drop(bed);
    let ctx = format!("report: {r}\nstderr:\n{err}");
    assert_eq!(r["verdict"], "fail", "{ctx}");
    assert_eq!(code, Some(1), "{ctx}");
    assert_eq!(r["fault_injected"], Value::Bool(true), "{ctx}");
    assert!(num(&r, &["connections_failed"]) > 0, "{ctx}");
    assert!(num(&r, &["bytes_delivered"]) < 400_000_000, "{ctx}");
    assert!(r["takeover_ms"].is_null(), "nothing took over, yet: {ctx}");
    assert!(num(&r, &["stall_ms"]) >= 1000, "{ctx}");
    assert!(namespaces(&p).is_empty(), "namespaces left behind: {:?}", namespaces(&p));
}

/// The Linux stream tool and the simulator's stream generator make the same bytes (no root needed).
#[test]
fn stream_tool_matches_the_simulator_generator() {
    if !Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIP stream tool generator check: /usr/bin/python3 missing");
        return;
    }
    for (id, len) in [(7u32, 100u64), (1000, 70_001), (u32::MAX, 5)] {
        let out = Command::new("/usr/bin/python3")
            .arg(repo().join("scripts/hfstream.py"))
            .args(["dump", "--id", &id.to_string(), "--bytes", &len.to_string()])
            .output()
            .expect("run hfstream.py");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut w = control::sim::stream::StreamWriter::new(id, len);
        let mut want = vec![0u8; usize::try_from(w.total()).expect("small")];
        let n = w.fill(&mut want);
        assert_eq!(n, want.len());
        let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex, "stream {id}, {len} bytes");
    }
}
