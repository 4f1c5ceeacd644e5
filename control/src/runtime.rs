//! The thin runtime around steppable boxes: a pinned thread per protocol core, polling in busy or adaptive
//! mode. Everything interesting happens in [`Steppable::step`], which is a plain function of the state and
//! the time; this module only decides when to call it again.

use dataplane::time::{Clock, Duration, MonotonicClock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use dataplane::step::{StepOutcome, Steppable};

/// How a core waits when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Never sleeps: lowest latency, one full CPU per core. For appliances with dedicated cores.
    Busy,
    /// Spins for `spin_iters` idle iterations, then sleeps with exponential backoff up to `max_sleep`
    /// (and never past the body's next deadline). For shared machines, CI and tests.
    Adaptive { spin_iters: u32, max_sleep: Duration },
}

impl Default for PollMode {
    fn default() -> Self {
        PollMode::Adaptive { spin_iters: 256, max_sleep: Duration::from_micros(500) }
    }
}

/// Where a core runs.
#[derive(Debug, Clone, Default)]
pub struct CoreSpec {
    pub name: String,
    /// CPU to pin the thread to; `None` leaves placement to the OS.
    pub pin: Option<usize>,
    pub mode: PollMode,
}

/// A running core; dropping the handle does not stop it, [`CoreHandle::stop`] does.
#[derive(Debug)]
pub struct CoreHandle<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T> CoreHandle<T> {
    /// Asks the core to stop and waits for it; returns its loop body back (for final statistics).
    pub fn stop(mut self) -> std::thread::Result<T> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(t) => t.join(),
            None => Err(Box::new("core thread already joined")),
        }
    }

    /// A flag that stops the core when set (shared with signal handlers and the control plane).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

/// Errors starting a core.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot spawn thread for core {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
}

/// Spawns a thread that pins itself (when asked), then calls `body.step(now)` until stopped.
pub fn spawn_core<B>(
    spec: CoreSpec,
    clock: MonotonicClock,
    mut body: B,
) -> Result<CoreHandle<B>, RuntimeError>
where
    B: Steppable + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let stop_in = stop.clone();
    let name = spec.name.clone();
    let thread = std::thread::Builder::new()
        .name(spec.name.clone())
        .spawn(move || {
            if let Some(cpu) = spec.pin {
                pin_current_thread(cpu);
            }
            run_loop(&mut body, &clock, spec.mode, &stop_in);
            body
        })
        .map_err(|source| RuntimeError::Spawn { name, source })?;
    Ok(CoreHandle { stop, thread: Some(thread) })
}

/// Pins the calling thread to `cpu`; a CPU that does not exist is reported and ignored, never fatal.
pub fn pin_current_thread(cpu: usize) -> bool {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == cpu) {
        Some(id) => core_affinity::set_for_current(id),
        None => {
            tracing::warn!(cpu, "cannot pin: no such CPU; running unpinned");
            false
        }
    }
}

/// The loop itself, separate from the thread so tests can run it on a bounded clock.
pub fn run_loop<B: Steppable>(body: &mut B, clock: &impl Clock, mode: PollMode, stop: &AtomicBool) {
    let mut idle: u32 = 0;
    let mut backoff = Duration::from_micros(1);
    while !stop.load(Ordering::Acquire) {
        let now = clock.now();
        let out = body.step(now);
        match mode {
            PollMode::Busy => core::hint::spin_loop(),
            PollMode::Adaptive { spin_iters, max_sleep } => {
                if out.work > 0 {
                    idle = 0;
                    backoff = Duration::from_micros(1);
                    continue;
                }
                idle = idle.saturating_add(1);
                if idle < spin_iters {
                    core::hint::spin_loop();
                    continue;
                }
                let until_deadline = out.next_deadline.saturating_duration_since(clock.now());
                let nap = backoff.min(max_sleep).min(until_deadline);
                if nap.is_zero() {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(nap);
                }
                backoff = (backoff * 2).min(max_sleep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::time::Instant;
    use std::sync::atomic::AtomicUsize;

    struct Counter {
        calls: Arc<AtomicUsize>,
        stop_after: usize,
        stop: Arc<AtomicBool>,
    }

    impl Steppable for Counter {
        fn step(&mut self, now: Instant) -> StepOutcome {
            let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.stop_after {
                self.stop.store(true, Ordering::Release);
            }
            StepOutcome { work: 0, next_deadline: now + Duration::from_millis(1) }
        }
    }

    #[test]
    fn adaptive_loop_runs_until_stopped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut body = Counter { calls: calls.clone(), stop_after: 600, stop: stop.clone() };
        let mode = PollMode::Adaptive { spin_iters: 16, max_sleep: Duration::from_micros(50) };
        run_loop(&mut body, &MonotonicClock::new(), mode, &stop);
        assert_eq!(calls.load(Ordering::Relaxed), 600);
    }

    #[test]
    fn spawned_core_stops_and_returns_its_body() {
        let calls = Arc::new(AtomicUsize::new(0));
        let never = Arc::new(AtomicBool::new(false));
        let body = Counter { calls: calls.clone(), stop_after: usize::MAX, stop: never };
        let spec = CoreSpec { name: "test-core".into(), pin: Some(usize::MAX), mode: PollMode::default() };
        let handle = spawn_core(spec, MonotonicClock::new(), body).unwrap();
        while calls.load(Ordering::Relaxed) < 10 {
            std::thread::yield_now();
        }
        let body = handle.stop().unwrap();
        assert!(body.calls.load(Ordering::Relaxed) >= 10);
    }
}
