//! SNAT source ports: which port the proxy uses toward a backend for a new server-side connection.
//!
//! One [`SnatPorts`] belongs to one server-side core (queue `k` of `K` core pairs) and hands out only
//! ports with `port % K == k`, so that the backend's replies, hashed by the NIC on the destination port,
//! land on the same core pair ([`queue_for_port`]). Ports are tracked per (SNAT ip, backend ip:port): the
//! same port may serve different backends at once, since the 4-tuples differ.
//!
//! A released port sits in quarantine (think TIME-WAIT) before it is handed out again, because the backend
//! may still hold the old connection and would answer a new SYN on the same 4-tuple with a stale ACK.

use crate::time::{Duration, Instant};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;

/// The core pair (0..`queues`) whose server-side core receives the backend's replies to `port`.
pub const fn queue_for_port(port: u16, queues: u16) -> u16 {
    if queues == 0 {
        0
    } else {
        port % queues
    }
}

/// The first port at or after `from` that belongs to queue `k` of `queues`, if one exists below 65536.
pub fn port_for_queue(k: u16, queues: u16, from: u16) -> Option<u16> {
    if queues == 0 || k >= queues {
        return None;
    }
    let rem = from % queues;
    let step = (k + queues - rem) % queues;
    from.checked_add(step)
}

/// Why a port could not be allocated or released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnatError {
    #[error("no free SNAT port toward this backend")]
    Exhausted,
    #[error("port is not one of this core's SNAT ports")]
    NotOurs,
    #[error("port is not allocated")]
    NotAllocated,
    #[error("port is already allocated")]
    InUse,
    #[error("empty SNAT port range for this queue")]
    EmptyRange,
}

/// Counters of one allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatStats {
    pub allocated: u64,
    pub released: u64,
    pub exhausted: u64,
}

#[derive(Debug)]
struct Pool {
    used: Vec<u64>,
    quarantined: Vec<u64>,
    quarantine: VecDeque<(u32, Instant)>,
    cursor: u32,
    in_use: u32,
}

/// The SNAT port allocator of one server-side core. See the module docs.
#[derive(Debug)]
pub struct SnatPorts {
    first: u16,
    slots: u32,
    queues: u16,
    quarantine: Duration,
    pools: HashMap<([u8; 4], SocketAddrV4), Pool>,
    stats: SnatStats,
}

fn bit(words: &[u64], i: u32) -> bool {
    words.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set_bit(words: &mut [u64], i: u32, on: bool) {
    if let Some(w) = words.get_mut((i / 64) as usize) {
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}

impl SnatPorts {
    /// An allocator for queue `k` of `queues`, over the ports `lo..=hi` that belong to it.
    pub fn new(lo: u16, hi: u16, k: u16, queues: u16, quarantine: Duration) -> Result<SnatPorts, SnatError> {
        let first = port_for_queue(k, queues, lo).filter(|&p| p <= hi).ok_or(SnatError::EmptyRange)?;
        let slots = u32::from((hi - first) / queues) + 1;
        Ok(SnatPorts { first, slots, queues, quarantine, pools: HashMap::new(), stats: SnatStats::default() })
    }

    /// How many ports this core can use toward one backend.
    pub fn ports_per_backend(&self) -> u32 {
        self.slots
    }

    pub fn stats(&self) -> SnatStats {
        self.stats
    }

    /// Ports allocated (and not yet released) toward a backend; quarantined ports are not counted.
    pub fn in_use(&self, snat_ip: [u8; 4], backend: SocketAddrV4) -> u32 {
        self.pools.get(&(snat_ip, backend)).map_or(0, |p| p.in_use)
    }

    /// Whether `port` toward `backend` was released and rests in quarantine: the backend may still hold
    /// the connection that used it (waiting for the ACK of its FIN, say). A quarantine that has run out
    /// but was not yet swept (the next allocation toward the backend sweeps) still answers true.
    pub fn is_quarantined(&self, snat_ip: [u8; 4], backend: SocketAddrV4, port: u16) -> bool {
        match (self.slot_of(port), self.pools.get(&(snat_ip, backend))) {
            (Some(slot), Some(pool)) => bit(&pool.quarantined, slot),
            _ => false,
        }
    }

    fn slot_of(&self, port: u16) -> Option<u32> {
        let off = port.checked_sub(self.first)?;
        if off % self.queues != 0 {
            return None;
        }
        let slot = u32::from(off / self.queues);
        (slot < self.slots).then_some(slot)
    }

    fn port_of(&self, slot: u32) -> u16 {
        // slot < slots, so this is within lo..=hi by construction.
        (u32::from(self.first) + slot * u32::from(self.queues)) as u16
    }

    fn pool(&mut self, snat_ip: [u8; 4], backend: SocketAddrV4, now: Instant) -> &mut Pool {
        let words = self.slots.div_ceil(64) as usize;
        let pool = self.pools.entry((snat_ip, backend)).or_insert_with(|| Pool {
            used: vec![0; words],
            quarantined: vec![0; words],
            quarantine: VecDeque::new(),
            cursor: 0,
            in_use: 0,
        });
        // Release times are pushed in time order, so the front is always the first to come out.
        while let Some(&(slot, until)) = pool.quarantine.front() {
            if until > now {
                break;
            }
            pool.quarantine.pop_front();
            set_bit(&mut pool.used, slot, false);
            set_bit(&mut pool.quarantined, slot, false);
        }
        pool
    }

    /// A free port toward `backend` for this core's queue. Ports are handed out round-robin, so a
    /// released port is the last to be reused.
    pub fn allocate(
        &mut self,
        snat_ip: [u8; 4],
        backend: SocketAddrV4,
        now: Instant,
    ) -> Result<u16, SnatError> {
        let slots = self.slots;
        let pool = self.pool(snat_ip, backend, now);
        let found = find_free(&pool.used, pool.cursor, slots);
        let Some(slot) = found else {
            self.stats.exhausted += 1;
            return Err(SnatError::Exhausted);
        };
        set_bit(&mut pool.used, slot, true);
        pool.cursor = if slot + 1 >= slots { 0 } else { slot + 1 };
        pool.in_use += 1;
        self.stats.allocated += 1;
        Ok(self.port_of(slot))
    }

    /// Marks a specific port as in use: a standby installing flows it learned through replication.
    pub fn reserve(
        &mut self,
        snat_ip: [u8; 4],
        backend: SocketAddrV4,
        port: u16,
        now: Instant,
    ) -> Result<(), SnatError> {
        let slot = self.slot_of(port).ok_or(SnatError::NotOurs)?;
        let pool = self.pool(snat_ip, backend, now);
        if bit(&pool.used, slot) {
            return Err(SnatError::InUse);
        }
        set_bit(&mut pool.used, slot, true);
        pool.in_use += 1;
        self.stats.allocated += 1;
        Ok(())
    }

    /// Gives a port back; it becomes allocatable once the quarantine has passed.
    pub fn release(
        &mut self,
        snat_ip: [u8; 4],
        backend: SocketAddrV4,
        port: u16,
        now: Instant,
    ) -> Result<(), SnatError> {
        let slot = self.slot_of(port).ok_or(SnatError::NotOurs)?;
        let until = now + self.quarantine;
        let pool = self.pools.get_mut(&(snat_ip, backend)).ok_or(SnatError::NotAllocated)?;
        if !bit(&pool.used, slot) || bit(&pool.quarantined, slot) {
            return Err(SnatError::NotAllocated);
        }
        set_bit(&mut pool.quarantined, slot, true);
        pool.quarantine.push_back((slot, until));
        pool.in_use = pool.in_use.saturating_sub(1);
        self.stats.released += 1;
        Ok(())
    }
}

/// The first clear bit at or after `start` (wrapping), among `slots` bits.
fn find_free(words: &[u64], start: u32, slots: u32) -> Option<u32> {
    let scan = |from: u32, to: u32| -> Option<u32> {
        let mut i = from;
        while i < to {
            let w = words.get((i / 64) as usize).copied().unwrap_or(u64::MAX);
            let free = !w & (u64::MAX << (i % 64));
            if free != 0 {
                let slot = (i / 64) * 64 + free.trailing_zeros();
                return (slot < to).then_some(slot);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    };
    scan(start, slots).or_else(|| scan(0, start.min(slots)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const SNAT: [u8; 4] = [198, 18, 2, 1];

    fn be(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, last), 5201)
    }

    #[test]
    fn queue_arithmetic() {
        assert_eq!(port_for_queue(3, 4, 1000), Some(1003));
        assert_eq!(port_for_queue(0, 4, 1000), Some(1000));
        assert_eq!(port_for_queue(1, 4, 1003), Some(1005));
        assert_eq!(port_for_queue(4, 4, 1000), None);
        assert_eq!(port_for_queue(1, 2, u16::MAX), Some(u16::MAX));
        assert_eq!(port_for_queue(0, 2, u16::MAX), None);
        assert_eq!(port_for_queue(0, 0, 5), None);
        for p in [1000u16, 1001, 1002, 65000] {
            let q = port_for_queue(1, 3, p).unwrap();
            assert!(q >= p && q < p + 3);
            assert_eq!(queue_for_port(q, 3), 1);
        }
    }

    #[test]
    fn ports_belong_to_the_queue_and_range() {
        let mut s = SnatPorts::new(20000, 20099, 2, 4, Duration::from_secs(60)).unwrap();
        assert_eq!(s.ports_per_backend(), 25);
        let mut seen = Vec::new();
        for _ in 0..25 {
            let p = s.allocate(SNAT, be(10), Instant::ZERO).unwrap();
            assert_eq!(queue_for_port(p, 4), 2);
            assert!((20000..=20099).contains(&p));
            seen.push(p);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 25);
        assert_eq!(s.allocate(SNAT, be(10), Instant::ZERO), Err(SnatError::Exhausted));
        assert_eq!(s.stats().exhausted, 1);
        // Another backend has its own ports.
        assert!(s.allocate(SNAT, be(11), Instant::ZERO).is_ok());
        assert_eq!(s.in_use(SNAT, be(10)), 25);
    }

    #[test]
    fn quarantine_delays_reuse() {
        let q = Duration::from_secs(60);
        let mut s = SnatPorts::new(30000, 30003, 0, 1, q).unwrap();
        let ports: Vec<u16> = (0..4).map(|_| s.allocate(SNAT, be(10), Instant::ZERO).unwrap()).collect();
        let t1 = Instant::from_millis(1000);
        s.release(SNAT, be(10), ports[1], t1).unwrap();
        assert_eq!(s.release(SNAT, be(10), ports[1], t1), Err(SnatError::NotAllocated));
        assert_eq!(s.in_use(SNAT, be(10)), 3);
        assert_eq!(s.allocate(SNAT, be(10), t1 + q - Duration::from_nanos(1)), Err(SnatError::Exhausted));
        assert_eq!(s.allocate(SNAT, be(10), t1 + q), Ok(ports[1]));
    }

    #[test]
    fn release_and_reserve_check_their_input() {
        let mut s = SnatPorts::new(40000, 40009, 1, 2, Duration::ZERO).unwrap();
        assert_eq!(s.release(SNAT, be(10), 40001, Instant::ZERO), Err(SnatError::NotAllocated));
        assert_eq!(s.release(SNAT, be(10), 40002, Instant::ZERO), Err(SnatError::NotOurs));
        assert_eq!(s.release(SNAT, be(10), 50001, Instant::ZERO), Err(SnatError::NotOurs));
        s.reserve(SNAT, be(10), 40005, Instant::ZERO).unwrap();
        assert_eq!(s.reserve(SNAT, be(10), 40005, Instant::ZERO), Err(SnatError::InUse));
        let mut got: Vec<u16> = (0..4).map(|_| s.allocate(SNAT, be(10), Instant::ZERO).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![40001, 40003, 40007, 40009]);
        s.release(SNAT, be(10), 40005, Instant::ZERO).unwrap();
        assert_eq!(s.allocate(SNAT, be(10), Instant::ZERO), Ok(40005));
    }

    #[test]
    fn empty_ranges_are_refused() {
        assert_eq!(SnatPorts::new(100, 100, 1, 2, Duration::ZERO).err(), Some(SnatError::EmptyRange));
        assert_eq!(SnatPorts::new(100, 99, 0, 1, Duration::ZERO).err(), Some(SnatError::EmptyRange));
        assert_eq!(SnatPorts::new(100, 200, 2, 2, Duration::ZERO).err(), Some(SnatError::EmptyRange));
        let s = SnatPorts::new(65534, 65535, 1, 2, Duration::ZERO).unwrap();
        assert_eq!(s.ports_per_backend(), 1);
    }

    #[test]
    fn full_range_cycles_through_every_port() {
        let mut s = SnatPorts::new(1024, 65535, 0, 1, Duration::ZERO).unwrap();
        let n = s.ports_per_backend();
        assert_eq!(n, 64512);
        for _ in 0..n {
            s.allocate(SNAT, be(10), Instant::ZERO).unwrap();
        }
        assert_eq!(s.allocate(SNAT, be(10), Instant::ZERO), Err(SnatError::Exhausted));
        s.release(SNAT, be(10), 65535, Instant::ZERO).unwrap();
        assert_eq!(s.allocate(SNAT, be(10), Instant::ZERO), Ok(65535));
    }
}
