//! Shapes the APIs exchange besides the model itself: stored records, history entries, proxy
//! status, statistics and simulations. The server produces them and the console reads them,
//! so both sides share one definition.

use serde::{Deserialize, Serialize};

use crate::model::Service;

/// A service as stored, with the revision of its last change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service: Service,
    pub revision: u64,
}

/// What kind of change a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
    CreateVersion,
    UpdateVersion,
    DeleteVersion,
    SetPolicy,
    Promote,
    Restore,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::CreateVersion,
        Action::UpdateVersion,
        Action::DeleteVersion,
        Action::SetPolicy,
        Action::Promote,
        Action::Restore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::CreateVersion => "create_version",
            Action::UpdateVersion => "update_version",
            Action::DeleteVersion => "delete_version",
            Action::SetPolicy => "set_policy",
            Action::Promote => "promote",
            Action::Restore => "restore",
        }
    }
}

/// One accepted change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub revision: u64,
    pub service: String,
    pub actor: String,
    /// The name of the token that made the change (`admin` for the server's admin token);
    /// empty for changes made before tokens had names, and for a rollout's own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    pub time_unix_ms: i64,
    pub action: Action,
    pub before: Option<Service>,
    pub after: Option<Service>,
    /// Revision of `before` (0 when the service was new); restoring it undoes this change.
    pub previous_revision: u64,
    pub summary: String,
}

impl HistoryEntry {
    /// Who made the change, as the console and the CLI show it: the actor, and the name of
    /// the token it used when that says more (`ada (ci)`).
    pub fn who(&self) -> String {
        if self.token.is_empty() || self.token == self.actor {
            self.actor.clone()
        } else {
            format!("{} ({})", self.actor, self.token)
        }
    }
}

/// One proxy, as the APIs show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub id: String,
    pub connected: bool,
    /// The revision of the last config the proxy ACKed (0: none yet).
    pub applied_revision: u64,
    /// The last NACK since it connected: the revision it rejected and why.
    pub nack_revision: u64,
    pub nack_error: String,
    pub last_seen_unix_ms: i64,
    pub address: String,
    /// Services it asked for; empty means all.
    pub services: Vec<String>,
    pub connected_since_unix_ms: i64,
    pub proxy_version: String,
    /// The warning of its last ACK: the config was applied, but e.g. could not be saved to
    /// disk, so a restart without the server would serve an older one.
    #[serde(default)]
    pub ack_warning: String,
    /// Endpoints its outlier detection keeps out of rotation now.
    #[serde(default)]
    pub ejected_endpoints: Vec<EjectedEndpoint>,
    /// When it last presented a token the server rejected (0: not since it last connected),
    /// and the server's answer.
    #[serde(default)]
    pub token_rejected_unix_ms: i64,
    #[serde(default)]
    pub token_error: String,
}

/// An endpoint a proxy's outlier detection took out of its version's rotation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EjectedEndpoint {
    pub service: String,
    pub version: String,
    pub endpoint: String,
    /// When the ejection ends, by the proxy's clock.
    pub until_unix_ms: i64,
    /// Times it was ejected since the version was last configured.
    pub ejections: u64,
    /// `outlier` or `health_check`.
    #[serde(default)]
    pub reason: String,
}

/// A registered instance, as the APIs list it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub service: String,
    pub tag: String,
    pub address: String,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    pub ttl_seconds: u32,
    pub registered_unix_ms: i64,
    /// When the replica asked last saw it registered or renewed.
    pub last_renewed_unix_ms: i64,
    /// When it expires unless renewed.
    pub expires_unix_ms: i64,
    /// Who registered it: `admin`, `registration` or `proxy <id>` for the server's own
    /// tokens, else the name of the token (of `--tokens-dir`) that did.
    pub registered_by: String,
    /// The versions of its service that take it (none: no version selects its tag).
    #[serde(default)]
    pub versions: Vec<String>,
    /// Proxies whose outlier detection keeps it out of rotation now.
    #[serde(default)]
    pub ejected_by: Vec<String>,
}

/// One second of one series.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub time_unix_s: i64,
    /// Every request routed to the version: its answers (the status classes) and the
    /// fallbacks the proxies answered instead of asking it.
    pub requests: u64,
    /// The version's answers by status class, the proxy's 502/504 for a version it could not
    /// reach or that did not answer in time included.
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub upstream_errors: u64,
    /// Requests the proxies answered with the fallback without asking the version (breaker
    /// open, concurrency limit reached): not in the status classes nor the latencies, and
    /// never judged as the version's errors.
    pub fallbacks: u64,
    /// gRPC calls that ended with a non-zero `grpc-status`. Each is also counted in
    /// `status_5xx`, whatever HTTP status carried it, so error rates include them.
    #[serde(default)]
    pub grpc_errors: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Worst breaker state reported in this second: closed, half_open, open, forced_open,
    /// disabled; empty when nobody said.
    pub breaker: String,
}

impl Point {
    /// Requests the version answered (or failed to): `requests` less the fallbacks.
    pub fn answered(&self) -> u64 {
        self.requests.saturating_sub(self.fallbacks)
    }

    /// Adds another point's counts (not its latencies); keeps the worse breaker state.
    pub fn add_counts(&mut self, o: &Point) {
        self.requests += o.requests;
        self.status_1xx += o.status_1xx;
        self.status_2xx += o.status_2xx;
        self.status_3xx += o.status_3xx;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.upstream_errors += o.upstream_errors;
        self.fallbacks += o.fallbacks;
        self.grpc_errors += o.grpc_errors;
        if breaker_rank(&o.breaker) > breaker_rank(&self.breaker) {
            self.breaker = o.breaker.clone();
        }
    }
}

/// Breaker states from harmless to bad; a state's rank is its place here.
const BREAKER_STATES: [&str; 6] = ["", "disabled", "closed", "half_open", "open", "forced_open"];

/// Orders breaker states from harmless to bad (an unknown state ranks as `forced_open`).
pub fn breaker_rank(s: &str) -> u8 {
    BREAKER_STATES
        .iter()
        .position(|&state| state == s)
        .unwrap_or(BREAKER_STATES.len() - 1) as u8
}

/// The breaker state of a [`breaker_rank`].
pub fn breaker_of_rank(rank: u8) -> &'static str {
    BREAKER_STATES[usize::from(rank).min(BREAKER_STATES.len() - 1)]
}

/// A series as the APIs show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesView {
    pub service: String,
    pub version: String,
    /// Empty for the sum over all proxies.
    pub proxy_id: String,
    /// Mirrored copies a route sent this version, counted apart from its live traffic (and
    /// never judged by rollouts).
    #[serde(default)]
    pub mirrored: bool,
    pub points: Vec<Point>,
    /// Counts summed over the window (no percentiles).
    pub totals: Point,
}

/// The newest final second of every version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub time_unix_s: i64,
    pub series: Vec<SeriesView>,
}

/// A simulated decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    pub version: String,
    /// Index of the matching rule, or -1 for the default route.
    pub rule_index: i32,
    pub rule_name: String,
    pub explanation: String,
    pub bucket: Option<u16>,
    pub os: String,
    pub os_version: String,
    pub browser: String,
    pub browser_version: String,
    /// The lane the request carries on to the next service; empty for none.
    #[serde(default)]
    pub lane: String,
    /// The version a copy of the request went to (mirrored); empty for none.
    #[serde(default)]
    pub mirror: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_ranks_order_the_states_and_map_back() {
        let states = ["", "disabled", "closed", "half_open", "open", "forced_open"];
        for (rank, state) in states.iter().enumerate() {
            assert_eq!(usize::from(breaker_rank(state)), rank);
            assert_eq!(breaker_of_rank(rank as u8), *state);
        }
        // An unknown state counts as the worst; a rank past the end reads as the worst.
        assert_eq!(breaker_rank("melted"), 5);
        assert_eq!(breaker_of_rank(200), "forced_open");
    }
}
