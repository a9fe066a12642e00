//! Operator API (bearer operator token): studies, enrolment tokens, rounds, model versions, privacy report. Each
//! handler parses the request and calls the service layer.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use confide_common::api::{
    AbortRoundRequest, CreateEnrolmentTokenRequest, CreateStudyRequest, EnrolmentTokenInfo,
    EnrolmentTokenResponse, ErrorBody, ModelVersionInfo, ParticipantInfo, PrivacyPlanRequest,
    PrivacyPlanResponse, PrivacyReport, RoundInfo, RoundStage, RunStudyRequest, StartRoundRequest,
    StopStudyRequest, StudyInfo, StudyMetrics,
};
use serde::Deserialize;

use super::auth::Operator;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{AppState, created};
use crate::service::{privacy, rounds, schedule, studies};

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
    Ok(created(studies::create(&state, &req).await?))
}

#[utoipa::path(get, path = "/v1/studies", tag = "operator", security(("operator_token" = [])),
    responses((status = 200, body = Vec<StudyInfo>), (status = 401, body = ErrorBody)))]
pub async fn list_studies(
    State(state): State<AppState>,
    _op: Operator,
) -> Result<ApiJson<Vec<StudyInfo>>, ApiError> {
    Ok(ApiJson(studies::list(&state).await?))
}

#[utoipa::path(get, path = "/v1/studies/{study_id}", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)),
    responses((status = 200, body = StudyInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_study(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<StudyInfo>, ApiError> {
    Ok(ApiJson(studies::get(&state, study_id).await?))
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
    Ok(created(
        studies::create_enrolment_token(&state, study_id, &req).await?,
    ))
}

/// A study's enrolment tokens: label, validity, whether (and by whom) used, whether revoked; never the secrets.
#[utoipa::path(get, path = "/v1/studies/{study_id}/enrolment-tokens", tag = "operator",
    security(("operator_token" = [])), params(("study_id" = i64, Path)),
    responses((status = 200, body = Vec<EnrolmentTokenInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_enrolment_tokens(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<Vec<EnrolmentTokenInfo>>, ApiError> {
    Ok(ApiJson(studies::enrolment_tokens(&state, study_id).await?))
}

/// Revoke an unused enrolment token: enrolment with it is refused from now on (409 if it was already used).
#[utoipa::path(post, path = "/v1/studies/{study_id}/enrolment-tokens/{token_id}/revoke", tag = "operator",
    security(("operator_token" = [])), params(("study_id" = i64, Path), ("token_id" = i64, Path)),
    responses((status = 200, body = EnrolmentTokenInfo), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_enrolment_token(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath((study_id, token_id)): ApiPath<(i64, i64)>,
) -> Result<ApiJson<EnrolmentTokenInfo>, ApiError> {
    Ok(ApiJson(
        studies::revoke_enrolment_token(&state, study_id, token_id).await?,
    ))
}

/// Run the study on its own: the coordinator starts its next round whenever none is active (after `pause_secs`),
/// retries an aborted round up to `max_retries` times in a row, and stops when every round completed or the budget
/// allows no further round. `run` in the answer shows the state (and, while running, what it waits for).
#[utoipa::path(post, path = "/v1/studies/{study_id}/run", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)), request_body = RunStudyRequest,
    responses((status = 200, body = StudyInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn run_study(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
    ApiJson(req): ApiJson<RunStudyRequest>,
) -> Result<ApiJson<StudyInfo>, ApiError> {
    Ok(ApiJson(schedule::run(&state, study_id, &req).await?))
}

/// Stop the study's run: no further round is started (a round in progress finishes; abort it to end it now). 409 if
/// it is not running.
#[utoipa::path(post, path = "/v1/studies/{study_id}/stop", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)), request_body = StopStudyRequest,
    responses((status = 200, body = StudyInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stop_study(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
    ApiJson(req): ApiJson<StopStudyRequest>,
) -> Result<ApiJson<StudyInfo>, ApiError> {
    Ok(ApiJson(schedule::stop(&state, study_id, &req).await?))
}

/// Revoke a participant's credential: every request with it is refused (401) at once, by every coordinator process
/// sharing the database; it is no longer selected for rounds.
#[utoipa::path(post, path = "/v1/studies/{study_id}/participants/{participant_id}/revoke", tag = "operator",
    security(("operator_token" = [])), params(("study_id" = i64, Path), ("participant_id" = i64, Path)),
    responses((status = 200, body = ParticipantInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_participant(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath((study_id, participant_id)): ApiPath<(i64, i64)>,
) -> Result<ApiJson<ParticipantInfo>, ApiError> {
    Ok(ApiJson(
        studies::revoke_participant(&state, study_id, participant_id).await?,
    ))
}

#[utoipa::path(get, path = "/v1/studies/{study_id}/participants", tag = "operator",
    security(("operator_token" = [])), params(("study_id" = i64, Path)),
    responses((status = 200, body = Vec<ParticipantInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_participants(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<Vec<ParticipantInfo>>, ApiError> {
    Ok(ApiJson(studies::participants(&state, study_id).await?))
}

/// Disable a participant: it is no longer selected for this study's rounds (a round under way goes on); its
/// privacy ledger stays. E.g. after a round named it as a dealer of bad shares.
#[utoipa::path(post, path = "/v1/studies/{study_id}/participants/{participant_id}/disable", tag = "operator",
    security(("operator_token" = [])), params(("study_id" = i64, Path), ("participant_id" = i64, Path)),
    responses((status = 200, body = ParticipantInfo), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn disable_participant(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath((study_id, participant_id)): ApiPath<(i64, i64)>,
) -> Result<ApiJson<ParticipantInfo>, ApiError> {
    Ok(ApiJson(
        studies::disable_participant(&state, study_id, participant_id).await?,
    ))
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
    Ok(created(rounds::start(&state, study_id, &req).await?))
}

#[utoipa::path(get, path = "/v1/studies/{study_id}/rounds", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)),
    responses((status = 200, body = Vec<RoundInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_rounds(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<Vec<RoundInfo>>, ApiError> {
    Ok(ApiJson(rounds::list(&state, study_id).await?))
}

/// How long a round-status read may wait for the round to move on.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RoundWaitQuery {
    /// Seconds to wait (default 0, capped by the server) while the round is unfinished and still in `stage`.
    #[serde(default)]
    pub wait_secs: u64,
    /// The stage the caller last saw (e.g. `share_keys`); without it a wait lasts until the round finishes.
    pub stage: Option<String>,
}

/// Round status: stage, deadline, outcome, and who is in each stage's set. With `wait_secs`, a long-poll that
/// answers as soon as the round has left `stage` or finished (at once if it already has).
#[utoipa::path(get, path = "/v1/rounds/{round_id}", tag = "operator", security(("operator_token" = [])),
    params(("round_id" = i64, Path), RoundWaitQuery),
    responses((status = 200, body = RoundInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get_round(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(round_id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<RoundWaitQuery>,
) -> Result<ApiJson<RoundInfo>, ApiError> {
    let known = match q.stage.as_deref() {
        None => None,
        Some(s) => Some(RoundStage::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown stage {s:?} (advertise_keys, share_keys, masked_input_collection, unmasking, finished)"
            ))
        })?),
    };
    let wait = Duration::from_secs(q.wait_secs).min(state.limits.max_poll);
    Ok(ApiJson(
        rounds::wait_for_change(&state, round_id, known, wait).await?,
    ))
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
    Ok(ApiJson(
        rounds::abort_by_operator(&state, round_id, &req.reason).await?,
    ))
}

#[utoipa::path(get, path = "/v1/studies/{study_id}/models", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)),
    responses((status = 200, body = Vec<ModelVersionInfo>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_model_versions(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<Vec<ModelVersionInfo>>, ApiError> {
    Ok(ApiJson(studies::model_versions(&state, study_id).await?))
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
    let (bytes, sha) = studies::model_weights(&state, study_id, version).await?;
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
    Ok(ApiJson(studies::privacy_report(&state, study_id).await?))
}

/// The study's federated evaluation, per evaluated model version: accuracy ± the std of its DP noise, mean clamped
/// loss, the noisy number of evaluation records, and ε spent by the most-spent site after it (training and
/// evaluation parts composed in parallel). Empty until an evaluation round completed.
#[utoipa::path(get, path = "/v1/studies/{study_id}/metrics", tag = "operator", security(("operator_token" = [])),
    params(("study_id" = i64, Path)),
    responses((status = 200, body = StudyMetrics), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn study_metrics(
    State(state): State<AppState>,
    _op: Operator,
    ApiPath(study_id): ApiPath<i64>,
) -> Result<ApiJson<StudyMetrics>, ApiError> {
    Ok(ApiJson(
        rounds::evaluation::metrics(&state, study_id).await?,
    ))
}

/// The noise a study needs for a target ε: the smallest σ (0.001 grid) whose rounds of DP-SGD steps stay within
/// the target under the PLD accountant, with the certified upper and lower ε at that σ. The same calibration the
/// coordinator applies to a study request that gives `dp.target_epsilon`.
#[utoipa::path(post, path = "/v1/privacy/plan", tag = "operator", request_body = PrivacyPlanRequest,
    security(("operator_token" = [])),
    responses((status = 200, body = PrivacyPlanResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn privacy_plan(
    State(_state): State<AppState>,
    _op: Operator,
    ApiJson(req): ApiJson<PrivacyPlanRequest>,
) -> Result<ApiJson<PrivacyPlanResponse>, ApiError> {
    Ok(ApiJson(privacy::plan(req).await?))
}
