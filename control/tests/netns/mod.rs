//! What the namespace tests share: the skip rules (root, the peers' packages), a unique namespace prefix
//! per test and process, and [`Bed`], a scenario script whose namespaces and processes are removed when it
//! is dropped, even when the test fails.

#![allow(dead_code)]

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A namespace prefix unique to this test and this process: another copy of the suite (another worktree,
/// a CI run of the merged tree) may run on the same machine at the same time.
pub fn prefix(n: u32) -> String {
    format!("hfl{n}p{}", std::process::id())
}

pub const TOOLS: &[&str] = &["ip", "ethtool", "nft", "nginx", "curl", "iperf3", "/usr/bin/python3"];

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn missing_tools() -> Vec<&'static str> {
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
pub fn skip_reason() -> Option<String> {
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

pub fn namespaces(prefix: &str) -> Vec<String> {
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
pub struct Bed {
    prefix: String,
    child: Option<Child>,
}

impl Bed {
    pub fn run(prefix: &str, script: &str, args: &[&str]) -> Bed {
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
    pub fn finish(&mut self, limit: Duration) -> (Value, Option<i32>, String) {
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

pub fn num(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_i64().unwrap_or_else(|| panic!("{path:?} missing or not a number in {v}"))
}
