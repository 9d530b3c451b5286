//! gRPC on the wire. A call is an HTTP/2 request with `content-type: application/grpc…`;
//! its outcome is its `grpc-status`, not the HTTP 200 that carries it — in the headers of a
//! trailers-only answer, or in the trailers after every message. What the proxy does with a
//! call's outcome is `proxy::call`; the answers it makes itself as gRPC statuses are
//! `proxy::answer`.

use bytes::Bytes;
use http::HeaderMap;
use http::Response;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::Full;

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The status codes the proxy answers with itself.
pub const UNIMPLEMENTED: u32 = 12;
pub const INTERNAL: u32 = 13;
pub const UNAVAILABLE: u32 = 14;
pub const DEADLINE_EXCEEDED: u32 = 4;

/// Whether the request is a gRPC call: HTTP/2 with a gRPC content type (`application/grpc`,
/// `application/grpc+proto`, …; gRPC-Web is not).
pub fn is_grpc(version: http::Version, headers: &HeaderMap) -> bool {
    version == http::Version::HTTP_2
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
            .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
}

/// The `grpc-status` in `headers` (a trailers-only answer carries it there).
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(GRPC_STATUS)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A trailers-only answer (HTTP 200) with `code` and `message`: how a gRPC client is told of
/// an error before any message.
pub fn trailers_only(code: u32, message: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(GRPC_STATUS, HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert(GRPC_MESSAGE, v);
    }
    resp
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// With this `grpc-status`.
    Status(u32),
    /// The response ended without a `grpc-status`: the client sees an error.
    NoStatus,
    /// The upstream broke the response stream.
    Broken,
    /// The client went away first; nothing to hold against the upstream.
    Cancelled,
}

impl Ended {
    pub fn failed(self) -> bool {
        matches!(self, Ended::Status(1..) | Ended::NoStatus | Ended::Broken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn grpc_content_types() {
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpcx", false),
            ("application/json", false),
        ] {
            let h = headers(&[("content-type", ct)]);
            assert_eq!(is_grpc(http::Version::HTTP_2, &h), grpc, "{ct}");
            assert!(!is_grpc(http::Version::HTTP_11, &h), "{ct} over HTTP/1.1");
        }
        assert!(!is_grpc(http::Version::HTTP_2, &HeaderMap::new()));
    }

    #[test]
    fn statuses_and_what_fails() {
        assert_eq!(status_of(&headers(&[("grpc-status", "14")])), Some(14));
        assert_eq!(status_of(&headers(&[("grpc-status", "x")])), None);
        assert!(!Ended::Status(0).failed());
        assert!(Ended::Status(2).failed());
        assert!(Ended::NoStatus.failed() && Ended::Broken.failed());
        assert!(!Ended::Cancelled.failed());
    }

    #[test]
    fn a_trailers_only_answer_carries_its_status_and_message_encoded() {
        let r = trailers_only(UNAVAILABLE, "50% é\n");
        assert_eq!(r.status(), http::StatusCode::OK);
        assert_eq!(status_of(r.headers()), Some(UNAVAILABLE));
        assert_eq!(r.headers()[GRPC_MESSAGE], "50%25 %C3%A9%0A");
    }
}
