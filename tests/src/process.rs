//! Child processes that announce their addresses on stdout and die with the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Where a workspace binary lives: `GRAYLINE_BIN_DIR`, else the directory above the test
/// executable's `deps/`.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("GRAYLINE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("current_exe");
            let deps = exe.parent().expect("exe dir");
            deps.parent().expect("target dir").to_path_buf()
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`, which scripts/test runs)",
        path.display()
    );
    path
}

/// A process that ended before it listened: how, and what it logged.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub log: String,
}

/// Runs `bin` with `args` to completion (a one-shot command such as an export) and returns
/// its output.
pub fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin_path(bin))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"))
}

/// A running child. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Process {
    /// Starts `bin` with `args`, stderr into `log`, and waits up to 30 s for a stdout line
    /// that is a JSON object with `"event": "listening"`, which it returns.
    pub fn spawn(bin: &str, args: &[String], log: &Path) -> (Process, serde_json::Value) {
        Self::try_spawn(bin, args, log).unwrap_or_else(|exited| {
            panic!(
                "{bin} exited ({}) instead of starting; its log:\n{}",
                exited.status, exited.log
            )
        })
    }

    /// [`Process::spawn`] for a start that may be refused: the process exiting before it
    /// listens is an answer, not a failure.
    pub fn try_spawn(
        bin: &str,
        args: &[String],
        log: &Path,
    ) -> Result<(Process, serde_json::Value), Exited> {
        let log_file = std::fs::File::create(log).expect("create log file");
        let mut child = Command::new(bin_path(bin))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .env(
                "RUST_LOG",
                std::env::var("GRAYLINE_TEST_LOG").unwrap_or("info".into()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["event"] == "listening"
                {
                    let _ = tx.send(Some(v));
                }
            }
            // Stdout closed: the process is gone (or closed it, which none of ours does).
            let _ = tx.send(None);
        });
        let mut process = Process {
            child,
            name: bin.to_string(),
            log: log.to_path_buf(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(v)) => Ok((process, v)),
            Ok(None) => {
                let status = process.child.wait().expect("wait for the exited process");
                Err(Exited {
                    status,
                    log: process.log_text(),
                })
            }
            Err(_) => {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{bin} did not start within 30 s; its log:\n{log}");
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to 10 s for a clean exit; returns whether it exited with 0.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..500 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}
