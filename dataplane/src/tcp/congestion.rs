//! Congestion control behind a small trait: NewReno (RFC 5681) and CUBIC (RFC 9438).
//!
//! The controller owns cwnd and ssthresh outside loss recovery. Fast recovery itself (RFC 6582 window
//! inflation, partial ACKs) is the connection's business; it asks the controller only for the reduction
//! on entry and hands control back on exit.

use super::config::CongestionAlgorithm;
use crate::time::{Duration, Instant};

/// The decisions a congestion controller makes. All figures in bytes.
pub trait CongestionControl {
    fn cwnd(&self) -> u32;
    fn ssthresh(&self) -> u32;
    /// New data was cumulatively acknowledged outside recovery.
    fn on_ack(&mut self, now: Instant, acked: u32, mss: u32, srtt: Duration);
    /// Loss detected by duplicate ACKs or SACK: sets ssthresh (and cwnd) for the recovery that starts.
    fn on_congestion_event(&mut self, now: Instant, flight: u32, mss: u32);
    /// Recovery ended with a full ACK: cwnd deflates to ssthresh.
    fn on_recovery_end(&mut self, now: Instant);
    /// A retransmission timeout: ssthresh from the flight, cwnd to one segment (RFC 5681 §3.1).
    fn on_timeout(&mut self, now: Instant, flight: u32, mss: u32);
}

/// RFC 5681 slow start and congestion avoidance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewReno {
    cwnd: u32,
    ssthresh: u32,
    /// Bytes acknowledged since cwnd last grew in congestion avoidance (RFC 5681 §3.1, byte counting).
    acked_acc: u32,
}

impl NewReno {
    pub fn new(cwnd: u32, ssthresh: u32) -> Self {
        NewReno { cwnd, ssthresh, acked_acc: 0 }
    }
}

impl CongestionControl for NewReno {
    fn cwnd(&self) -> u32 {
        self.cwnd
    }
    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }
    fn on_ack(&mut self, _now: Instant, acked: u32, mss: u32, _srtt: Duration) {
        if self.cwnd < self.ssthresh {
            // RFC 3465 with L = 2 SMSS.
            self.cwnd = self.cwnd.saturating_add(acked.min(2 * mss));
        } else {
            self.acked_acc = self.acked_acc.saturating_add(acked);
            if self.acked_acc >= self.cwnd {
                self.acked_acc -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(mss);
            }
        }
    }
    fn on_congestion_event(&mut self, _now: Instant, flight: u32, mss: u32) {
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = self.ssthresh;
        self.acked_acc = 0;
    }
    fn on_recovery_end(&mut self, _now: Instant) {
        self.cwnd = self.ssthresh;
    }
    fn on_timeout(&mut self, _now: Instant, flight: u32, mss: u32) {
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = mss;
        self.acked_acc = 0;
    }
}

/// RFC 9438 CUBIC, with the Reno-friendly region and fast convergence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cubic {
    cwnd: u32,
    ssthresh: u32,
    /// Window before the last reduction, in bytes.
    w_max: f64,
    /// Start of the current avoidance epoch; `None` until the first ACK after a reduction.
    epoch: Option<Instant>,
    k_secs: f64,
    /// Reno-friendly estimate (W_est), in bytes.
    w_est: f64,
}

const CUBIC_C: f64 = 0.4;
const CUBIC_BETA: f64 = 0.7;

impl Cubic {
    pub fn new(cwnd: u32, ssthresh: u32) -> Self {
        Cubic { cwnd, ssthresh, w_max: f64::from(cwnd), epoch: None, k_secs: 0.0, w_est: f64::from(cwnd) }
    }

    fn reduce(&mut self, mss: u32) {
        let cwnd = f64::from(self.cwnd);
        // Fast convergence (RFC 9438 §4.7).
        self.w_max = if cwnd < self.w_max { cwnd * (1.0 + CUBIC_BETA) / 2.0 } else { cwnd };
        self.ssthresh = ((cwnd * CUBIC_BETA) as u32).max(2 * mss);
        self.epoch = None;
    }
}

impl CongestionControl for Cubic {
    fn cwnd(&self) -> u32 {
        self.cwnd
    }
    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }
    fn on_ack(&mut self, now: Instant, acked: u32, mss: u32, srtt: Duration) {
        if self.cwnd < self.ssthresh {
            self.cwnd = self.cwnd.saturating_add(acked.min(2 * mss));
            return;
        }
        let mssf = f64::from(mss.max(1));
        let epoch = match self.epoch {
            Some(e) => e,
            None => {
                self.epoch = Some(now);
                let cwnd_seg = f64::from(self.cwnd) / mssf;
                let wmax_seg = self.w_max / mssf;
                self.k_secs =
                    if wmax_seg > cwnd_seg { ((wmax_seg - cwnd_seg) / CUBIC_C).cbrt() } else { 0.0 };
                self.w_est = f64::from(self.cwnd);
                now
            }
        };
        let t = (now - epoch).as_secs_f64() + srtt.as_secs_f64();
        let w_cubic = (CUBIC_C * (t - self.k_secs).powi(3) + self.w_max / mssf) * mssf;
        let cwndf = f64::from(self.cwnd);
        // Reno-friendly region (RFC 9438 §4.3).
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        self.w_est += alpha * f64::from(acked) / cwndf * mssf;
        let target = if w_cubic < self.w_est { self.w_est } else { w_cubic.clamp(cwndf, 1.5 * cwndf) };
        if target > cwndf {
            let inc = ((target - cwndf) / cwndf * f64::from(acked)) as u32;
            self.cwnd = self.cwnd.saturating_add(inc.max(1));
        }
    }
    fn on_congestion_event(&mut self, _now: Instant, _flight: u32, mss: u32) {
        self.reduce(mss);
        self.cwnd = self.ssthresh;
    }
    fn on_recovery_end(&mut self, _now: Instant) {
        self.cwnd = self.ssthresh;
    }
    fn on_timeout(&mut self, _now: Instant, _flight: u32, mss: u32) {
        self.reduce(mss);
        self.cwnd = mss;
    }
}

/// The controller a connection runs, chosen by config; an enum so a connection stays one concrete type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Congestion {
    NewReno(NewReno),
    Cubic(Cubic),
}

impl Congestion {
    pub fn new(algo: CongestionAlgorithm, cwnd: u32, ssthresh: u32) -> Self {
        match algo {
            CongestionAlgorithm::NewReno => Congestion::NewReno(NewReno::new(cwnd, ssthresh)),
            CongestionAlgorithm::Cubic => Congestion::Cubic(Cubic::new(cwnd, ssthresh)),
        }
    }

    pub fn algorithm(&self) -> CongestionAlgorithm {
        match self {
            Congestion::NewReno(_) => CongestionAlgorithm::NewReno,
            Congestion::Cubic(_) => CongestionAlgorithm::Cubic,
        }
    }

    fn inner(&mut self) -> &mut dyn CongestionControl {
        match self {
            Congestion::NewReno(c) => c,
            Congestion::Cubic(c) => c,
        }
    }
}

impl CongestionControl for Congestion {
    fn cwnd(&self) -> u32 {
        match self {
            Congestion::NewReno(c) => c.cwnd(),
            Congestion::Cubic(c) => c.cwnd(),
        }
    }
    fn ssthresh(&self) -> u32 {
        match self {
            Congestion::NewReno(c) => c.ssthresh(),
            Congestion::Cubic(c) => c.ssthresh(),
        }
    }
    fn on_ack(&mut self, now: Instant, acked: u32, mss: u32, srtt: Duration) {
        self.inner().on_ack(now, acked, mss, srtt)
    }
    fn on_congestion_event(&mut self, now: Instant, flight: u32, mss: u32) {
        self.inner().on_congestion_event(now, flight, mss)
    }
    fn on_recovery_end(&mut self, now: Instant) {
        self.inner().on_recovery_end(now)
    }
    fn on_timeout(&mut self, now: Instant, flight: u32, mss: u32) {
        self.inner().on_timeout(now, flight, mss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newreno_slow_start_then_avoidance() {
        let mut c = NewReno::new(1000, 4000);
        let t = Instant::ZERO;
        let rtt = Duration::from_millis(10);
        c.on_ack(t, 1000, 1000, rtt);
        assert_eq!(c.cwnd(), 2000);
        c.on_ack(t, 5000, 1000, rtt);
        assert_eq!(c.cwnd(), 4000);
        // Avoidance: one MSS per cwnd of acknowledged bytes.
        c.on_ack(t, 3000, 1000, rtt);
        assert_eq!(c.cwnd(), 4000);
        c.on_ack(t, 1000, 1000, rtt);
        assert_eq!(c.cwnd(), 5000);
        c.on_congestion_event(t, 10_000, 1000);
        assert_eq!((c.cwnd(), c.ssthresh()), (5000, 5000));
        c.on_timeout(t, 1000, 1000);
        assert_eq!((c.cwnd(), c.ssthresh()), (1000, 2000));
    }

    #[test]
    fn cubic_reduces_by_beta_and_grows_back() {
        let mut c = Cubic::new(100_000, 50_000);
        let mut t = Instant::from_millis(1);
        c.on_congestion_event(t, 100_000, 1000);
        assert_eq!(c.cwnd(), 70_000);
        let rtt = Duration::from_millis(20);
        for _ in 0..2000 {
            t += Duration::from_millis(1);
            c.on_ack(t, 1000, 1000, rtt);
        }
        assert!(c.cwnd() > 70_000);
    }
}
