//! The wrapper's shape when the crate was built without DPDK: [`Eal::init`] always fails with
//! [`DpdkError::Missing`], and since every other handle needs an `Eal` to be made, none can exist (their
//! methods match on an empty type).

use crate::{DpdkError, EthConfig, EthStats, Link, Result, RxBurst, TxBurst};

#[derive(Clone, Copy, Debug)]
enum Never {}

/// Uninhabited here: built without DPDK.
#[derive(Clone, Debug)]
pub struct Eal {
    never: Never,
}

impl Eal {
    /// Always fails: built without DPDK (install libdpdk-dev and rebuild).
    pub fn init(_args: &[String]) -> Result<Eal> {
        Err(DpdkError::Missing)
    }

    pub fn port_count(&self) -> u16 {
        match self.never {}
    }

    pub fn port_by_name(&self, _name: &str) -> Result<u16> {
        match self.never {}
    }
}

/// Uninhabited here: built without DPDK.
#[derive(Clone, Debug)]
pub struct Mempool {
    never: Never,
}

impl Mempool {
    pub fn new(eal: &Eal, _name: &str, _count: u32, _cache: u32, _data_room: u16) -> Result<Mempool> {
        match eal.never {}
    }

    pub fn max_frame(&self) -> usize {
        match self.never {}
    }
}

/// Uninhabited here: built without DPDK.
#[derive(Clone, Debug)]
pub struct EthPort {
    never: Never,
}

impl EthPort {
    pub fn open(eal: &Eal, _port_id: u16, _cfg: &EthConfig, _mempool: &Mempool) -> Result<EthPort> {
        match eal.never {}
    }
    pub fn id(&self) -> u16 {
        match self.never {}
    }
    pub fn mac(&self) -> Result<[u8; 6]> {
        match self.never {}
    }
    pub fn mtu(&self) -> Result<u16> {
        match self.never {}
    }
    pub fn link(&self) -> Result<Link> {
        match self.never {}
    }
    pub fn stats(&self) -> Result<EthStats> {
        match self.never {}
    }
    pub fn queue(&self, _q: u16) -> Result<Queue> {
        match self.never {}
    }
}

/// Uninhabited here: built without DPDK.
#[derive(Debug)]
pub struct Queue {
    never: Never,
}

impl Queue {
    pub fn port(&self) -> &EthPort {
        match self.never {}
    }
    pub fn index(&self) -> u16 {
        match self.never {}
    }
    pub fn max_frame(&self) -> usize {
        match self.never {}
    }
    pub fn rx(&mut self, _max: usize, _f: impl FnMut(&[u8])) -> RxBurst {
        match self.never {}
    }
    pub fn tx<'a>(&mut self, _frames: impl IntoIterator<Item = &'a [u8]>) -> TxBurst {
        match self.never {}
    }
}

// Drop like the real handles do (there, dropping releases DPDK resources), so code that drops them
// explicitly reads the same in both builds.
impl Drop for Eal {
    fn drop(&mut self) {
        match self.never {}
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        match self.never {}
    }
}

impl Drop for EthPort {
    fn drop(&mut self) {
        match self.never {}
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        match self.never {}
    }
}
