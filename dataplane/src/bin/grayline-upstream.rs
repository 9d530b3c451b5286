//! `grayline-upstream`: a small HTTP service that says which version it is, for the demo and
//! the end-to-end tests. Through the proxy it answers:
//!
//! - any path: JSON with its version name and the request's method, path and headers;
//! - `/echo`: the request body, streamed back;
//! - `/slow?ms=N`: the same JSON after N milliseconds;
//! - `/ws`: a WebSocket that echoes every message.
//!
//! Directly (not meant to be routed), `/__control/fail?on=true|false` makes it answer 500 (or
//! `&status=N`) to everything until turned off; `/__control/faults?fail_rate=0.05&delay_ms=30`
//! makes it fail that share of requests at random (with 500) and answer every request that
//! much later (either parameter may be left out; `--fail-rate` and `--delay-ms` set them at
//! start); `/__control/stats` says how many requests it served.

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
struct State {
    name: String,
    plain: bool,
    /// The status every request gets; 0 while not failing.
    failing: AtomicU16,
    /// Requests failed at random, in parts per million.
    fail_ppm: AtomicU32,
    delay_ms: AtomicU64,
    served: AtomicU64,
}

type Body = Either<Full<Bytes>, Incoming>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        runtime.worker_threads(n.max(1));
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "{{\"event\":\"listening\",\"addr\":\"{}\",\"name\":\"{}\"}}",
        listener.local_addr()?,
        args.name
    );
    let state = Arc::new(State {
        plain: args.plain,
        name: args.name,
        failing: AtomicU16::new(0),
        fail_ppm: AtomicU32::new(ppm(args.fail_rate)),
        delay_ms: AtomicU64::new(args.delay_ms),
        served: AtomicU64::new(0),
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
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

async fn handle(state: &State, mut req: Request<Incoming>) -> Response<Body> {
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
                }),
            );
        }
        "/__control/stats" => {
            return json(
                StatusCode::OK,
                serde_json::json!({"served": state.served.load(Ordering::SeqCst)}),
            );
        }
        _ => {}
    }
    state.served.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail_ppm = state.fail_ppm.load(Ordering::Relaxed);
    let failing = match state.failing.load(Ordering::SeqCst) {
        0 if fail_ppm > 0 && fastrand::u32(0..1_000_000) < fail_ppm => 500,
        status => status,
    };
    if failing != 0 {
        return json(
            StatusCode::from_u16(failing).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            serde_json::json!({"version": state.name, "error": "failing on purpose"}),
        );
    }
    match path.as_str() {
        "/echo" => {
            let mut r = Response::new(Either::Right(req.into_body()));
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
            // Drain the body so keep-alive continues.
            let _ = req.into_body().collect().await;
            json(
                StatusCode::OK,
                serde_json::json!({
                    "version": state.name,
                    "method": method,
                    "path": path,
                    "query": query,
                    "headers": headers,
                }),
            )
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
