//! The axum application: routes, authentication, body limits, request ids, metrics middleware.

pub mod operator;
pub mod participant;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confide_common::api;
use tokio::sync::Notify;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{ParticipantRow, Store};

/// Limits on what clients may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON body (operator requests, control messages).
    pub json_body_bytes: usize,
    /// Largest model (f32 safetensors bytes) a study may declare or upload as initial weights.
    pub model_bytes: usize,
    /// Longest long-poll a participant may ask for.
    pub max_poll: Duration,
    /// How long a round lease lasts without renewal; a crashed process's rounds are taken over after this.
    pub lease_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_body_bytes: 4 << 20,
            model_bytes: 256 << 20,
            max_poll: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(6),
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Metrics,
    /// Woken on every change a long-poll or a round driver may be waiting for (in this process; other processes
    /// are noticed by polling the database).
    pub changed: Arc<Notify>,
    pub limits: Limits,
    /// This process's identity for round leases.
    pub node_id: String,
    /// Rounds this process currently runs a driver for.
    pub drivers: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// Cancelled on graceful shutdown: drivers stop and release their leases.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// An authenticated operator (bearer token created by `confide-coordinator token create`).
pub struct Operator {
    #[allow(dead_code)]
    pub name: String,
}

/// An authenticated participant (bearer credential issued at enrolment).
pub struct Participant(pub ParticipantRow);

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer header".into()))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("Authorization header must be 'Bearer <token>'".into())
        })
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if let Some(name) = state.store.operator_for_token(token).await? {
            return Ok(Self { name });
        }
        if state
            .store
            .participant_for_credential(token)
            .await?
            .is_some()
        {
            return Err(ApiError::Forbidden(
                "this route needs an operator token; a participant credential was given".into(),
            ));
        }
        Err(ApiError::Unauthorized("unknown operator token".into()))
    }
}

impl FromRequestParts<AppState> for Participant {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if let Some(p) = state.store.participant_for_credential(token).await? {
            return Ok(Self(p));
        }
        if state.store.operator_for_token(token).await?.is_some() {
            return Err(ApiError::Forbidden(
                "this route needs a participant credential; an operator token was given".into(),
            ));
        }
        Err(ApiError::Unauthorized(
            "unknown participant credential".into(),
        ))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Confide coordinator API", description = "Operator and participant API of the Confide coordinator."),
    paths(
        healthz,
        operator::create_study,
        operator::list_studies,
        operator::get_study,
        operator::create_enrolment_token,
        operator::list_participants,
        operator::start_round,
        operator::list_rounds,
        operator::get_round,
        operator::abort_round,
        operator::list_model_versions,
        operator::download_model_version,
        operator::privacy_report,
        participant::enrol,
        participant::poll_task,
        participant::download_model,
        participant::post_message,
        participant::get_broadcast,
        participant::decline_round,
    ),
    components(schemas(api::ErrorBody)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme =
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("operator_token", scheme.clone());
        components.add_security_scheme("participant_credential", scheme);
    }
}

/// Liveness and database reachability.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = api::Health), (status = 503, body = api::ErrorBody)))]
async fn healthz(State(state): State<AppState>) -> Result<axum::Json<api::Health>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable("database unreachable".into()))?;
    Ok(axum::Json(api::Health {
        status: "ok".into(),
        database: format!("{:?}", state.store.backend()).to_lowercase(),
    }))
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.render().map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::Rejected(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Counts and times every request by matched route and status.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .http_requests_total
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .http_request_duration
        .with_label_values(&[route.as_str(), status.as_str()])
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let json_limit = state.limits.json_body_bytes;
    // A study may carry its initial weights (base64): its body limit follows the model-size limit.
    let study_limit = json_limit.saturating_add(state.limits.model_bytes.saturating_mul(4) / 3);
    let api = Router::new()
        .route(
            "/v1/studies",
            post(operator::create_study)
                .layer(DefaultBodyLimit::max(study_limit))
                .get(operator::list_studies),
        )
        .route("/v1/studies/{study_id}", get(operator::get_study))
        .route(
            "/v1/studies/{study_id}/enrolment-tokens",
            post(operator::create_enrolment_token),
        )
        .route(
            "/v1/studies/{study_id}/participants",
            get(operator::list_participants),
        )
        .route(
            "/v1/studies/{study_id}/rounds",
            post(operator::start_round).get(operator::list_rounds),
        )
        .route(
            "/v1/studies/{study_id}/models",
            get(operator::list_model_versions),
        )
        .route(
            "/v1/studies/{study_id}/models/{version}",
            get(operator::download_model_version),
        )
        .route(
            "/v1/studies/{study_id}/privacy",
            get(operator::privacy_report),
        )
        .route("/v1/rounds/{round_id}", get(operator::get_round))
        .route("/v1/rounds/{round_id}/abort", post(operator::abort_round))
        .route("/v1/participant/enrol", post(participant::enrol))
        .route("/v1/participant/task", get(participant::poll_task))
        .route(
            "/v1/participant/models/{version}",
            get(participant::download_model),
        )
        .route(
            "/v1/participant/rounds/{round_id}/broadcast/{stage}",
            get(participant::get_broadcast),
        )
        .route(
            "/v1/participant/rounds/{round_id}/decline",
            post(participant::decline_round),
        )
        .layer(DefaultBodyLimit::max(json_limit))
        // Masked inputs are limited per study (exact expected length), inside the handler.
        .route(
            "/v1/participant/rounds/{round_id}/messages/{stage}",
            post(participant::post_message).layer(DefaultBodyLimit::disable()),
        );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        // One span per request carrying its id (also echoed in `x-request-id`); every request is logged once when
        // answered, with status and latency. Paths carry only ids and stage names; bodies are never logged.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Millis)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Converts the status of a handler result into a response for `Result<(StatusCode, Json<T>), ApiError>` helpers.
pub fn created<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}
