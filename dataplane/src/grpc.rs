//! gRPC calls through the proxy. A call is an HTTP/2 request with `content-type:
//! application/grpc…`; the proxy routes it like any request (its metadata are headers), and
//! judges it by its `grpc-status`, not by the HTTP 200 that carries it: a non-zero status is
//! a failure for the breaker, outlier detection and the statistics. The status usually comes
//! in the trailers, after every message, so a [`Call`] watches the response go by and
//! records the call's outcome when the trailers pass (or the stream ends without them).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body::Frame;
use http_body_util::Full;

use crate::breaker::Admit;
use crate::error::ProxyError;
use crate::observed::{Observed, Observer};
use crate::runtime::VersionRuntime;
use crate::stats::Outcome;

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The status codes the proxy answers with itself.
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;
const DEADLINE_EXCEEDED: u32 = 4;

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

/// A proxy error as a gRPC client understands it: a trailers-only answer (HTTP 200) with the
/// status code the error stands for and its message.
pub fn error_response(e: &ProxyError) -> Response<Full<Bytes>> {
    let code = match e.status {
        StatusCode::NOT_FOUND => UNIMPLEMENTED,
        StatusCode::GATEWAY_TIMEOUT => DEADLINE_EXCEEDED,
        s if s.is_server_error() => UNAVAILABLE,
        _ => INTERNAL,
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(GRPC_STATUS, HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&e.message)) {
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

/// What the proxy still has to record about a call whose status is still to come: it
/// watches the response go by ([`GrpcBody`]) and records once, when the trailers pass, the
/// stream ends or breaks, or the client goes away (dropping it).
#[derive(Debug)]
pub struct Call {
    pub version: Arc<VersionRuntime>,
    pub endpoint: usize,
    pub admit: Admit,
    /// Time to the response headers, the latency a call is counted with (a streaming call
    /// may stay open for as long as it likes).
    pub latency_us: u64,
    pub stats: bool,
    /// The `grpc-status` of the trailers, once they went by.
    pub status: Option<u32>,
    pub recorded: bool,
    /// Whose call it was, for the judged sample.
    pub user: Option<crate::stats::User>,
}

/// A gRPC response passed through, reporting its call's outcome once.
pub type GrpcBody = Observed<Call>;

impl Call {
    /// Records the outcome everywhere a request's outcome goes.
    fn record(&mut self, ended: Ended) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let failed = ended.failed();
        self.version.record_try(self.endpoint, failed);
        self.version.breaker.record(self.admit, failed);
        if self.stats {
            self.version.stats.record(
                Outcome {
                    upstream_error: ended == Ended::Broken,
                    grpc_error: failed,
                    ..Outcome::status(200)
                }
                .by(self.user),
                self.latency_us,
            );
        }
    }
}

impl Observer for Call {
    fn frame(&mut self, frame: &Frame<Bytes>) -> bool {
        if let Some(trailers) = frame.trailers_ref() {
            self.status = status_of(trailers);
        }
        true
    }

    fn ended(mut self, whole: bool) {
        let ended = match (whole, self.status) {
            (false, _) => Ended::Broken,
            (true, Some(code)) => Ended::Status(code),
            (true, None) => Ended::NoStatus,
        };
        self.record(ended);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(Ended::Cancelled);
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
    fn proxy_errors_become_grpc_statuses() {
        let e = ProxyError::upstream_timeout("s", "v2", "127.0.0.1:1", 100);
        let r = error_response(&e);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(status_of(r.headers()), Some(DEADLINE_EXCEEDED));
        assert_eq!(
            r.headers()[GRPC_MESSAGE],
            "upstream 127.0.0.1:1 sent no response within 100 ms"
        );
        let e = ProxyError::no_service("h", "/x");
        assert_eq!(status_of(error_response(&e).headers()), Some(UNIMPLEMENTED));
        assert_eq!(percent_encode("50% é\n"), "50%25 %C3%A9%0A");
    }
}
