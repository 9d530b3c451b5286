//! Connecting to the server: which server, token and actor (flags, then the environment,
//! then the context, then defaults), and the gRPC clients with both on every call.

use std::path::PathBuf;
use std::time::Duration;

use grayline_proto::tls::ClientTls;
use grayline_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::args::ConnectionArgs;
use crate::context::{self, ConfigFile};
use crate::exit::{Code, Failure, Result};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";
pub const DEFAULT_TOKEN_FILE: &str = "grayline-data/admin.token";

/// Adds the token and the actor to every call.
#[derive(Clone, Debug)]
pub struct Auth {
    authorization: MetadataValue<Ascii>,
    actor: MetadataValue<Ascii>,
}

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", self.authorization.clone());
        req.metadata_mut()
            .insert("x-grayline-actor", self.actor.clone());
        Ok(req)
    }
}

pub type Config = pb::config_api_client::ConfigApiClient<InterceptedService<Channel, Auth>>;
pub type Rollouts = pb::rollouts_client::RolloutsClient<InterceptedService<Channel, Auth>>;
pub type Registry = pb::registry_client::RegistryClient<InterceptedService<Channel, Auth>>;

/// Clients for one server.
#[derive(Clone, Debug)]
pub struct Connection {
    pub server: String,
    pub config: Config,
    pub rollouts: Rollouts,
    pub registry: Registry,
}

/// Where and as whom, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub server: String,
    pub token: String,
    pub actor: String,
    /// The CA file for an `https://` server.
    pub ca: Option<PathBuf>,
}

/// Flags, then the environment (flags read it too), then the context, then defaults.
pub fn target(args: &ConnectionArgs) -> Result<Target> {
    let file = ConfigFile::load(&context::path())?;
    let ctx = file
        .context(args.context.as_deref())?
        .map(|(_, c)| c)
        .unwrap_or_default();
    let server = args
        .server
        .clone()
        .or(ctx.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = match std::env::var("GRAYLINE_TOKEN") {
        Ok(t) if !t.trim().is_empty() && args.token_file.is_none() => t.trim().to_string(),
        _ => {
            let path = args
                .token_file
                .clone()
                .or(ctx.token_file)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE));
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_string())
                .map_err(|e| {
                    Failure::new(
                        Code::Unauthenticated,
                        format!(
                            "cannot read the admin token from {}: {e}; give --token-file, set GRAYLINE_TOKEN, or use a context",
                            path.display()
                        ),
                    )
                })?
        }
    };
    let actor = args
        .actor
        .clone()
        .or(ctx.actor)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "grayline-cli".to_string());
    Ok(Target {
        server,
        token,
        actor,
        ca: args.ca.clone().or(ctx.ca),
    })
}

pub async fn connect(t: &Target) -> Result<Connection> {
    let bad = |what: &str, e: String| Failure::invalid(format!("{what}: {e}"));
    let authorization = format!("Bearer {}", t.token)
        .parse()
        .map_err(|_| bad("the token", "is not printable ASCII".into()))?;
    let actor = t
        .actor
        .parse()
        .map_err(|_| bad("--actor", "must be printable ASCII".into()))?;
    let tls = ClientTls {
        ca: t.ca.clone(),
        identity: None,
        flags: ("--ca", "", ""),
    };
    let endpoint = tls
        .endpoint(&t.server)
        .map_err(|e| bad("--server", e))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| {
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        Failure::new(
            Code::Unavailable,
            format!("cannot reach the server at {}: {cause}", t.server),
        )
    })?;
    let auth = Auth {
        authorization,
        actor,
    };
    Ok(Connection {
        server: t.server.clone(),
        config: pb::config_api_client::ConfigApiClient::with_interceptor(
            channel.clone(),
            auth.clone(),
        ),
        rollouts: pb::rollouts_client::RolloutsClient::with_interceptor(
            channel.clone(),
            auth.clone(),
        ),
        registry: pb::registry_client::RegistryClient::with_interceptor(channel, auth),
    })
}
