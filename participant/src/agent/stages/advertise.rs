//! AdvertiseKeys, where the round's work happens: check the round's cohort (pinned or allow-listed peers, the
//! minimum cohort: [`crate::agent::peers`]) and the planned privacy events against the dataset's local ledger and
//! budget (declining the round with the reason if either fails), download the model and verify
//! it against the task, train with DP-SGD exactly as the planned events say, compute Δ = local − global (warning
//! locally if quantisation will clamp some of it), start the sans-IO secure-aggregation client and send its public
//! keys.

use std::collections::HashSet;
use std::time::Instant;

use confide_client::ClientError;
use confide_common::api::RoundTask;
use confide_common::dp::{DataPartition, PrivacyEvent};
use confide_common::model::ModelSpec;
use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{IdentityPublicKey, SecAggClient, ThreatModel};
use sha2::{Digest, Sha256};

use crate::agent::dataset::{self, Statistics};
use crate::agent::peers::{PinnedPeers, check_cohort};
use crate::agent::round_plan::{decode_model, decode_weights, training_plan};
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
        // Whom this site would aggregate with: before anything is trained or sent.
        let cohort = match self.cohort(task)? {
            Ok(c) => c,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        // With federated evaluation the site trains on its training part only (the held-out records are never
        // trained on), and the charge records that part.
        let (records, partition) = match self.records_for(task, DataPartition::Training) {
            Ok(r) => r,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        let budget = self.cfg.budget;
        // Everything this dataset ever spent, in every study, plus this round.
        let epsilon_after = self
            .ledger
            .epsilon_with_in(partition, &planned, budget.delta)
            .await?;
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

        let (spec, global) = match self.fetch_model(task, true).await? {
            Ok(m) => m,
            Err(next) => return Ok(next),
        };

        let data = match dataset::round_records(self.statistics, &records, task) {
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

        self.enter_secagg(task, cohort, update, planned, partition)
    }

    /// The round's model, downloaded, checked against the task's sha256 and decoded, with the spec's input size
    /// checked against this site's data (and, for a training round, its parameter count against the round's
    /// vector: `training`); or, as `Err`, what the loop does instead (the round declined with the reason, or a
    /// transport error's backoff).
    pub(in crate::agent) async fn fetch_model(
        &mut self,
        task: &RoundTask,
        training: bool,
    ) -> Result<Result<(ModelSpec, Vec<f32>), Next>, AgentError> {
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
                return Ok(Err(self.decline(
                    task,
                    format!("the model is larger than this agent's limit of {limit} bytes"),
                )));
            }
            Err(e) => return self.classify(e).map(Err),
        };
        let digest = hex::encode(Sha256::digest(&download.bytes));
        if !digest.eq_ignore_ascii_case(&task.model_sha256) {
            return Ok(Err(self.decline(
                task,
                format!(
                    "the downloaded model's sha256 {digest} differs from the task's {}",
                    task.model_sha256
                ),
            )));
        }
        let decoded = if training {
            decode_model(&download.bytes, task)
        } else {
            decode_weights(&download.bytes)
        };
        let (spec, global) = match decoded {
            Ok(m) => m,
            Err(reason) => return Ok(Err(self.decline(task, reason))),
        };
        if spec.input_dim() != self.data.num_features() {
            return Ok(Err(self.decline(
                task,
                format!(
                    "the model expects {} features, this site's data has {}",
                    spec.input_dim(),
                    self.data.num_features()
                ),
            )));
        }
        Ok(Ok((spec, global)))
    }

    /// Whom this site would aggregate with (pinned or allow-listed peers, the minimum cohort:
    /// [`crate::agent::peers`]): the pins and the peers to pin on first use, or why the site declines. Checked
    /// before anything is trained, released or sent, in every kind of round.
    pub(in crate::agent) fn cohort(
        &self,
        task: &RoundTask,
    ) -> Result<Result<Cohort, String>, AgentError> {
        let pins = PinnedPeers::load(self.state.path())?;
        Ok(check_cohort(
            task,
            self.identity.participant_id,
            &self.identity_key.public(),
            &self.cfg.security,
            &pins,
        )
        .map(|new_pins| Cohort { pins, new_pins })
        .map_err(|reason| format!("cohort: {reason}")))
    }

    /// Enters the round's secure aggregation with `update` (whose charge is `planned`): the client for the round's
    /// threat model (signed with the identity key in malicious rounds), the first-use pins saved, the session kept
    /// for the later stages, and AdvertiseKeys sent.
    pub(in crate::agent) fn enter_secagg(
        &mut self,
        task: &RoundTask,
        cohort: Cohort,
        update: Vec<f32>,
        planned: Vec<PrivacyEvent>,
        partition: DataPartition,
    ) -> Result<Next, AgentError> {
        let mut rng = os_rng()?;
        let started = match task.protocol.threat_model {
            ThreatModel::SemiHonest => {
                SecAggClient::new(task.protocol.clone(), task.participant_index, &mut rng)
            }
            ThreatModel::Malicious => SecAggClient::with_identity(
                task.protocol.clone(),
                task.participant_index,
                self.identity_key.clone(),
                &mut rng,
            ),
        };
        let (client, msg) = match started {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(round = task.round_number, error = %e, "unusable secure-aggregation parameters; sitting the round out");
                self.sitting_out = Some(task.round_id);
                return Ok(Next::Pause);
            }
        };
        let Cohort { mut pins, new_pins } = cohort;
        if !new_pins.is_empty() {
            for (pid, key) in new_pins {
                tracing::info!(peer = pid, fingerprint = %key.fingerprint(), "pinned a peer's identity key (first use)");
                pins.peers.insert(pid, key);
            }
            pins.save(self.state.path())?;
        }
        self.session = Some(Session {
            round_id: task.round_id,
            round_number: task.round_number,
            client,
            quantisation: task.quantisation,
            update,
            planned,
            partition,
            answered: HashSet::new(),
        });
        Ok(self.send(task, msg.to_json().into_bytes()))
    }
}

/// The peers a round's cohort check accepted: the pins as stored and the keys seen for the first time.
pub(in crate::agent) struct Cohort {
    pins: PinnedPeers,
    new_pins: Vec<(i64, IdentityPublicKey)>,
}
