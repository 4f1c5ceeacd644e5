//! The ack gate: how far the proxy may acknowledge a peer's bytes, and when a client may see its SYN-ACK.
//!
//! The proxy withholds acknowledgments until a byte is safe (DESIGN.md, "Ack gate"). An [`AckGate`] lives
//! per flow and per direction, in the sequence space of the peer whose bytes it gates. The TCP engine
//! reports the received edge (`rcv_nxt`), and the other parts of the box report how far each condition
//! got: the other peer's acknowledgment (`backend`), the standby's confirmation (`replica`) and the
//! application's commit (`app`). The gate answers with the highest sequence number that may be
//! acknowledged: the minimum over the conditions the policy asks for, never beyond the received edge and
//! never backwards. All comparisons are modulo 2^32 (RFC 1982 serial arithmetic), so flows that wrap
//! their sequence space are handled like any other.
//!
//! [`SynGate`] is the same idea for connection setup: a client's SYN-ACK waits until the standby knows
//! the flow (invariant 2), or, with no standby attached, follows the listener's [`NoStandby`] choice.

use core::fmt;
use core::str::FromStr;

/// `a < b` in 32-bit serial-number arithmetic.
#[inline]
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in 32-bit serial-number arithmetic.
#[inline]
pub fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// The earlier of two sequence numbers.
#[inline]
pub fn seq_min(a: u32, b: u32) -> u32 {
    if seq_lt(a, b) {
        a
    } else {
        b
    }
}

/// The later of two sequence numbers.
#[inline]
pub fn seq_max(a: u32, b: u32) -> u32 {
    if seq_lt(a, b) {
        b
    } else {
        a
    }
}

/// The largest TCP window (RFC 7323: 2^16 scaled by 2^14): bytes between the allowed and the received
/// edge never exceed it.
pub const MAX_WINDOW: u32 = 1 << 30;

/// What must have happened to a byte before the proxy acknowledges it to its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AckPolicy {
    /// Acknowledge on receipt, like a plain proxy (the baseline; nothing survives a crash).
    None,
    /// Acknowledge once the other peer acknowledged the byte (claims 3, 13, 20, 26).
    #[default]
    Backend,
    /// Acknowledge once the standby confirmed storing the byte (claim 24).
    Replica,
    /// Acknowledge once the hosted application committed the byte (claims 2, 12, 19, 25).
    App,
}

impl AckPolicy {
    pub const ALL: [AckPolicy; 4] = [AckPolicy::None, AckPolicy::Backend, AckPolicy::Replica, AckPolicy::App];

    pub const fn as_str(self) -> &'static str {
        match self {
            AckPolicy::None => "none",
            AckPolicy::Backend => "backend",
            AckPolicy::Replica => "replica",
            AckPolicy::App => "app",
        }
    }

    /// The conditions this policy asks for.
    pub const fn conditions(self) -> Conditions {
        match self {
            AckPolicy::None => Conditions::NONE,
            AckPolicy::Backend => Conditions::BACKEND,
            AckPolicy::Replica => Conditions::REPLICA,
            AckPolicy::App => Conditions::APP,
        }
    }

    /// The policy a listener actually runs under, given whether a standby is attached.
    ///
    /// `replica` without a standby has nothing to wait for; under [`NoStandby::Degraded`] it falls back
    /// to `backend` (the bytes are then at least held by the other peer). With no standby, every flow is
    /// reported degraded, since nothing survives the box's death whatever the policy.
    pub const fn effective(self, standby_attached: bool) -> Effective {
        if standby_attached {
            Effective { policy: self, degraded: false }
        } else {
            let policy = match self {
                AckPolicy::Replica => AckPolicy::Backend,
                other => other,
            };
            Effective { policy, degraded: true }
        }
    }
}

/// A policy as it is applied, and whether the flow is protected against the box's death.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective {
    pub policy: AckPolicy,
    pub degraded: bool,
}

impl fmt::Display for AckPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of `none`, `backend`, `replica`, `app`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown ack policy (expected one of: none, backend, replica, app)")]
pub struct ParsePolicyError;

impl FromStr for AckPolicy {
    type Err = ParsePolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AckPolicy::ALL.into_iter().find(|p| p.as_str() == s).ok_or(ParsePolicyError)
    }
}

/// A set of gate conditions. Policies map to one condition each; a caller may require several (for
/// example `app` and `replica` together), and the gate then takes the minimum over all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Conditions(u8);

impl Conditions {
    pub const NONE: Conditions = Conditions(0);
    pub const BACKEND: Conditions = Conditions(1);
    pub const REPLICA: Conditions = Conditions(2);
    pub const APP: Conditions = Conditions(4);

    pub const fn union(self, other: Conditions) -> Conditions {
        Conditions(self.0 | other.0)
    }

    pub const fn contains(self, other: Conditions) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Everything an [`AckGate`] holds, for replication and restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateSnapshot {
    pub conditions: Conditions,
    /// The other side's sequence number of a byte is this side's plus `offset` (fixed at setup).
    pub offset: u32,
    pub received: u32,
    pub backend: u32,
    pub replica: u32,
    pub app: u32,
    pub allowed: u32,
}

/// The ack gate of one flow in one direction, in the sequence space of the sending peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckGate {
    s: GateSnapshot,
}

impl AckGate {
    /// A gate for a peer whose first data byte has sequence number `start` (its ISN + 1), where the
    /// same byte is `start + offset` on the other connection of the relay.
    pub fn new(policy: AckPolicy, start: u32, offset: u32) -> AckGate {
        AckGate::with_conditions(policy.conditions(), start, offset)
    }

    pub fn with_conditions(conditions: Conditions, start: u32, offset: u32) -> AckGate {
        AckGate {
            s: GateSnapshot {
                conditions,
                offset,
                received: start,
                backend: start,
                replica: start,
                app: start,
                allowed: start,
            },
        }
    }

    pub fn save(&self) -> GateSnapshot {
        self.s
    }

    /// Rebuilds a gate from a snapshot, repairing edges that a corrupt snapshot put beyond the
    /// received edge (so the restored gate never allows more than it holds).
    pub fn restore(mut s: GateSnapshot) -> AckGate {
        for edge in [&mut s.backend, &mut s.replica, &mut s.app, &mut s.allowed] {
            if seq_lt(s.received, *edge) {
                *edge = s.received;
            }
        }
        let mut g = AckGate { s };
        g.recompute();
        g
    }

    pub fn conditions(&self) -> Conditions {
        self.s.conditions
    }

    /// Changes the conditions at run time (the control socket's policy change). The allowed edge never
    /// moves backwards, so a stricter policy only holds bytes that arrive from now on.
    pub fn set_conditions(&mut self, conditions: Conditions) -> Option<u32> {
        self.s.conditions = conditions;
        self.recompute()
    }

    pub fn offset(&self) -> u32 {
        self.s.offset
    }

    /// The highest sequence number (exclusive) that may be acknowledged to the peer.
    pub fn allowed(&self) -> u32 {
        self.s.allowed
    }

    /// The received edge (exclusive): `rcv_nxt` of the engine.
    pub fn received(&self) -> u32 {
        self.s.received
    }

    /// Bytes received but not yet allowed to be acknowledged.
    pub fn withheld(&self) -> u32 {
        self.s.received.wrapping_sub(self.s.allowed)
    }

    /// The engine's received edge moved to `rcv_nxt`. Returns the new allowed edge if it advanced.
    ///
    /// An edge more than [`MAX_WINDOW`] beyond the allowed edge cannot come from a correct engine (no TCP
    /// window is larger) and is ignored, so serial comparisons stay meaningful.
    pub fn on_received(&mut self, rcv_nxt: u32) -> Option<u32> {
        if rcv_nxt.wrapping_sub(self.s.allowed) > MAX_WINDOW {
            return None;
        }
        if seq_lt(self.s.received, rcv_nxt) {
            self.s.received = rcv_nxt;
        }
        self.recompute()
    }

    /// The other peer acknowledged up to `other_ack`, in the other connection's sequence space.
    pub fn on_backend_acked(&mut self, other_ack: u32) -> Option<u32> {
        let edge = other_ack.wrapping_sub(self.s.offset);
        let clamped = self.clamp(edge);
        self.s.backend = seq_max(self.s.backend, clamped);
        self.recompute()
    }

    /// The standby confirmed it stores everything before `stored` (this side's sequence space).
    pub fn on_replica_stored(&mut self, stored: u32) -> Option<u32> {
        let clamped = self.clamp(stored);
        self.s.replica = seq_max(self.s.replica, clamped);
        self.recompute()
    }

    /// The application committed everything before `committed` (this side's sequence space).
    pub fn on_app_commit(&mut self, committed: u32) -> Option<u32> {
        let clamped = self.clamp(committed);
        self.s.app = seq_max(self.s.app, clamped);
        self.recompute()
    }

    /// Moves every edge to at least `seq`: used on takeover, when a probe showed that the other peer
    /// already holds everything before `seq` (so it is safe whatever the policy).
    pub fn jump_to(&mut self, seq: u32) -> Option<u32> {
        self.s.received = seq_max(self.s.received, seq);
        self.s.backend = seq_max(self.s.backend, seq);
        self.s.replica = seq_max(self.s.replica, seq);
        self.s.app = seq_max(self.s.app, seq);
        self.recompute()
    }

    // A condition can never be ahead of what the proxy received; a report that claims so (a hostile or
    // corrupt peer ACK, say) is held at the received edge rather than trusted.
    fn clamp(&self, edge: u32) -> u32 {
        if seq_lt(self.s.received, edge) {
            self.s.received
        } else {
            edge
        }
    }

    fn recompute(&mut self) -> Option<u32> {
        let c = self.s.conditions;
        let mut edge = self.s.received;
        if c.contains(Conditions::BACKEND) {
            edge = seq_min(edge, self.s.backend);
        }
        if c.contains(Conditions::REPLICA) {
            edge = seq_min(edge, self.s.replica);
        }
        if c.contains(Conditions::APP) {
            edge = seq_min(edge, self.s.app);
        }
        if seq_lt(self.s.allowed, edge) {
            self.s.allowed = edge;
            Some(edge)
        } else {
            None
        }
    }
}

/// What a listener does with a new flow when no standby is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NoStandby {
    /// Serve under the `backend` gate (instead of `replica`) and report the flow as degraded.
    #[default]
    Degraded,
    /// Refuse new flows (the SYN gets a RST) rather than serve them unprotected.
    Refuse,
}

impl NoStandby {
    pub const fn as_str(self) -> &'static str {
        match self {
            NoStandby::Degraded => "degraded",
            NoStandby::Refuse => "refuse",
        }
    }
}

impl fmt::Display for NoStandby {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not `degraded` or `refuse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown no-standby behaviour (expected one of: degraded, refuse)")]
pub struct ParseNoStandbyError;

impl FromStr for NoStandby {
    type Err = ParseNoStandbyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "degraded" => Ok(NoStandby::Degraded),
            "refuse" => Ok(NoStandby::Refuse),
            _ => Err(ParseNoStandbyError),
        }
    }
}

/// What to do with a client's SYN-ACK right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynDecision {
    /// Hold it: the standby has not confirmed the flow yet.
    Wait,
    /// Send it: the standby knows the flow.
    Allow,
    /// Send it, but the flow is unprotected (no standby attached); count and report it.
    AllowDegraded,
    /// Refuse the flow (answer the SYN with a RST).
    Refuse,
}

/// The SYN gate of one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynGate {
    no_standby: NoStandby,
    confirmed: bool,
}

impl SynGate {
    pub fn new(no_standby: NoStandby) -> SynGate {
        SynGate { no_standby, confirmed: false }
    }

    /// The standby confirmed that it stores the flow.
    pub fn on_standby_confirmed(&mut self) {
        self.confirmed = true;
    }

    pub fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// Asked when the SYN arrives and again whenever the standby confirms or detaches. A standby that
    /// detaches while a SYN-ACK waits turns the decision into the listener's no-standby behaviour.
    pub fn decide(&self, standby_attached: bool) -> SynDecision {
        match (standby_attached, self.confirmed, self.no_standby) {
            (true, true, _) => SynDecision::Allow,
            (true, false, _) => SynDecision::Wait,
            (false, _, NoStandby::Degraded) => SynDecision::AllowDegraded,
            (false, _, NoStandby::Refuse) => SynDecision::Refuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn policy_names_round_trip() {
        for p in AckPolicy::ALL {
            assert_eq!(p.to_string().parse::<AckPolicy>(), Ok(p));
        }
        assert_eq!("Backend".parse::<AckPolicy>(), Err(ParsePolicyError));
        assert_eq!("".parse::<AckPolicy>(), Err(ParsePolicyError));
        assert_eq!("refuse".parse::<NoStandby>(), Ok(NoStandby::Refuse));
        assert_eq!(NoStandby::Degraded.to_string(), "degraded");
        assert!("x".parse::<NoStandby>().is_err());
    }

    #[test]
    fn none_allows_what_was_received() {
        let mut g = AckGate::new(AckPolicy::None, 1000, 0);
        assert_eq!(g.on_received(1500), Some(1500));
        assert_eq!(g.withheld(), 0);
    }

    #[test]
    fn backend_maps_through_the_offset() {
        // Client byte s is server-side byte s + 5000.
        let mut g = AckGate::new(AckPolicy::Backend, 1000, 5000);
        assert_eq!(g.on_received(3000), None);
        assert_eq!(g.withheld(), 2000);
        assert_eq!(g.on_backend_acked(6500), Some(1500));
        assert_eq!(g.withheld(), 1500);
        // An older, duplicate ACK changes nothing.
        assert_eq!(g.on_backend_acked(6000), None);
        assert_eq!(g.allowed(), 1500);
        // An ACK for more than was received is held at the received edge.
        assert_eq!(g.on_backend_acked(9000), Some(3000));
        assert_eq!(g.withheld(), 0);
    }

    #[test]
    fn replica_and_app_gate_independently_of_backend() {
        let mut g = AckGate::new(AckPolicy::Replica, 0, 77);
        g.on_received(100);
        assert_eq!(g.on_backend_acked(100 + 77), None);
        assert_eq!(g.on_app_commit(100), None);
        assert_eq!(g.on_replica_stored(60), Some(60));

        let mut g = AckGate::new(AckPolicy::App, 0, 0);
        g.on_received(100);
        assert_eq!(g.on_replica_stored(100), None);
        assert_eq!(g.on_app_commit(10), Some(10));
    }

    #[test]
    fn several_conditions_take_the_minimum() {
        let both = Conditions::APP.union(Conditions::REPLICA);
        let mut g = AckGate::with_conditions(both, 0, 0);
        g.on_received(100);
        assert_eq!(g.on_app_commit(80), None);
        assert_eq!(g.on_replica_stored(50), Some(50));
        assert_eq!(g.on_replica_stored(90), Some(80));
    }

    #[test]
    fn wraps_around_the_sequence_space() {
        let start = u32::MAX - 99;
        let mut g = AckGate::new(AckPolicy::Backend, start, 10);
        g.on_received(start.wrapping_add(300)); // 200 past the wrap
        assert_eq!(g.withheld(), 300);
        assert_eq!(g.on_backend_acked(start.wrapping_add(10 + 250)), Some(start.wrapping_add(250)));
        assert_eq!(g.allowed(), 150);
        assert_eq!(g.withheld(), 50);
    }

    #[test]
    fn policy_change_never_moves_backwards() {
        let mut g = AckGate::new(AckPolicy::None, 0, 0);
        g.on_received(100);
        assert_eq!(g.set_conditions(Conditions::BACKEND), None);
        assert_eq!(g.allowed(), 100);
        g.on_received(200);
        assert_eq!(g.allowed(), 100);
        assert_eq!(g.on_backend_acked(150), Some(150));
    }

    #[test]
    fn jump_and_restore() {
        let mut g = AckGate::new(AckPolicy::Replica, 10, 0);
        g.on_received(50);
        assert_eq!(g.jump_to(400), Some(400));
        assert_eq!(g.received(), 400);
        let r = AckGate::restore(g.save());
        assert_eq!(r, g);
        let bad = GateSnapshot { allowed: 900, replica: 800, ..g.save() };
        let r = AckGate::restore(bad);
        assert_eq!(r.allowed(), 400);
        assert_eq!(r.withheld(), 0);
    }

    #[test]
    fn effective_policy_without_standby() {
        assert_eq!(
            AckPolicy::Replica.effective(false),
            Effective { policy: AckPolicy::Backend, degraded: true }
        );
        assert_eq!(AckPolicy::App.effective(false), Effective { policy: AckPolicy::App, degraded: true });
        assert_eq!(
            AckPolicy::Replica.effective(true),
            Effective { policy: AckPolicy::Replica, degraded: false }
        );
    }

    #[test]
    fn syn_gate() {
        let mut s = SynGate::new(NoStandby::Refuse);
        assert_eq!(s.decide(true), SynDecision::Wait);
        assert_eq!(s.decide(false), SynDecision::Refuse);
        s.on_standby_confirmed();
        assert_eq!(s.decide(true), SynDecision::Allow);
        assert_eq!(SynGate::new(NoStandby::Degraded).decide(false), SynDecision::AllowDegraded);
        assert_eq!(SynGate::new(NoStandby::Degraded).decide(true), SynDecision::Wait);
    }

    #[derive(Clone, Copy, Debug)]
    enum Ev {
        Recv(u32),
        Backend(u32),
        Replica(u32),
        App(u32),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0u32..5000).prop_map(Ev::Recv),
            (0u32..5000).prop_map(Ev::Backend),
            (0u32..5000).prop_map(Ev::Replica),
            (0u32..5000).prop_map(Ev::App),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, rng_seed: proptest::test_runner::RngSeed::Fixed(0x9a7e), ..ProptestConfig::default() })]

        /// Against a model in plain (unwrapped) integers: the gate never exceeds the received edge or any
        /// required condition, never moves backwards, and equals the model's minimum.
        #[test]
        fn never_exceeds_any_condition(
            start in any::<u32>(),
            offset in any::<u32>(),
            mask in 0u8..8,
            events in proptest::collection::vec(ev(), 1..60),
        ) {
            let conds = Conditions(mask);
            let mut g = AckGate::with_conditions(conds, start, offset);
            // The model counts bytes from `start`; each event moves an edge by a relative amount.
            let (mut recv, mut be, mut rep, mut app) = (0u64, 0u64, 0u64, 0u64);
            let mut last = 0u64;
            for e in events {
                match e {
                    Ev::Recv(d) => {
                        recv = recv.max(u64::from(d) * 3);
                        g.on_received(start.wrapping_add((recv) as u32));
                    }
                    Ev::Backend(d) => {
                        let v = u64::from(d).min(recv);
                        be = be.max(v);
                        g.on_backend_acked(start.wrapping_add(v as u32).wrapping_add(offset));
                    }
                    Ev::Replica(d) => {
                        let v = u64::from(d).min(recv);
                        rep = rep.max(v);
                        g.on_replica_stored(start.wrapping_add(v as u32));
                    }
                    Ev::App(d) => {
                        let v = u64::from(d).min(recv);
                        app = app.max(v);
                        g.on_app_commit(start.wrapping_add(v as u32));
                    }
                }
                let mut want = recv;
                if conds.contains(Conditions::BACKEND) { want = want.min(be); }
                if conds.contains(Conditions::REPLICA) { want = want.min(rep); }
                if conds.contains(Conditions::APP) { want = want.min(app); }
                let allowed = u64::from(g.allowed().wrapping_sub(start));
                prop_assert_eq!(allowed, want);
                prop_assert!(allowed >= last);
                prop_assert!(allowed <= recv);
                prop_assert_eq!(u64::from(g.withheld()), recv - allowed);
                last = allowed;
            }
        }

        /// Whatever arbitrary (hostile) values the conditions report, the gate stays within the received
        /// edge and never moves backwards.
        #[test]
        fn hostile_reports_stay_bounded(
            start in any::<u32>(),
            reports in proptest::collection::vec((0u8..4, any::<u32>()), 1..80),
        ) {
            let mut g = AckGate::new(AckPolicy::Backend, start, 0);
            let mut last = g.allowed();
            for (kind, v) in reports {
                match kind {
                    0 => { g.on_received(v); }
                    1 => { g.on_backend_acked(v); }
                    2 => { g.on_replica_stored(v); }
                    _ => { g.on_app_commit(v); }
                }
                prop_assert!(seq_le(g.allowed(), g.received()));
                prop_assert!(seq_le(last, g.allowed()));
                last = g.allowed();
            }
        }
    }
}
