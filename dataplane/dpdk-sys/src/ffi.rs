//! The raw C interface: DPDK's exported functions, declared by hand from the 22.11 headers, and the shim's
//! wrappers around its inline ones (shim/shim.c). Opaque types are never dereferenced on the Rust side.

use core::ffi::{c_char, c_int, c_uint, c_void};

/// `struct rte_mempool`, opaque.
#[repr(C)]
pub struct RteMempool {
    _opaque: [u8; 0],
}

/// `struct rte_mbuf`, opaque: fields are read through the shim.
#[repr(C)]
pub struct RteMbuf {
    _opaque: [u8; 0],
}

/// `struct rte_ether_addr` (6 bytes, 2-byte aligned in C; a byte array is layout-compatible for writing).
#[repr(C, align(2))]
#[derive(Clone, Copy, Default)]
pub struct RteEtherAddr {
    pub addr_bytes: [u8; 6],
}

#[link(name = "rte_eal")]
#[link(name = "rte_mempool")]
#[link(name = "rte_mbuf")]
#[link(name = "rte_ethdev")]
extern "C" {
    pub fn rte_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    pub fn rte_eal_cleanup() -> c_int;
    pub fn rte_strerror(errnum: c_int) -> *const c_char;

    pub fn rte_pktmbuf_pool_create(
        name: *const c_char,
        n: c_uint,
        cache_size: c_uint,
        priv_size: u16,
        data_room_size: u16,
        socket_id: c_int,
    ) -> *mut RteMempool;
    pub fn rte_mempool_free(mp: *mut RteMempool);
    pub fn rte_pktmbuf_free_bulk(mbufs: *mut *mut RteMbuf, count: c_uint);

    pub fn rte_eth_dev_count_avail() -> u16;
    pub fn rte_eth_dev_is_valid_port(port_id: u16) -> c_int;
    pub fn rte_eth_dev_get_port_by_name(name: *const c_char, port_id: *mut u16) -> c_int;
    pub fn rte_eth_dev_socket_id(port_id: u16) -> c_int;
    pub fn rte_eth_rx_queue_setup(
        port_id: u16,
        rx_queue_id: u16,
        nb_rx_desc: u16,
        socket_id: c_uint,
        rx_conf: *const c_void,
        mb_pool: *mut RteMempool,
    ) -> c_int;
    pub fn rte_eth_tx_queue_setup(
        port_id: u16,
        tx_queue_id: u16,
        nb_tx_desc: u16,
        socket_id: c_uint,
        tx_conf: *const c_void,
    ) -> c_int;
    pub fn rte_eth_dev_start(port_id: u16) -> c_int;
    pub fn rte_eth_dev_stop(port_id: u16) -> c_int;
    pub fn rte_eth_dev_close(port_id: u16) -> c_int;
    pub fn rte_eth_promiscuous_enable(port_id: u16) -> c_int;
    pub fn rte_eth_macaddr_get(port_id: u16, mac_addr: *mut RteEtherAddr) -> c_int;
    pub fn rte_eth_dev_get_mtu(port_id: u16, mtu: *mut u16) -> c_int;
}

// The shim (compiled by build.rs into libholdfast_dpdk_shim.a).
extern "C" {
    pub fn hf_rx_burst(port: u16, queue: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
    pub fn hf_tx_burst(port: u16, queue: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
    pub fn hf_pktmbuf_alloc(mp: *mut RteMempool) -> *mut RteMbuf;
    pub fn hf_pktmbuf_free(m: *mut RteMbuf);
    pub fn hf_mbuf_data(m: *mut RteMbuf) -> *mut c_void;
    pub fn hf_mbuf_data_len(m: *const RteMbuf) -> u16;
    pub fn hf_mbuf_nb_segs(m: *const RteMbuf) -> u16;
    pub fn hf_mbuf_set_len(m: *mut RteMbuf, len: u16) -> c_int;
    pub fn hf_errno() -> c_int;
    pub fn hf_pktmbuf_headroom() -> u16;
    pub fn hf_eth_configure(port: u16, nb_rx: u16, nb_tx: u16) -> c_int;
    pub fn hf_eth_stats(port: u16, out: *mut u64) -> c_int;
    pub fn hf_eth_link(port: u16, speed_mbps: *mut u32, up: *mut c_int) -> c_int;
}
