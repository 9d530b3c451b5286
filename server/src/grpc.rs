//! The gRPC side: the config API, the rollouts API, the proxy config stream and the
//! statistics stream, each
//! behind its bearer-token check, on one tonic router.

mod config_api;
mod proxy_stream;
mod registry;
mod rollouts;
mod stats_stream;

use std::sync::Arc;

use grayline_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::{Request, Status};

use crate::access::Caller;
use crate::auth::{Role, Tokens};
use crate::operations::Operations;
use crate::proxies::{ProxyStatus, Registry};
use crate::store::{HistoryEntry, ServiceRecord};

pub use config_api::ConfigApiService;
pub use proxy_stream::ProxyStreamService;
use proxy_stream::check_proxy_id;
pub use registry::RegistryService;
pub use rollouts::RolloutsService;
pub use stats_stream::StatsService;

/// Largest message a client may send (a service with every limit maxed out stays far below).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The tonic routes of every gRPC service.
/// Every gRPC service behind its tokens; with `proxy_certs`, the proxy APIs also need a client
/// certificate that names the proxy.
pub fn routes(
    ops: Arc<Operations>,
    tokens: Tokens,
    proxy_certs: bool,
    shutdown: CancellationToken,
) -> Routes {
    let admin = tokens.clone();
    let config = pb::config_api_server::ConfigApiServer::new(ConfigApiService::new(
        ops.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let proxy = pb::proxy_config_server::ProxyConfigServer::new(ProxyStreamService::new(
        ops.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    // Reports carry one histogram per version; allow more than a config message.
    let stats =
        pb::stats_server::StatsServer::new(StatsService::new(ops.stats.clone(), shutdown.clone()))
            .max_decoding_message_size(16 * MAX_MESSAGE_BYTES);
    let rollouts = pb::rollouts_server::RolloutsServer::new(RolloutsService::new(
        ops.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let instances = pb::registry_server::RegistryServer::new(RegistryService::new(ops.clone()))
        .max_decoding_message_size(64 * 1024);
    let registry_tokens = tokens.clone();
    let rollout_tokens = tokens.clone();
    let stats_tokens = tokens.clone();
    let registry = ops.proxies.clone();
    Routes::new(tonic::service::interceptor::InterceptedService::new(
        config,
        move |req: Request<()>| authorize_caller(&admin, req),
    ))
    .add_service(tonic::service::interceptor::InterceptedService::new(
        proxy,
        move |req: Request<()>| authorize_proxy(&tokens, &registry, proxy_certs, req),
    ))
    .add_service(tonic::service::interceptor::InterceptedService::new(
        rollouts,
        move |req: Request<()>| authorize_caller(&rollout_tokens, req),
    ))
    .add_service(tonic::service::interceptor::InterceptedService::new(
        stats,
        move |req: Request<()>| {
            let req = authorize(&stats_tokens, Role::Proxy, req)?;
            if proxy_certs {
                proxy_certificate(req)
            } else {
                Ok(req)
            }
        },
    ))
    .add_service(tonic::service::interceptor::InterceptedService::new(
        instances,
        move |req: Request<()>| authorize_registrant(&registry_tokens, req),
    ))
}

/// For the admin APIs: the admin token or a token with a role, whose [`Caller`] goes into
/// the request's extensions for the operations to check.
fn authorize_caller(tokens: &Tokens, mut req: Request<()>) -> Result<Request<()>, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let caller = tokens.caller(header).map_err(Status::unauthenticated)?;
    req.extensions_mut().insert(caller);
    Ok(req)
}

/// Who asks, as [`authorize_caller`] found; a request without one may only read.
pub(crate) fn caller_of<T>(req: &Request<T>) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default()
}

/// [`authorize`] for the registry: a token that may register instances
/// ([`Tokens::registrant`]), who it is kept in the request's extensions for the handler.
fn authorize_registrant(tokens: &Tokens, mut req: Request<()>) -> Result<Request<()>, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let registrant = tokens.registrant(header).map_err(Status::unauthenticated)?;
    req.extensions_mut().insert(registrant);
    Ok(req)
}

fn authorize(tokens: &Tokens, role: Role, req: Request<()>) -> Result<Request<()>, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    tokens
        .check(role, header)
        .map(|()| req)
        .map_err(Status::unauthenticated)
}

/// Metadata a proxy names itself with, so a rejected token can be put on its entry.
const PROXY_ID: &str = "x-grayline-proxy-id";

/// A proxy's verified client certificate (DER), for the handlers to check the proxy id a
/// message names against it.
#[derive(Clone, Debug)]
pub(crate) struct ProxyCertificate(pub Vec<u8>);

impl ProxyCertificate {
    /// Refuses `id` unless the certificate names it.
    pub(crate) fn check(
        cert: Option<&ProxyCertificate>,
        id: &str,
        field: &str,
    ) -> Result<(), Status> {
        match cert {
            Some(c) if !crate::tls::certifies(&c.0, id) => Err(Status::permission_denied(format!(
                "{field}: the client certificate does not name proxy `{id}` (its DNS names must include the proxy's id)"
            ))),
            _ => Ok(()),
        }
    }
}

/// Requires a client certificate (verified at the handshake against `--proxy-client-ca`)
/// and keeps it in the request for the handlers.
fn proxy_certificate(mut req: Request<()>) -> Result<Request<()>, Status> {
    let cert = req
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
        .ok_or_else(|| {
            Status::unauthenticated(
                "this server requires a client certificate from proxies (--proxy-client-ca); \
                 give the proxy --tls-cert and --tls-key",
            )
        })?;
    let id = req
        .metadata()
        .get(PROXY_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cert = ProxyCertificate(cert);
    if let Some(id) = id {
        ProxyCertificate::check(Some(&cert), &id, PROXY_ID)?;
    }
    req.extensions_mut().insert(cert);
    Ok(req)
}

/// [`authorize`] for proxies, recording a rejection on the proxy's entry when it says who it
/// is: otherwise only the proxy's own log would know.
fn authorize_proxy(
    tokens: &Tokens,
    registry: &Registry,
    certs: bool,
    req: Request<()>,
) -> Result<Request<()>, Status> {
    let id = req
        .metadata()
        .get(PROXY_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| check_proxy_id(id).is_ok())
        .map(str::to_string);
    let address = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    authorize(tokens, Role::Proxy, req)
        .and_then(|req| {
            if certs {
                proxy_certificate(req)
            } else {
                Ok(req)
            }
        })
        .inspect_err(|status| {
            if let Some(id) = &id {
                tracing::warn!(proxy = %id, %address, error = status.message(), "refused a proxy");
                registry.token_rejected(id, &address, status.message());
            }
        })
}

pub(crate) fn record_to_pb(r: &ServiceRecord) -> pb::ServiceRecord {
    r.into()
}

pub(crate) fn entry_to_pb(e: &HistoryEntry) -> pb::HistoryEntry {
    e.into()
}

pub(crate) fn proxy_to_pb(p: ProxyStatus) -> pb::ProxyStatus {
    p.into()
}
