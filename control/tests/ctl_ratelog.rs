//! Hot-path logging is rate-limited: a flood of malformed frames into a real core A is counted frame by
//! frame, but logged at most `BAD_INPUT_LOG_RATE` lines a second, and the first line after the flood says
//! how many lines it left out.

#![allow(clippy::unwrap_used)]

use control::pair::Cores;
use dataplane::buf::Pool;
use dataplane::gate::AckPolicy;
use dataplane::port::mem::{self, MemConfig};
use dataplane::port::Port;
use dataplane::proxy::control::BAD_INPUT_LOG_RATE;
use dataplane::time::{Duration, Instant};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn malformed_lines(log: &Captured) -> Vec<String> {
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    text.lines().filter(|l| l.contains("dropped a malformed frame")).map(str::to_string).collect()
}

#[test]
fn a_flood_of_bad_frames_is_counted_in_full_and_logged_a_few_lines_a_second() {
    let pool = Pool::new(1024, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).unwrap();
    let (core_port, mut wire, _) = mem::link(&pool, &MemConfig::new("client", 1));
    let (server_port, _backend, _) = mem::link(&pool, &MemConfig::new("server", 2));
    let cfg = Arc::new(control::sim::proxy_config(AckPolicy::Backend, 64, 1));
    let mut cores = Cores::new(&cfg, core_port, server_port, Instant::ZERO).unwrap();
    // An Ethernet header that announces IPv4, then four bytes: a truncated IPv4 header.
    let mut bad = vec![0xff; 6];
    bad.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x00, 0x45, 0, 0, 20]);
    let mut send = |now: Instant, n: usize| {
        for _ in 0..n {
            let mut v = vec![pool.alloc_copy(&bad).unwrap()];
            assert_eq!(wire.send(now, &mut v), 1);
        }
    };
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let t0 = Instant::from_millis(10);
        for _ in 0..10 {
            send(t0, 20);
            cores.step(t0);
        }
        assert_eq!(cores.a.io_stats().bad_total(), 200, "every bad frame is counted");
        let lines = malformed_lines(&log);
        assert_eq!(lines.len(), BAD_INPUT_LOG_RATE as usize, "{lines:#?}");
        assert!(lines.iter().all(|l| l.contains("suppressed=0")), "{lines:#?}");

        let t1 = t0 + Duration::from_millis(1_001);
        send(t1, 1);
        cores.step(t1);
        let lines = malformed_lines(&log);
        assert_eq!(lines.len(), BAD_INPUT_LOG_RATE as usize + 1);
        let left_out = 200 - u64::from(BAD_INPUT_LOG_RATE);
        assert!(lines.last().unwrap().contains(&format!("suppressed={left_out}")), "{lines:#?}");
    });
}
