//! The `dpdk` port backend (cargo feature `dpdk`): one queue of a DPDK Ethernet port, through our own
//! binding crate `holdfast-dpdk-sys` (Debian's DPDK 22.11).
//!
//! Frames are copied between DPDK mbufs and our [`PacketBuf`]s on receive and transmit. That costs a memcpy
//! per frame but keeps one buffer type in the whole dataplane; zero-copy would wrap mbufs in `PacketBuf`.
//! No unsafe here: all of it stays in the binding crate.
//!
//! Typical use: `Eal::init(&cfg.eal_args)` once per process, [`open_device`] once per port, then
//! [`DpdkPort::new`] per queue (one per core).

use super::{max_frame_len, Port, PortInfo, PortStats};
use crate::buf::{PacketBuf, Pool};
use crate::time::Instant;
pub use holdfast_dpdk_sys::{DpdkError, Eal, EthConfig, EthPort};
use holdfast_dpdk_sys::{Mempool, Queue, BURST};

/// Where a DPDK port comes from: its EAL arguments and which device and queue to use.
///
/// On an appliance, `eal_args` name the SR-IOV VFs bound to vfio-pci and the hugepage mount, e.g.
/// `["-l", "2-3", "--huge-dir", "/dev/hugepages", "--file-prefix=hf-primary", "-a", "0000:03:02.0"]`; on a
/// development machine a veth through a virtual device:
/// `["--no-huge", "-m", "256", "--no-pci", "--file-prefix=hf1", "--vdev=net_af_packet0,iface=veth0"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    /// EAL arguments, without a program name; every process on a machine needs its own `--file-prefix`.
    pub eal_args: Vec<String>,
    /// The device by name (`net_af_packet0`, `0000:03:02.0`); when None, `port_id` is used.
    pub device: Option<String>,
    pub port_id: u16,
    /// The queue a [`DpdkPort`] made by [`DpdkPort::open`] uses.
    pub queue: u16,
    /// Queues configured on the port (one per core that polls it).
    pub queues: u16,
    pub rx_ring: u16,
    pub tx_ring: u16,
    /// Mbufs in the port's mempool: enough for every ring plus bursts in flight.
    pub mbufs: u32,
    pub promiscuous: bool,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig {
            eal_args: Vec::new(),
            device: None,
            port_id: 0,
            queue: 0,
            queues: 1,
            rx_ring: 1024,
            tx_ring: 1024,
            mbufs: 8191,
            promiscuous: true,
        }
    }
}

/// mbuf data room: DPDK's default (2048 bytes of frame after 128 of headroom).
const MBUF_DATA_ROOM: u16 = 2048 + 128;

/// Opens (configures and starts) the port `cfg` names, with its own mempool.
pub fn open_device(eal: &Eal, cfg: &DpdkConfig) -> Result<EthPort, DpdkError> {
    let port_id = match &cfg.device {
        Some(name) => eal.port_by_name(name)?,
        None => cfg.port_id,
    };
    let pool = Mempool::new(eal, &format!("hf_mbufs_{port_id}"), cfg.mbufs, 256, MBUF_DATA_ROOM)?;
    let eth = EthConfig {
        rx_queues: cfg.queues,
        tx_queues: cfg.queues,
        rx_ring: cfg.rx_ring,
        tx_ring: cfg.tx_ring,
        promiscuous: cfg.promiscuous,
    };
    EthPort::open(eal, port_id, &eth, &pool)
}

/// One queue of a DPDK port, as a [`Port`].
#[derive(Debug)]
pub struct DpdkPort {
    queue: Queue,
    pool: Pool,
    info: PortInfo,
    stats: PortStats,
    /// Largest frame sent or received: the MTU plus an Ethernet header, and no more than an mbuf.
    max_frame: usize,
}

impl DpdkPort {
    /// The [`Port`] for queue `queue` of `port`, receiving into buffers from `pool`.
    pub fn new(port: &EthPort, queue: u16, pool: Pool) -> Result<DpdkPort, DpdkError> {
        let q = port.queue(queue)?;
        let info = PortInfo {
            name: format!("dpdk{}q{}", port.id(), queue),
            mac: port.mac().ok(),
            mtu: usize::from(port.mtu().unwrap_or(1500)),
        };
        let max_frame = q.max_frame().min(max_frame_len(info.mtu));
        Ok(DpdkPort { queue: q, pool, info, stats: PortStats::default(), max_frame })
    }

    /// Opens the device `cfg` names and takes queue `cfg.queue`; the EAL must be initialized already.
    pub fn open(eal: &Eal, cfg: &DpdkConfig, pool: Pool) -> Result<DpdkPort, DpdkError> {
        let port = open_device(eal, cfg)?;
        DpdkPort::new(&port, cfg.queue, pool)
    }

    /// The DPDK port this queue belongs to (for link state and driver counters).
    pub fn eth(&self) -> &EthPort {
        self.queue.port()
    }
}

impl Port for DpdkPort {
    fn recv(&mut self, _now: Instant, out: &mut Vec<PacketBuf>, max: usize) -> usize {
        let (queue, pool, stats, max_frame) = (&mut self.queue, &self.pool, &mut self.stats, self.max_frame);
        let mut got = 0;
        while got < max {
            let want = (max - got).min(BURST);
            let burst = queue.rx(want, |frame| {
                if frame.len() > max_frame {
                    stats.rx_dropped_oversize += 1;
                    return;
                }
                match pool.alloc() {
                    Some(mut b) => {
                        if b.extend_from_slice(frame).is_ok() {
                            stats.rx_packets += 1;
                            stats.rx_bytes += frame.len() as u64;
                            out.push(b);
                            got += 1;
                        } else {
                            stats.rx_dropped_oversize += 1;
                        }
                    }
                    None => stats.rx_dropped_no_buffer += 1,
                }
            });
            stats.rx_dropped_oversize += burst.multi_segment as u64;
            let seen = burst.delivered + burst.multi_segment;
            if seen < want {
                break;
            }
        }
        got
    }

    fn send(&mut self, _now: Instant, pkts: &mut Vec<PacketBuf>) -> usize {
        let mut taken = 0;
        let max_frame = self.max_frame;
        while !pkts.is_empty() {
            // A frame larger than the MTU or an mbuf can never go out: drop it (counted) rather than block
            // the queue or let the driver drop it silently.
            let front_len = pkts.first().map_or(0, PacketBuf::len);
            if front_len > max_frame {
                pkts.remove(0);
                self.stats.tx_dropped_oversize += 1;
                taken += 1;
                continue;
            }
            let offered = pkts.len().min(BURST);
            let burst = self.queue.tx(pkts.iter().map(PacketBuf::data));
            for p in pkts.drain(..burst.sent) {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += p.len() as u64;
            }
            taken += burst.sent;
            if burst.too_big {
                // The burst stopped at the frame now in front: it can never go out.
                if !pkts.is_empty() {
                    pkts.remove(0);
                    self.stats.tx_dropped_oversize += 1;
                    taken += 1;
                }
                continue;
            }
            if burst.sent == offered {
                continue;
            }
            // Ring full or mempool dry: the rest stays with the caller.
            self.stats.tx_ring_full += pkts.len() as u64;
            break;
        }
        taken
    }

    fn alloc(&mut self) -> Option<PacketBuf> {
        self.pool.alloc()
    }

    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        if let Ok(eth) = self.queue.port().stats() {
            s.rx_dropped_ring = eth.imissed.saturating_add(eth.rx_nombuf);
        }
        s
    }
}
