//! The ARP cache of one port, sans-IO: which MAC address an IPv4 next hop has, and which ARP requests to
//! send when it is not known.
//!
//! States of an entry, in the spirit of Linux's neighbour table:
//! - *incomplete*: asked for, no answer yet; packets for it wait in a small per-IP queue (the oldest is
//!   dropped, and counted, when it overflows); requests go out every `retry_interval`, at most
//!   `max_requests` times, after which the entry fails and its queued packets are dropped.
//! - *reachable*: learned within `reachable_time`.
//! - *stale*: older than that; still used, and the first use starts a re-probe (the same bounded retry
//!   schedule) while traffic keeps flowing. A stale entry that never answers is removed.
//! - *failed*: a negative entry, so a dead neighbour costs one request burst per `failed_hold`, not one
//!   per packet.
//!
//! Entries are learned from ARP replies and from requests addressed to us ([`NeighCache::learn`]), and
//! updated — never created — by gratuitous ARP ([`NeighCache::update`]): that is how a takeover's new
//! MAC is picked up at once. Only addresses on the port's subnet are learned; anything else goes through
//! the configured gateway ([`NeighCache::next_hop`]). Time comes in as an argument; nothing here sends.

use crate::time::{Duration, Instant};
use core::fmt;
use core::str::FromStr;
use std::collections::{vec_deque, HashMap, VecDeque};

/// An IPv4 subnet, `a.b.c.d/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    addr: [u8; 4],
    prefix: u8,
}

/// Text that is not `a.b.c.d/len` with `len` at most 32 and no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an IPv4 subnet (a.b.c.d/len, host bits zero)")]
pub struct ParseSubnetError;

impl Subnet {
    /// A subnet; `None` when `prefix` exceeds 32 or host bits are set.
    pub fn new(addr: [u8; 4], prefix: u8) -> Option<Subnet> {
        let s = Subnet { addr, prefix };
        (prefix <= 32 && u32::from_be_bytes(addr) & !s.mask() == 0).then_some(s)
    }

    /// The subnet of `prefix` bits (at most 32) that contains `ip`: host bits are cleared, so this
    /// always succeeds.
    pub fn containing(ip: [u8; 4], prefix: u8) -> Subnet {
        let prefix = prefix.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Subnet { addr: (u32::from_be_bytes(ip) & mask).to_be_bytes(), prefix }
    }

    pub fn addr(&self) -> [u8; 4] {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    pub fn contains(&self, ip: [u8; 4]) -> bool {
        u32::from_be_bytes(ip) & self.mask() == u32::from_be_bytes(self.addr)
    }

    /// Whether two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.addr;
        write!(f, "{a}.{b}.{c}.{d}/{}", self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = ParseSubnetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, len) = s.split_once('/').ok_or(ParseSubnetError)?;
        let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| ParseSubnetError)?;
        // Only plain decimal: "+24" or " 24" would parse as u8 in some spellings we do not want.
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseSubnetError);
        }
        let prefix: u8 = len.parse().map_err(|_| ParseSubnetError)?;
        Subnet::new(ip.octets(), prefix).ok_or(ParseSubnetError)
    }
}

/// Tuning of an ARP cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighConfig {
    /// Most entries held; a full cache evicts failed, then the least recently confirmed entries.
    pub capacity: usize,
    /// How long a learned address counts as fresh.
    pub reachable_time: Duration,
    pub retry_interval: Duration,
    /// Requests sent for one resolution before giving up (at least 1).
    pub max_requests: u8,
    /// How long a failed resolution is remembered.
    pub failed_hold: Duration,
    /// Packets that may wait for one address.
    pub queue_len: usize,
}

impl Default for NeighConfig {
    fn default() -> Self {
        NeighConfig {
            capacity: 4096,
            reachable_time: Duration::from_secs(30),
            retry_interval: Duration::from_secs(1),
            max_requests: 3,
            failed_hold: Duration::from_secs(3),
            queue_len: 8,
        }
    }
}

/// Counters of one cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighStats {
    pub requests: u64,
    pub learned: u64,
    pub failures: u64,
    /// Packets dropped: queue overflow, failed resolution, eviction.
    pub queue_drops: u64,
    /// Learned addresses refused because the cache was full of entries that could not be evicted.
    pub table_full: u64,
    /// ARP for addresses outside the subnet, ignored.
    pub off_subnet: u64,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Known([u8; 6]),
    /// Being resolved; ask again after the next [`NeighCache::learn`].
    Pending,
    /// Resolution failed recently; drop or answer with ICMP host unreachable.
    Unreachable,
}

/// What became of a packet handed to [`NeighCache::resolve`].
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved<P> {
    /// Send it now, to this MAC.
    Send([u8; 6], P),
    /// Queued until the address is learned; `dropped` is an older packet pushed out of the full queue.
    Queued { dropped: Option<P> },
    /// The address cannot be resolved (recent failure, or a full cache); the packet comes back.
    Unreachable(P),
}

/// Errors of construction and learning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NeighError {
    #[error("destination is off the subnet and no gateway is configured")]
    NoRoute,
    #[error("address is not on this port's subnet")]
    OffSubnet,
    #[error("the gateway is not on this port's subnet")]
    GatewayOffSubnet,
    #[error("the neighbour cache is full")]
    Full,
    #[error("capacity, queue length and request count must be at least 1")]
    Config,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Incomplete { next_request: Instant, requests_left: u8 },
    Reachable { mac: [u8; 6], until: Instant },
    Stale { mac: [u8; 6] },
    Probe { mac: [u8; 6], next_request: Instant, requests_left: u8 },
    Failed { until: Instant },
}

#[derive(Debug)]
struct Entry<P> {
    ip: [u8; 4],
    state: State,
    confirmed: Instant,
    queue: VecDeque<P>,
}

/// The ARP cache of one port. `P` is whatever the caller queues (a packet buffer handle).
#[derive(Debug)]
pub struct NeighCache<P> {
    cfg: NeighConfig,
    subnet: Subnet,
    gateway: Option<[u8; 4]>,
    // A Vec keeps poll's order deterministic; the map only finds entries.
    entries: Vec<Entry<P>>,
    index: HashMap<[u8; 4], usize>,
    stats: NeighStats,
}

impl<P> NeighCache<P> {
    pub fn new(cfg: NeighConfig, subnet: Subnet, gateway: Option<[u8; 4]>) -> Result<Self, NeighError> {
        if cfg.capacity == 0 || cfg.queue_len == 0 || cfg.max_requests == 0 {
            return Err(NeighError::Config);
        }
        if gateway.is_some_and(|g| !subnet.contains(g)) {
            return Err(NeighError::GatewayOffSubnet);
        }
        Ok(NeighCache {
            cfg,
            subnet,
            gateway,
            entries: Vec::with_capacity(cfg.capacity),
            index: HashMap::with_capacity(cfg.capacity),
            stats: NeighStats::default(),
        })
    }

    pub fn stats(&self) -> NeighStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The address whose MAC a packet to `dst` goes to: `dst` itself on the subnet, else the gateway.
    pub fn next_hop(&self, dst: [u8; 4]) -> Result<[u8; 4], NeighError> {
        if self.subnet.contains(dst) {
            Ok(dst)
        } else {
            self.gateway.ok_or(NeighError::NoRoute)
        }
    }

    /// The MAC of next hop `ip`, starting a resolution (or a re-probe of a stale entry) when needed.
    pub fn lookup(&mut self, ip: [u8; 4], now: Instant) -> Lookup {
        let Some(i) = self.index.get(&ip).copied() else {
            if !self.subnet.contains(ip) {
                self.stats.off_subnet += 1;
                return Lookup::Unreachable;
            }
            return match self.insert(ip, self.incomplete(now), now) {
                Some(_) => Lookup::Pending,
                None => Lookup::Unreachable,
            };
        };
        let cfg = self.cfg;
        let Some(e) = self.entries.get_mut(i) else { return Lookup::Unreachable };
        match e.state {
            State::Reachable { mac, until } => {
                if now >= until {
                    e.state = State::Probe { mac, next_request: now, requests_left: cfg.max_requests };
                }
                Lookup::Known(mac)
            }
            State::Stale { mac } => {
                e.state = State::Probe { mac, next_request: now, requests_left: cfg.max_requests };
                Lookup::Known(mac)
            }
            State::Probe { mac, .. } => Lookup::Known(mac),
            State::Incomplete { .. } => Lookup::Pending,
            State::Failed { until } if now >= until => {
                e.state = State::Incomplete { next_request: now, requests_left: cfg.max_requests };
                Lookup::Pending
            }
            State::Failed { .. } => Lookup::Unreachable,
        }
    }

    /// Looks up `ip` for a packet: hands it back to send, queues it, or hands it back as unreachable.
    pub fn resolve(&mut self, ip: [u8; 4], pkt: P, now: Instant) -> Resolved<P> {
        match self.lookup(ip, now) {
            Lookup::Known(mac) => Resolved::Send(mac, pkt),
            Lookup::Unreachable => Resolved::Unreachable(pkt),
            Lookup::Pending => {
                let limit = self.cfg.queue_len;
                let Some(e) = self.index.get(&ip).and_then(|&i| self.entries.get_mut(i)) else {
                    return Resolved::Unreachable(pkt);
                };
                let dropped = if e.queue.len() >= limit { e.queue.pop_front() } else { None };
                if dropped.is_some() {
                    self.stats.queue_drops += 1;
                }
                e.queue.push_back(pkt);
                Resolved::Queued { dropped }
            }
        }
    }

    /// Learns `ip` at `mac` from an ARP reply or a request addressed to us, creating the entry if needed.
    /// Returns the packets that were waiting for it, to send now in order.
    pub fn learn(
        &mut self,
        ip: [u8; 4],
        mac: [u8; 6],
        now: Instant,
    ) -> Result<vec_deque::Drain<'_, P>, NeighError> {
        if !self.subnet.contains(ip) {
            self.stats.off_subnet += 1;
            return Err(NeighError::OffSubnet);
        }
        let state = State::Reachable { mac, until: now + self.cfg.reachable_time };
        let i = match self.index.get(&ip) {
            Some(&i) => i,
            None => self.insert(ip, state, now).ok_or(NeighError::Full)?,
        };
        self.set_learned(i, state, now)
    }

    /// Updates an entry we already have from unsolicited ARP (gratuitous ARP, or a request not for us):
    /// a takeover announces the new holder of an address this way. Unknown addresses are not created,
    /// so a flood of ARP cannot fill the cache. Returns waiting packets, as [`Self::learn`] does.
    pub fn update(&mut self, ip: [u8; 4], mac: [u8; 6], now: Instant) -> Option<vec_deque::Drain<'_, P>> {
        let i = *self.index.get(&ip)?;
        let state = State::Reachable { mac, until: now + self.cfg.reachable_time };
        self.set_learned(i, state, now).ok()
    }

    /// Forgets an address (an operator's flush, or a port going down); its queued packets are dropped.
    pub fn forget(&mut self, ip: [u8; 4]) -> bool {
        match self.index.get(&ip).copied() {
            Some(i) => {
                self.remove(i);
                true
            }
            None => false,
        }
    }

    /// Appends to `requests` the addresses to send an ARP request for now, and moves timed-out
    /// resolutions to failed (dropping their queued packets) and stale probes out of the cache.
    pub fn poll(&mut self, now: Instant, requests: &mut Vec<[u8; 4]>) {
        let cfg = self.cfg;
        let mut i = 0;
        while i < self.entries.len() {
            let Some(e) = self.entries.get_mut(i) else { break };
            let mut drop_entry = false;
            match e.state {
                State::Incomplete { next_request, requests_left } if next_request <= now => {
                    if requests_left == 0 {
                        self.stats.failures += 1;
                        self.stats.queue_drops += e.queue.len() as u64;
                        e.queue.clear();
                        e.state = State::Failed { until: now + cfg.failed_hold };
                    } else {
                        requests.push(e.ip);
                        self.stats.requests += 1;
                        e.state = State::Incomplete {
                            next_request: now + cfg.retry_interval,
                            requests_left: requests_left - 1,
                        };
                    }
                }
                State::Probe { mac, next_request, requests_left } if next_request <= now => {
                    if requests_left == 0 {
                        self.stats.failures += 1;
                        drop_entry = true;
                    } else {
                        requests.push(e.ip);
                        self.stats.requests += 1;
                        e.state = State::Probe {
                            mac,
                            next_request: now + cfg.retry_interval,
                            requests_left: requests_left - 1,
                        };
                    }
                }
                State::Reachable { mac, until } if until <= now => e.state = State::Stale { mac },
                State::Failed { until } if until <= now => drop_entry = true,
                _ => {}
            }
            if drop_entry {
                // swap_remove brings the last entry here; look at index i again.
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// When [`Self::poll`] next has work.
    pub fn next_deadline(&self) -> Instant {
        self.entries
            .iter()
            .map(|e| match e.state {
                State::Incomplete { next_request, .. } | State::Probe { next_request, .. } => next_request,
                State::Reachable { until, .. } | State::Failed { until } => until,
                State::Stale { .. } => Instant::FAR_FUTURE,
            })
            .min()
            .unwrap_or(Instant::FAR_FUTURE)
    }

    fn incomplete(&self, now: Instant) -> State {
        State::Incomplete { next_request: now, requests_left: self.cfg.max_requests }
    }

    fn set_learned(
        &mut self,
        i: usize,
        state: State,
        now: Instant,
    ) -> Result<vec_deque::Drain<'_, P>, NeighError> {
        self.stats.learned += 1;
        let e = self.entries.get_mut(i).ok_or(NeighError::Full)?;
        e.state = state;
        e.confirmed = now;
        Ok(e.queue.drain(..))
    }

    fn insert(&mut self, ip: [u8; 4], state: State, now: Instant) -> Option<usize> {
        if self.entries.len() >= self.cfg.capacity && !self.evict() {
            self.stats.table_full += 1;
            return None;
        }
        self.entries.push(Entry {
            ip,
            state,
            confirmed: now,
            queue: VecDeque::with_capacity(self.cfg.queue_len),
        });
        let i = self.entries.len() - 1;
        self.index.insert(ip, i);
        Some(i)
    }

    // Failed entries go first, then the resolved entry confirmed longest ago. Entries being resolved
    // are never evicted: they hold packets and an answer is on its way.
    fn evict(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.state {
                State::Failed { .. } => Some((0u8, Instant::ZERO, i)),
                State::Reachable { .. } | State::Stale { .. } | State::Probe { .. } => {
                    Some((1, e.confirmed, i))
                }
                State::Incomplete { .. } => None,
            })
            .min();
        match victim {
            Some((_, _, i)) => {
                self.remove(i);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, i: usize) {
        if i >= self.entries.len() {
            return;
        }
        let e = self.entries.swap_remove(i);
        self.stats.queue_drops += e.queue.len() as u64;
        self.index.remove(&e.ip);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.ip, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: Subnet = Subnet { addr: [198, 18, 2, 0], prefix: 24 };
    const B: [u8; 4] = [198, 18, 2, 10];
    const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC2: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn cache(cfg: NeighConfig) -> NeighCache<u32> {
        NeighCache::new(cfg, NET, Some([198, 18, 2, 254])).unwrap()
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn polled(c: &mut NeighCache<u32>, now: Instant) -> Vec<[u8; 4]> {
        let mut v = Vec::new();
        c.poll(now, &mut v);
        v
    }

    #[test]
    fn subnets() {
        let s: Subnet = "198.18.1.0/24".parse().unwrap();
        assert!(s.contains([198, 18, 1, 77]));
        assert!(!s.contains([198, 18, 2, 1]));
        assert_eq!(s.to_string(), "198.18.1.0/24");
        for bad in ["198.18.1.1/24", "198.18.1.0/33", "198.18.1.0", "198.18.1.0/", "198.18.1.0/+4", "x/8"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        let all: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains([1, 2, 3, 4]));
        assert!(all.overlaps(&s));
        assert!(!s.overlaps(&NET));
        assert_eq!(Subnet::containing([198, 18, 2, 77], 24), NET);
        assert_eq!(Subnet::containing([1, 2, 3, 4], 40).to_string(), "1.2.3.4/32");
    }

    #[test]
    fn gateway_and_routes() {
        let c = cache(NeighConfig::default());
        assert_eq!(c.next_hop(B), Ok(B));
        assert_eq!(c.next_hop([8, 8, 8, 8]), Ok([198, 18, 2, 254]));
        let c: NeighCache<u32> = NeighCache::new(NeighConfig::default(), NET, None).unwrap();
        assert_eq!(c.next_hop([8, 8, 8, 8]), Err(NeighError::NoRoute));
        assert_eq!(
            NeighCache::<u32>::new(NeighConfig::default(), NET, Some([10, 0, 0, 1])).err(),
            Some(NeighError::GatewayOffSubnet)
        );
    }

    #[test]
    fn resolve_queue_learn_and_send() {
        let mut c = cache(NeighConfig { queue_len: 2, ..NeighConfig::default() });
        assert_eq!(c.resolve(B, 1, ms(0)), Resolved::Queued { dropped: None });
        assert_eq!(c.resolve(B, 2, ms(0)), Resolved::Queued { dropped: None });
        assert_eq!(c.resolve(B, 3, ms(0)), Resolved::Queued { dropped: Some(1) });
        assert_eq!(c.stats().queue_drops, 1);
        assert_eq!(polled(&mut c, ms(0)), vec![B]);
        assert_eq!(polled(&mut c, ms(500)), Vec::<[u8; 4]>::new());
        let waiting: Vec<u32> = c.learn(B, MAC1, ms(600)).unwrap().collect();
        assert_eq!(waiting, vec![2, 3]);
        assert_eq!(c.resolve(B, 4, ms(700)), Resolved::Send(MAC1, 4));
        assert_eq!(c.lookup(B, ms(700)), Lookup::Known(MAC1));
    }

    #[test]
    fn bounded_retries_then_failure_then_retry_later() {
        let cfg = NeighConfig { max_requests: 3, ..NeighConfig::default() };
        let mut c = cache(cfg);
        assert_eq!(c.resolve(B, 1, ms(0)), Resolved::Queued { dropped: None });
        let mut sent = 0;
        let mut t = 0;
        while t <= 5_000 {
            sent += polled(&mut c, ms(t)).len();
            t += 100;
        }
        assert_eq!(sent, 3);
        assert_eq!(c.stats().failures, 1);
        assert_eq!(c.stats().queue_drops, 1);
        // Failed at 3 s; remembered for `failed_hold` (3 s) and removed by poll at 6 s.
        assert_eq!(c.lookup(B, ms(5_000)), Lookup::Unreachable);
        assert_eq!(c.resolve(B, 2, ms(5_000)), Resolved::Unreachable(2));
        polled(&mut c, ms(6_000));
        assert!(c.is_empty());
        assert_eq!(c.lookup(B, ms(6_000)), Lookup::Pending);
        assert_eq!(polled(&mut c, ms(6_000)), vec![B]);
    }

    #[test]
    fn stale_entries_keep_working_while_reprobed() {
        let mut c = cache(NeighConfig::default());
        assert!(c.learn(B, MAC1, ms(0)).is_ok());
        assert_eq!(c.next_deadline(), ms(30_000));
        polled(&mut c, ms(30_000));
        // Stale, unused: no requests at all.
        assert_eq!(polled(&mut c, ms(40_000)), Vec::<[u8; 4]>::new());
        assert_eq!(c.next_deadline(), Instant::FAR_FUTURE);
        // First use: still sent, and a re-probe starts.
        assert_eq!(c.lookup(B, ms(50_000)), Lookup::Known(MAC1));
        assert_eq!(polled(&mut c, ms(50_000)), vec![B]);
        // The neighbour answers with a new MAC.
        assert!(c.learn(B, MAC2, ms(50_010)).is_ok());
        assert_eq!(c.lookup(B, ms(50_020)), Lookup::Known(MAC2));
        // Expired again, and this time nobody answers: removed after three requests.
        assert_eq!(c.lookup(B, ms(80_010)), Lookup::Known(MAC2));
        let mut sent = 0;
        for t in (80_010..=84_010).step_by(100) {
            sent += polled(&mut c, ms(t)).len();
        }
        assert_eq!(sent, 3);
        assert!(c.is_empty());
    }

    #[test]
    fn gratuitous_arp_updates_but_never_creates() {
        let mut c = cache(NeighConfig::default());
        assert!(c.update(B, MAC1, ms(0)).is_none());
        assert!(c.is_empty());
        assert!(c.learn(B, MAC1, ms(0)).is_ok());
        assert!(c.update(B, MAC2, ms(10)).is_some());
        assert_eq!(c.lookup(B, ms(20)), Lookup::Known(MAC2));
        // Off-subnet answers are ignored and counted.
        assert_eq!(c.learn([8, 8, 8, 8], MAC1, ms(0)).err(), Some(NeighError::OffSubnet));
        assert_eq!(c.lookup([8, 8, 8, 8], ms(0)), Lookup::Unreachable);
        assert_eq!(c.stats().off_subnet, 2);
    }

    #[test]
    fn full_cache_evicts_oldest_resolved_never_pending() {
        let mut c = cache(NeighConfig { capacity: 3, ..NeighConfig::default() });
        let ip = |i: u8| [198, 18, 2, i];
        assert!(c.learn(ip(1), MAC1, ms(0)).is_ok());
        assert!(c.learn(ip(2), MAC1, ms(10)).is_ok());
        assert_eq!(c.lookup(ip(3), ms(20)), Lookup::Pending);
        // ip(1) is the oldest resolved entry: it makes room.
        assert_eq!(c.lookup(ip(4), ms(30)), Lookup::Pending);
        assert_eq!(c.len(), 3);
        assert!(c.update(ip(1), MAC2, ms(40)).is_none());
        assert!(c.learn(ip(5), MAC1, ms(50)).is_ok()); // evicts ip(2)
        assert!(c.update(ip(2), MAC2, ms(60)).is_none());
        // Now only pending entries and one fresh one; two more pending fill what is left.
        assert_eq!(c.lookup(ip(6), ms(70)), Lookup::Pending); // evicts ip(5)
        assert_eq!(c.lookup(ip(7), ms(80)), Lookup::Unreachable);
        assert_eq!(c.stats().table_full, 1);
        assert_eq!(c.lookup(ip(3), ms(90)), Lookup::Pending);
        assert_eq!(c.lookup(ip(4), ms(90)), Lookup::Pending);
        assert!(c.forget(ip(4)));
        assert!(!c.forget(ip(4)));
        assert_eq!(c.lookup(ip(3), ms(95)), Lookup::Pending);
        assert_eq!(c.lookup(ip(6), ms(95)), Lookup::Pending);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xa4b),
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Any sequence of lookups, packets, answers (wanted or not) and polls keeps the cache within its
        /// bounds, and every packet handed in comes back out exactly once: sent, returned, or counted dropped.
        #[test]
        fn bounded_and_no_packet_lost_silently(
            ops in proptest::collection::vec((0u8..5, 0u8..12, 0u64..200), 1..300),
        ) {
            let cfg = NeighConfig { capacity: 6, queue_len: 3, ..NeighConfig::default() };
            let mut c: NeighCache<u32> = NeighCache::new(cfg, NET, None).unwrap();
            let mut now = Instant::ZERO;
            let (mut handed, mut out) = (0u64, 0u64);
            let mut reqs = Vec::new();
            for (op, host, dt) in ops {
                now += Duration::from_millis(dt * 50);
                // Hosts 10 and 11 are off the subnet.
                let ip = if host >= 10 { [10, 0, 0, host] } else { [198, 18, 2, host] };
                match op {
                    0 => { c.lookup(ip, now); }
                    1 => {
                        handed += 1;
                        match c.resolve(ip, 0, now) {
                            Resolved::Send(..) | Resolved::Unreachable(_) => out += 1,
                            // An overflow drop is counted in queue_drops (and handed back).
                            Resolved::Queued { .. } => {}
                        }
                    }
                    2 => { out += c.learn(ip, MAC1, now).map(|d| d.count() as u64).unwrap_or(0); }
                    3 => { out += c.update(ip, MAC2, now).map(|d| d.count() as u64).unwrap_or(0); }
                    _ => { reqs.clear(); c.poll(now, &mut reqs); }
                }
                proptest::prop_assert!(c.len() <= cfg.capacity);
                proptest::prop_assert!(c.entries.iter().all(|e| e.queue.len() <= cfg.queue_len));
                let queued: usize = c.entries.iter().map(|e| e.queue.len()).sum();
                proptest::prop_assert_eq!(handed, out + queued as u64 + c.stats().queue_drops);
            }
        }
    }

    #[test]
    fn config_is_checked() {
        let bad = NeighConfig { max_requests: 0, ..NeighConfig::default() };
        assert_eq!(NeighCache::<u32>::new(bad, NET, None).err(), Some(NeighError::Config));
    }
}
