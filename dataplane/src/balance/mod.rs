//! Backend pools: which backend a new flow goes to, and TCP health checks that mark backends down and up.
//!
//! A [`Pool`] chooses among its eligible backends (healthy, not draining, weight above zero) by Maglev
//! consistent hashing over the client 4-tuple ([`Algorithm::Maglev`]) or by least connections relative
//! to weight ([`Algorithm::LeastConn`]). The choice is made once, when a flow opens: the pool never moves
//! an existing flow, so marking a backend down, draining it or changing its weight only changes where new
//! flows go. Closing or keeping existing flows to a dead backend is the caller's job (the flow table and
//! the TCP engine's own timeouts handle it), and so is feeding [`health::HealthChecker`] events back in.

pub mod health;
mod maglev;

pub use maglev::{is_prime, Maglev, DEFAULT_TABLE_SIZE, MAX_WEIGHT};

use crate::flow::mix64;
use core::fmt;
use core::str::FromStr;
use std::net::SocketAddrV4;

/// How a pool picks a backend for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    #[default]
    Maglev,
    LeastConn,
}

impl Algorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Maglev => "maglev",
            Algorithm::LeastConn => "least-conn",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not `maglev` or `least-conn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown balance algorithm (expected one of: maglev, least-conn)")]
pub struct ParseAlgorithmError;

impl FromStr for Algorithm {
    type Err = ParseAlgorithmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "maglev" => Ok(Algorithm::Maglev),
            "least-conn" => Ok(Algorithm::LeastConn),
            _ => Err(ParseAlgorithmError),
        }
    }
}

/// A backend's index in its pool; stable for the pool's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u16);

/// Where a backend stands, as reported to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Healthy and taking new flows.
    Up,
    /// Failed its health checks: no new flows.
    Down,
    /// Taken out by an operator: no new flows, existing ones finish; health checks cannot bring it back.
    Draining,
}

impl BackendState {
    pub const fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Draining => "draining",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddrV4,
    pub weight: u32,
    pub healthy: bool,
    pub draining: bool,
    /// Flows currently open to this backend (kept by the caller through `on_flow_opened/closed`).
    pub active: u32,
}

impl Backend {
    pub fn state(&self) -> BackendState {
        if self.draining {
            BackendState::Draining
        } else if self.healthy {
            BackendState::Up
        } else {
            BackendState::Down
        }
    }

    pub fn eligible(&self) -> bool {
        self.healthy && !self.draining && self.weight > 0
    }
}

/// Errors of pool construction and tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("a pool needs at least one backend")]
    Empty,
    #[error("too many backends (at most 65534)")]
    TooMany,
    #[error("backend listed twice")]
    Duplicate,
    #[error("weight above the maximum of {MAX_WEIGHT}")]
    Weight,
    #[error("Maglev table size must be a prime between 3 and 2^24")]
    TableSize,
    #[error("no such backend")]
    NoSuchBackend,
}

/// The hash of a flow's client 4-tuple that Maglev looks up. Unseeded on purpose: every box must map a
/// given flow to the same backend.
#[inline]
pub fn flow_hash(client: SocketAddrV4, vip: SocketAddrV4) -> u64 {
    let word = |a: SocketAddrV4| (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port());
    mix64(word(client).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ word(vip))
}

fn backend_identity(addr: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*addr.ip())) << 16) | u64::from(addr.port())
}

/// A listener's pool of backends. See the module docs.
#[derive(Clone, Debug)]
pub struct Pool {
    algorithm: Algorithm,
    backends: Vec<Backend>,
    maglev: Maglev,
    scratch: Vec<(u64, u32)>,
}

impl Pool {
    /// A pool of healthy backends. `table_size` is the Maglev table size ([`DEFAULT_TABLE_SIZE`]).
    pub fn new(
        algorithm: Algorithm,
        backends: &[(SocketAddrV4, u32)],
        table_size: u32,
    ) -> Result<Pool, PoolError> {
        if backends.is_empty() {
            return Err(PoolError::Empty);
        }
        if backends.len() >= usize::from(u16::MAX) {
            return Err(PoolError::TooMany);
        }
        let maglev = Maglev::new(table_size).ok_or(PoolError::TableSize)?;
        let mut list = Vec::with_capacity(backends.len());
        for &(addr, weight) in backends {
            if weight > MAX_WEIGHT {
                return Err(PoolError::Weight);
            }
            if list.iter().any(|b: &Backend| b.addr == addr) {
                return Err(PoolError::Duplicate);
            }
            list.push(Backend { addr, weight, healthy: true, draining: false, active: 0 });
        }
        let mut pool = Pool { algorithm, backends: list, maglev, scratch: Vec::new() };
        pool.rebuild();
        Ok(pool)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn set_algorithm(&mut self, algorithm: Algorithm) {
        self.algorithm = algorithm;
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(usize::from(id.0))
    }

    /// The id of the backend with this address.
    pub fn find(&self, addr: SocketAddrV4) -> Option<BackendId> {
        self.backends.iter().position(|b| b.addr == addr).map(|i| BackendId(i as u16))
    }

    /// How many backends take new flows.
    pub fn eligible(&self) -> usize {
        self.backends.iter().filter(|b| b.eligible()).count()
    }

    /// The backend for a new flow, or `None` when no backend is eligible.
    pub fn pick(&self, client: SocketAddrV4, vip: SocketAddrV4) -> Option<BackendId> {
        let h = flow_hash(client, vip);
        match self.algorithm {
            Algorithm::Maglev => self.maglev.lookup(h).map(BackendId),
            Algorithm::LeastConn => self.least_conn(h),
        }
    }

    // Ties are broken by where the scan starts, which the flow hash picks, so equal backends share.
    fn least_conn(&self, h: u64) -> Option<BackendId> {
        let n = self.backends.len();
        let start = (h % n as u64) as usize;
        let mut best: Option<(usize, &Backend)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let Some(b) = self.backends.get(i) else { continue };
            if !b.eligible() {
                continue;
            }
            let better = match best {
                None => true,
                // a.active / a.weight < b.active / b.weight, without division.
                Some((_, cur)) => {
                    u64::from(b.active) * u64::from(cur.weight) < u64::from(cur.active) * u64::from(b.weight)
                }
            };
            if better {
                best = Some((i, b));
            }
        }
        best.map(|(i, _)| BackendId(i as u16))
    }

    /// A health checker's verdict. Returns whether the backend's eligibility changed.
    pub fn set_healthy(&mut self, id: BackendId, healthy: bool) -> Result<bool, PoolError> {
        self.update(id, |b| b.healthy = healthy)
    }

    /// An operator's drain (or undrain).
    pub fn set_draining(&mut self, id: BackendId, draining: bool) -> Result<bool, PoolError> {
        self.update(id, |b| b.draining = draining)
    }

    pub fn set_weight(&mut self, id: BackendId, weight: u32) -> Result<bool, PoolError> {
        if weight > MAX_WEIGHT {
            return Err(PoolError::Weight);
        }
        let changed = self.backend(id).is_some_and(|b| b.weight != weight);
        self.update(id, |b| b.weight = weight)?;
        if changed && self.algorithm == Algorithm::Maglev {
            self.rebuild();
        }
        Ok(changed)
    }

    /// Adds a backend (the control socket's "add backend"); it starts healthy.
    pub fn add_backend(&mut self, addr: SocketAddrV4, weight: u32) -> Result<BackendId, PoolError> {
        if weight > MAX_WEIGHT {
            return Err(PoolError::Weight);
        }
        if self.find(addr).is_some() {
            return Err(PoolError::Duplicate);
        }
        if self.backends.len() + 1 >= usize::from(u16::MAX) {
            return Err(PoolError::TooMany);
        }
        self.backends.push(Backend { addr, weight, healthy: true, draining: false, active: 0 });
        self.rebuild();
        Ok(BackendId((self.backends.len() - 1) as u16))
    }

    pub fn on_flow_opened(&mut self, id: BackendId) {
        if let Some(b) = self.backends.get_mut(usize::from(id.0)) {
            b.active = b.active.saturating_add(1);
        }
    }

    pub fn on_flow_closed(&mut self, id: BackendId) {
        if let Some(b) = self.backends.get_mut(usize::from(id.0)) {
            b.active = b.active.saturating_sub(1);
        }
    }

    fn update(&mut self, id: BackendId, f: impl FnOnce(&mut Backend)) -> Result<bool, PoolError> {
        let b = self.backends.get_mut(usize::from(id.0)).ok_or(PoolError::NoSuchBackend)?;
        let before = b.eligible();
        f(b);
        let changed = before != b.eligible();
        if changed {
            self.rebuild();
        }
        Ok(changed)
    }

    fn rebuild(&mut self) {
        self.scratch.clear();
        self.scratch.extend(
            self.backends.iter().map(|b| (backend_identity(b.addr), if b.eligible() { b.weight } else { 0 })),
        );
        self.maglev.populate(&self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn be(i: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 10 + i), 5201)
    }

    const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), 80);

    fn client(i: u32) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 | (i >> 10)), 1024 + (i & 0x3ff) as u16)
    }

    fn assignments(p: &Pool, n: u32) -> Vec<Option<BackendId>> {
        (0..n).map(|i| p.pick(client(i), VIP)).collect()
    }

    #[test]
    fn names_round_trip() {
        for a in [Algorithm::Maglev, Algorithm::LeastConn] {
            assert_eq!(a.to_string().parse::<Algorithm>(), Ok(a));
        }
        assert!("round-robin".parse::<Algorithm>().is_err());
        assert!(is_prime(65_537) && !is_prime(65_536) && !is_prime(1) && is_prime(2));
    }

    #[test]
    fn construction_errors() {
        assert_eq!(Pool::new(Algorithm::Maglev, &[], DEFAULT_TABLE_SIZE).err(), Some(PoolError::Empty));
        assert_eq!(Pool::new(Algorithm::Maglev, &[(be(0), 1)], 65_536).err(), Some(PoolError::TableSize));
        assert_eq!(
            Pool::new(Algorithm::Maglev, &[(be(0), 1), (be(0), 2)], 251).err(),
            Some(PoolError::Duplicate)
        );
        assert_eq!(Pool::new(Algorithm::Maglev, &[(be(0), 257)], 251).err(), Some(PoolError::Weight));
    }

    #[test]
    fn maglev_spreads_evenly_and_is_deterministic() {
        let backends: Vec<_> = (0..10).map(|i| (be(i), 1)).collect();
        let p = Pool::new(Algorithm::Maglev, &backends, DEFAULT_TABLE_SIZE).unwrap();
        let q = Pool::new(Algorithm::Maglev, &backends, DEFAULT_TABLE_SIZE).unwrap();
        let a = assignments(&p, 100_000);
        assert_eq!(a, assignments(&q, 100_000));
        let mut counts = [0u32; 10];
        for b in a.iter().flatten() {
            counts[usize::from(b.0)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    /// Maglev's promise: a backend going down moves its own flows and hardly any other; coming back up
    /// restores the very same table.
    #[test]
    fn maglev_minimal_disruption() {
        let backends: Vec<_> = (0..10).map(|i| (be(i), 1)).collect();
        let mut p = Pool::new(Algorithm::Maglev, &backends, DEFAULT_TABLE_SIZE).unwrap();
        let n = 100_000;
        let before = assignments(&p, n);
        assert_eq!(p.set_healthy(BackendId(3), false), Ok(true));
        let after = assignments(&p, n);
        let mut moved_others = 0;
        for (b, a) in before.iter().zip(&after) {
            assert_ne!(*a, Some(BackendId(3)));
            if *b != Some(BackendId(3)) && b != a {
                moved_others += 1;
            }
        }
        // Measured: 0.24 % here (the Maglev paper promises a few percent at most); we hold it to 1 %.
        assert!(moved_others * 100 < n, "{moved_others} of {n} moved off healthy backends");
        assert_eq!(p.set_healthy(BackendId(3), true), Ok(true));
        assert_eq!(assignments(&p, n), before);
        // A change that does not touch eligibility does not rebuild anything.
        assert_eq!(p.set_healthy(BackendId(3), true), Ok(false));
    }

    /// The same promise across pool sizes and for whichever backend fails.
    #[test]
    fn maglev_disruption_across_pool_sizes() {
        let n_flows = 20_000;
        let mut worst = 0usize;
        for n in 2..=24u8 {
            let backends: Vec<_> = (0..n).map(|i| (be(i), 1)).collect();
            let mut p = Pool::new(Algorithm::Maglev, &backends, DEFAULT_TABLE_SIZE).unwrap();
            let before = assignments(&p, n_flows);
            let down = BackendId(u16::from((n.wrapping_mul(7) / 3) % n));
            p.set_healthy(down, false).unwrap();
            let after = assignments(&p, n_flows);
            let moved = before.iter().zip(&after).filter(|(b, a)| **b != Some(down) && b != a).count();
            worst = worst.max(moved);
            assert!(after.iter().all(|a| a.is_some() && *a != Some(down)));
        }
        assert!(
            worst * 100 < n_flows as usize,
            "worst: {worst} of {n_flows} flows moved off healthy backends"
        );
    }

    #[test]
    fn maglev_follows_weights() {
        let p = Pool::new(Algorithm::Maglev, &[(be(0), 1), (be(1), 3)], DEFAULT_TABLE_SIZE).unwrap();
        let a = assignments(&p, 100_000);
        let heavy = a.iter().filter(|b| **b == Some(BackendId(1))).count();
        assert!((73_000..77_000).contains(&heavy), "{heavy}");
    }

    #[test]
    fn draining_and_zero_weight_take_no_new_flows() {
        let mut p = Pool::new(Algorithm::Maglev, &[(be(0), 1), (be(1), 1)], 251).unwrap();
        p.set_draining(BackendId(0), true).unwrap();
        assert_eq!(p.backend(BackendId(0)).map(Backend::state), Some(BackendState::Draining));
        // Health cannot bring a drained backend back.
        assert_eq!(p.set_healthy(BackendId(0), true), Ok(false));
        assert!(assignments(&p, 1000).iter().all(|b| *b == Some(BackendId(1))));
        p.set_weight(BackendId(1), 0).unwrap();
        assert_eq!(p.eligible(), 0);
        assert!(assignments(&p, 100).iter().all(Option::is_none));
        assert_eq!(p.set_healthy(BackendId(9), true), Err(PoolError::NoSuchBackend));
    }

    #[test]
    fn least_conn_balances_by_weight() {
        let mut p = Pool::new(Algorithm::LeastConn, &[(be(0), 1), (be(1), 2), (be(2), 1)], 251).unwrap();
        for i in 0..400 {
            let b = p.pick(client(i), VIP).unwrap();
            p.on_flow_opened(b);
        }
        let active: Vec<u32> = p.backends().iter().map(|b| b.active).collect();
        assert_eq!(active, vec![100, 200, 100]);
        // Closing flows on one backend makes it the choice for the next ones.
        for _ in 0..50 {
            p.on_flow_closed(BackendId(2));
        }
        for i in 0..50 {
            assert_eq!(p.pick(client(1000 + i), VIP), Some(BackendId(2)));
            p.on_flow_opened(BackendId(2));
        }
        p.set_healthy(BackendId(2), false).unwrap();
        assert_ne!(p.pick(client(5), VIP), Some(BackendId(2)));
    }

    #[test]
    fn added_backend_takes_a_fair_share() {
        let backends: Vec<_> = (0..4).map(|i| (be(i), 1)).collect();
        let mut p = Pool::new(Algorithm::Maglev, &backends, DEFAULT_TABLE_SIZE).unwrap();
        let before = assignments(&p, 50_000);
        let id = p.add_backend(be(4), 1).unwrap();
        let after = assignments(&p, 50_000);
        let to_new = after.iter().filter(|b| **b == Some(id)).count();
        assert!((9_000..11_000).contains(&to_new), "{to_new}");
        let moved_elsewhere = before.iter().zip(&after).filter(|(b, a)| b != a && **a != Some(id)).count();
        assert!(moved_elsewhere < 1_500, "{moved_elsewhere}");
        assert_eq!(p.add_backend(be(4), 1), Err(PoolError::Duplicate));
    }
}
