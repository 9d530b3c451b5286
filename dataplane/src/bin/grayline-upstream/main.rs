//! `grayline-upstream`: a small HTTP service that says which version it is, for the demo and
//! the end-to-end tests. Through the proxy it answers:
//!
//! - any path: JSON with its version name and the request's method, path and headers;
//! - `/echo`: the request body, streamed back;
//! - `/slow?ms=N`: the same JSON after N milliseconds;
//! - `/ws`: a WebSocket that echoes every message;
//! - gRPC (`grayline.v1.Demo`, h2c): unary, server-streaming and bidirectional calls that
//!   name the version (see `demo.rs`); `grpc.health.v1.Health` (SERVING unless told not to);
//! - `/healthz`: 200, or 503 while told to be unhealthy.
//!
//! With `--tls-cert/--tls-key` it speaks TLS only (HTTP/2 or HTTP/1.1 by ALPN), and with
//! `--tls-client-ca` it also demands a client certificate signed by that CA; its JSON answers
//! then say `"tls": true` and whether the client showed a certificate (`"client_cert"`).
//!
//! With `--next-hop http://HOST:PORT` it calls that address (the next service's proxy) for
//! every JSON answer, passing on the lane header, and nests the answer under `next`: a chain
//! A → B → C of upstreams behind proxies shows in one response which version served each hop.
//!
//! Directly (not meant to be routed), `/__control/fail?on=true|false` makes it answer 500 (or
//! `&status=N`) to everything until turned off; `/__control/faults?fail_rate=0.05&delay_ms=30`
//! makes it fail that share of requests at random (with 500) and answer every request that
//! much later (either parameter may be left out; `--fail-rate` and `--delay-ms` set them at
//! start); `/__control/health?ok=false` makes `/healthz` answer 503 (and `ok=true` 200 again;
//! health checks are not counted as served); `/__control/stats` says how many requests it served; `/__control/requests` lists
//! the last 256 JSON-answered requests it received (method, path, headers, body as text).
//!
//! Business counters, for metric gates: every request it serves is a session, and converts
//! (a purchase) with the share `--conversion-rate` (or `/__control/faults?conversion_rate=`)
//! says. `/metrics` (directly, in Prometheus's text format) counts both per version:
//! `grayline_demo_sessions_total{version="v1"}`, `grayline_demo_conversions_total{…}`. A
//! converting session's answer also names the application event `converted` in the
//! `x-grayline-event` header, for event gates (a service declares it to have it counted).

mod demo;
mod next_hop;

use grayline_routing::EVENT_HEADER;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

#[derive(Debug, Parser)]
#[command(name = "grayline-upstream", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The version this instance plays, e.g. `v1`.
    #[arg(long)]
    name: String,
    /// Answer every request with just the version name (for benchmarks: the cheapest
    /// possible upstream).
    #[arg(long)]
    plain: bool,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Share of requests answered with 500 at random, 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    fail_rate: f64,
    /// Milliseconds added before every answer.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// The next service of a call chain (its proxy), called for every JSON answer.
    #[arg(long)]
    next_hop: Option<String>,
    /// The `Host` header of next-hop calls (the next service's host name); default the
    /// --next-hop URL's.
    #[arg(long)]
    next_hop_host: Option<String>,
    /// Headers passed on to the next hop (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "x-grayline-lane")]
    propagate: Vec<String>,
    /// Speak TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Demand client certificates signed by this PEM CA (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Share of served requests that convert (counted for `/metrics`), 0 to 1.
    #[arg(long, default_value_t = 0.3, value_parser = parse_rate)]
    conversion_rate: f64,
}

/// How a request's connection came: over TLS, and with a client certificate.
#[derive(Clone, Copy, Debug, Default)]
struct Conn {
    tls: bool,
    client_cert: bool,
}

/// The TLS side of --tls-cert/--tls-key/--tls-client-ca.
fn acceptor(args: &Args) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let certified = grayline_proto::tls::certified_key(cert, key, ("--tls-cert", "--tls-key"))
        .map_err(anyhow::Error::msg)?;
    let provider = grayline_proto::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &args.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            use rustls::pki_types::pem::PemObject as _;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
                roots.add(cert?)?;
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()?,
            )
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

/// Parts per million of a share, for an atomic.
fn ppm(rate: f64) -> u32 {
    (rate * 1e6).round() as u32
}

#[derive(Debug)]
pub struct State {
    name: String,
    plain: bool,
    /// The status every request gets; 0 while not failing.
    failing: AtomicU16,
    /// What `/healthz` says.
    healthy: std::sync::atomic::AtomicBool,
    /// What `grpc.health.v1.Health/Check` says, set with `/healthz`'s.
    grpc_health: tonic_health::server::HealthReporter,
    /// Requests failed at random, in parts per million.
    fail_ppm: AtomicU32,
    delay_ms: AtomicU64,
    served: AtomicU64,
    next_hop: Option<next_hop::NextHop>,
    /// The last requests answered with JSON, newest last.
    recent: std::sync::Mutex<std::collections::VecDeque<serde_json::Value>>,
    /// Sessions that convert, in parts per million.
    conversion_ppm: AtomicU32,
    sessions: prometheus_client::metrics::counter::Counter,
    conversions: prometheus_client::metrics::counter::Counter,
    metrics: prometheus_client::registry::Registry,
}

/// The business counters, labelled with the version.
fn business_metrics(
    name: &str,
) -> (
    prometheus_client::registry::Registry,
    prometheus_client::metrics::counter::Counter,
    prometheus_client::metrics::counter::Counter,
) {
    use prometheus_client::metrics::counter::Counter;
    let labels = [("version".into(), name.to_string().into())];
    let mut registry = prometheus_client::registry::Registry::with_prefix_and_labels(
        "grayline_demo",
        labels.into_iter(),
    );
    let (sessions, conversions) = (Counter::default(), Counter::default());
    registry.register(
        "sessions",
        "Requests served, each a session",
        sessions.clone(),
    );
    registry.register(
        "conversions",
        "Sessions that converted",
        conversions.clone(),
    );
    (registry, sessions, conversions)
}

/// Requests kept for `/__control/requests`.
const RECENT: usize = 256;

impl State {
    /// The status to fail the request now with, on command or at random; 0 for none.
    fn failure(&self) -> u16 {
        let fail_ppm = self.fail_ppm.load(Ordering::Relaxed);
        match self.failing.load(Ordering::SeqCst) {
            0 if fail_ppm > 0 && fastrand::u32(0..1_000_000) < fail_ppm => 500,
            status => status,
        }
    }

    fn failing_now(&self) -> bool {
        self.failure() != 0
    }

    /// Counts a served request as a session, converting at the current rate; whether it
    /// converted.
    fn session(&self) -> bool {
        self.sessions.inc();
        let converted = fastrand::u32(0..1_000_000) < self.conversion_ppm.load(Ordering::Relaxed);
        if converted {
            self.conversions.inc();
        }
        converted
    }
}

type Body = Either<Full<Bytes>, Either<Incoming, tonic::body::Body>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        runtime.worker_threads(n.max(1));
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let tls = acceptor(&args)?;
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "{{\"event\":\"listening\",\"addr\":\"{}\",\"name\":\"{}\"}}",
        listener.local_addr()?,
        args.name
    );
    let (grpc_health, health) = tonic_health::server::health_reporter();
    let (metrics, sessions, conversions) = business_metrics(&args.name);
    let state = Arc::new(State {
        plain: args.plain,
        name: args.name,
        failing: AtomicU16::new(0),
        healthy: std::sync::atomic::AtomicBool::new(true),
        grpc_health: grpc_health.clone(),
        fail_ppm: AtomicU32::new(ppm(args.fail_rate)),
        delay_ms: AtomicU64::new(args.delay_ms),
        served: AtomicU64::new(0),
        next_hop: args
            .next_hop
            .as_deref()
            .map(|url| next_hop::NextHop::new(url, args.next_hop_host.as_deref(), &args.propagate))
            .transpose()?,
        recent: std::sync::Mutex::new(std::collections::VecDeque::new()),
        conversion_ppm: AtomicU32::new(ppm(args.conversion_rate)),
        sessions,
        conversions,
        metrics,
    });
    let grpc = grayline_proto::v1::demo_server::DemoServer::new(demo::Demo {
        state: state.clone(),
    });
    grpc_health
        .clone()
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (state, grpc, health) = (state.clone(), grpc.clone(), health.clone());
        let (builder, tls) = (builder.clone(), tls.clone());
        tokio::spawn(async move {
            let service = |conn: Conn| {
                service_fn(move |mut req: Request<Incoming>| {
                    let (state, mut grpc, mut health) =
                        (state.clone(), grpc.clone(), health.clone());
                    req.extensions_mut().insert(conn);
                    async move {
                        use tonic::codegen::Service as _;
                        if is_grpc(&req) && req.uri().path().starts_with("/grpc.health.v1.Health/")
                        {
                            let resp = health
                                .call(req)
                                .await
                                .unwrap_or_else(|never| match never {});
                            return Ok::<_, Infallible>(
                                resp.map(|b| Either::Right(Either::Right(b))),
                            );
                        }
                        if is_grpc(&req) {
                            let resp = grpc.call(req).await.unwrap_or_else(|never| match never {});
                            return Ok::<_, Infallible>(
                                resp.map(|b| Either::Right(Either::Right(b))),
                            );
                        }
                        Ok::<_, Infallible>(handle(&state, req).await)
                    }
                })
            };
            let _ = match tls {
                None => {
                    builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            service(Conn::default()),
                        )
                        .await
                }
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = Conn {
                        tls: true,
                        client_cert: stream.get_ref().1.peer_certificates().is_some(),
                    };
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service(conn))
                        .await
                }
            };
        });
    }
}

fn is_grpc(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(value.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static"),
    );
    r
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    if state.plain {
        let mut r = Response::new(Either::Left(Full::new(Bytes::from(format!(
            "{}\n",
            state.name
        )))));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, "text/plain".parse().expect("static"));
        return r;
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    match path.as_str() {
        "/__control/fail" => {
            let on = query.contains("on=true");
            let status = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("status="))
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|s| (400..600).contains(s))
                .unwrap_or(500);
            state
                .failing
                .store(if on { status } else { 0 }, Ordering::SeqCst);
            return json(StatusCode::OK, serde_json::json!({"failing": on}));
        }
        "/__control/faults" => {
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            let rate = param("fail_rate").map(parse_rate).transpose();
            let delay = param("delay_ms").map(str::parse::<u64>).transpose();
            let conversion = match param("conversion_rate").map(parse_rate).transpose() {
                Ok(c) => c,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("conversion_rate: {e}")}),
                    );
                }
            };
            if let Some(c) = conversion {
                state.conversion_ppm.store(ppm(c), Ordering::SeqCst);
            }
            let (rate, delay) = match (rate, delay) {
                (Ok(rate), Ok(delay)) => (rate, delay),
                (Err(e), _) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("fail_rate: {e}")}),
                    );
                }
                (_, Err(e)) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("delay_ms: {e}")}),
                    );
                }
            };
            if let Some(rate) = rate {
                state.fail_ppm.store(ppm(rate), Ordering::SeqCst);
            }
            if let Some(delay) = delay {
                state.delay_ms.store(delay, Ordering::SeqCst);
            }
            return json(
                StatusCode::OK,
                serde_json::json!({
                    "fail_rate": f64::from(state.fail_ppm.load(Ordering::SeqCst)) / 1e6,
                    "delay_ms": state.delay_ms.load(Ordering::SeqCst),
                    "conversion_rate": f64::from(state.conversion_ppm.load(Ordering::SeqCst)) / 1e6,
                }),
            );
        }
        "/__control/health" => {
            let ok = !query.contains("ok=false");
            state.healthy.store(ok, Ordering::SeqCst);
            let status = if ok {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            state
                .grpc_health
                .clone()
                .set_service_status("", status)
                .await;
            return json(StatusCode::OK, serde_json::json!({"healthy": ok}));
        }
        "/healthz" => {
            let ok = state.healthy.load(Ordering::SeqCst);
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return json(
                status,
                serde_json::json!({"healthy": ok, "version": state.name}),
            );
        }
        "/__control/stats" => {
            return json(
                StatusCode::OK,
                serde_json::json!({"served": state.served.load(Ordering::SeqCst)}),
            );
        }
        "/metrics" => {
            let mut out = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut out, &state.metrics);
            let mut r = Response::new(Either::Left(Full::new(Bytes::from(out))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    .parse()
                    .expect("static"),
            );
            return r;
        }
        "/__control/requests" => {
            let recent = state.recent.lock().unwrap_or_else(|e| e.into_inner());
            let list: Vec<_> = recent.iter().cloned().collect();
            return json(StatusCode::OK, serde_json::json!({"requests": list}));
        }
        _ => {}
    }
    state.served.fetch_add(1, Ordering::SeqCst);
    let mut answer = served(state, req, path, query).await;
    if state.session() {
        answer
            .headers_mut()
            .insert(EVENT_HEADER, CONVERTED.parse().expect("static"));
    }
    answer
}

/// The event a converting session's answer names, for a service that declares it.
const CONVERTED: &str = "converted";

/// The answer to a request it serves (not a control request).
async fn served(
    state: &State,
    mut req: Request<Incoming>,
    path: String,
    query: String,
) -> Response<Body> {
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = state.failure();
    if failing != 0 {
        return json(
            StatusCode::from_u16(failing).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            serde_json::json!({"version": state.name, "error": "failing on purpose"}),
        );
    }
    match path.as_str() {
        "/echo" => {
            let mut r = Response::new(Either::Right(Either::Left(req.into_body())));
            r.headers_mut().insert(
                "x-upstream-version",
                state.name.parse().expect("name is a header value"),
            );
            r
        }
        "/ws" => websocket(state, &mut req),
        _ => {
            if path == "/slow" {
                let ms: u64 = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let method = req.method().to_string();
            let conn = req.extensions().get::<Conn>().copied().unwrap_or_default();
            let next = match &state.next_hop {
                Some(hop) => {
                    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    Some(hop.call(target, req.headers()).await)
                }
                None => None,
            };
            // Drain the body so keep-alive continues.
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            {
                let mut recent = state.recent.lock().unwrap_or_else(|e| e.into_inner());
                if recent.len() == RECENT {
                    recent.pop_front();
                }
                recent.push_back(serde_json::json!({
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "body": body.as_ref().map_or(String::new(), |b| String::from_utf8_lossy(b).to_string()),
                }));
            }
            let mut answer = serde_json::json!({
                "version": state.name,
                "method": method,
                "path": path,
                "query": query,
                "headers": headers,
                "body_bytes": body.as_ref().map_or(0, |b| b.len()),
            });
            if conn.tls {
                answer["tls"] = true.into();
                answer["client_cert"] = conn.client_cert.into();
            }
            if let Some(next) = next {
                answer["next"] = next;
            }
            json(StatusCode::OK, answer)
        }
    }
}

fn websocket(state: &State, req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "not a websocket request"}),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    let name = state.name.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                let reply = format!(
                    "{name}: {}",
                    msg.into_text().map(|t| t.to_string()).unwrap_or_default()
                );
                if ws.send(reply.into()).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, "upgrade".parse().expect("static"));
    h.insert(header::UPGRADE, "websocket".parse().expect("static"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        accept.parse().expect("base64 is a header value"),
    );
    r
}
