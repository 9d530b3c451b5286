//! The proxy config stream: one long-lived session per proxy.
//!
//! The session sends a full snapshot of the proxy's services, waits for its ACK or NACK, and
//! meanwhile only remembers that the catalog moved on: at most one push is unacknowledged, and
//! any number of changes made during that time are coalesced into the next push.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_proto::v1::proxy_message::Kind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ApiError;
use crate::operations::Operations;
use crate::proxies::{EjectedEndpoint, Hello};
use crate::store::Catalog;

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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
        let (tx, rx) = mpsc::channel(2);
        let session = Session {
            ops: self.ops.clone(),
            hello,
            id: session,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(session.run(inbound, tx));
        Ok(Response::new(Pushes(rx)))
    }
}

/// One session's pushes, as tonic streams them to its proxy. The channel carries them boxed:
/// its first block has 32 slots whatever its bound, held for the session's life, and a push
/// takes 56 bytes where a box takes 8 (measured: 1.5 KiB less server memory per
/// connected proxy).
#[derive(Debug)]
pub struct Pushes(mpsc::Receiver<Box<pb::ConfigPush>>);

impl futures::Stream for Pushes {
    type Item = Result<pb::ConfigPush, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|push| push.map(|p| Ok(*p)))
    }
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

impl Session {
    async fn run(
        self,
        mut inbound: Streaming<pb::ProxyMessage>,
        tx: mpsc::Sender<Box<pb::ConfigPush>>,
    ) {
        let mut catalog = self.ops.store.subscribe();
        let mut pending: Option<Pending> = None;
        // (name, revision) of what the proxy was last sent; `None` before the first push.
        let mut sent: Option<Vec<(String, u64)>> = None;
        let mut dirty = true;
        let mut pushes: u64 = 0;
        let reason = loop {
            if dirty && pending.is_none() {
                dirty = false;
                let snapshot = catalog.borrow_and_update().clone();
                let fingerprint = self.fingerprint(&snapshot);
                if sent.as_ref() != Some(&fingerprint) {
                    pushes += 1;
                    let push = self.push(&snapshot, pushes);
                    pending = Some(Pending {
                        nonce: push.nonce.clone(),
                        revision: push.revision,
                    });
                    sent = Some(fingerprint);
                    if tx.send(Box::new(push)).await.is_err() {
                        break "the proxy went away";
                    }
                }
            }
            tokio::select! {
                changed = catalog.changed() => {
                    if changed.is_err() {
                        break "the server is stopping";
                    }
                    dirty = true;
                }
                message = inbound.message() => match message {
                    Ok(Some(pb::ProxyMessage { kind: Some(kind) })) => self.answer(kind, &mut pending),
                    Ok(Some(pb::ProxyMessage { kind: None })) => self.ops.proxies.seen(&self.hello.id, self.id),
                    Ok(None) => break "the proxy closed the stream",
                    Err(_) => break "the stream failed",
                },
                () = tx.closed() => break "the proxy went away",
                () = self.shutdown.cancelled() => break "the server is stopping",
            }
        };
        tracing::info!(proxy = %self.hello.id, reason, "proxy disconnected");
        self.ops.proxies.disconnected(&self.hello.id, self.id);
    }

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
                    })
                    .collect();
                registry.ejected(id, self.id, ejected);
            }
            Kind::Hello(_) => registry.seen(id, self.id),
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

    fn push(&self, catalog: &Catalog, n: u64) -> pb::ConfigPush {
        pb::ConfigPush {
            revision: catalog.revision,
            nonce: format!("{}-{n}", self.id),
            services: self
                .selected(catalog)
                .map(|r| (&r.service).into())
                .collect(),
        }
    }
}
