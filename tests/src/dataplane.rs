//! Real `grayline-proxy` and `grayline-upstream` processes, and a client that sends traffic
//! through a proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::Process;
use crate::server::Server;
use crate::wait::eventually;

/// A demo upstream playing one version.
#[derive(Debug)]
pub struct Upstream {
    pub process: Process,
    pub addr: SocketAddr,
    pub name: String,
    _dir: TempDir,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        Self::start_with(name, &[])
    }

    /// An upstream with extra flags, e.g. `--fail-rate 0.05` or `--delay-ms 20`.
    pub fn start_with(name: &str, extra: &[&str]) -> Upstream {
        let dir = TempDir::new().expect("tempdir");
        let mut args = vec!["--name".to_string(), name.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (process, ready) =
            Process::spawn("grayline-upstream", &args, &dir.path().join("upstream.log"));
        Upstream {
            addr: ready["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("upstream addr"),
            name: name.to_string(),
            process,
            _dir: dir,
        }
    }

    /// `host:port`, as a version endpoint.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Makes the upstream answer 500 to everything (or stop doing so).
    /// Where its control endpoints are (`…/faults`, `…/fail`).
    pub fn control_url(&self) -> String {
        format!("http://{}/__control", self.addr)
    }

    /// Makes `/healthz` (and the gRPC health protocol) say healthy or not.
    pub async fn set_healthy(&self, ok: bool) {
        reqwest::get(format!("{}/health?ok={ok}", self.control_url()))
            .await
            .expect("upstream control");
    }

    pub async fn set_failing(&self, on: bool) {
        self.fail_with(on, 500).await;
    }

    /// Makes the upstream answer `status` to everything (or stop doing so).
    pub async fn fail_with(&self, on: bool, status: u16) {
        let url = format!(
            "http://{}/__control/fail?on={on}&status={status}",
            self.addr
        );
        let resp = reqwest::get(url).await.expect("control request");
        assert!(resp.status().is_success());
    }

    /// Makes the upstream fail `fail_rate` of its requests at random and answer `delay_ms`
    /// later.
    pub async fn set_faults(&self, fail_rate: f64, delay_ms: u64) {
        let url = format!(
            "http://{}/__control/faults?fail_rate={fail_rate}&delay_ms={delay_ms}",
            self.addr
        );
        let resp = reqwest::get(url).await.expect("control request");
        assert!(resp.status().is_success());
    }

    /// The last requests it answered with JSON (method, path, headers, body), oldest first.
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        let url = format!("http://{}/__control/requests", self.addr);
        let mut v: serde_json::Value = reqwest::get(url)
            .await
            .expect("requests")
            .json()
            .await
            .expect("json");
        match v["requests"].take() {
            serde_json::Value::Array(list) => list,
            other => panic!("requests: {other}"),
        }
    }

    /// Requests this upstream has served.
    pub async fn served(&self) -> u64 {
        let url = format!("http://{}/__control/stats", self.addr);
        let v: serde_json::Value = reqwest::get(url)
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        v["served"].as_u64().expect("served")
    }
}

/// A proxy connected to a server, with its own state directory.
#[derive(Debug)]
pub struct Proxy {
    pub process: Process,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub id: String,
    pub state_dir: PathBuf,
    args: Vec<String>,
    dir: TempDir,
}

impl Proxy {
    /// Starts a proxy for `server` with `--tag-responses` and any `extra` flags.
    pub fn start(server: &Server, id: &str, extra: &[&str]) -> Proxy {
        let dir = TempDir::new().expect("tempdir");
        let state_dir = dir.path().join("state");
        let token_file = dir.path().join("proxy.token");
        std::fs::write(&token_file, &server.proxy_token).expect("write token");
        let mut args = vec![
            "--server".to_string(),
            server.grpc_url(),
            "--token-file".into(),
            token_file.display().to_string(),
            "--id".into(),
            id.into(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--tag-responses".into(),
        ];
        if let Some(ca) = &server.ca {
            args.extend(["--server-ca".to_string(), ca.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let (process, addr, admin) = Self::spawn(&args, &dir, id);
        Proxy {
            process,
            addr,
            admin,
            id: id.to_string(),
            state_dir,
            args,
            dir,
        }
    }

    /// A proxy that registers the application at `address` as an instance of `service`
    /// tagged `tag`, with a TTL of `ttl` seconds, plus any `extra` flags.
    pub fn registering(
        server: &Server,
        id: &str,
        (service, tag, address): (&str, &str, &str),
        ttl: &str,
        extra: &[&str],
    ) -> Proxy {
        let mut args = vec![
            "--register",
            service,
            "--tag",
            tag,
            "--register-address",
            address,
            "--register-ttl",
            ttl,
        ];
        args.extend_from_slice(extra);
        Proxy::start(server, id, &args)
    }

    fn spawn(args: &[String], dir: &TempDir, id: &str) -> (Process, SocketAddr, SocketAddr) {
        let log = dir
            .path()
            .join(format!("proxy-{id}-{}.log", fastrand_u32()));
        let (process, ready) = Process::spawn("grayline-proxy", args, &log);
        let addr = |k: &str| {
            ready[k]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("proxy addr")
        };
        (process, addr("proxy"), addr("admin"))
    }

    /// Kills the proxy (SIGKILL) and starts it again with the same flags and state directory.
    pub fn restart(&mut self) {
        self.process.kill9();
        let (process, addr, admin) = Self::spawn(&self.args, &self.dir, &self.id);
        self.process = process;
        self.addr = addr;
        self.admin = admin;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `Ok` when a request for `path` through the proxy is answered 200, else why not: for
    /// `eventually`.
    pub async fn answers_ok(&self, path: &str) -> Result<(), String> {
        let r = reqwest::get(self.url(path))
            .await
            .map_err(|e| e.to_string())?;
        (r.status() == 200)
            .then_some(())
            .ok_or(format!("{}", r.status()))
    }

    /// `/config` from the admin port.
    pub async fn config(&self) -> serde_json::Value {
        reqwest::get(format!("http://{}/config", self.admin))
            .await
            .expect("admin /config")
            .json()
            .await
            .expect("json")
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .expect("admin request");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }

    /// Waits until the proxy serves `revision` or newer.
    pub async fn wait_revision(&self, revision: u64) {
        eventually(
            &format!("proxy {} at revision {revision}", self.id),
            Duration::from_secs(10),
            || async {
                let c = self.config().await;
                let have = c["revision"].as_u64().unwrap_or(0);
                (have >= revision).then_some(()).ok_or(format!("at {have}"))
            },
        )
        .await;
    }
}

fn fastrand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// What one request through the proxy came back with.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// The version the proxy tagged the response with (`x-grayline-version`).
    pub version: Option<String>,
    pub set_cookie: Option<String>,
    pub body: String,
}

/// A keep-alive client for sending traffic through proxies.
#[derive(Clone, Debug)]
pub struct Traffic {
    pub client: reqwest::Client,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic::new()
    }
}

impl Traffic {
    pub fn new() -> Traffic {
        Traffic {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Sends one request with the given headers.
    pub async fn send(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url}: {e}"));
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let version = header("x-grayline-version");
        let set_cookie = header("set-cookie");
        let body = resp.text().await.unwrap_or_default();
        Reply {
            status,
            version,
            set_cookie,
            body,
        }
    }

    /// Sends `n` requests, `concurrency` at a time, and returns every reply.
    pub async fn burst(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        n: usize,
        concurrency: usize,
    ) -> Vec<Reply> {
        use futures::StreamExt;
        futures::stream::iter(0..n)
            .map(|_| self.send(url, headers))
            .buffer_unordered(concurrency)
            .collect()
            .await
    }
}

/// Steady background traffic through a proxy until stopped: `workers` loops, each sending
/// one request every `every` (so about `workers / every` requests per second).
#[derive(Debug)]
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: &str, headers: &[(&str, &str)], workers: usize, every: Duration) -> Load {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let traffic = Traffic::new();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let (traffic, url, headers) = (traffic.clone(), url.to_string(), headers.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let mut req = traffic.client.get(&url);
                        for (k, v) in &headers {
                            req = req.header(k, v);
                        }
                        match req.send().await {
                            Ok(r) => {
                                let _ = r.bytes().await;
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failed,
            tasks,
        }
    }

    /// Requests sent so far (answered or not).
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops and returns (sent, failed to get any answer).
    pub async fn stop(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Statuses seen by `workers` concurrent clients until `stop`, with the time of each answer.
#[derive(Debug)]
pub struct Replies {
    replies: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, u16)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Replies {
    pub fn start(url: String, workers: usize) -> Replies {
        let replies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = Traffic::new();
        let workers = (0..workers)
            .map(|_| {
                let (t, url, replies, stop) =
                    (t.clone(), url.clone(), replies.clone(), stop.clone());
                tokio::spawn(async move {
                    // Bounded: a test that goes wrong still stops.
                    let deadline = std::time::Instant::now() + Duration::from_secs(60);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && std::time::Instant::now() < deadline
                    {
                        let status = t.send(&url, &[]).await.status;
                        replies
                            .lock()
                            .unwrap()
                            .push((std::time::Instant::now(), status));
                    }
                })
            })
            .collect();
        Replies {
            replies,
            stop,
            workers,
        }
    }

    pub fn count_since(&self, since: std::time::Instant) -> usize {
        self.replies
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= since)
            .count()
    }

    pub async fn stop(self) -> Vec<(std::time::Instant, u16)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        std::sync::Arc::try_unwrap(self.replies)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// (failed, all) of the replies between `from` and `to`: anything but 200 failed.
pub fn failure_share(
    replies: &[(std::time::Instant, u16)],
    from: std::time::Instant,
    to: Option<std::time::Instant>,
) -> (usize, usize) {
    let window: Vec<u16> = replies
        .iter()
        .filter(|(t, _)| *t >= from && to.is_none_or(|to| *t < to))
        .map(|(_, s)| *s)
        .collect();
    let failed = window.iter().filter(|s| **s != 200).count();
    (failed, window.len())
}
