//! The request path: find the service, ask the engine for a version, apply the version's
//! governance (concurrency limit, breaker, fallback), pick an endpoint that is not ejected and
//! forward, retrying where it is safe, streaming bodies both ways and passing upgrades
//! (WebSocket) through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use grayline_routing::request::WithCookie;
use grayline_routing::split::{bucket_of, bucket_of_ip};
use grayline_routing::{FallbackPolicy, Request as _, Sticky, StickyKey};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ipnet::IpNet;

use crate::body::{Rewind, UpstreamBody};
use crate::breaker::Admit;
use crate::error::ProxyError;
use crate::facts::{HttpFacts, client_ip};
use crate::runtime::{Endpoint, Routing, VersionRuntime};
use crate::stats::Outcome;

pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Settings of the request path that do not come from the server.
#[derive(Clone, Debug)]
pub struct Settings {
    pub trusted_proxies: Vec<IpNet>,
    pub version_header: HeaderName,
    pub tag_responses: bool,
    pub stats: bool,
}

#[derive(Debug)]
pub struct Proxy {
    pub routing: Arc<ArcSwapOption<Routing>>,
    client: Client<HttpConnector, UpstreamBody>,
    settings: Settings,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The client side of a connection, worked out once per connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The peer's address as an `X-Forwarded-For` entry.
    pub forwarded: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), std::net::IpAddr::V4),
            v4 => v4,
        };
        Peer {
            addr,
            forwarded: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a header value"),
        }
    }
}

/// What the engine decided, gathered while the routing state is borrowed.
struct Choice {
    version: Arc<VersionRuntime>,
    minted: Option<(String, String)>,
    affinity: Option<u64>,
}

impl Proxy {
    pub fn new(routing: Arc<ArcSwapOption<Routing>>, settings: Settings) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Proxy {
            routing,
            client,
            settings,
        }
    }

    pub async fn handle(&self, mut req: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        let started = Instant::now();
        let client_ip = client_ip(
            peer.addr.ip(),
            req.headers(),
            &self.settings.trusted_proxies,
        );
        let choice = match self.choose(&req, client_ip) {
            Ok(c) => c,
            Err(e) => return plain(e.response()),
        };
        let version = &choice.version;

        // Governance: the concurrency limit first, so a half-open probe is never wasted.
        let Some(_permit) = version.try_acquire() else {
            return self.fallback(version, "max_concurrent reached", started);
        };
        let endpoint = version.pick(|| choice.affinity);
        let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = match self.upstream_parts(req, version, peer, upgrade.is_some()) {
            Ok(r) => r,
            Err(e) => return plain(e.response()),
        };
        // Asked last, right before sending: an admitted half-open probe must always reach
        // the upstream and report back, or the breaker would wait for it forever. It judges
        // the request's final outcome, after any retries.
        let admit = version.breaker.admit();
        if admit == Admit::No {
            return self.fallback(version, "circuit breaker open", started);
        }

        let mut resp = match self.forward(version, endpoint, parts, body, started).await {
            Ok(resp) => resp,
            Err(e) => {
                version.breaker.record(admit, true);
                self.count(version, e.status, true, false, started);
                return plain(e.response());
            }
        };
        let status = resp.status();
        version.breaker.record(admit, status.is_server_error());
        self.count(version, status, false, false, started);

        if status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(downstream) = upgrade
        {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(downstream, upstream) {
                    Ok((d, u)) => {
                        let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                        let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
        }

        let (mut parts, body) = resp.into_parts();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(&mut parts.headers);
        }
        if self.settings.tag_responses {
            parts.headers.insert(
                self.settings.version_header.clone(),
                version.name_value.clone(),
            );
        }
        if let Some((name, id)) = &choice.minted {
            let cookie = format!("{name}={id}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                parts.headers.append(header::SET_COOKIE, v);
            }
        }
        Response::from_parts(parts, Either::Left(body))
    }

    /// Finds the service and asks the engine; the routing state is borrowed only here.
    fn choose(&self, req: &Request<Incoming>, ip: std::net::IpAddr) -> Result<Choice, ProxyError> {
        let guard = self.routing.load();
        let routing = guard.as_ref().ok_or_else(ProxyError::no_config)?;
        let host = request_host(req).unwrap_or("");
        let path = req.uri().path();
        let index = routing
            .catalog
            .find_index(host, path)
            .ok_or_else(|| ProxyError::no_service(host, path))?;
        let compiled = &routing.catalog.services()[index];
        let facts = HttpFacts::new(req.headers(), req.uri().query(), Some(ip));
        let mut decision = compiled.decide(&facts, fastrand::u64(..));
        let mut minted = None;
        if let Sticky::MissingKey(StickyKey::Cookie(name)) = decision.sticky {
            // A new user: give them an id now, so this and every later request agree.
            let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            decision = compiled.decide(
                &WithCookie {
                    inner: &facts,
                    name,
                    value: &id,
                },
                0,
            );
            minted = Some((name.clone(), id));
        }
        let affinity = match decision.sticky {
            Sticky::Key(StickyKey::Cookie(name)) => minted
                .as_ref()
                .map(|(_, id)| id.as_str())
                .or_else(|| facts.cookie(name))
                .map(|v| u64::from(bucket_of(v.as_bytes()))),
            Sticky::Key(StickyKey::Header(name)) => facts
                .header(name)
                .map(|v| u64::from(bucket_of(v.as_bytes()))),
            _ => Some(u64::from(bucket_of_ip(ip))),
        };
        Ok(Choice {
            version: routing.versions[index][decision.version].clone(),
            minted,
            affinity,
        })
    }

    /// The request as it goes upstream, without its endpoint: hop-by-hop headers removed,
    /// forwarding headers and the version header added.
    fn upstream_parts(
        &self,
        req: Request<Incoming>,
        version: &VersionRuntime,
        peer: &Peer,
        upgrade: bool,
    ) -> Result<(http::request::Parts, Incoming), ProxyError> {
        let (mut parts, body) = req.into_parts();
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        parts.version = http::Version::HTTP_11;

        let headers = &mut parts.headers;
        let upgrade_value = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(headers);
        headers.remove(header::UPGRADE);
        if let (true, Some(v)) = (upgrade, upgrade_value) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, v);
        }
        if let Some(h) = host {
            headers.insert(header::HOST, h.clone());
            headers.insert(X_FORWARDED_HOST, h);
        }
        let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => HeaderValue::from_str(&format!(
                "{prior}, {}",
                peer.forwarded.to_str().unwrap_or("")
            ))
            .unwrap_or_else(|_| peer.forwarded.clone()),
            None => peer.forwarded.clone(),
        };
        headers.insert(X_FORWARDED_FOR, forwarded_for);
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        headers.insert(
            self.settings.version_header.clone(),
            version.name_value.clone(),
        );
        Ok((parts, body))
    }

    /// Sends the request to `first`, and again elsewhere while that is safe and the retry
    /// budget allows (see [`grayline_routing::Retry`]). Every try's outcome goes to the
    /// endpoint's outlier detection; the error is the last try's.
    async fn forward(
        &self,
        version: &VersionRuntime,
        first: usize,
        mut parts: http::request::Parts,
        body: Incoming,
        started: Instant,
    ) -> Result<Response<Incoming>, ProxyError> {
        let deadline = started + version.timeout;
        if !version.can_retry() {
            let body = if body.is_end_stream() {
                UpstreamBody::Empty
            } else {
                UpstreamBody::Streamed(body)
            };
            parts.uri = upstream_uri(&version.endpoints[first], &parts.uri)?;
            let req = Request::from_parts(parts, body);
            return match self.try_once(version, first, req, deadline).await {
                Try::Answered(resp) => Ok(resp),
                Try::Failed(err) => Err(self.unavailable(version, first, &err, 1)),
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
        let mut attempts_left = version.definition.retry.attempts;
        let mut tried = [0usize; MAX_TRIES];
        let mut tries = 0;
        let mut endpoint = first;
        loop {
            tried[tries] = endpoint;
            tries += 1;
            let mut req = Request::new(body.take().unwrap_or(UpstreamBody::Empty));
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = upstream_uri(&version.endpoints[endpoint], &parts.uri)?;
            *req.version_mut() = parts.version;
            *req.headers_mut() = parts.headers.clone();
            let outcome = self.try_once(version, endpoint, req, deadline).await;

            // Whether this try failed in a way worth another, and where to send it.
            let next = match &outcome {
                Try::Answered(resp) => {
                    let retryable = matches!(resp.status().as_u16(), 502..=504);
                    (retryable && idempotent && attempts_left > 0).then_some(false)
                }
                Try::Failed(err) if never_sent(err) && unsent_left > 0 => Some(true),
                Try::Failed(_) => (idempotent && attempts_left > 0).then_some(false),
                Try::TimedOut(_) => {
                    (idempotent && attempts_left > 0 && Instant::now() < deadline).then_some(false)
                }
            };
            let target = next.and_then(|unsent| {
                if tries == MAX_TRIES {
                    return None;
                }
                match version.pick_other(&tried[..tries]) {
                    Some(other) => Some((unsent, other)),
                    // A status retry may go to the same endpoint; a refused one may not.
                    None if !unsent => Some((unsent, endpoint)),
                    None => None,
                }
            });
            let resend = target.and_then(|t| match &rewind {
                None => Some((t, UpstreamBody::Empty)),
                Some(r) => r.take().map(|b| (t, UpstreamBody::rewindable(b, r))),
            });
            let Some(((unsent, other), again)) = resend.filter(|_| retry_allowed(version)) else {
                return match outcome {
                    Try::Answered(resp) => Ok(resp),
                    Try::Failed(err) => Err(self.unavailable(version, endpoint, &err, tries)),
                    Try::TimedOut(limit) => Err(timed_out(version, endpoint, limit, tries)),
                };
            };
            if unsent {
                unsent_left -= 1;
            } else {
                attempts_left -= 1;
            }
            drop(outcome);
            endpoint = other;
            body = Some(again);
        }
    }

    /// One try: records its outcome for the endpoint's outlier detection.
    async fn try_once(
        &self,
        version: &VersionRuntime,
        endpoint: usize,
        req: Request<UpstreamBody>,
        deadline: Instant,
    ) -> Try {
        let limit = version
            .per_try_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let outcome = match tokio::time::timeout(limit, self.client.request(req)).await {
            Ok(Ok(resp)) => Try::Answered(resp),
            Ok(Err(err)) => Try::Failed(err),
            Err(_) => Try::TimedOut(limit),
        };
        let failed = match &outcome {
            Try::Answered(resp) => resp.status().is_server_error(),
            _ => true,
        };
        if version.outliers.record(endpoint, failed) {
            tracing::warn!(
                service = %version.service,
                version = version.name(),
                endpoint = %version.endpoints[endpoint].text,
                failures = version.definition.outlier_detection.consecutive_failures,
                "endpoint ejected after failing in a row"
            );
        }
        outcome
    }

    fn unavailable(
        &self,
        version: &VersionRuntime,
        endpoint: usize,
        err: &hyper_util::client::legacy::Error,
        tries: usize,
    ) -> ProxyError {
        let endpoint = &version.endpoints[endpoint].text;
        let mut cause = error_chain(err);
        tracing::debug!(service = %version.service, version = version.name(), %endpoint, %cause, "upstream failed");
        if tries > 1 {
            cause.push_str(&format!(" (the last of {tries} tries)"));
        }
        ProxyError::upstream_unavailable(&version.service, version.name(), endpoint, &cause)
    }

    fn fallback(
        &self,
        version: &VersionRuntime,
        reason: &str,
        started: Instant,
    ) -> Response<ProxyBody> {
        let resp = match version.definition.fallback.policy {
            FallbackPolicy::Fail => {
                ProxyError::fallback(&version.service, version.name(), reason).response()
            }
            FallbackPolicy::ReturnEmpty => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                if let Ok(v) = HeaderValue::from_str(reason) {
                    r.headers_mut()
                        .insert(HeaderName::from_static("x-grayline-fallback"), v);
                }
                r
            }
        };
        self.count(version, resp.status(), false, true, started);
        plain(resp)
    }

    fn count(
        &self,
        version: &VersionRuntime,
        status: StatusCode,
        upstream_error: bool,
        fallback: bool,
        started: Instant,
    ) {
        if self.settings.stats {
            version.stats.record(
                Outcome {
                    status: status.as_u16(),
                    upstream_error,
                    fallback,
                },
                started.elapsed().as_micros() as u64,
            );
        }
    }
}

fn plain(resp: Response<Full<Bytes>>) -> Response<ProxyBody> {
    resp.map(Either::Right)
}

/// The request's host: the `Host` header (HTTP/1.1) or the URI authority (HTTP/2).
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names beats eight hashed removals.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// What one try came to.
enum Try {
    Answered(Response<Incoming>),
    Failed(hyper_util::client::legacy::Error),
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
        tracing::debug!(service = %version.service, version = version.name(), "retry budget spent; not retrying");
        false
    }
}

/// Tries after the first for a request that never reached the upstream.
const UNSENT_RETRIES: u32 = 2;
/// Tries of one request, whatever the settings allow.
const MAX_TRIES: usize =
    1 + UNSENT_RETRIES as usize + grayline_routing::limits::MAX_RETRY_ATTEMPTS as usize;

fn timed_out(
    version: &VersionRuntime,
    endpoint: usize,
    limit: std::time::Duration,
    tries: usize,
) -> ProxyError {
    let mut e = ProxyError::upstream_timeout(
        &version.service,
        version.name(),
        &version.endpoints[endpoint].text,
        limit.as_millis() as u32,
    );
    if tries > 1 {
        e.message.push_str(&format!(" (the last of {tries} tries)"));
    }
    e
}

/// Whether the request certainly never reached the upstream: the connection could not be
/// made, or the client took the request back unsent from a connection that closed (which
/// hyper-util reports as `Canceled`, visible only in its message).
fn never_sent(err: &hyper_util::client::legacy::Error) -> bool {
    err.is_connect() || err.to_string() == "client error (Canceled)"
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

/// `uri`'s path and query at `endpoint`.
fn upstream_uri(endpoint: &Endpoint, uri: &Uri) -> Result<Uri, ProxyError> {
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(endpoint.authority.clone());
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts)
        .map_err(|e| ProxyError::bad_request(format!("cannot forward this URI: {e}")))
}

/// The error and its causes on one line: "client error (Connect): tcp connect error: …".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(!is_upgrade(&h));
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(is_upgrade(&h));
    }
}
