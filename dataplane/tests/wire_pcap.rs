//! Frames a real Linux TCP exchange put on a veth (tests/fixtures/linux-tcp.pcap, made by
//! scripts/capture-fixtures.sh): every one must parse with verified checksums, carry the options Linux
//! sends, and come back byte for byte when rebuilt from its parsed form.

use dataplane::wire::{
    build_arp_frame, build_icmp_frame, build_tcp_frame, parse_frame, rewrite_tcp_ipv4, EthernetFrame,
    FrameError, FrameHeader, FramePayload, Ipv4Address, Ipv4Packet, Ipv4Payload, TcpFlags, TcpPacket,
    TcpRewrite,
};

const PCAP: &[u8] = include_bytes!("fixtures/linux-tcp.pcap");

/// The frames of a classic pcap file (24-byte global header, 16-byte record headers), either byte order.
fn pcap_frames(file: &[u8]) -> Vec<&[u8]> {
    let magic = &file[..4];
    let big_endian = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
        other => panic!("not a classic pcap file: magic {other:02x?}"),
    };
    let u32_at = |at: usize| {
        let b = [file[at], file[at + 1], file[at + 2], file[at + 3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "link type must be Ethernet");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < file.len() {
        let caplen = u32_at(at + 8) as usize;
        let origlen = u32_at(at + 12) as usize;
        assert_eq!(caplen, origlen, "frame {} was truncated by the capture", frames.len());
        frames.push(&file[at + 16..at + 16 + caplen]);
        at += 16 + caplen;
    }
    frames
}

#[test]
fn every_captured_frame_parses_with_valid_checksums() {
    let frames = pcap_frames(PCAP);
    assert!(frames.len() >= 20, "capture holds {} frames", frames.len());
    let (mut arp, mut icmp, mut tcp) = (0, 0, 0);
    for (i, bytes) in frames.iter().enumerate() {
        let frame = parse_frame(bytes).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        match frame.payload {
            FramePayload::Arp(_) => arp += 1,
            FramePayload::Ipv4 { l4: Ipv4Payload::Icmp(_), .. } => icmp += 1,
            FramePayload::Ipv4 { l4: Ipv4Payload::Tcp(_), .. } => tcp += 1,
            FramePayload::Replication(_) => panic!("frame {i}: no replication frames in this capture"),
        }
    }
    assert_eq!((arp, icmp), (2, 2), "one ARP request/reply and one ping request/reply");
    assert!(tcp >= 15);
}

#[test]
fn syn_and_syn_ack_carry_linux_options() {
    let frames = pcap_frames(PCAP);
    let parsed: Vec<_> = frames.iter().map(|f| parse_frame(f).unwrap()).collect();
    let syns: Vec<_> =
        parsed.iter().filter_map(|f| f.tcp()).filter(|(_, t)| t.flags.contains(TcpFlags::SYN)).collect();
    assert_eq!(syns.len(), 2);
    let (syn_ip, syn) = syns[0];
    let (_, syn_ack) = syns[1];
    assert_eq!(syn.flags, TcpFlags::SYN);
    assert_eq!(syn_ack.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(syn_ip.src_addr, Ipv4Address::new(198, 18, 0, 1));
    assert_eq!(syn_ip.dst_addr, Ipv4Address::new(198, 18, 0, 2));
    assert_eq!(syn.dst_port, 5001);
    for seg in [syn, syn_ack] {
        assert_eq!(seg.options.mss, Some(1460));
        assert!(seg.options.sack_permitted);
        let shift = seg.options.window_scale.expect("Linux sends window scale");
        assert!((1..=14).contains(&shift));
        assert!(seg.options.timestamps.is_some());
        assert!(seg.options.sack.is_empty());
        assert!(seg.payload.is_empty());
        assert_eq!(seg.segment_len(), 1);
    }
    assert_eq!(syn.options.timestamps.unwrap().tsecr, 0);
    assert_eq!(syn_ack.options.timestamps.unwrap().tsecr, syn.options.timestamps.unwrap().tsval);
    assert_eq!(syn_ack.ack, syn.seq.wrapping_add(1));
    // Linux's SYN layout: mss, sackOK+TS, nop, wscale — 20 bytes of options.
    let syn_tcp =
        TcpPacket::new_checked(&frames[parsed.iter().position(|f| f.tcp().is_some()).unwrap()][34..])
            .unwrap();
    assert_eq!(syn_tcp.header_len(), 40);
    assert_eq!(&syn_tcp.options()[..8], &[2, 4, 0x05, 0xb4, 4, 2, 8, 10]);
}

#[test]
fn sack_blocks_as_linux_sent_them() {
    let frames = pcap_frames(PCAP);
    let mut most_blocks = 0;
    for bytes in &frames {
        let frame = parse_frame(bytes).unwrap();
        let Some((_, tcp)) = frame.tcp() else { continue };
        if tcp.options.sack.is_empty() {
            continue;
        }
        most_blocks = most_blocks.max(tcp.options.sack.len());
        assert!(tcp.options.timestamps.is_some());
        for &(left, right) in tcp.options.sack.as_slice() {
            // Every block lies above the cumulative ACK and is non-empty.
            assert!(left.wrapping_sub(tcp.ack) < 1 << 30 && left != tcp.ack);
            assert!(right.wrapping_sub(left) > 0 && right.wrapping_sub(left) < 1 << 20);
        }
    }
    assert!(most_blocks >= 2, "the capture's drops should yield an ACK with two SACK blocks");
}

#[test]
fn rebuilding_a_parsed_frame_gives_the_original_bytes() {
    for (i, bytes) in pcap_frames(PCAP).into_iter().enumerate() {
        let frame = parse_frame(bytes).unwrap();
        let mut out = [0u8; 1600];
        let len = match frame.payload {
            FramePayload::Arp(arp) => build_arp_frame(
                &mut out,
                frame.ethernet.src_addr,
                frame.ethernet.dst_addr,
                frame.ethernet.vlan,
                &arp,
            ),
            FramePayload::Ipv4 { ip, l4, .. } => {
                let header = FrameHeader {
                    src_mac: frame.ethernet.src_addr,
                    dst_mac: frame.ethernet.dst_addr,
                    vlan: frame.ethernet.vlan,
                    src_ip: ip.src_addr,
                    dst_ip: ip.dst_addr,
                    ttl: ip.ttl,
                    tos: ip.tos,
                    ident: ip.ident,
                    dont_frag: ip.dont_frag,
                };
                match l4 {
                    Ipv4Payload::Tcp(tcp) => build_tcp_frame(&mut out, &header, &tcp),
                    Ipv4Payload::Icmp(icmp) => build_icmp_frame(&mut out, &header, &icmp),
                }
            }
            FramePayload::Replication(_) => unreachable!(),
        }
        .unwrap();
        assert_eq!(&out[..len], bytes, "frame {i} rebuilt differently");
    }
}

#[test]
fn corrupted_captured_frames_are_rejected_by_checksum() {
    for bytes in pcap_frames(PCAP) {
        let frame = parse_frame(bytes).unwrap();
        let FramePayload::Ipv4 { l4, l4_offset, .. } = frame.payload else { continue };
        // TTL sits in the IPv4 header: only the header checksum notices.
        let mut bad_ip = bytes.to_vec();
        bad_ip[frame.l3_offset + 8] ^= 0x01;
        assert_eq!(parse_frame(&bad_ip).unwrap_err(), FrameError::Ipv4BadChecksum);
        // The last byte of the transport part: the transport checksum notices.
        let mut bad_l4 = bytes.to_vec();
        *bad_l4.last_mut().unwrap() ^= 0x80;
        let expected = match l4 {
            Ipv4Payload::Tcp(_) => FrameError::TcpBadChecksum,
            Ipv4Payload::Icmp(_) => FrameError::IcmpBadChecksum,
        };
        assert_eq!(parse_frame(&bad_l4).unwrap_err(), expected);
        assert!(l4_offset >= frame.l3_offset + 20);
    }
}

#[test]
fn incremental_rewrite_of_captured_segments_matches_recomputation() {
    let new_dst = Ipv4Address::new(198, 19, 255, 254);
    for bytes in pcap_frames(PCAP) {
        let frame = parse_frame(bytes).unwrap();
        let Some((_, tcp)) = frame.tcp() else { continue };
        let rewrite = TcpRewrite {
            src_addr: Some(Ipv4Address::new(198, 18, 7, 7)),
            dst_addr: Some(new_dst),
            src_port: Some(40_000),
            dst_port: Some(8080),
            seq: Some(tcp.seq.wrapping_add(0x8000_0001)),
            ack: Some(tcp.ack.wrapping_sub(12_345)),
        };
        let mut incremental = bytes.to_vec();
        rewrite_tcp_ipv4(&mut incremental[frame.l3_offset..], &rewrite).unwrap();

        let mut full = incremental.clone();
        let eth = EthernetFrame::new_checked(&mut full[..]).unwrap();
        let l3 = eth.header_len();
        let mut ip = Ipv4Packet::new_checked(&mut full[l3..]).unwrap();
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        TcpPacket::new_checked(ip.payload_mut()).unwrap().fill_checksum(src, dst);
        assert_eq!(incremental, full);

        let reparsed = parse_frame(&incremental).unwrap();
        let (ip, seg) = reparsed.tcp().unwrap();
        assert_eq!((ip.dst_addr, seg.dst_port, seg.seq), (new_dst, 8080, tcp.seq.wrapping_add(0x8000_0001)));
        assert_eq!(seg.payload, tcp.payload);
        assert_eq!(seg.options, tcp.options);
    }
}
