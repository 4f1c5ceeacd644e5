//! The proxy's building blocks used together, the way a core pair will: a SYN picks a backend, takes a
//! SNAT port, opens both halves of a flow and waits at the SYN gate; data is gated by the backend's
//! ACKs; idle flows expire and give their port and backend slot back; a backend failing its health
//! checks takes no new flows while existing ones carry on.

use dataplane::balance::health::{HealthAction, HealthChecker, HealthEvent, HealthParams, Reply};
use dataplane::balance::{Algorithm, BackendId, Pool, DEFAULT_TABLE_SIZE};
use dataplane::flow::{queue_for_port, ClientKey, FlowTable, ServerKey, SnatPorts};
use dataplane::gate::{AckGate, AckPolicy, NoStandby, SynDecision, SynGate};
use dataplane::time::{Duration, Instant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::net::{Ipv4Addr, SocketAddrV4};

const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), 5201);
const SNAT: [u8; 4] = [198, 18, 2, 1];
const IDLE: Duration = Duration::from_secs(30);

struct ClientHalf {
    backend: BackendId,
    snat_port: u16,
    syn: SynGate,
    gate: AckGate,
}

fn backend(i: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 10 + i), 5201)
}

#[test]
fn flows_open_run_and_expire_across_the_pieces() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let backends = [backend(0), backend(1), backend(2)];
    let mut pool = Pool::new(Algorithm::Maglev, &backends.map(|b| (b, 1)), DEFAULT_TABLE_SIZE).unwrap();
    let params = HealthParams::default();
    let mut health = HealthChecker::new(params, &backends, 60_000, 60_099, Instant::ZERO).unwrap();
    // Core pair 1 of 2.
    let mut snat = SnatPorts::new(20_000, 59_999, 1, 2, Duration::from_secs(60)).unwrap();
    let mut clients: FlowTable<ClientKey, ClientHalf> = FlowTable::new(2_000, IDLE, rng.random()).unwrap();
    let mut servers: FlowTable<ServerKey, ClientKey> = FlowTable::new(2_000, IDLE, rng.random()).unwrap();

    let mut now = Instant::ZERO;
    let mut open = |now: Instant,
                    i: u32,
                    pool: &mut Pool,
                    snat: &mut SnatPorts,
                    clients: &mut FlowTable<ClientKey, ClientHalf>,
                    servers: &mut FlowTable<ServerKey, ClientKey>|
     -> BackendId {
        let client =
            SocketAddrV4::new(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), 40_000 + (i % 1000) as u16);
        let key = ClientKey { client, vip: VIP };
        let b = pool.pick(client, VIP).unwrap();
        let baddr = pool.backend(b).unwrap().addr;
        let port = snat.allocate(SNAT, baddr, now).unwrap();
        assert_eq!(queue_for_port(port, 2), 1);
        let isn: u32 = rng.random();
        let offset: u32 = rng.random();
        let half = ClientHalf {
            backend: b,
            snat_port: port,
            syn: SynGate::new(NoStandby::Refuse),
            gate: AckGate::new(AckPolicy::Backend, isn.wrapping_add(1), offset),
        };
        clients.insert(key, half, now).unwrap();
        servers.insert(ServerKey { backend: baddr, snat_port: port }, key, now).unwrap();
        pool.on_flow_opened(b);
        b
    };

    for i in 0..1_000 {
        open(now, i, &mut pool, &mut snat, &mut clients, &mut servers);
    }
    assert_eq!(clients.len(), 1_000);
    let per_backend: Vec<u32> = pool.backends().iter().map(|b| b.active).collect();
    assert!(per_backend.iter().all(|&n| n > 250), "{per_backend:?}");

    // The standby confirms each flow; then the client's SYN-ACK may go out.
    let ids: Vec<_> = clients.iter().map(|(id, _, _)| id).collect();
    for id in &ids {
        let half = clients.get_mut(*id).unwrap();
        assert_eq!(half.syn.decide(true), SynDecision::Wait);
        half.syn.on_standby_confirmed();
        assert_eq!(half.syn.decide(true), SynDecision::Allow);
    }

    // Data on half the flows: a reply from the backend finds its flow by SNAT port, and its ACK releases
    // the client's bytes through the gate.
    now += Duration::from_secs(20);
    for id in ids.iter().step_by(2) {
        let key = *clients.key(*id).unwrap();
        let (start, offset, b, port) = {
            let h = clients.get_mut(*id).unwrap();
            let start = h.gate.received();
            h.gate.on_received(start.wrapping_add(1000));
            assert_eq!(h.gate.withheld(), 1000);
            (start, h.gate.offset(), h.backend, h.snat_port)
        };
        let baddr = pool.backend(b).unwrap().addr;
        let (_, ckey) = servers.find_mut(&ServerKey { backend: baddr, snat_port: port }, now).unwrap();
        assert_eq!(*ckey, key);
        let (_, h) = clients.find_mut(&key, now).unwrap();
        assert_eq!(
            h.gate.on_backend_acked(start.wrapping_add(offset).wrapping_add(600)),
            Some(start.wrapping_add(600))
        );
        assert_eq!(h.gate.withheld(), 400);
    }

    // Backend 2 stops answering its health checks: after `fall` timeouts it takes no new flows, while its
    // existing flows stay in the tables.
    let mut t = Instant::ZERO;
    let mut down = None;
    while t < now && down.is_none() {
        while let Some(a) = health.poll(t) {
            match a {
                HealthAction::SendProbe(p) if p.backend != BackendId(2) => {
                    assert_eq!(health.on_reply(p.addr, p.src_port, Reply::SynAck), None);
                }
                HealthAction::SendProbe(_) => {}
                HealthAction::Event(HealthEvent::Down(b)) => down = Some(b),
                HealthAction::Event(e) => panic!("unexpected {e:?}"),
            }
        }
        t += Duration::from_millis(100);
    }
    assert_eq!(down, Some(BackendId(2)));
    assert_eq!(pool.set_healthy(BackendId(2), false), Ok(true));
    let on_2 = pool.backend(BackendId(2)).unwrap().active;
    for i in 1_000..1_300 {
        assert_ne!(open(now, i, &mut pool, &mut snat, &mut clients, &mut servers), BackendId(2));
    }
    assert_eq!(pool.backend(BackendId(2)).unwrap().active, on_2);

    // 35 s after the start, the flows without data (idle since 0 s) expire; those touched at 20 s and the
    // new ones stay. Expiry hands back each flow's SNAT port and backend slot.
    now = Instant::ZERO + Duration::from_secs(35);
    let mut expired = 0;
    clients.expire(now, usize::MAX, |_, _, half| {
        let baddr = pool.backend(half.backend).unwrap().addr;
        let sid = servers.lookup(&ServerKey { backend: baddr, snat_port: half.snat_port }).unwrap();
        servers.remove(sid).unwrap();
        snat.release(SNAT, baddr, half.snat_port, now).unwrap();
        pool.on_flow_closed(half.backend);
        expired += 1;
    });
    assert_eq!(expired, 500);
    assert_eq!(clients.len(), 800);
    assert_eq!(servers.len(), 800);
    let active: u32 = pool.backends().iter().map(|b| b.active).sum();
    assert_eq!(active, 800);
    let in_use: u32 = backends.iter().map(|b| snat.in_use(SNAT, *b)).sum();
    assert_eq!(in_use, 800);
}
