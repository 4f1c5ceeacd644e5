//! Packet buffers: a pool of fixed-size buffers with headroom (mbuf-like).
