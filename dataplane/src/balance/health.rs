//! TCP health checks of backends, as a sans-IO state machine.
//!
//! Every `interval`, the checker asks its caller to send a SYN from a probe source port to a backend
//! ([`HealthAction::SendProbe`]); the caller reports the answer ([`HealthChecker::on_reply`]): a SYN-ACK
//! counts as success (the caller then sends a RST, so the backend does not keep a half-open connection),
//! a RST as failure, and no answer within `timeout` as failure. After `fall` consecutive failures a
//! healthy backend goes down, after `rise` consecutive successes a down backend comes back up
//! ([`HealthAction::Event`]). Backends start healthy, so a box serves at once and a dead backend is
//! taken out after `fall` probes.
//!
//! Marking a backend down only stops new flows from choosing it ([`super::Pool::set_healthy`]); flows
//! already open to it are left alone, to finish or time out on their own.
//!
//! Probes use their own small range of source ports (outside the SNAT range), rotating through it so a
//! port is not reused while an earlier probe's connection may linger at the backend.

use super::BackendId;
use crate::time::{Duration, Instant};
use std::net::SocketAddrV4;

/// Health check parameters of one pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthParams {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u8,
    pub fall: u8,
}

impl Default for HealthParams {
    fn default() -> Self {
        HealthParams { interval: Duration::from_secs(2), timeout: Duration::from_secs(1), rise: 2, fall: 3 }
    }
}

/// Parameters a checker cannot run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("interval and timeout must be above zero, and the timeout no longer than the interval")]
    Timing,
    #[error("rise and fall must be at least 1")]
    Thresholds,
    #[error("empty probe port range")]
    Ports,
}

/// A probe to send now: a SYN from the SNAT address, source port `src_port`, to `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub backend: BackendId,
    pub addr: SocketAddrV4,
    pub src_port: u16,
}

/// A backend crossed a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    Down(BackendId),
    Up(BackendId),
}

/// What the checker wants done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum HealthAction {
    SendProbe(Probe),
    Event(HealthEvent),
}

/// The answer a probe got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    SynAck,
    Rst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle { next_at: Instant },
    Probing { src_port: u16, deadline: Instant, next_at: Instant },
}

#[derive(Clone, Copy, Debug)]
struct Check {
    addr: SocketAddrV4,
    healthy: bool,
    ok_run: u8,
    fail_run: u8,
    phase: Phase,
}

/// Health checks of one pool's backends. See the module docs.
#[derive(Clone, Debug)]
pub struct HealthChecker {
    params: HealthParams,
    port_lo: u16,
    port_hi: u16,
    next_port: u16,
    checks: Vec<Check>,
}

impl HealthChecker {
    /// A checker for `backends` (index = [`BackendId`]), probing from `port_lo..=port_hi`. First probes
    /// are spread over one interval from `now`, so a large pool does not probe in one burst.
    pub fn new(
        params: HealthParams,
        backends: &[SocketAddrV4],
        port_lo: u16,
        port_hi: u16,
        now: Instant,
    ) -> Result<HealthChecker, HealthError> {
        if params.interval.is_zero() || params.timeout.is_zero() || params.timeout > params.interval {
            return Err(HealthError::Timing);
        }
        if params.rise == 0 || params.fall == 0 {
            return Err(HealthError::Thresholds);
        }
        if port_lo > port_hi {
            return Err(HealthError::Ports);
        }
        let n = backends.len().max(1) as u32;
        let checks = backends
            .iter()
            .enumerate()
            .map(|(i, &addr)| Check {
                addr,
                healthy: true,
                ok_run: 0,
                fail_run: 0,
                phase: Phase::Idle { next_at: now + params.interval / n * i as u32 },
            })
            .collect();
        Ok(HealthChecker { params, port_lo, port_hi, next_port: port_lo, checks })
    }

    pub fn params(&self) -> HealthParams {
        self.params
    }

    /// Whether the checker currently considers a backend healthy.
    pub fn is_healthy(&self, id: BackendId) -> Option<bool> {
        self.checks.get(usize::from(id.0)).map(|c| c.healthy)
    }

    /// Adds a backend (after [`super::Pool::add_backend`], which gives it the next id). Its first probe
    /// goes out at once.
    pub fn add_backend(&mut self, addr: SocketAddrV4, now: Instant) -> BackendId {
        self.checks.push(Check {
            addr,
            healthy: true,
            ok_run: 0,
            fail_run: 0,
            phase: Phase::Idle { next_at: now },
        });
        BackendId((self.checks.len() - 1) as u16)
    }

    /// The next thing to do as of `now`; call until `None`, then sleep until [`Self::next_deadline`].
    pub fn poll(&mut self, now: Instant) -> Option<HealthAction> {
        for i in 0..self.checks.len() {
            let id = BackendId(i as u16);
            let phase = self.checks.get(i)?.phase;
            match phase {
                Phase::Probing { deadline, next_at, .. } if deadline <= now => {
                    if let Some(ev) = self.record(i, false, next_at) {
                        return Some(HealthAction::Event(ev));
                    }
                }
                Phase::Idle { next_at } if next_at <= now => {
                    let src_port = self.take_port();
                    let c = self.checks.get_mut(i)?;
                    // Schedule from the planned time, not from `now`, so a late poll does not drift.
                    let mut next = next_at + self.params.interval;
                    if next <= now {
                        next = now + self.params.interval;
                    }
                    c.phase = Phase::Probing { src_port, deadline: now + self.params.timeout, next_at: next };
                    return Some(HealthAction::SendProbe(Probe { backend: id, addr: c.addr, src_port }));
                }
                _ => {}
            }
        }
        None
    }

    /// A probe's answer arrived from `from` to `dst_port`. Answers that match no outstanding probe (late,
    /// duplicated or forged) are ignored.
    pub fn on_reply(&mut self, from: SocketAddrV4, dst_port: u16, reply: Reply) -> Option<HealthEvent> {
        let i = self.checks.iter().position(|c| {
            c.addr == from && matches!(c.phase, Phase::Probing { src_port, .. } if src_port == dst_port)
        })?;
        let Phase::Probing { next_at, .. } = self.checks.get(i)?.phase else { return None };
        self.record(i, reply == Reply::SynAck, next_at)
    }

    /// When [`Self::poll`] next has something to do.
    pub fn next_deadline(&self) -> Instant {
        self.checks
            .iter()
            .map(|c| match c.phase {
                Phase::Idle { next_at } => next_at,
                Phase::Probing { deadline, .. } => deadline,
            })
            .min()
            .unwrap_or(Instant::FAR_FUTURE)
    }

    fn take_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= self.port_hi { self.port_lo } else { p + 1 };
        p
    }

    fn record(&mut self, i: usize, ok: bool, next_at: Instant) -> Option<HealthEvent> {
        let (rise, fall) = (self.params.rise, self.params.fall);
        let c = self.checks.get_mut(i)?;
        c.phase = Phase::Idle { next_at };
        let id = BackendId(i as u16);
        if ok {
            c.fail_run = 0;
            c.ok_run = c.ok_run.saturating_add(1);
            if !c.healthy && c.ok_run >= rise {
                c.healthy = true;
                return Some(HealthEvent::Up(id));
            }
        } else {
            c.ok_run = 0;
            c.fail_run = c.fail_run.saturating_add(1);
            if c.healthy && c.fail_run >= fall {
                c.healthy = false;
                return Some(HealthEvent::Down(id));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{Algorithm, Pool};
    use std::net::Ipv4Addr;

    fn be(i: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 10 + i), 5201)
    }

    const P: HealthParams = HealthParams {
        interval: Duration::from_millis(1000),
        timeout: Duration::from_millis(300),
        rise: 2,
        fall: 3,
    };

    /// Drives a checker against backends whose behaviour `answer(backend, t)` gives (`None` = silence),
    /// stepping a virtual clock, and collects events with their times.
    fn run(
        hc: &mut HealthChecker,
        until: Instant,
        mut answer: impl FnMut(usize, Instant) -> Option<Reply>,
    ) -> Vec<(Instant, HealthEvent)> {
        let mut now = Instant::ZERO;
        let mut events = Vec::new();
        let mut pending: Vec<(Instant, SocketAddrV4, u16, Reply)> = Vec::new();
        while now <= until {
            pending.retain(|&(at, from, port, r)| {
                if at <= now {
                    if let Some(ev) = hc.on_reply(from, port, r) {
                        events.push((now, ev));
                    }
                    false
                } else {
                    true
                }
            });
            while let Some(a) = hc.poll(now) {
                match a {
                    HealthAction::SendProbe(p) => {
                        if let Some(r) = answer(usize::from(p.backend.0), now) {
                            pending.push((now + Duration::from_millis(1), p.addr, p.src_port, r));
                        }
                    }
                    HealthAction::Event(ev) => events.push((now, ev)),
                }
            }
            now += Duration::from_millis(1);
        }
        events
    }

    #[test]
    fn parameters_are_checked() {
        let bad = HealthParams { timeout: Duration::from_secs(5), ..P };
        assert_eq!(
            HealthChecker::new(bad, &[be(0)], 100, 200, Instant::ZERO).err(),
            Some(HealthError::Timing)
        );
        let bad = HealthParams { rise: 0, ..P };
        assert_eq!(
            HealthChecker::new(bad, &[be(0)], 100, 200, Instant::ZERO).err(),
            Some(HealthError::Thresholds)
        );
        assert_eq!(HealthChecker::new(P, &[be(0)], 200, 100, Instant::ZERO).err(), Some(HealthError::Ports));
    }

    #[test]
    fn healthy_backends_stay_up() {
        let mut hc = HealthChecker::new(P, &[be(0), be(1)], 61000, 61009, Instant::ZERO).unwrap();
        let ev = run(&mut hc, Instant::from_millis(10_000), |_, _| Some(Reply::SynAck));
        assert!(ev.is_empty());
        assert_eq!(hc.is_healthy(BackendId(1)), Some(true));
    }

    #[test]
    fn silent_backend_goes_down_after_fall_timeouts_and_comes_back_after_rise() {
        let mut hc = HealthChecker::new(P, &[be(0), be(1)], 61000, 61009, Instant::ZERO).unwrap();
        // Backend 1 is dead from 0 to 5 s, then answers again.
        let ev = run(&mut hc, Instant::from_millis(10_000), |b, t| {
            (b == 0 || t >= Instant::from_millis(5_000)).then_some(Reply::SynAck)
        });
        // Probes to backend 1 at 0.5, 1.5, 2.5 s time out 300 ms later; the third makes it fall.
        // It answers from the probe at 5.5 s, and the second success (6.5 s) brings it back.
        assert_eq!(
            ev,
            vec![
                (Instant::from_millis(2_800), HealthEvent::Down(BackendId(1))),
                (Instant::from_millis(6_501), HealthEvent::Up(BackendId(1))),
            ]
        );
    }

    #[test]
    fn rst_counts_as_failure_and_stray_replies_are_ignored() {
        let mut hc = HealthChecker::new(P, &[be(0)], 61000, 61001, Instant::ZERO).unwrap();
        let Some(HealthAction::SendProbe(p)) = hc.poll(Instant::ZERO) else { panic!("no probe") };
        assert_eq!(p.src_port, 61000);
        // Wrong port, wrong address: ignored, the probe stays outstanding.
        assert_eq!(hc.on_reply(be(0), 61001, Reply::Rst), None);
        assert_eq!(hc.on_reply(be(5), 61000, Reply::Rst), None);
        assert_eq!(hc.on_reply(be(0), 61000, Reply::Rst), None);
        // Duplicate answer after the probe is done: ignored.
        assert_eq!(hc.on_reply(be(0), 61000, Reply::Rst), None);
        let mut t = Instant::ZERO;
        let mut ports = vec![p.src_port];
        for _ in 0..2 {
            t += P.interval;
            let Some(HealthAction::SendProbe(p)) = hc.poll(t) else { panic!("no probe") };
            ports.push(p.src_port);
            let r = hc.on_reply(be(0), p.src_port, Reply::Rst);
            if ports.len() == 3 {
                assert_eq!(r, Some(HealthEvent::Down(BackendId(0))));
            } else {
                assert_eq!(r, None);
            }
        }
        assert_eq!(ports, vec![61000, 61001, 61000]);
        assert_eq!(hc.next_deadline(), t + P.interval);
    }

    #[test]
    fn events_drive_the_pool() {
        let addrs = [be(0), be(1), be(2)];
        let mut pool = Pool::new(Algorithm::Maglev, &addrs.map(|a| (a, 1)), 251).unwrap();
        let mut hc = HealthChecker::new(P, &addrs, 61000, 61099, Instant::ZERO).unwrap();
        let ev = run(&mut hc, Instant::from_millis(5_000), |b, _| (b != 2).then_some(Reply::SynAck));
        for (_, e) in &ev {
            match *e {
                HealthEvent::Down(id) => assert_eq!(pool.set_healthy(id, false), Ok(true)),
                HealthEvent::Up(id) => assert_eq!(pool.set_healthy(id, true), Ok(true)),
            }
        }
        assert_eq!(pool.eligible(), 2);
        assert_eq!(pool.backend(BackendId(2)).map(|b| b.healthy), Some(false));
    }
}
