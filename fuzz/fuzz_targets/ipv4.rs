//! Fuzz target: IPv4 (and ICMP inside it). Parsing never panics; an accepted header re-emits (without
//! options) to a header that parses equal; incremental address rewrites keep the checksum verifying.
#![no_main]

use dataplane::wire::{Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Ipv4Packet::new_checked(data) else { return };
    let _ = (packet.options().len(), packet.is_fragment(), packet.verify_checksum());
    let verified = Ipv4Repr::parse(&packet, true);
    let Ok(repr) = Ipv4Repr::parse(&packet, false) else { return };
    if repr.protocol == IpProtocol::Icmp {
        if let Ok(icmp) = Icmpv4Packet::new_checked(packet.payload()) {
            if let Ok(echo) = Icmpv4Repr::parse(&icmp, true) {
                let mut out = vec![0u8; echo.buffer_len()];
                echo.emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]));
                // Compared as reprs: a sender may write the checksum 0xFFFF where 0x0000 is canonical.
                let again = Icmpv4Packet::new_checked(&out[..]).expect("emitted echo is well formed");
                assert_eq!(Icmpv4Repr::parse(&again, true), Ok(echo));
            }
        }
    }
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
    let again = Ipv4Packet::new_checked(&out[..]).expect("emitted header is well formed");
    assert_eq!(Ipv4Repr::parse(&again, true), Ok(repr));

    if verified.is_ok() {
        let mut copy = data.to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut copy[..]);
        p.set_dst_addr_incremental(Ipv4Address::new(198, 18, 0, 1));
        p.set_src_addr_incremental(Ipv4Address::from_u32(u32::from(repr.ttl) * 0x0101_0101));
        p.set_ttl_incremental(repr.ttl.wrapping_sub(1));
        assert!(p.verify_checksum());
    }
});
