//! `GET /v1/studies/{id}/metrics`: the privacy-utility curve of a study from its federated evaluation rounds.

use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// One evaluated model version in `GET /v1/studies/{id}/metrics`: post-processing of the noisy totals of an
/// evaluation round, with the noise level that follows from public parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ModelEvaluation {
    /// The evaluation round.
    pub round_id: i64,
    /// The model version it evaluated.
    pub model_version: i64,
    /// Training rounds completed when that version was published.
    pub training_rounds: i64,
    /// Noisy correct ÷ noisy count, clamped to [0, 1].
    pub accuracy: f64,
    /// Standard deviation of the accuracy's DP noise (first order).
    pub accuracy_std: f64,
    /// Mean cross-entropy loss, each record's clamped to [0, loss_max].
    pub loss: f64,
    /// Standard deviation of the loss's DP noise (first order).
    pub loss_std: f64,
    /// The noisy number of evaluation records of all sites.
    pub evaluation_records: f64,
    /// Sites in the aggregate.
    pub sites: u32,
    /// Noise standard deviation on each coordinate of one site's release.
    pub noise_std_per_site: f64,
    /// ε of each site's release (at the study's δ).
    pub release_epsilon: f64,
    /// The largest ε (PLD over its whole ledger, training and evaluation parts composed in parallel) of any site
    /// charged for this evaluation, after it.
    pub epsilon_spent: f64,
    /// When the coordinator stored it (milliseconds since the Unix epoch).
    pub created_at_ms: i64,
}

/// `GET /v1/studies/{id}/metrics`: the privacy-utility curve of a study, one entry per evaluated model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StudyMetrics {
    /// The study.
    pub study_id: i64,
    /// The study's δ, at which every ε here is stated.
    pub delta: f64,
    /// One entry per evaluated model version, oldest first.
    pub evaluations: Vec<ModelEvaluation>,
}
