//! Byte-vector tests per header: hand-made known-good packets (checksums computed independently, with a
//! few lines of Python over the same bytes) and known-bad ones, each bad one with the error it must give.

use dataplane::wire::checksum;
use dataplane::wire::tcp::{option_kind, MAX_OPTIONS_LEN};
use dataplane::wire::{
    build_arp_frame, build_icmp_frame, build_tcp_frame, parse_frame, parse_frame_with, ArpOperation,
    ArpPacket, ArpRepr, BuildError, ChecksumMode, EtherType, EthernetAddress, EthernetFrame, EthernetRepr,
    FrameError, FrameHeader, FramePayload, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Packet,
    Ipv4Payload, Ipv4Repr, OptionsIter, SackBlocks, TcpFlags, TcpOption, TcpOptions, TcpPacket, TcpRepr,
    Timestamps, VlanTag,
};

const MAC_A: EthernetAddress = EthernetAddress([0x02, 0x00, 0x00, 0x00, 0x00, 0x0a]);
const MAC_B: EthernetAddress = EthernetAddress([0x02, 0x00, 0x00, 0x00, 0x00, 0x0b]);
const IP_A: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const IP_B: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

/// A SYN from 10.0.0.1:1234 to 10.0.0.2:80, seq 0x01020304, window 64240, options in Linux's layout:
/// mss 1460, sackOK, TS val 1 ecr 0, nop, wscale 7. Checksum 0x2fe4.
const SYN_SEGMENT: [u8; 40] = [
    0x04, 0xd2, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x2f,
    0xe4, 0x00, 0x00, // fixed header
    0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x03, 0x03, 0x07, // options
];

/// The IPv4 header carrying SYN_SEGMENT: ident 0x1234, DF, TTL 64. Checksum 0x1486.
const SYN_IP_HEADER: [u8; 20] = [
    0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x14, 0x86, 0x0a, 0x00, 0x00, 0x01, 0x0a,
    0x00, 0x00, 0x02,
];

/// 10.0.0.2:80 → 10.0.0.1:1234, PSH|ACK, seq 0xfffffff0, ack 0x01020305, window 502, nop nop TS(9, 1),
/// payload "hello". Checksum 0x13c2.
const DATA_SEGMENT: [u8; 37] = [
    0x00, 0x50, 0x04, 0xd2, 0xff, 0xff, 0xff, 0xf0, 0x01, 0x02, 0x03, 0x05, 0x80, 0x18, 0x01, 0xf6, 0x13,
    0xc2, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x01, b'h', b'e',
    b'l', b'l', b'o',
];

/// The RFC 791-era example header (a UDP datagram of 115 bytes), checksum 0xb861.
const UDP_IP_HEADER: [u8; 20] = [
    0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0,
    0xa8, 0x00, 0xc7,
];

/// ICMP echo request id 0x4242 seq 7 data "ping", checksum 0xd6e5.
const ECHO_REQUEST: [u8; 12] = [0x08, 0x00, 0xd6, 0xe5, 0x42, 0x42, 0x00, 0x07, b'p', b'i', b'n', b'g'];

/// ARP request: who has 10.0.0.2, tell 10.0.0.1 (at MAC_A).
const ARP_REQUEST: [u8; 28] = [
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
];

fn ethernet_header(ethertype: u16) -> Vec<u8> {
    let mut v = MAC_B.0.to_vec();
    v.extend_from_slice(&MAC_A.0);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

fn syn_frame() -> Vec<u8> {
    let mut v = ethernet_header(0x0800);
    v.extend_from_slice(&SYN_IP_HEADER);
    v.extend_from_slice(&SYN_SEGMENT);
    v
}

// ---- Ethernet ----

#[test]
fn ethernet_untagged() {
    let bytes = syn_frame();
    let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
    assert_eq!(frame.dst_addr(), MAC_B);
    assert_eq!(frame.src_addr(), MAC_A);
    assert_eq!(frame.ethertype(), EtherType::Ipv4);
    assert_eq!(frame.vlan_tag(), None);
    assert_eq!(frame.header_len(), 14);
    assert_eq!(frame.payload(), &bytes[14..]);
    let repr = EthernetRepr::parse(&frame).unwrap();
    let mut out = [0u8; 14];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &bytes[..14]);
}

#[test]
fn ethernet_with_one_vlan_tag() {
    // PCP 5, DEI 1, VID 100 → TCI 0xb064.
    let mut bytes = MAC_B.0.to_vec();
    bytes.extend_from_slice(&MAC_A.0);
    bytes.extend_from_slice(&[0x81, 0x00, 0xb0, 0x64, 0x08, 0x06]);
    bytes.extend_from_slice(&ARP_REQUEST);
    let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
    assert_eq!(frame.vlan_tag(), Some(VlanTag { pcp: 5, dei: true, vid: 100 }));
    assert_eq!(frame.ethertype(), EtherType::Arp);
    assert_eq!(frame.header_len(), 18);
    assert_eq!(frame.payload(), &ARP_REQUEST[..]);
    let parsed = parse_frame(&bytes).unwrap();
    assert_eq!(parsed.l3_offset, 18);
    assert!(matches!(parsed.payload, FramePayload::Arp(_)));
    let mut out = [0u8; 64];
    let FramePayload::Arp(arp) = parsed.payload else { unreachable!() };
    let len = build_arp_frame(&mut out, MAC_A, MAC_B, parsed.ethernet.vlan, &arp).unwrap();
    assert_eq!(&out[..len], &bytes[..]);
}

#[test]
fn ethernet_truncated_and_stacked_tags() {
    assert_eq!(EthernetFrame::new_checked(&[0u8; 13][..]).unwrap_err(), FrameError::EthernetTruncated);
    let mut tagged = ethernet_header(0x8100);
    tagged.extend_from_slice(&[0x00, 0x64]);
    assert_eq!(EthernetFrame::new_checked(&tagged[..]).unwrap_err(), FrameError::EthernetTruncated);
    tagged.extend_from_slice(&[0x81, 0x00]); // a second tag: not recognised
    tagged.extend_from_slice(&[0x00, 0x65, 0x08, 0x00]);
    assert_eq!(EthernetFrame::new_checked(&tagged[..]).unwrap().ethertype(), EtherType::Vlan);
    assert_eq!(parse_frame(&tagged).unwrap_err(), FrameError::UnsupportedEthertype);
}

#[test]
fn ethernet_addresses() {
    assert!(EthernetAddress::BROADCAST.is_broadcast());
    assert!(EthernetAddress::BROADCAST.is_multicast());
    assert!(EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
    assert!(MAC_A.is_unicast() && MAC_A.is_local());
    assert!(!EthernetAddress([0x00, 0x1b, 0x21, 1, 2, 3]).is_local());
    assert_eq!(MAC_A.to_string(), "02:00:00:00:00:0a");
    assert_eq!(EthernetAddress::from_bytes(&[1, 2, 3, 4, 5]), None);
    assert_eq!(
        EthernetAddress::from_bytes(&[1, 2, 3, 4, 5, 6, 7]),
        Some(EthernetAddress([1, 2, 3, 4, 5, 6]))
    );
    assert_eq!(u16::from(EtherType::Replication), 0x88B5);
    assert_eq!(EtherType::from(0x88B5), EtherType::Replication);
    assert_eq!(VlanTag::from_tci(0xFFFF).to_tci(), 0xFFFF);
}

#[test]
fn replication_and_unknown_ethertypes() {
    let mut repl = ethernet_header(0x88B5);
    repl.extend_from_slice(b"delta");
    let frame = parse_frame(&repl).unwrap();
    assert_eq!(frame.payload, FramePayload::Replication(b"delta"));
    let mut ipv6 = ethernet_header(0x86DD);
    ipv6.extend_from_slice(&[0x60; 40]);
    assert_eq!(parse_frame(&ipv6).unwrap_err(), FrameError::UnsupportedEthertype);
}

// ---- ARP ----

#[test]
fn arp_request_and_reply() {
    let repr = ArpRepr::parse(&ArpPacket::new_checked(&ARP_REQUEST[..]).unwrap()).unwrap();
    assert_eq!(repr.operation, ArpOperation::Request);
    assert_eq!(repr.source_hardware_addr, MAC_A);
    assert_eq!(repr.source_protocol_addr, IP_A);
    assert_eq!(repr.target_hardware_addr, EthernetAddress::UNSPECIFIED);
    assert_eq!(repr.target_protocol_addr, IP_B);
    let mut out = [0u8; 28];
    repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
    assert_eq!(out, ARP_REQUEST);

    assert_eq!(repr.reply_to(MAC_B, IP_A), None, "not our address");
    let reply = repr.reply_to(MAC_B, IP_B).unwrap();
    assert_eq!(reply.operation, ArpOperation::Reply);
    assert_eq!((reply.target_hardware_addr, reply.target_protocol_addr), (MAC_A, IP_A));
    assert_eq!(reply.reply_to(MAC_B, IP_B), None, "replies are not answered");
    let garp = ArpRepr::gratuitous(MAC_B, IP_B);
    assert_eq!(garp.source_protocol_addr, garp.target_protocol_addr);
}

#[test]
fn arp_bad_vectors() {
    assert_eq!(ArpPacket::new_checked(&ARP_REQUEST[..27]).unwrap_err(), FrameError::ArpTruncated);
    for (at, value) in [(1, 0x06), (3, 0xdd), (4, 8), (5, 16)] {
        let mut bad = ARP_REQUEST;
        bad[at] = value;
        let err = ArpRepr::parse(&ArpPacket::new_checked(&bad[..]).unwrap()).unwrap_err();
        assert_eq!(err, FrameError::ArpUnsupported, "byte {at}");
    }
    let mut bad_op = ARP_REQUEST;
    bad_op[7] = 3;
    assert_eq!(
        ArpRepr::parse(&ArpPacket::new_checked(&bad_op[..]).unwrap()).unwrap_err(),
        FrameError::ArpBadOperation
    );
}

// ---- IPv4 ----

#[test]
fn ipv4_known_header() {
    let mut bytes = UDP_IP_HEADER.to_vec();
    bytes.resize(0x73, 0);
    let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
    assert!(packet.verify_checksum());
    assert_eq!(packet.checksum(), 0xb861);
    assert_eq!(packet.src_addr(), Ipv4Address::new(192, 168, 0, 1));
    assert_eq!(packet.dst_addr(), Ipv4Address::new(192, 168, 0, 199));
    assert_eq!(packet.protocol(), IpProtocol::Udp);
    assert_eq!(packet.payload().len(), 0x73 - 20);
    let repr = Ipv4Repr::parse(&packet, true).unwrap();
    assert_eq!((repr.ttl, repr.dont_frag, repr.ident, repr.payload_len), (64, true, 0, 95));
    let mut out = [0u8; 20];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
    assert_eq!(out, UDP_IP_HEADER);
    assert_eq!(Ipv4Address::new(192, 168, 0, 199).to_string(), "192.168.0.199");
}

#[test]
fn ipv4_options_are_skipped_and_padding_tolerated() {
    // IHL 6 with one 4-byte option (NOP NOP NOP EOL); total length 32 (8 payload bytes) in a 40-byte buffer.
    let mut bytes = vec![
        0x46, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x0a,
        0x00, 0x00, 0x02, 0x01, 0x01, 0x01, 0x00,
    ];
    bytes.extend_from_slice(&[0xAA; 8]);
    bytes.extend_from_slice(&[0x00; 8]); // link padding
    Ipv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
    let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(packet.header_len(), 24);
    assert_eq!(packet.options(), &[1, 1, 1, 0]);
    assert_eq!(packet.payload(), &[0xAA; 8]);
    assert_eq!(Ipv4Repr::parse(&packet, true).unwrap().payload_len, 8);
}

#[test]
fn ipv4_bad_vectors() {
    let good = {
        let mut v = SYN_IP_HEADER.to_vec();
        v.extend_from_slice(&SYN_SEGMENT);
        v
    };
    let parse = |bytes: &[u8]| -> Result<Ipv4Repr, FrameError> {
        Ipv4Repr::parse(&Ipv4Packet::new_checked(bytes)?, true)
    };
    assert!(parse(&good).is_ok());
    assert_eq!(parse(&good[..19]).unwrap_err(), FrameError::Ipv4Truncated);
    assert_eq!(parse(&[]).unwrap_err(), FrameError::Ipv4Truncated);
    assert_eq!(parse(&good[..59]).unwrap_err(), FrameError::Ipv4Truncated, "total length 60 > 59");

    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    assert_eq!(parse(&mutate(&|v| v[0] = 0x65)).unwrap_err(), FrameError::Ipv4BadVersion);
    assert_eq!(parse(&[0x60]).unwrap_err(), FrameError::Ipv4BadVersion);
    assert_eq!(parse(&mutate(&|v| v[0] = 0x44)).unwrap_err(), FrameError::Ipv4BadIhl);
    assert_eq!(parse(&mutate(&|v| v[3] = 19)).unwrap_err(), FrameError::Ipv4BadTotalLength);
    assert_eq!(
        parse(&mutate(&|v| v[0] = 0x4f)).unwrap_err(),
        FrameError::Ipv4BadChecksum,
        "IHL 15 fits in 60"
    );
    assert_eq!(parse(&mutate(&|v| v[8] = 63)).unwrap_err(), FrameError::Ipv4BadChecksum);

    // Fragments: MF set, or a non-zero offset; with a correct checksum so only the fragment check fires.
    for flags_offset in [0x2000u16, 0x0001, 0x4001, 0x3fff] {
        let mut v = good.clone();
        let mut p = Ipv4Packet::new_unchecked(&mut v[..]);
        p.set_flags_and_offset(flags_offset);
        p.fill_checksum();
        assert!(Ipv4Packet::new_checked(&v[..]).unwrap().is_fragment());
        assert_eq!(parse(&v).unwrap_err(), FrameError::Ipv4Fragment, "{flags_offset:#06x}");
    }
    // Without checksum verification, a bad checksum passes.
    let bad_sum = mutate(&|v| v[10] ^= 0xFF);
    assert!(Ipv4Repr::parse(&Ipv4Packet::new_checked(&bad_sum[..]).unwrap(), false).is_ok());
    assert!(
        parse_frame_with(&[ethernet_header(0x0800), bad_sum.clone()].concat(), ChecksumMode::Skip).is_ok()
    );
    assert_eq!(
        parse_frame(&[ethernet_header(0x0800), bad_sum].concat()).unwrap_err(),
        FrameError::Ipv4BadChecksum
    );
}

#[test]
fn ipv4_unsupported_protocol_in_a_frame() {
    let mut frame = ethernet_header(0x0800);
    frame.extend_from_slice(&UDP_IP_HEADER);
    frame.resize(14 + 0x73, 0);
    assert_eq!(parse_frame(&frame).unwrap_err(), FrameError::UnsupportedProtocol);
}

#[test]
fn ipv4_incremental_rewrites_match_recomputation() {
    let mut v = SYN_IP_HEADER;
    let mut p = Ipv4Packet::new_unchecked(&mut v[..]);
    assert_eq!(p.set_dst_addr_incremental(Ipv4Address::new(198, 18, 255, 255)), IP_B);
    assert_eq!(p.set_src_addr_incremental(Ipv4Address::new(0, 0, 0, 0)), IP_A);
    p.set_ttl_incremental(1);
    let incremental = p.checksum();
    p.fill_checksum();
    assert_eq!(incremental, p.checksum());
}

// ---- ICMP ----

#[test]
fn icmp_echo_request_and_reply() {
    let packet = Icmpv4Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
    assert!(packet.verify_checksum());
    let repr = Icmpv4Repr::parse(&packet, true).unwrap();
    assert_eq!(repr, Icmpv4Repr::EchoRequest { ident: 0x4242, seq_no: 7, data: b"ping" });
    let mut out = [0u8; 12];
    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]));
    assert_eq!(out, ECHO_REQUEST);

    let reply = repr.reply().unwrap();
    assert_eq!(reply.reply(), None);
    let header = FrameHeader::new(MAC_B, MAC_A, IP_B, IP_A);
    let mut frame = [0u8; 64];
    let len = build_icmp_frame(&mut frame, &header, &reply).unwrap();
    assert_eq!(len, 14 + 20 + 12);
    let parsed = parse_frame(&frame[..len]).unwrap();
    let FramePayload::Ipv4 { ip, l4: Ipv4Payload::Icmp(icmp), l4_offset } = parsed.payload else { panic!() };
    assert_eq!((ip.src_addr, ip.dst_addr, ip.protocol, l4_offset), (IP_B, IP_A, IpProtocol::Icmp, 34));
    assert_eq!(icmp, reply);
    assert_eq!(frame[34], 0, "echo reply type");
}

#[test]
fn icmp_bad_vectors() {
    assert_eq!(Icmpv4Packet::new_checked(&ECHO_REQUEST[..7]).unwrap_err(), FrameError::IcmpTruncated);
    let mut bad = ECHO_REQUEST;
    bad[11] = b'G';
    assert_eq!(
        Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&bad[..]).unwrap(), true).unwrap_err(),
        FrameError::IcmpBadChecksum
    );
    // Destination unreachable (type 3), with a correct checksum.
    let mut unreachable = ECHO_REQUEST;
    unreachable[0] = 3;
    Icmpv4Packet::new_unchecked(&mut unreachable[..]).fill_checksum();
    assert_eq!(
        Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&unreachable[..]).unwrap(), true).unwrap_err(),
        FrameError::IcmpUnsupported
    );
    // An echo request with a non-zero code is not one.
    let mut coded = ECHO_REQUEST;
    coded[1] = 1;
    Icmpv4Packet::new_unchecked(&mut coded[..]).fill_checksum();
    assert_eq!(
        Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&coded[..]).unwrap(), true).unwrap_err(),
        FrameError::IcmpUnsupported
    );
}

// ---- TCP ----

#[test]
fn tcp_syn_vector() {
    let packet = TcpPacket::new_checked(&SYN_SEGMENT[..]).unwrap();
    assert!(packet.verify_checksum(IP_A, IP_B));
    assert!(!packet.verify_checksum(IP_A, Ipv4Address::new(10, 0, 0, 3)), "the pseudo-header is covered");
    let repr = TcpRepr::parse(&packet, IP_A, IP_B, true).unwrap();
    assert_eq!((repr.src_port, repr.dst_port, repr.seq, repr.ack), (1234, 80, 0x01020304, 0));
    assert_eq!((repr.flags, repr.window, repr.urgent), (TcpFlags::SYN, 64240, 0));
    assert_eq!(
        repr.options,
        TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack: SackBlocks::default(),
            timestamps: Some(Timestamps { tsval: 1, tsecr: 0 }),
        }
    );
    assert_eq!(repr.header_len(), 40);
    let mut out = [0u8; 40];
    repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), IP_A, IP_B);
    assert_eq!(out, SYN_SEGMENT);

    let header = FrameHeader { ident: 0x1234, ..FrameHeader::new(MAC_A, MAC_B, IP_A, IP_B) };
    let mut frame = [0u8; 128];
    let len = build_tcp_frame(&mut frame, &header, &repr).unwrap();
    assert_eq!(&frame[..len], &syn_frame()[..]);
}

#[test]
fn tcp_data_vector() {
    let packet = TcpPacket::new_checked(&DATA_SEGMENT[..]).unwrap();
    let repr = TcpRepr::parse(&packet, IP_B, IP_A, true).unwrap();
    assert_eq!(repr.flags, TcpFlags::PSH | TcpFlags::ACK);
    assert_eq!((repr.seq, repr.ack, repr.window), (0xffff_fff0, 0x0102_0305, 502));
    assert_eq!(repr.options.timestamps, Some(Timestamps { tsval: 9, tsecr: 1 }));
    assert_eq!(repr.payload, b"hello");
    assert_eq!(repr.segment_len(), 5);
    let mut out = [0u8; 37];
    repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), IP_B, IP_A);
    assert_eq!(out, DATA_SEGMENT);
    assert_eq!(
        TcpRepr::parse(&packet, IP_B, Ipv4Address::new(10, 0, 1, 1), true).unwrap_err(),
        FrameError::TcpBadChecksum,
        "another destination address changes the pseudo-header"
    );
}

#[test]
fn tcp_bad_header_lengths() {
    assert_eq!(TcpPacket::new_checked(&SYN_SEGMENT[..19]).unwrap_err(), FrameError::TcpTruncated);
    assert_eq!(TcpPacket::new_checked(&SYN_SEGMENT[..39]).unwrap_err(), FrameError::TcpTruncated);
    let mut low = SYN_SEGMENT;
    low[12] = 0x40;
    assert_eq!(TcpPacket::new_checked(&low[..]).unwrap_err(), FrameError::TcpBadDataOffset);
    let mut high = SYN_SEGMENT;
    high[12] = 0xf0;
    assert_eq!(TcpPacket::new_checked(&high[..]).unwrap_err(), FrameError::TcpTruncated);

    let mut frame = syn_frame();
    frame[14 + 20 + 12] = 0x40;
    assert_eq!(parse_frame(&frame).unwrap_err(), FrameError::TcpBadDataOffset);
    let mut frame = syn_frame();
    frame[14 + 20 + 17] ^= 1;
    assert_eq!(parse_frame(&frame).unwrap_err(), FrameError::TcpBadChecksum);
}

fn options(bytes: &[u8]) -> Result<TcpOptions, FrameError> {
    TcpOptions::parse(bytes)
}

#[test]
fn tcp_option_edge_cases() {
    // Malformed lengths: 0, 1, past the end, missing.
    assert_eq!(options(&[2, 0, 5, 0xb4]).unwrap_err(), FrameError::TcpBadOption);
    assert_eq!(options(&[1, 1, 99, 1]).unwrap_err(), FrameError::TcpBadOption);
    assert_eq!(options(&[2, 4, 5, 0xb4, 8, 10, 0, 0]).unwrap_err(), FrameError::TcpBadOption);
    assert_eq!(options(&[1, 1, 1, 3]).unwrap_err(), FrameError::TcpBadOption);
    // Unknown options (here TCP fast open, kind 34, and MD5, kind 19) are skipped by their length.
    let parsed = options(&[34, 4, 0xde, 0xad, 19, 6, 1, 2, 3, 4, 2, 4, 0x05, 0xb4]).unwrap();
    assert_eq!(parsed.mss, Some(1460));
    // A known kind with a wrong length is ignored, as Linux does.
    assert_eq!(options(&[2, 3, 5, 1, 1, 1]).unwrap(), TcpOptions::default());
    assert_eq!(options(&[5, 6, 0, 0, 0, 1, 1, 1]).unwrap(), TcpOptions::default());
    // Window scale above 14 is taken as 14.
    assert_eq!(options(&[3, 3, 15, 1]).unwrap().window_scale, Some(14));
    assert_eq!(options(&[3, 3, 255, 0]).unwrap().window_scale, Some(14));
    // After EOL, anything (even a malformed option) is padding.
    assert_eq!(options(&[2, 4, 0x02, 0x18, 0, 2, 0, 0]).unwrap().mss, Some(536));
    assert_eq!(options(&[]).unwrap(), TcpOptions::default());

    let items: Vec<_> = OptionsIter::new(&[1, 3, 3, 2, 42, 3, 9, 0, 99]).collect();
    assert_eq!(
        items,
        vec![
            Ok(TcpOption::NoOperation),
            Ok(TcpOption::WindowScale(2)),
            Ok(TcpOption::Unknown { kind: 42, data: &[9] }),
            Ok(TcpOption::EndOfList),
        ]
    );
    let errs: Vec<_> = OptionsIter::new(&[8, 1, 1, 1]).collect();
    assert_eq!(errs, vec![Err(FrameError::TcpBadOption)], "iteration stops at the first error");
}

#[test]
fn tcp_sack_blocks_fill_the_option_space() {
    let mut sack = SackBlocks::default();
    for i in 0..4u32 {
        assert!(sack.push(i * 1000, i * 1000 + 500));
    }
    assert!(!sack.push(1, 2));
    let mut opts = TcpOptions { sack, ..TcpOptions::default() };
    // Four blocks alone: 2 NOPs + 2 + 32 = 36 bytes.
    assert_eq!(opts.sack_blocks_that_fit(), 4);
    assert_eq!(opts.emit_len(), 36);
    let mut buf = [0u8; MAX_OPTIONS_LEN];
    let n = opts.emit(&mut buf);
    assert_eq!(&buf[..4], &[option_kind::NOP, option_kind::NOP, option_kind::SACK, 34]);
    assert_eq!(options(&buf[..n]).unwrap(), opts);

    // With timestamps, three fit (12 + 4 + 24 = 40), and the fourth is dropped.
    opts.timestamps = Some(Timestamps { tsval: 7, tsecr: 8 });
    assert_eq!(opts.sack_blocks_that_fit(), 3);
    assert_eq!(opts.emit_len(), 40);
    let n = opts.emit(&mut buf);
    let back = options(&buf[..n]).unwrap();
    // SackBlocks' derived equality also compares the unused slots, which `truncate` leaves stale, so the
    // expectation is built fresh (as the parser builds its blocks).
    let mut expected = opts;
    expected.sack = SackBlocks::default();
    for &(l, r) in &opts.sack.as_slice()[..3] {
        expected.sack.push(l, r);
    }
    assert_eq!(back, expected);

    // Everything at once: mss + ts + ws leave room for two.
    opts.mss = Some(1400);
    opts.window_scale = Some(20);
    opts.sack_permitted = true;
    assert_eq!(opts.sack_blocks_that_fit(), 2);
    assert_eq!(opts.emit_len(), 40);
    let n = opts.emit(&mut buf);
    let back = options(&buf[..n]).unwrap();
    assert_eq!(back.window_scale, Some(14), "emit caps the shift at 14");
    assert_eq!(back.sack.len(), 2);

    // A segment carrying them: data offset 15.
    let repr = TcpRepr {
        src_port: 1,
        dst_port: 2,
        seq: 3,
        ack: 4,
        flags: TcpFlags::ACK,
        window: 5,
        urgent: 0,
        options: opts,
        payload: b"",
    };
    assert_eq!(repr.header_len(), 60);
}

#[test]
fn tcp_sack_permitted_without_timestamps_uses_nops() {
    let opts =
        TcpOptions { mss: Some(1460), sack_permitted: true, window_scale: Some(0), ..Default::default() };
    let mut buf = [0u8; 40];
    let n = opts.emit(&mut buf);
    assert_eq!(&buf[..n], &[2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 0]);
    let ts_only = TcpOptions { timestamps: Some(Timestamps { tsval: 1, tsecr: 2 }), ..Default::default() };
    let n = ts_only.emit(&mut buf);
    assert_eq!(&buf[..n], &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
}

#[test]
fn tcp_incremental_rewrites_match_recomputation() {
    let mut seg = DATA_SEGMENT;
    let mut p = TcpPacket::new_unchecked(&mut seg[..]);
    p.set_src_port_incremental(0);
    p.set_dst_port_incremental(0xFFFF);
    p.set_seq_number_incremental(0);
    p.set_ack_number_incremental(0xFFFF_FFFF);
    p.set_window_len_incremental(0x8000);
    let new_src = Ipv4Address::new(198, 18, 0, 9);
    p.update_checksum_for_addr(IP_B, new_src);
    let incremental = p.checksum();
    p.fill_checksum(new_src, IP_A);
    assert_eq!(incremental, p.checksum());
}

/// RFC 1624's corner case: a rewrite after which the data sums to one's-complement zero. A full
/// recomputation gives 0x0000 there; eqn. 2 of RFC 1071 (HC' = HC - ~m - m') would give 0xFFFF.
#[test]
fn incremental_update_hits_the_rfc1624_corner_exactly() {
    let mut seg = DATA_SEGMENT;
    let mut p = TcpPacket::new_unchecked(&mut seg[..]);
    p.set_seq_number(0);
    p.fill_checksum(IP_B, IP_A);
    // With seq = 0 the data sums to S = ~checksum; a low word of ~S makes the sum 0xFFFF (negative zero).
    let s = !p.checksum();
    let corner_seq = u32::from(!s);
    p.set_seq_number_incremental(corner_seq);
    assert_eq!(p.checksum(), 0x0000);
    let incremental = p.checksum();
    p.fill_checksum(IP_B, IP_A);
    assert_eq!(p.checksum(), incremental);
    assert!(p.verify_checksum(IP_B, IP_A));
    // And back again, from checksum 0x0000.
    p.set_seq_number_incremental(0);
    let back = p.checksum();
    p.fill_checksum(IP_B, IP_A);
    assert_eq!(back, p.checksum());

    // The raw functions on the example of RFC 1624 §4 (HC 0xDD2F, m 0x5555 → m' 0x3285 gives 0x0000).
    assert_eq!(checksum::update16(0xDD2F, 0x5555, 0x3285), 0x0000);
}

// ---- frames and errors ----

#[test]
fn build_errors() {
    let repr = TcpRepr::parse(&TcpPacket::new_checked(&DATA_SEGMENT[..]).unwrap(), IP_B, IP_A, true).unwrap();
    let header = FrameHeader::new(MAC_B, MAC_A, IP_B, IP_A);
    let mut small = [0u8; 14 + 20 + 36];
    assert_eq!(build_tcp_frame(&mut small, &header, &repr).unwrap_err(), BuildError::BufferTooSmall);
    let mut exact = [0u8; 14 + 20 + 37];
    assert_eq!(build_tcp_frame(&mut exact, &header, &repr).unwrap(), exact.len());
    let huge = vec![0u8; 65_536];
    let big = TcpRepr { payload: &huge, ..repr };
    let mut buf = vec![0u8; 70_000];
    assert_eq!(build_tcp_frame(&mut buf, &header, &big).unwrap_err(), BuildError::PayloadTooLarge);
    let mut tiny = [0u8; 41];
    let arp = ArpRepr::gratuitous(MAC_A, IP_A);
    assert_eq!(
        build_arp_frame(&mut tiny, MAC_A, EthernetAddress::BROADCAST, None, &arp).unwrap_err(),
        BuildError::BufferTooSmall
    );
    assert_eq!(BuildError::BufferTooSmall.as_str(), "build_buffer_too_small");
}

#[test]
fn frame_error_names_are_stable_and_distinct() {
    let names: Vec<_> = FrameError::ALL.iter().map(|e| e.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    for (i, e) in FrameError::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
        assert_eq!(e.to_string(), e.as_str());
        assert!(e.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
    }
    assert_eq!(FrameError::Ipv4Fragment.as_str(), "ipv4_fragment");
    assert_eq!(FrameError::TcpBadOption.as_str(), "tcp_bad_option");
}

#[test]
fn truncation_at_every_length_is_an_error_never_a_panic() {
    let frame = syn_frame();
    for len in 0..frame.len() {
        let err = parse_frame(&frame[..len]).unwrap_err();
        let expected = match len {
            0..=13 => FrameError::EthernetTruncated,
            14..=73 => FrameError::Ipv4Truncated,
            _ => unreachable!(),
        };
        assert_eq!(err, expected, "len {len}");
    }
    assert!(parse_frame(&frame).is_ok());
    // Ethernet padding after the IP packet is ignored.
    let mut padded = frame.clone();
    padded.extend_from_slice(&[0u8; 6]);
    assert_eq!(parse_frame(&padded).unwrap().tcp().unwrap().1.payload, b"");
}
