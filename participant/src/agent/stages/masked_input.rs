//! MaskedInputCollection: quantise Δ with weight 1, mask it with the routed shares, charge the local ledger durably,
//! and only then send the masked input.

use confide_common::api::RoundTask;
use confide_common::secagg::{MaskedInputRequest, RoutedShares, ThreatModel};

use crate::agent::ledger::{Budget, ChargeKey, ChargeOutcome};
use crate::agent::{Agent, AgentError, Next, debug, os_rng};

/// The broadcast that opens MaskedInputCollection.
enum Opened {
    Routed(RoutedShares),
    Acknowledged(MaskedInputRequest),
}

impl Agent {
    pub(in crate::agent) async fn masked_input(
        &mut self,
        task: &RoundTask,
    ) -> Result<Next, AgentError> {
        // Semi-honest rounds open this stage with the shares routed to this site; malicious ones with the t signed
        // acknowledgements that let it mask (its shares were checked in ShareVerification).
        let opened = match task.protocol.threat_model {
            ThreatModel::SemiHonest => self
                .read_broadcast::<RoutedShares>(task)
                .await?
                .map(Opened::Routed),
            ThreatModel::Malicious => self
                .read_broadcast::<MaskedInputRequest>(task)
                .await?
                .map(Opened::Acknowledged),
        };
        let opened = match opened {
            Ok(o) => o,
            Err(next) => return Ok(next),
        };
        let mut rng = os_rng()?;
        let Some(session) = self.session.as_mut() else {
            return Ok(Next::Pause);
        };
        // Weight 1 for everyone: the aggregate is the plain (uniform) FedAvg of the updates. A site's record count is
        // not protected by DP, so it is never sent, not even inside the masked sum.
        let input = match session.quantisation.quantize(&session.update, 1, &mut rng) {
            Ok(i) => i,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        let masked = match &opened {
            Opened::Routed(routed) => session.client.handle_routed_shares(routed, &input),
            Opened::Acknowledged(req) => session.client.handle_masked_input_request(req, &input),
        };
        let masked = match masked {
            Ok(m) => m,
            Err(e) => return Ok(self.protocol_error(task, e)),
        };
        session.update.clear();
        let (round_id, round_number) = (session.round_id, session.round_number);
        let planned = session.planned.clone();
        let partition = session.partition;
        // The spend is durable BEFORE the masked input leaves this machine (one transaction, once per round).
        let budget: Budget = self.cfg.budget;
        let key = ChargeKey::new(&self.identity, round_id, round_number);
        match self
            .ledger
            .charge_in(&key, partition, &planned, budget)
            .await?
        {
            ChargeOutcome::Charged { epsilon_after } => {
                tracing::info!(
                    round = round_number,
                    epsilon_after,
                    "privacy spend recorded in the local ledger"
                )
            }
            ChargeOutcome::AlreadyCharged { epsilon_after } => {
                tracing::info!(
                    round = round_number,
                    epsilon_after,
                    "round already charged in the local ledger"
                )
            }
            ChargeOutcome::OverBudget { epsilon_after } => {
                return Ok(self.protocol_error(
                    task,
                    format!("the local budget no longer allows this round (ε would be {epsilon_after:.4})"),
                ));
            }
        }
        debug::dump_input(self.state.path(), round_id, &input);
        Ok(self.send(task, masked.encode()))
    }
}
