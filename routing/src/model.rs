//! The routing model: services, versions, policies — the data every part of Grayline shares.
//!
//! These types are what the server stores, what the JSON API speaks and what the proxies
//! compile. They say nothing about validity: [`crate::compile`] checks a [`Service`] and turns
//! it into the form the decision engine runs.

use serde::{Deserialize, Serialize};

/// A service as Grayline routes it: how a proxy recognises its traffic, its versions, and the
/// policy that chooses among them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name, e.g. `checkout`. Letters, digits, `.`, `_`, `-`; at most 63 characters.
    pub name: String,
    /// `Host` values this service answers: exact (`shop.example.com`) or a wildcard suffix
    /// (`*.example.com`). Empty means any host (the service is a catch-all).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only requests whose path starts with this prefix (at a segment boundary) belong to the
    /// service. `/` takes every path.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// The versions that can receive traffic. Their order fixes the order of the bucket ranges
    /// of a sticky split (see [`Split`]), so append new versions rather than reordering.
    pub versions: Vec<Version>,
    /// The version that is considered stable: the default route when the policy has none.
    pub stable: String,
    /// Which version serves which request.
    #[serde(default)]
    pub policy: Policy,
    /// Networks (CIDRs, or bare addresses) whose lane header this service believes, besides
    /// the proxy's `--trusted-proxies`: requests from them may pick a lane (see
    /// [`Version::lane`]). From anyone else the header is ignored and removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lane_sources: Vec<String>,
    /// Application events the proxies count per version, for rollouts' event gates (see
    /// [`Event`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

/// The response header a version names its answer's events in: `x-grayline-event:
/// checkout_failed` (several separated by commas). Only events the service declares are
/// counted; the header is removed before the answer reaches the client.
pub const EVENT_HEADER: &str = "x-grayline-event";

/// An application event: something a version's answer says happened (a failed checkout, a
/// conversion), which the proxies count per version and second, in the totals and in the
/// judged sample, so a rollout can judge it exactly as it judges errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The event's name, as the version's answers name it in [`EVENT_HEADER`]. Letters,
    /// digits, `.`, `_`, `-`; at most 63 characters.
    pub name: String,
    /// Statuses of the version's own answers that are this event too, e.g. `[409, 429]`
    /// (the proxy's 502/504 for a version it could not reach are not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
}

pub fn default_path_prefix() -> String {
    "/".to_string()
}

impl Service {
    /// A service whose single version takes all traffic, the usual starting point.
    pub fn single(name: &str, version: Version) -> Service {
        Service {
            name: name.to_string(),
            hosts: Vec::new(),
            path_prefix: default_path_prefix(),
            stable: version.name.clone(),
            versions: vec![version],
            policy: Policy::default(),
            lane_sources: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// Every place the policy names a version, with its field path, for reference checks.
    pub fn version_references(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for (i, rule) in self.policy.rules.iter().enumerate() {
            rule.route
                .collect_versions(&format!("policy.rules[{i}].route"), &mut out);
        }
        if let Some(route) = &self.policy.default_route {
            route.collect_versions("policy.default_route", &mut out);
        }
        for (i, rule) in self.policy.rules.iter().enumerate() {
            if let Some(m) = &rule.mirror {
                out.push((format!("policy.rules[{i}].mirror.version"), &m.version));
            }
        }
        if let Some(m) = &self.policy.default_mirror {
            out.push(("policy.default_mirror.version".to_string(), &m.version));
        }
        out
    }

    /// The version of this service in `lane`, if it has one.
    pub fn lane_version(&self, lane: &str) -> Option<&Version> {
        self.versions
            .iter()
            .find(|v| !v.lane.is_empty() && v.lane == lane)
    }
}

/// One deployable version of a service and how the proxy talks to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// Name, e.g. `v1` or `1.1.2`. Same character rules as a service name.
    pub name: String,
    /// Upstream endpoints as `host:port` (`10.0.0.5:8080`, `[::1]:8080`, `app-v2.internal:80`);
    /// empty when the version takes its `instances` from a source instead.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Where the version's instances come from, instead of a fixed list of `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Instances>,
    /// How a proxy spreads this version's requests over its endpoints.
    #[serde(default)]
    pub load_balance: LoadBalance,
    /// Time allowed for the upstream to send response headers, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Requests in flight to this version per proxy before the fallback answers; 0 = no limit.
    #[serde(default)]
    pub max_concurrent: u32,
    /// When to stop sending requests to a failing version.
    #[serde(default)]
    pub breaker: Breaker,
    /// What the proxy answers instead when the breaker is open or the limit is reached.
    #[serde(default)]
    pub fallback: Fallback,
    /// When a proxy stops sending to one of the endpoints because it keeps failing.
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    /// Whether proxies ask each endpoint on their own whether it is healthy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub health_check: HealthCheck,
    /// When a proxy tries a failed request again.
    #[serde(default)]
    pub retry: Retry,
    /// How a proxy speaks to the endpoints: HTTP/1.1, HTTP/2 without TLS (h2c), HTTP/2 over
    /// TLS (h2), or the protocol the client used.
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
    /// TLS to the endpoints: how a proxy checks their certificates and which one it shows
    /// them. Unset: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// The full-link lane this version belongs to (e.g. `gray`); empty for none. A request
    /// that arrives in a lane from a trusted source goes to the service's version in that
    /// lane, before the policy; a request this version serves carries its lane on to the
    /// next service. At most one version of a service per lane.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lane: String,
    /// How much mirrored traffic a proxy sends this version (when a route mirrors to it).
    #[serde(default, skip_serializing_if = "is_default")]
    pub mirror_limits: MirrorLimits,
}

/// A version's instances taken from a source rather than listed. One source per version:
/// `tag`, the instances registered with Grayline under the service with that version tag
/// (as ServiceComb's `tags: {version: 1.1.2}` selects them); or `dns`, a name the proxies
/// resolve — `host:port` for its A/AAAA records, or an SRV name (`_http._tcp.shop-v2.internal`)
/// for hosts and ports. (A Kubernetes label selector would be one more field here.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instances {
    /// The version tag its instances registered with (`1.1.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A DNS name the proxies resolve, honouring the records' TTLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
}

impl Version {
    /// A version made of the instances registered with `tag`.
    pub fn tagged(name: &str, tag: &str) -> Version {
        Version {
            instances: Some(Instances {
                tag: Some(tag.to_string()),
                dns: None,
            }),
            ..Version::new(name, &[])
        }
    }

    /// A version made of what `dns` resolves to (`host:port`, or an SRV name).
    pub fn resolved(name: &str, dns: &str) -> Version {
        Version {
            instances: Some(Instances {
                tag: None,
                dns: Some(dns.to_string()),
            }),
            ..Version::new(name, &[])
        }
    }

    /// The registry tag that selects this version's instances, when it has one.
    pub fn tag(&self) -> Option<&str> {
        self.instances.as_ref()?.tag.as_deref()
    }

    /// The DNS name this version's instances come from, when it has one.
    pub fn dns(&self) -> Option<&str> {
        self.instances.as_ref()?.dns.as_deref()
    }
}

pub fn default_timeout_ms() -> u32 {
    30_000
}

impl Version {
    /// A version with default settings and the given endpoints.
    pub fn new(name: &str, endpoints: &[&str]) -> Version {
        Version {
            name: name.to_string(),
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            instances: None,
            load_balance: LoadBalance::default(),
            timeout_ms: default_timeout_ms(),
            max_concurrent: 0,
            breaker: Breaker::default(),
            fallback: Fallback::default(),
            outlier_detection: OutlierDetection::default(),
            health_check: HealthCheck::default(),
            retry: Retry::default(),
            protocol: Protocol::default(),
            tls: None,
            lane: String::new(),
            mirror_limits: MirrorLimits::default(),
        }
    }
}

/// The protocol a proxy speaks to a version's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 (with keep-alive); requests that came over HTTP/2 are sent as HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge (h2c), as gRPC servers speak it.
    H2c,
    /// The client's protocol: HTTP/2 requests (gRPC among them) go over HTTP/2 (h2c, or h2
    /// with `tls`), HTTP/1.x requests over HTTP/1.1.
    Auto,
    /// HTTP/2 over TLS, agreed by ALPN (`h2`), as gRPC servers with TLS speak it; needs `tls`.
    H2,
}

/// How a proxy speaks TLS to a version's endpoints (as Istio's `DestinationRule` TLS
/// settings). The files are on each proxy's host, so private keys never pass through the
/// control plane; a proxy reads them when it builds the version and again when they change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM CA certificates the endpoints' certificates must chain to (an absolute path);
    /// empty: the proxy host's system roots.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
    /// The name the endpoints' certificates must carry, sent as SNI; empty: each endpoint's
    /// host (a DNS name, or an IP address its certificate must list).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_name: String,
    /// A PEM client certificate chain the proxy presents (an absolute path); with
    /// `client_key`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_cert: String,
    /// The PEM private key of `client_cert` (an absolute path).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key: String,
}

/// Bounds on the mirrored copies a proxy sends one version, so a mirror can never cost the
/// live traffic more than a fixed amount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorLimits {
    /// Mirrored requests in flight to this version per proxy; a copy beyond it is not sent.
    pub max_in_flight: u32,
    /// Largest request body mirrored, in bytes; a request with a longer body is not
    /// mirrored (the live request is unaffected). 0 mirrors only requests without a body.
    pub max_body_bytes: u32,
}

impl Default for MirrorLimits {
    fn default() -> Self {
        MirrorLimits {
            max_in_flight: 64,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Load balancing among a version's endpoints (as in ServiceComb Mesher).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// A uniformly random endpoint.
    Random,
    /// The same client keeps the same endpoint (by the split's sticky key, else the client IP).
    SessionSticky,
}

/// A circuit breaker in the style of Hystrix and ServiceComb: when, within the rolling window,
/// at least `request_volume` requests were made and the share that failed is above
/// `error_threshold_percent` beyond chance (see [`Breaker::trips`]), the breaker opens; after
/// `sleep_window_ms` one probe request is let through (half-open), and its outcome closes or
/// re-opens the breaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Breaker {
    pub enabled: bool,
    /// Percentage of failed requests (1–100) that opens the breaker.
    pub error_threshold_percent: u32,
    /// Minimum requests in the window before the breaker may open.
    pub request_volume: u32,
    /// How long the breaker stays open before a probe, in milliseconds.
    pub sleep_window_ms: u32,
    /// Length of the rolling window the error rate is computed over, in milliseconds.
    pub window_ms: u32,
    /// Always open: every request gets the fallback. Wins over `force_closed`.
    pub force_open: bool,
    /// Never open, whatever the error rate.
    pub force_closed: bool,
}

/// How far above the threshold a window's failures must be, in standard deviations of a
/// binomial count at the threshold, before a breaker opens.
pub const BREAKER_MARGIN_SD: f64 = 3.0;

impl Breaker {
    /// Whether a window of `total` requests with `failed` failures opens the breaker: at
    /// least `request_volume` requests, and more failures than a version failing exactly
    /// `error_threshold_percent` of its requests would show but once in a thousand windows —
    /// `failed ≥ n·θ + 3·√(n·θ·(1−θ))`.
    ///
    /// A plain share (`failed ≥ n·θ`) trips small versions on chance alone: a canary on a
    /// tenth of the traffic with 40 requests in its window and a 40 % error rate reaches
    /// 50 % in one window of eight, while its baseline, with 360 requests at the same rate,
    /// never does. Under this rule both stay closed at 40 % and both open once the rate is
    /// clearly above the threshold; the smaller one needs a few more failures to be sure.
    pub fn trips(&self, total: u64, failed: u64) -> bool {
        if total == 0 || total < u64::from(self.request_volume) {
            return false;
        }
        let n = total as f64;
        let theta = f64::from(self.error_threshold_percent.min(100)) / 100.0;
        let margin = BREAKER_MARGIN_SD * (n * theta * (1.0 - theta)).sqrt();
        failed as f64 >= (n * theta + margin).min(n)
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            enabled: true,
            error_threshold_percent: 50,
            request_volume: 20,
            sleep_window_ms: 15_000,
            window_ms: 10_000,
            force_open: false,
            force_closed: false,
        }
    }
}

/// Passive outlier detection, as in Envoy: an endpoint whose requests fail
/// `consecutive_failures` times in a row (a connect error, a reset, a timeout or a `5xx`
/// answer) is ejected — the proxy sends it nothing — for `base_ejection_ms` times the number
/// of times it was ejected lately, at most `max_ejection_ms`. It then returns on its own; if
/// its first request fails again it is ejected again at once. At most
/// `max_ejection_percent` % of the version's endpoints (rounded down) are out at a time, so a
/// version with one endpoint never loses it: its breaker judges it instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    pub enabled: bool,
    /// Failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length, in milliseconds; the n-th ejection in a row lasts n times
    /// as long.
    pub base_ejection_ms: u32,
    /// The longest an ejection lasts, in milliseconds.
    pub max_ejection_ms: u32,
    /// The largest share of the version's endpoints (0–100 %) that may be ejected at once.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            enabled: true,
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
        }
    }
}

/// Active health checks: every proxy asks each of the version's endpoints `GET <path>` (or,
/// with `grpc`, the gRPC health protocol) every `interval_ms`; `unhealthy_threshold` failures in a row (an answer other than 2xx or 3xx,
/// none within `timeout_ms`, no connection) take it out of that proxy's rotation, and
/// `healthy_threshold` successes in a row bring it back. An endpoint starts healthy. When
/// fewer than `panic_threshold_percent` % of the endpoints are healthy, health is ignored
/// and all of them take traffic (Envoy's panic threshold), rather than piling everything on
/// a few. Outlier detection still judges the live requests alongside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    pub enabled: bool,
    /// The path asked, with the endpoint as its `Host`.
    pub path: String,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// 0 = never ignore health.
    pub panic_threshold_percent: u32,
    /// Ask the gRPC health protocol (`grpc.health.v1.Health/Check`, the whole server)
    /// instead of `path`: for `h2c` versions whose endpoints are gRPC servers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grpc: bool,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: false,
            path: "/healthz".into(),
            interval_ms: 5_000,
            timeout_ms: 1_000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            panic_threshold_percent: 50,
            grpc: false,
        }
    }
}

/// Retries. A request that certainly never reached the upstream (the connection was refused,
/// or closed before the request was written) always goes to another endpoint of the version,
/// at most twice. With `attempts` above 0, an idempotent request (`GET`, `HEAD`, `OPTIONS`,
/// `TRACE`, `PUT`, `DELETE`) answered `502`, `503` or `504`, reset, or not answered within
/// `per_try_timeout_ms` is sent again, to another endpoint when there is one, up to
/// `attempts` more times. Either kind of retry is only made while retries in the last 10 s
/// stay within `budget_percent` % of the version's requests (plus 10 per second), so retries
/// never multiply an outage. The version's `timeout_ms` bounds all tries together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Extra tries for idempotent requests that failed; 0 = only the safe retries above.
    pub attempts: u32,
    /// Time one try may take to get response headers, in milliseconds; 0 = `timeout_ms`.
    pub per_try_timeout_ms: u32,
    /// Retries may add at most this share (0–100 %) to the version's requests.
    pub budget_percent: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 0,
            per_try_timeout_ms: 0,
            budget_percent: 20,
        }
    }
}

/// The answer a proxy gives instead of forwarding (the Java chassis fallback policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    #[serde(default)]
    pub policy: FallbackPolicy,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackPolicy {
    /// Fail with `503` and a JSON body naming the service, the version and the reason.
    #[default]
    Fail,
    /// Answer `204 No Content` with an empty body (ServiceComb's `returnNull`).
    ReturnEmpty,
}

/// Ordered rules, first match wins, then the default route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Where requests no rule matched go. Absent means the stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Route>,
    /// A share of the requests the default route decides, copied to another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mirror: Option<Mirror>,
}

/// All conditions must hold for the rule to match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Optional label shown in decisions and the console.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub conditions: Vec<Condition>,
    pub route: Route,
    /// A share of the requests this rule matches, copied to another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

/// Traffic mirroring (shadowing): a share of a route's requests is also sent, as a copy, to
/// another version. The copy is fire-and-forget: its answer is discarded, and the client's
/// answer never waits for it or fails because of it. Copies carry the `x-grayline-mirror`
/// header and are counted apart ("mirrored") in the statistics, so they never mix with the
/// version's live traffic. A request the route already sends to the mirror version is not
/// copied. See [`MirrorLimits`] for the bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The version the copies go to.
    pub version: String,
    /// Share of the route's requests copied, in basis points (10000 = all of them).
    pub weight: u32,
}

/// Where matching requests go: one version, or a weighted split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Version(String),
    Split(Split),
}

impl Route {
    fn collect_versions<'a>(&'a self, path: &str, out: &mut Vec<(String, &'a str)>) {
        match self {
            Route::Version(v) => out.push((format!("{path}.version"), v.as_str())),
            Route::Split(split) => {
                for (i, w) in split.weights.iter().enumerate() {
                    out.push((
                        format!("{path}.split.weights[{i}].version"),
                        w.version.as_str(),
                    ));
                }
            }
        }
    }
}

/// Traffic shared among versions by weight, in basis points (1 = 0.01 %) summing to 10000.
///
/// With a sticky key, the key is hashed into 10000 buckets and each version owns a contiguous
/// range of them, laid out in the order the service lists its versions. A user therefore keeps
/// their version, every proxy agrees, and a version whose weight rises keeps all its users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    pub weights: Vec<Weight>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    pub version: String,
    /// Basis points: 10000 = 100 %, 1 = 0.01 %.
    pub weight: u32,
}

/// What identifies a user for a sticky split.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyKey {
    /// A cookie; a proxy mints and sets it when the request has none.
    Cookie(String),
    /// A request header, e.g. `x-user-id`.
    Header(String),
    /// The client's IP address.
    ClientIp,
}

/// One condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Header(FieldMatch),
    Cookie(FieldMatch),
    Query(FieldMatch),
    Os(FamilyMatch),
    Browser(FamilyMatch),
    SourceIp(CidrMatch),
}

/// A test on a named header, cookie or query parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMatch {
    /// Header names are case-insensitive; cookie and query names are exact.
    pub name: String,
    #[serde(rename = "match")]
    pub op: MatchOp,
    /// Invert the result (a missing value then matches `exact`, `prefix`, `regex`, `one_of`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub negate: bool,
}

/// How a value is tested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchOp {
    Exact(String),
    Prefix(String),
    /// Unanchored search; anchor with `^…$` for a whole-value match.
    Regex(String),
    Present,
    Absent,
    OneOf(Vec<String>),
}

/// A test on the OS or browser family parsed from `User-Agent`, with an optional version range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyMatch {
    /// An OS family (`android`, `ios`, …) or browser family (`chrome`, `wechat`, …).
    pub family: String,
    /// Lowest version that matches, e.g. `10` or `15.4`, compared component by component over
    /// the components it gives (so `13.5.1` is at least `13`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub min_version: String,
    /// Highest version that matches, compared the same way (so `13.5.1` is at most `13`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_version: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub negate: bool,
}

/// A test on the client's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrMatch {
    /// IPv4 or IPv6 networks, e.g. `10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or /128.
    pub cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub negate: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_trips_beyond_chance_not_at_the_share() {
        let b = Breaker::default();
        // Below the request volume nothing trips.
        assert!(!b.trips(19, 19));
        // 20 requests at a 50 % threshold: 10 + 3·√5 = 16.7, so 17 failures.
        assert!(!b.trips(20, 16));
        assert!(b.trips(20, 17));
        // A tenth of the traffic at 40 % errors: 20 of 40 is a plain 50 %, not beyond chance.
        assert!(!b.trips(40, 20));
        assert!(b.trips(40, 30));
        // Large windows need little more than the share.
        assert!(!b.trips(10_000, 5_149));
        assert!(b.trips(10_000, 5_150));
        // A 100 % threshold opens only when everything failed.
        let all = Breaker {
            error_threshold_percent: 100,
            request_volume: 1,
            ..Breaker::default()
        };
        assert!(!all.trips(5, 4));
        assert!(all.trips(5, 5));
        assert!(!all.trips(0, 0));
    }
}
