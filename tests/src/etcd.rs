//! Real etcd clusters for the tests: Debian's `etcd` (3.4) members on free loopback ports in
//! temporary directories, started, killed and restarted by the test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where etcd is, or why the test cannot run (scripts/setup installs it).
pub fn etcd_binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!("etcd is not installed: run `scripts/setup etcd` (Debian's etcd-server package)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A cluster of etcd members; killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    dir: TempDir,
    /// More flags for every member.
    extra: Vec<String>,
    /// Serving its clients TLS, and requiring their certificates.
    pub tls: Option<EtcdTls>,
}

/// The certificates of an etcd that serves TLS: its own, and one for its clients.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server: crate::pki::Leaf,
    pub client: crate::pki::Leaf,
}

impl Etcd {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> Etcd {
        Etcd::start_with(n, &[])
    }

    /// Starts `n` members with `extra` flags each (`--quota-backend-bytes`, …).
    pub fn start_with(n: usize, extra: &[&str]) -> Etcd {
        Etcd::start_as(n, extra, None)
    }

    /// Starts `n` members serving their clients TLS with certificates of `pki`, and
    /// requiring a client certificate (`--client-cert-auth`), as production etcd runs.
    pub fn start_tls(n: usize, pki: &crate::pki::Pki) -> Etcd {
        let tls = EtcdTls {
            ca: pki.ca.clone(),
            server: pki.issue("etcd", &["127.0.0.1", "localhost"]),
            client: pki.issue("etcd-client", &["grayline-server"]),
        };
        Etcd::start_as(n, &[], Some(tls))
    }

    /// Starts the members and waits for them. A member that cannot bind the ports it was
    /// given (another test took them between `free_port` and etcd's bind) exits at once: the
    /// cluster is then started again on new ports, up to three times.
    fn start_as(n: usize, extra: &[&str], tls: Option<EtcdTls>) -> Etcd {
        let mut attempt = 1;
        loop {
            let mut etcd = Etcd::spawned(n, extra, tls.clone());
            match etcd.healthy(Duration::from_secs(30)) {
                Ok(()) => return etcd,
                Err(why) if attempt < 3 && etcd.any_exited() => {
                    eprintln!("etcd, attempt {attempt}: {why}; starting again on new ports");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    fn any_exited(&mut self) -> bool {
        self.members.iter_mut().any(|m| {
            m.child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
        })
    }

    fn spawned(n: usize, extra: &[&str], tls: Option<EtcdTls>) -> Etcd {
        let dir = TempDir::new().expect("tempdir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(t) = &tls {
            for (flag, path) in [
                ("--cert-file", &t.server.cert),
                ("--key-file", &t.server.key),
                ("--trusted-ca-file", &t.ca),
            ] {
                extra.extend([flag.to_string(), path.display().to_string()]);
            }
            extra.push("--client-cert-auth".into());
        }
        let mut etcd = Etcd {
            members,
            dir,
            extra,
            tls,
        };
        for i in 0..n {
            etcd.spawn(i, "new");
        }
        etcd
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let cluster = self.initial_cluster();
        let data = self.dir.path().join(&self.members[i].name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .expect("log file");
        let extra = self.extra.clone();
        let scheme = self.scheme();
        let m = &mut self.members[i];
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(etcd_binary())
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                state,
            ])
            .args(["--initial-cluster-token", "grayline-test"])
            // Fast elections: the tests kill members on purpose.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        m.child = Some(child);
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// etcdctl's flags for the cluster's certificates, when it serves TLS.
    fn ctl_tls(&self) -> Vec<String> {
        self.tls
            .iter()
            .flat_map(|t| {
                [
                    ("--cacert", &t.ca),
                    ("--cert", &t.client.cert),
                    ("--key", &t.client.key),
                ]
                .map(|(flag, path)| format!("{flag}={}", path.display()))
            })
            .collect()
    }

    /// `127.0.0.1:P,127.0.0.1:Q,…`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `--store` value for a Grayline server, under `prefix`.
    pub fn store_url(&self, prefix: &str) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}/{prefix}", self.endpoints())
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
    }

    /// Runs `etcdctl` against the cluster with `args`, `stdin` fed to it; its status and
    /// what it printed (stdout, then stderr).
    pub fn ctl(&self, args: &[&str], stdin: &[u8]) -> (bool, String) {
        use std::io::Write as _;
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoints(), "--command-timeout", "10s"])
            .args(self.ctl_tls())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("etcdctl's input");
        let out = child.wait_with_output().expect("etcdctl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Waits until every running member answers its health check.
    pub fn wait_healthy(&mut self, within: Duration) {
        if let Err(why) = self.healthy(within) {
            panic!("{why}");
        }
    }

    /// Every running member answers its health check within `within`, or why not (with
    /// the end of the member's log: its directory goes when the cluster does).
    fn healthy(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .collect();
        for i in running {
            loop {
                let m = &self.members[i];
                let ok = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args([
                        "--endpoints",
                        &format!("127.0.0.1:{}", m.client),
                        "--command-timeout",
                        "1s",
                    ])
                    .args(self.ctl_tls())
                    .args(["endpoint", "health"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                let exited = self.members[i]
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited || Instant::now() >= deadline {
                    let name = &self.members[i].name;
                    let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    return Err(format!(
                        "etcd member {name} {} within {within:?}; the end of its log:\n{}",
                        if exited { "exited" } else { "not healthy" },
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

/// One etcd member for the whole test process, started on first use, for running the
/// store suite on etcd (`GRAYLINE_TEST_STORE=etcd`). A watchdog kills it when the test
/// process ends, however it ends.
pub fn shared() -> &'static Etcd {
    static SHARED: std::sync::OnceLock<Etcd> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let etcd = Etcd::start(1);
        let pid = etcd.members[0]
            .child
            .as_ref()
            .map(Child::id)
            .expect("started");
        let watchdog = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {pid}; rm -rf '{dir}'",
            me = std::process::id(),
            dir = etcd.dir.path().display()
        );
        // It outlives this process on purpose: it is what cleans up after it.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the etcd watchdog");
        etcd
    })
}

/// `--store` for a server of the store suite: on the shared etcd under a prefix of its own
/// when `GRAYLINE_TEST_STORE=etcd`, else none (sled).
pub fn suite_store(unique: u64) -> Option<String> {
    match std::env::var("GRAYLINE_TEST_STORE").as_deref() {
        Ok("etcd") => Some(shared().store_url(&format!("t{}-{unique}", std::process::id()))),
        Ok("sled") | Ok("") | Err(_) => None,
        Ok(other) => panic!("GRAYLINE_TEST_STORE={other}: use sled or etcd"),
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
