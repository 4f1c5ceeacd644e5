//! The failure detector and the box's role state machine, sans-IO.
//!
//! Two independent paths tell whether the peer lives: heartbeats on the replication channel, and a
//! client-LAN probe whose result the caller reports (the standby asks "did the VIP holder answer on the
//! client LAN?", the primary asks "can I still reach the client LAN?"). Only positive evidence counts as
//! death: a path is dead when it has been silent past its timeout *and* a probe failed since the last
//! answer (a caller that never probes never triggers a takeover).
//!
//! - Standby: the primary is dead only when BOTH paths say so; then the epoch is bumped and the role
//!   becomes TakingOver. Heartbeats lost while the LAN path still sees the primary is "replication link
//!   down, primary alive": reported, and no takeover (a broken replication link alone never makes two
//!   active boxes).
//! - Primary: heartbeats lost means the standby is gone (run degraded). Heartbeats lost *and* the client
//!   LAN unreachable means this box is isolated: it fences itself, `isolation_timeout` after the silence
//!   began, which the configuration keeps strictly shorter than the standby's takeover delay, so an
//!   isolated primary goes quiet before the standby speaks.
//! - Epochs fence stale boxes: a box that sees a higher epoch from its peer steps down (Fenced), and
//!   heartbeats from a lower epoch are ignored and counted. Two primaries in the same epoch (which the
//!   rules above should never allow) resolve by the lower box id.
//!
//! ```text
//!   Standby ──both paths dead──▶ TakingOver ──takeover_complete()──▶ Primary
//!      ▲                            │ higher epoch                     │ higher epoch, isolated,
//!      │ rejoin_as_standby()        ▼                                  ▼ or same-epoch tie lost
//!      └─────────────────────────── Fenced ◀───────────────────────────┘
//! ```

use dataplane::time::{Duration, Instant};

use crate::delta::{Heartbeat, Role};

/// Detector settings. The defaults detect a dead primary in 5–6 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    pub heartbeat_interval: Duration,
    /// The standby declares the replication path dead after this many silent intervals.
    pub miss_threshold: u32,
    /// The standby declares the client-LAN path dead after this long without an answer.
    pub lan_timeout: Duration,
    /// A primary that has heard neither heartbeats nor the client LAN for this long fences itself.
    pub isolation_timeout: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            heartbeat_interval: Duration::from_millis(1),
            miss_threshold: 5,
            lan_timeout: Duration::from_millis(5),
            isolation_timeout: Duration::from_millis(2),
        }
    }
}

/// A configuration that could let two boxes be active at once, or never detect anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DetectorConfigError {
    #[error("heartbeat_interval and miss_threshold must be non-zero")]
    Zero,
    #[error("isolation_timeout plus two heartbeat intervals must not exceed the standby's takeover delay")]
    IsolationTooSlow,
}

impl DetectorConfig {
    /// How long the replication path must be silent before the standby calls it dead.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_interval.saturating_mul(self.miss_threshold)
    }

    pub fn validate(&self) -> Result<(), DetectorConfigError> {
        if self.heartbeat_interval.is_zero() || self.miss_threshold == 0 {
            return Err(DetectorConfigError::Zero);
        }
        // The standby's and the primary's views of a silence start up to an interval apart, and a
        // probe failure may come an interval late: keep two intervals between fencing and takeover.
        let takeover = self.heartbeat_timeout().min(self.lan_timeout);
        if self.isolation_timeout.is_zero()
            || self.isolation_timeout.saturating_add(self.heartbeat_interval.saturating_mul(2)) > takeover
        {
            return Err(DetectorConfigError::IsolationTooSlow);
        }
        Ok(())
    }
}

/// Why a box stopped transmitting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepDownReason {
    /// The peer announced a higher epoch: it took over.
    HigherEpoch,
    /// Neither the replication link nor the client LAN answers: the standby will take over.
    Isolated,
    /// Both boxes are primary in the same epoch; the lower box id keeps the role.
    TieBreak,
}

/// What the caller must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Standby: the primary is dead by both paths. Claim the VIP and the SNAT address, install the
    /// stored flows with this epoch, then call [`Detector::takeover_complete`].
    TakeOver { epoch: u32 },
    /// Standby: heartbeats stopped but the primary answers on the client LAN: do not take over.
    ReplicationLinkDown,
    /// Standby: heartbeats came back.
    ReplicationLinkUp,
    /// Primary: the standby went silent: run degraded (per listener: serve under `backend`, or refuse).
    StandbyLost,
    /// Primary: the standby answers again (it needs a fresh snapshot if it restarted).
    StandbyBack,
    /// Stop transmitting on the data ports at once.
    StepDown { reason: StepDownReason, peer_epoch: u32 },
}

/// The detector and role of one box.
#[derive(Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    box_id: u32,
    role: Role,
    epoch: u32,
    last_heartbeat: Instant,
    lan_last_answer: Instant,
    lan_last_failure: Option<Instant>,
    peer_silent_reported: bool,
    stale_heartbeats: u64,
}

impl Detector {
    /// A detector for a box starting in `role` (Primary or Standby) at `epoch`. Both paths count as
    /// alive at `now`.
    pub fn new(
        cfg: DetectorConfig,
        box_id: u32,
        role: Role,
        epoch: u32,
        now: Instant,
    ) -> Result<Self, DetectorConfigError> {
        cfg.validate()?;
        Ok(Detector {
            cfg,
            box_id,
            role,
            epoch,
            last_heartbeat: now,
            lan_last_answer: now,
            lan_last_failure: None,
            peer_silent_reported: false,
            stale_heartbeats: 0,
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Heartbeats from a lower epoch, ignored.
    pub fn stale_heartbeats(&self) -> u64 {
        self.stale_heartbeats
    }

    /// Whether this box may transmit on the data ports (and answer for the VIP).
    pub fn is_active(&self) -> bool {
        matches!(self.role, Role::Primary | Role::TakingOver)
    }

    fn heartbeats_dead(&self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.last_heartbeat) >= timeout
    }

    fn lan_dead(&self, now: Instant, timeout: Duration) -> bool {
        self.lan_last_failure.is_some_and(|f| f >= self.lan_last_answer)
            && now.saturating_duration_since(self.lan_last_answer) >= timeout
    }

    /// The replication path's verdict at `now`, as the standby sees it.
    pub fn replication_path_dead(&self, now: Instant) -> bool {
        self.heartbeats_dead(now, self.cfg.heartbeat_timeout())
    }

    fn step_down(&mut self, reason: StepDownReason, peer_epoch: u32) -> Option<Event> {
        if !self.is_active() {
            return None;
        }
        self.role = Role::Fenced;
        Some(Event::StepDown { reason, peer_epoch })
    }

    /// A heartbeat from the peer box `peer_box` arrived (the channel reports them, even from a higher
    /// epoch).
    pub fn on_heartbeat(&mut self, now: Instant, peer_box: u32, hb: &Heartbeat) -> Option<Event> {
        if hb.epoch < self.epoch {
            self.stale_heartbeats = self.stale_heartbeats.saturating_add(1);
            return None;
        }
        if hb.epoch > self.epoch {
            if let Some(ev) = self.on_newer_epoch(hb.epoch) {
                return Some(ev);
            }
        }
        if self.is_active()
            && matches!(hb.role, Role::Primary | Role::TakingOver)
            && hb.epoch == self.epoch
            && peer_box < self.box_id
        {
            return self.step_down(StepDownReason::TieBreak, hb.epoch);
        }
        self.last_heartbeat = now;
        if self.peer_silent_reported {
            self.peer_silent_reported = false;
            return match self.role {
                Role::Standby => Some(Event::ReplicationLinkUp),
                Role::Primary => Some(Event::StandbyBack),
                Role::TakingOver | Role::Fenced => None,
            };
        }
        None
    }

    /// The peer speaks in a higher epoch (a heartbeat, or a frame the channel rejected as
    /// `NewerEpoch`): an active box steps down; a standby follows the new generation.
    pub fn on_newer_epoch(&mut self, epoch: u32) -> Option<Event> {
        if epoch <= self.epoch {
            return None;
        }
        if self.is_active() {
            return self.step_down(StepDownReason::HigherEpoch, epoch);
        }
        if self.role == Role::Standby {
            self.epoch = epoch;
        }
        None
    }

    /// The result of a client-LAN probe: for a standby, whether the VIP holder answered; for a primary,
    /// whether the client LAN (a gateway, the standby's LAN address) answered.
    pub fn on_lan_probe(&mut self, now: Instant, answered: bool) -> Option<Event> {
        if answered {
            self.lan_last_answer = self.lan_last_answer.max(now);
        } else {
            self.lan_last_failure = Some(self.lan_last_failure.map_or(now, |f| f.max(now)));
        }
        self.handle_timeout(now)
    }

    /// The client-LAN path also told who answered (a LAN heartbeat, or the VIP holder's reply carrying
    /// its epoch): epochs fence here too, so a primary that was frozen while the standby took over
    /// steps down as soon as it hears the LAN, even with the replication link down.
    pub fn on_lan_peer(&mut self, peer_box: u32, epoch: u32, role: Role) -> Option<Event> {
        if epoch < self.epoch {
            self.stale_heartbeats = self.stale_heartbeats.saturating_add(1);
            return None;
        }
        if epoch > self.epoch {
            return self.on_newer_epoch(epoch);
        }
        if self.is_active() && matches!(role, Role::Primary | Role::TakingOver) && peer_box < self.box_id {
            return self.step_down(StepDownReason::TieBreak, epoch);
        }
        None
    }

    /// Re-evaluates both paths; call at [`Detector::poll_timeout`] and after inputs.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Event> {
        match self.role {
            Role::Standby => {
                let hb_dead = self.heartbeats_dead(now, self.cfg.heartbeat_timeout());
                if hb_dead && self.lan_dead(now, self.cfg.lan_timeout) {
                    self.epoch = self.epoch.saturating_add(1);
                    self.role = Role::TakingOver;
                    self.peer_silent_reported = false;
                    return Some(Event::TakeOver { epoch: self.epoch });
                }
                if hb_dead && !self.peer_silent_reported {
                    self.peer_silent_reported = true;
                    return Some(Event::ReplicationLinkDown);
                }
                None
            }
            Role::Primary => {
                let iso = self.cfg.isolation_timeout;
                if self.heartbeats_dead(now, iso) && self.lan_dead(now, iso) {
                    return self.step_down(StepDownReason::Isolated, self.epoch);
                }
                if self.heartbeats_dead(now, self.cfg.heartbeat_timeout()) && !self.peer_silent_reported {
                    self.peer_silent_reported = true;
                    return Some(Event::StandbyLost);
                }
                None
            }
            Role::TakingOver | Role::Fenced => None,
        }
    }

    /// When [`Detector::handle_timeout`] may next have something to say. Past a timeout that waits
    /// for a failed probe as evidence, the next change comes from [`Detector::on_lan_probe`] instead.
    pub fn poll_timeout(&self) -> Instant {
        let lan_evidence = self.lan_last_failure.is_some_and(|f| f >= self.lan_last_answer);
        match self.role {
            Role::Standby if !self.peer_silent_reported => self.last_heartbeat + self.cfg.heartbeat_timeout(),
            Role::Standby if lan_evidence => (self.last_heartbeat + self.cfg.heartbeat_timeout())
                .max(self.lan_last_answer + self.cfg.lan_timeout),
            Role::Primary => {
                let iso = if lan_evidence {
                    self.last_heartbeat.max(self.lan_last_answer) + self.cfg.isolation_timeout
                } else {
                    Instant::FAR_FUTURE
                };
                if self.peer_silent_reported {
                    iso
                } else {
                    iso.min(self.last_heartbeat + self.cfg.heartbeat_timeout())
                }
            }
            Role::Standby | Role::TakingOver | Role::Fenced => Instant::FAR_FUTURE,
        }
    }

    /// The takeover is done (addresses claimed, flows installed): this box is the primary.
    pub fn takeover_complete(&mut self, now: Instant) {
        if self.role == Role::TakingOver {
            self.role = Role::Primary;
            self.last_heartbeat = now;
            self.lan_last_answer = now;
            self.lan_last_failure = None;
            self.peer_silent_reported = true;
        }
    }

    /// A fenced box rejoins as the new standby of the primary in `epoch` (after a fresh channel and a
    /// bulk snapshot).
    pub fn rejoin_as_standby(&mut self, now: Instant, epoch: u32) {
        if self.role == Role::Fenced {
            self.role = Role::Standby;
            self.epoch = self.epoch.max(epoch);
            self.last_heartbeat = now;
            self.lan_last_answer = now;
            self.lan_last_failure = None;
            self.peer_silent_reported = false;
        }
    }

    /// A planned switchover, primary side: stop transmitting so the standby can take over.
    pub fn hand_over(&mut self) -> Option<Event> {
        self.step_down(StepDownReason::HigherEpoch, self.epoch.saturating_add(1))
    }

    /// A planned switchover, standby side: take over now, without waiting for a failure.
    pub fn take_over_now(&mut self) -> Option<Event> {
        if self.role != Role::Standby {
            return None;
        }
        self.epoch = self.epoch.saturating_add(1);
        self.role = Role::TakingOver;
        Some(Event::TakeOver { epoch: self.epoch })
    }
}

#[cfg(test)]
mod tests;
