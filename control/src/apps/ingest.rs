//! `ingest`: the example application for the `app` ack policy.
//!
//! Clients send newline-terminated records; the application appends every complete record to a file and
//! commits a flow's bytes only after the `fsync` that made them durable. So the ACK a client receives means
//! "your records are on disk", and a client that dies or loses its proxy simply resends what was not ACKed.
//!
//! The protocol core never blocks on the disk: a writer thread does the appends and the group `fsync`s and
//! reports commits back through a channel. A record is written whole or not at all, so records from many
//! flows never interleave inside a line. A record longer than `max_record` aborts its flow (counted), since
//! it could never be committed.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use dataplane::app::{Accepted, AppEvent, AppFlowId, Application};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters shared with the control plane.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub aborted_long_record: AtomicU64,
    pub write_errors: AtomicU64,
}

struct Append {
    flow: AppFlowId,
    /// Stream offset just past the last record in `bytes`.
    up_to: u64,
    bytes: Vec<u8>,
}

struct Done {
    flow: AppFlowId,
    up_to: u64,
}

#[derive(Default)]
struct FlowState {
    /// Stream offset of the first byte of `partial`.
    partial_start: u64,
    /// The incomplete record at the end of what was accepted.
    partial: Vec<u8>,
}

/// The ingest application; create one per protocol core.
pub struct IngestApp {
    flows: HashMap<AppFlowId, FlowState>,
    jobs: Sender<Append>,
    done: Receiver<Result<Done, AppFlowId>>,
    max_record: usize,
    stats: Arc<IngestStats>,
    pending_aborts: Vec<AppFlowId>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for IngestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestApp").field("flows", &self.flows.len()).finish()
    }
}

/// Errors opening the ingest file.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot open ingest file {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot start the ingest writer thread: {0}")]
    Thread(std::io::Error),
}

impl IngestApp {
    /// Opens (creating or appending to) `path` and starts the writer thread.
    pub fn open(path: &Path, max_record: usize) -> Result<Self, IngestError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| IngestError::Open { path: path.to_path_buf(), source })?;
        let (jobs, job_rx) = bounded::<Append>(1024);
        let (done_tx, done) = bounded(4096);
        let stats = Arc::new(IngestStats::default());
        let wstats = stats.clone();
        let writer = std::thread::Builder::new()
            .name("ingest-writer".into())
            .spawn(move || writer_loop(file, job_rx, done_tx, wstats))
            .map_err(IngestError::Thread)?;
        Ok(IngestApp {
            flows: HashMap::new(),
            jobs,
            done,
            max_record,
            stats,
            pending_aborts: Vec::new(),
            writer: Some(writer),
        })
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }
}

impl Drop for IngestApp {
    fn drop(&mut self) {
        // Closing the job channel ends the writer after it has written and synced what it has.
        let (dead, _) = bounded(0);
        self.jobs = dead;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Appends jobs, syncing once per batch of whatever is queued (group commit), then reports commits.
fn writer_loop(
    mut file: File,
    jobs: Receiver<Append>,
    done: Sender<Result<Done, AppFlowId>>,
    stats: Arc<IngestStats>,
) {
    let mut batch: Vec<Append> = Vec::new();
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < 256 {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut failed = false;
        for job in &batch {
            if file.write_all(&job.bytes).is_err() {
                failed = true;
                break;
            }
            stats.bytes.fetch_add(job.bytes.len() as u64, Ordering::Relaxed);
            let records = job.bytes.iter().filter(|&&b| b == b'\n').count();
            stats.records.fetch_add(records as u64, Ordering::Relaxed);
        }
        if !failed {
            failed = file.sync_data().is_err();
            stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        for job in batch.drain(..) {
            let msg = if failed { Err(job.flow) } else { Ok(Done { flow: job.flow, up_to: job.up_to }) };
            if failed {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
            if done.send(msg).is_err() {
                return;
            }
        }
    }
}

impl Application for IngestApp {
    fn name(&self) -> &str {
        "ingest"
    }

    fn open(&mut self, flow: AppFlowId, _client: std::net::SocketAddrV4) {
        self.flows.insert(flow, FlowState::default());
    }

    fn data(&mut self, flow: AppFlowId, offset: u64, bytes: &[u8]) -> Accepted {
        let Some(st) = self.flows.get_mut(&flow) else { return Accepted::All };
        if st.partial.is_empty() {
            st.partial_start = offset;
        }
        // Only whole records go to the writer; the tail stays here until its newline arrives.
        let Some(last_nl) = bytes.iter().rposition(|&b| b == b'\n') else {
            if st.partial.len() + bytes.len() > self.max_record {
                self.stats.aborted_long_record.fetch_add(1, Ordering::Relaxed);
                self.pending_aborts.push(flow);
                return Accepted::All;
            }
            st.partial.extend_from_slice(bytes);
            return Accepted::All;
        };
        let (records, tail) = bytes.split_at(last_nl + 1);
        if tail.len() > self.max_record {
            self.stats.aborted_long_record.fetch_add(1, Ordering::Relaxed);
            self.pending_aborts.push(flow);
            return Accepted::All;
        }
        let mut out = Vec::with_capacity(st.partial.len() + records.len());
        out.extend_from_slice(&st.partial);
        out.extend_from_slice(records);
        let up_to = offset + records.len() as u64;
        match self.jobs.try_send(Append { flow, up_to, bytes: out }) {
            Ok(()) => {
                st.partial.clear();
                st.partial.extend_from_slice(tail);
                st.partial_start = up_to;
                Accepted::All
            }
            // The writer is behind: take nothing now, the core offers the bytes again later.
            Err(TrySendError::Full(_)) => Accepted::Partial(0),
            Err(TrySendError::Disconnected(_)) => {
                self.pending_aborts.push(flow);
                Accepted::All
            }
        }
    }

    fn end_of_stream(&mut self, flow: AppFlowId, _len: u64) {
        // A trailing record without its newline is not a record: it is never committed, and the flow is
        // closed so the client learns it.
        self.pending_aborts.retain(|f| *f != flow);
        if let Some(st) = self.flows.get(&flow) {
            if !st.partial.is_empty() {
                self.pending_aborts.push(flow);
            }
        }
    }

    fn closed(&mut self, flow: AppFlowId) {
        self.flows.remove(&flow);
    }

    fn poll(&mut self, out: &mut Vec<AppEvent>) {
        for flow in self.pending_aborts.drain(..) {
            out.push(AppEvent::Abort { flow, reason: "record too long or not terminated" });
        }
        while let Ok(msg) = self.done.try_recv() {
            match msg {
                Ok(Done { flow, up_to }) => out.push(AppEvent::Commit { flow, up_to }),
                Err(flow) => out.push(AppEvent::Abort { flow, reason: "ingest file write failed" }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::{Duration, Instant};

    fn poll_until(app: &mut IngestApp, want: usize) -> Vec<AppEvent> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut evs = Vec::new();
        while evs.len() < want && Instant::now() < deadline {
            app.poll(&mut evs);
            std::thread::yield_now();
        }
        evs
    }

    #[test]
    fn commits_only_whole_records_after_they_are_on_disk() {
        let dir = std::env::temp_dir().join(format!("holdfast-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.log");
        let _ = std::fs::remove_file(&path);
        let mut app = IngestApp::open(&path, 1024).unwrap();
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 10), 40000);
        app.open(1, peer);
        app.open(2, peer);
        assert_eq!(app.data(1, 0, b"alpha\nbe"), Accepted::All);
        assert_eq!(app.data(2, 0, b"one\n"), Accepted::All);
        let evs = poll_until(&mut app, 2);
        assert!(evs.contains(&AppEvent::Commit { flow: 1, up_to: 6 }), "{evs:?}");
        assert!(evs.contains(&AppEvent::Commit { flow: 2, up_to: 4 }), "{evs:?}");
        assert_eq!(app.data(1, 8, b"ta\ngam"), Accepted::All);
        let evs = poll_until(&mut app, 1);
        assert_eq!(evs, vec![AppEvent::Commit { flow: 1, up_to: 11 }]);
        drop(app);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(lines, vec!["alpha", "beta", "one"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_overlong_record_aborts_only_its_flow() {
        let dir = std::env::temp_dir().join(format!("holdfast-ingest-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.log");
        let mut app = IngestApp::open(&path, 8).unwrap();
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 10), 40000);
        app.open(1, peer);
        app.open(2, peer);
        assert_eq!(app.data(1, 0, b"0123456789abcdef"), Accepted::All);
        assert_eq!(app.data(2, 0, b"ok\n"), Accepted::All);
        let evs = poll_until(&mut app, 2);
        assert!(evs.iter().any(|e| matches!(e, AppEvent::Abort { flow: 1, .. })), "{evs:?}");
        assert!(evs.contains(&AppEvent::Commit { flow: 2, up_to: 3 }), "{evs:?}");
        assert_eq!(app.stats().aborted_long_record.load(Ordering::Relaxed), 1);
        drop(app);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
