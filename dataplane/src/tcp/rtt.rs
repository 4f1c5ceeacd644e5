//! Round-trip estimation and the retransmission timeout, per RFC 6298.

use crate::time::Duration;

/// SRTT/RTTVAR in microseconds and the current (backed-off) RTO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    srtt_us: u32,
    rttvar_us: u32,
    rto: Duration,
    has_sample: bool,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    pub fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator {
            srtt_us: 0,
            rttvar_us: 0,
            rto: initial.clamp(min, max.max(min)),
            has_sample: false,
            min,
            max: max.max(min),
        }
    }

    /// Rebuilds an estimator from saved figures.
    pub fn from_saved(srtt_us: u32, rttvar_us: u32, rto_ms: u32, min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        RttEstimator {
            srtt_us,
            rttvar_us,
            rto: Duration::from_millis(u64::from(rto_ms)).clamp(min, max),
            has_sample: srtt_us != 0,
            min,
            max,
        }
    }

    pub fn srtt(&self) -> Duration {
        Duration::from_micros(u64::from(self.srtt_us))
    }

    pub fn srtt_us(&self) -> u32 {
        self.srtt_us
    }

    pub fn rttvar_us(&self) -> u32 {
        self.rttvar_us
    }

    pub fn rto(&self) -> Duration {
        self.rto
    }

    pub fn has_sample(&self) -> bool {
        self.has_sample
    }

    /// Folds in one measurement (RFC 6298 §2.2–2.3) and recomputes the RTO, undoing any backoff.
    pub fn sample(&mut self, rtt: Duration) {
        let r = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
        if !self.has_sample {
            self.srtt_us = r;
            self.rttvar_us = r / 2;
            self.has_sample = true;
        } else {
            let err = self.srtt_us.abs_diff(r);
            self.rttvar_us = self.rttvar_us - self.rttvar_us / 4 + err / 4;
            self.srtt_us = self.srtt_us - self.srtt_us / 8 + r / 8;
        }
        let rto_us = u64::from(self.srtt_us) + (4 * u64::from(self.rttvar_us)).max(1_000);
        self.rto = Duration::from_micros(rto_us).clamp(self.min, self.max);
    }

    /// RFC 6298 §5.5: doubles the RTO after a timeout.
    pub fn back_off(&mut self) {
        self.rto = self.rto.saturating_mul(2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc6298() {
        let mut e =
            RttEstimator::new(Duration::from_secs(1), Duration::from_millis(200), Duration::from_secs(60));
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.sample(Duration::from_millis(100));
        // SRTT = 100 ms, RTTVAR = 50 ms: RTO = 300 ms.
        assert_eq!(e.rto(), Duration::from_millis(300));
        e.back_off();
        assert_eq!(e.rto(), Duration::from_millis(600));
        e.sample(Duration::from_millis(100));
        // RTTVAR = 3/4 * 50 = 37.5 ms, SRTT stays 100 ms: 250 ms.
        assert_eq!(e.rto(), Duration::from_micros(250_000));
        for _ in 0..50 {
            e.sample(Duration::from_millis(1));
        }
        assert_eq!(e.rto(), Duration::from_millis(200));
    }
}
