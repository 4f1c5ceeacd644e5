//! Fuzz target: TCP. The first 8 bytes are the pseudo-header's addresses, the rest a segment. Parsing never
//! panics; an accepted segment re-emits to one that parses equal (SACK blocks that no longer fit dropped);
//! incremental rewrites equal full recomputation.
#![no_main]

use dataplane::wire::{Ipv4Address, OptionsIter, SackBlocks, TcpOptions, TcpPacket, TcpRepr};
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
    let Some((addrs, segment)) = data.split_at_checked(8) else { return };
    let src = Ipv4Address::from_bytes(&addrs[..4]).unwrap_or_default();
    let dst = Ipv4Address::from_bytes(&addrs[4..]).unwrap_or_default();
    let _ = OptionsIter::new(segment).count();
    let Ok(packet) = TcpPacket::new_checked(segment) else { return };
    let _ = TcpRepr::parse(&packet, src, dst, true);
    let Ok(repr) = TcpRepr::parse(&packet, src, dst, false) else { return };
    if segment.len() > usize::from(u16::MAX) {
        return;
    }
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), src, dst);
    let again = TcpPacket::new_checked(&out[..]).expect("emitted segment is well formed");
    let parsed = TcpRepr::parse(&again, src, dst, true).expect("emitted segment verifies");
    assert_eq!(parsed, TcpRepr { options: expected_after_emit(&repr.options), ..repr });

    let mut rewritten = out.clone();
    let mut p = TcpPacket::new_unchecked(&mut rewritten[..]);
    p.set_seq_number_incremental(repr.ack);
    p.set_ack_number_incremental(!repr.seq);
    p.set_dst_port_incremental(repr.src_port);
    p.update_checksum_for_addr(src, dst);
    let incremental = p.checksum();
    p.fill_checksum(dst, dst);
    assert_eq!(incremental, p.checksum());
});
