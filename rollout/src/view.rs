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
    /// The canary's weight now, in basis points.
    pub weight: u32,
    /// The revision of the service the rollout last wrote.
    pub revision: u64,
}

impl RolloutView {
    pub fn of(rollout: &Rollout, revision: u64) -> RolloutView {
        RolloutView {
            summaries: rollout.gates.iter().map(|g| g.summary()).collect(),
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
