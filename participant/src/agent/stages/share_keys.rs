//! ShareKeys: answer the server's key directory with this agent's encrypted Shamir shares for its neighbours.

use confide_common::api::RoundTask;
use confide_common::secagg::KeyDirectory;
use confide_common::secagg::messages::ControlMessage;

use crate::agent::{Agent, AgentError, Next, os_rng};

impl Agent {
    pub(in crate::agent) async fn share_keys(
        &mut self,
        task: &RoundTask,
    ) -> Result<Next, AgentError> {
        let dir: KeyDirectory = match self.read_broadcast(task).await? {
            Ok(d) => d,
            Err(next) => return Ok(next),
        };
        let mut rng = os_rng()?;
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        let msg = match session.client.handle_key_directory(&dir, &mut rng) {
            Ok(m) => m,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        Ok(self.send(task, msg.to_json().into_bytes()))
    }
}
