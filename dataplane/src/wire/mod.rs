//! Wire formats: zero-copy views over byte buffers and validated representations that can be emitted.
//!
//! Contract (as in smoltcp): once a view's `check_len()` has returned `Ok`, no accessor panics, whatever the
//! bytes say. Every malformed input is an error value that callers count, never a panic.

pub mod tcp;

pub use tcp::{SackBlocks, TcpFlags, TcpOptions, TcpRepr, Timestamps};
