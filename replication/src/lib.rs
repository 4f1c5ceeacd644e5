//! holdfast's replication: how a standby keeps a copy of every connection and takes over.
//!
//! Everything here is sans-IO: frames (byte slices) and time ([`dataplane::time::Instant`]) go in,
//! frames and deadlines come out; no threads, sockets or system clock.
//!
//! - [`frame`]: the replication frame (EtherType 0x88B5, versioned header, CRC32C);
//! - [`delta`]: the records carried in a frame (flow opened, progress, data, closed, heartbeat, snapshot);
//! - [`channel`]: the reliable, sequenced, batching channel per queue, with confirmations to the sender;
//! - [`store`]: the standby's flow store;
//! - [`detector`]: the failure detector and the role state machine (epochs, fencing);
//! - [`resume`]: a stored flow's halves advanced to its latest progress, for a takeover.

pub mod channel;
pub mod delta;
pub mod detector;
pub mod frame;
pub mod node;
pub mod resume;
pub mod store;
