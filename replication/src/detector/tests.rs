//! Role transitions and split-brain scenarios: two detectors in virtual time, with heartbeats and
//! client-LAN probes every millisecond over links the test cuts, and boxes it freezes.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEP: Duration = Duration::from_micros(100);
const MS: Duration = Duration::from_millis(1);

/// Two boxes: 1 starts as primary, 2 as standby, both in epoch 1.
struct World {
    now: Instant,
    d: [Detector; 2],
    repl_up: bool,
    lan_up: [bool; 2],
    /// A frozen box runs nothing: no timers, no heartbeats, no transmissions (a long pause, or dead).
    frozen: [bool; 2],
    events: Vec<(Instant, usize, Event)>,
    next_tick: Instant,
    takeover_due: [Option<Instant>; 2],
    /// Since when each box has been able to transmit on the client LAN (unfrozen, LAN up).
    reachable_since: [Instant; 2],
}

impl World {
    fn new() -> World {
        let t = Instant::from_millis(1);
        let cfg = DetectorConfig::default();
        World {
            now: t,
            d: [
                Detector::new(cfg, 1, Role::Primary, 1, t).expect("config"),
                Detector::new(cfg, 2, Role::Standby, 1, t).expect("config"),
            ],
            repl_up: true,
            lan_up: [true, true],
            frozen: [false, false],
            events: Vec::new(),
            next_tick: t,
            takeover_due: [None, None],
            reachable_since: [t, t],
        }
    }

    fn record(&mut self, i: usize, ev: Option<Event>) {
        if let Some(ev) = ev {
            if let Event::TakeOver { .. } = ev {
                // Claiming the addresses and installing the flows takes a millisecond.
                self.takeover_due[i] = Some(self.now + MS);
            }
            self.events.push((self.now, i, ev));
        }
    }

    fn transmitting(&self, i: usize) -> bool {
        self.d[i].is_active() && !self.frozen[i] && self.lan_up[i]
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        for i in 0..2 {
            if self.frozen[i] {
                continue;
            }
            if let Some(t) = self.takeover_due[i] {
                if now >= t {
                    self.d[i].takeover_complete(now);
                    self.takeover_due[i] = None;
                }
            }
            let ev = self.d[i].handle_timeout(now);
            self.record(i, ev);
        }
        if now >= self.next_tick {
            self.next_tick = now + MS;
            for i in 0..2 {
                let j = 1 - i;
                if self.frozen[i] {
                    continue;
                }
                // Heartbeat from i to j on the replication link.
                if self.repl_up && !self.frozen[j] {
                    let hb = Heartbeat {
                        epoch: self.d[i].epoch(),
                        role: self.d[i].role(),
                        flags: 0,
                        time_ns: now.as_nanos(),
                        flows: 0,
                    };
                    let ev = self.d[j].on_heartbeat(now, i as u32 + 1, &hb);
                    self.record(j, ev);
                }
                // i probes the client LAN: a standby asks whether the VIP holder answers, a primary
                // whether the LAN answers at all; an answering active peer tells its epoch.
                let peer_answers = self.lan_up[i] && self.transmitting(j);
                let answered = match self.d[i].role() {
                    Role::Standby => peer_answers,
                    _ => self.lan_up[i],
                };
                let ev = self.d[i].on_lan_probe(now, answered);
                self.record(i, ev);
                if peer_answers {
                    let (e, r) = (self.d[j].epoch(), self.d[j].role());
                    let ev = self.d[i].on_lan_peer(j as u32 + 1, e, r);
                    self.record(i, ev);
                }
            }
        }
        for i in 0..2 {
            if !self.lan_up[i] || self.frozen[i] {
                self.reachable_since[i] = Instant::FAR_FUTURE;
            } else if self.reachable_since[i] == Instant::FAR_FUTURE {
                self.reachable_since[i] = now;
            }
        }
        // Invariant 4: at most one box transmits for the VIP. A box that was frozen or cut off while the
        // other took over may speak for at most one probe period after it comes back, until the LAN or
        // the replication link tells it the newer epoch.
        if self.transmitting(0) && self.transmitting(1) {
            let grace = |i: usize| now.saturating_duration_since(self.reachable_since[i]) <= MS + STEP;
            assert!(grace(0) || grace(1), "two active boxes at {now}: {:?} {:?}", self.d[0], self.d[1]);
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn roles(&self) -> (Role, Role) {
        (self.d[0].role(), self.d[1].role())
    }

    fn events_of(&self, i: usize) -> Vec<Event> {
        self.events.iter().filter(|e| e.1 == i).map(|e| e.2).collect()
    }

    fn first_event_time(&self, i: usize, pred: impl Fn(&Event) -> bool) -> Option<Instant> {
        self.events.iter().find(|e| e.1 == i && pred(&e.2)).map(|e| e.0)
    }
}

#[test]
fn config_validation_keeps_fencing_before_takeover() {
    assert_eq!(DetectorConfig::default().validate(), Ok(()));
    let slow = DetectorConfig { isolation_timeout: Duration::from_millis(4), ..DetectorConfig::default() };
    assert_eq!(slow.validate(), Err(DetectorConfigError::IsolationTooSlow));
    let zero = DetectorConfig { miss_threshold: 0, ..DetectorConfig::default() };
    assert_eq!(zero.validate(), Err(DetectorConfigError::Zero));
}

#[test]
fn healthy_pair_stays_put() {
    let mut w = World::new();
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.roles(), (Role::Primary, Role::Standby));
    assert!(w.events.is_empty(), "{:?}", w.events);
}

#[test]
fn dead_primary_is_detected_in_under_10ms() {
    let mut w = World::new();
    w.run_for(Duration::from_millis(20));
    let crash = w.now;
    w.frozen[0] = true;
    w.run_for(Duration::from_millis(30));
    let t = w.first_event_time(1, |e| matches!(e, Event::TakeOver { epoch: 2 })).expect("takeover");
    let detection = t - crash;
    assert!(detection < Duration::from_millis(10), "detection took {detection:?}");
    assert_eq!(w.roles(), (Role::Primary, Role::Primary), "box 1 frozen in its old role");
    assert_eq!(w.d[1].epoch(), 2);
    assert!(w.d[1].is_active());
}

#[test]
fn replication_link_cut_alone_never_makes_two_active_boxes() {
    let mut w = World::new();
    w.run_for(Duration::from_millis(10));
    w.repl_up = false;
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.roles(), (Role::Primary, Role::Standby));
    assert_eq!(w.events_of(1), vec![Event::ReplicationLinkDown]);
    assert_eq!(w.events_of(0), vec![Event::StandbyLost]);
    w.repl_up = true;
    w.run_for(Duration::from_millis(5));
    assert_eq!(w.events_of(1), vec![Event::ReplicationLinkDown, Event::ReplicationLinkUp]);
    assert_eq!(w.events_of(0), vec![Event::StandbyLost, Event::StandbyBack]);
    assert_eq!((w.d[0].epoch(), w.d[1].epoch()), (1, 1));
}

#[test]
fn isolated_primary_fences_itself_before_the_standby_takes_over() {
    let mut w = World::new();
    w.run_for(Duration::from_millis(10));
    // Both of the primary's links are cut: it is alive but reaches nobody.
    w.repl_up = false;
    w.lan_up[0] = false;
    w.run_for(Duration::from_millis(30));
    let fenced = w
        .first_event_time(0, |e| matches!(e, Event::StepDown { reason: StepDownReason::Isolated, .. }))
        .expect("primary fenced itself");
    let took = w.first_event_time(1, |e| matches!(e, Event::TakeOver { .. })).expect("standby took over");
    assert!(fenced < took, "fenced at {fenced}, takeover at {took}");
    assert_eq!(w.roles(), (Role::Fenced, Role::Primary));
    // The links heal: the old primary stays fenced, learns the new epoch and rejoins as standby.
    w.repl_up = true;
    w.lan_up[0] = true;
    w.run_for(Duration::from_millis(5));
    assert_eq!(w.roles(), (Role::Fenced, Role::Primary));
    let now = w.now;
    w.d[0].rejoin_as_standby(now, 2);
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.roles(), (Role::Standby, Role::Primary));
    assert_eq!((w.d[0].epoch(), w.d[1].epoch()), (2, 2));
}

#[test]
fn stale_primary_coming_back_steps_down() {
    let mut w = World::new();
    w.run_for(Duration::from_millis(10));
    w.frozen[0] = true;
    w.run_for(Duration::from_millis(30));
    assert_eq!(w.d[1].role(), Role::Primary);
    let thaw = w.now;
    w.frozen[0] = false;
    w.run_for(Duration::from_millis(5));
    let down = w
        .first_event_time(0, |e| {
            matches!(e, Event::StepDown { reason: StepDownReason::HigherEpoch, peer_epoch: 2 })
        })
        .expect("stale primary stepped down");
    assert!(down - thaw <= MS + STEP);
    assert_eq!(w.roles(), (Role::Fenced, Role::Primary));
    assert!(w.d[1].stale_heartbeats() >= 1, "the new primary ignored the stale heartbeats");
}

#[test]
fn stale_primary_coming_back_with_replication_link_down_is_fenced_by_the_lan() {
    let mut w = World::new();
    w.run_for(Duration::from_millis(10));
    w.frozen[0] = true;
    w.run_for(Duration::from_millis(30));
    w.repl_up = false;
    w.frozen[0] = false;
    w.run_for(Duration::from_millis(20));
    assert_eq!(w.roles(), (Role::Fenced, Role::Primary));
}

#[test]
fn standby_losing_its_lan_does_not_take_over() {
    let mut w = World::new();
    w.lan_up[1] = false;
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.roles(), (Role::Primary, Role::Standby));
}

#[test]
fn dead_standby_leaves_the_primary_degraded_not_fenced() {
    let mut w = World::new();
    w.run_for(Duration::from_millis(5));
    w.frozen[1] = true;
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.d[0].role(), Role::Primary);
    assert_eq!(w.events_of(0), vec![Event::StandbyLost]);
}

#[test]
fn planned_switchover() {
    let t = Instant::ZERO;
    let cfg = DetectorConfig::default();
    let mut p = Detector::new(cfg, 1, Role::Primary, 4, t).expect("config");
    let mut s = Detector::new(cfg, 2, Role::Standby, 4, t).expect("config");
    assert!(matches!(p.hand_over(), Some(Event::StepDown { .. })));
    assert_eq!(s.take_over_now(), Some(Event::TakeOver { epoch: 5 }));
    s.takeover_complete(t);
    p.rejoin_as_standby(t, s.epoch());
    assert_eq!((p.role(), p.epoch(), s.role(), s.epoch()), (Role::Standby, 5, Role::Primary, 5));
    assert_eq!(p.take_over_now().map(|_| ()), Some(()));
    assert_eq!(s.take_over_now(), None);
}

#[test]
fn same_epoch_primaries_resolve_by_box_id() {
    let t = Instant::ZERO;
    let cfg = DetectorConfig::default();
    let mut a = Detector::new(cfg, 1, Role::Primary, 3, t).expect("config");
    let mut b = Detector::new(cfg, 2, Role::Primary, 3, t).expect("config");
    let hb = |d: &Detector| Heartbeat { epoch: d.epoch(), role: d.role(), flags: 0, time_ns: 0, flows: 0 };
    let (ha, hbb) = (hb(&a), hb(&b));
    assert_eq!(a.on_heartbeat(t, 2, &hbb), None);
    assert_eq!(
        b.on_heartbeat(t, 1, &ha),
        Some(Event::StepDown { reason: StepDownReason::TieBreak, peer_epoch: 3 })
    );
    assert!(a.is_active() && !b.is_active());
}

#[test]
fn poll_timeout_never_asks_for_a_busy_loop() {
    let mut w = World::new();
    w.run_for(Duration::from_millis(5));
    w.repl_up = false;
    w.run_for(Duration::from_millis(20));
    // Both timers point into the future (or nowhere) once their events are out.
    for d in &w.d {
        assert!(d.poll_timeout() > w.now, "{d:?}");
    }
}

/// Random schedules of link cuts, LAN cuts and freezes: at most one box ever transmits for the VIP
/// (beyond the one-probe grace after a box comes back), and a live, connected pair always ends with
/// exactly one primary.
#[test]
fn random_failures_never_split_the_brain() {
    for seed in 0..40u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w = World::new();
        for _ in 0..12 {
            match rng.random_range(0..5) {
                0 => w.repl_up = !w.repl_up,
                1 => w.lan_up[0] = !w.lan_up[0],
                2 => w.lan_up[1] = !w.lan_up[1],
                3 => w.frozen[0] = !w.frozen[0],
                _ => w.frozen[1] = !w.frozen[1],
            }
            w.run_for(Duration::from_micros(rng.random_range(500..40_000)));
        }
        // Heal everything; fenced boxes rejoin as standby.
        w.repl_up = true;
        w.lan_up = [true, true];
        w.frozen = [false, false];
        w.run_for(Duration::from_millis(20));
        for i in 0..2 {
            if w.d[i].role() == Role::Fenced {
                let (now, e) = (w.now, w.d[1 - i].epoch());
                w.d[i].rejoin_as_standby(now, e);
            }
        }
        w.run_for(Duration::from_millis(20));
        let active = w.d.iter().filter(|d| d.is_active()).count();
        assert!(active <= 1, "seed {seed}: {:?}", w.roles());
        assert!(
            active == 1 || w.roles() == (Role::Standby, Role::Standby),
            "seed {seed}: no primary after healing: {:?}",
            w.roles()
        );
    }
}
