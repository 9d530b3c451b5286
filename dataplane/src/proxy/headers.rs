//! The request as it goes upstream and the response as it comes back: hop-by-hop headers
//! removed (RFC 9110 §7.6.1), the forwarding headers, the version header and the lane header
//! set; whether a request asks for an upgrade; the host it names.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request};
use hyper::body::Incoming;

use super::facts::Peer;
use super::settings::Settings;
use crate::routes::VersionRuntime;
use crate::traffic::lane::Stamp;

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

/// The request as it goes upstream, without its endpoint: hop-by-hop headers removed,
/// forwarding headers, the version header and the lane header set.
#[allow(clippy::too_many_arguments)]
pub(super) fn upstream_parts(
    req: Request<Incoming>,
    version: &VersionRuntime,
    peer: &Peer,
    upgrade: bool,
    lane: &Stamp,
    upstream: http::Version,
    settings: &Settings,
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
    let proto = if peer.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(settings.version_header.clone(), version.name_value.clone());
    lane.apply(&settings.lane_header, headers);
    (parts, body)
}

/// The request's host: the `Host` header (HTTP/1.1) or the URI authority (HTTP/2).
pub(super) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
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
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
