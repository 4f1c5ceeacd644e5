//! The clock type of all protocol code.
//!
//! Protocol code never reads the system clock: the current time comes in as an argument, and deadlines go
//! out as return values. The runtime feeds it a monotonic clock; the simulator feeds it a virtual one, so a
//! whole run replays from its seed.

use core::ops::{Add, AddAssign, Sub};
pub use core::time::Duration;

/// A point in time, in nanoseconds since an arbitrary origin (the start of the box or of the simulation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the clock.
    pub const ZERO: Instant = Instant(0);
    /// Later than any time a box will ever see; used as "no deadline".
    pub const FAR_FUTURE: Instant = Instant(u64::MAX);

    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    pub const fn from_micros(micros: u64) -> Instant {
        Instant(micros.saturating_mul(1_000))
    }

    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis.saturating_mul(1_000_000))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub const fn as_micros(self) -> u64 {
        self.0 / 1_000
    }

    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// Time elapsed from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time elapsed from `earlier` to `self`, or `None` when `earlier` is later.
    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_nanos)
    }

    /// `self + d`, saturating at [`Instant::FAR_FUTURE`].
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self - d`, saturating at [`Instant::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(duration_nanos(d)))
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        self.saturating_sub(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl core::fmt::Display for Instant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000_000, (self.0 % 1_000_000_000) / 1_000)
    }
}

/// A source of [`Instant`]s. Only runtimes and simulators hold one; protocol code is handed the time.
pub trait Clock {
    fn now(&self) -> Instant;
}

/// The runtime's clock: monotonic system time since the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock { origin: std::time::Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant(duration_nanos(self.origin.elapsed()))
    }
}

/// The simulator's clock: it moves only when told to.
#[derive(Debug, Default)]
pub struct VirtualClock {
    now: core::cell::Cell<u64>,
}

impl VirtualClock {
    pub fn new(start: Instant) -> Self {
        VirtualClock { now: core::cell::Cell::new(start.0) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.set(self.now.get().saturating_add(duration_nanos(d)));
    }

    /// Moves the clock to `t`, if `t` is later than now (the clock never goes back).
    pub fn advance_to(&self, t: Instant) {
        if t.0 > self.now.get() {
            self.now.set(t.0);
        }
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        Instant(self.now.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::FAR_FUTURE + Duration::from_secs(1), Instant::FAR_FUTURE);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::from_millis(5) - Instant::from_millis(7), Duration::ZERO);
        assert_eq!(Instant::from_millis(7) - Instant::from_millis(5), Duration::from_millis(2));
        assert_eq!(Instant::from_millis(7).checked_duration_since(Instant::from_millis(8)), None);
    }

    #[test]
    fn virtual_clock_never_goes_back() {
        let c = VirtualClock::new(Instant::from_millis(10));
        c.advance_to(Instant::from_millis(5));
        assert_eq!(c.now(), Instant::from_millis(10));
        c.advance(Duration::from_millis(3));
        assert_eq!(c.now(), Instant::from_millis(13));
    }
}
