//! holdfast's dataplane: everything one protocol core needs to carry TCP flows.
//!
//! Layers, bottom up (each uses only the ones below it):
//! - [`time`]: the clock type all protocol code takes as an input (no hidden system-clock reads).
//! - [`wire`]: zero-copy views and validated representations of Ethernet, ARP, IPv4 and TCP.
//! - [`buf`]: a pool of fixed-size packet buffers with headroom (mbuf-like).
//! - [`port`]: the NIC behind a small burst interface, with in-memory and real backends.
//! - [`tcp`]: the sans-IO TCP engine whose acknowledgments can be withheld, saved and restored.
//!
//! `unsafe` is denied crate-wide and allowed only in the port backends that talk to the kernel.

pub mod app;
pub mod balance;
pub mod buf;
pub mod flow;
pub mod gate;
pub mod neigh;
pub mod port;
pub mod proxy;
pub mod step;
pub mod tcp;
pub mod time;
pub mod wire;
