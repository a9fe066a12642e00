//! AdvertiseKeys, where the round's work happens: check the planned privacy events against the dataset's local
//! ledger and budget (declining the round with the reason if they would exceed it), download the model and verify
//! it against the task, train with DP-SGD exactly as the planned events say, compute Δ = local − global (warning
//! locally if quantisation will clamp some of it), start the sans-IO secure-aggregation client and send its public
//! keys.

use std::collections::HashSet;
use std::time::Instant;

use confide_client::ClientError;
use confide_common::api::RoundTask;
use confide_common::secagg::SecAggClient;
use confide_common::secagg::messages::ControlMessage;
use sha2::{Digest, Sha256};

use crate::agent::dataset::{self, Statistics};
use crate::agent::round_plan::{decode_model, training_plan};
use crate::agent::{Agent, AgentError, Next, Session, os_rng, saturation};
use crate::train::train_round;

impl Agent {
    /// AdvertiseKeys: budget check, model download and check, local training, keys.
    pub(in crate::agent) async fn join(&mut self, task: &RoundTask) -> Result<Next, AgentError> {
        tracing::info!(
            round = task.round_number,
            round_id = task.round_id,
            "selected for a round"
        );
        let (plan, planned) = match training_plan(task) {
            Ok(p) => p,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        let budget = self.cfg.budget;
        // Everything this dataset ever spent, in every study, plus this round.
        let epsilon_after = self.ledger.epsilon_with(&planned, budget.delta).await?;
        if epsilon_after > budget.epsilon {
            let reason = format!(
                "local privacy budget: this round would bring the site's ε to {epsilon_after:.4}, over its budget \
                 {} (δ = {})",
                budget.epsilon, budget.delta
            );
            return Ok(self.decline(task, reason));
        }
        tracing::info!(
            round = task.round_number,
            epsilon_after,
            epsilon_budget = budget.epsilon,
            "local budget allows the round"
        );
        if self.statistics == Statistics::OwnRecords {
            dataset::warn_non_private_statistics();
        }

        let download = match self
            .client
            .download_model(
                task.model_version,
                usize::try_from(self.cfg.max_model_bytes).unwrap_or(usize::MAX),
            )
            .await
        {
            Ok(d) => d,
            Err(ClientError::TooLarge { limit }) => {
                return Ok(self.decline(
                    task,
                    format!("the model is larger than this agent's limit of {limit} bytes"),
                ));
            }
            Err(e) => return self.classify(e),
        };
        let digest = hex::encode(Sha256::digest(&download.bytes));
        if !digest.eq_ignore_ascii_case(&task.model_sha256) {
            return Ok(self.decline(
                task,
                format!(
                    "the downloaded model's sha256 {digest} differs from the task's {}",
                    task.model_sha256
                ),
            ));
        }
        let (spec, global) = match decode_model(&download.bytes, task) {
            Ok(m) => m,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        if spec.input_dim() != self.data.num_features() {
            return Ok(self.decline(
                task,
                format!(
                    "the model expects {} features, this site's data has {}",
                    spec.input_dim(),
                    self.data.num_features()
                ),
            ));
        }

        let data = match dataset::round_records(self.statistics, &self.data, task) {
            Ok(d) => d,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        let started = Instant::now();
        let g = global.clone();
        let training = tokio::task::spawn_blocking(move || train_round(&spec, &g, &data, &plan));
        let trained = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(Next::Poll),
            r = training => r.map_err(|e| AgentError::Fatal(format!("training task failed: {e}")))?,
        };
        let local = match trained {
            Ok(u) => u,
            Err(e) => return Ok(self.decline(task, format!("local training failed: {e}"))),
        };
        if local.events != planned {
            // train_round runs exactly plan.steps steps; anything else would make the charge wrong.
            return Err(AgentError::Fatal(format!(
                "training spent {:?}, the round planned {:?}",
                local.events, planned
            )));
        }
        tracing::info!(
            round = task.round_number,
            steps = local.steps,
            seconds = started.elapsed().as_secs_f64(),
            "local DP-SGD done"
        );
        let update: Vec<f32> = local
            .parameters
            .iter()
            .zip(&global)
            .map(|(l, g)| l - g)
            .collect();
        saturation::warn_if_saturated(task.round_number, &task.quantisation, &update);

        let mut rng = os_rng()?;
        let (client, msg) = match SecAggClient::new(
            task.protocol.clone(),
            task.participant_index,
            &mut rng,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(round = task.round_number, error = %e, "unusable secure-aggregation parameters; sitting the round out");
                self.sitting_out = Some(task.round_id);
                return Ok(Next::Pause);
            }
        };
        self.session = Some(Session {
            round_id: task.round_id,
            round_number: task.round_number,
            client,
            quantisation: task.quantisation,
            update,
            planned,
            answered: HashSet::new(),
        });
        Ok(self.send(task, msg.to_json().into_bytes()))
    }
}
