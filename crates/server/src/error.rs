//! JSON error answers: every refusal says what was wrong in a body a sender can log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: message.into(),
            retry_after_secs: Some(retry_after_secs),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Why state the gateway keeps in the store (a directory copy, an ERP's user list, an
/// approval) could not be read, written or refreshed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Written by another version, or edited by hand; the next refresh from the vendor replaces it.
    #[error("the stored {what} is unreadable ({reason})")]
    Unreadable { what: String, reason: String },
    #[error(transparent)]
    Vendor(#[from] connect::DeliveryError),
    /// Ticks or inputs could not be committed.
    #[error("{}", .0.message)]
    Commit(ApiError),
}

impl From<ApiError> for StateError {
    fn from(err: ApiError) -> Self {
        StateError::Commit(err)
    }
}
