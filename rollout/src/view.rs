//! What the APIs show of a rollout: its whole state, the figures beside each gate, and the
//! events the stream carries. The server produces them and the console reads them.

use serde::{Deserialize, Serialize};

use crate::gate::GateSummary;
use crate::judge::{Phase, Rollout, Transition};

/// A rollout as the APIs return it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub rollout: Rollout,
    /// One per gate, in the order of `rollout.gates`.
    pub summaries: Vec<GateSummary>,
    /// The sample-ratio guard's figures, when the plan has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<crate::guard::GuardSummary>,
    /// `log10` of the enforced gates' harm evidence averaged, and of `1/α` where it rolls
    /// back ([`Rollout::harm_log_e`]).
    #[serde(default)]
    pub harm_log10: f64,
    #[serde(default)]
    pub harm_threshold_log10: f64,
    /// The canary's weight now, in basis points.
    pub weight: u32,
    /// The revision of the service the rollout last wrote.
    pub revision: u64,
}

impl RolloutView {
    pub fn of(rollout: &Rollout, revision: u64) -> RolloutView {
        RolloutView {
            summaries: rollout.gates.iter().map(|g| g.summary()).collect(),
            guard: rollout.guard.as_ref().map(crate::guard::Guard::summary),
            harm_log10: rollout.harm_log_e() / std::f64::consts::LN_10,
            harm_threshold_log10: rollout.harm_threshold() / std::f64::consts::LN_10,
            weight: rollout.weight(),
            rollout: rollout.clone(),
            revision,
        }
    }

    /// Why the rollout is where it is, in plain words (the reason of its last transition).
    pub fn reason(&self) -> &str {
        match &self.rollout.phase {
            Phase::Paused { reason } | Phase::RolledBack { reason } | Phase::Aborted { reason } => {
                reason
            }
            _ => self
                .rollout
                .transitions
                .last()
                .map_or("", |t| t.reason.as_str()),
        }
    }
}

/// One transition of one rollout, as the event stream and the webhooks carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub id: u64,
    pub service: String,
    pub canary: String,
    pub attempt: u32,
    pub transition: Transition,
}

/// The last hour of a metric gate per version, a point a step, for a person choosing the
/// gate's query and limits before the rollout starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricPreview {
    pub gate: String,
    pub canary: String,
    pub baseline: String,
    pub step_seconds: u32,
    /// Per step: the rate of events per exposure (event kinds) or the value, for each version;
    /// `null` where Prometheus had nothing.
    pub points: Vec<PreviewPoint>,
    /// The queries as asked, filled in for the canary and the baseline: the query, then the
    /// exposure for event kinds.
    pub canary_queries: Vec<String>,
    pub baseline_queries: Vec<String>,
}

impl MetricPreview {
    /// Each version's mean over the points that have a value.
    pub fn means(&self) -> (Option<f64>, Option<f64>) {
        let mean = |values: Vec<f64>| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        (
            mean(self.points.iter().filter_map(|p| p.canary).collect()),
            mean(self.points.iter().filter_map(|p| p.baseline).collect()),
        )
    }

    /// The points where either version has a value.
    pub fn with_data(&self) -> impl DoubleEndedIterator<Item = &PreviewPoint> {
        self.points
            .iter()
            .filter(|p| p.canary.is_some() || p.baseline.is_some())
    }
}

/// A metric gate's reading in words: a rate for event kinds, a value otherwise, `—` for none.
pub fn reading_words(kind: crate::plan::MetricKind, value: Option<f64>) -> String {
    match value {
        None => "—".into(),
        Some(v) if kind.counts() => crate::judge::rate_percent(v),
        Some(v) => format!("{v:.4}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviewPoint {
    pub time_unix_s: i64,
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
}
