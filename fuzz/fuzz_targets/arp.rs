//! Fuzz target: ARP. Parsing never panics, and an accepted packet is emitted back to the same 28 bytes.
#![no_main]

use dataplane::wire::{ArpPacket, ArpRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = ArpPacket::new_checked(data) else { return };
    let Ok(repr) = ArpRepr::parse(&packet) else { return };
    let mut out = [0u8; 28];
    repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &data[..28]);
    let _ = repr.reply_to(repr.target_hardware_addr, repr.target_protocol_addr);
});
