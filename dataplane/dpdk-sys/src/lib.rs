//! holdfast's own binding to DPDK 22.11 (Debian's `libdpdk-dev`): hand-written `extern "C"` declarations
//! for the few calls the `dpdk` port backend makes, a C shim (shim/shim.c) that gives DPDK's `static
//! inline` fast-path functions a symbol, and a safe wrapper: [`Eal`] (once per process), [`Mempool`],
//! [`EthPort`] and its per-queue [`Queue`] handles with copying receive/transmit bursts.
//!
//! Why our own and not capsule: see docs/nic-backends.md. When build.rs does not find DPDK, the crate
//! still builds, as a shell whose [`Eal::init`] returns [`DpdkError::Missing`]; no other handle can then
//! exist, so nothing else needs to be guarded.

// This crate is the FFI boundary to DPDK, so unsafe is its purpose; every block says why it is sound.
#![allow(unsafe_code)]

/// Why a DPDK call failed. Codes are DPDK's: negative errno values from ethdev calls, `rte_errno` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DpdkError {
    #[error("built without DPDK (install libdpdk-dev)")]
    Missing,
    #[error("the DPDK EAL was already initialized in this process (it can be only once)")]
    AlreadyInitialized,
    #[error("invalid argument: {0}")]
    BadArgument(&'static str),
    #[error("{call} failed: error {code}")]
    Call { call: &'static str, code: i32 },
    #[error("queue {0} is out of range or already taken")]
    QueueUnavailable(u16),
}

/// Result of a DPDK call.
pub type Result<T> = core::result::Result<T, DpdkError>;

/// Port configuration for [`EthPort::open`]: no RSS and no offloads, MTU-sized single-segment frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    /// Descriptors per receive ring.
    pub rx_ring: u16,
    /// Descriptors per transmit ring.
    pub tx_ring: u16,
    pub promiscuous: bool,
}

impl Default for EthConfig {
    fn default() -> Self {
        EthConfig { rx_queues: 1, tx_queues: 1, rx_ring: 1024, tx_ring: 1024, promiscuous: true }
    }
}

/// Port counters as the driver reports them (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Frames the hardware dropped because the receive ring was full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// Receive failures because the mempool was empty.
    pub rx_nombuf: u64,
}

/// Link state (`rte_eth_link_get_nowait`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
}

/// What one receive burst did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxBurst {
    /// Frames handed to the callback.
    pub delivered: usize,
    /// Frames dropped because they came in several segments (larger than one mbuf).
    pub multi_segment: usize,
}

/// What one transmit burst did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxBurst {
    /// How many frames, from the front, the driver took.
    pub sent: usize,
    /// The burst stopped early because the mempool had no free mbuf.
    pub no_mbuf: bool,
    /// The burst stopped early at a frame larger than an mbuf ([`Queue::max_frame`]).
    pub too_big: bool,
}

/// Frames per burst call (DPDK's customary 32).
pub const BURST: usize = 32;

#[cfg(not(holdfast_dpdk_missing))]
mod ffi;
#[cfg(not(holdfast_dpdk_missing))]
mod real;
#[cfg(not(holdfast_dpdk_missing))]
pub use real::{Eal, EthPort, Mempool, Queue};

#[cfg(holdfast_dpdk_missing)]
mod shell;
#[cfg(holdfast_dpdk_missing)]
pub use shell::{Eal, EthPort, Mempool, Queue};

/// Whether this build can talk to DPDK at all (false: built without libdpdk-dev).
pub const AVAILABLE: bool = cfg!(not(holdfast_dpdk_missing));

#[cfg(not(holdfast_dpdk_missing))]
pub use real::strerror;

/// DPDK's own text for an error code; built without DPDK there is no text but the number.
#[cfg(holdfast_dpdk_missing)]
pub fn strerror(code: i32) -> String {
    format!("error {code}")
}
