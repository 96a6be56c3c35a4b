use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// Errors of the simulator chassis and of simulators' record handlers.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator `{simulator}` has no record type `{entity}`; known: {known}")]
    UnknownEntity { simulator: &'static str, entity: String, known: String },
    #[error("invalid `{entity}` record: {detail}")]
    InvalidRecord { entity: String, detail: String },
    #[error("invalid fault plan: {detail}")]
    InvalidFault { detail: String },
    #[error("cannot bind simulator `{simulator}` to {addr}: {source}; is the port already in use?")]
    Bind {
        simulator: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("simulator `{simulator}` stopped with an error: {detail}")]
    Serve { simulator: &'static str, detail: String },
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::UnknownEntity { .. } => StatusCode::NOT_FOUND,
            Self::InvalidRecord { .. } | Self::InvalidFault { .. } => StatusCode::BAD_REQUEST,
            Self::Bind { .. } | Self::Serve { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "error": self.to_string() });
        (status, axum::Json(body)).into_response()
    }
}
