//! Messages between the two protocol cores of a box, over bounded `crossbeam-channel` channels.
//!
//! Core A (client-facing) and core B (server-facing) never share a flow's state: each owns its half and
//! tells the other what it needs to know. Byte streams cross as chunks in order; acknowledgments cross as
//! stream offsets (0 is the first data byte; a FIN counts as one more), which both sides map onto their own
//! sequence space with the ISNs they hold — the byte-aligned relay in its simplest form.
//!
//! Flow ids: messages to B name B's flow (`server`), except `Open`, which carries A's; messages to A name
//! A's flow. A stale id (the flow is gone) is counted and ignored, since ids carry a generation.

use crate::balance::BackendId;
use crate::gate::AckPolicy;
use std::net::SocketAddrV4;

/// Bytes of one direction of one flow, in stream order, in a pooled vector.
pub use super::chunk::Chunk;

/// From core A (client side) to core B (server side).
#[derive(Debug)]
pub enum ToServer {
    /// A client's SYN arrived for a listener; open the server-side connection to `backend`.
    Open {
        client_flow: u64,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        backend: SocketAddrV4,
        /// The client's MSS: the server half advertises no more, so segments map one to one.
        client_mss: u16,
        policy: AckPolicy,
    },
    /// The next bytes the client sent; `offset` is the stream offset of the first one.
    Data { server: u64, offset: u64, chunk: Chunk },
    /// The client acknowledged the backend's stream up to this offset (FIN included as one).
    Acked { server: u64, up_to: u64 },
    /// The standby stored the backend's stream up to this offset (policy `replica`): the server half may
    /// acknowledge it to the backend.
    Stored { server: u64, up_to: u64 },
    /// Send the server half's engine as it is now (`ToClient::Saved`): a standby that joined needs it.
    Save { server: u64 },
    /// The client finished sending (its FIN), after all the data sent before.
    Fin { server: u64 },
    /// The client side is gone (reset, timed out, or refused): reset the server side.
    Abort { server: u64 },
}

/// From core B (server side) to core A (client side).
#[derive(Debug)]
pub enum ToClient {
    /// The backend accepted the connection: the client may now see its SYN-ACK.
    Connected {
        client_flow: u64,
        server: u64,
        backend_mss: u16,
        /// The server half's saved engine (`tcp::SavedConnection::encode`), for the standby.
        server_half: Vec<u8>,
    },
    /// The backend could not be reached (RST, timeout, no source port): refuse the client.
    Refused { client_flow: u64 },
    /// The next bytes the backend sent; `offset` is the stream offset of the first one.
    Data { client_flow: u64, offset: u64, chunk: Chunk },
    /// The backend acknowledged the client's stream up to this offset (FIN included as one).
    Acked { client_flow: u64, up_to: u64 },
    /// The backend finished sending, after all the data sent before.
    Fin { client_flow: u64 },
    /// The server side is gone: reset the client side.
    Abort { client_flow: u64 },
    /// The server half's engine after a FIN went either way, for the standby (`SavedConnection::encode`).
    Saved { client_flow: u64, server_half: Vec<u8> },
    /// After `Saved` for a `ToServer::Save`: the bytes the server half still owes the backend (its send
    /// buffer from SND.UNA, then what waits to enter it), from sequence number `seq` in its space (stream
    /// offset `offset`); and how far the backend may hold an acknowledgment of its stream (`s2c_acked`, a
    /// stream offset), with the backend's bytes received but not yet relayed (`s2c_unrelayed`, from stream
    /// offset `s2c_from`). A standby that joined must get the owed bytes their sender holds an ACK for.
    Owed {
        client_flow: u64,
        seq: u32,
        offset: u64,
        bytes: Vec<u8>,
        s2c_acked: u64,
        s2c_from: u64,
        s2c_unrelayed: Vec<u8>,
    },
    /// The server half's progress, for the standby's records. Sent before an `Acked` it covers, so core A
    /// never records a client edge beyond what the server half it records had acknowledged.
    Progress { client_flow: u64, server: super::replicate::HalfState },
    /// A health check moved a backend of a listener's pool down or up (existing flows are unaffected).
    BackendHealth { listener: u16, backend: BackendId, healthy: bool },
}

/// How big a chunk one message carries at most: a few segments, so one message is a few copies' work.
pub const MAX_CHUNK: usize = 16 * 1024;
