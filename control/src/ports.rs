//! The port backends `holdfast run` opens, behind one type: [`BoxPort`] is AF_PACKET always, AF_XDP when
//! built with the cargo feature `afxdp`, DPDK with `dpdk`. The protocol cores are generic over their
//! port; one enum lets a box mix backends per port (a DPDK client port beside an AF_PACKET replication
//! link) at the cost of a match per burst, never per frame.

use crate::boxrun::RunError;
use crate::config::{PortBackend, PortConfig};
use dataplane::buf::{PacketBuf, Pool};
use dataplane::port::afpacket::{AfPacketConfig, AfPacketPort};
use dataplane::port::{Port, PortInfo, PortStats};
use dataplane::time::Instant;

/// One opened port of a running box.
// Three per box, made once: boxing the large AF_XDP variant would only add a pointer chase per burst.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum BoxPort {
    AfPacket(AfPacketPort),
    #[cfg(feature = "afxdp")]
    AfXdp(dataplane::port::afxdp::AfXdpPort),
    #[cfg(feature = "dpdk")]
    Dpdk(dataplane::port::dpdk::DpdkPort),
}

macro_rules! each {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            BoxPort::AfPacket($p) => $e,
            #[cfg(feature = "afxdp")]
            BoxPort::AfXdp($p) => $e,
            #[cfg(feature = "dpdk")]
            BoxPort::Dpdk($p) => $e,
        }
    };
}

impl Port for BoxPort {
    fn recv(&mut self, now: Instant, out: &mut Vec<PacketBuf>, max: usize) -> usize {
        each!(self, p => p.recv(now, out, max))
    }
    fn send(&mut self, now: Instant, pkts: &mut Vec<PacketBuf>) -> usize {
        each!(self, p => p.send(now, pkts))
    }
    fn alloc(&mut self) -> Option<PacketBuf> {
        each!(self, p => p.alloc())
    }
    fn info(&self) -> PortInfo {
        each!(self, p => p.info())
    }
    fn stats(&self) -> PortStats {
        each!(self, p => p.stats())
    }
    fn poll_at(&mut self) -> Option<Instant> {
        each!(self, p => p.poll_at())
    }
}

/// Whether this build can run a port on `backend` (mem ports are for the simulator).
pub fn runnable(backend: PortBackend) -> bool {
    backend == PortBackend::AfPacket
        || (backend == PortBackend::AfXdp && cfg!(feature = "afxdp"))
        || (backend == PortBackend::Dpdk && cfg!(feature = "dpdk"))
}

/// What every port of a box needs to open: DPDK's EAL is initialized once per process, from the EAL
/// arguments of all its DPDK ports.
#[derive(Debug, Default)]
pub struct Opener {
    #[cfg(feature = "dpdk")]
    eal: Option<dataplane::port::dpdk::Eal>,
    #[cfg(feature = "dpdk")]
    eal_args: Vec<String>,
}

impl Opener {
    /// `all`: every port the box will open, so DPDK's EAL sees every device at once.
    pub fn new(all: &[&PortConfig]) -> Opener {
        #[cfg(feature = "dpdk")]
        {
            let mut eal_args: Vec<String> = Vec::new();
            for pc in all.iter().filter(|p| p.backend == PortBackend::Dpdk) {
                for a in &pc.eal_args {
                    // Shared options (--no-huge, --file-prefix) may be repeated in each port's list.
                    if !(a.starts_with("--") && !a.starts_with("--vdev") && eal_args.contains(a)) {
                        eal_args.push(a.clone());
                    }
                }
            }
            Opener { eal: None, eal_args }
        }
        #[cfg(not(feature = "dpdk"))]
        {
            let _ = all;
            Opener {}
        }
    }

    /// Opens port `name` (client, server, replication) as its config says.
    pub fn open(&mut self, name: &'static str, pc: &PortConfig, pool: &Pool) -> Result<BoxPort, RunError> {
        let err = |message: String| RunError::Port { port: name, message };
        match pc.backend {
            PortBackend::AfPacket => {
                let Some(ifname) = pc.interface.clone() else {
                    return Err(err("the afpacket backend needs an interface".into()));
                };
                let mut c = AfPacketConfig::new(&ifname);
                c.promisc = true;
                AfPacketPort::open(&c, pool.clone())
                    .map(BoxPort::AfPacket)
                    .map_err(|e| err(format!("{ifname}: {e}")))
            }
            #[cfg(feature = "afxdp")]
            PortBackend::AfXdp => {
                use dataplane::port::afxdp::{AfXdpConfig, AfXdpPort, XdpMode};
                let Some(ifname) = pc.interface.clone() else {
                    return Err(err("the afxdp backend needs an interface".into()));
                };
                let mut c = AfXdpConfig { ifname: ifname.clone(), ..Default::default() };
                if let Some(r) = pc.ring_size {
                    c.ring_size = r;
                    c.frames = r.saturating_mul(4).max(c.frames);
                }
                c.mode = match pc.xdp_mode {
                    Some(crate::config::XdpMode::Skb) => XdpMode::Generic,
                    Some(crate::config::XdpMode::Native) => XdpMode::Driver,
                    Some(crate::config::XdpMode::Auto) | None => XdpMode::Auto,
                };
                // `None` lets the driver decide: copy mode, which every driver has; zero-copy is asked for
                // explicitly and then never silently given up.
                c.zero_copy = pc.zero_copy.unwrap_or(false);
                AfXdpPort::open(&c, pool.clone())
                    .map(BoxPort::AfXdp)
                    .map_err(|e| err(format!("{ifname}: {e}")))
            }
            #[cfg(feature = "dpdk")]
            PortBackend::Dpdk => {
                use dataplane::port::dpdk::{DpdkConfig, DpdkPort, Eal};
                if self.eal.is_none() {
                    self.eal = Some(Eal::init(&self.eal_args).map_err(|e| err(format!("EAL: {e}")))?);
                }
                let Some(eal) = &self.eal else {
                    return Err(err("EAL not initialized".into()));
                };
                // The device: the virtual device the EAL arguments create on this interface
                // (`--vdev=net_af_packet0,iface=client0`: a veth here), else the interface field read as
                // a DPDK device name (a VF's PCI address on an appliance, `-a` in the EAL arguments).
                let device = pc.interface.as_ref().map(|ifname| {
                    let on_iface = format!("iface={ifname}");
                    self.eal_args
                        .iter()
                        .filter_map(|a| a.strip_prefix("--vdev="))
                        .find(|v| v.split(',').any(|kv| kv == on_iface))
                        .and_then(|v| v.split(',').next())
                        .unwrap_or(ifname)
                        .to_owned()
                });
                let mut c = DpdkConfig { device, ..Default::default() };
                if let Some(r) = pc.ring_size.and_then(|r| u16::try_from(r).ok()) {
                    c.rx_ring = r;
                    c.tx_ring = r;
                }
                DpdkPort::open(eal, &c, pool.clone()).map(BoxPort::Dpdk).map_err(|e| err(e.to_string()))
            }
            other => Err(err(format!(
                "backend {} is not in this build (afxdp and dpdk are cargo features: \
                 cargo build --release -p control --features afxdp,dpdk)",
                other.as_str()
            ))),
        }
    }
}
