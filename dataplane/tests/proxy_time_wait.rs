//! Core B ends a server half's TIME-WAIT at once when everything is settled, and its SNAT port's
//! quarantine stands in: the backend's retransmitted FIN is acknowledged from the quarantined port, never
//! answered with a RST. Core B alone, over an in-memory link, with the backend played by hand.

use dataplane::buf::{PacketBuf, Pool};
use dataplane::gate::AckPolicy;
use dataplane::port::mem::{self, MemConfig, MemPort};
use dataplane::port::Port;
use dataplane::proxy::msg::{ToClient, ToServer};
use dataplane::proxy::{ListenerConfig, ProxyConfig, ServerCore};
use dataplane::step::Steppable;
use dataplane::time::{Duration, Instant};
use dataplane::wire::{
    build_arp_frame, build_tcp_frame, parse_frame_with, ArpOperation, ArpRepr, ChecksumMode, EthernetAddress,
    FrameHeader, FramePayload, Ipv4Address, Ipv4Payload, TcpFlags, TcpOptions, TcpRepr,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 10), 80);
const PROXY_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 2]);
const BACKEND_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 2, 2]);

fn config() -> ProxyConfig {
    let tcp = dataplane::tcp::Config {
        time_wait: Duration::from_secs(2),
        isn_secret: [5; 16],
        ..Default::default()
    };
    ProxyConfig {
        vip: Ipv4Addr::new(198, 18, 1, 1),
        client_mac: EthernetAddress([2, 0, 0, 0, 1, 1]),
        snat: SNAT,
        server_mac: PROXY_MAC,
        server_net: (Ipv4Addr::new(198, 18, 2, 0), 24),
        gateway: None,
        listeners: vec![ListenerConfig {
            port: 80,
            policy: AckPolicy::None,
            backends: vec![(BACKEND, 1)],
            balance: dataplane::balance::Algorithm::Maglev,
            health: None,
        }],
        client_tcp: tcp.clone(),
        server_tcp: tcp,
        max_flows: 64,
        flow_idle_timeout: Duration::from_secs(600),
        snat_ports: (10_000, 10_099),
        probe_ports: (61_000, 61_099),
        snat_quarantine: Duration::from_secs(60),
        burst: 32,
        checksum: ChecksumMode::Verify,
        seed: 1,
    }
}

/// The backend's end of the link: sends segments, collects what core B sends (answering ARP).
struct Backend {
    port: MemPort,
    seen: Vec<TcpRepr<'static>>,
}

impl Backend {
    fn send(&mut self, now: Instant, snat_port: u16, seq: u32, ack: u32, flags: TcpFlags) {
        let hdr = FrameHeader::new(
            BACKEND_MAC,
            PROXY_MAC,
            Ipv4Address(BACKEND.ip().octets()),
            Ipv4Address(SNAT.octets()),
        );
        let repr = TcpRepr {
            src_port: BACKEND.port(),
            dst_port: snat_port,
            seq,
            ack,
            flags,
            window: 65_535,
            urgent: 0,
            options: if flags.contains(TcpFlags::SYN) {
                TcpOptions { mss: Some(1460), ..TcpOptions::default() }
            } else {
                TcpOptions::default()
            },
            payload: &[],
        };
        self.frame(now, |b| build_tcp_frame(b, &hdr, &repr).ok());
    }

    fn frame(&mut self, now: Instant, f: impl FnOnce(&mut [u8]) -> Option<usize>) {
        let mut b = self.port.alloc().expect("a buffer");
        let room = b.tailroom();
        let len = f(b.append(room).expect("room")).expect("frame fits");
        b.truncate(len);
        let mut out = vec![b];
        self.port.send(now, &mut out);
    }

    /// Takes what core B sent: ARP requests are answered, TCP segments kept (payload dropped).
    fn poll(&mut self, now: Instant) {
        let mut rx: Vec<PacketBuf> = Vec::new();
        self.port.recv(now, &mut rx, 64);
        for buf in rx {
            let frame =
                parse_frame_with(buf.data(), ChecksumMode::Verify).expect("core B sends valid frames");
            match frame.payload {
                FramePayload::Arp(arp) if arp.operation == ArpOperation::Request => {
                    let reply = ArpRepr {
                        operation: ArpOperation::Reply,
                        source_hardware_addr: BACKEND_MAC,
                        source_protocol_addr: arp.target_protocol_addr,
                        target_hardware_addr: arp.source_hardware_addr,
                        target_protocol_addr: arp.source_protocol_addr,
                    };
                    let to = arp.source_hardware_addr;
                    self.frame(now, |b| build_arp_frame(b, BACKEND_MAC, to, None, &reply).ok());
                }
                FramePayload::Ipv4 { l4: Ipv4Payload::Tcp(seg), .. } => {
                    self.seen.push(TcpRepr { payload: &[], ..seg });
                }
                _ => {}
            }
        }
    }
}

#[test]
fn a_settled_time_wait_half_goes_at_once_and_its_port_answers_a_late_fin_with_an_ack() {
    let pool = Pool::new(256, Pool::DEFAULT_BUF_SIZE, Pool::DEFAULT_HEADROOM).unwrap();
    let (proxy_port, backend_port, _) = mem::link(&pool, &MemConfig::new("server", 1));
    let (to_server, from_client) = crossbeam_channel::bounded(64);
    let (to_client, from_server) = crossbeam_channel::bounded(64);
    let mut now = Instant::ZERO;
    let mut core = ServerCore::new(Arc::new(config()), proxy_port, to_client, from_client, now).unwrap();
    let mut backend = Backend { port: backend_port, seen: Vec::new() };
    let run = |core: &mut ServerCore<MemPort>, backend: &mut Backend, now: &mut Instant| {
        for _ in 0..4 {
            core.step(*now);
            backend.poll(*now);
            *now += Duration::from_millis(1);
        }
    };

    to_server
        .send(ToServer::Open {
            client_flow: 7,
            client: SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 1), 40_000),
            vip: SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), 80),
            backend: BACKEND,
            client_mss: 1460,
            policy: AckPolicy::None,
        })
        .unwrap();
    run(&mut core, &mut backend, &mut now);
    let syn = *backend.seen.iter().find(|s| s.flags.contains(TcpFlags::SYN)).expect("a SYN to the backend");
    let (port, iss, our_iss) = (syn.src_port, 9_000u32, syn.seq);
    backend.send(now, port, iss, our_iss.wrapping_add(1), TcpFlags::SYN | TcpFlags::ACK);
    run(&mut core, &mut backend, &mut now);
    let server = match from_server.try_recv() {
        Ok(ToClient::Connected { server, .. }) => server,
        other => panic!("expected Connected, got {other:?}"),
    };

    // The client closes: core B sends the FIN first, so its half is the one that reaches TIME-WAIT.
    to_server.send(ToServer::Fin { server }).unwrap();
    run(&mut core, &mut backend, &mut now);
    let fin = *backend.seen.iter().rev().find(|s| s.flags.contains(TcpFlags::FIN)).expect("core B's FIN");
    assert_eq!(fin.seq, our_iss.wrapping_add(1));
    let our_fin_acked = our_iss.wrapping_add(2);
    backend.send(now, port, iss.wrapping_add(1), our_fin_acked, TcpFlags::FIN | TcpFlags::ACK);
    run(&mut core, &mut backend, &mut now);
    let last = *backend.seen.last().expect("the ACK of the backend's FIN");
    assert_eq!((last.flags, last.ack), (TcpFlags::ACK, iss.wrapping_add(2)));
    // Still there: core A has not yet said that the client acknowledged the backend's FIN.
    assert_eq!(core.flow_count(), 1);
    assert_eq!(core.stats().time_wait_closed, 0);
    to_server.send(ToServer::Acked { server, up_to: 1 }).unwrap();
    run(&mut core, &mut backend, &mut now);
    assert_eq!(core.flow_count(), 0, "the TIME-WAIT half went before its 2 s timer");
    assert_eq!(core.stats().time_wait_closed, 1);

    // Our last ACK was lost: the backend sends its FIN again, to a port with no flow behind it.
    let before = backend.seen.len();
    backend.send(now, port, iss.wrapping_add(1), our_fin_acked, TcpFlags::FIN | TcpFlags::ACK);
    run(&mut core, &mut backend, &mut now);
    let answers = &backend.seen[before..];
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(
        (answers[0].flags, answers[0].seq, answers[0].ack),
        (TcpFlags::ACK, our_fin_acked, iss.wrapping_add(2))
    );
    assert_eq!((core.stats().quarantine_acks, core.stats().stray_segments), (1, 0));

    // A stray segment to a port that was never used still gets its RST.
    backend.send(now, 10_050, 1, 1, TcpFlags::ACK);
    run(&mut core, &mut backend, &mut now);
    assert!(backend.seen.last().is_some_and(|s| s.flags.contains(TcpFlags::RST)));
    assert_eq!(core.stats().stray_segments, 1);
}
