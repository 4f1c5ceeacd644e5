//! holdfast's replication: how a standby keeps a copy of every connection and takes over.
//!
//! - the channel: a sequenced, acknowledged, retransmitting, batching protocol on its own port and queue;
//! - the wire format of state deltas (flow opened, progress, data, closed) and heartbeats;
//! - the standby's flow store, the failure detector, takeover and rejoin.
//!
//! Not built yet: see the issue "Replication and failover".
