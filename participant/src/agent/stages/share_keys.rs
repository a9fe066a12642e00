//! ShareKeys: answer the server's key directory with this agent's encrypted Shamir shares for its neighbours.

use confide_common::api::{RoundStage, RoundTask};
use confide_common::secagg::KeyDirectory;
use confide_common::secagg::messages::ControlMessage;

use crate::agent::transport::Outgoing;
use crate::agent::{Agent, AgentError, Next, os_rng};

impl Agent {
    pub(in crate::agent) async fn share_keys(
        &mut self,
        task: &RoundTask,
    ) -> Result<Next, AgentError> {
        let text = match self.broadcast(task).await {
            Ok(t) => t,
            Err(e) => return self.classify(e),
        };
        let dir = match KeyDirectory::from_json(&text) {
            Ok(d) => d,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        let mut rng = os_rng()?;
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        let msg = match session.client.handle_key_directory(&dir, &mut rng) {
            Ok(m) => m,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        self.pending = Some(Outgoing::Message {
            round_id: task.round_id,
            stage: RoundStage::ShareKeys,
            body: msg.to_json().into_bytes(),
        });
        Ok(Next::Poll)
    }
}
