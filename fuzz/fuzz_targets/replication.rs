//! Fuzz target: the replication channel's input. Frame parsing, delta batch validation, and a fresh
//! channel and standby store fed the input as a frame never panic; every record a channel delivers
//! applies to a store or is refused with an error value.
#![no_main]

use dataplane::time::Instant;
use libfuzzer_sys::fuzz_target;
use replication::channel::{Channel, ChannelConfig};
use replication::store::{FlowStore, StoreConfig};

fuzz_target!(|data: &[u8]| {
    let _ = replication::frame::parse(data, 9000);
    let _ = replication::delta::validate(data);
    for rec in replication::delta::records(data).into_iter().flatten().take(64) {
        let _ = rec;
    }
    let Ok(mut ch) = Channel::<u64>::new(ChannelConfig::default(), 1, Instant::ZERO) else { return };
    let _ = ch.handle_frame(Instant::from_millis(1), data);
    let mut store = FlowStore::new(StoreConfig { max_flows: 64, max_data_bytes: 1 << 16 });
    while let Some(records) = ch.poll_deliver(Instant::from_millis(1)) {
        for rec in records.flatten() {
            let _ = store.apply(&rec);
        }
    }
    while ch.poll_transmit(Instant::from_millis(2)).is_some() {}
});
