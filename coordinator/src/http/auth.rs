//! Who is asking: the bearer secret of a request, resolved to an operator or a participant (a secret of the other
//! kind is refused with 403, an unknown one with 401).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::store::ParticipantRow;

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
        Err(ApiError::Unauthorized(
            "unknown operator token (or it was revoked)".into(),
        ))
    }
}

impl FromRequestParts<AppState> for Participant {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if let Some(p) = state.store.participant_for_credential(token).await? {
            state.note_seen(&p);
            return Ok(Self(p));
        }
        if state.store.operator_for_token(token).await?.is_some() {
            return Err(ApiError::Forbidden(
                "this route needs a participant credential; an operator token was given".into(),
            ));
        }
        Err(ApiError::Unauthorized(
            "unknown participant credential (or it was revoked)".into(),
        ))
    }
}
