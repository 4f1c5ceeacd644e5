//! Applications hosted by the dataplane: the `app` ack policy.
//!
//! With policy `app`, a listener's flows terminate in an [`Application`] that runs beside the protocol core
//! instead of a backend. The core hands it each flow's bytes in order and withholds the client's ACK until
//! the application calls back with a commit: "everything up to this offset is done with" (written to disk,
//! applied to a database, ...). The application may also answer on the flow.
//!
//! Offsets are stream offsets: 0 is the first data byte the client sent on the flow. The core maps them to
//! sequence numbers.
//!
//! The core calls these methods on its own thread and must never block: an application that does slow work
//! (fsync) hands it to a thread of its own and reports the result through [`Application::poll`].

/// Identifies a flow to an application; unique for the life of the box (never reused).
pub type AppFlowId = u64;

/// What an application tells the core, collected by [`Application::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// Bytes `[0, up_to)` of the flow's client stream are committed: the core may acknowledge them.
    Commit { flow: AppFlowId, up_to: u64 },
    /// Bytes to send to the client on the flow.
    Reply { flow: AppFlowId, data: Vec<u8> },
    /// Close the flow after the replies queued so far (FIN).
    Close { flow: AppFlowId },
    /// Reset the flow (the application cannot go on with it; e.g. a malformed record).
    Abort { flow: AppFlowId, reason: &'static str },
}

/// Whether the application took the bytes offered to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// All of them.
    All,
    /// The first `n` bytes; offer the rest again later (the application is full: backpressure).
    Partial(usize),
}

/// An application hosted by a protocol core (policy `app`).
pub trait Application: Send {
    /// A short name, for logs and statistics.
    fn name(&self) -> &str;

    /// A client connection was established on a listener served by this application.
    fn open(&mut self, flow: AppFlowId, client: std::net::SocketAddrV4);

    /// The next bytes of the flow's client stream, starting at stream offset `offset` (always the end of
    /// what was accepted before).
    fn data(&mut self, flow: AppFlowId, offset: u64, bytes: &[u8]) -> Accepted;

    /// The client finished sending (FIN) after `len` bytes in all.
    fn end_of_stream(&mut self, flow: AppFlowId, len: u64);

    /// The flow is gone (closed, reset, or timed out); forget it.
    fn closed(&mut self, flow: AppFlowId);

    /// Collects what the application has to say; called on every step of the core.
    fn poll(&mut self, out: &mut Vec<AppEvent>);
}
