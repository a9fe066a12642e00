//! The axum application: routes, body limits, request ids, metrics middleware, OpenAPI; [`auth`] (who is asking),
//! [`extract`] (bodies, paths and queries), [`error`] (the one place errors become answers), and the handlers of
//! each side ([`operator`], [`participant`]), which parse the request and call the service layer.

pub mod auth;
pub mod error;
pub mod extract;
pub mod operator;
pub mod participant;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confide_common::api;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;

use crate::service::Coordinator;
use crate::transport::PeerTls;
use error::ApiError;

/// Who may read `/metrics` on a listener.
#[derive(Clone, Default)]
pub enum MetricsAccess {
    /// Anyone who can connect (a loopback listener, or the separate `--metrics-addr` listener).
    #[default]
    Open,
    /// Only with `Authorization: Bearer <token>` (`--metrics-token`).
    Bearer(String),
    /// Not on this listener (a network-facing API listener without a metrics token).
    Elsewhere,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Open => "Open",
            Self::Bearer(_) => "Bearer(<token>)",
            Self::Elsewhere => "Elsewhere",
        })
    }
}

/// Options of the HTTP layer that depend on how the coordinator is deployed.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    pub metrics: MetricsAccess,
}

/// Longest client-supplied `x-request-id` kept (longer ones are replaced by a generated id).
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A client's request id is logged and echoed only if it is short and made of `[A-Za-z0-9._-]`: nothing in it can
/// end a log line, open a JSON string or imitate another field.
pub fn is_safe_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Drops an unsafe `x-request-id` so that the request-id layer generates one instead.
async fn sanitise_request_id(mut req: Request, next: Next) -> Response {
    let unsafe_ids = req.headers().get_all("x-request-id").iter().count() > 1
        || req
            .headers()
            .get("x-request-id")
            .is_some_and(|v| !is_safe_request_id(v));
    if unsafe_ids {
        req.headers_mut().remove("x-request-id");
    }
    next.run(req).await
}

/// Participant routes on a listener with `--client-ca` need a verified client certificate on the connection.
async fn require_client_cert(req: Request, next: Next) -> Response {
    match req.extensions().get::<PeerTls>() {
        Some(tls) if tls.client_cert_required && !tls.client_cert_verified => ApiError::Unauthorized(
            "participant routes need a TLS client certificate signed by the coordinator's client CA \
             (configure the agent's client_cert and client_key)"
                .into(),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The state every handler shares: the service layer's [`Coordinator`].
pub type AppState = Coordinator;

#[derive(OpenApi)]
#[openapi(
    info(title = "Confide coordinator API", description = "Operator and participant API of the Confide coordinator."),
    paths(
        healthz,
        operator::create_study,
        operator::list_studies,
        operator::get_study,
        operator::run_study,
        operator::stop_study,
        operator::create_enrolment_token,
        operator::list_enrolment_tokens,
        operator::revoke_enrolment_token,
        operator::list_participants,
        operator::revoke_participant,
        operator::disable_participant,
        operator::start_round,
        operator::list_rounds,
        operator::get_round,
        operator::abort_round,
        operator::list_model_versions,
        operator::download_model_version,
        operator::privacy_report,
        operator::study_metrics,
        operator::privacy_plan,
        participant::enrol,
        participant::poll_task,
        participant::download_model,
        participant::post_message,
        participant::get_broadcast,
        participant::decline_round,
    ),
    components(schemas(api::ErrorBody, api::EnrolmentTokenInfo)),
    modifiers(&BearerAuth, &ResponseDescriptions),
)]
pub struct ApiDoc;

/// What a status means on this API, for every response an operation lists without a description of its own
/// (OpenAPI requires one on each).
fn status_description(status: &str) -> &'static str {
    match status {
        "200" => "Success; the body is the answer.",
        "201" => "Created; the body describes what was created.",
        "202" => "Accepted: stored, and taken into the round when its stage closes.",
        "400" => "The request does not parse (body, path or query); `error` says what is wrong.",
        "401" => "No credential, or an unknown or revoked one; `error` says which.",
        "403" => {
            "The credential is of the other kind (operator vs participant), lacks a client certificate, or may \
             not do this in this round."
        }
        "404" => "No such study, round, participant, token, model version, stage or broadcast.",
        "409" => {
            "Conflicts with the current state (already running or finished, another stage, already used); \
             `error` says which."
        }
        "413" => "The body is larger than the coordinator accepts.",
        "422" => "Parsed, but breaks a rule; `error` names the field or rule and what to change.",
        "503" => "The database is unreachable.",
        _ => "See `error` in the body.",
    }
}

struct ResponseDescriptions;
impl utoipa::Modify for ResponseDescriptions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                for (status, response) in op.responses.responses.iter_mut() {
                    if let RefOr::T(r) = response
                        && r.description.trim().is_empty()
                    {
                        r.description = status_description(status).to_string();
                    }
                }
            }
        }
    }
}

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

async fn metrics(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<MetricsAccess>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    match &access {
        MetricsAccess::Open => {}
        MetricsAccess::Elsewhere => {
            return Err(ApiError::NotFound(
                "metrics are not served on this listener: scrape the coordinator's --metrics-addr, or start it \
                 with --metrics-token and send Authorization: Bearer <token>"
                    .into(),
            ));
        }
        MetricsAccess::Bearer(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
                return Err(ApiError::Unauthorized(
                    "/metrics needs Authorization: Bearer <the coordinator's --metrics-token>"
                        .into(),
                ));
            }
        }
    }
    state.store.refresh_size_gauge().await;
    let text = state.metrics.render().map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Only `/metrics`, for the separate metrics listener (`--metrics-addr`).
pub fn metrics_router(state: AppState, access: MetricsAccess) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
        .layer(axum::Extension(access))
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

/// The whole application with default options (`/metrics` open: for tests and loopback listeners).
pub fn router(state: AppState) -> Router {
    router_with(state, &HttpOptions::default())
}

/// The whole application.
pub fn router_with(state: AppState, options: &HttpOptions) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let json_limit = state.limits.json_body_bytes;
    // A study may carry its initial weights (base64): its body limit follows the model-size limit.
    let study_limit = json_limit.saturating_add(state.limits.model_bytes.saturating_mul(4) / 3);
    let operator = Router::new()
        .route(
            "/v1/studies",
            post(operator::create_study)
                .layer(DefaultBodyLimit::max(study_limit))
                .get(operator::list_studies),
        )
        .route("/v1/studies/{study_id}", get(operator::get_study))
        .route("/v1/studies/{study_id}/run", post(operator::run_study))
        .route("/v1/studies/{study_id}/stop", post(operator::stop_study))
        .route(
            "/v1/studies/{study_id}/enrolment-tokens",
            post(operator::create_enrolment_token).get(operator::list_enrolment_tokens),
        )
        .route(
            "/v1/studies/{study_id}/enrolment-tokens/{token_id}/revoke",
            post(operator::revoke_enrolment_token),
        )
        .route(
            "/v1/studies/{study_id}/participants/{participant_id}/revoke",
            post(operator::revoke_participant),
        )
        .route(
            "/v1/studies/{study_id}/participants",
            get(operator::list_participants),
        )
        .route(
            "/v1/studies/{study_id}/participants/{participant_id}/disable",
            post(operator::disable_participant),
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
        .route(
            "/v1/studies/{study_id}/metrics",
            get(operator::study_metrics),
        )
        .route("/v1/privacy/plan", post(operator::privacy_plan))
        .route("/v1/rounds/{round_id}", get(operator::get_round))
        .route("/v1/rounds/{round_id}/abort", post(operator::abort_round))
        .layer(DefaultBodyLimit::max(json_limit));
    let participant = Router::new()
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
        )
        .route_layer(middleware::from_fn(require_client_cert));
    let api = operator.merge(participant);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
        .layer(axum::Extension(options.metrics.clone()))
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
        // Outermost: an unsafe client id is dropped before it is set, logged or echoed.
        .layer(middleware::from_fn(sanitise_request_id))
}

/// Converts the status of a handler result into a response for `Result<(StatusCode, Json<T>), ApiError>` helpers.
pub fn created<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}
