//! The command line, as clap reads it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Grayline from the command line: config as code for pipelines and people.
///
/// Connection: --server, --token-file (or GRAYLINE_TOKEN with the token itself), --actor,
/// or a named context (`grayline context set`). Exit codes: 0 ok, 1 error, 2 invalid input,
/// 3 conflict, 4 not found, 5 unauthenticated, 6 server unreachable, 7 rolled back,
/// 8 not live (a proxy rejected the change or did not apply it in time), 10 `diff` found
/// changes.
#[derive(Debug, Parser)]
#[command(
    name = "grayline",
    version,
    propagate_version = true,
    max_term_width = 100,
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// How to print results.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Clone, Debug, Default, Args)]
pub struct ConnectionArgs {
    /// The server's gRPC address [default: the context's, else http://127.0.0.1:7070].
    #[arg(long, global = true, env = "GRAYLINE_SERVER")]
    pub server: Option<String>,
    /// File with the admin token [default: the context's, else grayline-data/admin.token].
    /// GRAYLINE_TOKEN, if set, is the token itself.
    #[arg(long, global = true, env = "GRAYLINE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Name recorded in the history for changes [default: the context's, else $USER].
    #[arg(long, global = true, env = "GRAYLINE_ACTOR")]
    pub actor: Option<String>,
    /// PEM CA certificates an `https://` server's certificate must chain to [default: the
    /// context's, else the system's roots].
    #[arg(long, global = true, env = "GRAYLINE_CA")]
    pub ca: Option<PathBuf>,
    /// Use this context instead of the current one.
    #[arg(long, global = true, env = "GRAYLINE_CONTEXT")]
    pub context: Option<String>,
}

/// `--wait[=TIMEOUT]`: return once every connected proxy serving the service applied the
/// change (default timeout 60s).
#[derive(Clone, Debug, Default, Args)]
pub struct WaitArg {
    /// Wait until every connected proxy serving the service runs the change; fail naming the
    /// proxies on a rejection or after TIMEOUT (e.g. 30s, 2m).
    #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, require_equals = true,
          default_missing_value = "60s", value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 30s or 2m: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update services from YAML or JSON files (one or many per file).
    Apply(ApplyArgs),
    /// Show what `apply` would change; exit 10 if anything would.
    Diff(FilesArgs),
    /// Print services (all, or one) in the form `apply` takes back unchanged.
    Export { service: Option<String> },
    /// One service.
    Get { service: String },
    /// Every service with its split.
    List(ListArgs),
    /// A service's changes, newest first; `--diff A B` shows what changed between two.
    History(HistoryArgs),
    /// Make a version stable with all traffic.
    Promote(PromoteArgs),
    /// Put a service back as it was before its last change.
    Undo(UndoArgs),
    /// Put a service back as it was right after a revision.
    Restore(RestoreArgs),
    /// Set the weights of the default split: `set-weight shop v2=25%` (the stable version
    /// takes the rest).
    SetWeight(SetWeightArgs),
    /// Which version a request would reach, and why.
    Simulate(SimulateArgs),
    /// Proxies, the revision each runs, and what they rejected.
    Proxies,
    /// Requests, errors and latency per version.
    Stats(StatsArgs),
    /// The instances registered now (all services, or one), with the versions that take
    /// each and the proxies that eject it.
    Instances { service: Option<String> },
    /// Register an instance and keep it alive until interrupted (then deregister it), as an
    /// application without a Grayline proxy would; the registration token is enough.
    Register(RegisterArgs),
    /// Take an instance's registration back at once.
    Deregister { service: String, address: String },
    /// Automated rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Named connections.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Shell completions: `grayline completions bash > /etc/bash_completion.d/grayline`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only services that match; several must all match. A word is a part of the name
    /// (any case); `rollout`: a rollout is running; `errors`: a version answers 5xx more often
    /// than the stable one over the last minute; `behind`: a connected proxy that serves it
    /// runs an older revision; `nack`: a proxy that serves it rejected a config since it
    /// connected.
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Order: `name` (natural: svc2 before svc10), `traffic` (requests a second over the
    /// last minute, most first) or `errors` (the worst version's 5xx share, worst first).
    #[arg(long, default_value = "name", value_parser = ["name", "traffic", "errors"])]
    pub sort: String,
}

#[derive(Debug, Args)]
pub struct FilesArgs {
    /// A file, a directory (its .yaml, .yml and .json files) or `-` for standard input.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    pub files: Vec<String>,
    /// Also delete services on the server that no file names.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FilesArgs,
    /// Let the server check everything; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only apply if the service is at this revision (one service only; a `revision` in
    /// the file does the same per service).
    #[arg(long)]
    pub expected_revision: Option<u64>,
    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub service: String,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Show the difference between the service after revision A and after revision B.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub diff: Option<Vec<u64>>,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    pub service: String,
    /// The version to make stable.
    #[arg(value_name = "VERSION")]
    pub to: String,
    #[arg(long)]
    pub expected_revision: Option<u64>,
    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    pub service: String,
    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    pub service: String,
    pub revision: u64,
    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Args)]
pub struct SetWeightArgs {
    pub service: String,
    /// `VERSION=PERCENT` (`v2=25%`, `v2=0.5`), or basis points (`v2=2500bp`).
    #[arg(required = true, value_name = "VERSION=WEIGHT")]
    pub weights: Vec<String>,
    #[arg(long)]
    pub expected_revision: Option<u64>,
    #[command(flatten)]
    pub wait: WaitArg,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    pub service: String,
    #[arg(long, default_value = "")]
    pub host: String,
    #[arg(long, default_value = "/")]
    pub path: String,
    /// `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// `name=value` (repeatable).
    #[arg(long = "cookie")]
    pub cookies: Vec<String>,
    /// `name=value` (repeatable).
    #[arg(long = "query")]
    pub query: Vec<String>,
    #[arg(long, default_value = "")]
    pub user_agent: String,
    #[arg(long, default_value = "")]
    pub client_ip: String,
    /// The lane the request arrives in, as if from a trusted proxy.
    #[arg(long, default_value = "")]
    pub lane: String,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The service the instance belongs to.
    pub service: String,
    /// The version tag (`1.1.2`); versions whose `instances.tag` is this take it.
    #[arg(long)]
    pub tag: String,
    /// Where the instance serves, `host:port`.
    #[arg(long)]
    pub address: String,
    /// Seconds without a renewal before it expires.
    #[arg(long, default_value_t = 30)]
    pub ttl: u32,
    /// Labels shown with it, `key=value` (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Register (or renew) once and exit, leaving the renewals to the caller.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// One service; all when left out.
    pub service: Option<String>,
    /// How far back the totals reach: seconds, or a duration such as `90s`, `2h`, `1d`
    /// [default: 60 s; 1 h with `--per-minute`]. At most an hour per second, a week with
    /// `--per-minute`.
    #[arg(long, value_parser = parse_window)]
    window: Option<u32>,
    /// Also one row per proxy (kept for the last 5 minutes).
    #[arg(long, conflicts_with = "per_minute")]
    pub per_proxy: bool,
    /// From the per-minute history, kept for a week (a server with a sled store).
    #[arg(long)]
    pub per_minute: bool,
    /// Where the window ends: RFC 3339 (`2026-12-04T15:00:00Z`) or unix seconds; now when
    /// left out. Only with `--per-minute`.
    #[arg(long, requires = "per_minute", value_parser = parse_until)]
    pub until: Option<i64>,
    /// Refresh every second until interrupted.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout from a plan file (YAML or JSON, as docs/rollouts.md describes).
    Start {
        #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
        file: String,
        /// Follow it to the end: exit 0 when promoted, 7 when rolled back or aborted
        /// (optionally within TIMEOUT, e.g. 30m).
        #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, require_equals = true,
              default_missing_value = "24h", value_parser = parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// The last hour of one of a plan file's metric gates, per version, a point a minute:
    /// try a gate's query before starting the rollout.
    Preview {
        #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
        file: String,
        /// The metric gate's name.
        #[arg(long)]
        gate: String,
    },
    /// Where a rollout is (`ROLLOUT` is an id or a service: its newest rollout).
    Status {
        rollout: String,
        /// Refresh every second until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Rollouts, newest first.
    List {
        #[arg(long)]
        service: Option<String>,
        /// Only running ones.
        #[arg(long)]
        active: bool,
    },
    Pause {
        rollout: String,
    },
    Resume {
        rollout: String,
    },
    /// Approve the next step of a rollout that awaits approval.
    Approve {
        rollout: String,
    },
    /// Complete the current step now, whatever the evidence says.
    Skip {
        rollout: String,
    },
    /// Promote the canary now.
    Promote {
        rollout: String,
    },
    /// All traffic back to the stable version.
    Abort {
        rollout: String,
    },
    /// Start a rolled-back or aborted rollout again, with new evidence.
    Retry {
        rollout: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Every context; `*` marks the current one.
    List,
    /// Make a context the current one.
    Use {
        name: String,
    },
    /// Create or change a context.
    Set {
        name: String,
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    Delete {
        name: String,
    },
    /// The current context's name.
    Current,
}

impl StatsArgs {
    /// The window in seconds, its default filled in.
    pub fn window(&self) -> u32 {
        self.window
            .unwrap_or(if self.per_minute { 3600 } else { 60 })
    }
}

/// Seconds, or a duration humantime reads (`90s`, `2h`, `1d`).
fn parse_window(s: &str) -> Result<u32, String> {
    let seconds = match s.parse::<u64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{e}: seconds, or a duration such as 90s, 2h, 1d"))?
            .as_secs(),
    };
    u32::try_from(seconds).map_err(|_| "too long".to_string())
}

/// A time as RFC 3339 or unix seconds.
fn parse_until(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{e}: RFC 3339 (2026-12-04T15:00:00Z) or unix seconds"))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|_| "before 1970".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_takes_an_optional_timeout() {
        let cli = Cli::try_parse_from(["grayline", "promote", "shop", "v2", "--wait"]).unwrap();
        let Command::Promote(p) = cli.command else {
            panic!()
        };
        assert_eq!(p.wait.wait, Some(Duration::from_secs(60)));
        let cli = Cli::try_parse_from(["grayline", "undo", "shop", "--wait=5s"]).unwrap();
        let Command::Undo(u) = cli.command else {
            panic!()
        };
        assert_eq!(u.wait.wait, Some(Duration::from_secs(5)));
        let cli = Cli::try_parse_from(["grayline", "undo", "shop"]).unwrap();
        let Command::Undo(u) = cli.command else {
            panic!()
        };
        assert_eq!(u.wait.wait, None);
        assert!(Cli::try_parse_from(["grayline", "undo", "shop", "--wait=soon"]).is_err());
    }

    #[test]
    fn stats_windows_and_ends_parse() {
        assert_eq!(parse_window("90"), Ok(90));
        assert_eq!(parse_window("2h"), Ok(7200));
        assert_eq!(parse_window("1d"), Ok(86_400));
        assert!(parse_window("soon").is_err());
        assert_eq!(parse_until("1796400000"), Ok(1_796_400_000));
        assert_eq!(parse_until("2026-12-04T15:00:00Z"), Ok(1_796_396_400));
        assert!(parse_until("yesterday").is_err());
    }
}
