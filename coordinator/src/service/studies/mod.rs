//! Studies: creation under their [`rules`], what an operator reads about them (status, participants, model versions,
//! privacy report), enrolment tokens and enrolment.

mod rules;

pub use rules::{
    MAX_NAME_LEN, MAX_PARTICIPANTS, MAX_ROUNDS, MIN_AGGREGATE, Study, ValidatedStudy,
    check_accounting, validate, validate_name, warnings,
};

use std::borrow::Cow;

use confide_common::api::{
    CreateEnrolmentTokenRequest, CreateStudyRequest, EnrolRequest, EnrolResponse,
    EnrolmentTokenInfo, EnrolmentTokenResponse, ModelVersionInfo, ParticipantInfo,
    ParticipantPrivacy, PrivacyPlanRequest, PrivacyReport, RoundOutcome, RoundPurpose, StudyInfo,
};
use confide_common::dp::AccountantKind;
use confide_common::plan::planned_steps;
use confide_common::secagg::IdentityPublicKey;
use confide_common::statistics::PublishedStatistics;

use super::Coordinator;
use super::privacy::{self, PrivacyError};
use crate::store::{EnrolmentTokenRow, ParticipantRow, StoreError, StudyRow, now_ms};

/// Default and longest validity of an enrolment token.
const DEFAULT_TOKEN_SECS: u64 = 7 * 86_400;
const MAX_TOKEN_SECS: u64 = 365 * 86_400;

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The request breaks a rule of studies; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// Stored data this version cannot read, or an encoding that should not fail did.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StudyError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

/// The statistics stored with a model version (written by this coordinator; unreadable is an internal error).
pub fn parse_statistics(json: Option<&str>) -> Result<Option<PublishedStatistics>, StudyError> {
    json.map(serde_json::from_str)
        .transpose()
        .map_err(|e| StudyError::internal(format!("stored statistics unreadable: {e}")))
}

/// A stored study, parsed.
pub async fn load(ctx: &Coordinator, study_id: i64) -> Result<Study, StudyError> {
    Study::from_row(&ctx.store.get_study(study_id).await?)
}

/// What the operator sees of a study: its configuration, progress and warnings.
pub async fn info(ctx: &Coordinator, row: &StudyRow) -> Result<StudyInfo, StudyError> {
    let study = Study::from_row(row)?;
    let latest = ctx.store.latest_model_version(row.id).await?;
    let rounds = ctx.store.list_rounds(row.id).await?;
    let warnings = warnings(&study.config);
    let (schedule, run) = super::schedule::run_info(&ctx.store.study_run(row.id).await?)?;
    Ok(StudyInfo {
        id: row.id,
        config: study.config,
        created_at_ms: row.created_at,
        latest_model_version: latest.version,
        // The study's rounds: evaluation rounds (which publish no model) do not count against them.
        rounds_completed: rounds
            .iter()
            .filter(|r| r.outcome == Some(RoundOutcome::Completed))
            .filter(|r| {
                crate::service::rounds::RoundPlan::parse(r)
                    .map_or(true, |p| p.purpose != RoundPurpose::Evaluation)
            })
            .count() as i64,
        active_round: rounds.iter().find(|r| r.outcome.is_none()).map(|r| r.id),
        warnings,
        statistics: parse_statistics(latest.statistics_json.as_deref())?,
        schedule,
        run,
    })
}

/// The request with σ calibrated when it gives `dp.target_epsilon` instead of `dp.noise_multiplier` (the target is
/// kept with the study, to show where σ came from): the smallest σ whose `rounds` rounds stay within the target
/// (PLD, [`privacy::plan`]). The target may not exceed the budget: a study may not plan to overspend.
pub async fn calibrated(
    req: &CreateStudyRequest,
) -> Result<Cow<'_, CreateStudyRequest>, StudyError> {
    let Some(target) = req.dp.target_epsilon else {
        return Ok(Cow::Borrowed(req));
    };
    if req.dp.noise_multiplier != 0.0 {
        return Err(StudyError::Invalid(
            "give dp.noise_multiplier or dp.target_epsilon, not both (with a target the coordinator calibrates σ)"
                .into(),
        ));
    }
    check_accounting(req)?;
    if !(target.is_finite() && target > 0.0) {
        return Err(StudyError::Invalid(format!(
            "dp.target_epsilon must be a finite number > 0, got {target}"
        )));
    }
    if target > req.budget.epsilon {
        return Err(StudyError::Invalid(format!(
            "dp.target_epsilon = {target} is above budget.epsilon = {}: a study may not plan to spend more than a \
             participant's budget; lower the target or raise the budget",
            req.budget.epsilon
        )));
    }
    let plan = privacy::plan(PrivacyPlanRequest {
        target_epsilon: target,
        delta: req.budget.delta,
        sampling_rate: req.dp.sampling_rate,
        steps_per_round: planned_steps(&req.dp),
        rounds: req.rounds,
    })
    .await
    .map_err(|e| match e {
        PrivacyError::Invalid(m) => StudyError::Invalid(format!("dp.target_epsilon: {m}")),
        PrivacyError::Unaccountable(m) => {
            StudyError::Invalid(format!("the study's privacy cannot be accounted: {m}"))
        }
        other => other.into(),
    })?;
    let mut req = req.clone();
    req.dp.noise_multiplier = plan.noise_multiplier;
    Ok(Cow::Owned(req))
}

/// Creates a study: σ calibrated if it gives a target ε, its rules checked (refused when one round alone would
/// spend more than the budget), stored with its initial model as version 0, its counters created at 0.
pub async fn create(ctx: &Coordinator, req: &CreateStudyRequest) -> Result<StudyInfo, StudyError> {
    let req = calibrated(req).await?;
    let valid = validate(&req, ctx.limits.model_bytes)?;
    let config = &valid.config;
    privacy::check_first_round(config)
        .await
        .map_err(|e| match e {
            PrivacyError::Unaccountable(e) => {
                StudyError::Invalid(format!("the study's privacy cannot be accounted: {e}"))
            }
            PrivacyError::OverBudget(m) => StudyError::Invalid(m),
            other => other.into(),
        })?;
    let config_json = serde_json::to_string(config).map_err(StudyError::internal)?;
    let row = ctx
        .store
        .create_study(&config.name, &config_json, &valid.weights)
        .await?;
    tracing::info!(study = row.id, name = %row.name, "study created");
    for warning in warnings(config) {
        tracing::warn!(study = row.id, %warning, "study created with a warning");
    }
    ctx.metrics.init_study(row.id);
    info(ctx, &row).await
}

pub async fn list(ctx: &Coordinator) -> Result<Vec<StudyInfo>, StudyError> {
    let mut out = Vec::new();
    for row in ctx.store.list_studies().await? {
        out.push(info(ctx, &row).await?);
    }
    Ok(out)
}

pub async fn get(ctx: &Coordinator, study_id: i64) -> Result<StudyInfo, StudyError> {
    info(ctx, &ctx.store.get_study(study_id).await?).await
}

/// A one-time enrolment token for a hospital (shown once, stored hashed).
pub async fn create_enrolment_token(
    ctx: &Coordinator,
    study_id: i64,
    req: &CreateEnrolmentTokenRequest,
) -> Result<EnrolmentTokenResponse, StudyError> {
    validate_name(&req.label, "label")?;
    let secs = req.expires_in_secs.unwrap_or(DEFAULT_TOKEN_SECS);
    if secs == 0 || secs > MAX_TOKEN_SECS {
        return Err(StudyError::Invalid(format!(
            "expires_in_secs must be in 1..={MAX_TOKEN_SECS}"
        )));
    }
    let expires_at_ms = now_ms() + (secs as i64) * 1000;
    let (id, token) = ctx
        .store
        .create_enrolment_token(study_id, &req.label, expires_at_ms)
        .await?;
    Ok(EnrolmentTokenResponse {
        id,
        token,
        study_id,
        expires_at_ms,
    })
}

/// Enrols a participant with a one-time token; its credential is returned once (stored hashed).
pub async fn enrol(ctx: &Coordinator, req: &EnrolRequest) -> Result<EnrolResponse, StudyError> {
    validate_name(&req.name, "name")?;
    if let Some(key) = &req.identity_key {
        key.verifying_key().map_err(|e| {
            StudyError::Invalid(format!(
                "identity_key: {e}; send the 32-byte Ed25519 public key of the site's identity (base64)"
            ))
        })?;
    }
    let key = req.identity_key.map(|k| k.0);
    let (p, credential) = ctx
        .store
        .enrol(&req.token, &req.name, key.as_ref().map(|k| &k[..]))
        .await?;
    tracing::info!(
        participant = p.id,
        study = p.study_id,
        "participant enrolled"
    );
    match load(ctx, p.study_id).await {
        Ok(study) => privacy::refresh_gauges(ctx, p.study_id, &study.config.budget).await,
        Err(e) => {
            tracing::warn!(study = p.study_id, error = %e, "could not refresh privacy gauges")
        }
    }
    Ok(EnrolResponse {
        participant_id: p.id,
        study_id: p.study_id,
        credential,
    })
}

pub async fn participants(
    ctx: &Coordinator,
    study_id: i64,
) -> Result<Vec<ParticipantInfo>, StudyError> {
    ctx.store.get_study(study_id).await?;
    Ok(ctx
        .store
        .list_participants(study_id)
        .await?
        .into_iter()
        .map(participant_info)
        .collect())
}

/// The API view of a participant: the fingerprint of its identity key, never the key's bytes.
fn participant_info(p: ParticipantRow) -> ParticipantInfo {
    ParticipantInfo {
        id: p.id,
        study_id: p.study_id,
        name: p.name,
        enrolled_at_ms: p.enrolled_at,
        revoked_at_ms: p.revoked_at,
        identity_fingerprint: p
            .identity_key
            .as_deref()
            .and_then(identity_key)
            .map(|k| k.fingerprint()),
        disabled: p.disabled_at.is_some(),
        last_seen_ms: p.last_seen_at,
    }
}

/// A stored identity key, if it is 32 bytes (the store only keeps what enrolment checked).
pub fn identity_key(bytes: &[u8]) -> Option<IdentityPublicKey> {
    bytes.try_into().ok().map(IdentityPublicKey)
}

/// Revokes a participant's credential: refused (401) at once by every coordinator process sharing the database,
/// and no longer selected for rounds. A round it is in continues without it (it counts as a dropout).
pub async fn revoke_participant(
    ctx: &Coordinator,
    study_id: i64,
    participant_id: i64,
) -> Result<ParticipantInfo, StudyError> {
    ctx.store.get_study(study_id).await?;
    let p = ctx
        .store
        .revoke_participant(study_id, participant_id)
        .await?;
    tracing::info!(
        participant = p.id,
        study = study_id,
        "participant credential revoked"
    );
    Ok(participant_info(p))
}

/// The operator disables a participant: it is no longer selected for rounds (a round under way goes on); its
/// ledger and its charges stay.
pub async fn disable_participant(
    ctx: &Coordinator,
    study_id: i64,
    participant_id: i64,
) -> Result<ParticipantInfo, StudyError> {
    ctx.store.get_study(study_id).await?;
    let p = ctx
        .store
        .disable_participant(study_id, participant_id)
        .await?;
    tracing::warn!(
        participant = participant_id,
        study = study_id,
        "participant disabled by the operator"
    );
    Ok(participant_info(p))
}

fn enrolment_token_info(t: EnrolmentTokenRow) -> EnrolmentTokenInfo {
    EnrolmentTokenInfo {
        id: t.id,
        study_id: t.study_id,
        label: t.label,
        created_at_ms: t.created_at,
        expires_at_ms: t.expires_at,
        used_at_ms: t.used_at,
        participant_id: t.participant_id,
        revoked_at_ms: t.revoked_at,
    }
}

/// A study's enrolment tokens (never their secrets).
pub async fn enrolment_tokens(
    ctx: &Coordinator,
    study_id: i64,
) -> Result<Vec<EnrolmentTokenInfo>, StudyError> {
    ctx.store.get_study(study_id).await?;
    Ok(ctx
        .store
        .list_enrolment_tokens(study_id)
        .await?
        .into_iter()
        .map(enrolment_token_info)
        .collect())
}

/// Revokes an unused enrolment token (409 if it was already spent: revoke the participant instead).
pub async fn revoke_enrolment_token(
    ctx: &Coordinator,
    study_id: i64,
    token_id: i64,
) -> Result<EnrolmentTokenInfo, StudyError> {
    ctx.store.get_study(study_id).await?;
    let t = ctx.store.revoke_enrolment_token(study_id, token_id).await?;
    tracing::info!(token = t.id, study = study_id, "enrolment token revoked");
    Ok(enrolment_token_info(t))
}

pub async fn model_versions(
    ctx: &Coordinator,
    study_id: i64,
) -> Result<Vec<ModelVersionInfo>, StudyError> {
    ctx.store.get_study(study_id).await?;
    ctx.store
        .list_model_versions(study_id)
        .await?
        .into_iter()
        .map(|m| {
            Ok(ModelVersionInfo {
                statistics: parse_statistics(m.statistics_json.as_deref())?,
                study_id: m.study_id,
                version: m.version,
                round_id: m.round_id,
                sha256: m.sha256,
                size_bytes: m.size_bytes,
                created_at_ms: m.created_at,
            })
        })
        .collect::<Result<_, StudyError>>()
}

/// A model version's safetensors bytes and sha256 (a study that does not exist is reported as such first).
pub async fn model_weights(
    ctx: &Coordinator,
    study_id: i64,
    version: i64,
) -> Result<(Vec<u8>, String), StudyError> {
    ctx.store.get_study(study_id).await?;
    Ok(ctx.store.model_weights(study_id, version).await?)
}

/// ε spent (PLD over each participant's whole ledger) and budget, per participant.
pub async fn privacy_report(ctx: &Coordinator, study_id: i64) -> Result<PrivacyReport, StudyError> {
    let study = load(ctx, study_id).await?;
    let participants = privacy::privacy_of(&ctx.store, study_id, &study.config.budget)
        .await?
        .into_iter()
        .map(|p| ParticipantPrivacy {
            participant_id: p.participant.id,
            name: p.participant.name,
            epsilon_spent: p.epsilon_spent,
            epsilon_budget: p.epsilon_budget,
            rounds_charged: p.rounds_charged as i64,
        })
        .collect();
    Ok(PrivacyReport {
        study_id,
        delta: study.config.budget.delta,
        accountant: AccountantKind::Pld,
        participants,
    })
}
