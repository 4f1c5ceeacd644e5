//! The sans-IO TCP engine: one connection half whose acknowledgments can be withheld, saved and restored.
//!
//! Segments and time go in, segments, deadlines and events come out; the engine never touches a socket or
//! a clock. The owner (a protocol core, the simulator, a test) drives each [`Connection`] like this:
//!
//! - on a segment from the peer: [`Connection::handle_segment`];
//! - when [`Connection::poll_timeout`] is due: [`Connection::handle_timeout`];
//! - after either, and after `send`/`recv`/`close`/ack-limit changes: [`Connection::poll_transmit`] until
//!   it returns `None`, and [`Connection::poll_event`] until `None`.
//!
//! The ack gate: [`Connection::set_ack_limit`] caps every ACK number the engine emits (the SYN-ACK of a
//! passive open included); bytes received beyond the cap are held (and SACKed when the peer allows) and never
//! dropped. [`Connection::save`] and [`Connection::restore`] move a connection to another box; a restored
//! connection resynchronizes with its peer (see [`Event::SendResynced`] and
//! [`Connection::advance_rcv_edge`]).
//!
//! Split by concern: [`seq`] arithmetic, [`config`], ISNs ([`isn()`]), [`buffer`]s and reassembly, the SACK
//! scoreboard, RTT/RTO, [`congestion`] control, the connection state and API, input, output and save.

pub mod buffer;
pub mod config;
pub mod congestion;
mod connection;
mod input;
pub mod isn;
mod output;
pub mod rtt;
mod save;
pub mod scoreboard;
pub mod seq;

pub use config::{Config, CongestionAlgorithm};
pub use congestion::{CongestionControl, Cubic, NewReno};
pub use connection::{Connection, Counters, Event, SegmentError, State, Transmit};
pub use isn::isn;
pub use save::{DecodeError, RestoreError, SavedConnection, SAVED_LEN};
