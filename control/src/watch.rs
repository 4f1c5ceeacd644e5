//! The running primary's reasons to step down, checked by `holdfast run` beside its cores: a box in a
//! later epoch took over (heard on the replication link: this box was stopped or cut off and is stale),
//! or a data port lost its carrier for longer than the standby needs to notice the silence.
//!
//! Stepping down means the cores stop: no more frames on the data ports, and no more heartbeats, which is
//! what lets the standby see both of its paths go silent and take over when only a data link died.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Why the primary stopped serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepDown {
    #[error("fenced: a box in epoch {0} took over from this one")]
    Superseded(u32),
    #[error("{port} port ({interface}) without carrier for {ms} ms")]
    NoCarrier { port: &'static str, interface: String, ms: u64 },
}

#[derive(Debug)]
struct Link {
    port: &'static str,
    interface: String,
    carrier: PathBuf,
    down_since: Option<std::time::Instant>,
}

/// Watches the epoch heard from the peer and the data ports' carrier.
#[derive(Debug)]
pub struct Watchdog {
    superseded: Option<Arc<AtomicU32>>,
    links: Vec<Link>,
    grace: std::time::Duration,
}

impl Watchdog {
    /// `grace`: how long a port may be without carrier before the box steps down (a flap shorter than
    /// the standby's takeover delay is ridden out).
    pub fn new(superseded: Option<Arc<AtomicU32>>, grace: std::time::Duration) -> Watchdog {
        Watchdog { superseded, links: Vec::new(), grace }
    }

    /// Watches an interface's carrier (Linux: /sys/class/net/IF/carrier; an interface without that file
    /// is not watched).
    pub fn watch_carrier(&mut self, port: &'static str, interface: &str) {
        let carrier = PathBuf::from("/sys/class/net").join(interface).join("carrier");
        if carrier.exists() {
            self.links.push(Link { port, interface: interface.to_owned(), carrier, down_since: None });
        }
    }

    /// Checks once; `Some` when the box must stop serving.
    pub fn check(&mut self, now: std::time::Instant) -> Option<StepDown> {
        if let Some(epoch) = self.superseded.as_ref().map(|s| s.load(Ordering::Acquire)) {
            if epoch != 0 {
                return Some(StepDown::Superseded(epoch));
            }
        }
        for l in &mut self.links {
            // An unreadable file (the interface vanished) reads as no carrier.
            let up = std::fs::read_to_string(&l.carrier).map(|s| s.trim() == "1").unwrap_or(false);
            if up {
                l.down_since = None;
                continue;
            }
            let since = *l.down_since.get_or_insert(now);
            let down = now.saturating_duration_since(since);
            if down >= self.grace {
                return Some(StepDown::NoCarrier {
                    port: l.port,
                    interface: l.interface.clone(),
                    ms: u64::try_from(down.as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_epoch_fences() {
        let flag = Arc::new(AtomicU32::new(0));
        let mut w = Watchdog::new(Some(flag.clone()), std::time::Duration::from_millis(50));
        let t = std::time::Instant::now();
        assert_eq!(w.check(t), None);
        flag.store(3, Ordering::Release);
        assert_eq!(w.check(t), Some(StepDown::Superseded(3)));
    }

    #[test]
    fn a_missing_interface_is_not_watched() {
        let mut w = Watchdog::new(None, std::time::Duration::ZERO);
        w.watch_carrier("client", "hf-no-such-interface-0");
        assert_eq!(w.check(std::time::Instant::now()), None);
    }
}
