//! The proxy's Prometheus metrics, served on the admin port. Request counters are cumulative
//! sums of the per-interval deltas the reporter takes, so they lag by at most one interval
//! and cost nothing on the request path. Endpoint ejections and retries are read from the
//! routing state at each scrape.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::control::Signals;
use crate::resilience::breaker::State;
use crate::resilience::outlier::now_ms;
use crate::routes::{Routing, Skip, VersionRuntime};
use crate::stats::Delta;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub service: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub service: String,
    pub version: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub service: String,
    pub version: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub service: String,
    pub version: String,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub service: String,
    pub version: String,
    pub event: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    requests: Family<ClassLabels, Counter>,
    mirrored_requests: Family<ClassLabels, Counter>,
    grpc_errors: Family<VersionLabels, Counter>,
    upstream_errors: Family<VersionLabels, Counter>,
    fallbacks: Family<VersionLabels, Counter>,
    events: Family<EventLabels, Counter>,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    /// Metrics without the routing state's or the config stream's (for tests of one part).
    pub fn new() -> Metrics {
        Metrics::serving(Arc::new(ArcSwapOption::empty()), &Signals::default())
    }

    /// The metrics of a proxy serving from `routing`, its config stream's `signals` among
    /// them.
    pub fn serving(routing: Arc<ArcSwapOption<Routing>>, signals: &Signals) -> Metrics {
        let mut registry = Registry::with_prefix("grayline_proxy");
        let m = Metrics {
            requests: Family::default(),
            mirrored_requests: Family::default(),
            grpc_errors: Family::default(),
            upstream_errors: Family::default(),
            fallbacks: Family::default(),
            events: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Answers of each version by status class (the proxy's 502/504 for a version it could not reach included; fallbacks are counted apart)",
            m.requests.clone(),
        );
        registry.register(
            "mirrored_requests",
            "Mirrored copies a version was sent, by the status class of their answer",
            m.mirrored_requests.clone(),
        );
        registry.register(
            "grpc_errors",
            "gRPC calls that ended with a non-zero grpc-status (also counted as 5xx)",
            m.grpc_errors.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream connect errors, resets and timeouts",
            m.upstream_errors.clone(),
        );
        registry.register(
            "fallbacks",
            "Requests the proxy answered with the fallback without asking the version (breaker open, concurrency limit reached)",
            m.fallbacks.clone(),
        );
        registry.register(
            "events",
            "Answers of each version that carried one of the service's declared events",
            m.events.clone(),
        );
        registry.register(
            "config_revision",
            "Revision of the config being served",
            signals.revision.clone(),
        );
        registry.register(
            "server_connected",
            "1 while the config stream is open",
            signals.server_connected.clone(),
        );
        registry.register(
            "config_applied",
            "Config pushes applied (ACKed)",
            signals.config_applied.clone(),
        );
        registry.register(
            "config_rejected",
            "Config pushes rejected (NACKed)",
            signals.config_rejected.clone(),
        );
        registry.register(
            "config_push_bytes",
            "Bytes of config pushes received (protobuf, as sent)",
            signals.push_bytes.clone(),
        );
        registry.register(
            "config_pushed_services",
            "Services carried by config pushes received: every service for a full push, the \
             ones that changed for an incremental one",
            signals.pushed_services.clone(),
        );
        registry.register(
            "config_save_failures",
            "Applied configs that could not be saved to the state directory",
            signals.config_save_failures.clone(),
        );
        registry.register(
            "config_unsaved",
            "1 while the config being served is not the one saved on disk (its save failed)",
            signals.config_unsaved.clone(),
        );
        registry.register(
            "server_token_rejected",
            "1 while the server rejects this proxy's token",
            signals.token_rejected.clone(),
        );
        registry.register(
            "server_token_rejections",
            "Connections the server refused because of this proxy's token",
            signals.token_rejections.clone(),
        );
        registry.register_collector(Box::new(RoutingCollector { routing }));
        Metrics { registry, ..m }
    }

    pub fn add(&self, service: &str, version: &str, delta: &Delta) {
        add_classes(&self.requests, service, version, delta);
        let labels = VersionLabels {
            service: service.to_string(),
            version: version.to_string(),
        };
        if delta.grpc_errors > 0 {
            self.grpc_errors
                .get_or_create(&labels)
                .inc_by(delta.grpc_errors);
        }
        if delta.upstream_errors > 0 {
            self.upstream_errors
                .get_or_create(&labels)
                .inc_by(delta.upstream_errors);
        }
        if delta.fallbacks > 0 {
            self.fallbacks
                .get_or_create(&labels)
                .inc_by(delta.fallbacks);
        }
        for e in &delta.events {
            self.events
                .get_or_create(&EventLabels {
                    service: labels.service.clone(),
                    version: labels.version.clone(),
                    event: e.name.clone(),
                })
                .inc_by(e.count);
        }
    }

    /// Mirrored copies' counts, kept apart from the version's live requests.
    pub fn add_mirrored(&self, service: &str, version: &str, delta: &Delta) {
        add_classes(&self.mirrored_requests, service, version, delta);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn add_classes(family: &Family<ClassLabels, Counter>, service: &str, version: &str, delta: &Delta) {
    for (class, &n) in CLASSES.iter().zip(delta.status.iter()) {
        if n > 0 {
            family
                .get_or_create(&ClassLabels {
                    service: service.to_string(),
                    version: version.to_string(),
                    class,
                })
                .inc_by(n);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Endpoint ejections and retries, read from the routing state being served at each scrape,
/// so endpoints and versions that are gone leave no stale series.
#[derive(Debug)]
struct RoutingCollector {
    routing: Arc<ArcSwapOption<Routing>>,
}

impl Collector for RoutingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(routing) = self.routing.load_full() else {
            return Ok(());
        };
        let versions: Vec<_> = routing.versions.iter().flatten().collect();
        let health: Vec<_> = routing.endpoint_health(now_ms()).collect();
        let endpoint_labels = |v: &VersionRuntime, i: usize| EndpointLabels {
            service: v.service().to_string(),
            version: v.name().to_string(),
            endpoint: v.endpoints[i].text.clone(),
        };
        let version_labels = |v: &VersionRuntime| VersionLabels {
            service: v.service().to_string(),
            version: v.name().to_string(),
        };

        let mut family = encoder.encode_descriptor(
            "endpoint_ejected",
            "1 while outlier detection keeps the endpoint out of its version's rotation",
            None,
            MetricType::Gauge,
        )?;
        for (v, e) in &health {
            ConstGauge::new(i64::from(e.ejected))
                .encode(family.encode_family(&endpoint_labels(v, e.index))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "endpoint_ejections",
            "Times outlier detection ejected the endpoint",
            None,
            MetricType::Counter,
        )?;
        for (v, e) in &health {
            ConstCounter::new(e.ejections)
                .encode(family.encode_family(&endpoint_labels(v, e.index))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "breaker_open",
            "1 when the version's circuit breaker is open, half-open or forced open",
            None,
            MetricType::Gauge,
        )?;
        for v in &versions {
            let open = matches!(
                v.breaker.state(),
                State::Open | State::HalfOpen | State::ForcedOpen
            );
            ConstGauge::new(i64::from(open)).encode(family.encode_family(&version_labels(v))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "retries",
            "Requests tried again on another endpoint, or on the same one after a 502/503/504",
            None,
            MetricType::Counter,
        )?;
        for v in &versions {
            ConstCounter::new(v.retries.load(Ordering::Relaxed))
                .encode(family.encode_family(&version_labels(v))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "retries_refused",
            "Retries not made because the version's retry budget was spent",
            None,
            MetricType::Counter,
        )?;
        for v in &versions {
            ConstCounter::new(v.retries_refused.load(Ordering::Relaxed))
                .encode(family.encode_family(&version_labels(v))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "mirror_skipped",
            "Mirrored copies not sent to the version: in_flight (its max_in_flight reached), \
             body_too_large, incomplete (the live body never arrived whole), protocol (gRPC to \
             a version without HTTP/2)",
            None,
            MetricType::Counter,
        )?;
        for v in versions.iter().filter(|v| v.mirror_stats.is_some()) {
            for why in Skip::ALL {
                let labels = SkipLabels {
                    service: v.service().to_string(),
                    version: v.name().to_string(),
                    reason: why.as_str(),
                };
                ConstCounter::new(v.mirror_skipped[why as usize].load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
