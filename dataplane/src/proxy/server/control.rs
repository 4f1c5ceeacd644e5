//! Core B's side of the control port (see `proxy::control`): its counters and packet capture of the
//! server port. Flows, policies and pools live on core A, which answers for them.

use super::ServerCore;
use crate::port::Port;
use crate::proxy::control::{Answer, Command, ControlError, ControlPort, ServerSnapshot};
use crate::time::Instant;

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
                _ => Answer::Done(Err(ControlError::WrongCore)),
            };
            req.answer(answer);
        }
        n
    }
}
