//! The one error type of the server's APIs, and how it looks over gRPC and over HTTP.
//!
//! Client errors carry their message to the caller; internal errors are logged once, with
//! their cause, and reach the caller as a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use grayline_routing::{FieldError, Invalid};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input; every error names its field.
    #[error("{0}")]
    Invalid(Invalid),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Optimistic concurrency: the service moved on since the caller read it.
    #[error(
        "service `{service}` is at revision {actual}, not {expected} as expected; reload it and try again"
    )]
    Conflict {
        service: String,
        expected: u64,
        actual: u64,
    },
    /// The request is valid but the current state does not allow it.
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A known token whose role (or services) does not cover the request; the message names
    /// the role that would.
    #[error("{0}")]
    PermissionDenied(String),
    /// An HTTP method the path does not offer (JSON API only).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request is larger than the API accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A replicated store that cannot commit now (etcd without a quorum); the message names
    /// it. Reads from the replica's copy still work.
    #[error("{0}")]
    Unavailable(String),
    /// The store refuses writes for want of space (etcd's quota); nothing was applied. The
    /// message says so in the store's words and what to do.
    #[error("{0}")]
    StoreFull(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(Invalid::one(field, message))
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::Conflict { .. } => "revision_conflict",
            ApiError::Precondition(_) => "failed_precondition",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::StoreFull(_) => "store_full",
            ApiError::Internal(_) => "internal",
        }
    }

    fn log_if_internal(&self) {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::Invalid(e)
    }
}

impl From<sled::Error> for ApiError {
    fn from(e: sled::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("sled"))
    }
}

/// Longest gRPC status message sent. It travels in an HTTP/2 trailer, and a client refuses a
/// header block larger than it allows (16 KiB by default in hyper) with a protocol error
/// instead of the status: a service with 64 bad hosts would otherwise arrive as a transport
/// failure rather than `INVALID_ARGUMENT`.
pub const MAX_GRPC_MESSAGE: usize = 4096;

/// The message of `e` within [`MAX_GRPC_MESSAGE`]: whole field errors as long as they fit,
/// then how many more there are.
fn grpc_message(e: &ApiError) -> String {
    let ApiError::Invalid(invalid) = e else {
        return truncated(e.to_string(), MAX_GRPC_MESSAGE);
    };
    let mut out = String::new();
    for (i, field) in invalid.errors.iter().enumerate() {
        let next = field.to_string();
        let rest = invalid.errors.len() - i;
        let more = format!("; and {rest} more (the JSON API lists every field)");
        let sep = if i == 0 { "" } else { "; " };
        if out.len() + sep.len() + next.len() + more.len() > MAX_GRPC_MESSAGE {
            if i == 0 {
                return truncated(next, MAX_GRPC_MESSAGE);
            }
            out.push_str(&more);
            return out;
        }
        out.push_str(sep);
        out.push_str(&next);
    }
    out
}

fn truncated(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max - '…'.len_utf8();
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.log_if_internal();
        let message = grpc_message(&e);
        match e {
            ApiError::Invalid(_) => tonic::Status::invalid_argument(message),
            ApiError::NotFound(_) => tonic::Status::not_found(message),
            ApiError::AlreadyExists(_) => tonic::Status::already_exists(message),
            ApiError::Conflict { .. } | ApiError::Precondition(_) => {
                tonic::Status::failed_precondition(message)
            }
            ApiError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            ApiError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            ApiError::MethodNotAllowed(_) => tonic::Status::unimplemented(message),
            ApiError::TooLarge(_) => tonic::Status::resource_exhausted(message),
            ApiError::Unavailable(_) => tonic::Status::unavailable(message),
            ApiError::StoreFull(_) => tonic::Status::resource_exhausted(message),
            ApiError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

/// The JSON error body: `{"error": {"code", "message", "fields": [{"field", "message"}]}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let status = match &self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Precondition(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StoreFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let fields = match &self {
            ApiError::Invalid(invalid) => invalid.errors.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                fields,
            },
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_stay_small_enough_for_a_trailer() {
        let many = Invalid {
            errors: (0..64)
                .map(|i| FieldError::new(format!("service.hosts[{i}]"), "x".repeat(200)))
                .collect(),
        };
        let status = tonic::Status::from(ApiError::Invalid(many));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let m = status.message();
        assert!(m.len() <= MAX_GRPC_MESSAGE, "{}", m.len());
        assert!(m.starts_with("service.hosts[0]: xxx"), "{m}");
        assert!(m.ends_with("more (the JSON API lists every field)"), "{m}");
        let one = ApiError::invalid("f", "é".repeat(5000));
        let m = tonic::Status::from(one).message().to_string();
        assert!(
            m.len() <= MAX_GRPC_MESSAGE && m.ends_with('…'),
            "{}",
            m.len()
        );
        let small = ApiError::invalid("revision", "required");
        assert_eq!(tonic::Status::from(small).message(), "revision: required");
    }
}
