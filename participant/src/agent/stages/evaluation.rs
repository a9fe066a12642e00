//! AdvertiseKeys of an evaluation round: instead of training, the site scores the published model on its held-out
//! evaluation part (never trained on: [`crate::agent::holdout`]), releases its correct predictions, record count
//! and loss sum (each record's loss clamped to [0, L]: `confide_common::evaluation`) through opendp's zCDP
//! Gaussian mechanism ([`crate::release`]) at exactly the ρ the round plans to charge, and enters secure
//! aggregation with the noisy vector. The charge records the evaluation part (parallel to training) and is durable
//! before the masked vector is sent, as in every round.

use confide_common::api::RoundTask;
use confide_common::dp::{DataPartition, PrivacyEvent};
use confide_common::evaluation::{EvaluationConfig, VECTOR_LEN, sensitivity, site_sums};
use confide_common::model::ModelSpec;

use crate::agent::{Agent, AgentError, Next, dataset};
use crate::data::Dataset;
use crate::model::{Network, features_tensor, labels_tensor};
use crate::release::gaussian_release;

/// The round's shape and its one planned release, checked: the ρ charged, or why the site declines.
pub(crate) fn planned_rho(task: &RoundTask) -> Result<(EvaluationConfig, f64), String> {
    let Some(config) = task.evaluation else {
        return Err("an evaluation round of a study that declares no evaluation".into());
    };
    if task.num_parameters != VECTOR_LEN as i64
        || task.protocol.vector_len as usize != VECTOR_LEN + 1
    {
        return Err(format!(
            "the round sends {} values, an evaluation release is {VECTOR_LEN}",
            task.num_parameters
        ));
    }
    let [event @ PrivacyEvent::ZcdpGaussian { rho }] = task.planned_events.as_slice() else {
        return Err("an evaluation round must plan exactly one zCDP Gaussian release".into());
    };
    event
        .validate()
        .map_err(|e| format!("invalid planned privacy event: {e}"))?;
    Ok((config, *rho))
}

/// Whether a site with `held_out` evaluation records takes part, or why not. The reason never states the count
/// (a site's record count is what DP hides).
pub(crate) fn check_held_out(held_out: usize, config: &EvaluationConfig) -> Result<(), String> {
    if held_out < config.min_records as usize {
        return Err(format!(
            "too few evaluation records: this site holds out fewer than the study's evaluation.min_records ({}); \
             its noise would swamp its sums (a larger holdout_fraction or a smaller min_records would let it take \
             part)",
            config.min_records
        ));
    }
    if held_out > config.max_records_per_site as usize {
        return Err(format!(
            "this site holds out more records than the study's evaluation.max_records_per_site ({}), which bounds \
             the released sums",
            config.max_records_per_site
        ));
    }
    Ok(())
}

/// The noisy (correct, count, clamped loss sum) of `records` (scaled as for training) under `spec`/`weights`,
/// released at `rho`-zCDP, or why the site declines.
pub(crate) fn noisy_metrics(
    spec: &ModelSpec,
    weights: &[f32],
    records: &Dataset,
    config: &EvaluationConfig,
    rho: f64,
) -> Result<Vec<f32>, String> {
    if records
        .labels
        .iter()
        .any(|&l| l < 0 || l as usize >= spec.num_classes())
    {
        return Err(format!(
            "a held-out record's label is outside the model's {} classes",
            spec.num_classes()
        ));
    }
    let network = Network::new(spec, weights).map_err(|e| format!("the model: {e}"))?;
    let x = features_tensor(&records.features, records.num_features());
    let y = labels_tensor(&records.labels);
    let (correct, losses) = network.per_record(&x, &y);
    if correct.len() != records.len() || losses.len() != records.len() {
        return Err("the model's predictions could not be read".into());
    }
    let sums = site_sums(&correct, &losses, config.loss_max);
    // ρ-zCDP at L2 sensitivity Δ: noise std Δ/√(2ρ), a hair wider so that opendp's outward-rounded map stays at or
    // below the charged ρ (it is checked there: fail closed).
    let delta = sensitivity(config.loss_max);
    let noise_std = delta / (2.0 * rho).sqrt() * (1.0 + 1e-9);
    let noisy = gaussian_release(&sums, delta, noise_std, rho)
        .map_err(|e| format!("the evaluation release: {e}"))?;
    Ok(noisy.into_iter().map(|v| v as f32).collect())
}

impl Agent {
    /// AdvertiseKeys of an evaluation round: cohort, shape and budget checks, the held-out part (declining with
    /// fewer than `min_records`), the model, the DP release of its metrics, keys.
    pub(in crate::agent) async fn join_evaluation(
        &mut self,
        task: &RoundTask,
    ) -> Result<Next, AgentError> {
        tracing::info!(
            round = task.round_number,
            round_id = task.round_id,
            model_version = task.model_version,
            "selected for an evaluation round"
        );
        let cohort = match self.cohort(task)? {
            Ok(c) => c,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        let (config, rho) = match planned_rho(task) {
            Ok(p) => p,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        let (held_out, partition) = match self.records_for(task, DataPartition::Evaluation) {
            Ok(r) => r,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        if let Err(reason) = check_held_out(held_out.len(), &config) {
            return Ok(self.decline(task, reason));
        }
        let budget = self.cfg.budget;
        let planned = task.planned_events.clone();
        let epsilon_after = self
            .ledger
            .epsilon_with_in(partition, &planned, budget.delta)
            .await?;
        if epsilon_after > budget.epsilon {
            let reason = format!(
                "local privacy budget: the evaluation release would bring the site's ε to {epsilon_after:.4}, over \
                 its budget {} (δ = {})",
                budget.epsilon, budget.delta
            );
            return Ok(self.decline(task, reason));
        }
        let (spec, weights) = match self.fetch_model(task, false).await? {
            Ok(m) => m,
            Err(next) => return Ok(next),
        };
        let scaled = match dataset::round_records(self.statistics, &held_out, task) {
            Ok(d) => d,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        let scoring = tokio::task::spawn_blocking(move || {
            noisy_metrics(&spec, &weights, &scaled, &config, rho)
        });
        let released = tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(Next::Poll),
            r = scoring => r.map_err(|e| AgentError::Fatal(format!("evaluation task failed: {e}")))?,
        };
        let update = match released {
            Ok(u) => u,
            Err(reason) => return Ok(self.decline(task, reason)),
        };
        tracing::info!(
            round = task.round_number,
            epsilon_after,
            "evaluation metrics released through opendp (sent only masked, after the charge)"
        );
        self.enter_secagg(task, cohort, update, planned, partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confide_common::evaluation::{EvaluationSchedule, holdout_part};

    fn config() -> EvaluationConfig {
        EvaluationConfig {
            holdout_fraction: 0.5,
            epsilon: 1.0,
            schedule: EvaluationSchedule::EveryRound,
            min_records: 5,
            loss_max: 3.0,
            max_records_per_site: 1000,
            seed: 0,
        }
    }

    #[test]
    fn a_site_with_too_few_held_out_records_declines_without_saying_how_many() {
        let e = check_held_out(4, &config()).unwrap_err();
        assert!(
            e.contains("too few evaluation records") && e.contains("min_records (5)"),
            "{e}"
        );
        assert!(!e.contains(" 4 "), "{e}");
        assert!(check_held_out(5, &config()).is_ok());
        let e = check_held_out(1001, &config()).unwrap_err();
        assert!(e.contains("max_records_per_site (1000)"), "{e}");
    }

    #[test]
    fn the_release_is_the_models_metrics_on_the_held_out_records_plus_noise() {
        // A logistic regression that predicts class 1 exactly when x0 > 0.
        let spec: ModelSpec = serde_json::from_value(serde_json::json!(
            {"kind": "logistic_regression", "input_dim": 2, "num_classes": 2}
        ))
        .unwrap();
        let weights = vec![-5.0, 0.0, 5.0, 0.0, 0.0, 0.0];
        let n = 400;
        let records = Dataset {
            feature_names: vec!["a".into(), "b".into()],
            features: (0..n)
                .flat_map(|i| [if i % 4 == 0 { -1.0 } else { 1.0 }, 0.0])
                .collect(),
            // Every fourth record is predicted wrong (x0 = -1 predicts class 0, its label is 1).
            labels: vec![1; n],
        };
        let rho = 50.0; // tiny noise: the sums themselves show
        let got = noisy_metrics(&spec, &weights, &records, &config(), rho).unwrap();
        assert_eq!(got.len(), VECTOR_LEN);
        let noise = sensitivity(3.0) / (2.0 * rho).sqrt();
        assert!((f64::from(got[0]) - 300.0).abs() < 6.0 * noise, "{got:?}");
        assert!((f64::from(got[1]) - 400.0).abs() < 6.0 * noise, "{got:?}");
        // Right records lose ln(1 + e^-10) ≈ 0; wrong ones 10, clamped to 3.
        assert!(
            (f64::from(got[2]) - 300.0).abs() < 6.0 * noise + 1.0,
            "{got:?}"
        );
        let bad = Dataset {
            labels: vec![2; n],
            ..records
        };
        assert!(noisy_metrics(&spec, &weights, &bad, &config(), rho).is_err());
        // The split the site evaluates on is its held-out part: every one of those records hashes there.
        assert_eq!(
            holdout_part(0, &[1.0, 0.0], 1, 0.5),
            holdout_part(0, &[1.0, 0.0], 1, 0.5)
        );
    }
}
