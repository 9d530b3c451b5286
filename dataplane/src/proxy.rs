//! The request path: find the service, ask the engine for a version (a trusted lane first),
//! apply the version's governance (concurrency limit, breaker, fallback), pick an endpoint
//! that is not ejected and forward over the version's protocol, retrying where it is safe,
//! streaming bodies both ways (gRPC trailers included) and passing upgrades (WebSocket)
//! through; a mirroring route's sampled requests are also copied to the mirror version.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use grayline_routing::request::WithCookie;
use grayline_routing::split::{bucket_of, bucket_of_ip};
use grayline_routing::{FallbackPolicy, Lane, Request as _, Sticky, StickyKey};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

use crate::body::{ClientBody, Rewind, UpstreamBody};
use crate::breaker::Admit;
use crate::client::{Clients, ResponseBody, SendError, Upstream};
use crate::error::ProxyError;
use crate::facts::{HttpFacts, client_ip};
use crate::grpc::{self, Call, GrpcBody};
use crate::lane::{Arrived, Stamp};
use crate::mirror;
use crate::runtime::{Routing, VersionRuntime};
use crate::stats::{self, Outcome, User};

/// What the client gets back.
#[derive(Debug)]
pub enum ProxyBody {
    /// The upstream's body, passed through.
    Upstream(ResponseBody),
    /// A gRPC response passed through; its call's outcome is recorded at its end.
    Grpc(GrpcBody),
    /// An answer the proxy made itself.
    Local(Full<Bytes>),
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Grpc(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Grpc(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Grpc(b) => b.size_hint(),
            ProxyBody::Local(b) => b.size_hint(),
        }
    }
}

/// Settings of the request path that do not come from the server.
#[derive(Clone, Debug)]
pub struct Settings {
    pub trusted_proxies: Vec<IpNet>,
    pub version_header: HeaderName,
    /// The full-link lane header, read from trusted sources and stamped upstream.
    pub lane_header: HeaderName,
    pub tag_responses: bool,
    pub stats: bool,
}

#[derive(Debug)]
pub struct Proxy {
    pub routing: Arc<ArcSwapOption<Routing>>,
    clients: Clients,
    settings: Settings,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1). A `static`: a
/// `const` array would be built and dropped again at every use.
static HOP_BY_HOP: [HeaderName; 8] = [
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
    /// The peer's address, IPv4-mapped IPv6 addresses as IPv4.
    pub ip: IpAddr,
    /// The peer's address as an `X-Forwarded-For` entry.
    pub forwarded: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
            v4 => v4,
        };
        Peer {
            addr,
            ip,
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
    /// The lane header of the upstream request.
    lane: Stamp,
    /// That lane is the one the request arrived in.
    carried: bool,
    /// Where a copy goes, when the route mirrors and this request was sampled.
    mirror: Option<Arc<VersionRuntime>>,
    /// The user's bucket, when a sticky split chose the version by their key: the judged
    /// sample takes one of their requests a second.
    user: Option<u16>,
}

impl Proxy {
    pub fn new(routing: Arc<ArcSwapOption<Routing>>, settings: Settings) -> Proxy {
        Proxy {
            routing,
            clients: Clients::new(),
            settings,
        }
    }

    pub async fn handle(&self, mut req: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        let started = Instant::now();
        let downstream = req.version();
        let grpc = grpc::is_grpc(downstream, req.headers());
        let answer = |e: ProxyError| {
            let resp = if grpc {
                grpc::error_response(&e)
            } else {
                e.response()
            };
            plain(resp)
        };
        let client_ip = client_ip(peer.ip, req.headers(), &self.settings.trusted_proxies);
        let choice = match self.choose(&req, peer, client_ip) {
            Ok(c) => c,
            Err(e) => return answer(e),
        };
        let version = &choice.version;
        let user = choice.user.map(|bucket| User {
            bucket,
            second: stats::second_of(started),
        });

        // Governance: the concurrency limit first, so a half-open probe is never wasted.
        let Some(_permit) = version.try_acquire() else {
            return self.fallback(version, "max_concurrent reached", started, grpc);
        };
        let upstream = self.clients.pick(version.definition.protocol, downstream);
        if grpc && upstream != Upstream::H2c {
            let e = ProxyError::grpc_needs_http2(&version.service, version.name());
            self.count(
                version,
                Outcome::status(e.status.as_u16()).by(user),
                started,
            );
            return answer(e);
        }
        let endpoint = version.pick(|| choice.affinity);
        let upgrade = (upstream != Upstream::H2c && is_upgrade(req.headers()))
            .then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = self.upstream_parts(
            req,
            version,
            peer,
            upgrade.is_some(),
            &choice,
            upstream.version(),
        );
        let copy = choice.mirror.as_ref().and_then(|target| {
            // An upgrade is a conversation, not a request to copy.
            if upgrade.is_some() {
                return None;
            }
            // The copy carries the lane the request arrived in, else the one its target is in.
            let lane = if choice.carried {
                choice.lane.clone()
            } else {
                target.lane_value.clone().map_or(Stamp::Remove, Stamp::Set)
            };
            mirror::start(
                &self.clients,
                target,
                mirror::Live {
                    parts: &parts,
                    downstream,
                    has_body: !body.is_end_stream(),
                    grpc,
                    served_by: version,
                    version_header: &self.settings.version_header,
                    lane_header: &self.settings.lane_header,
                    lane,
                    stats: self.settings.stats,
                },
            )
        });
        let body = ClientBody::new(body, copy);
        // Asked last, right before sending: an admitted half-open probe must always reach
        // the upstream and report back, or the breaker would wait for it forever. It judges
        // the request's final outcome, after any retries.
        let admit = version.breaker.admit();
        if admit == Admit::No {
            return self.fallback(version, "circuit breaker open", started, grpc);
        }

        let (mut resp, endpoint) = match self
            .forward(upstream, version, endpoint, parts, body, started, grpc)
            .await
        {
            Ok(answered) => answered,
            Err(e) => {
                version.breaker.record(admit, true);
                self.count(
                    version,
                    Outcome {
                        upstream_error: true,
                        ..Outcome::status(e.status.as_u16())
                    }
                    .by(user),
                    started,
                );
                return answer(e);
            }
        };
        let status = resp.status();
        let mut call = None;
        if grpc && status == StatusCode::OK {
            match grpc::status_of(resp.headers()) {
                // Trailers-only: the call is over.
                Some(code) => {
                    version.breaker.record(admit, code != 0);
                    self.count(
                        version,
                        Outcome {
                            grpc_error: code != 0,
                            ..Outcome::status(200)
                        }
                        .by(user),
                        started,
                    );
                }
                // Its status comes in the trailers: recorded when they pass.
                None => {
                    call = Some(Call {
                        version: version.clone(),
                        endpoint,
                        admit,
                        latency_us: started.elapsed().as_micros() as u64,
                        stats: self.settings.stats,
                        status: None,
                        recorded: false,
                        user,
                    });
                }
            }
        } else {
            version.breaker.record(admit, status.is_server_error());
            self.count(version, Outcome::status(status.as_u16()).by(user), started);
        }

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
        let body = match call {
            Some(call) => ProxyBody::Grpc(GrpcBody::new(body.into_inner(), Some(call))),
            None => ProxyBody::Upstream(body),
        };
        Response::from_parts(parts, body)
    }

    /// Finds the service and asks the engine; the routing state is borrowed only here.
    fn choose(
        &self,
        req: &Request<Incoming>,
        peer: &Peer,
        ip: IpAddr,
    ) -> Result<Choice, ProxyError> {
        let guard = self.routing.load();
        let routing = guard.as_ref().ok_or_else(ProxyError::no_config)?;
        let host = request_host(req).unwrap_or("");
        let path = req.uri().path();
        let index = routing
            .catalog
            .find_index(host, path)
            .ok_or_else(|| ProxyError::no_service(host, path))?;
        let compiled = &routing.catalog.services()[index];
        let arrived = Arrived::read(
            req.headers(),
            &self.settings.lane_header,
            peer.ip,
            &self.settings.trusted_proxies,
            compiled,
        );
        let facts =
            HttpFacts::new(req.headers(), req.uri().query(), Some(ip)).with_lane(arrived.lane());
        let mut decision = compiled.decide(&facts, fastrand::u64(..));
        let mut minted = None;
        if let Sticky::MissingKey(StickyKey::Cookie(name)) = decision.sticky {
            // A new user: give them an id now, so this and every later request agree.
            let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            let mirror = decision.mirror;
            decision = compiled.decide(
                &WithCookie {
                    inner: &facts,
                    name,
                    value: &id,
                },
                0,
            );
            // The second decision's random number is fixed; the first one sampled the mirror.
            decision.mirror = mirror.filter(|&m| m != decision.version);
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
        let versions = &routing.versions[index];
        let version = versions[decision.version].clone();
        let lane = match (decision.lane, arrived) {
            (Lane::Carried, _) => match req.headers().get(&self.settings.lane_header) {
                Some(v) => Stamp::Set(v.clone()),
                None => Stamp::Nothing,
            },
            (Lane::Entered(_), _) => version
                .lane_value
                .clone()
                .map_or(Stamp::Nothing, Stamp::Set),
            (Lane::None, Arrived::None) => Stamp::Nothing,
            (Lane::None, _) => Stamp::Remove,
        };
        Ok(Choice {
            version,
            minted,
            affinity,
            lane,
            carried: decision.lane == Lane::Carried,
            mirror: decision.mirror.map(|m| versions[m].clone()),
            user: match decision.sticky {
                Sticky::Key(_) => decision.bucket,
                _ => None,
            },
        })
    }

    /// The request as it goes upstream, without its endpoint: hop-by-hop headers removed,
    /// forwarding headers, the version header and the lane header set.
    fn upstream_parts(
        &self,
        req: Request<Incoming>,
        version: &VersionRuntime,
        peer: &Peer,
        upgrade: bool,
        choice: &Choice,
        upstream: http::Version,
    ) -> (http::request::Parts, Incoming) {
        let (mut parts, body) = req.into_parts();
        let host_header = parts.headers.get(header::HOST).cloned();
        let mut had_host = host_header.is_some();
        let host = host_header.or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        parts.version = upstream;

        let headers = &mut parts.headers;
        // One pass over the names tells which of the lookups below can find anything; most
        // requests carry no hop-by-hop header, no `Upgrade` and no `X-Forwarded-For`.
        let (mut hop_by_hop, mut has_upgrade, mut has_forwarded_for) = (false, false, false);
        for name in headers.keys() {
            if *name == header::UPGRADE {
                has_upgrade = true;
            } else if *name == X_FORWARDED_FOR {
                has_forwarded_for = true;
            } else {
                hop_by_hop |= is_hop_by_hop(name);
            }
        }
        let upgrade_value = if upgrade && has_upgrade {
            headers.get(header::UPGRADE).cloned()
        } else {
            None
        };
        // gRPC servers want `te: trailers`; HTTP/2 allows exactly that TE.
        let te_trailers = hop_by_hop
            && upstream == http::Version::HTTP_2
            && headers
                .get(header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if hop_by_hop {
            strip_named_hop_by_hop(headers);
            // `Connection: host` takes the header away; it goes back in below.
            had_host = headers.contains_key(header::HOST);
        }
        if has_upgrade {
            headers.remove(header::UPGRADE);
        }
        if let Some(v) = upgrade_value {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, v);
        }
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // Room for what is added below, so the map grows once, not once per header.
        headers.reserve(6);
        if let Some(h) = host {
            // An HTTP/2 request names its host in the URI; HTTP/1.1 wants the header.
            if !had_host {
                headers.insert(header::HOST, h.clone());
            }
            headers.insert(X_FORWARDED_HOST, h);
        }
        let prior = has_forwarded_for
            .then(|| headers.get(X_FORWARDED_FOR))
            .flatten()
            .and_then(|v| v.to_str().ok());
        let forwarded_for = match prior {
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
        choice.lane.apply(&self.settings.lane_header, headers);
        (parts, body)
    }

    /// Sends the request to `first`, and again elsewhere while that is safe and the retry
    /// budget allows (see [`grayline_routing::Retry`]). Every try's outcome goes to the
    /// endpoint's outlier detection (a gRPC call's, once its status is known); the error is
    /// the last try's. Answers with the endpoint that answered.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
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
            return match self
                .try_once(upstream, version, first, req, deadline, grpc)
                .await
            {
                Try::Answered(resp) => Ok((resp, first)),
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
            *req.uri_mut() = parts.uri.clone();
            *req.version_mut() = parts.version;
            *req.headers_mut() = parts.headers.clone();
            let outcome = self
                .try_once(upstream, version, endpoint, req, deadline, grpc)
                .await;

            // Whether this try failed in a way worth another, and where to send it.
            let next = match &outcome {
                Try::Answered(resp) => {
                    let retryable = matches!(resp.status().as_u16(), 502..=504);
                    (retryable && idempotent && attempts_left > 0).then_some(false)
                }
                Try::Failed(err) if err.never_sent() && unsent_left > 0 => Some(true),
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
                    Try::Answered(resp) => Ok((resp, endpoint)),
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

    /// One try: records its outcome for the endpoint's outlier detection, unless it is a
    /// gRPC call whose status is still to come (see [`grpc::Call`]).
    async fn try_once(
        &self,
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
        let sent = self
            .clients
            .send(upstream, &version.endpoints[endpoint], req);
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
        &self,
        version: &VersionRuntime,
        endpoint: usize,
        err: &SendError,
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
        grpc: bool,
    ) -> Response<ProxyBody> {
        let resp = match version.definition.fallback.policy {
            // A gRPC client cannot take an empty 204; it gets UNAVAILABLE with the reason.
            _ if grpc => grpc::error_response(&ProxyError::fallback(
                &version.service,
                version.name(),
                reason,
            )),
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
        let status = if grpc {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            resp.status()
        };
        self.count(
            version,
            Outcome {
                fallback: true,
                ..Outcome::status(status.as_u16())
            },
            started,
        );
        plain(resp)
    }

    fn count(&self, version: &VersionRuntime, outcome: Outcome, started: Instant) {
        if self.settings.stats {
            version
                .stats
                .record(outcome, started.elapsed().as_micros() as u64);
        }
    }
}

fn plain(resp: Response<Full<Bytes>>) -> Response<ProxyBody> {
    resp.map(ProxyBody::Local)
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

/// Whether `name` is one of [`HOP_BY_HOP`]. Names are lowercase, so this compiles to a
/// switch on the length and at most two comparisons, cheaper than hashing or than
/// comparing a name with all eight.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
    )
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names beats eight hashed removals.
    if headers.keys().any(is_hop_by_hop) {
        strip_named_hop_by_hop(headers);
    }
}

/// [`strip_hop_by_hop`] once a hop-by-hop header is known to be there.
fn strip_named_hop_by_hop(headers: &mut HeaderMap) {
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
    fn the_hop_by_hop_names_are_the_ones_recognised() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            header::HOST,
            header::UPGRADE,
            header::USER_AGENT,
            header::SET_COOKIE,
            header::REFERER,
            header::CONTENT_LENGTH,
            HeaderName::from_static("x-connection"),
            HeaderName::from_static("tee"),
        ] {
            assert!(!is_hop_by_hop(&name), "{name}");
        }
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
