//! Fencing over the replication link: a primary that hears a peer heartbeating in a later epoch (the
//! standby took over while this box was stopped or cut off) raises its `superseded` flag, which the
//! runtime watches to stop the box; the peer in the later epoch is never fenced by the stale one.

use dataplane::buf::Pool;
use dataplane::port::mem::{link, MemConfig};
use dataplane::proxy::replicate::Replicator;
use dataplane::time::{Duration, Instant};
use replication::channel::ChannelConfig;
use replication::frame::LinkAddrs;
use replication::node::PrimaryLink;
use std::sync::atomic::Ordering;

fn cfg(box_id: u32) -> ChannelConfig {
    let mut c = ChannelConfig { box_id, ..Default::default() };
    c.link = LinkAddrs { src: [2, 0, 0, 0, 0, box_id as u8], dst: [0xff; 6] };
    c
}

#[test]
fn a_stale_primary_hears_the_later_epoch_and_only_it_is_fenced() {
    let pool = Pool::new(1024, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).expect("pool");
    let (pa, pb, _ctl) = link(&pool, &MemConfig::new("repl", 7));
    let mut now = Instant::ZERO;
    let mut stale = PrimaryLink::new(cfg(1), 1, pa, now).expect("link");
    let mut taken_over = PrimaryLink::new(cfg(2), 2, pb, now).expect("link");
    let (s_stale, s_new) = (stale.superseded(), taken_over.superseded());
    assert_eq!(s_stale.load(Ordering::Acquire), 0);
    for _ in 0..50 {
        stale.poll(now);
        taken_over.poll(now);
        now += Duration::from_millis(1);
    }
    assert_eq!(s_stale.load(Ordering::Acquire), 2, "the box in epoch 1 heard epoch 2");
    assert_eq!(s_new.load(Ordering::Acquire), 0, "heartbeats from an older epoch fence nobody");
    // A later epoch's heartbeats do not count as a standby attached to the stale box.
    assert!(!stale.standby_attached());
}

#[test]
fn peers_in_the_same_epoch_fence_nobody() {
    let pool = Pool::new(1024, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).expect("pool");
    let (pa, pb, _ctl) = link(&pool, &MemConfig::new("repl", 8));
    let mut now = Instant::ZERO;
    let mut a = PrimaryLink::new(cfg(1), 1, pa, now).expect("link");
    let mut b = PrimaryLink::new(cfg(2), 1, pb, now).expect("link");
    for _ in 0..50 {
        a.poll(now);
        b.poll(now);
        now += Duration::from_millis(1);
    }
    assert_eq!(a.superseded().load(Ordering::Acquire), 0);
    assert_eq!(b.superseded().load(Ordering::Acquire), 0);
    assert!(a.standby_attached(), "heartbeats in the same epoch attach");
}

/// A standby that starts in an older epoch (a restarted old primary) follows a primary in a later one;
/// the primary's `HAND_OVER` flag then makes it take over at once, one epoch further, as a planned move.
#[test]
fn a_standby_follows_a_later_epoch_and_takes_over_when_handed_over() {
    use replication::detector::DetectorConfig;
    use replication::node::StandbyNode;
    let pool = Pool::new(1024, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).expect("pool");
    let (pa, pb, _ctl) = link(&pool, &MemConfig::new("repl", 9));
    let mut now = Instant::ZERO;
    let mut primary = PrimaryLink::new(cfg(2), 2, pa, now).expect("link");
    // Slow failure detection: nothing in this test may look like a dead primary.
    let det = DetectorConfig {
        heartbeat_interval: Duration::from_millis(1),
        miss_threshold: 1000,
        lan_timeout: Duration::from_secs(10),
        isolation_timeout: Duration::from_millis(500),
    };
    let mut standby = StandbyNode::new(cfg(1), det, Default::default(), 1, 2, pb, now).expect("node");
    let mut took = None;
    for _ in 0..50 {
        primary.poll(now);
        took = took.or(standby.step(now).1);
        now += Duration::from_millis(1);
    }
    assert_eq!(took, None, "a live primary is followed, not taken over from");
    assert_eq!(standby.epoch(), 2, "the standby joined the primary's epoch");
    assert!(standby.has_heard_primary());
    assert!(primary.standby_attached(), "and the primary hears it in its own epoch");
    assert_eq!(primary.superseded().load(Ordering::Acquire), 0);
    assert!(!standby.handed_over());
    primary.hand_over_flag().store(true, Ordering::Release);
    for _ in 0..50 {
        primary.poll(now);
        took = took.or(standby.step(now).1);
        now += Duration::from_millis(1);
        if took.is_some() {
            break;
        }
    }
    assert_eq!(took, Some(3), "handed over: the standby takes over in the next epoch");
    assert!(standby.handed_over());
}
