//! Traffic mirroring: a copy of a live request sent, fire-and-forget, to the version a route
//! mirrors to. The copy runs in a task of its own and its answer is discarded, so the
//! client's answer never waits for it or fails because of it. It is bounded by the target's
//! `mirror_limits`: at most `max_in_flight` copies at a time per proxy (one beyond it is not
//! sent), and a body is copied only up to `max_body_bytes` (a request with a longer one is
//! not mirrored). The copy is marked with `x-grayline-mirror: <the live version>` and counted
//! in the target's mirrored statistics, which never mix with its live traffic; it does not
//! touch the target's breaker or outlier detection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt as _;

use crate::routes::{Skip, VersionRuntime};
use crate::stats::Outcome;
use crate::traffic::lane::Stamp;
use crate::upstream::body::{BodyCopy, CopyReady, TooLarge, UpstreamBody};
use crate::upstream::client::{Clients, ResponseBody, Upstream};
use crate::upstream::grpc;

/// Marks a mirrored copy; the value names the version that served the live request.
pub const MIRROR_HEADER: HeaderName = HeaderName::from_static("x-grayline-mirror");

/// A slot under the target's in-flight cap, held until the copy is answered.
#[derive(Debug)]
struct Slot(Arc<VersionRuntime>);

impl Slot {
    fn take(target: &Arc<VersionRuntime>) -> Option<Slot> {
        let max = target.definition().mirror_limits.max_in_flight;
        let now = target.mirror_in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = Slot(target.clone());
        (now <= max).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.mirror_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a copy needs to know about the live request.
#[derive(Debug)]
pub struct Live<'a> {
    pub parts: &'a http::request::Parts,
    /// The HTTP version the client spoke (`auto` follows it).
    pub downstream: http::Version,
    /// The request has a body still to come.
    pub has_body: bool,
    /// The request is a gRPC call.
    pub grpc: bool,
    pub served_by: &'a VersionRuntime,
    pub version_header: &'a HeaderName,
    pub lane_header: &'a HeaderName,
    /// The lane the copy carries, worked out like the live request's.
    pub lane: Stamp,
    pub stats: bool,
}

/// Starts a copy of `live` to `target` unless a limit says no. For a request with a body,
/// returns the [`BodyCopy`] the live body fills; the copy is sent once it is complete.
pub fn start(clients: &Clients, target: &Arc<VersionRuntime>, live: Live<'_>) -> Option<BodyCopy> {
    let skip = |why: Skip| {
        target.mirror_skipped[why as usize].fetch_add(1, Ordering::Relaxed);
        None
    };
    let limit = target.definition().mirror_limits.max_body_bytes as usize;
    if live.has_body && content_length(live.parts).is_some_and(|n| n > limit as u64) {
        return skip(Skip::BodyTooLarge);
    }
    if target.has_no_endpoint() {
        return skip(Skip::NoInstance);
    }
    let upstream = clients.pick(target.definition().protocol, live.downstream);
    if live.grpc && upstream != Upstream::H2 {
        return skip(Skip::Protocol);
    }
    let Some(slot) = Slot::take(target) else {
        return skip(Skip::InFlight);
    };
    let mut headers = live.parts.headers.clone();
    headers.insert(live.version_header.clone(), target.name_value.clone());
    headers.insert(MIRROR_HEADER, live.served_by.name_value.clone());
    live.lane.apply(live.lane_header, &mut headers);
    if upstream != Upstream::H2 {
        // `te: trailers` is for HTTP/2 upstreams only.
        headers.remove(header::TE);
    }
    if !live.has_body {
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut req = Request::new(UpstreamBody::Empty);
    *req.method_mut() = live.parts.method.clone();
    *req.uri_mut() = live.parts.uri.clone();
    *req.version_mut() = upstream.version();
    *req.headers_mut() = headers;
    let (copy, body) = if live.has_body {
        let (copy, body) = BodyCopy::new(limit);
        (Some(copy), Some(body))
    } else {
        (None, None)
    };
    tokio::spawn(send(clients.clone(), upstream, slot, req, body, live.stats));
    copy
}

fn content_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.parse().ok())
}

/// Waits for the body, sends the copy to one of the target's endpoints, and counts what came
/// back; the answer itself is read and dropped.
async fn send(
    clients: Clients,
    upstream: Upstream,
    slot: Slot,
    mut req: Request<UpstreamBody>,
    body: Option<CopyReady>,
    stats: bool,
) {
    let target = &slot.0;
    if let Some(body) = body {
        let bytes = match body.await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(TooLarge)) => {
                target.mirror_skipped[Skip::BodyTooLarge as usize].fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                target.mirror_skipped[Skip::Incomplete as usize].fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        *req.body_mut() = UpstreamBody::Buffered((!bytes.is_empty()).then_some(bytes));
    }
    let endpoint = target.pick(|| None);
    let started = Instant::now();
    let sent = clients.send(upstream, &target.endpoints[endpoint], req);
    let (outcome, latency) = match tokio::time::timeout(target.timeout, sent).await {
        Ok(Ok(resp)) => {
            let latency = started.elapsed();
            let status = resp.status().as_u16();
            let grpc_error = drain(resp, target).await;
            (
                Outcome {
                    grpc_error,
                    ..Outcome::status(status)
                },
                latency,
            )
        }
        Ok(Err(_)) => (
            Outcome {
                upstream_error: true,
                ..Outcome::status(502)
            },
            started.elapsed(),
        ),
        Err(_) => (
            Outcome {
                upstream_error: true,
                ..Outcome::status(504)
            },
            started.elapsed(),
        ),
    };
    if stats && let Some(mirrored) = &target.mirror_stats {
        mirrored.record(outcome, latency.as_micros() as u64);
    }
}

/// Reads the answer to its end (so the connection can be used again), within the target's
/// timeout; whether it was a gRPC call that failed.
async fn drain(resp: Response<ResponseBody>, target: &VersionRuntime) -> bool {
    let header_status = grpc::status_of(resp.headers());
    let is_grpc = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut body = resp.into_body();
    let mut trailer_status = None;
    let read = async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(t) = f.trailers_ref() {
                        trailer_status = grpc::status_of(t);
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    let whole = tokio::time::timeout(target.timeout, read)
        .await
        .unwrap_or(false);
    is_grpc && (!whole || header_status.or(trailer_status).is_none_or(|s| s != 0))
}
