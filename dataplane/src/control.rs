//! The config stream client: says Hello, applies each pushed snapshot (compile, swap, save)
//! and answers ACK (with a warning when the save failed) or NACK, tells the server which
//! endpoints are ejected; reconnects with jittered exponential backoff, serving the last good
//! config all the while. What went wrong — a NACK, a failed save, a rejected token, an
//! unreadable saved config — shows on `/config` and `/readyz`, in the metrics and, where the
//! server can be told, on the server.

pub mod persist;

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use grayline_proto::v1 as pb;
use grayline_proto::v1::proxy_message::Kind;
use grayline_routing::Service;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::discovery::{Known, Registration};
use crate::resilience::outlier::{EndpointHealth, now_ms, unix_ms_in};
use crate::routes::{self, Routing};
use crate::stats;
use crate::uplink::servers::Servers;
use crate::uplink::{Backoff, UNREACHABLE, bearer};
use persist::ConfigFile;

/// Counters and gauges of the config stream, shared with the metrics registry (each is a
/// handle on one value).
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// Revision of the config being served.
    pub revision: Gauge<i64, AtomicI64>,
    /// 1 while the config stream is open.
    pub server_connected: Gauge<i64, AtomicI64>,
    pub config_applied: Counter<u64, AtomicU64>,
    pub config_rejected: Counter<u64, AtomicU64>,
    /// Bytes of pushes received, and the services they carried.
    pub push_bytes: Counter<u64, AtomicU64>,
    pub pushed_services: Counter<u64, AtomicU64>,
    pub config_save_failures: Counter<u64, AtomicU64>,
    /// 1 while the config being served is not the one saved on disk.
    pub config_unsaved: Gauge<i64, AtomicI64>,
    /// 1 while the server rejects this proxy's token.
    pub token_rejected: Gauge<i64, AtomicI64>,
    pub token_rejections: Counter<u64, AtomicU64>,
}

/// The proxy's routing state and how it got there.
#[derive(Debug)]
pub struct ConfigState {
    pub routing: Arc<ArcSwapOption<Routing>>,
    builder: Mutex<routes::Builder>,
    stats: Arc<stats::Registry>,
    file: ConfigFile,
    /// What the metrics show of the config stream (registered by `telemetry::metrics`).
    pub signals: Signals,
    problems: Mutex<Problems>,
    /// What is being served: a push of the same revision, services and instances (a
    /// reconnect, to this server or another replica) is acknowledged without being applied
    /// again.
    applied: Mutex<Option<Applied>>,
    /// Held from reading what is applied to swapping in what replaces it, so a push and a
    /// DNS answer arriving together do not undo each other.
    updating: Mutex<()>,
    /// The DNS names the versions being served resolve, for [`crate::discovery::dns`].
    pub dns_names: tokio::sync::watch::Sender<std::collections::BTreeSet<String>>,
    /// The endpoints whose health is checked, for [`crate::discovery::health`].
    pub health_targets: tokio::sync::watch::Sender<Vec<crate::discovery::health::Target>>,
}

/// The config and instances being served.
#[derive(Clone, Debug, PartialEq)]
struct Applied {
    revision: u64,
    /// Shared with the compiled catalog: one copy of each service.
    services: Vec<Arc<Service>>,
    instances: Known,
}

/// What is wrong now, each kept until it is resolved.
#[derive(Clone, Debug, Default)]
struct Problems {
    /// How the last try to reach the server ended.
    contact: Contact,
    /// The last push that could not be applied.
    rejected: String,
    /// Why the config being served is not saved on disk.
    unsaved: String,
    /// Why the saved config could not be served at start (until a push replaces it).
    saved_unreadable: String,
}

/// How the last try to reach the server went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Contact {
    #[default]
    Never,
    Unreachable(String),
    TokenRejected(String),
    Failed(String),
    Connected,
}

/// What `/config` on the admin port shows.
#[derive(Debug, Serialize)]
pub struct ConfigReport {
    pub revision: Option<u64>,
    pub server_connected: bool,
    /// Every problem now, most pressing first, joined by "; "; empty when all is well.
    pub last_error: String,
    /// The server rejects this proxy's token.
    pub token_rejected: bool,
    /// Why the config being served is not saved on disk; empty when it is.
    pub save_error: String,
    pub services: Vec<Service>,
    /// Every endpoint of every version, with its outlier state.
    pub endpoints: Vec<EndpointReport>,
}

/// One endpoint on `/config`.
#[derive(Debug, Serialize)]
pub struct EndpointReport {
    pub service: String,
    pub version: String,
    pub endpoint: String,
    #[serde(flatten)]
    pub health: EndpointHealth,
}

impl ConfigState {
    pub fn new(
        routing: Arc<ArcSwapOption<Routing>>,
        builder: routes::Builder,
        stats: Arc<stats::Registry>,
        file: ConfigFile,
    ) -> ConfigState {
        ConfigState {
            routing,
            builder: Mutex::new(builder),
            stats,
            file,
            signals: Signals::default(),
            problems: Mutex::new(Problems::default()),
            applied: Mutex::new(None),
            updating: Mutex::new(()),
            dns_names: tokio::sync::watch::Sender::new(Default::default()),
            health_targets: tokio::sync::watch::Sender::new(Vec::new()),
        }
    }

    fn problems(&self) -> std::sync::MutexGuard<'_, Problems> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_contact(&self, contact: Contact) {
        let connected = contact == Contact::Connected;
        self.signals.server_connected.set(i64::from(connected));
        let rejected = matches!(contact, Contact::TokenRejected(_));
        self.signals.token_rejected.set(i64::from(rejected));
        if rejected {
            self.signals.token_rejections.inc();
        }
        self.problems().contact = contact;
    }

    pub fn revision(&self) -> Option<u64> {
        self.routing.load().as_ref().map(|r| r.revision)
    }

    /// Serves the config saved by an earlier run, if there is one. Why it cannot be served
    /// stays visible until a push replaces it.
    pub fn load_saved(&self) -> anyhow::Result<Option<u64>> {
        let loaded = self.file.load().and_then(|saved| {
            let Some(saved) = saved else {
                return Ok(None);
            };
            let applied = Applied {
                revision: saved.revision,
                services: saved.services.into_iter().map(Arc::new).collect(),
                instances: saved.instances,
            };
            self.swap(applied).map_err(|e| {
                anyhow::anyhow!(
                    "the saved config in {} is invalid: {e}",
                    self.file.path().display()
                )
            })?;
            Ok(Some(saved.revision))
        });
        if let Err(e) = &loaded {
            self.problems().saved_unreadable = format!("{e:#}");
        }
        loaded
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Option<Applied>> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the proxy holds, for Hello: each service's name and digest.
    fn held(&self) -> Vec<pb::HeldService> {
        self.applied()
            .as_ref()
            .map(|a| {
                a.services
                    .iter()
                    .map(|s| pb::HeldService {
                        name: s.name.clone(),
                        digest: grayline_proto::digest(s.as_ref()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What a push asks to serve: its services and instances; for an instances-only push,
    /// the services served now with its instances; for an incremental one, the services
    /// served now with its changes.
    fn wanted(&self, push: pb::ConfigPush) -> Result<Applied, String> {
        if push.instances_only {
            let Some(mut applied) = self.applied().clone() else {
                return Err("instances arrived before any config".into());
            };
            applied.instances.update(push.instances)?;
            return Ok(applied);
        }
        let mut services = push
            .services
            .into_iter()
            .map(|s| {
                let name = s.name.clone();
                grayline_proto::service_from_pb(s)
                    .map(Arc::new)
                    .map_err(|e| e.under(&format!("services[{name}]")).to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if push.incremental {
            let Some(applied) = self.applied().clone() else {
                return Err("an incremental push arrived before any config".into());
            };
            let mut by_name: std::collections::BTreeMap<String, Arc<Service>> = applied
                .services
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect();
            for name in &push.removed {
                by_name.remove(name);
            }
            for s in services {
                by_name.insert(s.name.clone(), s);
            }
            services = by_name.into_values().collect();
            let instances = if push.all_instances {
                Known::from_push(push.instances)?.with_resolved_of(&applied.instances)
            } else {
                let mut known = applied.instances;
                known.forget(&push.removed);
                known.update(push.instances)?;
                known
            };
            return Ok(Applied {
                revision: push.revision,
                services,
                instances,
            });
        }
        let resolved = self.applied().as_ref().map(|a| a.instances.clone());
        let instances = Known::from_push(push.instances)?;
        Ok(Applied {
            revision: push.revision,
            services,
            instances: match resolved {
                Some(known) => instances.with_resolved_of(&known),
                None => instances,
            },
        })
    }

    /// Compiles and swaps in a pushed config (or instances), then saves it. `Ok` carries the
    /// warning to ACK with (empty when the save worked too); the error is what to NACK with.
    pub fn apply(&self, push: pb::ConfigPush) -> Result<String, String> {
        self.signals
            .push_bytes
            .inc_by(prost::Message::encoded_len(&push) as u64);
        self.signals
            .pushed_services
            .inc_by(push.services.len() as u64);
        let _updating = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        let revision = push.revision;
        let wanted = self.wanted(push);
        if let Ok(wanted) = &wanted
            && self.applied().as_ref() == Some(wanted)
        {
            tracing::debug!(revision, "already serving this config");
            return Ok(self.problems().unsaved.clone());
        }
        let result = wanted.and_then(|wanted| {
            self.swap(wanted)?;
            // Serving the new config matters more than saving it: apply, and say so loudly.
            Ok(match self.save() {
                Ok(()) => String::new(),
                Err(e) => format!(
                    "revision {revision} is applied but could not be saved, so a restart \
                     without the server would serve an older config: {e:#}"
                ),
            })
        });
        let mut problems = self.problems();
        match &result {
            Ok(warning) => {
                self.signals.config_applied.inc();
                problems.rejected.clear();
                problems.saved_unreadable.clear();
                if warning.is_empty() {
                    self.signals.config_unsaved.set(0);
                } else {
                    tracing::error!(warning, "could not save the config");
                    self.signals.config_save_failures.inc();
                    self.signals.config_unsaved.set(1);
                }
                problems.unsaved.clone_from(warning);
            }
            Err(e) => {
                self.signals.config_rejected.inc();
                problems.rejected = format!("revision {revision} rejected: {e}");
            }
        }
        result
    }

    /// What a DNS name resolved to: the versions that use it get the new endpoints (saved
    /// with the config, so a restart without DNS starts from them).
    pub fn resolved(&self, name: &str, endpoints: Vec<String>) {
        let _updating = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut applied) = self.applied().clone() else {
            return;
        };
        if !applied.instances.set_resolved(name, endpoints) {
            return;
        }
        match self.swap(applied) {
            Ok(()) => {
                if let Err(e) = self.save() {
                    tracing::warn!(error = format!("{e:#}"), "could not save what DNS resolved");
                }
            }
            Err(e) => tracing::warn!(name, error = %e, "what DNS resolved cannot be served"),
        }
    }

    /// Saves what is served now.
    fn save(&self) -> anyhow::Result<()> {
        let applied = self.applied();
        let Some(a) = applied.as_ref() else {
            return Ok(());
        };
        self.file.save(a.revision, &a.services, &a.instances)
    }

    fn swap(&self, mut applied: Applied) -> Result<(), String> {
        let names: std::collections::BTreeSet<String> = applied
            .services
            .iter()
            .flat_map(|s| {
                s.versions
                    .iter()
                    .filter_map(|v| v.dns().map(str::to_string))
            })
            .collect();
        applied.instances.keep_resolved(&names);
        self.dns_names.send_if_modified(|now| {
            let changed = *now != names;
            if changed {
                now.clone_from(&names);
            }
            changed
        });
        let mut builder = self.builder.lock().unwrap_or_else(|e| e.into_inner());
        let routing = builder.build(
            applied.revision,
            &applied.services,
            &applied.instances,
            &self.stats,
        )?;
        // The catalog may have kept an equal service it compiled before: hold that copy.
        applied.services = routing
            .catalog
            .services()
            .iter()
            .map(|c| c.shared().clone())
            .collect();
        self.health_targets.send_replace(health_targets(&routing));
        self.routing.store(Some(Arc::new(routing)));
        self.signals.revision.set(applied.revision as i64);
        *self.applied() = Some(applied);
        Ok(())
    }

    /// `Ok` with what is served when ready, else why not: for `/readyz`.
    pub fn readiness(&self) -> Result<String, String> {
        if let Some(revision) = self.revision() {
            return Ok(format!("ready: serving revision {revision}"));
        }
        let p = self.problems().clone();
        let saved = if p.saved_unreadable.is_empty() {
            "none was saved".to_string()
        } else {
            format!("the saved one is unusable: {}", p.saved_unreadable)
        };
        Err(match p.contact {
            Contact::Never | Contact::Unreachable(_) => {
                let why = match &p.contact {
                    Contact::Unreachable(e) => format!(" ({e})"),
                    _ => String::new(),
                };
                format!("not ready: no config yet: the server was never reached{why} and {saved}")
            }
            Contact::TokenRejected(e) => {
                format!(
                    "not ready: no config yet: the server rejected this proxy's token ({e}), and {saved}"
                )
            }
            Contact::Failed(e) => {
                format!(
                    "not ready: no config yet: the server answered but the stream failed ({e}), and {saved}"
                )
            }
            Contact::Connected if !p.rejected.is_empty() => {
                format!("not ready: no config yet: {}", p.rejected)
            }
            Contact::Connected => {
                "not ready: connected, waiting for the server's first config".into()
            }
        })
    }

    pub fn report(&self) -> ConfigReport {
        let routing = self.routing.load_full();
        let p = self.problems().clone();
        let contact = match &p.contact {
            Contact::TokenRejected(e) => format!("the server rejected this proxy's token: {e}"),
            _ => String::new(),
        };
        let saved = if !p.saved_unreadable.is_empty() && routing.is_none() {
            format!("no config served: {}", p.saved_unreadable)
        } else {
            String::new()
        };
        let last_error = [contact, saved, p.unsaved.clone(), p.rejected.clone()]
            .into_iter()
            .filter(|e| !e.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let now = now_ms();
        let endpoints = routing
            .iter()
            .flat_map(|r| r.endpoint_health(now))
            .map(|(v, health)| EndpointReport {
                service: v.service().to_string(),
                version: v.name().to_string(),
                endpoint: v.endpoints[health.index].text.clone(),
                health,
            })
            .collect();
        ConfigReport {
            revision: routing.as_ref().map(|r| r.revision),
            server_connected: p.contact == Contact::Connected,
            last_error,
            token_rejected: matches!(p.contact, Contact::TokenRejected(_)),
            save_error: p.unsaved,
            services: routing
                .map(|r| {
                    r.catalog
                        .services()
                        .iter()
                        .map(|c| c.service().clone())
                        .collect()
                })
                .unwrap_or_default(),
            endpoints,
        }
    }

    /// The endpoints out of rotation now — ejected by outlier detection or failing their
    /// health checks — as the server hears of them.
    pub fn health(&self) -> pb::Health {
        let now = now_ms();
        let routing = self.routing.load_full();
        let ejected_endpoints = routing
            .iter()
            .flat_map(|r| r.endpoint_health(now))
            .filter(|(_, h)| h.ejected || h.unhealthy)
            .map(|(v, h)| pb::EjectedEndpoint {
                service: v.service().to_string(),
                version: v.name().to_string(),
                endpoint: v.endpoints[h.index].text.clone(),
                until_unix_ms: if h.ejected {
                    unix_ms_in(Duration::from_millis(h.ejected_for_ms))
                } else {
                    0
                },
                ejections: h.ejections,
                reason: if h.ejected { "outlier" } else { "health_check" }.to_string(),
            })
            .collect();
        pb::Health { ejected_endpoints }
    }
}

/// Every checked endpoint of `routing`, with its probe.
fn health_targets(routing: &Routing) -> Vec<crate::discovery::health::Target> {
    routing
        .versions
        .iter()
        .flatten()
        .flat_map(|v| {
            v.endpoints
                .iter()
                .zip(&v.probes)
                .map(|(e, probe)| crate::discovery::health::Target {
                    service: v.service().to_string(),
                    version: v.name().to_string(),
                    endpoint: e.authority.clone(),
                    h2: matches!(
                        v.definition().protocol,
                        grayline_routing::Protocol::H2c | grayline_routing::Protocol::H2
                    ),
                    tls: e.tls.clone(),
                    check: v.definition().health_check.clone(),
                    probe: probe.clone(),
                })
        })
        .collect()
}

/// Who this proxy is, for Hello.
#[derive(Clone, Debug)]
pub struct Identity {
    pub proxy_id: String,
    pub services: Vec<String>,
    pub token: String,
    /// The application this proxy registers and keeps alive, if any.
    pub registration: Option<Registration>,
}

/// [`bearer`], plus the proxy's id, so the server can say which proxy a rejected token
/// came from.
fn identified(
    token: &str,
    proxy_id: &str,
) -> anyhow::Result<
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
> {
    let mut add_token = bearer(token)?;
    let id: tonic::metadata::MetadataValue<_> = proxy_id.parse()?;
    Ok(move |req: tonic::Request<()>| {
        let mut req = add_token(req)?;
        req.metadata_mut().insert("x-grayline-proxy-id", id.clone());
        Ok(req)
    })
}

/// Waits after the server answered with an error (a rejected token, say): retrying quickly
/// would not change its answer.
const REFUSED: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(10));

/// How a session ended.
enum Ended {
    /// The server closed the stream.
    Closed,
    /// No connection could be made.
    Unreachable(anyhow::Error),
    /// The server refused the token.
    TokenRejected(tonic::Status),
    /// Anything else after the server answered.
    Failed(anyhow::Error),
}

/// Keeps a config stream open until shutdown.
pub async fn run(
    state: Arc<ConfigState>,
    servers: Arc<Servers>,
    identity: Identity,
    shutdown: CancellationToken,
) {
    let mut unreachable = Backoff::new(UNREACHABLE.0, UNREACHABLE.1);
    let mut refused = Backoff::new(REFUSED.0, REFUSED.1);
    loop {
        let (opened, ended) = tokio::select! {
            r = session(&state, &servers, &identity) => r,
            () = shutdown.cancelled() => return,
        };
        if opened {
            unreachable.reset();
            refused.reset();
        }
        let serving = match state.revision() {
            Some(revision) => format!("serving revision {revision}"),
            None => "no config to serve yet".to_string(),
        };
        let delay = match ended {
            Ended::Closed => {
                state.set_contact(Contact::Failed("the server closed the stream".into()));
                tracing::warn!("the server closed the config stream; reconnecting, {serving}");
                unreachable.next_delay()
            }
            Ended::Unreachable(e) => {
                let error = format!("{e:#}");
                tracing::warn!(%error, "cannot reach the server; {serving}");
                state.set_contact(Contact::Unreachable(error));
                unreachable.next_delay()
            }
            Ended::TokenRejected(status) => {
                let error = status.message().to_string();
                tracing::error!(%error, "the server rejected this proxy's token; {serving}");
                state.set_contact(Contact::TokenRejected(error));
                refused.next_delay()
            }
            Ended::Failed(e) => {
                let error = format!("{e:#}");
                tracing::warn!(%error, "config stream failed; {serving}");
                state.set_contact(Contact::Failed(error));
                // The stream may have broken because the server went away: look again soon.
                unreachable.next_delay()
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// How long a clean stop waits for the server to take the application's registration back.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes the application's registration back as the proxy stops cleanly, so no proxy sends
/// it traffic for the rest of its TTL. Best effort: if no server answers in time, the
/// registration expires.
pub async fn deregister(servers: &Servers, token: &str, registration: &Registration) {
    let done = tokio::time::timeout(DEREGISTER_TIMEOUT, async {
        let (channel, _) = servers.connect().await?;
        let mut client =
            pb::registry_client::RegistryClient::with_interceptor(channel, bearer(token)?);
        client.deregister(registration.key()).await?;
        anyhow::Ok(())
    })
    .await;
    match done {
        Ok(Ok(())) => tracing::info!(
            service = %registration.service,
            address = %registration.address,
            "deregistered the application"
        ),
        Ok(Err(e)) => tracing::warn!(
            error = format!("{e:#}"),
            "could not deregister the application; it expires after its TTL"
        ),
        Err(_) => tracing::warn!(
            "no server answered the deregistration in time; the application expires after its TTL"
        ),
    }
}

/// How often the session checks whether the ejected endpoints changed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// One connection: whether the stream opened, and how it ended.
async fn session(state: &ConfigState, servers: &Servers, identity: &Identity) -> (bool, Ended) {
    let (channel, server) = match servers.connect().await {
        Ok(c) => c,
        Err(e) => return (false, Ended::Unreachable(e)),
    };
    let interceptor = match identified(&identity.token, &identity.proxy_id) {
        Ok(i) => i,
        Err(e) => return (false, Ended::Failed(e)),
    };
    let mut client =
        pb::proxy_config_client::ProxyConfigClient::with_interceptor(channel, interceptor);
    let (tx, rx) = mpsc::channel(8);
    // What it holds, in parts after the Hello when it is long.
    let (held, rest) =
        grayline_proto::parts::held_parts(state.held(), grayline_proto::parts::PART_BYTES);
    let hello = pb::ProxyMessage {
        kind: Some(Kind::Hello(pb::Hello {
            proxy_id: identity.proxy_id.clone(),
            last_applied_revision: state.revision().unwrap_or(0),
            services: identity.services.clone(),
            proxy_version: env!("CARGO_PKG_VERSION").to_string(),
            incremental: true,
            held,
            held_more: !rest.is_empty(),
        })),
    };
    if tx.send(hello).await.is_err() {
        return (false, Ended::Closed);
    }
    if !rest.is_empty() {
        // Fed while the call opens: the server reads them all before it answers.
        let tx = tx.clone();
        tokio::spawn(async move {
            for part in rest {
                let message = pb::ProxyMessage {
                    kind: Some(Kind::Held(part)),
                };
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
    let mut pushes = match client.stream(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let ended = match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    Ended::TokenRejected(status)
                }
                // The connection was made but the call did not get through.
                tonic::Code::Unavailable => Ended::Unreachable(status.into()),
                _ => Ended::Failed(status.into()),
            };
            return (false, ended);
        }
    };
    state.set_contact(Contact::Connected);
    tracing::info!(server, "config stream open");
    let ended = match serve(state, &mut pushes, &tx, identity.registration.as_ref()).await {
        Ok(()) => Ended::Closed,
        Err(e) => Ended::Failed(e),
    };
    // Closed or broken: the next try starts with another replica.
    servers.failed(server);
    (true, ended)
}

/// Answers pushes, keeps the server told which endpoints are ejected, and keeps the
/// application's registration alive.
async fn serve(
    state: &ConfigState,
    pushes: &mut tonic::Streaming<pb::ConfigPush>,
    tx: &mpsc::Sender<pb::ProxyMessage>,
    registration: Option<&Registration>,
) -> anyhow::Result<()> {
    // What the server was last told: (service, version, endpoint, ejections, reason).
    let mut told: Vec<(String, String, String, u64, String)> = Vec::new();
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Registered at once, then renewed; a renewal is the registration again.
    let mut renew = tokio::time::interval(
        registration.map_or(Duration::from_secs(3600), Registration::renew_every),
    );
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A push arriving in parts, until its last.
    let mut begun = None;
    loop {
        tokio::select! {
            part = pushes.message() => {
                let Some(part) = part? else { return Ok(()) };
                let Some(push) = grayline_proto::parts::join(&mut begun, part) else { continue };
                let (nonce, revision, only) = (push.nonce.clone(), push.revision, push.instances_only);
                let what = if only { "instances applied" } else { "config applied" };
                let answer = match state.apply(push) {
                    Ok(warning) => {
                        tracing::info!(revision, "{what}");
                        Kind::Ack(pb::Ack { nonce, revision, warning })
                    }
                    Err(error) => {
                        tracing::warn!(revision, %error, "push rejected; keeping the last good config");
                        Kind::Nack(pb::Nack { nonce, revision, error })
                    }
                };
                tx.send(pb::ProxyMessage { kind: Some(answer) }).await?;
            }
            _ = renew.tick(), if registration.is_some() => {
                if let Some(r) = registration {
                    tx.send(pb::ProxyMessage { kind: Some(Kind::Register(r.request())) }).await?;
                }
            }
            _ = tick.tick() => {
                let health = state.health();
                let now: Vec<_> = health
                    .ejected_endpoints
                    .iter()
                    .map(|e| (e.service.clone(), e.version.clone(), e.endpoint.clone(), e.ejections, e.reason.clone()))
                    .collect();
                if now != told {
                    tx.send(pb::ProxyMessage { kind: Some(Kind::Health(health)) }).await?;
                    told = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::Version;

    fn service(name: &str, endpoint: &str) -> Service {
        let mut s = Service::single(name, Version::new("v1", &[endpoint]));
        s.hosts = vec![format!("{name}.example")];
        s
    }

    fn state(dir: &std::path::Path) -> ConfigState {
        ConfigState::new(
            Arc::new(ArcSwapOption::empty()),
            routes::Builder::default(),
            Arc::new(stats::Registry::default()),
            ConfigFile::new(dir),
        )
    }

    fn instances(service: &str, addresses: &[&str]) -> pb::ServiceInstances {
        pb::ServiceInstances {
            service: service.into(),
            instances: addresses
                .iter()
                .map(|a| pb::Instance {
                    tag: "t".into(),
                    address: (*a).into(),
                })
                .collect(),
        }
    }

    fn served(state: &ConfigState) -> Vec<(String, Vec<String>)> {
        state
            .applied()
            .as_ref()
            .unwrap()
            .services
            .iter()
            .map(|s| (s.name.clone(), s.versions[0].endpoints.clone()))
            .collect()
    }

    #[test]
    fn incremental_pushes_change_what_they_name_and_keep_the_rest_saved_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let early = pb::ConfigPush {
            revision: 1,
            incremental: true,
            ..Default::default()
        };
        assert!(
            state
                .apply(early)
                .unwrap_err()
                .contains("incremental push arrived before any config")
        );

        let full = pb::ConfigPush {
            revision: 3,
            nonce: "n1".into(),
            services: ["a", "b", "c"]
                .map(|n| (&service(n, "127.0.0.1:1")).into())
                .to_vec(),
            instances: vec![
                instances("a", &["10.0.0.1:80"]),
                instances("b", &["10.0.0.2:80"]),
            ],
            all_instances: true,
            ..Default::default()
        };
        state.apply(full).unwrap();
        assert_eq!(state.held().len(), 3);

        let delta = pb::ConfigPush {
            revision: 5,
            nonce: "n2".into(),
            services: vec![
                (&service("b", "127.0.0.1:2")).into(),
                (&service("d", "127.0.0.1:4")).into(),
            ],
            removed: vec!["a".into()],
            incremental: true,
            ..Default::default()
        };
        state.apply(delta).unwrap();
        let one = |e: &str| vec![e.to_string()];
        assert_eq!(
            served(&state),
            [
                ("b".to_string(), one("127.0.0.1:2")),
                ("c".to_string(), one("127.0.0.1:1")),
                ("d".to_string(), one("127.0.0.1:4")),
            ]
        );
        let applied = state.applied().clone().unwrap();
        assert_eq!(applied.revision, 5);
        assert_eq!(
            applied.instances.len(),
            1,
            "a's instances are forgotten, b's kept"
        );
        let saved = ConfigFile::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(
            (saved.revision, &saved.services, &saved.instances),
            (
                5,
                &applied.services.iter().map(|s| (**s).clone()).collect(),
                &applied.instances
            )
        );
        let digests: Vec<u64> = applied
            .services
            .iter()
            .map(|s| grayline_proto::digest(s))
            .collect();
        let held: Vec<u64> = state.held().iter().map(|h| h.digest).collect();
        assert_eq!(held, digests);

        // A bad service in an incremental push changes nothing.
        let mut bad: pb::Service = (&service("c", "127.0.0.1:3")).into();
        bad.versions.clear();
        let rejected = pb::ConfigPush {
            revision: 6,
            services: vec![bad],
            removed: vec!["b".into()],
            incremental: true,
            ..Default::default()
        };
        assert!(state.apply(rejected).is_err());
        assert_eq!(state.applied().as_ref().unwrap(), &applied);

        // The first push of a stream lists every instance list there is.
        let first = pb::ConfigPush {
            revision: 7,
            instances: vec![instances("c", &["10.0.0.3:80"])],
            incremental: true,
            all_instances: true,
            ..Default::default()
        };
        state.apply(first).unwrap();
        let known = state.applied().clone().unwrap().instances;
        assert_eq!(
            known.endpoints("c", &Version::tagged("v1", "t")),
            ["10.0.0.3:80"]
        );
        assert_eq!(known.len(), 1, "b's list is gone");
    }
}
