//! Unmasking: reveal the shares the server asks for (for each neighbour a share of its self-mask seed if it sent
//! its masked input, of its mask key if it dropped out; never both).

use confide_common::api::RoundTask;
use confide_common::secagg::UnmaskingRequest;
use confide_common::secagg::messages::ControlMessage;

use crate::agent::{Agent, AgentError, Next, debug};

impl Agent {
    pub(in crate::agent) async fn unmask(&mut self, task: &RoundTask) -> Result<Next, AgentError> {
        let req: UnmaskingRequest = match self.read_broadcast(task).await? {
            Ok(r) => r,
            Err(next) => return Ok(next),
        };
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        let msg = match session.client.handle_unmasking_request(&req) {
            Ok(m) => m,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        debug::crash_point(debug::BEFORE_UNMASKING_RESPONSE);
        Ok(self.send(task, msg.to_json().into_bytes()))
    }
}
