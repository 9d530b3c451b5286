//! The routing state a proxy serves from: the compiled catalog plus, per version, what
//! governs its traffic (endpoints and balancer, outlier detection, retry budget, timeout,
//! concurrency limit, breaker, statistics, the mirrored copies it takes). Built once per
//! config push and swapped in atomically; the request path (`proxy`), mirroring
//! (`traffic`), the config stream (`control`) and the metrics (`telemetry`) read it.

use std::collections::HashMap;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use grayline_routing::{Catalog, CompiledService, Invalid, LoadBalance, Service, Version};
use http::uri::Authority;
use ipnet::IpNet;

use crate::discovery::Known;
use crate::resilience::breaker::Breaker;
use crate::resilience::health::Probe;
use crate::resilience::outlier::{EndpointHealth, Outliers, now_ms};
use crate::resilience::retry_budget::RetryBudget;
use crate::stats::{self, VersionStats};
use crate::upstream::client::Endpoint;
use crate::upstream::tls::UpstreamTls;

/// Everything the request path needs, for one config revision.
#[derive(Debug)]
pub struct Routing {
    pub revision: u64,
    pub catalog: Catalog,
    /// Parallel to `catalog.services()`: per service, per version.
    pub versions: Vec<Vec<Arc<VersionRuntime>>>,
}

impl Routing {
    /// Every endpoint of every version with its outlier state at `now`.
    pub fn endpoint_health(
        &self,
        now: u64,
    ) -> impl Iterator<Item = (&VersionRuntime, EndpointHealth)> + '_ {
        self.versions.iter().flatten().flat_map(move |v| {
            v.outliers.snapshot(now).into_iter().map(move |mut h| {
                h.unhealthy = !v.probe_ok(h.index);
                (&**v, h)
            })
        })
    }
}

/// Why a mirrored copy was not sent to a version; each reason has its counter in
/// [`VersionRuntime::mirror_skipped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The target already had `max_in_flight` copies in flight.
    InFlight = 0,
    /// The body was longer than `max_body_bytes`.
    BodyTooLarge = 1,
    /// The live request's body never arrived whole (the client went away, or it broke).
    Incomplete = 2,
    /// A gRPC call, and the target does not speak HTTP/2.
    Protocol = 3,
    /// The target has no instance registered now.
    NoInstance = 4,
}

impl Skip {
    pub const ALL: [Skip; 5] = [
        Skip::InFlight,
        Skip::BodyTooLarge,
        Skip::Incomplete,
        Skip::Protocol,
        Skip::NoInstance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::InFlight => "in_flight",
            Skip::BodyTooLarge => "body_too_large",
            Skip::Incomplete => "incomplete",
            Skip::Protocol => "protocol",
            Skip::NoInstance => "no_instance",
        }
    }
}

/// One version's governance on this proxy.
#[derive(Debug)]
pub struct VersionRuntime {
    /// The service it is a version of (shared with the catalog), and which version.
    of: Arc<Service>,
    index: usize,
    /// The version's name as a header value, made once.
    pub name_value: http::HeaderValue,
    /// Its lane as a header value, when it is in one.
    pub lane_value: Option<http::HeaderValue>,
    pub endpoints: Vec<Endpoint>,
    /// Which endpoints are ejected, parallel to `endpoints`.
    pub outliers: Outliers,
    /// What active health checks found, parallel to `endpoints`; empty when the version
    /// checks no health.
    pub probes: Vec<Arc<Probe>>,
    pub budget: RetryBudget,
    /// Retries made, and retries the budget refused.
    pub retries: AtomicU64,
    pub retries_refused: AtomicU64,
    /// Total time for response headers, over all tries.
    pub timeout: Duration,
    /// Time for one try (`timeout` when no shorter per-try timeout is set).
    pub per_try_timeout: Duration,
    /// Shared with the runtime that replaces this one when only the instances change.
    pub breaker: Arc<Breaker>,
    in_flight: AtomicU32,
    next_endpoint: AtomicUsize,
    pub stats: Arc<VersionStats>,
    /// The service's declared events, as `stats` counts them.
    pub events: stats::Events,
    /// The statistics of the mirrored copies it receives, when some route mirrors to it.
    pub mirror_stats: Option<Arc<VersionStats>>,
    /// Mirrored copies in flight to it.
    pub mirror_in_flight: AtomicU32,
    /// Copies not sent to it, by [`Skip`] reason.
    pub mirror_skipped: [AtomicU64; Skip::ALL.len()],
}

/// A slot under the version's concurrency limit, released on drop.
#[derive(Debug)]
pub struct Permit<'a>(&'a AtomicU32);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl VersionRuntime {
    /// The name of the service it is a version of.
    pub fn service(&self) -> &str {
        &self.of.name
    }

    /// The version as configured.
    pub fn definition(&self) -> &Version {
        &self.of.versions[self.index]
    }

    pub fn name(&self) -> &str {
        &self.definition().name
    }

    /// Records one try's outcome for the endpoint's outlier detection.
    pub fn record_try(&self, endpoint: usize, failed: bool) {
        if self.outliers.record(endpoint, failed) {
            tracing::warn!(
                service = %self.service(),
                version = self.name(),
                endpoint = %self.endpoints[endpoint].text,
                failures = self.definition().outlier_detection.consecutive_failures,
                "endpoint ejected after failing in a row"
            );
        }
    }

    /// Takes a slot unless `max_concurrent` requests are already in flight.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let max = self.definition().max_concurrent;
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let permit = Permit(&self.in_flight);
        (max == 0 || now <= max).then_some(permit)
    }

    /// Whether the version has no endpoint at all now (a tagged version no instance of which
    /// is registered): the request path answers with its fallback instead of picking one.
    pub fn has_no_endpoint(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Chooses an endpoint (its index) among those not ejected; the version has one at
    /// least. `affinity` is the client's
    /// identity, hashed, for session-sticky balancing; a sticky client whose endpoint is out
    /// goes to the next one in order, and comes back when it returns.
    pub fn pick(&self, affinity: impl FnOnce() -> Option<u64>) -> usize {
        let n = self.endpoints.len();
        let i = match self.definition().load_balance {
            _ if n == 1 => return 0,
            LoadBalance::RoundRobin => self.next_endpoint.fetch_add(1, Ordering::Relaxed) % n,
            LoadBalance::Random => fastrand::usize(..n),
            LoadBalance::SessionSticky => match affinity() {
                Some(h) => (h % n as u64) as usize,
                None => self.next_endpoint.fetch_add(1, Ordering::Relaxed) % n,
            },
        };
        if !self.outliers.any_ejected() && self.probe_ok(i) {
            return i;
        }
        // Never all of them are out (the ejection cap, the panic threshold), but fall back
        // to `i` if so.
        self.next_available(i, &[]).unwrap_or(i)
    }

    /// Whether active health checks let endpoint `i` take traffic (always, without them).
    pub fn probe_ok(&self, i: usize) -> bool {
        self.probes.get(i).is_none_or(|p| p.is_healthy())
    }

    /// Fewer endpoints are healthy than the panic threshold: health is ignored.
    fn panicking(&self) -> bool {
        if self.probes.is_empty() {
            return false;
        }
        let healthy = self.probes.iter().filter(|p| p.is_healthy()).count();
        let threshold = self.definition().health_check.panic_threshold_percent as usize;
        healthy * 100 < threshold * self.probes.len()
    }

    /// An endpoint for a retry: not one of `tried`, not ejected; `None` when there is none.
    /// Starts at a random one, leaving the round robin's turn alone: a retry must not make
    /// the next request's first try land on the endpoint that just failed.
    pub fn pick_other(&self, tried: &[usize]) -> Option<usize> {
        if self.endpoints.is_empty() {
            return None;
        }
        let start = fastrand::usize(..self.endpoints.len());
        self.next_available(start, tried)
    }

    fn next_available(&self, start: usize, skip: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        let now = now_ms();
        let panicking = self.panicking();
        (0..n).map(|k| (start + k) % n).find(|&j| {
            !skip.contains(&j) && self.outliers.available(j, now) && (panicking || self.probe_ok(j))
        })
    }

    /// Whether a request to this version may ever be tried twice.
    pub fn can_retry(&self) -> bool {
        self.endpoints.len() > 1 || self.definition().retry.attempts > 0
    }
}

/// A service as the last build left it: compiled, and its versions' runtimes.
#[derive(Debug)]
struct Built {
    compiled: Arc<CompiledService>,
    versions: Vec<Arc<VersionRuntime>>,
}

impl Built {
    fn version(&self, name: &str) -> Option<&Arc<VersionRuntime>> {
        self.versions.iter().find(|v| v.name() == name)
    }
}

// Found by the service's name, which the entry holds already: a catalog of thousands of
// services keeps no copy of their names for this.
impl std::borrow::Borrow<str> for Built {
    fn borrow(&self) -> &str {
        self.compiled.name()
    }
}

impl PartialEq for Built {
    fn eq(&self, other: &Built) -> bool {
        self.compiled.name() == other.compiled.name()
    }
}

impl Eq for Built {}

impl std::hash::Hash for Built {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that a lookup by `&str` finds it.
        self.compiled.name().hash(state);
    }
}

/// Builds routing states, reusing a version's breaker and counters when its definition did
/// not change, so a config push does not reset them.
#[derive(Debug, Default)]
pub struct Builder {
    /// Each service as last built, by name: a build compiles only the services that changed
    /// (a push of one service into thousands recompiles one) and carries on the runtimes of
    /// versions whose definition did not change.
    built: HashSet<Built>,
    /// Each checked endpoint's health by (service, version, endpoint), kept across builds.
    probes: HashMap<(String, String, String), Arc<Probe>>,
    /// TLS to upstreams by setting, shared by the versions with the same `tls` (and so their
    /// connections); an entry lives while a version uses it.
    tls: HashMap<grayline_routing::UpstreamTls, Weak<UpstreamTls>>,
    pub upstream_allow: Vec<IpNet>,
}

impl Builder {
    pub fn new(upstream_allow: Vec<IpNet>) -> Builder {
        Builder {
            built: HashSet::new(),
            probes: HashMap::new(),
            tls: HashMap::new(),
            upstream_allow,
        }
    }

    /// The loaded TLS for `settings`: the one a version already uses, else read now.
    fn upstream_tls(
        &mut self,
        settings: &grayline_routing::UpstreamTls,
    ) -> Result<Arc<UpstreamTls>, String> {
        if let Some(tls) = self.tls.get(settings).and_then(Weak::upgrade) {
            return Ok(tls);
        }
        self.tls.retain(|_, tls| tls.strong_count() > 0);
        let tls = Arc::new(UpstreamTls::new(settings)?);
        self.tls.insert(settings.clone(), Arc::downgrade(&tls));
        Ok(tls)
    }

    /// Compiles `services` and prepares their versions, a tagged version with the `known`
    /// instances of its tag; the error says what this proxy cannot apply.
    pub fn build(
        &mut self,
        revision: u64,
        services: &[Arc<Service>],
        known: &Known,
        stats: &stats::Registry,
    ) -> Result<Routing, String> {
        let mut compiled = Vec::with_capacity(services.len());
        let mut errors = Vec::new();
        for s in services {
            let same = self
                .built
                .get(s.name.as_str())
                .map(|b| &b.compiled)
                .filter(|c| Arc::ptr_eq(c.shared(), s) || **c.shared() == **s);
            match same {
                Some(c) => compiled.push(c.clone()),
                None => match CompiledService::compile_shared(s.clone()) {
                    Ok(c) => compiled.push(Arc::new(c)),
                    Err(e) => errors.extend(e.under(&format!("services[{}]", s.name)).errors),
                },
            }
        }
        Invalid::check(errors).map_err(|e| e.to_string())?;
        let catalog = Catalog::assemble(compiled).map_err(|e| e.to_string())?;
        // Kept as it was when this build fails half-way.
        let previous = std::mem::take(&mut self.built);
        let (built, versions) = match self.runtimes(&catalog, &previous, known, stats) {
            Ok(made) => made,
            Err(e) => {
                self.built = previous;
                return Err(e);
            }
        };
        self.built = built;
        // Health of endpoints no version has any more is forgotten.
        let kept: HashSet<(String, String, String)> = versions
            .iter()
            .flatten()
            .flat_map(|v: &Arc<VersionRuntime>| {
                v.endpoints.iter().take(v.probes.len()).map(|e| {
                    (
                        v.service().to_string(),
                        v.name().to_string(),
                        e.text.clone(),
                    )
                })
            })
            .collect();
        self.probes.retain(|k, _| kept.contains(k));
        Ok(Routing {
            revision,
            catalog,
            versions,
        })
    }

    /// Every version's runtime for `catalog`: the one `previous` had where the version did
    /// not change, else a new one (carrying its breaker and outlier state when only its
    /// instances changed).
    #[allow(clippy::type_complexity)]
    fn runtimes(
        &mut self,
        catalog: &Catalog,
        previous: &HashSet<Built>,
        known: &Known,
        stats: &stats::Registry,
    ) -> Result<(HashSet<Built>, Vec<Vec<Arc<VersionRuntime>>>), String> {
        let mut built = HashSet::with_capacity(catalog.len());
        let mut versions = Vec::with_capacity(catalog.len());
        for compiled in catalog.services() {
            let service = compiled.service();
            let targets: HashSet<usize> = compiled.mirror_targets().collect();
            let mut list = Vec::with_capacity(service.versions.len());
            let before = previous.get(service.name.as_str());
            for (i, v) in service.versions.iter().enumerate() {
                let mirrored = targets.contains(&i);
                let endpoints = known.endpoints(&service.name, v);
                let same = before
                    .and_then(|b| b.version(&v.name))
                    .filter(|old| *old.definition() == *v && old.mirror_stats.is_some() == mirrored)
                    .cloned();
                let runtime = match same {
                    Some(old)
                        if old.endpoints.iter().map(|e| &e.text).eq(&endpoints)
                            && old.events.describe(&service.events) =>
                    {
                        old
                    }
                    // Only its instances (or the service's events) changed: its breaker carries
                    // on, and each endpoint still there keeps its outlier state.
                    Some(old) => Arc::new(self.version(
                        compiled.shared(),
                        i,
                        endpoints,
                        mirrored,
                        stats,
                        Some(&old),
                    )?),
                    None => Arc::new(self.version(
                        compiled.shared(),
                        i,
                        endpoints,
                        mirrored,
                        stats,
                        None,
                    )?),
                };
                list.push(runtime);
            }
            built.insert(Built {
                compiled: compiled.clone(),
                versions: list.clone(),
            });
            versions.push(list);
        }
        Ok((built, versions))
    }

    #[allow(clippy::too_many_arguments)]
    fn version(
        &mut self,
        of: &Arc<Service>,
        index: usize,
        texts: Vec<String>,
        mirrored: bool,
        stats: &stats::Registry,
        carried: Option<&VersionRuntime>,
    ) -> Result<VersionRuntime, String> {
        let (service, v) = (of.name.as_str(), &of.versions[index]);
        let tls = v
            .tls
            .as_ref()
            .map(|t| self.upstream_tls(t))
            .transpose()
            .map_err(|e| format!("services[{service}].versions[{index}].tls.{e}"))?;
        let mut endpoints = Vec::with_capacity(texts.len());
        for (j, e) in texts.into_iter().enumerate() {
            let field = match (v.tag(), v.dns()) {
                (Some(tag), _) => format!("instance `{e}` of services[{service}] tagged `{tag}`"),
                (_, Some(name)) => format!("address `{e}` that `{name}` resolved to"),
                _ => format!("services[{service}].versions[{index}].endpoints[{j}]"),
            };
            let (host, _) =
                grayline_routing::parse_endpoint(&e).map_err(|m| format!("{field}: {m}"))?;
            if !self.upstream_allow.is_empty() {
                let allowed = host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| self.upstream_allow.iter().any(|n| n.contains(&ip)));
                if !allowed && v.instances.is_some() {
                    // An instance is not the policy: one outside the networks is left out,
                    // not a reason to refuse the whole config.
                    tracing::warn!(
                        service,
                        version = %v.name,
                        instance = %e,
                        "instance left out: outside this proxy's allowed upstream networks"
                    );
                    continue;
                }
                if !allowed {
                    return Err(format!(
                        "{field}: `{e}` is outside this proxy's allowed upstream networks ({})",
                        self.upstream_allow
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            let authority: Authority = e
                .parse()
                .map_err(|err| format!("{field}: `{e}` is not a valid authority: {err}"))?;
            endpoints.push(Endpoint {
                authority,
                text: e,
                idle: Default::default(),
                tls: tls.clone(),
            });
        }
        let timeout = Duration::from_millis(u64::from(v.timeout_ms));
        let version_stats = stats.get(service, &v.name);
        Ok(VersionRuntime {
            name_value: http::HeaderValue::from_str(&v.name).map_err(|_| {
                format!("services[{service}].versions[{index}].name: not a header value")
            })?,
            lane_value: (!v.lane.is_empty())
                .then(|| http::HeaderValue::from_str(&v.lane))
                .transpose()
                .map_err(|_| {
                    format!("services[{service}].versions[{index}].lane: not a header value")
                })?,
            of: of.clone(),
            index,
            outliers: match carried {
                None => Outliers::new(v.outlier_detection.clone(), endpoints.len()),
                Some(old) => {
                    let from: Vec<Option<usize>> = endpoints
                        .iter()
                        .map(|e| old.endpoints.iter().position(|o| o.text == e.text))
                        .collect();
                    Outliers::carried(v.outlier_detection.clone(), &from, &old.outliers)
                }
            },
            probes: if v.health_check.enabled {
                endpoints
                    .iter()
                    .map(|e| {
                        let key = (service.to_string(), v.name.clone(), e.text.clone());
                        self.probes.entry(key).or_default().clone()
                    })
                    .collect()
            } else {
                Vec::new()
            },
            endpoints,
            budget: RetryBudget::new(v.retry.budget_percent),
            retries: AtomicU64::new(0),
            retries_refused: AtomicU64::new(0),
            timeout,
            per_try_timeout: match v.retry.per_try_timeout_ms {
                0 => timeout,
                ms => Duration::from_millis(u64::from(ms)).min(timeout),
            },
            breaker: carried.map_or_else(
                || Arc::new(Breaker::new(v.breaker.clone())),
                |old| old.breaker.clone(),
            ),
            in_flight: AtomicU32::new(0),
            next_endpoint: AtomicUsize::new(0),
            events: stats::Events::new(&of.events, &version_stats),
            stats: version_stats,
            mirror_stats: mirrored.then(|| stats.mirrored(service, &v.name)),
            mirror_in_flight: AtomicU32::new(0),
            mirror_skipped: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(lb: LoadBalance, endpoints: &[&str], max_concurrent: u32) -> Arc<VersionRuntime> {
        let mut v = Version::new("v1", endpoints);
        v.load_balance = lb;
        v.max_concurrent = max_concurrent;
        let mut service = Service::single("s", v);
        service.hosts = vec!["s.example".into()];
        let mut builder = Builder::default();
        let routing = builder
            .build(
                1,
                &[Arc::new(service)],
                &Known::default(),
                &stats::Registry::default(),
            )
            .unwrap();
        routing.versions[0][0].clone()
    }

    const THREE: [&str; 3] = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];

    #[test]
    fn round_robin_takes_each_endpoint_in_turn() {
        let r = runtime(LoadBalance::RoundRobin, &THREE, 0);
        let picked: Vec<&str> = (0..6)
            .map(|_| r.endpoints[r.pick(|| None)].text.as_str())
            .collect();
        assert_eq!(picked, [THREE, THREE].concat());
    }

    #[test]
    fn session_sticky_keeps_a_client_on_one_endpoint() {
        let r = runtime(LoadBalance::SessionSticky, &THREE, 0);
        for client in 0..20u64 {
            let first = r.pick(|| Some(client));
            for _ in 0..5 {
                assert_eq!(r.pick(|| Some(client)), first);
            }
        }
        let spread: std::collections::HashSet<usize> =
            (0..30u64).map(|c| r.pick(|| Some(c))).collect();
        assert_eq!(spread.len(), 3, "clients spread over every endpoint");
    }

    #[test]
    fn random_reaches_every_endpoint() {
        let r = runtime(LoadBalance::Random, &THREE, 0);
        let seen: std::collections::HashSet<usize> = (0..300).map(|_| r.pick(|| None)).collect();
        assert_eq!(seen.len(), 3);
    }

    fn eject(r: &VersionRuntime, i: usize) {
        let threshold = r.definition().outlier_detection.consecutive_failures;
        assert!(
            (0..threshold).any(|_| r.outliers.record(i, true)),
            "endpoint {i} ejected"
        );
    }

    #[test]
    fn no_strategy_picks_an_ejected_endpoint() {
        for lb in [
            LoadBalance::RoundRobin,
            LoadBalance::Random,
            LoadBalance::SessionSticky,
        ] {
            let r = runtime(lb, &THREE, 0);
            eject(&r, 1);
            for client in 0..300u64 {
                assert_ne!(r.pick(|| Some(client)), 1, "{lb:?}");
            }
            let seen: std::collections::HashSet<usize> =
                (0..300u64).map(|c| r.pick(|| Some(c))).collect();
            assert_eq!(seen.len(), 2, "{lb:?}: the others share the traffic");
        }
    }

    #[test]
    fn a_retry_goes_to_an_endpoint_not_tried_and_not_ejected() {
        let r = runtime(LoadBalance::RoundRobin, &THREE, 0);
        for _ in 0..10 {
            let other = r.pick_other(&[0]).unwrap();
            assert_ne!(other, 0);
        }
        eject(&r, 2);
        for _ in 0..10 {
            assert_eq!(r.pick_other(&[0]), Some(1));
        }
        assert_eq!(r.pick_other(&[0, 1]), None);
        let single = runtime(LoadBalance::RoundRobin, &THREE[..1], 0);
        assert_eq!(single.pick_other(&[0]), None);
        assert!(!single.can_retry(), "one endpoint and no retry attempts");
        assert!(r.can_retry());
    }

    #[test]
    fn the_concurrency_limit_counts_permits() {
        let r = runtime(LoadBalance::RoundRobin, &THREE[..1], 2);
        let a = r.try_acquire().expect("first");
        let b = r.try_acquire().expect("second");
        assert!(r.try_acquire().is_none(), "a third is over the limit");
        drop(a);
        assert!(r.try_acquire().is_some(), "a released slot is free again");
        drop(b);
        let unlimited = runtime(LoadBalance::RoundRobin, &THREE[..1], 0);
        let held: Vec<_> = (0..100)
            .map(|_| unlimited.try_acquire().expect("no limit"))
            .collect();
        assert_eq!(held.len(), 100);
    }

    #[test]
    fn an_unchanged_version_keeps_its_breaker_across_pushes() {
        let service = Service::single("s", Version::new("v1", &["127.0.0.1:1"]));
        let registry = stats::Registry::default();
        let mut builder = Builder::default();
        let first = builder
            .build(
                1,
                &[Arc::new(service.clone())],
                &Known::default(),
                &registry,
            )
            .unwrap();
        let second = builder
            .build(
                2,
                &[Arc::new(service.clone())],
                &Known::default(),
                &registry,
            )
            .unwrap();
        assert!(Arc::ptr_eq(&first.versions[0][0], &second.versions[0][0]));
        let mut changed = service.clone();
        changed.versions[0].timeout_ms = 5;
        let third = builder
            .build(3, &[Arc::new(changed)], &Known::default(), &registry)
            .unwrap();
        assert!(!Arc::ptr_eq(&second.versions[0][0], &third.versions[0][0]));
        assert!(
            Arc::ptr_eq(&second.versions[0][0].stats, &third.versions[0][0].stats),
            "counts carry over"
        );
    }

    #[test]
    fn endpoints_outside_the_allowed_networks_are_refused() {
        let mut builder = Builder::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let ok = Service::single("s", Version::new("v1", &["127.0.0.1:1"]));
        let mut other = Service::single("t", Version::new("v1", &["127.0.0.1:2"]));
        other.path_prefix = "/t".into();
        let registry = stats::Registry::default();
        let build = |builder: &mut Builder, services: &[&Service]| {
            let services: Vec<_> = services.iter().map(|s| Arc::new((*s).clone())).collect();
            builder.build(1, &services, &Known::default(), &registry)
        };
        let first = build(&mut builder, &[&ok, &other]).unwrap();
        for endpoint in ["10.0.0.1:80", "localhost:80"] {
            let bad = Service::single("s", Version::new("v1", &[endpoint]));
            // Refused after `t`'s runtimes were made: the builder keeps what it had.
            let err = build(&mut builder, &[&other, &bad]).unwrap_err();
            assert!(err.contains("services[s]"), "{err}");
            let again = build(&mut builder, &[&ok, &other]).unwrap();
            assert!(Arc::ptr_eq(&first.versions[0][0], &again.versions[0][0]));
            assert!(Arc::ptr_eq(&first.versions[1][0], &again.versions[1][0]));
            let err = builder
                .build(
                    2,
                    &[Arc::new(bad)],
                    &Known::default(),
                    &stats::Registry::default(),
                )
                .unwrap_err();
            assert!(
                err.contains("services[s].versions[0].endpoints[0]"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_tagged_version_follows_its_instances_and_keeps_its_breaker() {
        use grayline_proto::v1 as pb;
        let service = Service::single("s", Version::tagged("v1", "1.1.2"));
        let registry = stats::Registry::default();
        let mut builder = Builder::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let none = builder
            .build(
                1,
                &[Arc::new(service.clone())],
                &Known::default(),
                &registry,
            )
            .unwrap();
        assert!(none.versions[0][0].has_no_endpoint());
        assert_eq!(none.versions[0][0].pick_other(&[]), None);
        let known = |addresses: &[&str]| {
            Known::from_push(vec![pb::ServiceInstances {
                service: "s".into(),
                instances: addresses
                    .iter()
                    .map(|a| pb::Instance {
                        tag: "1.1.2".into(),
                        address: a.to_string(),
                    })
                    .collect(),
            }])
            .unwrap()
        };
        let two = builder
            .build(
                1,
                &[Arc::new(service.clone())],
                &known(&["127.0.0.1:2", "127.0.0.1:1"]),
                &registry,
            )
            .unwrap();
        let texts: Vec<&str> = two.versions[0][0]
            .endpoints
            .iter()
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(texts, ["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(Arc::ptr_eq(
            &none.versions[0][0].breaker,
            &two.versions[0][0].breaker
        ));
        let same = builder
            .build(
                1,
                &[Arc::new(service.clone())],
                &known(&["127.0.0.1:1", "127.0.0.1:2"]),
                &registry,
            )
            .unwrap();
        assert!(
            Arc::ptr_eq(&two.versions[0][0], &same.versions[0][0]),
            "nothing changed"
        );
        // An instance ejected by outlier detection stays out when another one registers.
        eject(&two.versions[0][0], 1);
        let three = builder
            .build(
                1,
                &[Arc::new(service.clone())],
                &known(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]),
                &registry,
            )
            .unwrap();
        let v = &three.versions[0][0];
        let health = v.outliers.snapshot(now_ms());
        assert!(health[1].ejected && !health[0].ejected && !health[2].ejected);
        assert_eq!(health[1].ejections, 1);
        for _ in 0..30 {
            assert_ne!(v.pick(|| None), 1, "the ejected one gets nothing");
        }
        // An instance outside the allowed networks is left out, not a refused config.
        let outside = builder
            .build(
                1,
                &[Arc::new(service.clone())],
                &known(&["10.0.0.1:1", "127.0.0.1:1"]),
                &registry,
            )
            .unwrap();
        let texts: Vec<&str> = outside.versions[0][0]
            .endpoints
            .iter()
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(texts, ["127.0.0.1:1"]);
    }
}
