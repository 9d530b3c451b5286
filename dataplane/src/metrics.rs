//! The proxy's Prometheus metrics, served on the admin port. Request counters are cumulative
//! sums of the per-interval deltas the reporter takes, so they lag by at most one interval
//! and cost nothing on the request path.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::breaker::State;
use crate::stats::Delta;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub service: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub service: String,
    pub version: String,
    pub class: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    requests: Family<ClassLabels, Counter>,
    upstream_errors: Family<VersionLabels, Counter>,
    fallbacks: Family<VersionLabels, Counter>,
    breaker_open: Family<VersionLabels, Gauge>,
    pub revision: Gauge<i64, AtomicI64>,
    pub server_connected: Gauge<i64, AtomicI64>,
    pub config_applied: Counter<u64, AtomicU64>,
    pub config_rejected: Counter<u64, AtomicU64>,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("grayline_proxy");
        let m = Metrics {
            requests: Family::default(),
            upstream_errors: Family::default(),
            fallbacks: Family::default(),
            breaker_open: Family::default(),
            revision: Gauge::default(),
            server_connected: Gauge::default(),
            config_applied: Counter::default(),
            config_rejected: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Responses by service, version and status class",
            m.requests.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream connect errors, resets and timeouts",
            m.upstream_errors.clone(),
        );
        registry.register(
            "fallbacks",
            "Requests answered by the fallback",
            m.fallbacks.clone(),
        );
        registry.register(
            "breaker_open",
            "1 when the version's circuit breaker is open, half-open or forced open",
            m.breaker_open.clone(),
        );
        registry.register(
            "config_revision",
            "Revision of the config being served",
            m.revision.clone(),
        );
        registry.register(
            "server_connected",
            "1 while the config stream is open",
            m.server_connected.clone(),
        );
        registry.register(
            "config_applied",
            "Config pushes applied (ACKed)",
            m.config_applied.clone(),
        );
        registry.register(
            "config_rejected",
            "Config pushes rejected (NACKed)",
            m.config_rejected.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn add(&self, service: &str, version: &str, delta: &Delta, breaker: State) {
        for (class, &n) in CLASSES.iter().zip(delta.status.iter()) {
            if n > 0 {
                self.requests
                    .get_or_create(&ClassLabels {
                        service: service.to_string(),
                        version: version.to_string(),
                        class,
                    })
                    .inc_by(n);
            }
        }
        let labels = VersionLabels {
            service: service.to_string(),
            version: version.to_string(),
        };
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
        let open = matches!(breaker, State::Open | State::HalfOpen | State::ForcedOpen);
        self.breaker_open
            .get_or_create(&labels)
            .set(i64::from(open));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
