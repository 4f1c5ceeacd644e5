//! Property tests of the wire layer: Repr → emit → parse gives the Repr back for every format; parsing
//! arbitrary or mutated bytes never panics; incremental checksum updates equal full recomputation.

use dataplane::wire::{
    build_tcp_frame, parse_frame, parse_frame_with, rewrite_tcp_ipv4, ArpOperation, ArpPacket, ArpRepr,
    ChecksumMode, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, FrameHeader, FramePayload,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Payload, Ipv4Repr, OptionsIter,
    SackBlocks, TcpFlags, TcpOptions, TcpPacket, TcpRepr, TcpRewrite, Timestamps, VlanTag,
};
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = EthernetAddress> {
    any::<[u8; 6]>().prop_map(EthernetAddress)
}

fn ip() -> impl Strategy<Value = Ipv4Address> {
    any::<[u8; 4]>().prop_map(Ipv4Address)
}

fn vlan() -> impl Strategy<Value = Option<VlanTag>> {
    proptest::option::of((0u8..8, any::<bool>(), 0u16..4096).prop_map(|(pcp, dei, vid)| VlanTag {
        pcp,
        dei,
        vid,
    }))
}

fn ethertype() -> impl Strategy<Value = EtherType> {
    prop_oneof![
        Just(EtherType::Ipv4),
        Just(EtherType::Arp),
        Just(EtherType::Replication),
        any::<u16>().prop_filter_map("a known type", |v| match EtherType::from(v) {
            EtherType::Unknown(v) => Some(EtherType::Unknown(v)),
            _ => None,
        }),
    ]
}

/// 32-bit values with the checksum corner cases (all zeros, all ones, half-words of each) well represented.
fn word32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(u32::MAX), Just(0xFFFF_0000), Just(0x0000_FFFF), any::<u32>()]
}

fn word16() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), Just(u16::MAX), any::<u16>()]
}

fn sack_blocks() -> impl Strategy<Value = SackBlocks> {
    proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=4).prop_map(|blocks| {
        let mut sack = SackBlocks::default();
        for (l, r) in blocks {
            sack.push(l, r);
        }
        sack
    })
}

fn tcp_options() -> impl Strategy<Value = TcpOptions> {
    (
        proptest::option::of(any::<u16>()),
        proptest::option::of(0u8..=14),
        any::<bool>(),
        sack_blocks(),
        proptest::option::of(
            (any::<u32>(), any::<u32>()).prop_map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
        ),
    )
        .prop_map(|(mss, window_scale, sack_permitted, sack, timestamps)| TcpOptions {
            mss,
            window_scale,
            sack_permitted,
            sack,
            timestamps,
        })
}

/// A TCP segment description; the payload is owned so that a `TcpRepr` can borrow it.
#[derive(Clone, Debug)]
struct Segment {
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    urgent: u16,
    options: TcpOptions,
    payload: Vec<u8>,
}

impl Segment {
    fn repr(&self) -> TcpRepr<'_> {
        TcpRepr {
            src_port: self.ports.0,
            dst_port: self.ports.1,
            seq: self.seq,
            ack: self.ack,
            flags: TcpFlags(self.flags),
            window: self.window,
            urgent: self.urgent,
            options: self.options,
            payload: &self.payload,
        }
    }
}

fn segment() -> impl Strategy<Value = Segment> {
    (
        (any::<u16>(), any::<u16>()),
        word32(),
        word32(),
        any::<u8>(),
        word16(),
        word16(),
        tcp_options(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(ports, seq, ack, flags, window, urgent, options, payload)| Segment {
            ports,
            seq,
            ack,
            flags,
            window,
            urgent,
            options,
            payload,
        })
}

/// What parsing an emitted segment should give: the SACK blocks that fit, the rest as they were.
fn expected_after_emit(options: &TcpOptions) -> TcpOptions {
    let mut expected = *options;
    expected.sack = SackBlocks::default();
    for &(l, r) in options.sack.as_slice().iter().take(options.sack_blocks_that_fit()) {
        expected.sack.push(l, r);
    }
    expected
}

fn frame_header() -> impl Strategy<Value = FrameHeader> {
    (mac(), mac(), vlan(), ip(), ip(), any::<u8>(), any::<u8>(), any::<u16>(), any::<bool>()).prop_map(
        |(src_mac, dst_mac, vlan, src_ip, dst_ip, ttl, tos, ident, dont_frag)| FrameHeader {
            src_mac,
            dst_mac,
            vlan,
            src_ip,
            dst_ip,
            ttl,
            tos,
            ident,
            dont_frag,
        },
    )
}

/// Calls every accessor of every view that accepts `bytes`: none may panic once `check_len` passed.
fn touch_every_view(bytes: &[u8]) {
    if let Ok(f) = EthernetFrame::new_checked(bytes) {
        let _ = (f.dst_addr(), f.src_addr(), f.vlan_tag(), f.ethertype(), f.header_len(), f.payload().len());
        let _ = EthernetRepr::parse(&f);
    }
    if let Ok(p) = ArpPacket::new_checked(bytes) {
        let _ = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len(), p.operation());
        let _ = (p.source_hardware_addr(), p.source_protocol_addr());
        let _ = (p.target_hardware_addr(), p.target_protocol_addr());
        let _ = ArpRepr::parse(&p);
    }
    if let Ok(p) = Ipv4Packet::new_checked(bytes) {
        let _ = (p.version(), p.header_len(), p.tos(), p.total_len(), p.ident(), p.dont_frag());
        let _ = (p.more_frags(), p.frag_offset(), p.is_fragment(), p.ttl(), p.protocol(), p.checksum());
        let _ = (p.src_addr(), p.dst_addr(), p.options().len(), p.payload().len(), p.verify_checksum());
        let _ = Ipv4Repr::parse(&p, true);
        let _ = Ipv4Repr::parse(&p, false);
    }
    if let Ok(p) = TcpPacket::new_checked(bytes) {
        let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.header_len(), p.flags());
        let _ = (p.window_len(), p.checksum(), p.urgent_at(), p.options().len(), p.payload().len());
        let _ = p.options_iter().count();
        let _ = p.verify_checksum(Ipv4Address::new(1, 2, 3, 4), Ipv4Address::new(5, 6, 7, 8));
        let _ = TcpRepr::parse(&p, Ipv4Address::UNSPECIFIED, Ipv4Address::BROADCAST, true);
        let _ = TcpRepr::parse(&p, Ipv4Address::UNSPECIFIED, Ipv4Address::BROADCAST, false);
    }
    if let Ok(p) = Icmpv4Packet::new_checked(bytes) {
        let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.echo_ident(), p.echo_seq_no(), p.data().len());
        let _ = Icmpv4Repr::parse(&p, true);
        let _ = Icmpv4Repr::parse(&p, false);
    }
    let _ = OptionsIter::new(bytes).count();
    let _ = TcpOptions::parse(bytes);
    let _ = parse_frame(bytes);
    let _ = parse_frame_with(bytes, ChecksumMode::Skip);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn ethernet_round_trip(src in mac(), dst in mac(), vlan in vlan(), ethertype in ethertype()) {
        let repr = EthernetRepr { src_addr: src, dst_addr: dst, vlan, ethertype };
        let mut buf = vec![0u8; repr.buffer_len(3)];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr);
        prop_assert_eq!(frame.payload().len(), 3);
    }

    #[test]
    fn arp_round_trip(request in any::<bool>(), sha in mac(), spa in ip(), tha in mac(), tpa in ip()) {
        let operation = if request { ArpOperation::Request } else { ArpOperation::Reply };
        let repr = ArpRepr {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_hardware_addr: tha,
            target_protocol_addr: tpa,
        };
        let mut buf = [0u8; 28];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        prop_assert_eq!(ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()).unwrap(), repr);
    }

    #[test]
    fn ipv4_round_trip(
        src in ip(), dst in ip(), protocol in any::<u8>(), payload_len in 0usize..600,
        ttl in any::<u8>(), tos in any::<u8>(), ident in any::<u16>(), dont_frag in any::<bool>(),
        padding in 0usize..20,
    ) {
        let repr = Ipv4Repr {
            src_addr: src, dst_addr: dst, protocol: IpProtocol::from(protocol), payload_len, ttl, tos, ident,
            dont_frag,
        };
        let mut buf = vec![0u8; repr.buffer_len() + padding];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(packet.verify_checksum());
        prop_assert_eq!(Ipv4Repr::parse(&packet, true).unwrap(), repr);
        prop_assert_eq!(packet.payload().len(), payload_len);
    }

    #[test]
    fn icmp_round_trip(request in any::<bool>(), ident in any::<u16>(), seq_no in any::<u16>(),
                       data in proptest::collection::vec(any::<u8>(), 0..100)) {
        let repr = if request {
            Icmpv4Repr::EchoRequest { ident, seq_no, data: &data }
        } else {
            Icmpv4Repr::EchoReply { ident, seq_no, data: &data }
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]));
        prop_assert_eq!(Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&buf[..]).unwrap(), true).unwrap(), repr);
    }

    #[test]
    fn tcp_round_trip(seg in segment(), src in ip(), dst in ip()) {
        let repr = seg.repr();
        prop_assert!(repr.header_len() <= 60 && repr.header_len() % 4 == 0);
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut TcpPacket::new_unchecked(&mut buf[..]), src, dst);
        let packet = TcpPacket::new_checked(&buf[..]).unwrap();
        prop_assert!(packet.verify_checksum(src, dst));
        let parsed = TcpRepr::parse(&packet, src, dst, true).unwrap();
        prop_assert_eq!(parsed, TcpRepr { options: expected_after_emit(&repr.options), ..repr });
    }

    #[test]
    fn tcp_frame_round_trip(header in frame_header(), seg in segment()) {
        let repr = seg.repr();
        let mut buf = vec![0u8; 2048];
        let len = build_tcp_frame(&mut buf, &header, &repr).unwrap();
        buf[len..len + 8].fill(0xEE);
        let frame = parse_frame(&buf[..len]).unwrap();
        prop_assert_eq!(frame.ethernet.vlan, header.vlan);
        prop_assert_eq!((frame.ethernet.src_addr, frame.ethernet.dst_addr), (header.src_mac, header.dst_mac));
        let (ip, tcp) = frame.tcp().unwrap();
        prop_assert_eq!((ip.src_addr, ip.dst_addr, ip.ttl, ip.ident), (header.src_ip, header.dst_ip, header.ttl, header.ident));
        prop_assert_eq!(*tcp, TcpRepr { options: expected_after_emit(&repr.options), ..repr });
        // Trailing link padding changes nothing.
        prop_assert_eq!(parse_frame(&buf[..len + 8]).unwrap(), frame);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        touch_every_view(&bytes);
    }

    #[test]
    fn parsing_arbitrary_options_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..48)) {
        let items: Vec<_> = OptionsIter::new(&bytes).collect();
        // At most one error, only last, and exactly when the options as a whole are refused.
        let errors = items.iter().filter(|i| i.is_err()).count();
        prop_assert!(errors <= 1);
        prop_assert_eq!(errors == 1, items.last().is_some_and(|i| i.is_err()));
        prop_assert_eq!(errors == 1, TcpOptions::parse(&bytes).is_err());
    }

    /// Valid frames with a few bytes overwritten: the interesting half of "arbitrary bytes", since most of
    /// the headers stay plausible and deeper checks get exercised. A frame that still parses rebuilds to a
    /// frame that parses the same.
    #[test]
    fn parsing_mutated_frames_never_panics(
        header in frame_header(), seg in segment(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let repr = seg.repr();
        let mut buf = vec![0u8; 2048];
        let len = build_tcp_frame(&mut buf, &header, &repr).unwrap();
        let mut frame = buf[..len].to_vec();
        for (at, value) in &edits {
            let i = at.index(frame.len());
            frame[i] = *value;
        }
        touch_every_view(&frame);
        touch_every_view(&frame[..cut.index(frame.len() + 1)]);
        if let Ok(parsed) = parse_frame_with(&frame, ChecksumMode::Skip) {
            if let FramePayload::Ipv4 { ip, l4: Ipv4Payload::Tcp(tcp), .. } = parsed.payload {
                let header = FrameHeader {
                    src_mac: parsed.ethernet.src_addr, dst_mac: parsed.ethernet.dst_addr,
                    vlan: parsed.ethernet.vlan, src_ip: ip.src_addr, dst_ip: ip.dst_addr, ttl: ip.ttl,
                    tos: ip.tos, ident: ip.ident, dont_frag: ip.dont_frag,
                };
                let mut out = vec![0u8; 2048];
                let n = build_tcp_frame(&mut out, &header, &tcp).unwrap();
                let again = parse_frame(&out[..n]).unwrap();
                let (_, tcp_again) = again.tcp().unwrap();
                prop_assert_eq!(*tcp_again, TcpRepr { options: expected_after_emit(&tcp.options), ..tcp });
            }
        }
    }

    #[test]
    fn incremental_rewrite_equals_full_recomputation(
        header in frame_header(), seg in segment(),
        src_addr in proptest::option::of(ip()), dst_addr in proptest::option::of(ip()),
        src_port in proptest::option::of(word16()), dst_port in proptest::option::of(word16()),
        seq in proptest::option::of(word32()), ack in proptest::option::of(word32()),
    ) {
        let repr = seg.repr();
        let mut buf = vec![0u8; 2048];
        let len = build_tcp_frame(&mut buf, &header, &repr).unwrap();
        let l3 = if header.vlan.is_some() { 18 } else { 14 };
        let rewrite = TcpRewrite { src_addr, dst_addr, src_port, dst_port, seq, ack };
        let mut incremental = buf[..len].to_vec();
        rewrite_tcp_ipv4(&mut incremental[l3..], &rewrite).unwrap();

        let mut full = incremental.clone();
        let mut ip = Ipv4Packet::new_checked(&mut full[l3..]).unwrap();
        ip.fill_checksum();
        let (s, d) = (ip.src_addr(), ip.dst_addr());
        TcpPacket::new_checked(ip.payload_mut()).unwrap().fill_checksum(s, d);
        prop_assert_eq!(&incremental, &full);
        prop_assert!(parse_frame(&incremental).is_ok());
    }
}
