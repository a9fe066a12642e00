//! The one place errors become HTTP answers: every failure — the service layer's domain errors, the store's, an
//! extractor's rejection — becomes a status and a JSON [`ErrorBody`] saying what was wrong. Internal details
//! (database errors, …) are logged with the request's span and never returned.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use confide_common::api::ErrorBody;

use crate::service::privacy::PrivacyError;
use crate::service::rounds::RoundError;
use crate::service::studies::StudyError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    /// An extractor's rejection (malformed JSON, bad path, body too large, …), with its own status.
    #[error("{1}")]
    Rejected(StatusCode, String),
    #[error("{0}")]
    Unavailable(String),
    /// Logged, answered with a generic message.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Rejected(s, _) => *s,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error (see the coordinator log)".to_string()
            }
            other => {
                tracing::info!(status = status.as_u16(), error = %other, "request rejected");
                other.to_string()
            }
        };
        (status, axum::Json(ErrorBody { error: message })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            StoreError::Conflict(m) | StoreError::Stale(m) => Self::Conflict(m),
            StoreError::Refused(m) => Self::Unprocessable(m),
            StoreError::UnsupportedUrl(_)
            | StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::Corrupt(_)
            | StoreError::Metrics(_) => Self::internal(e),
        }
    }
}

impl From<PrivacyError> for ApiError {
    fn from(e: PrivacyError) -> Self {
        match e {
            PrivacyError::OverBudget(m) | PrivacyError::Invalid(m) => Self::Unprocessable(m),
            // An ε the accountant cannot certify for stored or planned events is the coordinator's failure here
            // (a study whose first round cannot be accounted is refused when it is created).
            PrivacyError::Unaccountable(m) => Self::Internal(m),
            PrivacyError::Store(e) => e.into(),
        }
    }
}

impl From<StudyError> for ApiError {
    fn from(e: StudyError) -> Self {
        match e {
            StudyError::Invalid(m) => Self::Unprocessable(m),
            StudyError::Internal(m) => Self::Internal(m),
            StudyError::Privacy(e) => e.into(),
            StudyError::Store(e) => e.into(),
        }
    }
}

impl From<RoundError> for ApiError {
    fn from(e: RoundError) -> Self {
        match e {
            RoundError::Invalid(m) | RoundError::TooFew { message: m, .. } => {
                Self::Unprocessable(m)
            }
            RoundError::Malformed(m) => Self::BadRequest(m),
            RoundError::NotAllowed(m) => Self::Forbidden(m),
            RoundError::Conflict(m) => Self::Conflict(m),
            RoundError::NotFound(m) => Self::NotFound(m),
            RoundError::Internal(m) => Self::Internal(m),
            RoundError::Study(e) => e.into(),
            RoundError::Privacy(e) => e.into(),
            RoundError::Store(e) => e.into(),
        }
    }
}

fn rejected(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("request body too large: {text}"))
    } else {
        ApiError::Rejected(status, text)
    }
}

/// Whether a body rejection was caused by the body timeout (a client that stalls mid-body).
fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// 408 for a body that stalled, else the rejection's own status and text.
fn body_rejected(
    r: &(dyn std::error::Error + 'static),
    status: StatusCode,
    text: String,
) -> ApiError {
    if body_timed_out(r) {
        return ApiError::Rejected(
            StatusCode::REQUEST_TIMEOUT,
            "the request body stalled for longer than the coordinator's body timeout \
             (--body-timeout-secs); send it without long pauses"
                .into(),
        );
    }
    rejected(status, text)
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        body_rejected(&r, r.status(), r.body_text())
    }
}
impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        let status = r.status();
        // Axum answers a path that does not parse (e.g. /studies/abc) with 400; say which part was wrong.
        rejected(
            if status.is_server_error() {
                StatusCode::BAD_REQUEST
            } else {
                status
            },
            r.body_text(),
        )
    }
}
impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        rejected(r.status(), r.body_text())
    }
}
impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        body_rejected(&r, r.status(), r.body_text())
    }
}
