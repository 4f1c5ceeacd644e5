//! The daemon's log: `tracing` to stderr at the configured level, with a reload handle so that the
//! control socket's `set log_level` changes the level while the box runs.

use crate::boxctl::LogLevelFn;
use crate::ctl::protocol::LogLevel;
use std::sync::{Arc, OnceLock};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, Registry};

static LEVEL: OnceLock<LogLevelFn> = OnceLock::new();

fn filter_of(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// The config's level, as the control protocol names it.
pub fn level_of(level: crate::config::LogLevel) -> LogLevel {
    match level {
        crate::config::LogLevel::Error => LogLevel::Error,
        crate::config::LogLevel::Warn => LogLevel::Warn,
        crate::config::LogLevel::Info => LogLevel::Info,
        crate::config::LogLevel::Debug => LogLevel::Debug,
        crate::config::LogLevel::Trace => LogLevel::Trace,
    }
}

/// Installs the process's subscriber (once; a second call, or another subscriber already installed,
/// leaves things as they are and returns false).
pub fn init(level: LogLevel) -> bool {
    let (filter, handle) = reload::Layer::<LevelFilter, Registry>::new(filter_of(level));
    let ok = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .is_ok();
    if ok {
        let f: LogLevelFn = Arc::new(move |l: LogLevel| {
            handle.reload(filter_of(l)).map_err(|e| format!("cannot change the log level: {e}"))
        });
        let _ = LEVEL.set(f);
    }
    ok
}

/// What `set log_level` calls, when `init` installed the subscriber.
pub fn level_control() -> Option<LogLevelFn> {
    LEVEL.get().cloned()
}
