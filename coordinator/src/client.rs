//! A small typed HTTP client for the coordinator API (reqwest), for the participant agent and the `confide` CLI.
//! Every non-2xx answer becomes [`ClientError::Api`] with the status and the server's message.

use confide_common::api::{
    AbortRoundRequest, CreateEnrolmentTokenRequest, CreateStudyRequest, EnrolRequest,
    EnrolResponse, EnrolmentTokenResponse, ErrorBody, ModelVersionInfo, ParticipantInfo,
    PrivacyReport, RoundInfo, RoundStage, StartRoundRequest, StudyInfo, TaskResponse,
};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator answered with an error status.
    #[error("coordinator answered {status}: {message}")]
    Api { status: u16, message: String },
    /// The request did not complete (connection refused, timeout, bad body, …).
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
}

impl ClientError {
    /// The HTTP status, if the coordinator answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
        }
    }
}

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
    pub fn new(base_url: &str, token: &str) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Uses a preconfigured reqwest client (timeouts, proxies, TLS roots).
    pub fn with_http(base_url: &str, token: &str, http: reqwest::Client) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
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
            .json(body)
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }

    async fn get_bytes(&self, path: &str) -> ClientResult<ModelDownload> {
        let resp = check(
            self.http
                .get(self.url(path))
                .bearer_auth(&self.token)
                .send()
                .await?,
        )
        .await?;
        let sha256 = resp
            .headers()
            .get("x-confide-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(ModelDownload {
            bytes: resp.bytes().await?.to_vec(),
            sha256,
        })
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
        self.get_bytes(&format!("/v1/studies/{study}/models/{version}"))
            .await
    }
    pub async fn privacy_report(&self, study: i64) -> ClientResult<PrivacyReport> {
        self.get(&format!("/v1/studies/{study}/privacy")).await
    }

    // ---- participant ----

    /// Enrols with a one-time token (no credential needed); use the returned credential for a new client.
    pub async fn enrol(&self, token: &str, name: &str) -> ClientResult<EnrolResponse> {
        let resp = self
            .http
            .post(self.url("/v1/participant/enrol"))
            .json(&EnrolRequest {
                token: token.into(),
                name: name.into(),
            })
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }
    /// Long-polls for a task for up to `wait_secs` seconds.
    pub async fn poll_task(&self, wait_secs: u64) -> ClientResult<TaskResponse> {
        self.get(&format!("/v1/participant/task?wait_secs={wait_secs}"))
            .await
    }
    pub async fn download_model(&self, version: i64) -> ClientResult<ModelDownload> {
        self.get_bytes(&format!("/v1/participant/models/{version}"))
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
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        check(resp).await?;
        Ok(())
    }
    /// The server's broadcast for `stage` (JSON text; parse with the secagg message type's `from_json`).
    pub async fn broadcast(&self, round: i64, stage: RoundStage) -> ClientResult<String> {
        let resp = self
            .http
            .get(self.url(&format!(
                "/v1/participant/rounds/{round}/broadcast/{}",
                stage.as_str()
            )))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(check(resp).await?.text().await?)
    }
}
