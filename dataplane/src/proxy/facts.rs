//! The decision engine's view of a live HTTP request, without copying it.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::{IpAddr, SocketAddr};

use grayline_routing::Request;
use grayline_routing::request::{find_cookie_bytes, find_query};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

/// The client side of a connection, worked out once per connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The peer's address, IPv4-mapped IPv6 addresses as IPv4.
    pub ip: IpAddr,
    /// The peer's address as an `X-Forwarded-For` entry.
    pub forwarded: HeaderValue,
    /// It came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer::over(addr, false)
    }

    /// A peer that connected over TLS (`tls`) or not.
    pub fn over(addr: SocketAddr, tls: bool) -> Peer {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
            v4 => v4,
        };
        Peer {
            addr,
            ip,
            forwarded: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a header value"),
            tls,
        }
    }
}

#[derive(Debug)]
pub struct HttpFacts<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    /// The lane the request arrived in, when its lane header is believed.
    pub lane: Option<&'a str>,
    /// The `Cookie` header, looked up once per request however many cookies are read.
    cookies: OnceCell<Option<&'a HeaderValue>>,
}

impl<'a> HttpFacts<'a> {
    pub fn new(headers: &'a HeaderMap, query: Option<&'a str>, client_ip: Option<IpAddr>) -> Self {
        HttpFacts {
            headers,
            query,
            client_ip,
            lane: None,
            cookies: OnceCell::new(),
        }
    }

    pub fn with_lane(mut self, lane: Option<&'a str>) -> Self {
        self.lane = lane;
        self
    }
}

impl Request for HttpFacts<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        // Policies name headers in lowercase; for the dozen headers a request usually has,
        // comparing names directly is cheaper than parsing and hashing the name.
        if self.headers.keys_len() <= 16 {
            return self
                .headers
                .iter()
                .find(|(k, _)| k.as_str() == name)
                .and_then(|(_, v)| text(v));
        }
        self.headers.get(name).and_then(text)
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        let mut all = self.headers.get_all(http::header::COOKIE).iter();
        let found = match self.cookies.get_or_init(|| {
            let first = all.next();
            // Several Cookie headers (HTTP/2 may split them) are searched one by one below.
            if all.next().is_some() { None } else { first }
        }) {
            Some(single) => find_cookie_bytes(single.as_bytes(), name),
            None => self
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|h| find_cookie_bytes(h.as_bytes(), name)),
        };
        found.and_then(|v| std::str::from_utf8(v).ok())
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        find_query(self.query?, name)
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    fn lane(&self) -> Option<&str> {
        self.lane
    }

    fn user_agent(&self) -> Option<&[u8]> {
        // The constant skips parsing the header name. Raw bytes: a value that is not UTF-8
        // still classifies, and exactly as the simulator classifies its lossy decoding.
        self.headers
            .get(http::header::USER_AGENT)
            .map(HeaderValue::as_bytes)
    }
}

/// A header value as text: any UTF-8 (checked fast), not only the visible ASCII that
/// `HeaderValue::to_str` insists on.
fn text(v: &HeaderValue) -> Option<&str> {
    std::str::from_utf8(v.as_bytes()).ok()
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.iter().any(|n| n.contains(&peer)) {
        return peer;
    }
    let mut chain = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect::<Vec<_>>();
    chain.reverse();
    chain
        .iter()
        .copied()
        .find(|ip| !trusted.iter().any(|n| n.contains(ip)))
        .or(chain.last().copied())
        .unwrap_or(peer)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_headers_cookies_and_query() {
        let h = headers(&[
            ("cookie", "a=1"),
            ("cookie", "uid=u7; b=2"),
            ("x-tier", "gold"),
        ]);
        let f = HttpFacts::new(&h, Some("q=x%2By&z"), None);
        assert_eq!(f.cookie("uid"), Some("u7"));
        assert_eq!(f.cookie("a"), Some("1"));
        assert_eq!(f.header("x-tier"), Some("gold"));
        assert_eq!(f.query("q").as_deref(), Some("x+y"));
        assert_eq!(f.query("z").as_deref(), Some(""));
    }

    #[test]
    fn trusts_forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let outside: IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(
            client_ip(local, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(outside, &h, &trusted), outside);
        assert_eq!(client_ip(local, &h, &[]), local);
        assert_eq!(client_ip(local, &HeaderMap::new(), &trusted), local);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(mapped, &HeaderMap::new(), &[]), local);
    }
}
