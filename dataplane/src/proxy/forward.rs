//! Forwarding with retries: one try to an endpoint, recorded for its outlier detection, and
//! again elsewhere while that is safe and the retry budget allows — a request that never
//! reached the upstream to another endpoint, an idempotent one on 502/503/504 or a broken
//! try when the version says so (see [`grayline_routing::Retry`]).

use std::sync::atomic::Ordering;
use std::time::Instant;

use http::{Request, Response, StatusCode};
use http_body::Body as _;

use super::answer::ProxyError;
use crate::routes::VersionRuntime;
use crate::upstream::body::{ClientBody, Rewind, UpstreamBody};
use crate::upstream::client::{Clients, ResponseBody, SendError, Upstream};
use crate::upstream::error_chain;
use crate::upstream::grpc;

/// Sends the request to `first`, and again elsewhere while that is safe and the retry
/// budget allows (see [`grayline_routing::Retry`]). Every try's outcome goes to the
/// endpoint's outlier detection (a gRPC call's, once its status is known); the error is
/// the last try's. Answers with the endpoint that answered.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    clients: &Clients,
    upstream: Upstream,
    version: &VersionRuntime,
    first: usize,
    parts: http::request::Parts,
    body: ClientBody,
    started: Instant,
    grpc: bool,
) -> Result<(Response<ResponseBody>, usize), ProxyError> {
    let deadline = started + version.timeout;
    if !version.can_retry() {
        let body = if body.is_end_stream() {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Streamed(body)
        };
        let req = Request::from_parts(parts, body);
        return match try_once(clients, upstream, version, first, req, deadline, grpc).await {
            Try::Answered(resp) => Ok((resp, first)),
            Try::Failed(err) => Err(unavailable(version, first, &err, 1)),
            Try::TimedOut(limit) => Err(timed_out(version, first, limit, 1)),
        };
    }
    version.budget.deposit();
    // A body can go again only while unread; an empty one always can.
    let empty = body.is_end_stream();
    let rewind = (!empty).then(Rewind::default);
    let mut body = Some(match &rewind {
        None => UpstreamBody::Empty,
        Some(r) => UpstreamBody::rewindable(body, r),
    });
    let idempotent = is_idempotent(&parts.method);
    let mut unsent_left = UNSENT_RETRIES;
    // As nginx's `proxy_next_upstream error`: an idempotent request whose connection broke
    // before any answer goes to another endpoint once, whatever `retry.attempts` says.
    let mut broken_left = if idempotent { BROKEN_RETRIES } else { 0 };
    let mut attempts_left = version.definition().retry.attempts;
    let mut tried = [0usize; MAX_TRIES];
    let mut tries = 0;
    let mut endpoint = first;
    loop {
        tried[tries] = endpoint;
        tries += 1;
        let mut req = Request::new(body.take().unwrap_or(UpstreamBody::Empty));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        let outcome = try_once(clients, upstream, version, endpoint, req, deadline, grpc).await;

        // Whether this try failed in a way worth another, and where to send it.
        let next = match &outcome {
            Try::Answered(resp) => {
                let retryable = matches!(resp.status().as_u16(), 502..=504);
                (retryable && idempotent && attempts_left > 0).then_some(Again::Attempt)
            }
            Try::Failed(err) if err.never_sent() && unsent_left > 0 => Some(Again::Unsent),
            Try::Failed(_) if broken_left > 0 => Some(Again::Broken),
            Try::Failed(_) => (idempotent && attempts_left > 0).then_some(Again::Attempt),
            Try::TimedOut(_) => (idempotent && attempts_left > 0 && Instant::now() < deadline)
                .then_some(Again::Attempt),
        };
        let target = next.and_then(|again| {
            if tries == MAX_TRIES {
                return None;
            }
            match version.pick_other(&tried[..tries]) {
                Some(other) => Some((again, other)),
                // A status retry may go to the same endpoint; a refused one may not, nor a
                // broken one — unless the version's attempts allow it there.
                None if again == Again::Attempt => Some((again, endpoint)),
                None if again == Again::Broken && attempts_left > 0 => {
                    Some((Again::Attempt, endpoint))
                }
                None => None,
            }
        });
        let resend = target.and_then(|t| match &rewind {
            None => Some((t, UpstreamBody::Empty)),
            Some(r) => r.take().map(|b| (t, UpstreamBody::rewindable(b, r))),
        });
        let Some(((kind, other), again)) = resend.filter(|_| retry_allowed(version)) else {
            return match outcome {
                Try::Answered(resp) => Ok((resp, endpoint)),
                Try::Failed(err) => Err(unavailable(version, endpoint, &err, tries)),
                Try::TimedOut(limit) => Err(timed_out(version, endpoint, limit, tries)),
            };
        };
        match kind {
            Again::Unsent => unsent_left -= 1,
            Again::Broken => broken_left -= 1,
            Again::Attempt => attempts_left -= 1,
        }
        drop(outcome);
        endpoint = other;
        body = Some(again);
    }
}

/// One try: records its outcome for the endpoint's outlier detection, unless it is a
/// gRPC call whose status is still to come (see [`call::Call`]).
async fn try_once(
    clients: &Clients,
    upstream: Upstream,
    version: &VersionRuntime,
    endpoint: usize,
    req: Request<UpstreamBody>,
    deadline: Instant,
    grpc: bool,
) -> Try {
    let limit = version
        .per_try_timeout
        .min(deadline.saturating_duration_since(Instant::now()));
    let sent = clients.send(upstream, &version.endpoints[endpoint], req);
    let outcome = match tokio::time::timeout(limit, sent).await {
        Ok(Ok(resp)) => Try::Answered(resp),
        Ok(Err(err)) => Try::Failed(err),
        Err(_) => Try::TimedOut(limit),
    };
    let failed = match &outcome {
        Try::Answered(resp) if grpc && resp.status() == StatusCode::OK => {
            match grpc::status_of(resp.headers()) {
                Some(code) => code != 0,
                None => return outcome,
            }
        }
        Try::Answered(resp) => resp.status().is_server_error(),
        _ => true,
    };
    version.record_try(endpoint, failed);
    outcome
}

fn unavailable(
    version: &VersionRuntime,
    endpoint: usize,
    err: &SendError,
    tries: usize,
) -> ProxyError {
    let endpoint = &version.endpoints[endpoint].text;
    let mut cause = error_chain(err);
    tracing::debug!(service = %version.service(), version = version.name(), %endpoint, %cause, "upstream failed");
    if tries > 1 {
        cause.push_str(&format!(" (the last of {tries} tries)"));
    }
    ProxyError::upstream_unavailable(version.service(), version.name(), endpoint, &cause)
}

/// What one try came to.
enum Try {
    Answered(Response<ResponseBody>),
    Failed(SendError),
    /// No response headers within this long.
    TimedOut(std::time::Duration),
}

/// Takes a retry from the version's budget, counting it either way.
fn retry_allowed(version: &VersionRuntime) -> bool {
    if version.budget.withdraw() {
        version.retries.fetch_add(1, Ordering::Relaxed);
        true
    } else {
        version.retries_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(service = %version.service(), version = version.name(), "retry budget spent; not retrying");
        false
    }
}

/// Why a request goes again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Again {
    /// It never reached the upstream.
    Unsent,
    /// Idempotent, and its connection broke before any answer.
    Broken,
    /// Idempotent, and the version's `retry.attempts` allow another.
    Attempt,
}

/// Tries after the first for a request that never reached the upstream.
const UNSENT_RETRIES: u32 = 2;
/// Tries after the first for an idempotent request whose connection broke before an answer.
const BROKEN_RETRIES: u32 = 1;
/// Tries of one request, whatever the settings allow.
const MAX_TRIES: usize = 1
    + UNSENT_RETRIES as usize
    + BROKEN_RETRIES as usize
    + grayline_routing::limits::MAX_RETRY_ATTEMPTS as usize;

fn timed_out(
    version: &VersionRuntime,
    endpoint: usize,
    limit: std::time::Duration,
    tries: usize,
) -> ProxyError {
    let mut e = ProxyError::upstream_timeout(
        version.service(),
        version.name(),
        &version.endpoints[endpoint].text,
        limit.as_millis() as u32,
    );
    if tries > 1 {
        e.message.push_str(&format!(" (the last of {tries} tries)"));
    }
    e
}

/// Methods that mean the same when sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}
