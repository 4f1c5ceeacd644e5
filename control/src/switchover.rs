//! A planned switchover of a running primary (`holdfastctl switchover`): core A and core B stop taking
//! frames in, core A offers every flow's progress, and once the standby has confirmed all of it the
//! primary's heartbeats ask the standby to take over now (the `HAND_OVER` heartbeat flag). When the
//! standby's heartbeats arrive in the next epoch, this box steps down: its run ends "switched over".
//!
//! Each wait is bounded by the request's timeout. A switchover that times out is called off (flag
//! cleared, intake resumed) and answered with an error that says which step did not finish.

use crate::boxctl::SwitchoverHook;
use crate::ctl::protocol::{CtlError, SwitchoverArgs};
use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};
use dataplane::proxy::control::{Answer, Command, ControlError, CoreRequest};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a switchover waits, all steps together, when the request names no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one core may take to answer one request.
const CORE_ANSWER: Duration = Duration::from_secs(2);

/// The primary's handles on its replication link, taken before the link moves into core A.
#[derive(Debug, Clone)]
pub struct Handover {
    /// Set: the heartbeats ask the standby to take over now.
    pub flag: Arc<AtomicBool>,
    /// The later epoch heard from the peer (0: none yet).
    pub superseded: Arc<AtomicU32>,
    /// The epoch this primary serves in.
    pub epoch: u32,
}

/// A running primary's switchover: what the control socket's `switchover` calls.
#[derive(Debug)]
pub struct Switchover {
    cores: [Sender<CoreRequest>; 2],
    handover: Handover,
    /// One switchover at a time.
    busy: Mutex<()>,
    /// The epoch the standby took over in, once it has (0 before).
    done: AtomicU32,
}

impl Switchover {
    pub fn new(cores: [Sender<CoreRequest>; 2], handover: Handover) -> Switchover {
        Switchover { cores, handover, busy: Mutex::new(()), done: AtomicU32::new(0) }
    }

    /// The hook `BoxControl::with_switchover` takes.
    pub fn hook(self: &Arc<Self>) -> SwitchoverHook {
        let me = self.clone();
        Arc::new(move |args: &SwitchoverArgs| me.run(args))
    }

    /// The epoch the standby took over in after a switchover this box asked for; `None` before.
    pub fn switched_over(&self) -> Option<u32> {
        match self.done.load(Ordering::Acquire) {
            0 => None,
            e => Some(e),
        }
    }

    /// The epoch this primary serves in.
    pub fn epoch(&self) -> u32 {
        self.handover.epoch
    }

    /// Whether this box has asked its standby to take over (the flag is up): a later epoch heard now is
    /// the switchover completing, not a fence.
    pub fn handing_over(&self) -> bool {
        self.handover.flag.load(Ordering::Acquire)
    }

    /// Runs a switchover to its end, or calls it off when a step does not finish in time.
    pub fn run(&self, args: &SwitchoverArgs) -> Result<Value, CtlError> {
        let Ok(_one) = self.busy.try_lock() else {
            return Err(CtlError::unavailable("a switchover is already under way"));
        };
        if let Some(e) = self.switched_over() {
            return Err(CtlError::unavailable(format!(
                "already switched over: the standby serves in epoch {e}"
            )));
        }
        let timeout = args.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let started = Instant::now();
        let deadline = started + timeout;
        match self.ask(0, Command::Snapshot)? {
            Answer::Client(s) if s.standby_attached == Some(true) => {}
            Answer::Client(_) => {
                return Err(CtlError::unavailable("no standby attached: there is nobody to switch over to"))
            }
            other => return Err(CtlError::internal(format!("core A answered {other:?}"))),
        }
        self.done_cmd(0, Command::Intake { stop: true })?;
        if let Err(e) = self.done_cmd(1, Command::Intake { stop: true }) {
            self.resume();
            return Err(e);
        }
        tracing::warn!(timeout_ms = timeout.as_millis(), "switchover: intake stopped, syncing the standby");
        // Step 1: everything offered is confirmed.
        loop {
            match self.ask(0, Command::Synced) {
                Ok(Answer::Done(Ok(()))) => break,
                Ok(Answer::Done(Err(ControlError::NotSynced))) => {}
                Ok(other) => {
                    self.resume();
                    return Err(CtlError::internal(format!("core A answered {other:?}")));
                }
                Err(e) => {
                    self.resume();
                    return Err(e);
                }
            }
            if Instant::now() >= deadline {
                self.resume();
                return Err(CtlError::unavailable(format!(
                    "switchover called off: the standby did not confirm everything within {} ms; intake \
                     resumed, this box still serves",
                    timeout.as_millis()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let synced = started.elapsed();
        // Step 2: ask the standby to take over, and wait for it to speak in its new epoch.
        self.handover.flag.store(true, Ordering::Release);
        loop {
            let heard = self.handover.superseded.load(Ordering::Acquire);
            if heard > self.handover.epoch {
                self.done.store(heard, Ordering::Release);
                tracing::warn!(epoch = heard, "switchover: the standby took over");
                return Ok(json!({
                    "switched_over": true,
                    "epoch": heard,
                    "sync_ms": synced.as_secs_f64() * 1e3,
                    "total_ms": started.elapsed().as_secs_f64() * 1e3,
                }));
            }
            if Instant::now() >= deadline {
                self.handover.flag.store(false, Ordering::Release);
                self.resume();
                return Err(CtlError::unavailable(format!(
                    "switchover called off: the standby did not take over within {} ms; intake resumed, \
                     this box still serves",
                    timeout.as_millis()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Takes frames in again on both cores (best effort: a core that does not answer is reported).
    fn resume(&self) {
        for core in [0, 1] {
            if let Err(e) = self.done_cmd(core, Command::Intake { stop: false }) {
                tracing::error!(
                    core,
                    "switchover called off, but intake could not be resumed: {}",
                    e.message
                );
            }
        }
    }

    fn done_cmd(&self, core: usize, command: Command) -> Result<(), CtlError> {
        match self.ask(core, command)? {
            Answer::Done(Ok(())) => Ok(()),
            other => Err(CtlError::internal(format!("core answered {other:?}"))),
        }
    }

    fn ask(&self, core: usize, command: Command) -> Result<Answer, CtlError> {
        let which = if core == 0 { "core A" } else { "core B" };
        let tx = self.cores.get(core).ok_or_else(|| CtlError::internal("no such core"))?;
        let (req, rx) = CoreRequest::new(command);
        match tx.try_send(req) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(CtlError::unavailable(format!("{which} has too many control requests queued")))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(CtlError::unavailable(format!("{which} is not running")))
            }
        }
        rx.recv_timeout(CORE_ANSWER).map_err(|e| match e {
            RecvTimeoutError::Timeout => CtlError::unavailable(format!("{which} did not answer in time")),
            RecvTimeoutError::Disconnected => {
                CtlError::unavailable(format!("{which} stopped before answering"))
            }
        })
    }
}
