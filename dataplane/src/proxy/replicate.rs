//! The primary's hook into replication: how core A tells the standby about flows and learns that the
//! standby stored them.
//!
//! The dataplane does not know the replication protocol (that crate sits above this one); it calls a
//! [`Replicator`] that the box assembles: the reliable channel on the replication port, in production and
//! in the simulator alike. Invariant 2 lives here: a client's SYN-ACK is held until
//! [`Replicator::poll_confirmed`] has returned its flow. Under policy `replica`, invariant 1 does too: a
//! relayed byte is acknowledged to its sender once [`Replicator::poll_stored`] covers it (or the other
//! peer acknowledged it).

use crate::gate::AckPolicy;
use crate::tcp::Connection;
use crate::time::{Duration, Instant};
use std::net::SocketAddrV4;

/// One half's progress since its last full save: what a standby advances the saved engine by, so a
/// takeover resumes close to where the peers are instead of from the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HalfState {
    /// What the peer acknowledged of our stream (SND.UNA).
    pub peer_acked: u32,
    /// The highest sequence number sent (SND.MAX).
    pub snd_nxt: u32,
    /// The receive edge as acknowledged to the peer, not as received: bytes above it may exist nowhere
    /// else, so a resumed half must take them again from the peer.
    pub rcv_nxt: u32,
    /// The peer's advertised window, in bytes.
    pub snd_wnd: u32,
    /// Our advertised window, in bytes.
    pub rcv_wnd: u32,
    pub ts_recent: u32,
    /// The latest TSval sent.
    pub ts_val: u32,
}

impl HalfState {
    /// The progress of `conn` now.
    pub fn of(conn: &Connection) -> HalfState {
        let s = conn.save();
        HalfState {
            peer_acked: s.snd_una,
            snd_nxt: s.snd_nxt,
            rcv_nxt: s.ack_sent,
            snd_wnd: s.snd_wnd,
            rcv_wnd: s.rcv_adv.wrapping_sub(s.ack_sent),
            ts_recent: s.ts_recent,
            ts_val: s.ts_last,
        }
    }
}

/// Everything the standby needs to resume a flow: both halves' saved engines and how they are tied.
#[derive(Debug, Clone)]
pub struct FlowOpened<'a> {
    /// Core A's id of the flow; confirmations come back with it.
    pub flow: u64,
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    pub snat: SocketAddrV4,
    pub backend: SocketAddrV4,
    pub policy: AckPolicy,
    /// `tcp::SavedConnection::encode` of the client half (the SYN received, the SYN-ACK not yet sent).
    pub client_half: &'a [u8],
    /// `tcp::SavedConnection::encode` of the server half (established with the backend).
    pub server_half: &'a [u8],
}

/// Which way relayed bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayDir {
    ClientToServer,
    ServerToClient,
}

/// The standby stored a direction's bytes up to a stream offset (policy `replica`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub flow: u64,
    pub dir: RelayDir,
    /// Stream offset just past the last byte stored.
    pub up_to: u64,
}

/// Why a record was not taken; the flow's SYN-ACK then waits and the record is offered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicateError {
    /// The channel's window is full (the standby lags): back-pressure, never a drop.
    Busy,
    /// The record cannot be encoded (too large for a frame): the flow cannot be protected.
    Unprotectable,
}

/// The primary side of replication, driven by core A on its own thread.
pub trait Replicator: Send {
    /// A new flow, before its SYN-ACK.
    fn flow_opened(&mut self, now: Instant, flow: &FlowOpened<'_>) -> Result<(), ReplicateError>;
    /// The flow is over: the standby may forget it.
    fn flow_closed(&mut self, now: Instant, flow: u64) -> Result<(), ReplicateError>;
    /// Both halves' progress of a confirmed flow, coalesced by core A (at most one per flow per
    /// [`Replicator::progress_delay`]).
    fn progress(
        &mut self,
        now: Instant,
        flow: u64,
        client: &HalfState,
        server: &HalfState,
    ) -> Result<(), ReplicateError>;
    /// Relayed bytes of a confirmed flow under policy `replica`, before either peer is told they are
    /// safe. `seq` numbers the first byte in the space of the half that transmits it to its destination
    /// (the server half for client bytes); `end` is the stream offset just past the last one, which
    /// [`Replicator::poll_stored`] gives back once the standby has them. `Busy` means the standby lags:
    /// the caller holds the bytes (and so its gate) and offers them again.
    fn data(
        &mut self,
        now: Instant,
        flow: u64,
        dir: RelayDir,
        seq: u32,
        end: u64,
        bytes: &[u8],
    ) -> Result<(), ReplicateError>;
    /// Bytes the standby confirmed storing, in the order they were offered.
    fn poll_stored(&mut self) -> Option<Stored>;
    /// Marks a bulk copy for a standby that (re)joined: `begin` before the flows' FlowOpened records, then
    /// not `begin` after the last one; `flows` is how many the copy holds at its start.
    fn snapshot_mark(&mut self, now: Instant, begin: bool, id: u32, flows: u32)
        -> Result<(), ReplicateError>;
    /// Whether everything offered so far is confirmed (nothing waits in the channel): a planned switchover
    /// hands over only then.
    fn is_synced(&self) -> bool;
    /// How long core A may hold a flow's progress to coalesce it: the channel's flush deadline.
    fn progress_delay(&self) -> Duration;
    /// A flow the standby confirmed storing, if any.
    fn poll_confirmed(&mut self) -> Option<u64>;
    /// Runs the channel: frames in and out of the replication port, timers. Returns work done.
    fn poll(&mut self, now: Instant) -> usize;
    /// When `poll` must run again at the latest.
    fn poll_at(&self) -> Instant;
    /// Whether a standby is attached and keeping up (heartbeats flow both ways).
    fn standby_attached(&self) -> bool;
}

/// The bytes a half still owes its peer, as one run: its send buffer from SND.UNA on (sent but not
/// acknowledged, then not yet sent), then `backlog` (relayed bytes not yet in the engine). Returns the
/// sequence number of the first one, in `conn`'s space, and the bytes.
///
/// A bulk copy for a standby that joined sends these as data records: after a takeover (or under policy
/// `replica`) their sender may already have its acknowledgment, so they exist only in this box.
pub(crate) fn owed_bytes(conn: &Connection, backlog: &super::chunk::Backlog) -> (u32, Vec<u8>) {
    // Until the SYN is acknowledged the buffer starts after it.
    let start = if conn.snd_una() == conn.iss() { conn.iss().wrapping_add(1) } else { conn.snd_una() };
    let queued = conn.send_queue_len();
    let mut bytes = vec![0u8; queued];
    let copied = conn.send_buffered(0, &mut bytes);
    bytes.truncate(copied);
    if copied == queued {
        let mut skip = 0;
        loop {
            let piece = backlog.piece_at(skip);
            if piece.is_empty() {
                break;
            }
            bytes.extend_from_slice(piece);
            skip += piece.len();
        }
    }
    (start, bytes)
}
