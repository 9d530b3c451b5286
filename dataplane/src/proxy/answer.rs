//! The answers a proxy gives when it cannot forward: each says which side failed and maps to
//! the right status, with a short JSON body — or, to a gRPC client, the gRPC status it
//! stands for.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::upstream::grpc;

/// Who is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The client's request (no service for it).
    Downstream,
    /// The upstream version (refused, reset, timed out).
    Upstream,
    /// The proxy itself (no config yet, fallback engaged).
    Proxy,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProxyError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error: &'static str,
    pub side: Side,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl ProxyError {
    pub fn no_config() -> ProxyError {
        ProxyError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "not_ready",
            side: Side::Proxy,
            message: "this proxy has no routing config yet".into(),
            service: None,
            version: None,
        }
    }

    pub fn no_service(host: &str, path: &str) -> ProxyError {
        ProxyError {
            status: StatusCode::NOT_FOUND,
            error: "no_service",
            side: Side::Downstream,
            message: format!("no service is configured for host `{host}` and path `{path}`"),
            service: None,
            version: None,
        }
    }

    pub fn upstream_unavailable(
        service: &str,
        version: &str,
        endpoint: &str,
        cause: &str,
    ) -> ProxyError {
        ProxyError {
            status: StatusCode::BAD_GATEWAY,
            error: "upstream_unavailable",
            side: Side::Upstream,
            message: format!("upstream {endpoint} failed: {cause}"),
            service: Some(service.into()),
            version: Some(version.into()),
        }
    }

    pub fn upstream_timeout(
        service: &str,
        version: &str,
        endpoint: &str,
        timeout_ms: u32,
    ) -> ProxyError {
        ProxyError {
            status: StatusCode::GATEWAY_TIMEOUT,
            error: "upstream_timeout",
            side: Side::Upstream,
            message: format!("upstream {endpoint} sent no response within {timeout_ms} ms"),
            service: Some(service.into()),
            version: Some(version.into()),
        }
    }

    pub fn grpc_needs_http2(service: &str, version: &str) -> ProxyError {
        ProxyError {
            status: StatusCode::BAD_GATEWAY,
            error: "protocol_mismatch",
            side: Side::Proxy,
            message: format!(
                "this is a gRPC call, and version {version} of {service} is configured for \
                 HTTP/1.1; set its protocol to h2c or auto"
            ),
            service: Some(service.into()),
            version: Some(version.into()),
        }
    }

    pub fn fallback(service: &str, version: &str, reason: &str) -> ProxyError {
        ProxyError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "fallback",
            side: Side::Proxy,
            message: format!("version {version} of {service} is not taking requests: {reason}"),
            service: Some(service.into()),
            version: Some(version.into()),
        }
    }

    /// The error as a gRPC client understands it: a trailers-only answer (HTTP 200) with the
    /// status code the error stands for and its message.
    pub fn grpc_response(&self) -> Response<Full<Bytes>> {
        let code = match self.status {
            StatusCode::NOT_FOUND => grpc::UNIMPLEMENTED,
            StatusCode::GATEWAY_TIMEOUT => grpc::DEADLINE_EXCEEDED,
            s if s.is_server_error() => grpc::UNAVAILABLE,
            _ => grpc::INTERNAL,
        };
        grpc::trailers_only(code, &self.message)
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::grpc::{DEADLINE_EXCEEDED, GRPC_MESSAGE, UNIMPLEMENTED, status_of};

    #[test]
    fn proxy_errors_become_grpc_statuses() {
        let e = ProxyError::upstream_timeout("s", "v2", "127.0.0.1:1", 100);
        let r = e.grpc_response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(status_of(r.headers()), Some(DEADLINE_EXCEEDED));
        assert_eq!(
            r.headers()[GRPC_MESSAGE],
            "upstream 127.0.0.1:1 sent no response within 100 ms"
        );
        let e = ProxyError::no_service("h", "/x");
        assert_eq!(status_of(e.grpc_response().headers()), Some(UNIMPLEMENTED));
    }
}
