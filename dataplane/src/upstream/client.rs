//! How a proxy sends upstream requests: HTTP/1.1 over connections of its own pool, and
//! HTTP/2 through hyper-util's pooled clients — over plain TCP with prior knowledge (h2c), or
//! over TLS with ALPN `h2` ([`crate::upstream::tls`]) — one chosen per request by the version's
//! `protocol` and the protocol the client spoke. An endpoint of a version with `tls` is reached
//! over TLS either way; its pooled HTTP/1.1 connections are kept apart from plaintext ones.
//!
//! The HTTP/1.1 pool keeps each idle connection's [`SendRequest`] per endpoint. A request
//! takes the most recently used one that is ready, or opens a connection (its driver is one
//! task for the connection's life); the response body hands the connection back when it has
//! been read to its end ([`Checkin`]), so a request costs no task, no boxed future and no
//! response extension. A connection the upstream closed while idle gives the request back
//! unsent, and the request goes on a fresh connection: that retry is always safe.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grayline_routing::Protocol;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::upstream::body::UpstreamBody;
use crate::upstream::observed::{Observed, Observer};
use crate::upstream::tls::{Alpn, UpstreamTls};

/// An upstream endpoint of a version.
#[derive(Debug)]
pub struct Endpoint {
    pub authority: Authority,
    /// `host:port` as configured.
    pub text: String,
    /// Its idle HTTP/1.1 connections, found once in the pool and kept here.
    pub idle: IdleSlot,
    /// TLS to it, when its version has `tls`.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// An upstream's response body; an HTTP/1.1 one gives its connection back at its end.
pub type ResponseBody = Observed<Checkin>;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection unused this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint; the oldest goes first.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// Idle connections a request tries before it opens a new one.
const MAX_STALE_TRIES: usize = 4;

/// Both ways upstream; cheap to clone (the pools are shared).
#[derive(Clone, Debug)]
pub struct Clients {
    http1: Arc<Pool>,
    h2c: Client<HttpConnector, UpstreamBody>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

/// Which way a request goes upstream, and the HTTP version it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    Http1(http::Version),
    /// HTTP/2: h2c, or h2 over TLS to an endpoint with `tls`.
    H2,
}

impl Upstream {
    pub fn version(self) -> http::Version {
        match self {
            Upstream::Http1(v) => v,
            Upstream::H2 => http::Version::HTTP_2,
        }
    }
}

impl Clients {
    pub fn new() -> Clients {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // One connection per endpoint carries every stream; the larger windows keep a busy
        // connection from stalling on flow control.
        let h2c = Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .http2_only(true)
            .http2_initial_stream_window_size(1 << 20)
            .http2_initial_connection_window_size(4 << 20)
            .build(connector);
        Clients {
            http1: Arc::new(Pool::default()),
            h2c,
        }
    }

    /// The way upstream for a version speaking `protocol` to a request that arrived as
    /// `downstream`.
    pub fn pick(&self, protocol: Protocol, downstream: http::Version) -> Upstream {
        match upstream_version(protocol, downstream) {
            http::Version::HTTP_2 => Upstream::H2,
            v => Upstream::Http1(v),
        }
    }

    /// Sends `req` (its URI as the client sent it) to `endpoint`.
    pub async fn send(
        &self,
        upstream: Upstream,
        endpoint: &Endpoint,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError> {
        *req.uri_mut() = upstream_uri(upstream, endpoint, req.uri());
        match upstream {
            Upstream::H2 => {
                let sent = match &endpoint.tls {
                    None => self.h2c.request(req).await,
                    Some(tls) => tls.h2(self.http1.slot).request(req).await,
                };
                match sent {
                    Ok(resp) => Ok(resp.map(|b| Observed::new(b, None))),
                    Err(e) => Err(SendError::H2(e)),
                }
            }
            Upstream::Http1(_) => {
                if !req.headers().contains_key(header::HOST) {
                    let host = HeaderValue::from_str(endpoint.authority.as_str())
                        .expect("an authority is visible ASCII, a valid header value");
                    req.headers_mut().insert(header::HOST, host);
                }
                self.http1.send(endpoint, req).await
            }
        }
    }
}

/// HTTP/2 for `h2c` and `h2`, and for `auto` when the client spoke HTTP/2; HTTP/1.1
/// otherwise.
pub fn upstream_version(protocol: Protocol, downstream: http::Version) -> http::Version {
    match protocol {
        Protocol::H2c | Protocol::H2 => http::Version::HTTP_2,
        Protocol::Auto if downstream == http::Version::HTTP_2 => http::Version::HTTP_2,
        Protocol::Auto | Protocol::Http1 => http::Version::HTTP_11,
    }
}

/// `uri`'s path and query as the request line wants it: origin-form for HTTP/1.1, and with
/// the endpoint as authority for HTTP/2 (where it becomes `:authority`).
fn upstream_uri(upstream: Upstream, endpoint: &Endpoint, uri: &Uri) -> Uri {
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if upstream != Upstream::H2 {
        return Uri::from(path_and_query);
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(match endpoint.tls {
        None => http::uri::Scheme::HTTP,
        Some(_) => http::uri::Scheme::HTTPS,
    });
    parts.authority = Some(endpoint.authority.clone());
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).expect("a scheme, an authority and a path make a URI")
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No connection to the endpoint could be made.
    Connect(std::io::Error),
    /// The HTTP/1.1 exchange failed; `unsent` when the request certainly never left.
    Http1 {
        error: hyper::Error,
        unsent: bool,
    },
    H2(hyper_util::client::legacy::Error),
}

impl SendError {
    /// Whether the request certainly never reached the upstream: the connection could not
    /// be made, or the request came back unsent from a connection that closed (which
    /// hyper-util reports as `Canceled`, visible only in its message).
    pub fn never_sent(&self) -> bool {
        match self {
            SendError::Connect(_) => true,
            SendError::Http1 { unsent, .. } => *unsent,
            SendError::H2(e) => e.is_connect() || e.to_string() == "client error (Canceled)",
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(_) => f.write_str("cannot connect"),
            SendError::Http1 { .. } => f.write_str("HTTP/1.1 exchange failed"),
            SendError::H2(_) => f.write_str("HTTP/2 exchange failed"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => Some(e),
            SendError::Http1 { error, .. } => Some(error),
            SendError::H2(e) => Some(e),
        }
    }
}

/// Idle HTTP/1.1 connections by endpoint (`host:port` as configured) and TLS setting (0 for
/// plaintext, else [`UpstreamTls::id`]). Each worker thread has its own.
#[derive(Debug)]
struct Pool {
    endpoints: Mutex<HashMap<(String, u64), Arc<Idle>>>,
    /// Whether the task that closes expired connections runs.
    reaping: std::sync::OnceLock<()>,
    /// Its place in every endpoint's [`IdleSlot`], if it has one.
    slot: Option<usize>,
}

/// How many pools every endpoint keeps its idle list for at hand: one per worker thread,
/// set by [`reserve_slots`] before the workers make theirs (16 when nothing set it). The
/// first this many pools made in the process have a slot; later ones find their lists by
/// name.
static SLOTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Gives each of the first `pools` pools made a slot in every endpoint (call it with the
/// number of workers, before they start); later calls change nothing.
pub fn reserve_slots(pools: usize) {
    let _ = SLOTS.set(pools.max(1));
}

pub(crate) fn slots() -> usize {
    *SLOTS.get_or_init(|| 16)
}

impl Default for Pool {
    fn default() -> Pool {
        // Never reused: a slot is one pool's for the life of the process.
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Pool {
            endpoints: Mutex::default(),
            reaping: std::sync::OnceLock::new(),
            slot: (made < slots()).then_some(made),
        }
    }
}

/// One endpoint's idle connections, the most recently used last.
#[derive(Debug, Default)]
pub struct Idle(Mutex<Vec<(SendRequest<UpstreamBody>, Instant)>>);

/// An endpoint's [`Idle`] list in each pool (each worker's), once looked up: later requests
/// to the endpoint take it from here instead of hashing the endpoint's name under the
/// pool's lock (240 instructions a request). A configured endpoint holds them, so a pool
/// keeps the list while the endpoint is configured. Made by the endpoint's first request,
/// so a configured endpoint that serves nothing costs one pointer.
#[derive(Debug, Default)]
pub struct IdleSlot(std::sync::OnceLock<Box<[std::sync::OnceLock<Arc<Idle>>]>>);

impl Pool {
    async fn send(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let idle = self.idle(endpoint);
        let mut stale = 0;
        loop {
            let pooled = if stale < MAX_STALE_TRIES {
                idle.take()
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(s) => s,
                None => self.connect(endpoint).await?,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(checked_in_at_end(resp, idle, sender)),
                Err(mut e) => match e.take_message() {
                    // The connection closed before it took the request: try another.
                    Some(back) if reused => {
                        stale += 1;
                        req = back;
                    }
                    back => {
                        return Err(SendError::Http1 {
                            unsent: back.is_some(),
                            error: e.into_error(),
                        });
                    }
                },
            }
        }
    }

    fn idle(self: &Arc<Self>, endpoint: &Endpoint) -> Arc<Idle> {
        let Some(slot) = self.slot else {
            return self.idle_by_name(endpoint);
        };
        let slots = endpoint
            .idle
            .0
            .get_or_init(|| (0..slots()).map(|_| std::sync::OnceLock::new()).collect());
        slots[slot]
            .get_or_init(|| self.idle_by_name(endpoint))
            .clone()
    }

    fn idle_by_name(self: &Arc<Self>, endpoint: &Endpoint) -> Arc<Idle> {
        let key = (
            endpoint.text.clone(),
            endpoint.tls.as_ref().map_or(0, |t| t.id()),
        );
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(idle) = endpoints.get(&key) {
            return idle.clone();
        }
        self.reaping.get_or_init(|| {
            tokio::spawn(reap(Arc::downgrade(self)));
        });
        endpoints.entry(key).or_default().clone()
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<SendRequest<UpstreamBody>, SendError> {
        let stream = connect_tcp(&endpoint.authority, 80)
            .await
            .map_err(SendError::Connect)?;
        match &endpoint.tls {
            None => http1_over(stream).await,
            Some(tls) => {
                let stream = tls
                    .handshake(stream, &endpoint.authority, Alpn::Http1)
                    .await
                    .map_err(SendError::Connect)?;
                http1_over(stream).await
            }
        }
    }
}

/// A TCP connection to `authority` (`default_port` when it names none), with no Nagle delay.
pub(crate) async fn connect_tcp(
    authority: &Authority,
    default_port: u16,
) -> std::io::Result<TcpStream> {
    let host = authority.host();
    // `[::1]` is the authority's way of writing an IPv6 address, not the address.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(default_port);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await
    {
        Ok(connected) => connected?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// An HTTP/1.1 connection over `io`, its driver a task of its own.
async fn http1_over<IO>(io: IO) -> Result<SendRequest<UpstreamBody>, SendError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|error| SendError::Http1 {
            error,
            unsent: true,
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

impl Idle {
    /// The most recently used connection that can take a request now. Closed ones go; one
    /// still finishing its last response stays for a later request.
    fn take(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].0.is_closed() {
                idle.remove(i);
            } else if idle[i].0.is_ready() {
                return Some(idle.remove(i).0);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE_PER_ENDPOINT {
            idle.remove(0);
        }
        idle.push((sender, Instant::now()));
    }

    fn expire(&self, now: Instant) -> bool {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < IDLE_TIMEOUT);
        idle.is_empty()
    }
}

/// Closes connections idle longer than [`IDLE_TIMEOUT`] and forgets endpoints with none,
/// until the pool is gone.
async fn reap(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut endpoints = pool.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        // An endpoint a request still holds stays, so its connection comes back to it.
        endpoints.retain(|_, idle| !(idle.expire(now) && Arc::strong_count(idle) == 1));
    }
}

/// Gives an HTTP/1.1 connection back to its endpoint's idle list once its response has
/// been read to the end; dropped earlier (the client went away mid-body), the connection
/// closes with it.
#[derive(Debug)]
pub struct Checkin {
    idle: Arc<Idle>,
    sender: SendRequest<UpstreamBody>,
}

impl Observer for Checkin {
    fn frame(&mut self, _: &Frame<Bytes>) -> bool {
        true
    }

    fn ended(self, whole: bool) {
        if whole {
            self.idle.put(self.sender);
        }
    }
}

fn checked_in_at_end(
    resp: Response<Incoming>,
    idle: Arc<Idle>,
    sender: SendRequest<UpstreamBody>,
) -> Response<ResponseBody> {
    // A connection switched to another protocol is the upgrade's now.
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return resp.map(|b| Observed::new(b, None));
    }
    resp.map(|body| {
        if body.is_end_stream() {
            idle.put(sender);
            Observed::new(body, None)
        } else {
            Observed::new(body, Some(Checkin { idle, sender }))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::Version as V;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn the_protocol_and_the_client_choose_the_upstream_version() {
        for (protocol, downstream, upstream) in [
            (Protocol::Http1, V::HTTP_11, V::HTTP_11),
            (Protocol::Http1, V::HTTP_2, V::HTTP_11),
            (Protocol::H2c, V::HTTP_11, V::HTTP_2),
            (Protocol::H2c, V::HTTP_2, V::HTTP_2),
            (Protocol::Auto, V::HTTP_10, V::HTTP_11),
            (Protocol::Auto, V::HTTP_11, V::HTTP_11),
            (Protocol::Auto, V::HTTP_2, V::HTTP_2),
        ] {
            assert_eq!(
                upstream_version(protocol, downstream),
                upstream,
                "{protocol:?} {downstream:?}"
            );
        }
    }

    /// How a [`raw_upstream`] ends its connections.
    #[derive(Clone, Copy, PartialEq)]
    enum Ending {
        /// Never: each connection carries any number of requests.
        KeepAlive,
        /// After the first answer, without saying so, as an upstream's idle timeout does.
        Silently,
        /// After the first answer, which says `connection: close`.
        Announced,
    }

    /// A hand-written HTTP/1.1 upstream: answers each request with `body`, ends its
    /// connections as `ending` says, and keeps the request heads it read.
    struct RawUpstream {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    async fn raw_upstream(ending: Ending, body: &'static [u8]) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            seen.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&head).into_owned());
                            let connection = match ending {
                                Ending::Announced => "connection: close\r\n",
                                _ => "",
                            };
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\n{connection}content-length: {}\r\n\r\n",
                                body.len()
                            );
                            if socket.write_all(answer.as_bytes()).await.is_err()
                                || socket.write_all(body).await.is_err()
                            {
                                return;
                            }
                            if ending != Ending::KeepAlive {
                                return;
                            }
                        }
                    }
                });
            }
        });
        RawUpstream {
            addr,
            accepted,
            heads,
        }
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint {
            authority: addr.to_string().parse().unwrap(),
            text: addr.to_string(),
            idle: Default::default(),
            tls: None,
        }
    }

    fn get(uri: &str) -> Request<UpstreamBody> {
        let mut req = Request::new(UpstreamBody::Empty);
        *req.uri_mut() = uri.parse().unwrap();
        req
    }

    async fn fetch(clients: &Clients, endpoint: &Endpoint, uri: &str) -> Bytes {
        let resp = clients
            .send(Upstream::Http1(V::HTTP_11), endpoint, get(uri))
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    /// Waits until the pool holds `open` idle connections to `endpoint` that are not closed.
    async fn until_idle(clients: &Clients, endpoint: &Endpoint, open: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let idle = clients.http1.idle(endpoint);
            let now = idle
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(s, _)| !s.is_closed())
                .count();
            if now == open {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{now} idle connections, not {open}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn one_connection_carries_requests_one_after_another() {
        let upstream = raw_upstream(Ending::KeepAlive, b"hello").await;
        let (clients, endpoint) = (Clients::new(), endpoint(upstream.addr));
        for _ in 0..20 {
            assert_eq!(fetch(&clients, &endpoint, "/").await, "hello");
            until_idle(&clients, &endpoint, 1).await;
        }
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_endpoint_keeps_its_pools_idle_list_and_another_pool_keeps_its_own() {
        let upstream = raw_upstream(Ending::KeepAlive, b"hi").await;
        let endpoint = endpoint(upstream.addr);
        let (a, b) = (Clients::new(), Clients::new());
        fetch(&a, &endpoint, "/").await;
        until_idle(&a, &endpoint, 1).await;
        // The endpoint now names a's list: b, another pool, must not take a's connection.
        fetch(&b, &endpoint, "/").await;
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
        until_idle(&b, &endpoint, 1).await;
        until_idle(&a, &endpoint, 1).await;
        for clients in [&a, &b, &a, &b] {
            fetch(clients, &endpoint, "/").await;
        }
        assert_eq!(
            upstream.accepted.load(Ordering::SeqCst),
            2,
            "each pool reuses its own"
        );
        // And the list in the endpoint is the one in a's pool, which its reaper sees.
        let kept = a.http1.endpoints.lock().unwrap()[&(endpoint.text.clone(), 0)].clone();
        assert!(Arc::ptr_eq(&kept, &a.http1.idle(&endpoint)));
    }

    #[tokio::test]
    async fn requests_go_in_origin_form_with_a_host() {
        let upstream = raw_upstream(Ending::KeepAlive, b"").await;
        let (clients, endpoint) = (Clients::new(), endpoint(upstream.addr));
        fetch(&clients, &endpoint, "http://example.test/a/b?c=d").await;
        let mut named = get("/x");
        named
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("shop.test"));
        clients
            .send(Upstream::Http1(V::HTTP_11), &endpoint, named)
            .await
            .unwrap();
        let heads = upstream.heads.lock().unwrap().clone();
        assert!(
            heads[0].starts_with("GET /a/b?c=d HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[0]
                .to_ascii_lowercase()
                .contains(&format!("host: {}\r\n", upstream.addr)),
            "without a Host the endpoint is the host: {}",
            heads[0]
        );
        assert!(
            heads[1]
                .to_ascii_lowercase()
                .contains("host: shop.test\r\n"),
            "{}",
            heads[1]
        );
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
        let upstream = raw_upstream(Ending::Silently, b"once").await;
        let (clients, endpoint) = (Clients::new(), endpoint(upstream.addr));
        for round in 1..=5 {
            assert_eq!(fetch(&clients, &endpoint, "/").await, "once");
            // The upstream said nothing of closing; the pool learns it when the socket ends.
            until_idle(&clients, &endpoint, 0).await;
            assert_eq!(upstream.accepted.load(Ordering::SeqCst), round);
        }
    }

    #[tokio::test]
    async fn a_connection_that_ends_with_its_answer_is_read_to_the_end_and_not_kept() {
        static BODY: [u8; 100_000] = [b'y'; 100_000];
        let upstream = raw_upstream(Ending::Announced, &BODY).await;
        let (clients, endpoint) = (Clients::new(), endpoint(upstream.addr));
        for round in 1..=3 {
            assert_eq!(fetch(&clients, &endpoint, "/").await.len(), BODY.len());
            assert_eq!(upstream.accepted.load(Ordering::SeqCst), round);
            until_idle(&clients, &endpoint, 0).await;
        }
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_takes_its_connection_with_it() {
        static LONG: [u8; 1 << 20] = [b'x'; 1 << 20];
        let upstream = raw_upstream(Ending::KeepAlive, &LONG).await;
        let (clients, endpoint) = (Clients::new(), endpoint(upstream.addr));
        let resp = clients
            .send(Upstream::Http1(V::HTTP_11), &endpoint, get("/"))
            .await
            .unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(fetch(&clients, &endpoint, "/").await.len(), LONG.len());
        assert_eq!(
            upstream.accepted.load(Ordering::SeqCst),
            2,
            "the half-read connection was not reused"
        );
        until_idle(&clients, &endpoint, 1).await;
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_request_never_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = Clients::new()
            .send(Upstream::Http1(V::HTTP_11), &endpoint(addr), get("/"))
            .await
            .unwrap_err();
        assert!(err.never_sent(), "{err:?}");
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    }
}
