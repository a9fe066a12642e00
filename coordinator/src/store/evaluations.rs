//! The noisy metrics of evaluation rounds (`model_evaluations`), one row per evaluated model version. Written only
//! by [`Store::publish_round`], in the transaction that charges the sites and completes the round.

use super::{Store, StoreResult};

/// What an evaluation round stores: the noisy totals and the public parameters their noise follows from.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvaluation {
    pub model_version: i64,
    /// Training rounds completed when the evaluated version was published.
    pub training_rounds: i64,
    pub correct: f64,
    pub record_count: f64,
    pub loss_sum: f64,
    pub sites: i64,
    pub noise_std_per_site: f64,
    pub loss_max: f64,
    pub release_epsilon: f64,
    /// The largest ε after this round's charge of any site in the aggregate.
    pub epsilon_spent: f64,
}

/// A stored evaluation.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EvaluationRow {
    pub study_id: i64,
    pub round_id: i64,
    pub model_version: i64,
    pub training_rounds: i64,
    pub correct: f64,
    pub record_count: f64,
    pub loss_sum: f64,
    pub sites: i64,
    pub noise_std_per_site: f64,
    pub loss_max: f64,
    pub release_epsilon: f64,
    pub epsilon_spent: f64,
    pub created_at: i64,
}

impl Store {
    pub(super) async fn insert_evaluation(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        study_id: i64,
        round_id: i64,
        e: &NewEvaluation,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO model_evaluations (study_id, round_id, model_version, training_rounds, correct, record_count,
                                            loss_sum, sites, noise_std_per_site, loss_max, release_epsilon,
                                            epsilon_spent, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(study_id)
        .bind(round_id)
        .bind(e.model_version)
        .bind(e.training_rounds)
        .bind(e.correct)
        .bind(e.record_count)
        .bind(e.loss_sum)
        .bind(e.sites)
        .bind(e.noise_std_per_site)
        .bind(e.loss_max)
        .bind(e.release_epsilon)
        .bind(e.epsilon_spent)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|err| {
            super::map_unique(
                err,
                &format!("model version {} is already evaluated", e.model_version),
            )
        })?;
        Ok(())
    }

    /// A study's evaluations in model-version order.
    pub async fn study_evaluations(&self, study_id: i64) -> StoreResult<Vec<EvaluationRow>> {
        Ok(sqlx::query_as(
            "SELECT study_id, round_id, model_version, training_rounds, correct, record_count, loss_sum, sites,
                    noise_std_per_site, loss_max, release_epsilon, epsilon_spent, created_at
             FROM model_evaluations WHERE study_id = $1 ORDER BY model_version",
        )
        .bind(study_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Model versions of a study that an evaluation round was started for (whatever its outcome): each is
    /// evaluated at most once, so a version whose evaluation aborted is not retried forever.
    pub async fn versions_with_evaluation_rounds(&self, study_id: i64) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT base_version FROM rounds WHERE study_id = $1 AND purpose = $2 ORDER BY base_version",
        )
        .bind(study_id)
        .bind(confide_common::api::RoundPurpose::Evaluation.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Training rounds a study completed (each published one model version).
    pub async fn completed_training_rounds(&self, study_id: i64) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM rounds WHERE study_id = $1 AND outcome = $2 AND purpose = $3",
        )
        .bind(study_id)
        .bind(confide_common::api::RoundOutcome::Completed.as_str())
        .bind(confide_common::api::RoundPurpose::Training.as_str())
        .fetch_one(&self.pool)
        .await?)
    }
}
