//! The safe wrapper over [`crate::ffi`], built when DPDK was found.
//!
//! Ownership mirrors DPDK's teardown order: a [`Queue`] keeps its [`EthPort`] alive, a port keeps its
//! [`Mempool`], and everything keeps the [`Eal`], whose last handle runs `rte_eal_cleanup`.

use crate::ffi::{self, RteMbuf, RteMempool};
use crate::{DpdkError, EthConfig, EthStats, Link, Result, RxBurst, TxBurst, BURST};
use core::ffi::{c_char, c_int, c_uint};
use core::ptr::{self, NonNull};
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// `SOCKET_ID_ANY`: let DPDK choose the NUMA node.
const SOCKET_ID_ANY: c_int = -1;

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

fn rte_errno() -> i32 {
    // SAFETY: reads DPDK's thread-local error number; no preconditions.
    unsafe { ffi::hf_errno() }
}

fn check(call: &'static str, rc: c_int) -> Result<()> {
    if rc < 0 {
        Err(DpdkError::Call { call, code: rc })
    } else {
        Ok(())
    }
}

/// DPDK's own text for an error code (positive or negative errno, or an `rte_errno` value).
pub fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string, which we copy
    // at once.
    let p = unsafe { ffi::rte_strerror(code.saturating_abs()) };
    if p.is_null() {
        return format!("error {code}");
    }
    // SAFETY: non-null and NUL-terminated, as above; copied before any other DPDK call on this thread.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[derive(Debug)]
struct EalInner;

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: the last Eal handle is gone, so every mempool and port (which hold one) has been freed;
        // DPDK forbids only calling into it afterwards, and EAL_STARTED stays set so nobody can.
        unsafe {
            ffi::rte_eal_cleanup();
        }
    }
}

/// The initialized DPDK environment abstraction layer. Cheap to clone; cleaned up when the last clone goes.
#[derive(Clone, Debug)]
pub struct Eal {
    _inner: Arc<EalInner>,
}

impl Eal {
    /// Initializes the EAL with `args` (without a program name: "holdfast" is prepended), e.g.
    /// `["--no-huge", "-m", "256", "--no-pci", "--file-prefix=hf1", "--vdev=net_af_packet0,iface=veth0"]`.
    ///
    /// Once per process: a second call fails with [`DpdkError::AlreadyInitialized`], even after cleanup.
    /// Notes: the EAL pins the calling thread to its main lcore; virtual devices such as `net_af_packet`
    /// open their sockets in the calling thread's network namespace.
    pub fn init(args: &[String]) -> Result<Eal> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("holdfast").map_err(|_| DpdkError::BadArgument("program name"))?);
        for a in args {
            owned.push(
                CString::new(a.as_str()).map_err(|_| DpdkError::BadArgument("EAL argument contains NUL"))?,
            );
        }
        let argc =
            c_int::try_from(owned.len()).map_err(|_| DpdkError::BadArgument("too many EAL arguments"))?;
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyInitialized);
        }
        // The EAL may keep pointers into argv (device arguments) and permutes the array, so both live for
        // the rest of the process: a one-time leak of a few hundred bytes.
        let strings: &'static mut [CString] = Box::leak(owned.into_boxed_slice());
        let mut argv: Vec<*mut c_char> = strings.iter_mut().map(|s| s.as_ptr().cast_mut()).collect();
        argv.push(ptr::null_mut());
        let argv: &'static mut [*mut c_char] = Box::leak(argv.into_boxed_slice());
        // SAFETY: argc counts the NUL-terminated strings in argv (which also ends with NULL, as C's main
        // does); both are leaked, so they outlive the EAL. EAL_STARTED guarantees a single call.
        let rc = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(DpdkError::Call { call: "rte_eal_init", code: rte_errno() });
        }
        Ok(Eal { _inner: Arc::new(EalInner) })
    }

    /// Number of usable Ethernet ports (physical and virtual devices the EAL probed).
    pub fn port_count(&self) -> u16 {
        // SAFETY: the EAL is initialized (self exists).
        unsafe { ffi::rte_eth_dev_count_avail() }
    }

    /// The port id of a device by name, e.g. `net_af_packet0` or a PCI address `0000:03:00.1`.
    pub fn port_by_name(&self, name: &str) -> Result<u16> {
        let c = CString::new(name).map_err(|_| DpdkError::BadArgument("device name contains NUL"))?;
        let mut id = 0u16;
        // SAFETY: the EAL is initialized; c is NUL-terminated and id is a valid out-pointer for the call.
        let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        check("rte_eth_dev_get_port_by_name", rc)?;
        Ok(id)
    }
}

#[derive(Debug)]
struct MempoolInner {
    ptr: NonNull<RteMempool>,
    data_room: u16,
    _eal: Eal,
}

// SAFETY: a DPDK mempool is multi-producer/multi-consumer safe (its default ring ops), and threads that are
// not EAL lcores use it without a per-lcore cache; the pointer is freed only by Drop, once.
unsafe impl Send for MempoolInner {}
// SAFETY: as above; every operation through a shared reference is a thread-safe DPDK call.
unsafe impl Sync for MempoolInner {}

impl Drop for MempoolInner {
    fn drop(&mut self) {
        // SAFETY: the last handle is gone: every port using the pool was stopped and closed first (ports
        // hold a handle), and mbufs are freed at once after each copy, so none are outstanding.
        unsafe { ffi::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// A pool of packet mbufs (`rte_pktmbuf_pool_create`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Mempool {
    inner: Arc<MempoolInner>,
}

impl Mempool {
    /// Creates a pool of `count` mbufs with `data_room` bytes each (headroom included; DPDK's default is
    /// 2176 = 2048 + 128) and a per-lcore cache of `cache` mbufs. `name` must be unique in the process.
    pub fn new(eal: &Eal, name: &str, count: u32, cache: u32, data_room: u16) -> Result<Mempool> {
        let c = CString::new(name).map_err(|_| DpdkError::BadArgument("mempool name contains NUL"))?;
        // SAFETY: the EAL is initialized; c is NUL-terminated and only read during the call.
        let p =
            unsafe { ffi::rte_pktmbuf_pool_create(c.as_ptr(), count, cache, 0, data_room, SOCKET_ID_ANY) };
        let ptr =
            NonNull::new(p).ok_or(DpdkError::Call { call: "rte_pktmbuf_pool_create", code: rte_errno() })?;
        Ok(Mempool { inner: Arc::new(MempoolInner { ptr, data_room, _eal: eal.clone() }) })
    }

    /// Largest frame one mbuf of this pool holds.
    pub fn max_frame(&self) -> usize {
        // SAFETY: returns a compile-time constant; no preconditions.
        let headroom = unsafe { ffi::hf_pktmbuf_headroom() };
        usize::from(self.inner.data_room.saturating_sub(headroom))
    }
}

#[derive(Debug)]
struct PortInner {
    id: u16,
    rx_queues: u16,
    tx_queues: u16,
    /// Bit q set: queue q has a live [`Queue`] handle (so each queue is polled by one thread only).
    taken: AtomicU64,
    mempool: Mempool,
    _eal: Eal,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: the port was started by open() and no Queue handle is left (each holds a port handle),
        // so no burst call can be running; stop then close is DPDK's teardown order.
        unsafe {
            ffi::rte_eth_dev_stop(self.id);
            ffi::rte_eth_dev_close(self.id);
        }
    }
}

/// A configured and started Ethernet port. Cheap to clone; stopped and closed when the last handle goes.
#[derive(Clone, Debug)]
pub struct EthPort {
    inner: Arc<PortInner>,
}

impl EthPort {
    /// Configures port `port_id` with `cfg.rx_queues`/`cfg.tx_queues` queues (at most 64 each), sets up
    /// their rings with mbufs from `mempool`, enables promiscuous mode if asked, and starts the port.
    pub fn open(eal: &Eal, port_id: u16, cfg: &EthConfig, mempool: &Mempool) -> Result<EthPort> {
        if cfg.rx_queues == 0 || cfg.tx_queues == 0 || cfg.rx_queues > 64 || cfg.tx_queues > 64 {
            return Err(DpdkError::BadArgument("queue count must be 1..=64"));
        }
        // SAFETY: the EAL is initialized; the call only validates the id.
        if unsafe { ffi::rte_eth_dev_is_valid_port(port_id) } == 0 {
            return Err(DpdkError::BadArgument("no such DPDK port id"));
        }
        // SAFETY: valid port id (checked above).
        let socket = unsafe { ffi::rte_eth_dev_socket_id(port_id) };
        // SOCKET_ID_ANY (-1) is passed on as the unsigned value DPDK expects.
        let socket = socket as c_uint;
        // SAFETY: valid port id; the shim passes a zeroed rte_eth_conf (DPDK's defaults).
        check("rte_eth_dev_configure", unsafe {
            ffi::hf_eth_configure(port_id, cfg.rx_queues, cfg.tx_queues)
        })?;
        for q in 0..cfg.rx_queues {
            // SAFETY: port configured with rx_queues queues, q < rx_queues; NULL rx_conf means the driver's
            // defaults; the mempool outlives the port (PortInner holds it).
            let rc = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    port_id,
                    q,
                    cfg.rx_ring,
                    socket,
                    ptr::null(),
                    mempool.inner.ptr.as_ptr(),
                )
            };
            check("rte_eth_rx_queue_setup", rc)?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: as above for transmit queues; NULL tx_conf means the driver's defaults.
            let rc = unsafe { ffi::rte_eth_tx_queue_setup(port_id, q, cfg.tx_ring, socket, ptr::null()) };
            check("rte_eth_tx_queue_setup", rc)?;
        }
        // SAFETY: configured and all queues set up, as rte_eth_dev_start requires.
        check("rte_eth_dev_start", unsafe { ffi::rte_eth_dev_start(port_id) })?;
        // From here on Drop stops and closes the port, including on the error path below.
        let port = EthPort {
            inner: Arc::new(PortInner {
                id: port_id,
                rx_queues: cfg.rx_queues,
                tx_queues: cfg.tx_queues,
                taken: AtomicU64::new(0),
                mempool: mempool.clone(),
                _eal: eal.clone(),
            }),
        };
        if cfg.promiscuous {
            // SAFETY: started, valid port.
            check("rte_eth_promiscuous_enable", unsafe { ffi::rte_eth_promiscuous_enable(port_id) })?;
        }
        Ok(port)
    }

    pub fn id(&self) -> u16 {
        self.inner.id
    }

    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut a = ffi::RteEtherAddr::default();
        // SAFETY: valid port; a is a properly aligned rte_ether_addr the call writes into.
        check("rte_eth_macaddr_get", unsafe { ffi::rte_eth_macaddr_get(self.inner.id, &mut a) })?;
        Ok(a.addr_bytes)
    }

    pub fn mtu(&self) -> Result<u16> {
        let mut mtu = 0u16;
        // SAFETY: valid port; mtu is a valid out-pointer.
        check("rte_eth_dev_get_mtu", unsafe { ffi::rte_eth_dev_get_mtu(self.inner.id, &mut mtu) })?;
        Ok(mtu)
    }

    pub fn link(&self) -> Result<Link> {
        let (mut speed, mut up) = (0u32, 0 as c_int);
        // SAFETY: valid port; both are valid out-pointers.
        check("rte_eth_link_get_nowait", unsafe { ffi::hf_eth_link(self.inner.id, &mut speed, &mut up) })?;
        Ok(Link { up: up != 0, speed_mbps: speed })
    }

    pub fn stats(&self) -> Result<EthStats> {
        let mut v = [0u64; 8];
        // SAFETY: valid port; v has the 8 slots the shim writes.
        check("rte_eth_stats_get", unsafe { ffi::hf_eth_stats(self.inner.id, v.as_mut_ptr()) })?;
        let [ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf] = v;
        Ok(EthStats { ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf })
    }

    /// The handle for receive queue `q` and transmit queue `q`; each queue can be taken once at a time,
    /// because DPDK's bursts on one queue must not run on two threads at once.
    pub fn queue(&self, q: u16) -> Result<Queue> {
        if q >= self.inner.rx_queues.min(self.inner.tx_queues) {
            return Err(DpdkError::QueueUnavailable(q));
        }
        let bit = 1u64 << q;
        if self.inner.taken.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return Err(DpdkError::QueueUnavailable(q));
        }
        Ok(Queue { port: self.clone(), q })
    }
}

/// Exclusive use of one receive and one transmit queue of a port. Send, not Sync.
#[derive(Debug)]
pub struct Queue {
    port: EthPort,
    q: u16,
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.port.inner.taken.fetch_and(!(1u64 << self.q), Ordering::AcqRel);
    }
}

impl Queue {
    pub fn port(&self) -> &EthPort {
        &self.port
    }

    pub fn index(&self) -> u16 {
        self.q
    }

    /// Largest frame [`Queue::tx`] can send.
    pub fn max_frame(&self) -> usize {
        self.port.inner.mempool.max_frame()
    }

    /// Receives up to `max` (at most [`BURST`]) frames, handing each one's bytes to `f`, then frees the
    /// mbufs: the bytes are copied out (zero-copy would hand out mbuf-backed buffers instead).
    pub fn rx(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> RxBurst {
        let mut mbufs: [*mut RteMbuf; BURST] = [ptr::null_mut(); BURST];
        let want = u16::try_from(max.min(BURST)).unwrap_or(0);
        // SAFETY: this Queue owns queue q exclusively (taken bit), the port is started, and mbufs has room
        // for `want` <= BURST pointers.
        let n = unsafe { ffi::hf_rx_burst(self.port.inner.id, self.q, mbufs.as_mut_ptr(), want) };
        let mut out = RxBurst::default();
        for &m in mbufs.iter().take(usize::from(n)) {
            // SAFETY: m is one of the n valid mbufs the driver just returned; we own it until freed below.
            let segs = unsafe { ffi::hf_mbuf_nb_segs(m) };
            if segs != 1 {
                out.multi_segment += 1;
                continue;
            }
            // SAFETY: as above; a single-segment mbuf's data pointer is valid for data_len bytes, and the
            // slice does not outlive this iteration (the mbuf is freed after the loop).
            let bytes = unsafe {
                let len = usize::from(ffi::hf_mbuf_data_len(m));
                core::slice::from_raw_parts(ffi::hf_mbuf_data(m).cast::<u8>(), len)
            };
            f(bytes);
            out.delivered += 1;
        }
        if n > 0 {
            // SAFETY: the first n pointers are mbufs we own and no slice into them is alive any more.
            unsafe { ffi::rte_pktmbuf_free_bulk(mbufs.as_mut_ptr(), c_uint::from(n)) };
        }
        out
    }

    /// Copies up to [`BURST`] frames into mbufs and transmits them; `sent` says how many from the front the
    /// driver took. The burst stops early at a frame larger than [`Queue::max_frame`] or when the mempool
    /// runs dry; frames not sent are the caller's to retry or drop.
    pub fn tx<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) -> TxBurst {
        let mut mbufs: [*mut RteMbuf; BURST] = [ptr::null_mut(); BURST];
        let mut staged = 0usize;
        let mut out = TxBurst::default();
        let pool = self.port.inner.mempool.inner.ptr.as_ptr();
        for frame in frames.into_iter().take(BURST) {
            let Ok(len) = u16::try_from(frame.len()) else {
                out.too_big = true;
                break;
            };
            if frame.len() > self.max_frame() {
                out.too_big = true;
                break;
            }
            // SAFETY: pool is a live mempool (held through the port).
            let m = unsafe { ffi::hf_pktmbuf_alloc(pool) };
            if m.is_null() {
                out.no_mbuf = true;
                break;
            }
            // SAFETY: m is a fresh single-segment mbuf we own; set_len checks len against its room, and only
            // then are len bytes copied to its data pointer, which is valid for that many.
            let fits = unsafe {
                if ffi::hf_mbuf_set_len(m, len) == 0 {
                    ptr::copy_nonoverlapping(frame.as_ptr(), ffi::hf_mbuf_data(m).cast::<u8>(), frame.len());
                    true
                } else {
                    ffi::hf_pktmbuf_free(m);
                    false
                }
            };
            if !fits {
                out.too_big = true;
                break;
            }
            if let Some(slot) = mbufs.get_mut(staged) {
                *slot = m;
                staged += 1;
            }
        }
        if staged == 0 {
            return out;
        }
        let n = u16::try_from(staged).unwrap_or(0);
        // SAFETY: exclusive queue (taken bit), started port; the first `n` entries are valid mbufs whose
        // ownership passes to the driver for those it accepts.
        let sent =
            usize::from(unsafe { ffi::hf_tx_burst(self.port.inner.id, self.q, mbufs.as_mut_ptr(), n) });
        if sent < staged {
            if let Some(rest) = mbufs.get_mut(sent..staged) {
                // SAFETY: the driver did not take these; they are still ours, and freed exactly once here.
                unsafe { ffi::rte_pktmbuf_free_bulk(rest.as_mut_ptr(), (staged - sent) as c_uint) };
            }
        }
        out.sent = sent;
        out
    }
}
