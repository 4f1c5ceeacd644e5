//! holdfast assembled: configuration, the box runtime (protocol cores, replication, failure detector),
//! the in-process simulator behind `holdfast demo`, the JSON control socket, and the binaries
//! `holdfast` (daemon and demo) and `holdfastctl` (control client).

pub mod apps;
pub mod boxctl;
pub mod boxrun;
pub mod config;
pub mod ctl;
pub mod epoch;
pub mod logging;
pub mod pair;
pub mod ports;
pub mod runtime;
pub mod sim;
pub mod stats;
pub mod switchover;
pub mod watch;
