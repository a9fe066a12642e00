//! Participant API (bearer credential from enrolment): enrol, long-poll for a task, download the model, post each
//! protocol message (control as JSON, masked input as binary), read the server's broadcasts. The HTTP parts (stage
//! names in paths, content types, body limits) are checked here; the rules of a round in the service layer.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use confide_common::api::{
    DeclineRoundRequest, EnrolRequest, EnrolResponse, ErrorBody, RoundStage, TaskResponse,
};
use serde::Deserialize;

use super::auth::Participant;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{AppState, created};
use crate::service::rounds::participation;
use crate::service::studies;
use crate::service::wakeups::{SAFETY_NET, Topic};

/// Enrol with a one-time token; returns the participant's credential (shown once, stored hashed).
#[utoipa::path(post, path = "/v1/participant/enrol", tag = "participant", request_body = EnrolRequest,
    responses((status = 201, body = EnrolResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn enrol(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> Result<Response, ApiError> {
    Ok(created(studies::enrol(&state, &req).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PollQuery {
    /// Seconds to wait for work before answering `idle` (default 0; capped by the server).
    #[serde(default)]
    pub wait_secs: u64,
}

/// Long-poll for work: answers as soon as this participant has a stage to answer, or `idle` after `wait_secs`
/// (at once when the coordinator shuts down).
#[utoipa::path(get, path = "/v1/participant/task", tag = "participant", params(PollQuery),
    security(("participant_credential" = [])),
    responses((status = 200, body = TaskResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn poll_task(
    State(state): State<AppState>,
    Participant(p): Participant,
    ApiQuery(q): ApiQuery<PollQuery>,
) -> Result<ApiJson<TaskResponse>, ApiError> {
    let wait = Duration::from_secs(q.wait_secs).min(state.limits.max_poll);
    let until = Instant::now() + wait;
    // Woken only by changes to this participant's rounds (see service::wakeups), in any coordinator process.
    let topic = state.wakeups.topic(Topic::Participant(p.id));
    loop {
        let changed = topic.notified();
        let task = participation::task_for(&state, &p).await?;
        let due = matches!(&task, TaskResponse::Round(t) if !t.submitted);
        let now = Instant::now();
        // On shutdown the current answer goes out at once, so that the process can exit promptly.
        if due || now >= until || state.shutdown.is_cancelled() {
            return Ok(ApiJson(task));
        }
        tokio::select! {
            _ = tokio::time::timeout((until - now).min(SAFETY_NET), changed) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

/// Download one of this participant's study's model versions (safetensors; sha256 in `x-confide-sha256`).
#[utoipa::path(get, path = "/v1/participant/models/{version}", tag = "participant",
    security(("participant_credential" = [])), params(("version" = i64, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download_model(
    State(state): State<AppState>,
    Participant(p): Participant,
    ApiPath(version): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let (bytes, sha) = studies::model_weights(&state, p.study_id, version).await?;
    Ok(super::operator::safetensors_response(bytes, sha))
}

fn parse_stage(s: &str) -> Result<RoundStage, ApiError> {
    match RoundStage::parse(s) {
        Some(RoundStage::Finished) | None => Err(ApiError::NotFound(format!(
            "unknown stage {s:?} (advertise_keys, share_keys, share_verification, masked_input_collection, \
             consistency_check, unmasking)"
        ))),
        Some(stage) => Ok(stage),
    }
}

/// Post this participant's message for a stage: JSON for control stages, `application/octet-stream` (header +
/// little-endian ring elements) for `masked_input_collection`. 202 once stored; one message per stage.
#[utoipa::path(post, path = "/v1/participant/rounds/{round_id}/messages/{stage}", tag = "participant",
    security(("participant_credential" = [])), params(("round_id" = i64, Path), ("stage" = String, Path)),
    request_body(content = Vec<u8>, description = "secagg message: JSON, or binary masked input", content_type = "application/octet-stream"),
    responses((status = 202), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn post_message(
    State(state): State<AppState>,
    Participant(p): Participant,
    ApiPath((round_id, stage)): ApiPath<(i64, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let stage = parse_stage(&stage)?;
    let round = participation::round_of(&state, round_id, &p).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let binary = stage == RoundStage::MaskedInputCollection;
    let expected = if binary {
        "application/octet-stream"
    } else {
        "application/json"
    };
    if !content_type.starts_with(expected) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "{} messages must be sent as {expected}",
            stage.as_str()
        )));
    }
    let limit = participation::message_limit(&state, &round, stage)?;
    // A masked input is as large as the model: read only a bounded number at once (the others wait unread).
    let _slot =
        if binary {
            Some(
                state.uploads.clone().acquire_owned().await.map_err(|_| {
                    ApiError::Unavailable("the coordinator is shutting down".into())
                })?,
            )
        } else {
            None
        };
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!(
            "{} message larger than {limit} bytes",
            stage.as_str()
        ))
    })?;
    participation::accept_message(&state, &round, &p, stage, &bytes).await?;
    Ok(axum::http::StatusCode::ACCEPTED.into_response())
}

/// What the server told this participant at the start of `stage` (JSON).
#[utoipa::path(get, path = "/v1/participant/rounds/{round_id}/broadcast/{stage}", tag = "participant",
    security(("participant_credential" = [])), params(("round_id" = i64, Path), ("stage" = String, Path)),
    responses((status = 200, content_type = "application/json"), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn get_broadcast(
    State(state): State<AppState>,
    Participant(p): Participant,
    ApiPath((round_id, stage)): ApiPath<(i64, String)>,
) -> Result<Response, ApiError> {
    let stage = parse_stage(&stage)?;
    let round = participation::round_of(&state, round_id, &p).await?;
    let body = participation::broadcast_for(&state, &round, &p, stage).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Decline a round this participant was selected for, before advertising keys (e.g. its local privacy budget would
/// be exceeded). 202 once stored; the reason appears in the round status and the stage no longer waits for it.
#[utoipa::path(post, path = "/v1/participant/rounds/{round_id}/decline", tag = "participant",
    security(("participant_credential" = [])), params(("round_id" = i64, Path)), request_body = DeclineRoundRequest,
    responses((status = 202), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn decline_round(
    State(state): State<AppState>,
    Participant(p): Participant,
    ApiPath(round_id): ApiPath<i64>,
    ApiJson(req): ApiJson<DeclineRoundRequest>,
) -> Result<Response, ApiError> {
    let round = participation::round_of(&state, round_id, &p).await?;
    participation::decline(&state, &round, &p, &req.reason).await?;
    Ok(axum::http::StatusCode::ACCEPTED.into_response())
}
