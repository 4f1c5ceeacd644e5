//! The shape of a steppable loop body: what one call did and when to call again.
//!
//! A protocol core's loop body is a plain function of its state and the time. The runtime (pinned threads,
//! busy or adaptive polling) and the simulator (one thread, virtual clock) both drive it through
//! [`Steppable`], so the code that runs on the NIC is the code the simulator replays.

use crate::time::Instant;

/// What one call of a loop body did, and when it wants to be called again at the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutcome {
    /// Packets, messages or timers handled; zero means the call found nothing to do.
    pub work: usize,
    /// The next time the body has something to do by itself (a timer), or [`Instant::FAR_FUTURE`].
    pub next_deadline: Instant,
}

/// A protocol core's loop body (or any other box part) that a runtime or a simulator drives.
pub trait Steppable {
    fn step(&mut self, now: Instant) -> StepOutcome;
}
