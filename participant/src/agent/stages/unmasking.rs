//! Unmasking: reveal the shares the server asks for (for each neighbour a share of its self-mask seed if it sent
//! its masked input, of its mask key if it dropped out; never both). Malicious rounds: only for a survivor set that at
//! least t survivors signed, the same this site signed.

use confide_common::api::RoundTask;
use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{SignedSurvivors, ThreatModel, UnmaskingRequest};

use crate::agent::{Agent, AgentError, Next, debug};

impl Agent {
    pub(in crate::agent) async fn unmask(&mut self, task: &RoundTask) -> Result<Next, AgentError> {
        let msg = match task.protocol.threat_model {
            ThreatModel::SemiHonest => {
                let req: UnmaskingRequest = match self.read_broadcast(task).await? {
                    Ok(r) => r,
                    Err(next) => return Ok(next),
                };
                let Some(session) = self.session.as_mut() else {
                    return Ok(Next::Pause);
                };
                session.client.handle_unmasking_request(&req)
            }
            ThreatModel::Malicious => {
                let signed: SignedSurvivors = match self.read_broadcast(task).await? {
                    Ok(r) => r,
                    Err(next) => return Ok(next),
                };
                let Some(session) = self.session.as_mut() else {
                    return Ok(Next::Pause);
                };
                // Reveals only if t survivors signed the very U3 this site signed; otherwise it aborts, having
                // revealed nothing.
                session.client.handle_signed_survivors(&signed)
            }
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        debug::crash_point(debug::BEFORE_UNMASKING_RESPONSE);
        Ok(self.send(task, msg.to_json().into_bytes()))
    }
}
