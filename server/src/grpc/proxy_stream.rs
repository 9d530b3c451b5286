//! The proxy config stream: one long-lived session per proxy.
//!
//! The session sends a full snapshot of the proxy's services, waits for its ACK or NACK, and
//! meanwhile only remembers that the catalog moved on: at most one push is unacknowledged, and
//! any number of changes made during that time are coalesced into the next push. The session
//! runs inside the stream tonic sends the pushes from (`Pushes`), not in a task of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use grayline_proto::v1 as pb;
use grayline_proto::v1::proxy_message::Kind;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ApiError;
use crate::instances::{Registration, View};
use crate::operations::Operations;
use crate::proxies::{EjectedEndpoint, Hello};
use crate::store::Catalog;

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The least time between two instances-only pushes to one proxy: registrations churning
/// faster are coalesced into one push a gap, so each proxy gets at most 10 such pushes a
/// second however many instances come and go (config pushes are never held back).
pub const INSTANCES_GAP: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct ProxyStreamService {
    ops: Arc<Operations>,
    shutdown: CancellationToken,
    sessions: AtomicU64,
}

impl ProxyStreamService {
    pub fn new(ops: Arc<Operations>, shutdown: CancellationToken) -> Self {
        ProxyStreamService {
            ops,
            shutdown,
            sessions: AtomicU64::new(0),
        }
    }
}

#[tonic::async_trait]
impl pb::proxy_config_server::ProxyConfig for ProxyStreamService {
    type StreamStream = Pushes;

    async fn stream(
        &self,
        request: Request<Streaming<pb::ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let address = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Status::cancelled("the stream closed before Hello")),
            Ok(Ok(Some(pb::ProxyMessage {
                kind: Some(Kind::Hello(hello)),
            }))) => hello,
            Ok(Ok(Some(_))) => {
                return Err(ApiError::invalid("kind", "the first message must be a Hello").into());
            }
        };
        check_hello(&hello)?;
        let hello = Hello {
            id: hello.proxy_id,
            address,
            services: hello.services,
            last_applied_revision: hello.last_applied_revision,
            proxy_version: hello.proxy_version,
        };
        let session = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(proxy = %hello.id, address = %hello.address, applied = hello.last_applied_revision, "proxy connected");
        self.ops.proxies.connected(&hello, session);
        let session = Session {
            ops: self.ops.clone(),
            hello,
            id: session,
            shutdown: self.shutdown.clone(),
        };
        Ok(Response::new(pushes(session, inbound)))
    }
}

/// One session's pushes, as tonic streams them to its proxy. The stream is the session:
/// polled for the next push, it reads the proxy's ACKs, NACKs and health reports and
/// follows the catalog until a push is due. No task or channel of its own, so a connected
/// proxy costs the server only its HTTP/2 connection and this state (measured: 25.8 → 24.4
/// KiB per proxy against a task fed through a channel). Dropped when the proxy goes away.
pub type Pushes = BoxStream<'static, Result<pb::ConfigPush, Status>>;

fn pushes(session: Session, inbound: Streaming<pb::ProxyMessage>) -> Pushes {
    let live = Live {
        catalog: session.ops.store.subscribe(),
        instances: session.ops.instances.subscribe(),
        session,
        inbound,
        pending: None,
        sent: None,
        sent_instances: Vec::new(),
        instances_sent_at: None,
        held_until: None,
        dirty: true,
        pushes: 0,
        ended: false,
    };
    Box::pin(futures::stream::unfold(live, |mut live| async {
        let push = live.next().await?;
        Some((Ok(push), live))
    }))
}

fn check_hello(h: &pb::Hello) -> Result<(), ApiError> {
    check_proxy_id(&h.proxy_id)?;
    if h.services.len() > 1024 {
        return Err(ApiError::invalid("hello.services", "at most 1024 services"));
    }
    if h.proxy_version.len() > 128 {
        return Err(ApiError::invalid(
            "hello.proxy_version",
            "at most 128 characters",
        ));
    }
    Ok(())
}

/// A proxy id: 1–128 letters, digits, `.`, `_`, `-`, `:`.
pub(crate) fn check_proxy_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::invalid(
            "hello.proxy_id",
            "required, at most 128 characters",
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return Err(ApiError::invalid(
            "hello.proxy_id",
            format!("`{id}` may only contain letters, digits, `.`, `_`, `-` and `:`"),
        ));
    }
    Ok(())
}

struct Session {
    ops: Arc<Operations>,
    hello: Hello,
    id: u64,
    shutdown: CancellationToken,
}

/// A push waiting for its ACK or NACK.
struct Pending {
    nonce: String,
    revision: u64,
}

/// A session while its stream lives.
struct Live {
    session: Session,
    inbound: Streaming<pb::ProxyMessage>,
    catalog: watch::Receiver<Arc<Catalog>>,
    instances: watch::Receiver<Arc<View>>,
    pending: Option<Pending>,
    /// (name, revision) of what the proxy was last sent; `None` before the first push.
    sent: Option<Vec<(String, u64)>>,
    /// (service, epoch) of the instance lists the proxy was last sent.
    sent_instances: Vec<(String, u64)>,
    /// When the last instances-only push went out.
    instances_sent_at: Option<tokio::time::Instant>,
    /// An instances-only push waits until then ([`INSTANCES_GAP`]).
    held_until: Option<tokio::time::Instant>,
    /// The catalog or the instances moved since they were last looked at.
    dirty: bool,
    pushes: u64,
    /// The session ended by itself (and said why); otherwise dropping it ends it.
    ended: bool,
}

impl Live {
    /// The next push, once one is due: the catalog moved and nothing is unacknowledged.
    /// Meanwhile handles what the proxy sends. `None`: the session is over.
    async fn next(&mut self) -> Option<pb::ConfigPush> {
        loop {
            if self.dirty && self.pending.is_none() {
                self.dirty = false;
                let snapshot = self.catalog.borrow_and_update().clone();
                let view = self.instances.borrow_and_update().clone();
                let fingerprint = self.session.fingerprint(&snapshot);
                let listed = self.session.listed(&snapshot, &view);
                let push = if self.sent.as_ref() != Some(&fingerprint) {
                    self.sent = Some(fingerprint);
                    Some(self.session.push(&snapshot, &view, self.pushes + 1))
                } else if listed != self.sent_instances {
                    let now = tokio::time::Instant::now();
                    match self.instances_sent_at.map(|at| at + INSTANCES_GAP) {
                        Some(due) if due > now => {
                            self.held_until = Some(due);
                            None
                        }
                        _ => {
                            self.instances_sent_at = Some(now);
                            Some(self.session.instances_push(
                                snapshot.revision,
                                &view,
                                &listed,
                                &self.sent_instances,
                                self.pushes + 1,
                            ))
                        }
                    }
                } else {
                    None
                };
                if let Some(push) = push {
                    self.pushes += 1;
                    self.sent_instances = listed;
                    self.pending = Some(Pending {
                        nonce: push.nonce.clone(),
                        revision: push.revision,
                    });
                    return Some(push);
                }
            }
            let session = &self.session;
            let held = self.held_until;
            let reason = tokio::select! {
                () = tokio::time::sleep_until(held.unwrap_or_else(tokio::time::Instant::now)), if held.is_some() => {
                    self.held_until = None;
                    self.dirty = true;
                    continue;
                }
                changed = self.catalog.changed() => match changed {
                    Ok(()) => {
                        self.dirty = true;
                        continue;
                    }
                    Err(_) => "the server is stopping",
                },
                changed = self.instances.changed() => match changed {
                    Ok(()) => {
                        self.dirty = true;
                        continue;
                    }
                    Err(_) => "the server is stopping",
                },
                message = self.inbound.message() => match message {
                    Ok(Some(pb::ProxyMessage { kind: Some(Kind::Register(r)) })) => {
                        // Boxed: the registry's futures (an etcd write, say) are large, and
                        // inline they would grow every session's state, registering or not.
                        Box::pin(session.register(r)).await;
                        continue;
                    }
                    Ok(Some(pb::ProxyMessage { kind: Some(Kind::Deregister(k)) })) => {
                        Box::pin(session.deregister(k)).await;
                        continue;
                    }
                    Ok(Some(pb::ProxyMessage { kind: Some(kind) })) => {
                        session.answer(kind, &mut self.pending);
                        continue;
                    }
                    Ok(Some(pb::ProxyMessage { kind: None })) => {
                        session.ops.proxies.seen(&session.hello.id, session.id);
                        continue;
                    }
                    Ok(None) => "the proxy closed the stream",
                    Err(_) => "the stream failed",
                },
                () = session.shutdown.cancelled() => "the server is stopping",
            };
            self.end(reason);
            return None;
        }
    }

    fn end(&mut self, reason: &str) {
        self.ended = true;
        let session = &self.session;
        tracing::info!(proxy = %session.hello.id, reason, "proxy disconnected");
        session
            .ops
            .proxies
            .disconnected(&session.hello.id, session.id);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.ended {
            self.end("the proxy went away");
        }
    }
}

impl Session {
    fn answer(&self, kind: Kind, pending: &mut Option<Pending>) {
        let registry = &self.ops.proxies;
        let id = &self.hello.id;
        match kind {
            Kind::Ack(ack) => {
                if pending.as_ref().is_some_and(|p| p.nonce == ack.nonce) {
                    let revision = pending.take().map_or(ack.revision, |p| p.revision);
                    let warning: String = ack.warning.chars().take(4096).collect();
                    if warning.is_empty() {
                        tracing::debug!(proxy = %id, revision, "config applied");
                    } else {
                        tracing::warn!(proxy = %id, revision, %warning, "config applied with a warning");
                    }
                    registry.acked(id, self.id, revision, &warning);
                } else {
                    registry.seen(id, self.id);
                }
            }
            Kind::Nack(nack) => {
                if pending.as_ref().is_some_and(|p| p.nonce == nack.nonce) {
                    let revision = pending.take().map_or(nack.revision, |p| p.revision);
                    let error: String = nack.error.chars().take(4096).collect();
                    tracing::warn!(proxy = %id, revision, error = %error, "config rejected");
                    registry.nacked(id, self.id, revision, &error);
                } else {
                    registry.seen(id, self.id);
                }
            }
            Kind::Health(health) => {
                let ejected = health
                    .ejected_endpoints
                    .into_iter()
                    .take(crate::proxies::MAX_EJECTED)
                    .map(|e| EjectedEndpoint {
                        service: e.service.chars().take(128).collect(),
                        version: e.version.chars().take(128).collect(),
                        endpoint: e.endpoint.chars().take(300).collect(),
                        until_unix_ms: e.until_unix_ms,
                        ejections: e.ejections,
                        reason: e.reason.chars().take(32).collect(),
                    })
                    .collect();
                registry.ejected(id, self.id, ejected);
            }
            Kind::Hello(_) | Kind::Register(_) | Kind::Deregister(_) => registry.seen(id, self.id),
        }
    }

    /// The proxy registers (or renews) the application it fronts.
    async fn register(&self, r: pb::RegisterRequest) {
        self.ops.proxies.seen(&self.hello.id, self.id);
        let by = format!("proxy {}", self.hello.id);
        let (service, address) = (r.service.clone(), r.address.clone());
        if let Err(e) = self.ops.register(Registration::from(r), &by).await {
            tracing::warn!(proxy = %self.hello.id, %service, %address, error = %e, "the proxy's registration was refused");
        }
    }

    async fn deregister(&self, k: pb::InstanceKey) {
        self.ops.proxies.seen(&self.hello.id, self.id);
        if let Err(e) = self.ops.deregister(&k.service, &k.address).await {
            tracing::warn!(proxy = %self.hello.id, service = %k.service, address = %k.address, error = %e, "the proxy's deregistration failed");
        }
    }

    /// (service, epoch) of the instance lists of the services this proxy is sent.
    fn listed(&self, catalog: &Catalog, view: &View) -> Vec<(String, u64)> {
        self.selected(catalog)
            .filter_map(|r| {
                let name = &r.service.name;
                view.get(name).map(|l| (name.clone(), l.epoch))
            })
            .collect()
    }

    /// The instance lists of `services`, an empty list for one that has none now.
    fn lists<'a>(
        view: &View,
        services: impl Iterator<Item = &'a String>,
    ) -> Vec<pb::ServiceInstances> {
        services
            .map(|name| pb::ServiceInstances {
                service: name.clone(),
                instances: view
                    .get(name)
                    .map(|l| {
                        l.instances
                            .iter()
                            .map(|(tag, address)| pb::Instance {
                                tag: tag.clone(),
                                address: address.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// An instances-only push: the lists that changed since `sent`, and an empty one for
    /// each service that had instances and has none now.
    fn instances_push(
        &self,
        revision: u64,
        view: &View,
        now: &[(String, u64)],
        sent: &[(String, u64)],
        n: u64,
    ) -> pb::ConfigPush {
        let changed = now
            .iter()
            .filter(|entry| !sent.contains(entry))
            .map(|(s, _)| s)
            .chain(
                sent.iter()
                    .filter(|(s, _)| !now.iter().any(|(n, _)| n == s))
                    .map(|(s, _)| s),
            );
        pb::ConfigPush {
            revision,
            nonce: format!("{}-{n}", self.id),
            services: Vec::new(),
            instances: Self::lists(view, changed),
            instances_only: true,
        }
    }

    fn selected<'a>(
        &'a self,
        catalog: &'a Catalog,
    ) -> impl Iterator<Item = &'a crate::store::ServiceRecord> + 'a {
        catalog
            .services
            .values()
            .filter(|r| {
                self.hello.services.is_empty() || self.hello.services.contains(&r.service.name)
            })
            .map(|r| r.as_ref())
    }

    fn fingerprint(&self, catalog: &Catalog) -> Vec<(String, u64)> {
        self.selected(catalog)
            .map(|r| (r.service.name.clone(), r.revision))
            .collect()
    }

    fn push(&self, catalog: &Catalog, view: &View, n: u64) -> pb::ConfigPush {
        let names: Vec<&String> = self
            .selected(catalog)
            .map(|r| &r.service.name)
            .filter(|name| view.contains_key(*name))
            .collect();
        pb::ConfigPush {
            revision: catalog.revision,
            nonce: format!("{}-{n}", self.id),
            services: self
                .selected(catalog)
                .map(|r| (&r.service).into())
                .collect(),
            instances: Self::lists(view, names.into_iter()),
            instances_only: false,
        }
    }
}
