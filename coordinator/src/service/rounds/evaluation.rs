//! Evaluation rounds: the same secure aggregation as a training round, over each site's noisy vector of three sums
//! on its held-out records (correct predictions, count, clamped loss: `confide_common::evaluation`) instead of a
//! model update. The coordinator sees only the noisy totals; it stores them with the evaluated model version and
//! the public parameters their noise follows from, and publishes no new weights. The charge goes to each site's
//! evaluation part, which composes in parallel with its training part.
//!
//! When: after a training round published a model version that the study's schedule picks and that no
//! evaluation round was started for yet (each version is evaluated at most once, so an aborted evaluation is not
//! retried forever). Evaluation rounds do not count against the study's `rounds`.

use confide_common::api::{ModelEvaluation, RoundPurpose, StudyMetrics};
use confide_common::dp::DataPartition;
use confide_common::evaluation::{self, EvaluationRelease, EvaluationTotals};

use super::publication::Completed;
use super::statistics::{NOISE_MARGIN_STDS, RoundKind};
use super::{RoundError, RoundPlan};
use crate::service::Coordinator;
use crate::service::studies::{self, Study};
use crate::store::{EvaluationRow, ModelVersionRow, NewEvaluation};

/// Training rounds a study runs: its `rounds`, less the statistics round (which counts among them).
pub fn training_rounds(study: &Study) -> u32 {
    let statistics = study
        .config
        .preprocessing
        .as_ref()
        .is_some_and(|p| p.statistics_round.is_some());
    study.config.rounds.saturating_sub(u32::from(statistics))
}

/// The evaluation release of a study, if it declares evaluation.
pub fn release(study: &Study) -> Result<Option<EvaluationRelease>, RoundError> {
    study
        .config
        .evaluation
        .as_ref()
        .map(|e| EvaluationRelease::for_config(e, study.config.budget.delta))
        .transpose()
        .map_err(|e| RoundError::Invalid(format!("evaluation: {e}")))
}

/// An evaluation round of the latest model version if the study's schedule asks for one now, else `next`.
pub async fn next_round(
    ctx: &Coordinator,
    study: &Study,
    latest: &ModelVersionRow,
    next: RoundKind,
) -> Result<RoundKind, RoundError> {
    let (Some(config), Some(release)) = (study.config.evaluation, release(study)?) else {
        return Ok(next);
    };
    // Only a model a training round published is evaluated (not version 0, not the statistics round's).
    let Some(round_id) = latest.round_id else {
        return Ok(next);
    };
    let round = ctx.store.get_round(round_id).await?;
    if RoundPlan::parse(&round)?.purpose != RoundPurpose::Training {
        return Ok(next);
    }
    if ctx
        .store
        .versions_with_evaluation_rounds(study.id)
        .await?
        .contains(&latest.version)
    {
        return Ok(next);
    }
    let trained =
        u32::try_from(ctx.store.completed_training_rounds(study.id).await?).unwrap_or(u32::MAX);
    if !config.schedule.evaluates(trained, training_rounds(study)) {
        return Ok(next);
    }
    let most = f64::from(config.max_records_per_site) * config.loss_max.max(1.0);
    Ok(RoundKind {
        purpose: RoundPurpose::Evaluation,
        planned_events: vec![release.event()],
        partition: DataPartition::Evaluation,
        values: evaluation::VECTOR_LEN,
        clip_range: most + NOISE_MARGIN_STDS * release.noise_std(),
    })
}

/// What a completed evaluation round stores (its `epsilon_spent` is filled in with the charges), or why there is
/// nothing to store.
pub(super) async fn measured(
    ctx: &Coordinator,
    c: &Completed<'_>,
) -> Result<Result<NewEvaluation, String>, RoundError> {
    let Some(release) = release(c.study)? else {
        return Ok(Err("the study declares no evaluation".into()));
    };
    let dequantised = match c.plan.quantisation.dequantize(c.sum) {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("dequantisation failed: {e}"))),
    };
    let inputs = c.in_aggregate.len() as u64;
    if dequantised.total_weight != inputs {
        return Ok(Err(format!(
            "the aggregate's weight coordinate is {}, but {inputs} inputs were aggregated (each must carry weight \
             1); nothing stored or charged",
            dequantised.total_weight
        )));
    }
    let sites = u32::try_from(c.in_aggregate.len()).unwrap_or(u32::MAX);
    let totals = match EvaluationTotals::from_vector(&dequantised.values, sites, &release) {
        Ok(t) => t,
        Err(e) => return Ok(Err(format!("evaluation: {e}"))),
    };
    let training_rounds = ctx.store.completed_training_rounds(c.study.id).await?;
    Ok(Ok(NewEvaluation {
        model_version: c.round.base_version,
        training_rounds,
        correct: totals.correct,
        record_count: totals.count,
        loss_sum: totals.loss_sum,
        sites: i64::from(sites),
        noise_std_per_site: totals.noise_std_per_site,
        loss_max: totals.loss_max,
        release_epsilon: c
            .study
            .config
            .evaluation
            .map(|e| e.epsilon)
            .unwrap_or_default(),
        epsilon_spent: 0.0,
    }))
}

/// The totals of a stored evaluation.
fn totals(row: &EvaluationRow) -> EvaluationTotals {
    EvaluationTotals {
        correct: row.correct,
        count: row.record_count,
        loss_sum: row.loss_sum,
        sites: u32::try_from(row.sites).unwrap_or(u32::MAX),
        noise_std_per_site: row.noise_std_per_site,
        loss_max: row.loss_max,
    }
}

/// One stored evaluation as the API shows it (accuracy, loss and their noise are post-processing).
pub fn model_evaluation(row: &EvaluationRow) -> ModelEvaluation {
    let t = totals(row);
    ModelEvaluation {
        round_id: row.round_id,
        model_version: row.model_version,
        training_rounds: row.training_rounds,
        accuracy: t.accuracy(),
        accuracy_std: t.accuracy_std(),
        loss: t.loss(),
        loss_std: t.loss_std(),
        evaluation_records: row.record_count,
        sites: t.sites,
        noise_std_per_site: row.noise_std_per_site,
        release_epsilon: row.release_epsilon,
        epsilon_spent: row.epsilon_spent,
        created_at_ms: row.created_at,
    }
}

/// `GET /v1/studies/{id}/metrics`.
pub async fn metrics(ctx: &Coordinator, study_id: i64) -> Result<StudyMetrics, RoundError> {
    let study = studies::load(ctx, study_id).await?;
    let rows = ctx.store.study_evaluations(study_id).await?;
    Ok(StudyMetrics {
        study_id,
        delta: study.config.budget.delta,
        evaluations: rows.iter().map(model_evaluation).collect(),
    })
}

/// Sets the model gauges of a study to its latest evaluation (a view: nothing to do without one).
pub fn set_gauges(ctx: &Coordinator, study_id: i64, latest: &ModelEvaluation) {
    let sid = study_id.to_string();
    ctx.metrics
        .model_accuracy
        .with_label_values(&[sid.as_str()])
        .set(latest.accuracy);
    ctx.metrics
        .model_loss
        .with_label_values(&[sid.as_str()])
        .set(latest.loss);
}
