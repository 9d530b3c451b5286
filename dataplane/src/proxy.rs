//! The request path: find the service, ask the engine for a version, apply the version's
//! governance (concurrency limit, breaker, fallback), pick an endpoint and forward, streaming
//! bodies both ways and passing upgrades (WebSocket) through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use grayline_routing::request::WithCookie;
use grayline_routing::split::{bucket_of, bucket_of_ip};
use grayline_routing::{FallbackPolicy, Request as _, Sticky, StickyKey};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ipnet::IpNet;

use crate::breaker::Admit;
use crate::error::ProxyError;
use crate::facts::{HttpFacts, client_ip};
use crate::runtime::{Routing, VersionRuntime};
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
    client: Client<HttpConnector, Incoming>,
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
        let service = version.service.as_str();

        // Governance: the concurrency limit first, so a half-open probe is never wasted.
        let Some(_permit) = version.try_acquire() else {
            return self.fallback(version, "max_concurrent reached", started);
        };
        let endpoint = version.pick(|| choice.affinity);
        let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let upstream_req =
            match self.upstream_request(req, endpoint, version, peer, upgrade.is_some()) {
                Ok(r) => r,
                Err(e) => return plain(e.response()),
            };
        // Asked last, right before sending: an admitted half-open probe must always reach
        // the upstream and report back, or the breaker would wait for it forever.
        let admit = version.breaker.admit();
        if admit == Admit::No {
            return self.fallback(version, "circuit breaker open", started);
        }

        let result = tokio::time::timeout(version.timeout, self.client.request(upstream_req)).await;
        let mut resp = match result {
            Err(_) => {
                version.breaker.record(admit, true);
                let e = ProxyError::upstream_timeout(
                    service,
                    version.name(),
                    &endpoint.text,
                    version.definition.timeout_ms,
                );
                self.count(version, e.status, true, false, started);
                return plain(e.response());
            }
            Ok(Err(err)) => {
                version.breaker.record(admit, true);
                let cause = error_chain(&err);
                tracing::debug!(service, version = version.name(), endpoint = %endpoint.text, %cause, "upstream failed");
                let e = ProxyError::upstream_unavailable(
                    service,
                    version.name(),
                    &endpoint.text,
                    &cause,
                );
                self.count(version, e.status, true, false, started);
                return plain(e.response());
            }
            Ok(Ok(resp)) => resp,
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

    fn upstream_request(
        &self,
        req: Request<Incoming>,
        endpoint: &crate::runtime::Endpoint,
        version: &VersionRuntime,
        peer: &Peer,
        upgrade: bool,
    ) -> Result<Request<Incoming>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(endpoint.authority.clone());
        uri.path_and_query = Some(path_and_query);
        parts.uri = Uri::from_parts(uri)
            .map_err(|e| ProxyError::bad_request(format!("cannot forward this URI: {e}")))?;
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
        Ok(Request::from_parts(parts, body))
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
