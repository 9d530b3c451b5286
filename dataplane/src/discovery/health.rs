//! Active health checks: one task per checked endpoint asks `GET <path>` every interval
//! (HTTP/1.1, or HTTP/2 for `h2c` and `h2` versions; over TLS for versions with `tls`, as
//! their requests go), or the gRPC health protocol (`grpc.health.v1.Health/Check` over one
//! lazily connected channel), and records the outcome in
//! the endpoint's [`Probe`], which the request path reads. The tasks follow the routing
//! state: an endpoint that appears gets a checker, one that goes loses it, a changed check
//! restarts it. Checks are spread over the interval so a hundred endpoints are not asked at
//! once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grayline_routing::HealthCheck;
use http::uri::Authority;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::resilience::health::Probe;
use crate::upstream::tls::{Alpn, UpstreamTls};

/// One endpoint to check.
#[derive(Clone, Debug)]
pub struct Target {
    pub service: String,
    pub version: String,
    pub endpoint: Authority,
    /// Ask over HTTP/2 (an `h2c` or `h2` version).
    pub h2: bool,
    /// Ask over TLS (a version with `tls`).
    pub tls: Option<Arc<UpstreamTls>>,
    pub check: HealthCheck,
    pub probe: Arc<Probe>,
}

type Key = (String, String, String);

impl Target {
    fn key(&self) -> Key {
        (
            self.service.clone(),
            self.version.clone(),
            self.endpoint.to_string(),
        )
    }

    /// Whether a running checker for `other` can go on checking this target.
    fn same(&self, other: &Target) -> bool {
        self.h2 == other.h2
            && self.check == other.check
            && Arc::ptr_eq(&self.probe, &other.probe)
            && match (&self.tls, &other.tls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

#[derive(Clone)]
struct Clients {
    http1: Client<HttpConnector, Empty<Bytes>>,
    h2c: Client<HttpConnector, Empty<Bytes>>,
}

/// Keeps one checker running per target in `targets`, until `stop`.
pub async fn run(mut targets: watch::Receiver<Vec<Target>>, stop: CancellationToken) {
    let clients = Clients {
        http1: Client::builder(TokioExecutor::new()).build_http(),
        h2c: Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http(),
    };
    let mut running: HashMap<Key, (Target, JoinHandle<()>)> = HashMap::new();
    loop {
        {
            let wanted = targets.borrow_and_update();
            let keys: std::collections::HashSet<Key> = wanted.iter().map(Target::key).collect();
            running.retain(|k, (_, task)| {
                let keep = keys.contains(k);
                if !keep {
                    task.abort();
                }
                keep
            });
            for t in wanted.iter() {
                let key = t.key();
                if running.get(&key).is_some_and(|(r, _)| r.same(t)) {
                    continue;
                }
                if let Some((_, old)) = running.remove(&key) {
                    old.abort();
                }
                let task = tokio::spawn(check_forever(clients.clone(), t.clone()));
                running.insert(key, (t.clone(), task));
            }
        }
        tokio::select! {
            changed = targets.changed() => if changed.is_err() { break },
            () = stop.cancelled() => break,
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

async fn check_forever(clients: Clients, t: Target) {
    let interval = Duration::from_millis(u64::from(t.check.interval_ms));
    let timeout = Duration::from_millis(u64::from(t.check.timeout_ms));
    // One channel per endpoint for gRPC checks; it reconnects by itself. Over TLS the
    // connector makes the TLS connection, so tonic is given the endpoint as `http://`.
    let grpc = t.check.grpc.then(|| {
        tonic::transport::Endpoint::from_shared(format!("http://{}", t.endpoint)).map(|e| {
            let e = e.connect_timeout(timeout).timeout(timeout);
            match &t.tls {
                None => e.connect_lazy(),
                Some(tls) => e.connect_with_connector_lazy(tls.connector(Alpn::H2)),
            }
        })
    });
    // Over TLS, a client of this endpoint's own (its TLS setting's connections).
    let tls = t.tls.as_ref().map(|tls| {
        Client::builder(TokioExecutor::new())
            .http2_only(t.h2)
            .build(tls.connector(if t.h2 { Alpn::H2 } else { Alpn::Http1 }))
    });
    // The first check somewhere in the first interval, so checks of many endpoints spread.
    tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let outcome = match (&grpc, &tls) {
            (None, None) => {
                let client = if t.h2 { &clients.h2c } else { &clients.http1 };
                check_once(client, "http", &t).await
            }
            (None, Some(client)) => check_once(client, "https", &t).await,
            (Some(Ok(channel)), _) => check_grpc(channel.clone(), timeout).await,
            (Some(Err(e)), _) => Err(e.to_string()),
        };
        let moved = t.probe.record(
            outcome.is_ok(),
            t.check.healthy_threshold,
            t.check.unhealthy_threshold,
        );
        match (moved, outcome) {
            (Some(false), Err(why)) => tracing::warn!(
                service = %t.service,
                version = %t.version,
                endpoint = %t.endpoint,
                %why,
                failures = t.check.unhealthy_threshold,
                "endpoint failed its health checks; out of rotation"
            ),
            (Some(true), _) => tracing::info!(
                service = %t.service,
                version = %t.version,
                endpoint = %t.endpoint,
                "endpoint healthy again; back in rotation"
            ),
            _ => {}
        }
    }
}

/// One gRPC check: `Ok` when the server answers SERVING within the timeout.
async fn check_grpc(channel: tonic::transport::Channel, timeout: Duration) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let asked = client.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(timeout, asked).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(r)) => Err(format!(
            "{:?}",
            ServingStatus::try_from(r.get_ref().status).unwrap_or(ServingStatus::Unknown)
        )),
    }
}

/// One check through `client` (`scheme` is what it speaks): `Ok` for an answer in 2xx or 3xx
/// within the timeout, else why not.
async fn check_once<C>(
    client: &Client<C, Empty<Bytes>>,
    scheme: &str,
    t: &Target,
) -> Result<(), String>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let uri = format!("{scheme}://{}{}", t.endpoint, t.check.path);
    let req = http::Request::get(uri)
        .header(http::header::USER_AGENT, "grayline-health-check")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(u64::from(t.check.timeout_ms));
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Err(crate::upstream::error_chain(&e)),
        Ok(Ok(resp)) if resp.status().is_success() || resp.status().is_redirection() => Ok(()),
        Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
    }
}
