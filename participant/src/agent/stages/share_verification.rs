//! ShareVerification (malicious rounds): decrypt the shares the neighbours dealt to this site and check each
//! against its dealer's signed commitments. All good: a signed acknowledgement (the server forwards t of them to
//! every site before anyone masks). A bad dealing: signed complaints naming the dealers, with this site's per-round
//! share-decryption key as proof — after which this site has left the round (it sends the complaint anyway, so the
//! cheater is named and excluded).

use confide_common::api::RoundTask;
use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{ClientAbort, RoutedShares};

use crate::agent::{Agent, AgentError, Next, os_rng};

impl Agent {
    pub(in crate::agent) async fn verify_shares(
        &mut self,
        task: &RoundTask,
    ) -> Result<Next, AgentError> {
        let routed: RoutedShares = match self.read_broadcast(task).await? {
            Ok(r) => r,
            Err(next) => return Ok(next),
        };
        let mut rng = os_rng()?;
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        let verdict = match session.client.verify_routed_shares(&routed, &mut rng) {
            Ok(v) => v,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        let complained = match session.client.abort_cause() {
            Some(ClientAbort::Complained { dealers }) => Some(dealers.clone()),
            _ => None,
        };
        if let Some(dealers) = complained {
            // The session keeps no secret worth anything now; the complaint is the last message of this round.
            tracing::warn!(
                round = task.round_number,
                dealers = ?dealers,
                "shares dealt to this site do not match their commitments: complaining with proof and leaving the round"
            );
            let body = verdict.to_json().into_bytes();
            let next = self.send(task, body);
            self.abandon(task.round_id);
            return Ok(next);
        }
        Ok(self.send(task, verdict.to_json().into_bytes()))
    }
}
