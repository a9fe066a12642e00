//! Enrolment: the one-time token is exchanged for the agent's long-term identity, stored durably in the state
//! directory, once; the site's identity public key (created before, see [`super::state`]) is registered with it. Transport failures are retried with the agent's backoff until it succeeds or the agent is shut
//! down; a refused token is fatal with what to do about it.

use backon::Retryable;
use confide_client::CoordinatorClient;
use confide_common::secagg::IdentityPublicKey;
use tokio_util::sync::CancellationToken;

use super::AgentError;
use super::config::AgentConfig;
use super::state::{Identity, StateDir};
use super::transport::Backoff;

/// Enrols with the one-time token and stores the identity. `None` if shut down meanwhile.
pub(super) async fn enrol(
    cfg: &AgentConfig,
    state: &StateDir,
    identity_key: IdentityPublicKey,
    http: reqwest::Client,
    backoff: &Backoff,
    shutdown: &CancellationToken,
) -> Result<Option<Identity>, AgentError> {
    let token = cfg.enrolment_token.as_deref().ok_or_else(|| {
        AgentError::Fatal(format!(
            "{} holds no identity yet: enrol with --enrolment-token (or CONFIDE_ENROLMENT_TOKEN)",
            state.path().display()
        ))
    })?;
    let url = cfg.coordinator_url.as_deref().ok_or_else(|| {
        AgentError::Fatal("enrolment needs the coordinator URL (--coordinator-url)".into())
    })?;
    let name = cfg.name.as_deref().ok_or_else(|| {
        AgentError::Fatal(
            "enrolment needs a display name (--name, CONFIDE_PARTICIPANT_NAME or 'name' in the config file)".into(),
        )
    })?;
    let client = CoordinatorClient::with_http(url, "", http);
    let attempts = (|| client.enrol_with_identity(token, name, Some(identity_key)))
        .retry(backoff.builder())
        .when(|e| e.is_transient())
        .notify(|e, wait| {
            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "enrolment failed; retrying");
        });
    let enrolled = tokio::select! {
        _ = shutdown.cancelled() => return Ok(None),
        r = attempts => r.map_err(|e| match e.connect_failure() {
            Some(_) => AgentError::Fatal(format!("enrolment failed: {e}")),
            None => AgentError::Fatal(format!(
                "enrolment refused: {e} (ask the operator for a new token if this one was used or expired)"
            )),
        })?,
    };
    let identity = Identity {
        participant_id: enrolled.participant_id,
        study_id: enrolled.study_id,
        credential: enrolled.credential,
        coordinator_url: url.to_string(),
        name: name.to_string(),
        enrolled_at_ms: confide_runtime::now_ms(),
    };
    state.save_identity(&identity)?;
    tracing::info!(
        participant = identity.participant_id,
        study = identity.study_id,
        fingerprint = %identity_key.fingerprint(),
        "enrolled (identity key registered); identity stored in the state directory"
    );
    Ok(Some(identity))
}
