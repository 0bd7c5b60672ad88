//! The API's error body: every failure is JSON `{"error": {"code", "message"}}` with the
//! matching HTTP status, and every runtime error maps to one code.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::json;

use crate::Error;

/// An API failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`unauthorized`, `refused`, ...).
    pub code: &'static str,
    /// What went wrong, for a human.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 with code `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 415 with code `unsupported_media_type`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 500 with code `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// `web::Query`, `web::Path` and `web::Json` answer in this API's JSON shape, not actix's
/// plain text: install these on the app so that extractor refusals carry a code too.
pub(crate) fn extractor_configs() -> (web::QueryConfig, web::PathConfig, web::JsonConfig) {
    (
        web::QueryConfig::default().error_handler(query_error),
        web::PathConfig::default().error_handler(path_error),
        web::JsonConfig::default().error_handler(json_error),
    )
}

fn query_error(e: QueryPayloadError, req: &HttpRequest) -> actix_web::Error {
    let reason = match &e {
        QueryPayloadError::Deserialize(inner) => inner.to_string(),
        other => other.to_string(),
    };
    ApiError::bad_request(format!(
        "bad query string `{}`: {reason}",
        req.query_string()
    ))
    .into()
}

fn path_error(e: PathError, req: &HttpRequest) -> actix_web::Error {
    let reason = match &e {
        PathError::Deserialize(inner) => inner.to_string(),
        other => other.to_string(),
    };
    ApiError::bad_request(format!("bad path `{}`: {reason}", req.path())).into()
}

fn json_error(e: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let status = e.status_code();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    ApiError::new(
        status,
        code,
        format!("the body is not the expected JSON: {e}"),
    )
    .into()
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        // Overloaded or draining: the client may send it again shortly.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        response.json(json!({ "error": { "code": self.code, "message": self.message } }))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            Error::Ir(ir) => ir_status(ir),
            Error::Refused { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            Error::BadEvent { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad_event"),
            Error::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::BadPackage { .. } | Error::BadManifest { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_package")
            }
            Error::UnsignedPackage { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unsigned"),
            Error::UnknownKey { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_key"),
            Error::RevokedKey { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "revoked_key"),
            Error::BadSignature { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad_signature"),
            Error::Backend { .. } => (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::Device { .. } => (StatusCode::SERVICE_UNAVAILABLE, "device_unavailable"),
            Error::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            Error::RevokedPlugin { .. } => (StatusCode::CONFLICT, "revoked"),
            Error::VersionConflict { .. } => (StatusCode::CONFLICT, "conflict"),
            Error::PublisherChanged { .. } => (StatusCode::CONFLICT, "publisher_changed"),
            Error::NotInstalled { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::Incompatible { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "incompatible"),
            Error::Wasm { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_component"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        // Pushing back (overloaded, draining) is the node working as meant, not a failure.
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!("API request failed: {message}");
        }
        Self::new(status, code, message)
    }
}

fn ir_status(e: &eyeflow_ir::Error) -> (StatusCode, &'static str) {
    use eyeflow_ir::Error as E;
    match e {
        E::TooLarge { .. } | E::TooManyInstructions { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        }
        E::Unsigned { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unsigned"),
        E::MalformedSignature { .. } | E::BadSignature { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "bad_signature")
        }
        E::UnknownKey { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_key"),
        E::RevokedKey { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "revoked_key"),
        E::UnknownIrVersion { .. } | E::IncompatibleIrVersion { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "incompatible")
        }
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_program"),
    }
}
