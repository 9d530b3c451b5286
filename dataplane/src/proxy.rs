//! The request path, in seven steps ([`Proxy::handle`]): **decide** the service and the
//! version (a trusted lane first; [`decide`]), **govern** it (concurrency limit, protocol),
//! **prepare** the upstream request (endpoint not ejected, headers: [`headers`], an upgrade,
//! a mirrored copy), ask the **breaker**, **forward** over the version's protocol, retrying
//! where it is safe ([`forward`]), **judge** the outcome (a gRPC call's by its status:
//! [`call`]) and **respond**, bodies streamed both ways, trailers and upgrades (WebSocket)
//! passed through. What the proxy answers itself — no service, a version it cannot reach, a
//! fallback — is [`answer`]; [`listener`] accepts the connections; [`facts`] is the engine's
//! view of a request.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use grayline_routing::{EVENT_HEADER, FallbackPolicy};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub mod answer;
pub mod call;
mod decide;
pub mod facts;
mod forward;
mod headers;
pub mod listener;
mod settings;
pub mod tls;

pub use facts::Peer;
pub use settings::Settings;

use crate::resilience::breaker::Admit;
use crate::routes::{Routing, VersionRuntime};
use crate::stats::{self, Outcome, User};
use crate::traffic::lane::Stamp;
use crate::traffic::mirror;
use crate::upstream::body::{BodyCopy, ClientBody};
use crate::upstream::client::{Clients, ResponseBody, Upstream};
use crate::upstream::grpc;
use answer::ProxyError;
use call::{Call, GrpcBody};
use facts::client_ip;
use headers::{is_upgrade, strip_hop_by_hop};

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

#[derive(Debug)]
pub struct Proxy {
    pub routing: Arc<ArcSwapOption<Routing>>,
    clients: Clients,
    settings: Settings,
}

impl Proxy {
    pub fn new(routing: Arc<ArcSwapOption<Routing>>, settings: Settings) -> Proxy {
        Proxy {
            routing,
            clients: Clients::new(),
            settings,
        }
    }

    /// One request, in the steps of the module's description.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        let asked = Asked {
            started: Instant::now(),
            downstream: req.version(),
            grpc: grpc::is_grpc(req.version(), req.headers()),
        };
        // 1. Decide: the service, its version for this request, the user, a mirror.
        let client_ip = client_ip(peer.ip, req.headers(), &self.settings.trusted_proxies);
        let choice = match decide::choose(&self.routing, &self.settings, &req, peer, client_ip) {
            Ok(c) => c,
            Err(e) => return asked.answer(e),
        };
        let version = &choice.version;
        // Whether this request is in the judged sample, decided now, before its outcome.
        let judged = version.stats.judge(choice.user.map(|bucket| User {
            bucket,
            second: stats::second_of(asked.started),
        }));
        if choice.fresh && self.settings.stats {
            version.stats.arrived_fresh();
        }

        // 2. Govern: the concurrency limit first, so a half-open probe is never wasted; then
        // the protocol the version speaks.
        let Some(_permit) = version.try_acquire() else {
            return self.fallback(version, "max_concurrent reached", &asked);
        };
        if version.has_no_endpoint() {
            let why = match version.definition().dns() {
                Some(_) => "its DNS name resolves to no address",
                None => "no instance registered",
            };
            return self.fallback(version, why, &asked);
        }
        let upstream = self
            .clients
            .pick(version.definition().protocol, asked.downstream);
        if asked.grpc && upstream != Upstream::H2 {
            let e = ProxyError::grpc_needs_http2(version.service(), version.name());
            let refused = Outcome::status(e.status.as_u16()).judged(judged);
            self.count(version, refused, &asked);
            return asked.answer(e);
        }

        // 3. Prepare: the endpoint, an upgrade, the upstream request, a mirrored copy.
        let endpoint = version.pick(|| choice.affinity);
        let upgrade = (upstream != Upstream::H2 && is_upgrade(req.headers()))
            .then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = headers::upstream_parts(
            req,
            version,
            peer,
            upgrade.is_some(),
            &choice.lane,
            upstream.version(),
            &self.settings,
        );
        let copy = if upgrade.is_some() {
            // An upgrade is a conversation, not a request to copy.
            None
        } else {
            self.mirror(&choice, &parts, !body.is_end_stream(), &asked)
        };
        let body = ClientBody::new(body, copy);

        // 4. The breaker, asked last, right before sending: an admitted half-open probe must
        // always reach the upstream and report back, or the breaker would wait for it
        // forever. It judges the request's final outcome, after any retries.
        let admit = version.breaker.admit();
        if admit == Admit::No {
            return self.fallback(version, "circuit breaker open", &asked);
        }

        // 5. Forward, retrying where it is safe.
        let forwarded = forward::forward(
            &self.clients,
            upstream,
            version,
            endpoint,
            parts,
            body,
            asked.started,
            asked.grpc,
        )
        .await;
        let (mut resp, endpoint) = match forwarded {
            Ok(answered) => answered,
            Err(e) => {
                version.breaker.record(admit, true);
                let failed = Outcome {
                    upstream_error: true,
                    ..Outcome::status(e.status.as_u16())
                };
                self.count(version, failed.judged(judged), &asked);
                return asked.answer(e);
            }
        };

        // 6. Judge the outcome, for the breaker and the statistics; a gRPC call's once its
        // status comes.
        let call = self.judge(&resp, version, endpoint, admit, judged, &asked);

        // 7. Respond: an upgrade's tunnel, the response's headers, the body.
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(downstream) = upgrade
        {
            tunnel(downstream, hyper::upgrade::on(&mut resp));
        }
        self.respond(resp, version, &choice, call)
    }

    /// Starts a copy of the request for the route's mirror, if it sampled one.
    fn mirror(
        &self,
        choice: &decide::Choice,
        parts: &http::request::Parts,
        has_body: bool,
        asked: &Asked,
    ) -> Option<BodyCopy> {
        let target = choice.mirror.as_ref()?;
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
                parts,
                downstream: asked.downstream,
                has_body,
                grpc: asked.grpc,
                served_by: &choice.version,
                version_header: &self.settings.version_header,
                lane_header: &self.settings.lane_header,
                lane,
                stats: self.settings.stats,
            },
        )
    }

    /// Records the upstream's answer with the breaker and the statistics, or — a gRPC call
    /// whose status comes in the trailers — returns the [`Call`] that records it then.
    fn judge(
        &self,
        resp: &Response<ResponseBody>,
        version: &Arc<VersionRuntime>,
        endpoint: usize,
        admit: Admit,
        judged: bool,
        asked: &Asked,
    ) -> Option<Call> {
        let status = resp.status();
        let events = version.events.of(status.as_u16(), resp.headers());
        if !(asked.grpc && status == StatusCode::OK) {
            version.breaker.record(admit, status.is_server_error());
            let answered = Outcome {
                events,
                ..Outcome::status(status.as_u16())
            };
            self.count(version, answered.judged(judged), asked);
            return None;
        }
        match grpc::status_of(resp.headers()) {
            // Trailers-only: the call is over.
            Some(code) => {
                version.breaker.record(admit, code != 0);
                let ended = Outcome {
                    grpc_error: code != 0,
                    events,
                    ..Outcome::status(200)
                };
                self.count(version, ended.judged(judged), asked);
                None
            }
            // Its status comes in the trailers: recorded when they pass.
            None => Some(Call {
                version: version.clone(),
                endpoint,
                admit,
                latency_us: asked.started.elapsed().as_micros() as u64,
                stats: self.settings.stats,
                status: None,
                recorded: false,
                judged,
                events,
            }),
        }
    }

    /// The response for the client: hop-by-hop headers removed (but an upgrade's), the
    /// version tagged, a minted sticky cookie set, the body passed through.
    fn respond(
        &self,
        resp: Response<ResponseBody>,
        version: &VersionRuntime,
        choice: &decide::Choice,
        call: Option<Call>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(&mut parts.headers);
        }
        if !version.events.is_empty() {
            // The version's word to the proxy, not to the client.
            parts.headers.remove(EVENT_HEADER);
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

    /// The version's fallback answers instead of the version (its breaker is open or its
    /// concurrency limit reached); counted apart from its answers.
    fn fallback(
        &self,
        version: &VersionRuntime,
        reason: &str,
        asked: &Asked,
    ) -> Response<ProxyBody> {
        let grpc = asked.grpc;
        let resp = match version.definition().fallback.policy {
            // A gRPC client cannot take an empty 204; it gets UNAVAILABLE with the reason.
            _ if grpc => {
                ProxyError::fallback(version.service(), version.name(), reason).grpc_response()
            }
            FallbackPolicy::Fail => {
                ProxyError::fallback(version.service(), version.name(), reason).response()
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
        let fallback = Outcome {
            fallback: true,
            ..Outcome::status(status.as_u16())
        };
        self.count(version, fallback, asked);
        plain(resp)
    }

    fn count(&self, version: &VersionRuntime, outcome: Outcome, asked: &Asked) {
        if self.settings.stats {
            version
                .stats
                .record(outcome, asked.started.elapsed().as_micros() as u64);
        }
    }
}

/// What every step knows of the request.
struct Asked {
    started: Instant,
    /// The HTTP version the client spoke.
    downstream: http::Version,
    grpc: bool,
}

impl Asked {
    /// An answer the proxy makes itself, as the client understands it.
    fn answer(&self, e: ProxyError) -> Response<ProxyBody> {
        plain(if self.grpc {
            e.grpc_response()
        } else {
            e.response()
        })
    }
}

/// Joins the client's upgraded connection with the upstream's, both ways, in a task.
fn tunnel(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
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

fn plain(resp: Response<Full<Bytes>>) -> Response<ProxyBody> {
    resp.map(ProxyBody::Local)
}
