//! Policy `app` end to end: smoltcp clients send newline-terminated records through the proxy's core A to
//! the `ingest` application over lossy links. The ACK a client receives must mean "on disk": at every
//! check during the run, each client's acknowledged prefix is in the file as whole records (invariant 1,
//! with "held by the application"), and at the end every record is there exactly once, intact.

use control::apps::ingest::IngestApp;
use control::sim::scale::{check_records, AppTap, Outcome, Payload, ScaleConfig, Sim};
use dataplane::app::Application;
use dataplane::gate::AckPolicy;
use dataplane::time::{Duration, Instant};

const RECORD: usize = 100;

fn file_ok(sim: &Sim, path: &std::path::Path) -> Result<(), String> {
    // Read the clients' acknowledgments first: the file can only have grown by the time it is read.
    let acked: Vec<(u32, u64)> = sim.conns().map(|c| (c.id, c.acked)).collect();
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let have = check_records(&text, RECORD)?;
    for (id, acked) in acked {
        let need = acked / RECORD as u64;
        let got = have.get(&id).copied().unwrap_or(0);
        if got < need {
            return Err(format!("stream {id}: {acked} bytes acknowledged ({need} records), file has {got}"));
        }
    }
    Ok(())
}

#[test]
fn every_acknowledged_record_is_on_disk() {
    let dir = std::env::temp_dir().join(format!("holdfast-sim-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("records.log");
    let _ = std::fs::remove_file(&path);
    let (tap, busy) = AppTap::new(IngestApp::open(&path, 4096).unwrap());
    let apps: Vec<Option<Box<dyn Application>>> = vec![Some(Box::new(tap))];
    let mut cfg = ScaleConfig::lossy(21, AckPolicy::App, 4, 0);
    cfg.faults.loss = 0.02;
    let mut sim = Sim::new(cfg, apps, Some(busy)).unwrap();
    let conns = 24u64;
    for i in 0..conns {
        sim.connect(
            (i % 4) as usize,
            Payload::Records { len: RECORD, count: 200 + i * 7 },
            Instant::from_millis(i),
        )
        .unwrap();
    }
    sim.release();
    let mut checks = 0;
    let limit = Instant::from_millis(120_000);
    while !sim.all_done() && sim.now() < limit {
        let until = sim.now() + Duration::from_millis(20);
        sim.run_until(until, |s| s.all_done());
        file_ok(&sim, &path).unwrap();
        checks += 1;
    }
    let t = sim.tally();
    assert!(sim.all_done(), "{t:?}\n{}", sim.unfinished(8));
    assert!(checks > 5, "the file was checked during the run: {checks}");
    assert!(
        sim.conns().all(|c| c.outcome == Outcome::Complete && c.acked == c.written),
        "{}",
        sim.unfinished(8)
    );
    let a = sim.core_a.stats().clone();
    drop(sim);
    // With the application gone (its writer synced and joined), every record is there exactly once.
    let text = std::fs::read(&path).unwrap();
    let have = check_records(&text, RECORD).unwrap();
    for i in 0..conns {
        assert_eq!(have.get(&(i as u32)).copied(), Some(200 + i * 7), "stream {i}");
    }
    let total: u64 = (0..conns).map(|i| (200 + i * 7) * RECORD as u64).sum();
    assert_eq!(text.len() as u64, total);
    assert_eq!(a.bytes_from_clients, total, "{a:?}");
    assert_eq!(a.app_aborts, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
