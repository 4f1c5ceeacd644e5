//! AF_PACKET port: Linux packet sockets with memory-mapped rings, bound to one interface.
//!
//! Receive uses a TPACKET_V3 ring (the kernel fills whole blocks of frames and hands a block over when it is
//! full or its timer retires it), transmit a TPACKET_V2 ring with `PACKET_QDISC_BYPASS` (frames go straight
//! to the driver, one `sendto` kick per burst). Receive and transmit are two sockets because the ring
//! version is per socket; the transmit socket is bound with protocol 0 so it receives nothing, and the
//! receive socket sets `PACKET_IGNORE_OUTGOING` so it does not see our own frames.
//!
//! Frames are copied between the rings and pool buffers, so ring slots go back to the kernel at once.
//! Only MTU-sized frames are carried: turn segmentation and receive offloads off on the interface
//! (`ethtool -K DEV gro off gso off tso off tx off rx off`), otherwise the kernel hands over 64 KB
//! aggregates. Frames larger than a buffer or than `mtu + 14` are dropped and counted, never truncated.
//!
//! Sockets must be opened inside the interface's network namespace: a thread that has called
//! `setns(CLONE_NEWNET)` can open the port, and the sockets stay in that namespace wherever they are used.
//!
//! libc lacks the TPACKET_V2/V3 constants and some ring structures (or has them only in recent versions),
//! so they are defined here from `linux/if_packet.h`, with their offsets checked at compile time.

// Reason: the rings are memory shared with the kernel, reached through mmap and raw pointers, and the
// sockets are configured through setsockopt/ioctl with C structures. Every unsafe block says why it holds.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration as StdDuration;

use libc::{c_int, c_uint, c_ushort, c_void};

use super::{max_frame_len, Port, PortInfo, PortStats};
use crate::buf::{PacketBuf, Pool};
use crate::time::Instant;

// From linux/if_packet.h.
const PACKET_ADD_MEMBERSHIP: c_int = 1;
const PACKET_RX_RING: c_int = 5;
const PACKET_STATISTICS: c_int = 6;
const PACKET_VERSION: c_int = 10;
const PACKET_TX_RING: c_int = 13;
const PACKET_LOSS: c_int = 14;
const PACKET_QDISC_BYPASS: c_int = 20;
const PACKET_IGNORE_OUTGOING: c_int = 23;
const PACKET_MR_PROMISC: c_ushort = 1;
const TPACKET_V2: c_int = 1;
const TPACKET_V3: c_int = 2;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_SENDING: u32 = 2;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// Receive status: the frame's L4 checksum is still to be computed (the sender's offload left it partial).
const TP_STATUS_CSUMNOTREADY: u32 = 8;

const TPACKET_ALIGNMENT: usize = 16;

const fn tpacket_align(x: usize) -> usize {
    (x + TPACKET_ALIGNMENT - 1) & !(TPACKET_ALIGNMENT - 1)
}

/// `struct tpacket_req`: the shape of a V2 ring.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct TpacketReq {
    tp_block_size: c_uint,
    tp_block_nr: c_uint,
    tp_frame_size: c_uint,
    tp_frame_nr: c_uint,
}

/// `struct tpacket_req3`: the shape of a V3 ring.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct TpacketReq3 {
    tp_block_size: c_uint,
    tp_block_nr: c_uint,
    tp_frame_size: c_uint,
    tp_frame_nr: c_uint,
    tp_retire_blk_tov: c_uint,
    tp_sizeof_priv: c_uint,
    tp_feature_req_word: c_uint,
}

/// `struct tpacket2_hdr`: the header in front of each V2 frame.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Tpacket2Hdr {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_sec: u32,
    tp_nsec: u32,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
    tp_padding: [u8; 4],
}

/// `struct tpacket3_hdr` (with its `tpacket_hdr_variant1` union member inlined): the header of each V3
/// frame in a block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Tpacket3Hdr {
    tp_next_offset: u32,
    tp_sec: u32,
    tp_nsec: u32,
    tp_snaplen: u32,
    tp_len: u32,
    tp_status: u32,
    tp_mac: u16,
    tp_net: u16,
    hv1_tp_rxhash: u32,
    hv1_tp_vlan_tci: u32,
    hv1_tp_vlan_tpid: u16,
    hv1_tp_padding: u16,
    tp_padding: [u8; 8],
}

/// `struct tpacket_block_desc` with its `tpacket_hdr_v1`: the header of each V3 block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct TpacketBlockDesc {
    version: u32,
    offset_to_priv: u32,
    block_status: u32,
    num_pkts: u32,
    offset_to_first_pkt: u32,
    blk_len: u32,
    seq_num: u64,
    ts_first_sec: u32,
    ts_first_nsec: u32,
    ts_last_sec: u32,
    ts_last_nsec: u32,
}

/// `struct tpacket_stats_v3`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct TpacketStatsV3 {
    tp_packets: c_uint,
    tp_drops: c_uint,
    tp_freeze_q_cnt: c_uint,
}

/// `struct packet_mreq`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct PacketMreq {
    mr_ifindex: c_int,
    mr_type: c_ushort,
    mr_alen: c_ushort,
    mr_address: [u8; 8],
}

/// `struct ifreq` as the two ioctls we use see it: the name, then a 24-byte union that holds either a
/// `struct sockaddr` (hardware address) or an `int` (MTU).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct IfReq {
    ifr_name: [u8; libc::IFNAMSIZ],
    ifr_ifru: [u8; 24],
}

// The layouts the kernel expects (linux/if_packet.h, linux/if.h on 64-bit and 32-bit Linux alike).
const _: () = {
    assert!(core::mem::size_of::<TpacketReq>() == 16);
    assert!(core::mem::size_of::<TpacketReq3>() == 28);
    assert!(core::mem::size_of::<Tpacket2Hdr>() == 32);
    assert!(core::mem::size_of::<Tpacket3Hdr>() == 48);
    assert!(core::mem::offset_of!(Tpacket3Hdr, tp_status) == 20);
    assert!(core::mem::offset_of!(Tpacket3Hdr, tp_mac) == 24);
    assert!(core::mem::offset_of!(TpacketBlockDesc, block_status) == 8);
    assert!(core::mem::offset_of!(TpacketBlockDesc, num_pkts) == 12);
    assert!(core::mem::offset_of!(TpacketBlockDesc, offset_to_first_pkt) == 16);
    assert!(core::mem::offset_of!(TpacketBlockDesc, seq_num) == 24);
    assert!(core::mem::size_of::<TpacketStatsV3>() == 12);
    assert!(core::mem::size_of::<PacketMreq>() == 16);
    assert!(core::mem::size_of::<IfReq>() == 40);
};

/// Where the data of a V2 transmit frame starts: `TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)`.
const TX_DATA_OFFSET: usize = tpacket_align(core::mem::size_of::<Tpacket2Hdr>());

/// Fills in the TCP or UDP checksum of an Ethernet/IPv4 frame whose sender left it partial.
///
/// A frame from a local sender with transmit checksum offload (a veth peer, a tap) reaches a packet socket
/// as the kernel holds it: the checksum field carries only the pseudo-header sum, and the ring marks it
/// TP_STATUS_CSUMNOTREADY. On a wire it would have been completed by the NIC, so we complete it here, and
/// the protocol code above verifies checksums as if it read the wire. Anything else is left untouched.
fn complete_l4_checksum(frame: &mut [u8]) {
    use crate::wire::checksum;
    use crate::wire::Ipv4Address;
    if frame.get(12..14) != Some(&[0x08, 0x00][..]) {
        return;
    }
    let Some(&vihl) = frame.get(14) else { return };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return;
    }
    let (Some(tl), Some(&proto), Some(src), Some(dst)) =
        (frame.get(16..18), frame.get(23), frame.get(26..30), frame.get(30..34))
    else {
        return;
    };
    let total = usize::from(u16::from_be_bytes([tl[0], tl[1]]));
    let (src, dst) =
        (Ipv4Address([src[0], src[1], src[2], src[3]]), Ipv4Address([dst[0], dst[1], dst[2], dst[3]]));
    let field = match proto {
        6 => 16,
        17 => 6,
        _ => return,
    };
    let Some(l4_len) = total.checked_sub(ihl) else { return };
    let Ok(l4_len16) = u16::try_from(l4_len) else { return };
    let Some(l4) = frame.get_mut(14 + ihl..14 + total) else { return };
    let Some(slot) = l4.get_mut(field..field + 2) else { return };
    slot.copy_from_slice(&[0, 0]);
    let sum =
        checksum::combine(&[checksum::pseudo_header_ipv4(src, dst, proto, l4_len16), checksum::data(l4)]);
    let mut c = checksum::finish(sum);
    if proto == 17 && c == 0 {
        // A UDP checksum of zero means "none"; RFC 768 sends its one's-complement twin.
        c = 0xffff;
    }
    if let Some(slot) = l4.get_mut(field..field + 2) {
        slot.copy_from_slice(&c.to_be_bytes());
    }
}

/// Why an AF_PACKET port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
    #[error("{op} failed: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn sys_err(op: &'static str) -> AfPacketError {
    AfPacketError::Sys { op, source: io::Error::last_os_error() }
}

/// Shape of an AF_PACKET port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    pub ifname: String,
    /// Receive frames for every destination, not only ours (needed for a virtual MAC).
    pub promisc: bool,
    /// V3 receive block size; a multiple of the page size.
    pub rx_block_size: u32,
    pub rx_block_count: u32,
    /// Longest time the kernel holds a partly filled receive block before handing it over.
    pub rx_block_timeout_ms: u32,
    /// Transmit frame slots (each 2048 bytes, holding frames up to 2016 bytes).
    pub tx_frame_count: u32,
}

impl AfPacketConfig {
    pub fn new(ifname: &str) -> AfPacketConfig {
        AfPacketConfig {
            ifname: ifname.to_owned(),
            promisc: false,
            rx_block_size: 1 << 18,
            rx_block_count: 16,
            rx_block_timeout_ms: 1,
            tx_frame_count: 1024,
        }
    }
}

const TX_FRAME_SIZE: u32 = 2048;
const RX_FRAME_SIZE: u32 = 2048;

/// A shared memory mapping of a packet ring, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by exactly one port object, which is the only code that touches it from user
// space; moving it to another thread moves that exclusive ownership along.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: RawFd, len: usize) -> Result<Mapping, AfPacketError> {
        // SAFETY: a fresh shared mapping of the ring the kernel just set up on `fd`; no existing memory is
        // affected, and the result is checked for MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(sys_err("mmap"));
        }
        NonNull::new(p.cast::<u8>())
            .map(|ptr| Mapping { ptr, len })
            .ok_or(AfPacketError::Config("mmap gave null"))
    }

    /// The status word at `off`, shared with the kernel.
    fn status(&self, off: usize) -> Option<&AtomicU32> {
        if off % 4 != 0 || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: `off + 4 <= len` keeps the word inside the mapping, `off` is 4-aligned within a
        // page-aligned mapping, and the kernel only accesses this word atomically-sized; an AtomicU32 view
        // is how user space synchronizes with it (acquire on read, release on hand-back).
        Some(unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() })
    }

    /// A copy of the u32 at `off` (written by the kernel before it released the slot to us).
    fn read_u32(&self, off: usize) -> Option<u32> {
        if off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: in bounds as checked; read_unaligned has no alignment requirement, and the slot belongs to
        // user space (its status was seen as ours with acquire ordering) so the kernel is not writing it.
        Some(unsafe { self.ptr.as_ptr().add(off).cast::<u32>().read_unaligned() })
    }

    fn read_u16(&self, off: usize) -> Option<u16> {
        if off.checked_add(2)? > self.len {
            return None;
        }
        // SAFETY: as in read_u32.
        Some(unsafe { self.ptr.as_ptr().add(off).cast::<u16>().read_unaligned() })
    }

    fn write_u32(&self, off: usize, v: u32) -> Option<()> {
        if off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: in bounds as checked; the slot is owned by user space until its status is released.
        unsafe { self.ptr.as_ptr().add(off).cast::<u32>().write_unaligned(v) };
        Some(())
    }

    /// The bytes `off .. off + len` of a slot that user space owns.
    fn slice(&self, off: usize, len: usize) -> Option<&[u8]> {
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds as checked; the slot belongs to user space until we release its status, so the
        // kernel does not write it while the slice lives (the slice never outlives the call that uses it).
        Some(unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) })
    }

    fn copy_in(&self, off: usize, src: &[u8]) -> Option<()> {
        if off.checked_add(src.len())? > self.len {
            return None;
        }
        // SAFETY: destination in bounds as checked and owned by user space (status AVAILABLE); the source is
        // a pool buffer, which cannot overlap the mapping.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len()) };
        Some(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mmap returned; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// Moves the calling thread into the network namespace at `path` (e.g. `/var/run/netns/NAME`), so that
/// ports it opens afterwards bind to that namespace's interfaces. Other threads are not affected.
pub fn join_netns(path: &std::path::Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: `f` is an open namespace file for the duration of the call; setns changes only the calling
    // thread's network namespace and touches no memory of ours.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One queue of one interface through AF_PACKET rings.
#[derive(Debug)]
pub struct AfPacketPort {
    // Field order matters: the mappings are unmapped before the sockets close.
    rx_ring: Mapping,
    tx_ring: Mapping,
    rx_fd: OwnedFd,
    tx_fd: OwnedFd,
    rx_block_size: usize,
    rx_block_count: usize,
    /// The block being read, and how far: (packets left, offset of the next packet in the block).
    rx_block: usize,
    rx_cursor: Option<(u32, usize)>,
    tx_frame: usize,
    tx_frame_count: usize,
    /// Frames written to the ring since the last kick.
    tx_unkicked: bool,
    pool: Pool,
    stats: PortStats,
    kernel_drops: Cell<u64>,
    name: String,
    mac: Option<[u8; 6]>,
    mtu: usize,
    ifindex: c_int,
}

fn new_socket() -> Result<OwnedFd, AfPacketError> {
    // SAFETY: plain syscall; protocol 0 so the socket receives nothing until it is bound with a protocol.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(sys_err("socket(AF_PACKET)"));
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: &OwnedFd, opt: c_int, val: &T, op: &'static str) -> Result<(), AfPacketError> {
    let len = libc::socklen_t::try_from(core::mem::size_of::<T>()).map_err(|_| AfPacketError::Config(op))?;
    // SAFETY: `val` points to a live, initialized `T` of exactly `len` bytes for the duration of the call.
    let r = unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, opt, (val as *const T).cast::<c_void>(), len)
    };
    if r < 0 {
        return Err(sys_err(op));
    }
    Ok(())
}

fn bind(fd: &OwnedFd, ifindex: c_int, protocol: u16) -> Result<(), AfPacketError> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as c_ushort;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    let len = core::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a valid sockaddr_ll of `len` bytes, alive for the call.
    let r = unsafe {
        libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast::<libc::sockaddr>(), len)
    };
    if r < 0 {
        return Err(sys_err("bind"));
    }
    Ok(())
}

fn ifreq(fd: &OwnedFd, name: &str, req: libc::c_ulong, op: &'static str) -> Result<IfReq, AfPacketError> {
    let mut ifr = IfReq { ifr_name: [0; libc::IFNAMSIZ], ifr_ifru: [0; 24] };
    let bytes = name.as_bytes();
    // Leave room for the terminating NUL.
    let dst = ifr.ifr_name.get_mut(..bytes.len()).filter(|_| bytes.len() < libc::IFNAMSIZ);
    dst.ok_or(AfPacketError::Config("interface name too long"))?.copy_from_slice(bytes);
    // SAFETY: both ioctls read the name from and write their answer into a caller-owned `struct ifreq`,
    // which `ifr` is (40 bytes, checked above).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut ifr as *mut IfReq) };
    if r < 0 {
        return Err(sys_err(op));
    }
    Ok(ifr)
}

impl AfPacketPort {
    /// Opens the port on `cfg.ifname` in the calling thread's network namespace, with buffers from `pool`.
    pub fn open(cfg: &AfPacketConfig, pool: Pool) -> Result<AfPacketPort, AfPacketError> {
        let page = 4096u32;
        if cfg.rx_block_size == 0 || cfg.rx_block_size % page != 0 || cfg.rx_block_size < RX_FRAME_SIZE {
            return Err(AfPacketError::Config("rx_block_size must be a non-zero multiple of 4096"));
        }
        if cfg.rx_block_count == 0 || cfg.tx_frame_count == 0 {
            return Err(AfPacketError::Config("ring sizes must be non-zero"));
        }
        let cname =
            CString::new(cfg.ifname.as_str()).map_err(|_| AfPacketError::Config("NUL in interface name"))?;
        // SAFETY: `cname` is a valid NUL-terminated string alive for the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        let ifindex = c_int::try_from(ifindex)
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| AfPacketError::NoSuchInterface(cfg.ifname.clone()))?;

        // Receive: TPACKET_V3, bound to all protocols on this interface only after the ring exists.
        let rx_fd = new_socket()?;
        setsockopt(&rx_fd, PACKET_VERSION, &TPACKET_V3, "PACKET_VERSION v3")?;
        setsockopt(&rx_fd, PACKET_IGNORE_OUTGOING, &1 as &c_int, "PACKET_IGNORE_OUTGOING")?;
        let frames_per_block = cfg.rx_block_size / RX_FRAME_SIZE;
        let req3 = TpacketReq3 {
            tp_block_size: cfg.rx_block_size,
            tp_block_nr: cfg.rx_block_count,
            tp_frame_size: RX_FRAME_SIZE,
            tp_frame_nr: frames_per_block
                .checked_mul(cfg.rx_block_count)
                .ok_or(AfPacketError::Config("receive ring too large"))?,
            tp_retire_blk_tov: cfg.rx_block_timeout_ms.max(1),
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&rx_fd, PACKET_RX_RING, &req3, "PACKET_RX_RING")?;
        let rx_len = (cfg.rx_block_size as usize)
            .checked_mul(cfg.rx_block_count as usize)
            .ok_or(AfPacketError::Config("receive ring too large"))?;
        let rx_ring = Mapping::new(rx_fd.as_raw_fd(), rx_len)?;
        bind(&rx_fd, ifindex, libc::ETH_P_ALL as u16)?;
        if cfg.promisc {
            let mreq = PacketMreq {
                mr_ifindex: ifindex,
                mr_type: PACKET_MR_PROMISC,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(&rx_fd, PACKET_ADD_MEMBERSHIP, &mreq, "PACKET_ADD_MEMBERSHIP promisc")?;
        }

        // Transmit: TPACKET_V2 straight to the driver; bound with protocol 0, so it never receives.
        let tx_fd = new_socket()?;
        setsockopt(&tx_fd, PACKET_VERSION, &TPACKET_V2, "PACKET_VERSION v2")?;
        setsockopt(&tx_fd, PACKET_QDISC_BYPASS, &1 as &c_int, "PACKET_QDISC_BYPASS")?;
        // Without PACKET_LOSS a frame the kernel rejects stops the ring at that slot for good.
        setsockopt(&tx_fd, PACKET_LOSS, &1 as &c_int, "PACKET_LOSS")?;
        let per_block = page * 4 / TX_FRAME_SIZE;
        let tx_blocks = cfg.tx_frame_count.div_ceil(per_block);
        let req = TpacketReq {
            tp_block_size: page * 4,
            tp_block_nr: tx_blocks,
            tp_frame_size: TX_FRAME_SIZE,
            tp_frame_nr: tx_blocks * per_block,
        };
        setsockopt(&tx_fd, PACKET_TX_RING, &req, "PACKET_TX_RING")?;
        let tx_len = (req.tp_block_size as usize) * (req.tp_block_nr as usize);
        let tx_ring = Mapping::new(tx_fd.as_raw_fd(), tx_len)?;
        bind(&tx_fd, ifindex, 0)?;

        let hw = ifreq(&rx_fd, &cfg.ifname, libc::SIOCGIFHWADDR, "SIOCGIFHWADDR")?;
        let mac = hw.ifr_ifru.get(2..8).and_then(|m| <[u8; 6]>::try_from(m).ok());
        let mtu_req = ifreq(&rx_fd, &cfg.ifname, libc::SIOCGIFMTU, "SIOCGIFMTU")?;
        let mtu = mtu_req
            .ifr_ifru
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(c_int::from_ne_bytes)
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(1500);

        Ok(AfPacketPort {
            rx_ring,
            tx_ring,
            rx_fd,
            tx_fd,
            rx_block_size: cfg.rx_block_size as usize,
            rx_block_count: cfg.rx_block_count as usize,
            rx_block: 0,
            rx_cursor: None,
            tx_frame: 0,
            tx_frame_count: (req.tp_frame_nr) as usize,
            tx_unkicked: false,
            pool,
            stats: PortStats::default(),
            kernel_drops: Cell::new(0),
            name: cfg.ifname.clone(),
            mac,
            mtu,
            ifindex,
        })
    }

    /// The interface index the port is bound to.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    fn block_status_off(&self, block: usize) -> usize {
        block * self.rx_block_size + core::mem::offset_of!(TpacketBlockDesc, block_status)
    }

    /// Whether the current receive block has been handed to us.
    fn rx_ready(&self) -> bool {
        self.rx_cursor.is_some()
            || self
                .rx_ring
                .status(self.block_status_off(self.rx_block))
                .is_some_and(|s| s.load(Ordering::Acquire) & TP_STATUS_USER != 0)
    }

    /// Waits until a received frame is ready or `timeout` has passed (adaptive polling: a core calls this
    /// when a few empty polls in a row say the port is idle). Returns whether frames are ready.
    pub fn wait_readable(&self, timeout: StdDuration) -> io::Result<bool> {
        if self.rx_ready() {
            return Ok(true);
        }
        let mut pfd =
            libc::pollfd { fd: self.rx_fd.as_raw_fd(), events: libc::POLLIN | libc::POLLERR, revents: 0 };
        let ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: one valid pollfd, alive for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(self.rx_ready()) } else { Err(e) };
        }
        Ok(self.rx_ready())
    }

    /// Copies one packet of the current block into a buffer, counting drops; returns the next packet's
    /// offset.
    fn take_packet(&mut self, block_base: usize, pkt_off: usize, out: &mut Vec<PacketBuf>) -> Option<usize> {
        let hdr = block_base.checked_add(pkt_off)?;
        let next = self.rx_ring.read_u32(hdr + core::mem::offset_of!(Tpacket3Hdr, tp_next_offset))? as usize;
        let snaplen = self.rx_ring.read_u32(hdr + core::mem::offset_of!(Tpacket3Hdr, tp_snaplen))? as usize;
        let len = self.rx_ring.read_u32(hdr + core::mem::offset_of!(Tpacket3Hdr, tp_len))? as usize;
        let mac = self.rx_ring.read_u16(hdr + core::mem::offset_of!(Tpacket3Hdr, tp_mac))? as usize;
        let status = self.rx_ring.read_u32(hdr + core::mem::offset_of!(Tpacket3Hdr, tp_status))?;
        let data_end = pkt_off.checked_add(mac)?.checked_add(snaplen)?;
        if data_end > self.rx_block_size {
            return None;
        }
        if snaplen != len || len > max_frame_len(self.mtu) || len > self.pool.max_data() {
            self.stats.rx_dropped_oversize += 1;
        } else if let Some(mut buf) = self.pool.alloc() {
            let data = self.rx_ring.slice(hdr + mac, snaplen)?;
            if buf.extend_from_slice(data).is_ok() {
                if status & TP_STATUS_CSUMNOTREADY != 0 {
                    complete_l4_checksum(buf.data_mut());
                }
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += len as u64;
                out.push(buf);
            } else {
                self.stats.rx_dropped_oversize += 1;
            }
        } else {
            self.stats.rx_dropped_no_buffer += 1;
        }
        Some(pkt_off + next)
    }

    fn release_block(&mut self) {
        if let Some(s) = self.rx_ring.status(self.block_status_off(self.rx_block)) {
            s.store(TP_STATUS_KERNEL, Ordering::Release);
        }
        self.rx_cursor = None;
        self.rx_block = (self.rx_block + 1) % self.rx_block_count;
    }

    fn kick(&mut self) {
        if !self.tx_unkicked {
            return;
        }
        // SAFETY: a zero-length send with no address asks the kernel to transmit the frames marked
        // SEND_REQUEST in the mapped ring; no user memory is passed.
        let r = unsafe {
            libc::sendto(
                self.tx_fd.as_raw_fd(),
                core::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                core::ptr::null(),
                0,
            )
        };
        // On EAGAIN/ENOBUFS the frames stay marked and go with the next kick.
        if r >= 0 {
            self.tx_unkicked = false;
        }
    }
}

impl Port for AfPacketPort {
    fn recv(&mut self, _now: Instant, out: &mut Vec<PacketBuf>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let base = self.rx_block * self.rx_block_size;
            let (left, off) = match self.rx_cursor {
                Some(c) => c,
                None => {
                    let ours = self
                        .rx_ring
                        .status(self.block_status_off(self.rx_block))
                        .is_some_and(|s| s.load(Ordering::Acquire) & TP_STATUS_USER != 0);
                    if !ours {
                        break;
                    }
                    let nb = self.rx_ring.read_u32(base + core::mem::offset_of!(TpacketBlockDesc, num_pkts));
                    let first = self
                        .rx_ring
                        .read_u32(base + core::mem::offset_of!(TpacketBlockDesc, offset_to_first_pkt));
                    match (nb, first) {
                        (Some(nb), Some(first)) => (nb, first as usize),
                        _ => (0, 0),
                    }
                }
            };
            if left == 0 {
                self.release_block();
                continue;
            }
            let before = out.len();
            match self.take_packet(base, off, out) {
                Some(next) => self.rx_cursor = Some((left - 1, next)),
                // A header that points outside its block: give the block back rather than trust it.
                None => {
                    self.stats.rx_dropped_ring += u64::from(left);
                    self.release_block();
                }
            }
            n += out.len() - before;
        }
        n
    }

    fn send(&mut self, _now: Instant, pkts: &mut Vec<PacketBuf>) -> usize {
        let mut taken = 0;
        for buf in pkts.iter() {
            let frame = self.tx_frame * TX_FRAME_SIZE as usize;
            let Some(status) = self.tx_ring.status(frame) else { break };
            let st = status.load(Ordering::Acquire);
            if st & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING) != 0 {
                self.stats.tx_ring_full += (pkts.len() - taken) as u64;
                break;
            }
            if st & TP_STATUS_WRONG_FORMAT != 0 {
                // The kernel refused the frame that was here earlier (counted as sent then); the slot is ours.
                self.stats.tx_dropped_malformed += 1;
            }
            taken += 1;
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += buf.len() as u64;
            let len = buf.len();
            if len > max_frame_len(self.mtu) || len + TX_DATA_OFFSET > TX_FRAME_SIZE as usize {
                self.stats.tx_dropped_oversize += 1;
                continue;
            }
            let ok = self.tx_ring.copy_in(frame + TX_DATA_OFFSET, buf.data()).and_then(|()| {
                self.tx_ring.write_u32(frame + core::mem::offset_of!(Tpacket2Hdr, tp_len), len as u32)
            });
            if ok.is_none() {
                self.stats.tx_dropped_oversize += 1;
                continue;
            }
            status.store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.tx_unkicked = true;
            self.tx_frame = (self.tx_frame + 1) % self.tx_frame_count;
        }
        pkts.drain(..taken);
        self.kick();
        taken
    }

    fn alloc(&mut self) -> Option<PacketBuf> {
        self.pool.alloc()
    }

    fn info(&self) -> PortInfo {
        PortInfo { name: self.name.clone(), mac: self.mac, mtu: self.mtu }
    }

    fn stats(&self) -> PortStats {
        // Reading the kernel's counters resets them, so they accumulate here.
        let mut st = TpacketStatsV3::default();
        let mut len = core::mem::size_of::<TpacketStatsV3>() as libc::socklen_t;
        // SAFETY: `st` is a writable tpacket_stats_v3 of `len` bytes and `len` is passed by pointer as the
        // kernel expects; both live for the call.
        let r = unsafe {
            libc::getsockopt(
                self.rx_fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut st as *mut TpacketStatsV3).cast::<c_void>(),
                &mut len,
            )
        };
        if r == 0 {
            self.kernel_drops.set(self.kernel_drops.get() + u64::from(st.tp_drops));
        }
        PortStats { rx_dropped_ring: self.stats.rx_dropped_ring + self.kernel_drops.get(), ..self.stats }
    }

    fn poll_at(&mut self) -> Option<Instant> {
        // Sends that found the kernel busy are retried here, so a quiet caller still flushes its frames.
        self.kick();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::complete_l4_checksum;
    use crate::wire::{
        build_tcp_frame, checksum, parse_frame, EthernetAddress, FrameHeader, Ipv4Address, TcpFlags,
        TcpOptions, TcpRepr,
    };

    fn frame(payload: &[u8]) -> Vec<u8> {
        let hdr = FrameHeader::new(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            Ipv4Address([198, 18, 1, 10]),
            Ipv4Address([198, 18, 1, 1]),
        );
        let repr = TcpRepr {
            src_port: 40000,
            dst_port: 7000,
            seq: 0x1234_5678,
            ack: 0x9abc_def0,
            flags: TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0),
            window: 512,
            urgent: 0,
            options: TcpOptions::default(),
            payload,
        };
        let mut buf = vec![0u8; 1514];
        let n = build_tcp_frame(&mut buf, &hdr, &repr).expect("fits");
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_partial_tcp_checksum_is_completed() {
        for len in [0usize, 1, 7, 1000, 1448] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let good = frame(&payload);
            assert!(parse_frame(&good).is_ok());
            // What a sender with checksum offload hands over: the pseudo-header sum only.
            let mut partial = good.clone();
            let l4_len = u16::try_from(partial.len() - 34).expect("small");
            let pseudo = checksum::pseudo_header_ipv4(
                Ipv4Address([198, 18, 1, 10]),
                Ipv4Address([198, 18, 1, 1]),
                6,
                l4_len,
            );
            partial[50..52].copy_from_slice(&pseudo.to_be_bytes());
            assert!(parse_frame(&partial).is_err(), "len {len}: a partial checksum must not verify");
            complete_l4_checksum(&mut partial);
            assert_eq!(partial, good, "len {len}");
        }
    }

    #[test]
    fn frames_it_does_not_understand_are_left_alone() {
        let good = frame(b"hello");
        for cut in [0, 13, 14, 20, 33, 40, 53] {
            let mut short = good[..cut].to_vec();
            let before = short.clone();
            complete_l4_checksum(&mut short);
            assert_eq!(short, before, "cut at {cut}");
        }
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let before = arp.clone();
        complete_l4_checksum(&mut arp);
        assert_eq!(arp, before);
        // An IPv4 total length beyond the frame: nothing is read or written past the end.
        let mut lying = good.clone();
        lying[16..18].copy_from_slice(&9000u16.to_be_bytes());
        let before = lying.clone();
        complete_l4_checksum(&mut lying);
        assert_eq!(lying, before);
    }
}
