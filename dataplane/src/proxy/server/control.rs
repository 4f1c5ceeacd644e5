//! Core B's side of the control port (see `proxy::control`): its counters and packet capture of the
//! server port. Flows, policies and pools live on core A, which answers for them.

use super::ServerCore;
use crate::flow::FlowId;
use crate::port::Port;
use crate::proxy::control::{
    Answer, Command, ControlError, ControlPort, EngineState, ServerHalfDetail, ServerSnapshot,
};
use crate::time::Instant;
use std::net::SocketAddrV4;

impl<P: Port> ServerCore<P> {
    /// Attaches the control thread's channel; from the next step on, the core answers its requests.
    pub fn attach_control(&mut self, port: ControlPort) {
        self.ctl.attach(port);
    }

    /// Answers the requests waiting (a few per step at most). Returns how many were answered.
    pub(super) fn serve_control(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(req) = self.ctl.next_request(n) {
            n += 1;
            let answer = match &req.command {
                Command::Snapshot => Answer::Server(Box::new(ServerSnapshot {
                    at: now,
                    stats: self.stats.clone(),
                    io: self.io.stats.clone(),
                    port: self.io.port.stats(),
                    flows: self.flows.len(),
                    capture: self.io.capture.status(),
                })),
                Command::Capture { count, snaplen, sink } => {
                    Answer::Done(self.io.capture.start(*count, *snaplen, sink.clone()))
                }
                Command::Flow { id } => Answer::ServerHalf(self.server_half(*id).map(Box::new)),
                Command::Intake { stop } => {
                    self.intake_stopped = *stop;
                    Answer::Done(Ok(()))
                }
                _ => Answer::Done(Err(ControlError::WrongCore)),
            };
            req.answer(answer);
        }
        n
    }

    fn server_half(&self, id: u64) -> Option<ServerHalfDetail> {
        let id = FlowId::from_u64(id);
        let f = self.flows.get(id)?;
        let key = self.flows.key(id)?;
        let c = &f.conn;
        Some(ServerHalfDetail {
            snat: SocketAddrV4::new(self.cfg.snat, key.snat_port),
            backend: key.backend,
            connected: f.connected,
            engine: EngineState::of(c),
            c2s_next: f.c2s_next,
            c2s_backlog: f.c2s_backlog.len(),
            c2s_acked_told: f.c2s_acked_told,
            c2s_fin: f.c2s_fin,
            s2c_sent: f.s2c_sent,
            s2c_done: f.s2c_done,
            fin_forwarded: f.fin_forwarded,
        })
    }
}
