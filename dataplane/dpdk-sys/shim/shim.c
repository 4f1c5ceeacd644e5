/* holdfast-dpdk-sys C shim: DPDK's fast-path functions are `static inline` in its headers, so Rust cannot
 * link to them; these one-line wrappers give them a symbol. Also wraps calls whose arguments are large
 * structs (rte_eth_conf, rte_eth_stats, rte_eth_link with bitfields), so Rust never mirrors their layout. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <string.h>

uint16_t hf_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t hf_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *hf_pktmbuf_alloc(struct rte_mempool *mp) {
    return rte_pktmbuf_alloc(mp);
}

int hf_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int n) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void hf_pktmbuf_free(struct rte_mbuf *m) {
    rte_pktmbuf_free(m);
}

void *hf_mbuf_data(struct rte_mbuf *m) {
    return rte_pktmbuf_mtod(m, void *);
}

uint16_t hf_mbuf_data_len(const struct rte_mbuf *m) {
    return rte_pktmbuf_data_len(m);
}

uint32_t hf_mbuf_pkt_len(const struct rte_mbuf *m) {
    return rte_pktmbuf_pkt_len(m);
}

uint16_t hf_mbuf_nb_segs(const struct rte_mbuf *m) {
    return m->nb_segs;
}

uint16_t hf_mbuf_tailroom(const struct rte_mbuf *m) {
    return rte_pktmbuf_tailroom(m);
}

/* Sets the length of a freshly allocated single-segment mbuf; -1 when it does not fit. */
int hf_mbuf_set_len(struct rte_mbuf *m, uint16_t len) {
    if (len > rte_pktmbuf_tailroom(m) + rte_pktmbuf_data_len(m))
        return -1;
    m->data_len = len;
    m->pkt_len = len;
    return 0;
}

int hf_errno(void) {
    return rte_errno;
}

/* Plain configuration: no RSS, no offloads; the MTU the driver defaults to. */
int hf_eth_configure(uint16_t port, uint16_t nb_rx, uint16_t nb_tx) {
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    return rte_eth_dev_configure(port, nb_rx, nb_tx, &conf);
}

/* out: ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf. */
int hf_eth_stats(uint16_t port, uint64_t out[8]) {
    struct rte_eth_stats s;
    int rc = rte_eth_stats_get(port, &s);
    if (rc != 0)
        return rc;
    out[0] = s.ipackets;
    out[1] = s.opackets;
    out[2] = s.ibytes;
    out[3] = s.obytes;
    out[4] = s.imissed;
    out[5] = s.ierrors;
    out[6] = s.oerrors;
    out[7] = s.rx_nombuf;
    return 0;
}

int hf_eth_link(uint16_t port, uint32_t *speed_mbps, int *up) {
    struct rte_eth_link link;
    memset(&link, 0, sizeof(link));
    int rc = rte_eth_link_get_nowait(port, &link);
    if (rc != 0)
        return rc;
    *speed_mbps = link.link_speed;
    *up = link.link_status;
    return 0;
}

uint16_t hf_pktmbuf_headroom(void) {
    return RTE_PKTMBUF_HEADROOM;
}
