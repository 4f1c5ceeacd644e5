//! Fuzz target: whole frames through `parse_frame`, end to end. Parsing never panics in either checksum
//! mode; a frame that parses is rebuilt with the build helpers and parses back to the same content.
#![no_main]

use dataplane::wire::{
    build_arp_frame, build_icmp_frame, build_tcp_frame, parse_frame, parse_frame_with, ChecksumMode,
    FrameHeader, FramePayload, Ipv4Payload, SackBlocks, TcpOptions, TcpRepr,
};
use libfuzzer_sys::fuzz_target;

fn expected_after_emit(options: &TcpOptions) -> TcpOptions {
    let mut expected = *options;
    expected.sack = SackBlocks::default();
    for &(l, r) in options.sack.as_slice().iter().take(options.sack_blocks_that_fit()) {
        expected.sack.push(l, r);
    }
    expected
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_frame(data);
    let Ok(frame) = parse_frame_with(data, ChecksumMode::Skip) else { return };
    let mut out = vec![0u8; data.len() + 128];
    match frame.payload {
        FramePayload::Replication(payload) => assert_eq!(payload, &data[frame.l3_offset..]),
        FramePayload::Arp(arp) => {
            let eth = frame.ethernet;
            let n = build_arp_frame(&mut out, eth.src_addr, eth.dst_addr, eth.vlan, &arp).expect("room");
            let again = parse_frame(&out[..n]).expect("rebuilt ARP frame parses");
            assert_eq!(again, frame);
        }
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
            let n = match l4 {
                Ipv4Payload::Tcp(tcp) => build_tcp_frame(&mut out, &header, &tcp),
                Ipv4Payload::Icmp(icmp) => build_icmp_frame(&mut out, &header, &icmp),
            }
            .expect("room");
            let again = parse_frame(&out[..n]).expect("rebuilt frame parses with checksums");
            assert_eq!(again.ethernet, frame.ethernet);
            let FramePayload::Ipv4 { ip: ip2, l4: l4_again, .. } = again.payload else {
                panic!("rebuilt frame is not IPv4")
            };
            assert_eq!(
                (ip2.src_addr, ip2.dst_addr, ip2.protocol, ip2.ttl),
                (ip.src_addr, ip.dst_addr, ip.protocol, ip.ttl)
            );
            match (l4, l4_again) {
                (Ipv4Payload::Tcp(a), Ipv4Payload::Tcp(b)) => {
                    assert_eq!(b, TcpRepr { options: expected_after_emit(&a.options), ..a })
                }
                (Ipv4Payload::Icmp(a), Ipv4Payload::Icmp(b)) => assert_eq!(a, b),
                _ => panic!("transport changed on rebuild"),
            }
        }
    }
});
