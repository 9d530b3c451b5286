//! The real `grayline` binary, run against a test server with its own (empty) context file.

use std::path::Path;
use std::process::Command;

use crate::process::bin_path;
use crate::server::Server;

/// What one run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with everything it printed unless it exited with `code`.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// The command for `server`, in directory `dir`, with the server's address and admin token.
pub fn command(server: &Server, dir: &Path) -> Command {
    let mut c = Command::new(bin_path("grayline"));
    c.current_dir(dir)
        .env("GRAYLINE_CONFIG", dir.join("grayline-config.yaml"))
        .env_remove("GRAYLINE_TOKEN")
        .env_remove("GRAYLINE_SERVER")
        .env_remove("GRAYLINE_TOKEN_FILE")
        .arg("--server")
        .arg(server.grpc_url())
        .arg("--token-file")
        .arg(server.dir.join("data").join("admin.token"))
        .arg("--actor")
        .arg("pipeline");
    c
}

/// Runs `grayline ARGS…` and waits for it (in a blocking thread, so async tests go on).
pub async fn grayline(server: &Server, dir: &Path, args: &[&str]) -> Run {
    let mut c = command(server, dir);
    c.args(args);
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("join")
        .expect("run grayline");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
