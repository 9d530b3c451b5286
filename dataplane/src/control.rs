//! The config stream client: says Hello, applies each pushed snapshot (compile, swap, save)
//! and answers ACK or NACK; reconnects with jittered exponential backoff, serving the last
//! good config all the while.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use grayline_proto::v1 as pb;
use grayline_proto::v1::proxy_message::Kind;
use grayline_routing::Service;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::metrics::Metrics;
use crate::persist::{ConfigFile, Saved};
use crate::runtime::{self, Routing};
use crate::stats;

/// The proxy's routing state and how it got there.
#[derive(Debug)]
pub struct ConfigState {
    pub routing: Arc<ArcSwapOption<Routing>>,
    builder: Mutex<runtime::Builder>,
    stats: Arc<stats::Registry>,
    file: ConfigFile,
    metrics: Arc<Metrics>,
    last_error: Mutex<String>,
}

/// What `/config` on the admin port shows.
#[derive(Debug, Serialize)]
pub struct ConfigReport {
    pub revision: Option<u64>,
    pub server_connected: bool,
    pub last_error: String,
    pub services: Vec<Service>,
}

impl ConfigState {
    pub fn new(
        builder: runtime::Builder,
        stats: Arc<stats::Registry>,
        file: ConfigFile,
        metrics: Arc<Metrics>,
    ) -> ConfigState {
        ConfigState {
            routing: Arc::new(ArcSwapOption::empty()),
            builder: Mutex::new(builder),
            stats,
            file,
            metrics,
            last_error: Mutex::new(String::new()),
        }
    }

    fn set_connected(&self, connected: bool) {
        self.metrics.server_connected.set(i64::from(connected));
    }

    pub fn revision(&self) -> Option<u64> {
        self.routing.load().as_ref().map(|r| r.revision)
    }

    /// Serves the config saved by an earlier run, if there is one.
    pub fn load_saved(&self) -> anyhow::Result<Option<u64>> {
        let Some(saved) = self.file.load()? else {
            return Ok(None);
        };
        self.swap(saved.revision, &saved.services).map_err(|e| {
            anyhow::anyhow!(
                "the saved config in {} is invalid: {e}",
                self.file.path().display()
            )
        })?;
        Ok(Some(saved.revision))
    }

    /// Compiles and swaps in a pushed config, then saves it. The error is what to NACK with.
    pub fn apply(&self, revision: u64, services: Vec<pb::Service>) -> Result<(), String> {
        let services = services
            .into_iter()
            .map(|s| {
                let name = s.name.clone();
                grayline_proto::service_from_pb(s)
                    .map_err(|e| e.under(&format!("services[{name}]")).to_string())
            })
            .collect::<Result<Vec<_>, _>>();
        let result = services.and_then(|services| {
            self.swap(revision, &services)?;
            if let Err(e) = self.file.save(&Saved { revision, services }) {
                // Serving the new config matters more than saving it; say so loudly.
                tracing::error!(error = format!("{e:#}"), "could not save the config; a restart without the server would serve an older one");
            }
            Ok(())
        });
        match &result {
            Ok(()) => {
                self.metrics.config_applied.inc();
                self.set_error(String::new());
            }
            Err(e) => {
                self.metrics.config_rejected.inc();
                self.set_error(format!("revision {revision} rejected: {e}"));
            }
        }
        result
    }

    fn swap(&self, revision: u64, services: &[Service]) -> Result<(), String> {
        let mut builder = self.builder.lock().unwrap_or_else(|e| e.into_inner());
        let routing = builder.build(revision, services, &self.stats)?;
        self.routing.store(Some(Arc::new(routing)));
        self.metrics.revision.set(revision as i64);
        Ok(())
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    pub fn report(&self) -> ConfigReport {
        let routing = self.routing.load_full();
        ConfigReport {
            revision: routing.as_ref().map(|r| r.revision),
            server_connected: self.metrics.server_connected.get() == 1,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            services: routing
                .map(|r| {
                    r.catalog
                        .services()
                        .iter()
                        .map(|c| c.service().clone())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Who this proxy is, for Hello.
#[derive(Clone, Debug)]
pub struct Identity {
    pub proxy_id: String,
    pub services: Vec<String>,
    pub token: String,
}

/// Exponential backoff with jitter: each wait is uniform in [d/2, d], d doubling from
/// `base` up to `max`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .base
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Connects to the server's gRPC address with a short timeout and HTTP/2 keep-alives, so a
/// dead server is noticed within seconds.
pub async fn connect(server: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(server.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect()
        .await?)
}

/// Adds the proxy token to every call.
pub fn bearer(
    token: &str,
) -> anyhow::Result<
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
> {
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    Ok(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    })
}

/// Keeps a config stream open until shutdown.
pub async fn run(
    state: Arc<ConfigState>,
    server: String,
    identity: Identity,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let outcome = tokio::select! {
            r = session(&state, &server, &identity, &mut backoff) => r,
            () = shutdown.cancelled() => return,
        };
        state.set_connected(false);
        match outcome {
            Ok(()) => tracing::warn!("the server closed the config stream; reconnecting"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "config stream failed; serving the last good config"
            ),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn session(
    state: &ConfigState,
    server: &str,
    identity: &Identity,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let mut client = pb::proxy_config_client::ProxyConfigClient::with_interceptor(
        connect(server).await?,
        bearer(&identity.token)?,
    );
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ProxyMessage {
        kind: Some(Kind::Hello(pb::Hello {
            proxy_id: identity.proxy_id.clone(),
            last_applied_revision: state.revision().unwrap_or(0),
            services: identity.services.clone(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        })),
    })
    .await?;
    let mut pushes = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    state.set_connected(true);
    backoff.reset();
    tracing::info!(server, "config stream open");
    while let Some(push) = pushes.message().await? {
        let answer = match state.apply(push.revision, push.services) {
            Ok(()) => {
                tracing::info!(revision = push.revision, "config applied");
                Kind::Ack(pb::Ack {
                    nonce: push.nonce,
                    revision: push.revision,
                })
            }
            Err(error) => {
                tracing::warn!(revision = push.revision, %error, "config rejected; keeping the last good one");
                Kind::Nack(pb::Nack {
                    nonce: push.nonce,
                    revision: push.revision,
                    error,
                })
            }
        };
        tx.send(pb::ProxyMessage { kind: Some(answer) }).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_secs(5) && late <= Duration::from_secs(10),
            "{late:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
