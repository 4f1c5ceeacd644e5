//! Fuzz target: the Ethernet view and repr. Whatever the bytes, parsing never panics, and a header that
//! parses is emitted back to the same bytes.
#![no_main]

use dataplane::wire::{EthernetFrame, EthernetRepr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = EthernetFrame::new_checked(data) else { return };
    let _ = (frame.vlan_tag(), frame.outer_ethertype(), frame.payload().len());
    let Ok(repr) = EthernetRepr::parse(&frame) else { return };
    assert_eq!(repr.header_len(), frame.header_len());
    let mut out = [0u8; 18];
    let header = &mut out[..repr.header_len()];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut *header));
    assert_eq!(&header[..], &data[..repr.header_len()]);
});
