//! A small typed HTTP client for the coordinator API (reqwest), for the participant agent and the `confide` CLI.
//! Every non-2xx answer becomes [`ClientError::Api`] with the status and the server's message.
//!
//! It is its own crate (re-exported as `confide_coordinator::client`) so that the participant agent and the CLI
//! can talk to a coordinator without linking the server (axum, the database drivers). [`transport`]: the URL
//! policy (plain HTTP only to loopback), the trusted CA and client certificate, and what a failed connection was.

#[cfg(feature = "devcert")]
pub mod devcert;
pub mod transport;

use std::time::Duration;

use confide_common::api::{
    AbortRoundRequest, CreateEnrolmentTokenRequest, CreateStudyRequest, DeclineRoundRequest,
    EnrolRequest, EnrolResponse, EnrolmentTokenInfo, EnrolmentTokenResponse, ErrorBody, Health,
    ModelVersionInfo, ParticipantInfo, PrivacyPlanRequest, PrivacyPlanResponse, PrivacyReport,
    RoundInfo, RoundStage, RunStudyRequest, StartRoundRequest, StopStudyRequest, StudyInfo,
    StudyMetrics, TaskResponse,
};
use serde::de::DeserializeOwned;
pub use transport::{ConnectFailure, TlsOptions};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator answered with an error status.
    #[error("coordinator answered {status}: {message}")]
    Api { status: u16, message: String },
    /// The connection failed; the kind says why (TLS/certificate, refused, unknown host, timeout).
    #[error("{}", connect_message(.kind, .host, .url, .detail))]
    Connect {
        kind: ConnectFailure,
        host: String,
        url: String,
        detail: String,
    },
    /// The request did not complete for another reason (reset mid-answer, bad body, …).
    #[error("request failed: {0}")]
    Transport(reqwest::Error),
    /// The client's own configuration is unusable (URL, CA or client certificate files).
    #[error("{0}")]
    Config(String),
    /// A download was larger than the caller allows; nothing beyond the limit was read.
    #[error("download larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

fn connect_message(kind: &ConnectFailure, host: &str, url: &str, detail: &str) -> String {
    match kind {
        ConnectFailure::Tls => format!(
            "TLS handshake with {host} failed ({detail}): the coordinator's certificate is not trusted or does not \
             name this host, or it wants a client certificate this client did not present. Pass --ca-cert with the \
             CA that signed its certificate, use the host name the certificate names, and for mTLS give the \
             client certificate and key"
        ),
        ConnectFailure::Refused => format!(
            "connection refused by {host}: nothing listens there; is the coordinator running, and is the URL's \
             port right? ({url})"
        ),
        ConnectFailure::UnknownHost => format!(
            "unknown host in {url}: the name does not resolve ({detail}); check the coordinator URL"
        ),
        ConnectFailure::Timeout => format!("no answer from {host} in time ({url}): {detail}"),
        ConnectFailure::Other => format!("could not reach {host} ({url}): {detail}"),
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        transport::from_reqwest(e)
    }
}

impl ClientError {
    /// The HTTP status, if the coordinator answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
            Self::Connect { .. } | Self::TooLarge { .. } | Self::Config(_) => None,
        }
    }

    /// Whether trying again later may succeed: the request never got an answer (connection refused or reset,
    /// timeout, unknown host: e.g. the coordinator is restarting), or the coordinator was overloaded or failing
    /// (429, 5xx). A TLS failure is not: the certificate or the trust configuration must change first.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Connect { kind, .. } => *kind != ConnectFailure::Tls,
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::TooLarge { .. } | Self::Config(_) => false,
        }
    }

    /// The kind of connection failure, if this is one.
    pub fn connect_failure(&self) -> Option<ConnectFailure> {
        match self {
            Self::Connect { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Per-request timeout unless configured otherwise (a long-poll gets its wait on top).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

pub type ClientResult<T> = Result<T, ClientError>;

/// A model download: safetensors bytes and the sha256 the coordinator announced.
#[derive(Debug, Clone)]
pub struct ModelDownload {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// Client for one coordinator and one bearer secret (operator token or participant credential; empty for enrol).
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    base: String,
    token: String,
    http: reqwest::Client,
    timeout: Duration,
}

async fn check(resp: reqwest::Response) -> ClientResult<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|e| e.error)
        .unwrap_or(text);
    Err(ClientError::Api {
        status: status.as_u16(),
        message,
    })
}

impl CoordinatorClient {
    /// A client of `base_url` under the URL policy (`https://`, or `http://` to loopback unless
    /// `tls.allow_insecure_http`), trusting `tls.ca_cert` and showing the client certificate if given.
    pub fn connect(base_url: &str, token: &str, tls: &TlsOptions) -> ClientResult<Self> {
        transport::check_url(base_url, tls.allow_insecure_http)?;
        let http = transport::http_client(tls, Duration::from_secs(10))?;
        Ok(Self::with_http(base_url, token, http))
    }

    /// A client with reqwest's defaults and no URL policy (tests, loopback tools); see [`Self::connect`].
    pub fn new(base_url: &str, token: &str) -> Self {
        Self::with_http(base_url, token, reqwest::Client::new())
    }

    /// Uses a preconfigured reqwest client (connect timeout, proxies, TLS roots).
    pub fn with_http(base_url: &str, token: &str, http: reqwest::Client) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets the per-request timeout (a long-poll waits its `wait_secs` on top of it).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same coordinator with another bearer secret (e.g. the credential returned by [`Self::enrol`]).
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: token.to_string(),
            ..self.clone()
        }
    }

    /// The coordinator's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A successful GET answer (an error status becomes the API's error).
    async fn get_ok(&self, path: &str) -> ClientResult<reqwest::Response> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .send()
            .await?;
        check(resp).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        Ok(self.get_ok(path).await?.json().await?)
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> ClientResult<T> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .json(body)
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }

    /// Downloads a binary body, reading at most `limit` bytes (refused as soon as the announced or received size
    /// exceeds it).
    async fn get_bytes(&self, path: &str, limit: usize) -> ClientResult<ModelDownload> {
        let mut resp = self.get_ok(path).await?;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(ClientError::TooLarge { limit });
        }
        let sha256 = resp
            .headers()
            .get("x-confide-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if bytes.len() + chunk.len() > limit {
                return Err(ClientError::TooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(ModelDownload { bytes, sha256 })
    }

    /// Text of a GET answer (e.g. the Prometheus exposition).
    async fn get_text(&self, path: &str) -> ClientResult<String> {
        Ok(self.get_ok(path).await?.text().await?)
    }

    // ---- service ----

    /// Liveness and database reachability (`/healthz`; an unreachable database is a 503).
    pub async fn health(&self) -> ClientResult<Health> {
        self.get("/healthz").await
    }
    /// The Prometheus metrics exposition (`/metrics`).
    pub async fn metrics(&self) -> ClientResult<String> {
        self.get_text("/metrics").await
    }
    /// The OpenAPI document of the API (`/openapi.json`).
    pub async fn openapi(&self) -> ClientResult<serde_json::Value> {
        self.get("/openapi.json").await
    }

    // ---- operator ----

    pub async fn create_study(&self, req: &CreateStudyRequest) -> ClientResult<StudyInfo> {
        self.post("/v1/studies", req).await
    }
    pub async fn list_studies(&self) -> ClientResult<Vec<StudyInfo>> {
        self.get("/v1/studies").await
    }
    pub async fn get_study(&self, study: i64) -> ClientResult<StudyInfo> {
        self.get(&format!("/v1/studies/{study}")).await
    }
    /// `POST /v1/studies/{id}/run`: the coordinator runs the study's remaining rounds on its own.
    pub async fn run_study(&self, study: i64, req: &RunStudyRequest) -> ClientResult<StudyInfo> {
        self.post(&format!("/v1/studies/{study}/run"), req).await
    }
    /// `POST /v1/studies/{id}/stop`: no further round is started.
    pub async fn stop_study(&self, study: i64, req: &StopStudyRequest) -> ClientResult<StudyInfo> {
        self.post(&format!("/v1/studies/{study}/stop"), req).await
    }
    pub async fn create_enrolment_token(
        &self,
        study: i64,
        req: &CreateEnrolmentTokenRequest,
    ) -> ClientResult<EnrolmentTokenResponse> {
        self.post(&format!("/v1/studies/{study}/enrolment-tokens"), req)
            .await
    }
    pub async fn list_participants(&self, study: i64) -> ClientResult<Vec<ParticipantInfo>> {
        self.get(&format!("/v1/studies/{study}/participants")).await
    }
    /// A study's enrolment tokens (never their secrets).
    pub async fn list_enrolment_tokens(&self, study: i64) -> ClientResult<Vec<EnrolmentTokenInfo>> {
        self.get(&format!("/v1/studies/{study}/enrolment-tokens"))
            .await
    }
    /// Revokes an unused enrolment token.
    pub async fn revoke_enrolment_token(
        &self,
        study: i64,
        token_id: i64,
    ) -> ClientResult<EnrolmentTokenInfo> {
        self.post(
            &format!("/v1/studies/{study}/enrolment-tokens/{token_id}/revoke"),
            &serde_json::json!({}),
        )
        .await
    }
    /// Revokes a participant's credential (refused at once by every coordinator process).
    pub async fn revoke_participant(
        &self,
        study: i64,
        participant: i64,
    ) -> ClientResult<ParticipantInfo> {
        self.post(
            &format!("/v1/studies/{study}/participants/{participant}/revoke"),
            &serde_json::json!({}),
        )
        .await
    }
    pub async fn start_round(
        &self,
        study: i64,
        req: &StartRoundRequest,
    ) -> ClientResult<RoundInfo> {
        self.post(&format!("/v1/studies/{study}/rounds"), req).await
    }
    pub async fn list_rounds(&self, study: i64) -> ClientResult<Vec<RoundInfo>> {
        self.get(&format!("/v1/studies/{study}/rounds")).await
    }
    pub async fn get_round(&self, round: i64) -> ClientResult<RoundInfo> {
        self.get(&format!("/v1/rounds/{round}")).await
    }
    /// Long-polls a round's status for up to `wait_secs` seconds: answers as soon as the round has left `stage`
    /// (or finished; without a stage, once it finished).
    pub async fn wait_round(
        &self,
        round: i64,
        stage: Option<RoundStage>,
        wait_secs: u64,
    ) -> ClientResult<RoundInfo> {
        let stage = stage.map_or(String::new(), |s| format!("&stage={}", s.as_str()));
        let resp = self
            .http
            .get(self.url(&format!("/v1/rounds/{round}?wait_secs={wait_secs}{stage}")))
            .bearer_auth(&self.token)
            .timeout(self.timeout + Duration::from_secs(wait_secs))
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }
    pub async fn abort_round(&self, round: i64, reason: &str) -> ClientResult<RoundInfo> {
        self.post(
            &format!("/v1/rounds/{round}/abort"),
            &AbortRoundRequest {
                reason: reason.into(),
            },
        )
        .await
    }
    pub async fn list_model_versions(&self, study: i64) -> ClientResult<Vec<ModelVersionInfo>> {
        self.get(&format!("/v1/studies/{study}/models")).await
    }
    pub async fn download_model_version(
        &self,
        study: i64,
        version: i64,
    ) -> ClientResult<ModelDownload> {
        self.get_bytes(&format!("/v1/studies/{study}/models/{version}"), usize::MAX)
            .await
    }
    pub async fn privacy_report(&self, study: i64) -> ClientResult<PrivacyReport> {
        self.get(&format!("/v1/studies/{study}/privacy")).await
    }
    /// The study's federated evaluation per evaluated model version (`GET /v1/studies/{id}/metrics`).
    pub async fn study_metrics(&self, study: i64) -> ClientResult<StudyMetrics> {
        self.get(&format!("/v1/studies/{study}/metrics")).await
    }
    /// The noise σ a study needs for a target ε over its rounds (`POST /v1/privacy/plan`).
    pub async fn privacy_plan(
        &self,
        req: &PrivacyPlanRequest,
    ) -> ClientResult<PrivacyPlanResponse> {
        self.post("/v1/privacy/plan", req).await
    }

    /// Disables a participant of a study (no longer selected; its ledger stays).
    pub async fn disable_participant(
        &self,
        study: i64,
        participant: i64,
    ) -> ClientResult<ParticipantInfo> {
        let resp = self
            .http
            .post(self.url(&format!(
                "/v1/studies/{study}/participants/{participant}/disable"
            )))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }

    // ---- participant ----

    /// Enrols with a one-time token (no credential needed); use the returned credential with [`Self::with_token`].
    pub async fn enrol(&self, token: &str, name: &str) -> ClientResult<EnrolResponse> {
        self.enrol_with_identity(token, name, None).await
    }

    /// [`Self::enrol`], registering the site's identity public key (needed for malicious-model rounds).
    pub async fn enrol_with_identity(
        &self,
        token: &str,
        name: &str,
        identity_key: Option<confide_common::secagg::IdentityPublicKey>,
    ) -> ClientResult<EnrolResponse> {
        let resp = self
            .http
            .post(self.url("/v1/participant/enrol"))
            .timeout(self.timeout)
            .json(&EnrolRequest {
                token: token.into(),
                name: name.into(),
                identity_key,
            })
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }
    /// Long-polls for a task for up to `wait_secs` seconds.
    pub async fn poll_task(&self, wait_secs: u64) -> ClientResult<TaskResponse> {
        let resp = self
            .http
            .get(self.url(&format!("/v1/participant/task?wait_secs={wait_secs}")))
            .bearer_auth(&self.token)
            .timeout(self.timeout + Duration::from_secs(wait_secs))
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }
    /// Downloads a model version of this participant's study, refusing bodies larger than `max_bytes`.
    pub async fn download_model(
        &self,
        version: i64,
        max_bytes: usize,
    ) -> ClientResult<ModelDownload> {
        self.get_bytes(&format!("/v1/participant/models/{version}"), max_bytes)
            .await
    }
    /// Posts a control message (JSON text, e.g. `AdvertiseKeys::to_json()`).
    pub async fn post_control_message(
        &self,
        round: i64,
        stage: RoundStage,
        json: String,
    ) -> ClientResult<()> {
        let resp = self
            .http
            .post(self.url(&format!(
                "/v1/participant/rounds/{round}/messages/{}",
                stage.as_str()
            )))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .body(json)
            .send()
            .await?;
        check(resp).await?;
        Ok(())
    }
    /// Posts the binary masked input (`MaskedInput::encode()`).
    pub async fn post_masked_input(&self, round: i64, bytes: Vec<u8>) -> ClientResult<()> {
        let resp = self
            .http
            .post(self.url(&format!(
                "/v1/participant/rounds/{round}/messages/masked_input_collection"
            )))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        check(resp).await?;
        Ok(())
    }
    /// The server's broadcast for `stage` (JSON text; parse with the secagg message type's `from_json`).
    pub async fn broadcast(&self, round: i64, stage: RoundStage) -> ClientResult<String> {
        self.get_text(&format!(
            "/v1/participant/rounds/{round}/broadcast/{}",
            stage.as_str()
        ))
        .await
    }
    /// Declines a round this participant was selected for (only during AdvertiseKeys, before advertising).
    pub async fn decline_round(&self, round: i64, reason: &str) -> ClientResult<()> {
        let resp = self
            .http
            .post(self.url(&format!("/v1/participant/rounds/{round}/decline")))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .json(&DeclineRoundRequest {
                reason: reason.into(),
            })
            .send()
            .await?;
        check(resp).await?;
        Ok(())
    }
}
