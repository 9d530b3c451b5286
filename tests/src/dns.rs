//! A real DNS server for the DNS discovery tests: Debian's `dnsmasq` on a free loopback
//! port, answering for `*.test` from a hosts file (re-read on SIGHUP) and SRV records given
//! at start, with a TTL of 1 s. Killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// Where dnsmasq is, or why the test cannot run (scripts/setup installs it).
pub fn dnsmasq_binary() -> PathBuf {
    for p in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"] {
        if std::path::Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("dnsmasq is not installed: run `scripts/setup dns` (Debian's dnsmasq-base package)");
}

/// A loopback port free for both UDP and TCP now (dnsmasq serves both).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
        let port = tcp.local_addr().expect("its address").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// An SRV record: `name` answered with `target:port`.
#[derive(Clone, Debug)]
pub struct Srv {
    pub name: String,
    pub target: String,
    pub port: u16,
}

#[derive(Debug)]
pub struct Dnsmasq {
    child: Option<Child>,
    pub port: u16,
    hosts: PathBuf,
    dir: TempDir,
}

impl Dnsmasq {
    /// Serves `hosts` (lines of `ip name`) and `srv` on a free port of 127.0.0.1.
    pub fn start(hosts: &str, srv: &[Srv]) -> Dnsmasq {
        let dir = TempDir::new().expect("tempdir");
        let hosts_file = dir.path().join("hosts");
        std::fs::write(&hosts_file, hosts).expect("hosts file");
        let mut d = Dnsmasq {
            child: None,
            port: free_port(),
            hosts: hosts_file,
            dir,
        };
        d.spawn(srv, true);
        d
    }

    /// `ip:port` for `--dns-server`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts dnsmasq on `self.port`; `may_move`: on a first start, a port another process
    /// took meanwhile (dnsmasq binds it for UDP and TCP) is traded for another free one.
    fn spawn(&mut self, srv: &[Srv], may_move: bool) {
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .expect("user name");
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            format!("--addn-hosts={}", self.hosts.display()),
            "--local=/test/".into(),
            "--local-ttl=1".into(),
            "--port=PORT".into(),
            "--listen-address=127.0.0.1".into(),
            "--bind-interfaces".into(),
            "--pid-file=".into(),
            format!("--user={}", user.trim()),
            "--log-facility=-".into(),
        ];
        for r in srv {
            args.push(format!("--srv-host={},{},{},0,0", r.name, r.target, r.port));
        }
        // A few tries: on a restart the old process's port may take a moment to be free.
        for attempt in 0..5 {
            let log = std::fs::File::create(self.dir.path().join("dnsmasq.log")).expect("log");
            let port = format!("--port={}", self.port);
            let mut child = Command::new(dnsmasq_binary())
                .args(
                    args.iter()
                        .map(|a| if a == "--port=PORT" { &port } else { a }),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting dnsmasq");
            // Up once it answers on its port: a connection over TCP succeeds only then.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("dnsmasq exited ({status}) on try {attempt}: {}", self.log());
                    if may_move && self.log().contains("Address already in use") {
                        self.port = free_port();
                    }
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "dnsmasq did not start: {}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "dnsmasq would not start on port {}: {}",
            self.port,
            self.log()
        );
    }

    /// Replaces the hosts file and tells dnsmasq to read it again (SIGHUP).
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).expect("hosts file");
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(ok.success());
    }

    /// Starts again on the same port with other SRV records (dnsmasq reads them only at
    /// start).
    pub fn restart_with(&mut self, srv: &[Srv]) {
        self.stop();
        self.spawn(srv, false);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
