//! The server's Prometheus metrics at `/metrics`: request counts per version as the proxies
//! reported them (cumulative since the server started; mirrored copies in a family of their
//! own), report intake, proxies and revision.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::stats::Point;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    service: String,
    version: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    service: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug)]
pub struct ServerMetrics {
    registry: Registry,
    requests: Family<ClassLabels, Counter>,
    mirrored_requests: Family<ClassLabels, Counter>,
    grpc_errors: Family<VersionLabels, Counter>,
    upstream_errors: Family<VersionLabels, Counter>,
    fallbacks: Family<VersionLabels, Counter>,
    reports: Family<ResultLabels, Counter>,
    pub proxies_connected: Gauge<i64, AtomicI64>,
    pub revision: Gauge<i64, AtomicI64>,
    pub store_refusing_writes: Gauge<i64, AtomicI64>,
    pub store_db_bytes: Gauge<i64, AtomicI64>,
}

impl ServerMetrics {
    pub fn new() -> ServerMetrics {
        let mut registry = Registry::with_prefix("grayline");
        let m = ServerMetrics {
            registry: Registry::default(),
            requests: Family::default(),
            mirrored_requests: Family::default(),
            grpc_errors: Family::default(),
            upstream_errors: Family::default(),
            fallbacks: Family::default(),
            reports: Family::default(),
            proxies_connected: Gauge::default(),
            revision: Gauge::default(),
            store_refusing_writes: Gauge::default(),
            store_db_bytes: Gauge::default(),
        };
        registry.register(
            "requests",
            "Requests the proxies served, by service, version and status class",
            m.requests.clone(),
        );
        registry.register(
            "mirrored_requests",
            "Mirrored copies the proxies sent, by service, version and status class",
            m.mirrored_requests.clone(),
        );
        registry.register(
            "grpc_errors",
            "gRPC calls that ended with a non-zero grpc-status (also counted as 5xx)",
            m.grpc_errors.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures the proxies saw",
            m.upstream_errors.clone(),
        );
        registry.register(
            "fallbacks",
            "Requests answered by a fallback",
            m.fallbacks.clone(),
        );
        registry.register(
            "stats_reports",
            "Statistics reports received, counted or duplicate",
            m.reports.clone(),
        );
        registry.register(
            "proxies_connected",
            "Proxies with an open config stream",
            m.proxies_connected.clone(),
        );
        registry.register(
            "catalog_revision",
            "The newest revision of the catalog",
            m.revision.clone(),
        );
        registry.register(
            "server_store_refusing_writes",
            "1 while the store refuses writes (etcd's NOSPACE alarm), else 0",
            m.store_refusing_writes.clone(),
        );
        registry.register(
            "server_store_db_bytes",
            "The size of the etcd member's database this replica last asked (0 on sled)",
            m.store_db_bytes.clone(),
        );
        ServerMetrics { registry, ..m }
    }

    /// Mirrored copies' counts, kept apart from the version's live requests.
    pub fn add_mirrored(&self, service: &str, version: &str, p: &Point) {
        add_classes(&self.mirrored_requests, service, version, p);
    }

    pub fn add(&self, service: &str, version: &str, p: &Point) {
        add_classes(&self.requests, service, version, p);
        let labels = VersionLabels {
            service: service.to_string(),
            version: version.to_string(),
        };
        if p.upstream_errors > 0 {
            self.upstream_errors
                .get_or_create(&labels)
                .inc_by(p.upstream_errors);
        }
        if p.fallbacks > 0 {
            self.fallbacks.get_or_create(&labels).inc_by(p.fallbacks);
        }
        if p.grpc_errors > 0 {
            self.grpc_errors
                .get_or_create(&labels)
                .inc_by(p.grpc_errors);
        }
    }

    pub fn report(&self, counted: bool) {
        let result = if counted { "counted" } else { "duplicate" };
        self.reports.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn add_classes(family: &Family<ClassLabels, Counter>, service: &str, version: &str, p: &Point) {
    let classes = [
        ("1xx", p.status_1xx),
        ("2xx", p.status_2xx),
        ("3xx", p.status_3xx),
        ("4xx", p.status_4xx),
        ("5xx", p.status_5xx),
    ];
    for (class, n) in classes {
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

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}
