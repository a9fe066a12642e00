//! ConsistencyCheck (malicious rounds): sign the survivor set U3 the server announces, if this site can accept it —
//! it contains this site, only participants whose shares it holds, and at least t members. Otherwise the client
//! aborts, having revealed nothing, and the site leaves the round: a coordinator that shows a too-small U3 (to
//! unmask fewer than t inputs) or different U3s to different sites learns nothing from it.

use confide_common::api::RoundTask;
use confide_common::secagg::ConsistencyCheckRequest;
use confide_common::secagg::messages::ControlMessage;

use crate::agent::{Agent, AgentError, Next};

impl Agent {
    pub(in crate::agent) async fn consistency_check(
        &mut self,
        task: &RoundTask,
    ) -> Result<Next, AgentError> {
        let req: ConsistencyCheckRequest = match self.read_broadcast(task).await? {
            Ok(r) => r,
            Err(next) => return Ok(next),
        };
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        let signature = match session.client.handle_consistency_check_request(&req) {
            Ok(s) => s,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        Ok(self.send(task, signature.to_json().into_bytes()))
    }
}
