//! Conversions between the API's shapes (`grayline_routing::api`: records, history entries,
//! proxy status, statistics) and their messages, both ways: the server sends them, clients
//! read them back.

use grayline_routing::Invalid;
use grayline_routing::api::{
    Action, EjectedEndpoint, HistoryEntry, InstanceView, Point, ProxyStatus, SeriesView,
    ServiceRecord,
};

use crate::convert::service_from_pb;
use crate::v1 as pb;

impl From<&ServiceRecord> for pb::ServiceRecord {
    fn from(r: &ServiceRecord) -> Self {
        pb::ServiceRecord {
            service: Some((&r.service).into()),
            revision: r.revision,
        }
    }
}

fn service_of(s: Option<pb::Service>, field: &str) -> Result<grayline_routing::Service, Invalid> {
    let s = s.ok_or_else(|| Invalid::one(field, "missing"))?;
    service_from_pb(s).map_err(|e| e.under(field))
}

impl TryFrom<pb::ServiceRecord> for ServiceRecord {
    type Error = Invalid;
    fn try_from(r: pb::ServiceRecord) -> Result<Self, Invalid> {
        Ok(ServiceRecord {
            service: service_of(r.service, "service")?,
            revision: r.revision,
        })
    }
}

impl From<&HistoryEntry> for pb::HistoryEntry {
    fn from(e: &HistoryEntry) -> Self {
        pb::HistoryEntry {
            revision: e.revision,
            service: e.service.clone(),
            actor: e.actor.clone(),
            token: e.token.clone(),
            time_unix_ms: e.time_unix_ms,
            action: e.action.as_str().to_string(),
            before: e.before.as_ref().map(Into::into),
            after: e.after.as_ref().map(Into::into),
            previous_revision: e.previous_revision,
            summary: e.summary.clone(),
        }
    }
}

impl TryFrom<pb::HistoryEntry> for HistoryEntry {
    type Error = Invalid;
    fn try_from(e: pb::HistoryEntry) -> Result<Self, Invalid> {
        let action = Action::ALL
            .into_iter()
            .find(|a| a.as_str() == e.action)
            .ok_or_else(|| Invalid::one("action", format!("unknown action `{}`", e.action)))?;
        Ok(HistoryEntry {
            revision: e.revision,
            service: e.service,
            actor: e.actor,
            token: e.token,
            time_unix_ms: e.time_unix_ms,
            action,
            before: e
                .before
                .map(|s| service_of(Some(s), "before"))
                .transpose()?,
            after: e.after.map(|s| service_of(Some(s), "after")).transpose()?,
            previous_revision: e.previous_revision,
            summary: e.summary,
        })
    }
}

impl From<ProxyStatus> for pb::ProxyStatus {
    fn from(p: ProxyStatus) -> Self {
        pb::ProxyStatus {
            id: p.id,
            connected: p.connected,
            applied_revision: p.applied_revision,
            nack_revision: p.nack_revision,
            nack_error: p.nack_error,
            last_seen_unix_ms: p.last_seen_unix_ms,
            address: p.address,
            services: p.services,
            connected_since_unix_ms: p.connected_since_unix_ms,
            proxy_version: p.proxy_version,
            ack_warning: p.ack_warning,
            ejected_endpoints: p
                .ejected_endpoints
                .into_iter()
                .map(|e| pb::EjectedEndpoint {
                    service: e.service,
                    version: e.version,
                    endpoint: e.endpoint,
                    until_unix_ms: e.until_unix_ms,
                    ejections: e.ejections,
                    reason: e.reason,
                })
                .collect(),
            token_rejected_unix_ms: p.token_rejected_unix_ms,
            token_error: p.token_error,
        }
    }
}

impl From<pb::ProxyStatus> for ProxyStatus {
    fn from(p: pb::ProxyStatus) -> Self {
        ProxyStatus {
            id: p.id,
            connected: p.connected,
            applied_revision: p.applied_revision,
            nack_revision: p.nack_revision,
            nack_error: p.nack_error,
            last_seen_unix_ms: p.last_seen_unix_ms,
            address: p.address,
            services: p.services,
            connected_since_unix_ms: p.connected_since_unix_ms,
            proxy_version: p.proxy_version,
            ack_warning: p.ack_warning,
            ejected_endpoints: p
                .ejected_endpoints
                .into_iter()
                .map(|e| EjectedEndpoint {
                    service: e.service,
                    version: e.version,
                    endpoint: e.endpoint,
                    until_unix_ms: e.until_unix_ms,
                    ejections: e.ejections,
                    reason: e.reason,
                })
                .collect(),
            token_rejected_unix_ms: p.token_rejected_unix_ms,
            token_error: p.token_error,
        }
    }
}

impl From<&Point> for pb::StatsPoint {
    fn from(p: &Point) -> Self {
        pb::StatsPoint {
            time_unix_s: p.time_unix_s,
            requests: p.requests,
            status_1xx: p.status_1xx,
            status_2xx: p.status_2xx,
            status_3xx: p.status_3xx,
            status_4xx: p.status_4xx,
            status_5xx: p.status_5xx,
            upstream_errors: p.upstream_errors,
            fallbacks: p.fallbacks,
            p50_us: p.p50_us,
            p95_us: p.p95_us,
            p99_us: p.p99_us,
            max_us: p.max_us,
            breaker: p.breaker.clone(),
            grpc_errors: p.grpc_errors,
        }
    }
}

impl From<pb::StatsPoint> for Point {
    fn from(p: pb::StatsPoint) -> Self {
        Point {
            time_unix_s: p.time_unix_s,
            requests: p.requests,
            status_1xx: p.status_1xx,
            status_2xx: p.status_2xx,
            status_3xx: p.status_3xx,
            status_4xx: p.status_4xx,
            status_5xx: p.status_5xx,
            upstream_errors: p.upstream_errors,
            fallbacks: p.fallbacks,
            grpc_errors: p.grpc_errors,
            p50_us: p.p50_us,
            p95_us: p.p95_us,
            p99_us: p.p99_us,
            max_us: p.max_us,
            breaker: p.breaker,
        }
    }
}

impl From<&SeriesView> for pb::StatsSeries {
    fn from(s: &SeriesView) -> Self {
        pb::StatsSeries {
            service: s.service.clone(),
            version: s.version.clone(),
            proxy_id: s.proxy_id.clone(),
            points: s.points.iter().map(Into::into).collect(),
            totals: Some((&s.totals).into()),
            mirrored: s.mirrored,
        }
    }
}

impl From<pb::StatsSeries> for SeriesView {
    fn from(s: pb::StatsSeries) -> Self {
        SeriesView {
            service: s.service,
            version: s.version,
            proxy_id: s.proxy_id,
            mirrored: s.mirrored,
            points: s.points.into_iter().map(Into::into).collect(),
            totals: s.totals.map(Into::into).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::{Service, Version};

    #[test]
    fn shapes_round_trip() {
        let s = Service::single("shop", Version::new("v1", &["127.0.0.1:1"]));
        let e = HistoryEntry {
            revision: 3,
            service: "shop".into(),
            actor: "ada".into(),
            token: "ci".into(),
            time_unix_ms: 9,
            action: Action::SetPolicy,
            before: Some(s.clone()),
            after: Some(s.clone()),
            previous_revision: 2,
            summary: "x".into(),
        };
        assert_eq!(
            HistoryEntry::try_from(pb::HistoryEntry::from(&e)).unwrap(),
            e
        );
        let r = ServiceRecord {
            service: s,
            revision: 3,
        };
        assert_eq!(
            ServiceRecord::try_from(pb::ServiceRecord::from(&r)).unwrap(),
            r
        );
        let p = ProxyStatus {
            id: "edge".into(),
            ejected_endpoints: vec![EjectedEndpoint {
                endpoint: "127.0.0.1:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(ProxyStatus::from(pb::ProxyStatus::from(p.clone())), p);
        let v = SeriesView {
            service: "shop".into(),
            version: "v1".into(),
            proxy_id: String::new(),
            mirrored: true,
            points: vec![Point {
                requests: 4,
                grpc_errors: 1,
                ..Default::default()
            }],
            totals: Point {
                requests: 4,
                ..Default::default()
            },
        };
        assert_eq!(SeriesView::from(pb::StatsSeries::from(&v)), v);
    }
}

impl From<InstanceView> for pb::RegisteredInstance {
    fn from(i: InstanceView) -> Self {
        pb::RegisteredInstance {
            service: i.service,
            tag: i.tag,
            address: i.address,
            metadata: i.metadata.into_iter().collect(),
            ttl_seconds: i.ttl_seconds,
            registered_unix_ms: i.registered_unix_ms,
            last_renewed_unix_ms: i.last_renewed_unix_ms,
            expires_unix_ms: i.expires_unix_ms,
            registered_by: i.registered_by,
            versions: i.versions,
            ejected_by: i.ejected_by,
        }
    }
}

impl From<pb::RegisteredInstance> for InstanceView {
    fn from(i: pb::RegisteredInstance) -> Self {
        InstanceView {
            service: i.service,
            tag: i.tag,
            address: i.address,
            metadata: i.metadata.into_iter().collect(),
            ttl_seconds: i.ttl_seconds,
            registered_unix_ms: i.registered_unix_ms,
            last_renewed_unix_ms: i.last_renewed_unix_ms,
            expires_unix_ms: i.expires_unix_ms,
            registered_by: i.registered_by,
            versions: i.versions,
            ejected_by: i.ejected_by,
        }
    }
}
