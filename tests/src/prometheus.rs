//! A real Prometheus for the metric gates' tests: Debian's `prometheus` on a free loopback
//! port, scraping the given targets every second, its data in a temporary directory. It can
//! be stopped and started again on the same port with the same data (an outage). Killed
//! when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Prometheus is, or why the test cannot run (scripts/setup installs it).
pub fn prometheus_binary() -> PathBuf {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if std::path::Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("prometheus is not installed: run `scripts/setup metrics` (Debian's prometheus)");
}

#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl Prometheus {
    /// Scrapes `targets` (`host:port`, path `/metrics`) every second.
    pub fn start(targets: &[String]) -> Prometheus {
        Prometheus::start_every(targets, 1)
    }

    /// Scrapes `targets` every `seconds`.
    pub fn start_every(targets: &[String], seconds: u32) -> Prometheus {
        let dir = TempDir::new().expect("tempdir");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: {seconds}s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut p = Prometheus {
            child: None,
            port,
            dir,
        };
        p.resume();
        p
    }

    /// The HTTP API's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port with the same data; returns once it is ready.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("prometheus.log"))
            .expect("log");
        let child = Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ready() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("prometheus exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `/-/ready` answers 200.
    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        c.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").is_ok()
            && c.read_to_string(&mut answer).is_ok()
            && answer.split_whitespace().nth(1) == Some("200")
    }

    /// Waits until `query` answers `series` series (its targets are scraped).
    pub async fn wait_for(&self, query: &str, series: usize) {
        let client = reqwest::Client::new();
        let url = format!("{}/api/v1/query", self.url());
        crate::eventually(
            &format!("Prometheus answers {series} series for {query}"),
            Duration::from_secs(60),
            || async {
                let answer: serde_json::Value = client
                    .get(&url)
                    .query(&[("query", query)])
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                let have = answer["data"]["result"].as_array().map_or(0, Vec::len);
                (have == series).then_some(()).ok_or(answer.to_string())
            },
        )
        .await;
    }

    /// Stops it (an outage); [`Prometheus::resume`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
