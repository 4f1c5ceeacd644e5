//! The `afxdp` port backend (cargo feature `afxdp`): one queue of a network interface through an AF_XDP
//! socket, using the `xsk-rs` crate (libxdp, built with its `use_cc_build` feature).
//!
//! - UMEM: one region per port; half its frames feed the kernel's fill ring (receive), half are a free list
//!   for transmit, reclaimed from the completion ring. Frames are copied between the UMEM and our
//!   [`PacketBuf`]s: a memcpy per frame, for one buffer type in the whole dataplane (zero-copy would hand
//!   out UMEM-backed buffers instead).
//! - Modes: copy mode works everywhere (veth, generic/SKB XDP); `zero_copy` asks for XDP_ZEROCOPY, which
//!   only NIC drivers with AF_XDP support give (opening fails otherwise, it never silently falls back).
//! - The XDP program: libxdp attaches its default XSK redirect program when the socket is created and
//!   removes it when the last socket on the interface goes (our Drop). A crashed process leaves it attached.
//!   libxdp would then reuse that program but, not having loaded it, never remove it (checked on this
//!   machine), and a foreign or older program could misroute traffic; so before attaching, `detach_stale`
//!   removes whatever XDP program is on the interface (`ip link set dev X xdp off`, through libxdp's
//!   multiprog API, dispatcher or not), and ours is removed again on Drop.
//! - libxdp prefers bpffs at /sys/fs/bpf (`mount -t bpf bpf /sys/fs/bpf`); without it, it warns
//!   "No bpffs found" and loads a single program without its dispatcher, which works too.

// The UMEM is memory shared with the kernel, and xsk-rs marks every ring and frame access unsafe: this
// module is where that contract (a frame is touched only while userspace owns it) is kept.
#![allow(unsafe_code)]

use super::{max_frame_len, Port, PortInfo, PortStats};
use crate::buf::{PacketBuf, Pool};
use crate::time::Instant;
use std::ffi::CString;
use std::io::Write;
use std::num::NonZeroU32;
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Frames per ring operation.
const BURST: usize = 32;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native mode if the driver has it, generic otherwise (the kernel decides).
    #[default]
    Auto,
    /// Generic (SKB) mode: any interface, slowest.
    Generic,
    /// Driver (native) mode: the driver must support XDP (veth does).
    Driver,
}

/// Configuration of one AF_XDP port queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpConfig {
    pub ifname: String,
    pub queue: u32,
    /// UMEM frames; half for receive, half for transmit. At least 2 * `ring_size` is sensible.
    pub frames: u32,
    /// Size of a UMEM frame: 2048 or 4096.
    pub frame_size: u32,
    /// Size of each of the rx, tx, fill and completion rings (a power of two).
    pub ring_size: u32,
    pub mode: XdpMode,
    /// Bind with XDP_ZEROCOPY (NIC drivers with AF_XDP support) instead of XDP_COPY.
    pub zero_copy: bool,
    /// Remove any XDP program left on the interface (by a crashed earlier run) before attaching ours. Set it
    /// on the first queue opened on an interface only: it would also detach a live sibling queue's program.
    pub detach_stale: bool,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            ifname: String::new(),
            queue: 0,
            frames: 4096,
            frame_size: 2048,
            ring_size: 1024,
            mode: XdpMode::Auto,
            zero_copy: false,
            detach_stale: true,
        }
    }
}

/// Why an AF_XDP port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    #[error("no interface {0}")]
    NoInterface(String),
    #[error("detaching the XDP program left on {ifname}: error {code}")]
    Detach { ifname: String, code: i32 },
    #[error("creating the UMEM: {0}")]
    Umem(String),
    #[error("creating the AF_XDP socket (root? XDP support? zero-copy support?): {0}")]
    Socket(String),
}

fn ifindex(ifname: &str) -> Result<u32, AfXdpError> {
    let c = CString::new(ifname).map_err(|_| AfXdpError::Config("interface name contains NUL"))?;
    // SAFETY: c is NUL-terminated and only read during the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(AfXdpError::NoInterface(ifname.into()));
    }
    Ok(idx)
}

/// Removes any XDP program attached to `ifname` (generic, native or offloaded; with or without libxdp's
/// dispatcher). Returns whether there was one. This is `ip link set dev X xdp off`, for recovering from a
/// crash that left a program behind.
pub fn detach_xdp(ifname: &str) -> Result<bool, AfXdpError> {
    let idx = ifindex(ifname)?;
    let idx = i32::try_from(idx).map_err(|_| AfXdpError::NoInterface(ifname.into()))?;
    // SAFETY: plain libxdp call; it returns an owned multiprog handle or an error pointer.
    let mp = unsafe { libxdp_sys::xdp_multiprog__get_from_ifindex(idx) };
    // SAFETY: libxdp_get_error accepts any pointer libxdp returned, error pointers and NULL included.
    let err = unsafe { libxdp_sys::libxdp_get_error(mp.cast()) };
    if mp.is_null() || err != 0 {
        // -ENOENT: nothing attached. Anything else: we cannot read it, so we cannot detach it either.
        return if mp.is_null() || err == -i64::from(libc::ENOENT) {
            Ok(false)
        } else {
            Err(AfXdpError::Detach { ifname: ifname.into(), code: i32::try_from(err).unwrap_or(i32::MIN) })
        };
    }
    // SAFETY: mp is a valid handle (checked above), detached then closed exactly once.
    let rc = unsafe {
        let rc = libxdp_sys::xdp_multiprog__detach(mp);
        libxdp_sys::xdp_multiprog__close(mp);
        rc
    };
    if rc != 0 {
        return Err(AfXdpError::Detach { ifname: ifname.into(), code: rc });
    }
    Ok(true)
}

/// Whether an XDP program is attached to `ifname` (for tests and health checks).
pub fn xdp_attached(ifname: &str) -> Result<bool, AfXdpError> {
    let idx = i32::try_from(ifindex(ifname)?).map_err(|_| AfXdpError::NoInterface(ifname.into()))?;
    let mut prog_id = 0u32;
    // SAFETY: plain libbpf query into a valid out-pointer (0 flags: any attach mode).
    let rc = unsafe { libxdp_sys::bpf_xdp_query_id(idx, 0, &mut prog_id) };
    if rc != 0 {
        return Err(AfXdpError::Detach { ifname: ifname.into(), code: rc });
    }
    Ok(prog_id != 0)
}

/// One queue of an interface through an AF_XDP socket, as a [`Port`].
pub struct AfXdpPort {
    // Field order is drop order: the rings (each holds the socket) go before the UMEM they point into.
    tx_q: TxQueue,
    rx_q: RxQueue,
    fill_q: FillQueue,
    comp_q: CompQueue,
    umem: Umem,
    /// Transmit frames userspace owns (not on the tx ring, not awaiting completion).
    tx_free: Vec<FrameDesc>,
    /// All transmit frames: when `tx_free` holds fewer, some are still in the kernel's hands.
    tx_frames: usize,
    scratch: [FrameDesc; BURST],
    pool: Pool,
    info: PortInfo,
    stats: PortStats,
    max_frame: usize,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort").field("info", &self.info).field("stats", &self.stats).finish()
    }
}

/// The MAC address and MTU of `ifname`, asked of the kernel through a socket, so in the calling thread's
/// network namespace (/sys/class/net shows the namespace sysfs was mounted in, which may be another).
fn link_params(ifname: &str) -> (Option<[u8; 6]>, Option<u16>) {
    let Ok(name) = CString::new(ifname) else { return (None, None) };
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return (None, None);
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1)) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is a valid socket and req a valid ifreq with a NUL-terminated name; the kernel fills the
    // union member that SIOCGIFHWADDR names, which we then read.
    let mac = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) == 0 {
            let sa = req.ifr_ifru.ifru_hwaddr.sa_data;
            let mut mac = [0u8; 6];
            for (m, b) in mac.iter_mut().zip(sa.iter()) {
                *m = *b as u8;
            }
            Some(mac)
        } else {
            None
        }
    };
    // SAFETY: as above, for SIOCGIFMTU and its union member.
    let mtu = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) == 0 {
            u16::try_from(req.ifr_ifru.ifru_mtu).ok()
        } else {
            None
        }
    };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    (mac, mtu)
}

impl AfXdpPort {
    /// Opens queue `cfg.queue` of `cfg.ifname` (in the calling thread's network namespace), receiving into
    /// buffers from `pool`.
    pub fn open(cfg: &AfXdpConfig, pool: Pool) -> Result<AfXdpPort, AfXdpError> {
        if cfg.frames < 2 * BURST as u32 {
            return Err(AfXdpError::Config("too few UMEM frames"));
        }
        ifindex(&cfg.ifname)?;
        if cfg.detach_stale {
            detach_xdp(&cfg.ifname)?;
        }
        let ring =
            QueueSize::new(cfg.ring_size).map_err(|_| AfXdpError::Config("ring size: power of two"))?;
        let frame_size =
            FrameSize::new(cfg.frame_size).map_err(|_| AfXdpError::Config("frame size: 2048 or 4096"))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| AfXdpError::Umem(e.to_string()))?;
        let frames = NonZeroU32::new(cfg.frames).ok_or(AfXdpError::Config("zero UMEM frames"))?;
        let xdp_flags = match cfg.mode {
            XdpMode::Auto => XdpFlags::empty(),
            XdpMode::Generic => XdpFlags::XDP_FLAGS_SKB_MODE,
            XdpMode::Driver => XdpFlags::XDP_FLAGS_DRV_MODE,
        };
        let copy = if cfg.zero_copy { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY };
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::empty())
            .xdp_flags(xdp_flags)
            .bind_flags(copy | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let iface: Interface =
            cfg.ifname.parse().map_err(|_| AfXdpError::Config("interface name contains NUL"))?;

        // The kernel frees a closed socket's hold on its queue in deferred work, so binding the same queue
        // right after a close (a quick restart) can fail with EBUSY for a moment: retry for up to a second,
        // each time with a fresh UMEM (a failed bind may have consumed the old one's rings).
        let mut attempt = 0;
        let (umem, mut descs, tx_q, rx_q, fq_cq) = loop {
            let (umem, descs) =
                Umem::new(umem_cfg, frames, false).map_err(|e| AfXdpError::Umem(e.to_string()))?;
            // SAFETY: the UMEM is new and used by this socket only; its frames are handed to the kernel only
            // through this socket's rings below.
            match unsafe { Socket::new(sock_cfg, &umem, &iface, cfg.queue) } {
                Ok((tx_q, rx_q, fq_cq)) => break (umem, descs, tx_q, rx_q, fq_cq),
                Err(e) => {
                    let os = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<std::io::Error>())
                        .and_then(std::io::Error::raw_os_error);
                    attempt += 1;
                    if os != Some(libc::EBUSY) || attempt >= 20 {
                        return Err(AfXdpError::Socket(match os {
                            Some(code) => format!("{e}: {}", std::io::Error::from_raw_os_error(code)),
                            None => e.to_string(),
                        }));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        };
        let (mut fill_q, comp_q) = fq_cq.ok_or(AfXdpError::Socket("no fill/completion ring".into()))?;

        // Half the frames (up to the fill ring's size) go to the kernel for receiving, the rest transmit.
        let rx_frames = (descs.len() / 2).min(cfg.ring_size as usize);
        let tx_free = descs.split_off(rx_frames);
        // SAFETY: these descriptors belong to this UMEM and userspace holds no reference into their frames.
        let filled = unsafe { fill_q.produce(&descs) };
        if filled != descs.len() {
            return Err(AfXdpError::Socket("fill ring smaller than the receive frames".into()));
        }

        let (mac, mtu) = link_params(&cfg.ifname);
        let mtu = mtu.map_or(1500, usize::from);
        let umem_mtu = (cfg.frame_size as usize).saturating_sub(256);
        let tx_frames = tx_free.len();
        Ok(AfXdpPort {
            tx_frames,
            tx_q,
            rx_q,
            fill_q,
            comp_q,
            umem,
            tx_free,
            scratch: [FrameDesc::default(); BURST],
            pool,
            info: PortInfo { name: format!("afxdp:{}q{}", cfg.ifname, cfg.queue), mac, mtu },
            stats: PortStats::default(),
            max_frame: umem_mtu.min(max_frame_len(mtu)),
        })
    }

    /// Takes transmit frames back from the completion ring, and kicks the kernel again while some are still
    /// on the tx ring: in copy mode one kick sends a limited batch, and a failed kick sends nothing.
    fn reclaim(&mut self) {
        loop {
            // SAFETY: the scratch descriptors are overwritten with frames of this UMEM that the kernel has
            // finished sending, which userspace owns again.
            let n = unsafe { self.comp_q.consume(&mut self.scratch) };
            self.tx_free.extend(self.scratch.iter().take(n).copied());
            if n < BURST {
                break;
            }
        }
        if self.tx_free.len() < self.tx_frames && self.tx_q.needs_wakeup() {
            let _ = self.tx_q.wakeup();
        }
    }
}

impl Port for AfXdpPort {
    fn recv(&mut self, _now: Instant, out: &mut Vec<PacketBuf>, max: usize) -> usize {
        self.reclaim();
        let mut got = 0;
        while got < max {
            let want = (max - got).min(BURST);
            let Some(descs) = self.scratch.get_mut(..want) else { break };
            // SAFETY: the scratch descriptors are overwritten with received frames of this UMEM, which
            // userspace owns until they go back on the fill ring below.
            let n = unsafe { self.rx_q.consume(descs) };
            for d in descs.iter().take(n) {
                // SAFETY: d is a frame of this UMEM just taken from the rx ring; the kernel does not touch it
                // until it is back on the fill ring, and the slice is dropped before that.
                let data = unsafe { self.umem.data(d) };
                let frame = data.contents();
                if frame.len() > self.max_frame {
                    self.stats.rx_dropped_oversize += 1;
                    continue;
                }
                match self.pool.alloc() {
                    Some(mut b) => {
                        if b.extend_from_slice(frame).is_ok() {
                            self.stats.rx_packets += 1;
                            self.stats.rx_bytes += frame.len() as u64;
                            out.push(b);
                            got += 1;
                        } else {
                            self.stats.rx_dropped_oversize += 1;
                        }
                    }
                    None => self.stats.rx_dropped_no_buffer += 1,
                }
            }
            if n > 0 {
                // SAFETY: the n frames came from this UMEM's rx ring and nothing refers to them any more.
                let refilled = unsafe { self.fill_q.produce(self.scratch.get(..n).unwrap_or(&[])) };
                // The fill ring holds every receive frame, so this cannot come up short; if it ever did,
                // the frames would be lost to receiving, so count it.
                self.stats.rx_dropped_ring += (n - refilled) as u64;
            }
            if self.fill_q.needs_wakeup() {
                // Drivers in need-wakeup mode wait for a syscall before refilling from the fill ring.
                let _ = self.fill_q.wakeup(self.rx_q.fd_mut(), 0);
            }
            if n < want {
                break;
            }
        }
        got
    }

    fn send(&mut self, _now: Instant, pkts: &mut Vec<PacketBuf>) -> usize {
        self.reclaim();
        let mut taken = 0;
        while !pkts.is_empty() {
            let mut staged = 0;
            for p in pkts.iter().take(BURST) {
                if p.len() > self.max_frame {
                    break;
                }
                let Some(mut d) = self.tx_free.pop() else { break };
                // SAFETY: d is a free transmit frame of this UMEM (not on any ring), so userspace has it to
                // itself; the cursor writes within the frame.
                let written = unsafe {
                    let mut data = self.umem.data_mut(&mut d);
                    let mut cur = data.cursor();
                    cur.set_pos(0);
                    cur.write_all(p.data()).is_ok()
                };
                if !written {
                    self.tx_free.push(d);
                    break;
                }
                if let Some(slot) = self.scratch.get_mut(staged) {
                    *slot = d;
                    staged += 1;
                }
            }
            if staged == 0 {
                // Either the front frame is too big (drop it, counted) or no transmit frame is free.
                if pkts.first().is_some_and(|p| p.len() > self.max_frame) {
                    pkts.remove(0);
                    self.stats.tx_dropped_oversize += 1;
                    taken += 1;
                    continue;
                }
                self.stats.tx_ring_full += pkts.len() as u64;
                break;
            }
            // SAFETY: the staged descriptors are frames of this UMEM that userspace filled and now hands to
            // the kernel; they come back through the completion ring.
            let sent = unsafe { self.tx_q.produce(self.scratch.get(..staged).unwrap_or(&[])) };
            if sent > 0 && self.tx_q.needs_wakeup() {
                // Copy mode transmits only on a syscall; a failed or partial kick is repeated by reclaim().
                let _ = self.tx_q.wakeup();
            }
            self.tx_free.extend(self.scratch.iter().take(staged).skip(sent).copied());
            for p in pkts.drain(..sent) {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += p.len() as u64;
            }
            taken += sent;
            if sent < staged {
                self.stats.tx_ring_full += pkts.len() as u64;
                break;
            }
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
        if let Ok(x) = self.rx_q.fd().xdp_statistics() {
            s.rx_dropped_ring =
                s.rx_dropped_ring.saturating_add(x.rx_dropped()).saturating_add(x.rx_ring_full());
        }
        s
    }
}
