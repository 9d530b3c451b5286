//! The real `grayline-server`, started in a temporary data directory, with clients for its
//! gRPC and JSON APIs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use grayline_proto::v1 as pb;
use tempfile::TempDir;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::process::{Exited, Process};

/// Adds `authorization: Bearer …` (and optionally an actor) to every call.
#[derive(Clone, Debug)]
pub struct Bearer {
    authorization: Option<MetadataValue<Ascii>>,
    actor: Option<MetadataValue<Ascii>>,
}

impl Bearer {
    pub fn new(token: Option<&str>, actor: Option<&str>) -> Bearer {
        Bearer {
            authorization: token.map(|t| format!("Bearer {t}").parse().expect("ascii token")),
            actor: actor.map(|a| a.parse().expect("ascii actor")),
        }
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.authorization {
            req.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.actor {
            req.metadata_mut().insert("x-grayline-actor", v.clone());
        }
        Ok(req)
    }
}

pub type AdminClient = pb::config_api_client::ConfigApiClient<InterceptedService<Channel, Bearer>>;
pub type RolloutsClient = pb::rollouts_client::RolloutsClient<InterceptedService<Channel, Bearer>>;
pub type ProxyClient =
    pb::proxy_config_client::ProxyConfigClient<InterceptedService<Channel, Bearer>>;

#[derive(Debug)]
pub struct Server {
    pub process: Process,
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub admin_token: String,
    pub proxy_token: String,
    pub registration_token: String,
    /// The CA its certificate chains to, when it serves TLS.
    pub ca: Option<PathBuf>,
    extra_args: Vec<String>,
    _tmp: Option<TempDir>,
}

impl Server {
    /// A fresh server in a new temporary directory.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// A fresh server with extra command-line arguments. Its store is sled, or with
    /// `GRAYLINE_TEST_STORE=etcd` a prefix of its own on one shared etcd: the same tests
    /// then run against both backends.
    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = TempDir::new().expect("tempdir");
        let store = crate::etcd::suite_store(unique());
        let mut extra = extra.to_vec();
        if let Some(url) = &store {
            extra.extend(["--store", url.as_str()]);
        }
        let mut s = Self::start_in(tmp.path(), "127.0.0.1:0", "127.0.0.1:0", &extra);
        s._tmp = Some(tmp);
        s
    }

    /// A server on `dir` (kept after the server stops), listening on the given addresses.
    pub fn start_in(dir: &Path, http: &str, grpc: &str, extra: &[&str]) -> Server {
        Self::try_start_in(dir, http, grpc, extra).unwrap_or_else(|exited| {
            panic!(
                "grayline-server exited ({}) instead of starting; its log:\n{}",
                exited.status, exited.log
            )
        })
    }

    /// [`Server::start_in`] for a start that may be refused (a damaged store): the server
    /// exiting before it listens comes back as [`Exited`].
    pub fn try_start_in(
        dir: &Path,
        http: &str,
        grpc: &str,
        extra: &[&str],
    ) -> Result<Server, Exited> {
        std::fs::create_dir_all(dir).expect("the server's directory");
        let data = dir.join("data");
        let mut args = vec![
            "--data-dir".to_string(),
            data.display().to_string(),
            "--http-listen".into(),
            http.into(),
            "--grpc-listen".into(),
            grpc.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = dir.join(format!("server-{}.log", unique()));
        let (process, ready) = Process::try_spawn("grayline-server", &args, &log)?;
        let addr = |k: &str| -> SocketAddr {
            ready[k]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad {k} address in {ready}"))
        };
        // A token file given by flag, or the one the server keeps in its data directory.
        let read = |flag: &str, f: &str| {
            let given = extra
                .iter()
                .position(|a| *a == flag)
                .and_then(|i| extra.get(i + 1));
            let path = given.map_or_else(|| data.join(f), PathBuf::from);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
                .trim()
                .to_string()
        };
        Ok(Server {
            http: addr("http"),
            grpc: addr("grpc"),
            admin_token: read("--admin-token-file", "admin.token"),
            proxy_token: read("--proxy-token-file", "proxy.token"),
            registration_token: read("--registration-token-file", "registration.token"),
            process,
            dir: dir.to_path_buf(),
            ca: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            _tmp: None,
        })
    }

    /// A server on `dir` serving TLS with `leaf` (signed by the CA at `ca`).
    pub fn start_tls(dir: &Path, ca: &Path, leaf: &crate::pki::Leaf, extra: &[&str]) -> Server {
        let (cert, key) = (
            leaf.cert.display().to_string(),
            leaf.key.display().to_string(),
        );
        let mut args = vec!["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
        args.extend_from_slice(extra);
        let mut s = Server::start_in(dir, "127.0.0.1:0", "127.0.0.1:0", &args);
        s.ca = Some(ca.to_path_buf());
        s
    }

    fn scheme(&self) -> &'static str {
        if self.ca.is_some() { "https" } else { "http" }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Kills the server with SIGKILL (no chance to flush or say goodbye).
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Starts the server again on the same directory and the same addresses.
    pub fn restart(&mut self) {
        self.process.kill9();
        let extra: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let next = Server::start_in(
            &self.dir,
            &self.http.to_string(),
            &self.grpc.to_string(),
            &extra,
        );
        let old = std::mem::replace(self, next);
        self.ca = old.ca.clone();
        self._tmp = old.into_tmp();
    }

    fn into_tmp(mut self) -> Option<TempDir> {
        self._tmp.take()
    }

    pub fn grpc_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.grpc)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.http)
    }

    async fn channel(&self) -> Channel {
        let tls = grayline_proto::tls::ClientTls {
            ca: self.ca.clone(),
            ..Default::default()
        };
        tls.endpoint(&self.grpc_url())
            .expect("url")
            .connect()
            .await
            .expect("connect to grpc")
    }

    /// An HTTP client that trusts the server's CA when it serves TLS.
    pub fn http_client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("the CA file");
            let cert = reqwest::Certificate::from_pem(&pem).expect("the CA certificate");
            builder = builder.tls_certs_only([cert]);
        }
        builder.build().expect("an HTTP client")
    }

    /// A config API client with the admin token.
    pub async fn admin(&self) -> AdminClient {
        self.admin_as(Some(&self.admin_token), None).await
    }

    /// A config API client with any token (or none) and an optional actor.
    pub async fn admin_as(&self, token: Option<&str>, actor: Option<&str>) -> AdminClient {
        pb::config_api_client::ConfigApiClient::with_interceptor(
            self.channel().await,
            Bearer::new(token, actor),
        )
    }

    /// A rollouts API client with the admin token, acting as `actor`.
    pub async fn rollouts(&self, actor: &str) -> RolloutsClient {
        pb::rollouts_client::RolloutsClient::with_interceptor(
            self.channel().await,
            Bearer::new(Some(&self.admin_token), Some(actor)),
        )
    }

    /// The secret rollout webhooks are signed with.
    pub fn webhook_secret(&self) -> String {
        std::fs::read_to_string(self.dir.join("data").join("webhook.secret"))
            .expect("webhook.secret")
            .trim()
            .to_string()
    }

    /// A proxy-stream client with the proxy token.
    pub async fn proxy_client(&self) -> ProxyClient {
        pb::proxy_config_client::ProxyConfigClient::with_interceptor(
            self.channel().await,
            Bearer::new(Some(&self.proxy_token), None),
        )
    }

    /// The JSON API with the admin token.
    pub fn json(&self) -> JsonApi {
        JsonApi {
            client: self.http_client(),
            base: self.http_url("/api/v1"),
            token: Some(self.admin_token.clone()),
            actor: None,
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A small client for the JSON API: every call returns the status and the parsed body.
#[derive(Clone, Debug)]
pub struct JsonApi {
    pub client: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
    /// Sent as `x-grayline-actor`.
    pub actor: Option<String>,
}

impl JsonApi {
    pub fn without_token(mut self) -> JsonApi {
        self.token = None;
        self
    }

    pub fn as_actor(mut self, actor: &str) -> JsonApi {
        self.actor = Some(actor.to_string());
        self
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(a) = &self.actor {
            req = req.header("x-grayline-actor", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}
