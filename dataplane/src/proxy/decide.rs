//! The decision: the service a request belongs to, the version the engine picks for it (a
//! trusted lane first), a sticky cookie minted for a new user, the endpoint affinity, the
//! lane to stamp upstream and a sampled mirror. The routing state is borrowed only here.

use std::net::IpAddr;
use std::sync::Arc;

use grayline_routing::request::WithCookie;
use grayline_routing::split::{bucket_of, bucket_of_ip};
use grayline_routing::{Lane, Matched, Request as _, Sticky, StickyKey};
use http::Request;
use hyper::body::Incoming;

use arc_swap::ArcSwapOption;

use super::answer::ProxyError;
use super::facts::{HttpFacts, Peer};
use super::headers::request_host;
use super::settings::Settings;
use crate::routes::{Routing, VersionRuntime};
use crate::traffic::lane::{Arrived, Stamp};

/// What the engine decided, gathered while the routing state is borrowed.
pub(super) struct Choice {
    pub(super) version: Arc<VersionRuntime>,
    pub(super) minted: Option<(String, String)>,
    pub(super) affinity: Option<u64>,
    /// The lane header of the upstream request.
    pub(super) lane: Stamp,
    /// That lane is the one the request arrived in.
    pub(super) carried: bool,
    /// Where a copy goes, when the route mirrors and this request was sampled.
    pub(super) mirror: Option<Arc<VersionRuntime>>,
    /// The user's bucket, when a sticky split chose the version by their key: the judged
    /// sample takes one of their requests a second.
    pub(super) user: Option<u16>,
    /// A new visitor (none of the service's sticky keys, not in a lane): their version was a
    /// fresh draw, which the sample-ratio guard counts.
    pub(super) fresh: bool,
}

/// Finds the service and asks the engine; the routing state is borrowed only here.
pub(super) fn choose(
    routing: &ArcSwapOption<Routing>,
    settings: &Settings,
    req: &Request<Incoming>,
    peer: &Peer,
    ip: IpAddr,
) -> Result<Choice, ProxyError> {
    let guard = routing.load();
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
        &settings.lane_header,
        peer.ip,
        &settings.trusted_proxies,
        compiled,
    );
    let facts =
        HttpFacts::new(req.headers(), req.uri().query(), Some(ip)).with_lane(arrived.lane());
    let mut decision = compiled.decide(&facts, fastrand::u64(..));
    let fresh = match decision.sticky {
        Sticky::MissingKey(_) => true,
        Sticky::Key(_) => false,
        Sticky::No => decision.matched != Matched::Lane && !compiled.carries_sticky_key(&facts),
    };
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
        (Lane::Carried, _) => match req.headers().get(&settings.lane_header) {
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
        fresh,
    })
}
