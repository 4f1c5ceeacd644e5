//! The JSON control socket: protocol types (`protocol`), the Unix socket server and the `ControlHandler`
//! trait the box implements (`server`), the client (`client`), the Prometheus HTTP listener (`http`),
//! `holdfastctl`'s table rendering (`render`), and `WithStats`, which answers `stats` and `metrics` from
//! a `StatsRegistry` and passes every other command to the box.

pub mod client;
pub mod http;
pub mod protocol;
pub mod render;
pub mod server;

pub use client::{Client, ClientError};
pub use protocol::{
    parse_request, CtlError, ErrorCode, ParsedRequest, Reply, Request, COMMANDS, PROTOCOL_VERSION,
};
pub use server::{respond, ControlHandler, ControlServer, ServerConfig, ServerError};

use crate::stats::StatsRegistry;
use serde_json::Value;
use std::sync::Arc;

/// Answers `stats` and `metrics` from a registry; everything else goes to `inner` (the box).
#[derive(Debug)]
pub struct WithStats<H> {
    inner: H,
    registry: Arc<StatsRegistry>,
}

impl<H: ControlHandler> WithStats<H> {
    pub fn new(inner: H, registry: Arc<StatsRegistry>) -> Self {
        WithStats { inner, registry }
    }
}

/// The media type of Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl<H: ControlHandler> ControlHandler for WithStats<H> {
    fn handle(&self, req: Request) -> Result<Value, CtlError> {
        match req {
            Request::Stats(_) => serde_json::to_value(self.registry.snapshot())
                .map_err(|e| CtlError::internal(format!("stats not serializable: {e}"))),
            Request::Metrics(_) => Ok(serde_json::json!({
                "content_type": PROMETHEUS_CONTENT_TYPE,
                "text": self.registry.prometheus_text(),
            })),
            other => self.inner.handle(other),
        }
    }
}
