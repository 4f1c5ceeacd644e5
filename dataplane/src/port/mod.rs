//! Ports: a NIC queue behind a small burst interface.
