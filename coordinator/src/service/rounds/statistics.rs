//! The study's statistics round: the same secure aggregation as a training round, over each site's noisy vector
//! of 2·d + 1 clamped feature sums (`confide_common::statistics`) instead of a model update. The coordinator sees
//! only the noisy totals; the mean and std it derives from them (post-processing) are published with a model
//! version of unchanged weights and carried on by every later version, so agents standardise with them.
//!
//! A study that declares `preprocessing.statistics_round` runs it as its first round; every later round trains.

use confide_common::api::RoundPurpose;
use confide_common::dp::{DataPartition, PrivacyEvent};
use confide_common::statistics::{self, PublishedStatistics, ReleaseParams};

use super::RoundError;
use super::publication::Completed;
use crate::service::Coordinator;
use crate::service::studies::Study;
use crate::store::ModelVersionRow;

/// Standard deviations of one site's noise the secure-aggregation range leaves room for beyond the largest sums.
pub(super) const NOISE_MARGIN_STDS: f64 = 6.0;

/// What the next round computes and asks of every site.
#[derive(Debug, Clone)]
pub struct RoundKind {
    pub purpose: RoundPurpose,
    /// Charged to every site whose vector is in the aggregate.
    pub planned_events: Vec<PrivacyEvent>,
    /// The part of each site's dataset the round uses (its charge composes in parallel with the other part's).
    pub partition: DataPartition,
    /// Values each site sends (before the weight coordinate).
    pub values: usize,
    /// Each value is clipped to [-clip_range, clip_range] when quantised into the ring.
    pub clip_range: f64,
}

/// The statistics round's release parameters, if the study declares one.
pub fn release_params(study: &Study) -> Result<Option<ReleaseParams>, RoundError> {
    let Some(p) = &study.config.preprocessing else {
        return Ok(None);
    };
    let Some(round) = p.statistics_round else {
        return Ok(None);
    };
    ReleaseParams::for_target(
        p.feature_ranges.len(),
        round.epsilon,
        study.config.budget.delta,
    )
    .map(Some)
    .map_err(|e| RoundError::Invalid(format!("statistics round: {e}")))
}

/// The next round of `study` whose latest model version is `latest`: its statistics round while the study
/// declares one and has published no statistics yet, else a training round.
pub fn next_round(
    study: &Study,
    latest: &ModelVersionRow,
    training: Vec<PrivacyEvent>,
) -> Result<RoundKind, RoundError> {
    let training = RoundKind {
        purpose: RoundPurpose::Training,
        planned_events: training,
        partition: crate::service::privacy::training_partition(&study.config),
        values: study.num_parameters,
        clip_range: study.clip_range(),
    };
    if latest.statistics_json.is_some() {
        return Ok(training);
    }
    let (Some(params), Some(round)) = (
        release_params(study)?,
        study
            .config
            .preprocessing
            .as_ref()
            .and_then(|p| p.statistics_round),
    ) else {
        return Ok(training);
    };
    Ok(RoundKind {
        purpose: RoundPurpose::Statistics,
        planned_events: vec![params.event()],
        partition: DataPartition::All,
        values: statistics::vector_len(params.features),
        // Every |Σz| and Σz² is at most the site's record count, itself at most max_records_per_site.
        clip_range: f64::from(round.max_records_per_site) + NOISE_MARGIN_STDS * params.noise_std(),
    })
}

/// The model version a completed statistics round publishes: the base weights and optimiser state unchanged, with
/// the statistics derived from the noisy totals — or why there is none.
pub(super) async fn published(
    ctx: &Coordinator,
    c: &Completed<'_>,
) -> Result<Result<(Vec<u8>, Option<Vec<u8>>, String), String>, RoundError> {
    let (round, study) = (c.round, c.study);
    let Some(preprocessing) = &study.config.preprocessing else {
        return Ok(Err("the study declares no feature ranges".into()));
    };
    let Some(params) = release_params(study)? else {
        return Ok(Err("the study declares no statistics round".into()));
    };
    let totals = match c.plan.quantisation.dequantize(c.sum) {
        Ok(d) => d.values,
        Err(e) => return Ok(Err(format!("dequantisation failed: {e}"))),
    };
    let scaling = match statistics::derive(preprocessing, &totals) {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("statistics: {e}"))),
    };
    let published = PublishedStatistics {
        round_id: round.id,
        scaling,
        epsilon: preprocessing
            .statistics_round
            .map(|r| r.epsilon)
            .unwrap_or_default(),
        delta: study.config.budget.delta,
        noise_std_per_site: params.noise_std(),
        sites: u32::try_from(c.in_aggregate.len()).unwrap_or(u32::MAX),
        noisy_record_count: totals.last().copied().unwrap_or_default(),
    };
    let json = serde_json::to_string(&published).map_err(RoundError::internal)?;
    let (weights, _) = ctx
        .store
        .model_weights(round.study_id, round.base_version)
        .await?;
    let optimizer_state = ctx
        .store
        .optimizer_state(round.study_id, round.base_version)
        .await?;
    Ok(Ok((weights, optimizer_state, json)))
}
