//! The lane header on the request path. A request's lane header is believed only from a
//! trusted source — a peer in the proxy's `--trusted-proxies` or in the service's
//! `lane_sources` — and only when it names a lane; otherwise it is ignored and removed, so an
//! outside client can neither pick a lane nor push one down the chain. What the upstream
//! request carries is what the engine decided ([`grayline_routing::Lane`]).

use std::net::IpAddr;

use grayline_routing::CompiledService;
use grayline_routing::lane::is_lane_name;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;

/// The lane header of a request as it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrived<'a> {
    /// No lane header.
    None,
    /// A header from a trusted source naming this lane.
    Trusted(&'a str),
    /// A header not to be believed (untrusted source, or not a lane name): removed.
    Ignored,
}

impl<'a> Arrived<'a> {
    /// Reads `name` from `headers` as `service` sees it from `peer`.
    pub fn read(
        headers: &'a HeaderMap,
        name: &HeaderName,
        peer: IpAddr,
        trusted_proxies: &[IpNet],
        service: &CompiledService,
    ) -> Arrived<'a> {
        let Some(value) = headers.get(name) else {
            return Arrived::None;
        };
        let trusted =
            trusted_proxies.iter().any(|n| n.contains(&peer)) || service.lanes().trusts(peer);
        match std::str::from_utf8(value.as_bytes()) {
            Ok(lane) if trusted && is_lane_name(lane) => Arrived::Trusted(lane),
            _ => Arrived::Ignored,
        }
    }

    pub fn lane(self) -> Option<&'a str> {
        match self {
            Arrived::Trusted(lane) => Some(lane),
            _ => None,
        }
    }
}

/// What to do with the lane header of the upstream request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// Nothing: no lane came in and none was entered.
    Nothing,
    /// Remove the header the client sent.
    Remove,
    /// Set the header to this lane.
    Set(HeaderValue),
}

impl Stamp {
    pub fn apply(&self, name: &HeaderName, headers: &mut HeaderMap) {
        match self {
            Stamp::Nothing => {}
            Stamp::Remove => {
                headers.remove(name);
            }
            Stamp::Set(v) => {
                headers.insert(name.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::{Service, Version};

    fn service(lane_sources: &[&str]) -> CompiledService {
        let mut s = Service::single("s", Version::new("v1", &["127.0.0.1:1"]));
        s.lane_sources = lane_sources.iter().map(|s| s.to_string()).collect();
        CompiledService::compile(&s).unwrap()
    }

    #[test]
    fn believes_the_header_only_from_trusted_sources() {
        let name = HeaderName::from_static("x-grayline-lane");
        let mut h = HeaderMap::new();
        h.insert(name.clone(), "gray".parse().unwrap());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let plain = service(&[]);
        assert_eq!(
            Arrived::read(&h, &name, proxy, &trusted, &plain),
            Arrived::Trusted("gray")
        );
        assert_eq!(
            Arrived::read(&h, &name, client, &trusted, &plain),
            Arrived::Ignored
        );
        // The service's own sources.
        let open = service(&["203.0.113.0/24"]);
        assert_eq!(
            Arrived::read(&h, &name, client, &[], &open),
            Arrived::Trusted("gray")
        );
        assert_eq!(
            Arrived::read(&HeaderMap::new(), &name, proxy, &trusted, &plain),
            Arrived::None
        );
        h.insert(name.clone(), "not a lane".parse().unwrap());
        assert_eq!(
            Arrived::read(&h, &name, proxy, &trusted, &plain),
            Arrived::Ignored
        );
        let mut stamped = h.clone();
        Stamp::Remove.apply(&name, &mut stamped);
        assert!(stamped.get(&name).is_none());
        Stamp::Set("gray".parse().unwrap()).apply(&name, &mut stamped);
        assert_eq!(stamped[&name], "gray");
    }
}
