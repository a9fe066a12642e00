//! Operator API (bearer operator token): studies, enrolment tokens, rounds, model versions, privacy report.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use confide_common::api::{
    AbortRoundRequest, CreateEnrolmentTokenRequest, CreateStudyRequest, EnrolmentTokenResponse,
    ErrorBody, ModelVersionInfo, ParticipantInfo, ParticipantPrivacy, PrivacyReport, RoundInfo,
    StartRoundRequest, StudyInfo,
};

use confide_common::dp::{AccountantKind, PrivacyLedger};
use confide_common::plan;

use super::{AppState, Operator, created};
use crate::budget;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::rounds;
use crate::store::{StudyRow, now_ms};
use crate::study::{self, Study};

/// Default and longest validity of an enrolment token.
const DEFAULT_TOKEN_SECS: u64 = 7 * 86_400;
const MAX_TOKEN_SECS: u64 = 365 * 86_400;

pub(crate) async fn study_info(state: &AppState, row: &StudyRow) -> Result<StudyInfo, ApiError> {
    let study = Study::from_row(row)?;
    let latest = state.store.latest_model_version(row.id).await?;
    let rounds = state.store.list_rounds(row.id).await?;
    let warnings = study::warnings(&study.config);
    Ok(StudyInfo {
        id: row.id,
        config: study.config,
        created_at_ms: row.created_at,
        latest_model_version: latest.version,
        rounds_completed: rounds
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("completed"))
            .count() as i64,
        active_round: rounds.iter().find(|r| r.outcome.is_none()).map(|r| r.id),
        warnings,
    })
}

/// Create a study: model spec and initial weights (uploaded, or generated from `initial_weights_seed`), DP, SecAgg,
/// budget. Refused (422) when one round alone would spend more than the budget; `warnings` in the answer say what
/// is likely to hurt the study (e.g. a quantisation range that clamps updates).
#[utoipa::path(post, path = "/v1/studies", tag = "operator", request_body = CreateStudyRequest,
    security(("operator_token" = [])),
    responses((status = 201, body = StudyInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_study(
    State(state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<CreateStudyRequest>,
) -> Result<Response, ApiError> {
    let valid = study::validate(&req, state.limits.model_bytes)?;
    let config = &valid.config;
    let first_round = budget::epsilon_with(
        PrivacyLedger::new(),
        plan::planned_events(&config.dp),
        config.budget.delta,
    )
    .await
    .map_err(|e| {
        ApiError::Unprocessable(format!("the study's privacy cannot be accounted: {e}"))
    })?;
    if first_round > config.budget.epsilon {
        return Err(ApiError::Unprocessable(format!(
            "one round of this study alone would spend ε = {first_round:.4} at δ = {}, over the budget ε = {}: \
             raise dp.noise_multiplier, lower dp.sampling_rate or dp.local_epochs, or raise the budget",
            config.budget.delta, config.budget.epsilon
        )));
    }
    let config_json = serde_json::to_string(config).map_err(ApiError::internal)?;
    let row = state
        .store
        .create_study(&config.name, &config_json, &valid.weights)
        .await?;
    tracing::info!(study = row.id, name = %row.name, "study created");
    for warning in study::warnings(config) {
        tracing::warn!(study = row.id, %warning, "study created with a warning");
    }
    state.metrics.init_study(row.id);
    Ok(created(study_info(&state, &row).await?))
}

#[utoipa::path(get, path = "/v1/studies", tag = "operator", security(("operator_token" = [])),
    responses((status = 200, body = Vec<StudyInfo>), (status = 401, body = ErrorBody)))]
pub async fn list_studies(
    State(state): State<AppState>,
    _op: Operator,
) -> Result<ApiJson<Vec<StudyInfo>>, ApiError> {
    let mut out = Vec::new();
    for row in state.store.list_studies().await? {
        out.push(study_info(&state, &row).await?);
    }
    Ok(ApiJson(out))
}

#[utoipa::path(get, path = "/v1/studies/{study_id}", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)),
    responses((status = 200, body = StudyInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_study(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<StudyInfo>, ApiError> {
    let row = state.store.get_study(study_id).await?;
    Ok(ApiJson(study_info(&state, &row).await?))
}

/// Create a one-time enrolment token for a hospital; the token is shown once.
#[utoipa::path(post, path = "/v1/studies/{study_id}/enrolment-tokens", tag = "operator",
    security(("operator_token" = [])), params(("study_id" = i64, Path)), request_body = CreateEnrolmentTokenRequest,
    responses((status = 201, body = EnrolmentTokenResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_enrolment_token(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
    ApiJson(req): ApiJson<CreateEnrolmentTokenRequest>,
) -> Result<Response, ApiError> {
    study::validate_name(&req.label, "label")?;
    let secs = req.expires_in_secs.unwrap_or(DEFAULT_TOKEN_SECS);
    if secs == 0 || secs > MAX_TOKEN_SECS {
        return Err(ApiError::Unprocessable(format!(
            "expires_in_secs must be in 1..={MAX_TOKEN_SECS}"
        )));
    }
    let expires_at_ms = now_ms() + (secs as i64) * 1000;
    let token = state
        .store
        .create_enrolment_token(study_id, &req.label, expires_at_ms)
        .await?;
    Ok(created(EnrolmentTokenResponse {
        token,
        study_id,
        expires_at_ms,
    }))
}

#[utoipa::path(get, path = "/v1/studies/{study_id}/participants", tag = "operator",
    security(("operator_token" = [])), params(("study_id" = i64, Path)),
    responses((status = 200, body = Vec<ParticipantInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_participants(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<Vec<ParticipantInfo>>, ApiError> {
    state.store.get_study(study_id).await?;
    let out = state
        .store
        .list_participants(study_id)
        .await?
        .into_iter()
        .map(|p| ParticipantInfo {
            id: p.id,
            study_id: p.study_id,
            name: p.name,
            enrolled_at_ms: p.enrolled_at,
        })
        .collect();
    Ok(ApiJson(out))
}

/// Start the study's next round. Participants whose planned spend would exceed their budget are not selected; if
/// fewer than `min_participants` remain the round is refused (422) with the reason.
#[utoipa::path(post, path = "/v1/studies/{study_id}/rounds", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)), request_body = StartRoundRequest,
    responses((status = 201, body = RoundInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start_round(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
    ApiJson(req): ApiJson<StartRoundRequest>,
) -> Result<Response, ApiError> {
    let round = rounds::start_round(&state, study_id, &req).await?;
    Ok(created(rounds::round_info(&state, &round).await?))
}

#[utoipa::path(get, path = "/v1/studies/{study_id}/rounds", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)),
    responses((status = 200, body = Vec<RoundInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_rounds(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<Vec<RoundInfo>>, ApiError> {
    state.store.get_study(study_id).await?;
    let mut out = Vec::new();
    for r in state.store.list_rounds(study_id).await? {
        out.push(rounds::round_info(&state, &r).await?);
    }
    Ok(ApiJson(out))
}

/// Round status: stage, deadline, outcome, and who is in each stage's set.
#[utoipa::path(get, path = "/v1/rounds/{round_id}", tag = "operator", security(("operator_token" = [])),
    params(("round_id" = i64, Path)),
    responses((status = 200, body = RoundInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_round(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(round_id): ApiPath<i64>,
) -> Result<ApiJson<RoundInfo>, ApiError> {
    let round = state.store.get_round(round_id).await?;
    Ok(ApiJson(rounds::round_info(&state, &round).await?))
}

/// Abort an unfinished round: nothing is published and nobody is charged.
#[utoipa::path(post, path = "/v1/rounds/{round_id}/abort", tag = "operator", security(("operator_token" = [])),
    params(("round_id" = i64, Path)), request_body = AbortRoundRequest,
    responses((status = 200, body = RoundInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn abort_round(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(round_id): ApiPath<i64>,
    ApiJson(req): ApiJson<AbortRoundRequest>,
) -> Result<ApiJson<RoundInfo>, ApiError> {
    if req.reason.trim().is_empty() || req.reason.len() > 500 {
        return Err(ApiError::Unprocessable(
            "reason must be 1..=500 characters".into(),
        ));
    }
    let round = state.store.get_round(round_id).await?;
    if !rounds::abort(
        &state,
        &round,
        &format!("aborted by operator: {}", req.reason),
    )
    .await?
    {
        return Err(ApiError::Conflict(format!(
            "round {round_id} is already finished"
        )));
    }
    let round = state.store.get_round(round_id).await?;
    Ok(ApiJson(rounds::round_info(&state, &round).await?))
}

#[utoipa::path(get, path = "/v1/studies/{study_id}/models", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)),
    responses((status = 200, body = Vec<ModelVersionInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_model_versions(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<Vec<ModelVersionInfo>>, ApiError> {
    state.store.get_study(study_id).await?;
    let out = state
        .store
        .list_model_versions(study_id)
        .await?
        .into_iter()
        .map(|m| ModelVersionInfo {
            study_id: m.study_id,
            version: m.version,
            round_id: m.round_id,
            sha256: m.sha256,
            size_bytes: m.size_bytes,
            created_at_ms: m.created_at,
        })
        .collect();
    Ok(ApiJson(out))
}

/// The safetensors bytes of a model version (sha256 in `x-confide-sha256`).
pub(crate) fn safetensors_response(bytes: Vec<u8>, sha256: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::HeaderName::from_static("x-confide-sha256"), sha256),
        ],
        bytes,
    )
        .into_response()
}

/// Download a model version as safetensors.
#[utoipa::path(get, path = "/v1/studies/{study_id}/models/{version}", tag = "operator",
    security(("operator_token" = [])), params(("study_id" = i64, Path), ("version" = i64, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download_model_version(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath((study_id, version)): ApiPath<(i64, i64)>,
) -> Result<Response, ApiError> {
    state.store.get_study(study_id).await?;
    let (bytes, sha) = state.store.model_weights(study_id, version).await?;
    Ok(safetensors_response(bytes, sha))
}

/// ε spent (PLD accountant over each participant's whole ledger) and budget, per participant.
#[utoipa::path(get, path = "/v1/studies/{study_id}/privacy", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)),
    responses((status = 200, body = PrivacyReport), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn privacy_report(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<PrivacyReport>, ApiError> {
    let study = Study::from_row(&state.store.get_study(study_id).await?)?;
    let participants = rounds::privacy_of(&state, study_id)
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
    Ok(ApiJson(PrivacyReport {
        study_id,
        delta: study.config.budget.delta,
        accountant: AccountantKind::Pld,
        participants,
    }))
}
