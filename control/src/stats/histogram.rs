//! Latency histograms (`hdrhistogram`, nanoseconds) and how they travel from a core to the control
//! thread without ever stalling the core.
//!
//! Each core records into histograms of its own (`CoreHistograms::local`), touched by no other thread.
//! Beside them, per core, sits one `Mutex<Recorder>` slot per latency kind. Now and then the core calls
//! `publish`: for each kind it `try_lock`s the slot and, only if the control thread has emptied it since
//! the last hand-over, swaps its local histogram with the slot's empty one — a pointer swap, O(1). If the
//! slot is locked (the control thread is merging) or still full, the core keeps its samples and tries
//! next time: it never waits and never copies buckets. The control thread, on `stats`, locks each slot
//! (blocking is fine there), adds it into the merged histogram and resets it: the O(buckets) work is all
//! on the control side. A channel would do the same hand-over but needs a spare histogram to come back
//! for every one sent, which is this swap with more moving parts.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

/// Highest value a histogram tells apart (100 s); longer samples count as 100 s.
pub const MAX_NANOS: u64 = 100_000_000_000;
/// Significant digits: values are resolved to 0.1 %.
pub const SIGFIG: u8 = 3;

/// The latencies the box measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Latency {
    /// From a byte's arrival to its ACK leaving (what the ack gate adds).
    AckHold,
    /// From a delta's send to the standby's acknowledgment.
    ReplicationRtt,
    /// From the primary's death to the standby serving.
    Takeover,
}

impl Latency {
    pub const ALL: [Latency; 3] = [Latency::AckHold, Latency::ReplicationRtt, Latency::Takeover];
    pub fn as_str(self) -> &'static str {
        match self {
            Latency::AckHold => "ack_hold",
            Latency::ReplicationRtt => "replication_rtt",
            Latency::Takeover => "takeover",
        }
    }
    /// What the Prometheus summary says it measures.
    pub fn help(self) -> &'static str {
        match self {
            Latency::AckHold => "Time from a byte's arrival to the ACK that covers it.",
            Latency::ReplicationRtt => {
                "Time from sending a replication delta to the standby's acknowledgment."
            }
            Latency::Takeover => "Time from the primary's death to the standby serving.",
        }
    }
}

/// A histogram plus the exact sum of its samples (Prometheus summaries need `_sum`; buckets only
/// approximate it).
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    sum: u64,
}

impl Recorder {
    /// An empty recorder. Fails only if hdrhistogram refuses the constant bounds; callers create one
    /// and clone it, so that failure surfaces once, at startup.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Recorder { hist: Histogram::new_with_bounds(1, MAX_NANOS, SIGFIG)?, sum: 0 })
    }
    #[inline]
    pub fn record(&mut self, nanos: u64) {
        let v = nanos.min(MAX_NANOS);
        self.hist.saturating_record(v);
        self.sum = self.sum.saturating_add(v);
    }
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }
    fn reset(&mut self) {
        self.hist.reset();
        self.sum = 0;
    }
    fn add(&mut self, other: &Recorder) {
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                let _ = self.hist.record_n(v.value_iterated_to().min(MAX_NANOS), v.count_at_value());
            }
        }
        self.sum = self.sum.saturating_add(other.sum);
    }
    /// Percentiles of everything recorded.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.hist;
        let empty = h.is_empty();
        let q = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        LatencySummary {
            unit: "ns",
            count: h.len(),
            sum: self.sum,
            min: if empty { 0 } else { h.min() },
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            max: if empty { 0 } else { h.max() },
            mean: if empty { 0.0 } else { h.mean() },
        }
    }
}

/// Percentiles of one latency kind, as `stats` shows them. Values are in `unit` (nanoseconds),
/// resolved to 0.1 %; `sum` is exact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub unit: &'static str,
    pub count: u64,
    pub sum: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

/// One core's hand-over slots, one per latency kind.
#[derive(Debug)]
pub(crate) struct SharedSlots {
    slots: [Mutex<Recorder>; Latency::ALL.len()],
}

impl SharedSlots {
    pub(crate) fn new(empty: &Recorder) -> Self {
        SharedSlots { slots: std::array::from_fn(|_| Mutex::new(empty.clone())) }
    }

    /// Control side: merge every slot into `merged` and empty it, so the core may hand over again.
    pub(crate) fn drain_into(&self, merged: &mut [Recorder; Latency::ALL.len()]) {
        for (slot, into) in self.slots.iter().zip(merged.iter_mut()) {
            let mut pending = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if !pending.is_empty() {
                into.add(&pending);
                pending.reset();
            }
        }
    }
}

/// A core's own histograms and its end of the hand-over.
#[derive(Debug)]
pub(crate) struct CoreHistograms {
    local: [Recorder; Latency::ALL.len()],
    shared: Arc<SharedSlots>,
}

impl CoreHistograms {
    pub(crate) fn new(shared: Arc<SharedSlots>, empty: &Recorder) -> Self {
        CoreHistograms { local: std::array::from_fn(|_| empty.clone()), shared }
    }

    #[inline]
    pub(crate) fn record(&mut self, kind: Latency, nanos: u64) {
        if let Some(r) = self.local.get_mut(kind as usize) {
            r.record(nanos);
        }
    }

    pub(crate) fn publish(&mut self) {
        for (local, slot) in self.local.iter_mut().zip(self.shared.slots.iter()) {
            if local.is_empty() {
                continue;
            }
            let mut pending = match slot.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            if pending.is_empty() {
                std::mem::swap(&mut *pending, local);
            }
        }
    }
}
