//! The rollout state machine: it takes one second of canary and baseline counts at a time,
//! and the operators' controls, and answers with transitions and the effects the server must
//! carry out (set a weight, promote, roll back, ask a webhook).
//!
//! Pure: the caller supplies the time and carries out the effects, so the same machine runs
//! in the server, in the simulations and in the console. Its whole state serializes, so it
//! survives restarts; a second is judged once (`last_second` only moves forward), and only
//! seconds that are observed count towards a step's time.

use std::fmt::Write as _;

use grayline_routing::StickyKey;
use serde::{Deserialize, Serialize};

use crate::estimate;
use crate::gate::{Gate, GateKind, Reading, Tally, Verdict};
use crate::guard::Guard;
use crate::plan::{MAX_EVENT_GATES, Mode, OnTimeout, Plan};

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// Judging the current step.
    Running,
    /// The step is done; a person must approve the next one.
    AwaitingApproval,
    /// The step is done; the plan's asking webhooks are being asked.
    Confirming,
    /// Holding the current weight until someone resumes.
    Paused { reason: String },
    /// The canary is stable and takes all traffic.
    Promoted,
    /// Harm was shown (or the plan said so): all traffic is back on the stable version.
    RolledBack { reason: String },
    /// Stopped by a person: all traffic is back on the stable version.
    Aborted { reason: String },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::Confirming => "confirming",
            Phase::Paused { .. } => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack { .. } => "rolled_back",
            Phase::Aborted { .. } => "aborted",
        }
    }

    /// Promoted, rolled back or aborted: only a retry moves it again.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Phase::Promoted | Phase::RolledBack { .. } | Phase::Aborted { .. }
        )
    }
}

/// One change of phase or step, with who caused it and why, in plain words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// 1, 2, … within the rollout.
    pub seq: u32,
    pub time_unix_ms: i64,
    pub from: String,
    pub to: String,
    /// The step after the transition (0-based).
    pub step: usize,
    /// The canary's weight after the transition, in basis points.
    pub weight: u32,
    /// The person, or `grayline` for the rollout's own decisions.
    pub actor: String,
    pub reason: String,
}

/// The actor of automatic decisions.
pub const AUTOMATIC: &str = "grayline";
/// The actor of the asking webhooks' answers.
pub const WEBHOOKS: &str = "webhooks";

/// What the server must do for a decision to take effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Route this many basis points to the canary, the rest to the baseline.
    SetWeight(u32),
    /// Make the canary stable with all traffic.
    Promote,
    /// All traffic to the baseline.
    RollBack,
    /// Ask the plan's asking webhooks; answer with [`Control::Confirm`] or [`Control::Deny`].
    Ask,
    /// Tell the event stream and the webhooks.
    Notify(Transition),
}

/// What operators (and the server, on their behalf) can do to a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Pause,
    Resume,
    Approve,
    /// Complete the current step now, whatever the evidence says.
    Skip,
    /// Promote the canary now.
    Promote,
    /// Back to the stable version, for good (until a retry).
    Abort,
    /// Start a rolled-back or aborted rollout again from its first step, with new evidence.
    Retry,
    /// The asking webhooks agreed.
    Confirm,
    /// An asking webhook refused.
    Deny {
        reason: String,
    },
    /// Someone else changed the service.
    ExternalChange {
        reason: String,
    },
}

impl Control {
    pub fn name(&self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Approve => "approve",
            Control::Skip => "skip",
            Control::Promote => "promote",
            Control::Abort => "abort",
            Control::Retry => "retry",
            Control::Confirm => "confirm",
            Control::Deny { .. } => "deny",
            Control::ExternalChange { .. } => "external_change",
        }
    }
}

/// A control that the rollout's phase does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotNow(pub String);

/// One version's requests in one second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Requests the version answered (or failed to): the evidence.
    pub requests: u64,
    /// 5xx answers among them (including the proxy's own 502/504 when it could not reach
    /// the version or the version did not answer in time).
    pub errors: u64,
    /// Requests slower than the frozen baseline quantile (0 until it is frozen).
    pub slow: u64,
    /// Requests the proxies answered with the version's fallback without asking it (its
    /// breaker open, its concurrency limit reached): not in `requests`, never judged.
    #[serde(default)]
    pub refused: u64,
    /// Every answer of the version in the second, of which `requests` may be a sample (one
    /// per user and second); 0: as many as `requests`.
    #[serde(default)]
    pub answered: u64,
    /// Requests among `requests` that carried each event gate's event, in the plan's order
    /// of `gates.events`.
    #[serde(default, skip_serializing_if = "no_events")]
    pub events: [u64; MAX_EVENT_GATES],
    /// New visitors routed to the version (no sticky key: a fresh draw), for the
    /// sample-ratio guard.
    #[serde(default)]
    pub fresh: u64,
}

fn no_events(events: &[u64; MAX_EVENT_GATES]) -> bool {
    events.iter().all(|&n| n == 0)
}

impl Sample {
    /// More of the version's requests were answered by its own protection than by it (both
    /// counted whole, not sampled).
    pub fn mostly_refused(&self) -> bool {
        self.refused > self.answered.max(self.requests)
    }
}

/// The baseline's latency the latency gate judges against, frozen once per attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyThreshold {
    /// The baseline's latency at the gate's quantile, microseconds.
    pub threshold_us: u64,
    /// For a plan with a latency detect factor `f`: how many times the baseline's share of
    /// requests above the threshold a canary `f` times slower would show (the baseline's
    /// share above `threshold / f` over its share above the threshold).
    pub detect_ratio: Option<f64>,
}

impl LatencyThreshold {
    /// A threshold without a detect ratio.
    pub fn at(threshold_us: u64) -> LatencyThreshold {
        LatencyThreshold {
            threshold_us,
            detect_ratio: None,
        }
    }
}

/// How a rollout came to promote its canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// Every enforced gate was shown safe in the last step.
    Evidence,
    /// The last step reached its time limit and the plan said `on_timeout: promote`.
    TimeLimit,
    /// A person promoted it (or skipped or approved the last step) before safety was shown.
    Person,
}

impl Promotion {
    pub fn name(self) -> &'static str {
        match self {
            Promotion::Evidence => "evidence",
            Promotion::TimeLimit => "time_limit",
            Promotion::Person => "person",
        }
    }

    pub fn from_name(name: &str) -> Option<Promotion> {
        [Promotion::Evidence, Promotion::TimeLimit, Promotion::Person]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// Whether the promotion was earned by evidence.
    pub fn earned(self) -> bool {
        self == Promotion::Evidence
    }

    /// What the console, the CLI and the history say of it.
    pub fn words(self) -> &'static str {
        match self {
            Promotion::Evidence => "every gate shown safe",
            Promotion::TimeLimit => "promoted without safety shown, on the time limit",
            Promotion::Person => "promoted without safety shown, by a person",
        }
    }
}

/// While one version's own protection answers most of its requests, a step's clock stops:
/// what the proxy answered itself says nothing about either version, and the few requests
/// that reach the version are too few to show safety.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub held: bool,
    /// Seconds held so far, in a row.
    pub seconds: u64,
    /// Seconds in a row the versions have served again; the hold ends at
    /// [`HOLD_RELEASE_SECONDS`].
    pub serving: u32,
}

/// Seconds in a row a held rollout must see both versions serving before its clock runs.
pub const HOLD_RELEASE_SECONDS: u32 = 5;

/// One second of evidence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Second {
    pub time_unix_s: i64,
    pub canary: Sample,
    pub baseline: Sample,
}

/// A rollout and everything it has seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: u64,
    pub plan: Plan,
    /// The version the canary is compared with (the stable version when it started).
    pub baseline: String,
    /// The sticky key of the split, fixed when the rollout started.
    pub sticky: StickyKey,
    pub started_by: String,
    pub started_unix_ms: i64,
    /// 1 for the first run, +1 per retry.
    pub attempt: u32,
    pub phase: Phase,
    /// The current step (0-based).
    pub step: usize,
    pub step_started_unix_ms: i64,
    /// Seconds observed in the current step while running.
    pub step_seconds: u64,
    pub step_canary_requests: u64,
    /// Seconds judged in this attempt.
    pub observed_seconds: u64,
    /// The newest second judged; older ones are never judged again.
    pub last_second: i64,
    /// The baseline's latency at the latency gate's quantile, in microseconds, once frozen.
    pub latency_threshold_us: Option<u64>,
    /// What a canary the plan's latency detect factor slower would show, as a ratio of slow
    /// shares (see [`LatencyThreshold`]), once frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_detect_ratio: Option<f64>,
    pub gates: Vec<Gate>,
    pub transitions: Vec<Transition>,
    /// Seconds added to the current step's time limit by resuming it after the limit.
    #[serde(default)]
    pub step_extension_seconds: u64,
    /// The current step was completed with every enforced gate shown safe (and has not been
    /// resumed since).
    #[serde(default)]
    pub step_shown_safe: bool,
    /// The current step was completed on its time limit.
    #[serde(default)]
    pub step_timed_out: bool,
    /// The rollout is paused because the step reached its time limit (a resume judges it
    /// for another limit's worth).
    #[serde(default)]
    pub paused_at_limit: bool,
    /// How the canary was promoted, once it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    #[serde(default)]
    pub hold: Hold,
    /// Requests of this attempt the proxies answered with a fallback, never judged.
    #[serde(default)]
    pub canary_fallbacks: u64,
    #[serde(default)]
    pub baseline_fallbacks: u64,
    /// The metric gate whose missing answers paused the rollout (it resumes when they come
    /// back); cleared by any other change of phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data_pause: Option<String>,
    /// The sample-ratio guard (absent when the plan turns it off, and in rollouts stored
    /// before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Guard>,
    /// Simulations only: roll back on one gate's own harm alone (the Bonferroni split), to
    /// measure what averaging the gates' evidence gains. Never stored.
    #[serde(skip)]
    pub(crate) harm_alone: bool,
}

impl Rollout {
    /// A new rollout at its first step. `latency` is the baseline's threshold if it is
    /// already known (else see [`Rollout::freeze_latency`]).
    pub fn start(
        id: u64,
        plan: Plan,
        baseline: &str,
        sticky: StickyKey,
        actor: &str,
        now_unix_ms: i64,
        latency: Option<LatencyThreshold>,
    ) -> (Rollout, Vec<Effect>) {
        let mut r = Rollout {
            id,
            gates: gates_of(&plan),
            plan,
            baseline: baseline.to_string(),
            sticky,
            started_by: actor.to_string(),
            started_unix_ms: now_unix_ms,
            attempt: 1,
            phase: Phase::Running,
            step: 0,
            step_started_unix_ms: now_unix_ms,
            step_seconds: 0,
            step_canary_requests: 0,
            observed_seconds: 0,
            last_second: now_unix_ms.div_euclid(1000),
            latency_threshold_us: None,
            latency_detect_ratio: None,
            transitions: Vec::new(),
            step_extension_seconds: 0,
            step_shown_safe: false,
            step_timed_out: false,
            paused_at_limit: false,
            promotion: None,
            hold: Hold::default(),
            canary_fallbacks: 0,
            baseline_fallbacks: 0,
            no_data_pause: None,
            guard: None,
            harm_alone: false,
        };
        r.guard = guard_of(&r.plan);
        r.arm_metrics(now_unix_ms);
        r.freeze_latency(latency);
        let reason = format!(
            "started: {} against {} through {}",
            r.plan.canary,
            r.baseline,
            r.plan
                .steps
                .iter()
                .map(|s| percent(s.weight))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut effects = vec![Effect::SetWeight(r.plan.steps[0].weight)];
        r.transition(
            "new",
            Phase::Running,
            actor,
            now_unix_ms,
            reason,
            &mut effects,
        );
        (r, effects)
    }

    /// Sets the latency gate's threshold (and the ratio its safe side tests against) once;
    /// later calls change nothing.
    pub fn freeze_latency(&mut self, latency: Option<LatencyThreshold>) {
        if self.latency_threshold_us.is_none()
            && let Some(t) = latency
        {
            self.latency_threshold_us = Some(t.threshold_us.max(1));
            self.latency_detect_ratio = t.detect_ratio.filter(|r| r.is_finite() && *r > 0.0);
            for g in &mut self.gates {
                if g.kind == GateKind::Latency {
                    g.set_detect(self.latency_detect_ratio);
                    if g.verdict == Verdict::Waiting {
                        g.verdict = Verdict::Undecided;
                    }
                }
            }
        }
    }

    /// The current step's time limit in observed seconds, with what resumes added.
    pub fn step_limit_seconds(&self) -> u64 {
        u64::from(self.plan.steps[self.step].max_seconds) + self.step_extension_seconds
    }

    fn last_step(&self) -> bool {
        self.step + 1 >= self.plan.steps.len()
    }

    /// The canary's weight now, in basis points.
    pub fn weight(&self) -> u32 {
        match self.phase {
            Phase::Promoted => 10_000,
            Phase::RolledBack { .. } | Phase::Aborted { .. } => 0,
            _ => self.plan.steps[self.step].weight,
        }
    }

    /// Judges one second. Seconds at or before the last one judged are ignored.
    pub fn observe(&mut self, second: &Second, now_unix_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.phase.is_done() || second.time_unix_s <= self.last_second {
            return effects;
        }
        self.last_second = second.time_unix_s;
        self.observed_seconds += 1;
        self.canary_fallbacks += second.canary.refused;
        self.baseline_fallbacks += second.baseline.refused;
        let frozen = self.latency_threshold_us.is_some();
        let warming_up = self.observed_seconds <= u64::from(self.plan.warmup_seconds);
        // The guard first: while the split is shown not to be what the step says, no gate's
        // verdict is trusted, so none judges.
        if !warming_up
            && let Some(g) = &mut self.guard
            && let Some(reason) = g.observe(second.canary.fresh, second.baseline.fresh)
        {
            let acting = g.mode == Mode::Enforce;
            let pausing = acting
                && matches!(
                    self.phase,
                    Phase::Running | Phase::AwaitingApproval | Phase::Confirming
                );
            let (phase, reason) = match (pausing, acting) {
                (true, _) => (
                    Phase::Paused {
                        reason: reason.clone(),
                    },
                    reason,
                ),
                (false, true) => (self.phase.clone(), reason),
                (false, false) => (
                    self.phase.clone(),
                    format!("{reason} (dry run: nothing done)"),
                ),
            };
            self.transition_now(phase, AUTOMATIC, now_unix_ms, reason, &mut effects);
        }
        if self.guard.as_ref().is_some_and(Guard::blocks) {
            return effects;
        }
        let events = &self.plan.gates.events;
        for g in self.gates.iter_mut().filter(|_| !warming_up) {
            let event = g
                .event
                .as_ref()
                .and_then(|e| events.iter().position(|p| p.event == e.name));
            let pick = |s: &Sample| match g.kind {
                GateKind::Errors | GateKind::Ceiling => Some(Tally::new(s.requests, s.errors)),
                GateKind::Latency => Some(Tally::new(s.requests, s.slow)),
                GateKind::Event => event.map(|i| Tally::new(s.requests, s.events[i])),
                // Judged per interval, from Prometheus (see `observe_metric`).
                GateKind::Metric => None,
            };
            if g.kind == GateKind::Latency && !frozen {
                g.verdict = Verdict::Waiting;
                continue;
            }
            if let (Some(c), Some(b)) = (pick(&second.canary), pick(&second.baseline)) {
                g.observe(c, b);
            }
        }

        if self.roll_back_on_harm(now_unix_ms, &mut effects) {
            return effects;
        }
        if self.phase != Phase::Running {
            return effects;
        }
        if self.held(second, now_unix_ms, &mut effects) {
            return effects;
        }
        self.step_seconds += 1;
        self.step_canary_requests += second.canary.requests;
        let step = &self.plan.steps[self.step];
        let minimums = self.step_seconds >= u64::from(step.min_seconds)
            && self.step_canary_requests >= step.min_requests;
        let enforced = || self.gates.iter().filter(|g| g.mode == Mode::Enforce);
        if minimums && enforced().all(|g| g.verdict == Verdict::Safe) {
            let why = format!(
                "every gate shown safe after {} canary requests in {} s",
                self.step_canary_requests, self.step_seconds
            );
            self.step_shown_safe = true;
            self.complete_step(why, AUTOMATIC, now_unix_ms, &mut effects);
        } else if self.step_seconds >= self.step_limit_seconds() {
            let pending: Vec<String> = enforced()
                .filter(|g| g.verdict != Verdict::Safe)
                .map(Gate::title)
                .collect();
            let why = format!(
                "time limit of {} s reached without harm shown ({} not yet shown safe{})",
                self.step_limit_seconds(),
                if pending.is_empty() {
                    "nothing".to_string()
                } else {
                    pending.join(", ")
                },
                if minimums { "" } else { "; minimums not met" }
            );
            match self.plan.on_timeout(self.step) {
                // A plan stored before the last step could only pause or promote did this.
                OnTimeout::Advance | OnTimeout::Promote if self.last_step() => {
                    let why = format!("{why}; the plan says promote on time");
                    self.step_timed_out = true;
                    self.complete_step(why, AUTOMATIC, now_unix_ms, &mut effects);
                }
                OnTimeout::Advance | OnTimeout::Promote => {
                    self.step_timed_out = true;
                    self.complete_step(why, AUTOMATIC, now_unix_ms, &mut effects)
                }
                OnTimeout::Pause => {
                    let missing = self.missing_evidence();
                    let what = if self.last_step() {
                        "a promotion needs every gate shown safe"
                    } else {
                        "the plan says pause"
                    };
                    let reason = format!(
                        "{why}; {what}: {missing}; resume to judge for another {} s, or promote",
                        step.max_seconds
                    );
                    let phase = Phase::Paused {
                        reason: reason.clone(),
                    };
                    self.paused_at_limit = true;
                    self.transition_now(phase, AUTOMATIC, now_unix_ms, reason, &mut effects);
                }
                OnTimeout::Rollback => {
                    let reason = format!("{why}; the plan says roll back");
                    effects.push(Effect::RollBack);
                    let phase = Phase::RolledBack {
                        reason: reason.clone(),
                    };
                    self.transition_now(phase, AUTOMATIC, now_unix_ms, reason, &mut effects);
                }
            }
        }
        effects
    }

    /// `ln` of the enforced gates' harm evidence averaged: the rollout's own e-process.
    ///
    /// Each gate's harm evidence is at most a test supermartingale under that gate's null
    /// (the smaller of two, for a gate with a margin, is at most the one whose null holds),
    /// and all are adapted to the same seconds, so their mean is one too when no gate is
    /// worse than tolerated, however the gates' metrics move together. By Ville's inequality
    /// it reaches `1/α` with probability at most α, ever. One gate at its share `α/k` brings
    /// the mean there by itself, so this rolls back no later than a Bonferroni split would,
    /// and sooner when several gates see the harm at once.
    pub fn harm_log_e(&self) -> f64 {
        let harms: Vec<f64> = self
            .gates
            .iter()
            .filter(|g| g.mode == Mode::Enforce)
            .map(Gate::harm_log_e)
            .collect();
        let max = harms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return 0.0;
        }
        let sum: f64 = harms.iter().map(|h| (h - max).exp()).sum();
        max + (sum / harms.len() as f64).ln()
    }

    /// `ln` of what [`Rollout::harm_log_e`] must reach: `1/α`.
    pub fn harm_threshold(&self) -> f64 {
        (1.0 / self.plan.alpha).ln()
    }

    /// Rolls back if an enforced gate has shown harm, or the gates together have.
    fn roll_back_on_harm(&mut self, now: i64, effects: &mut Vec<Effect>) -> bool {
        let enforced = || self.gates.iter().filter(|g| g.mode == Mode::Enforce);
        let reason = if let Some(g) = enforced().find(|g| g.verdict == Verdict::Harm) {
            format!("{}: harm shown: {}", g.title(), evidence_words(g))
        } else if !self.harm_alone
            && enforced().count() > 1
            // The mean is at most the largest gate's evidence: mixtures are computed only
            // once one gate could have reached the threshold by itself.
            && enforced().any(|g| g.harm_bound_log_e() >= self.harm_threshold())
            && self.harm_log_e() >= self.harm_threshold()
        {
            self.together_words()
        } else {
            return false;
        };
        let phase = Phase::RolledBack {
            reason: reason.clone(),
        };
        effects.push(Effect::RollBack);
        self.transition_now(phase, AUTOMATIC, now, reason, effects);
        true
    }

    /// Why the gates together roll back: the gates that carry the evidence first (a tenth
    /// of it or more), then each gate with any, with its figures.
    fn together_words(&self) -> String {
        let log10 = |ln: f64| ln / std::f64::consts::LN_10;
        let mut gates: Vec<(&Gate, f64)> = self
            .gates
            .iter()
            .filter(|g| g.mode == Mode::Enforce)
            .map(|g| (g, g.harm_log_e()))
            .filter(|(_, h)| *h > 0.0)
            .collect();
        gates.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top = gates.first().map_or(0.0, |(_, h)| *h);
        let sum: f64 = gates.iter().map(|(_, h)| (h - top).exp()).sum();
        let carrying: Vec<String> = gates
            .iter()
            .filter(|(_, h)| (h - top).exp() >= 0.1 * sum)
            .map(|(g, _)| g.title())
            .collect();
        let each: Vec<String> = gates
            .iter()
            .map(|(g, _)| format!("{}: {}", g.title(), evidence_words(g)))
            .collect();
        let alone = self
            .gates
            .iter()
            .find(|g| g.mode == Mode::Enforce)
            .map_or(0.0, |g| g.summary().threshold_log10);
        format!(
            "{}: harm shown by the gates together: their evidence averaged reached 10^{:.1} of \
             10^{:.1} needed (one gate alone needs 10^{alone:.1}); {}",
            carrying.join(" and "),
            log10(self.harm_log_e()),
            log10(self.harm_threshold()),
            each.join("; ")
        )
    }

    /// The plan's definition of metric gate `gate` (an index into `gates`).
    pub fn metric_gate(&self, gate: usize) -> Option<&crate::plan::MetricGate> {
        let name = &self.gates.get(gate)?.metric.as_ref()?.name;
        self.plan.gates.metrics.iter().find(|g| g.name == *name)
    }

    /// The metric gates' intervals due at `now` (see [`crate::gate::MetricState::due`]): the
    /// gate's index and the interval's end.
    pub fn metrics_due(&self, now_unix_s: i64, settle: i64) -> Vec<(usize, i64)> {
        if self.phase.is_done() {
            return Vec::new();
        }
        self.gates
            .iter()
            .enumerate()
            .filter_map(|(i, g)| Some((i, g.metric.as_ref()?.due(now_unix_s, settle)?)))
            .collect()
    }

    /// Judges one interval of metric gate `gate` (an index into `gates`), ending at
    /// `end_unix_s`: both versions' readings, or why there is no evidence. An interval at or
    /// before the gate's last is ignored. A gate without answers for its `no_data_seconds`
    /// pauses a running rollout; its answers coming back resume the rollout it paused.
    pub fn observe_metric(
        &mut self,
        gate: usize,
        end_unix_s: i64,
        readings: Result<(Reading, Reading), String>,
        now_unix_ms: i64,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.phase.is_done() {
            return effects;
        }
        let Some(g) = self.gates.get_mut(gate) else {
            return effects;
        };
        let Some(m) = g.metric.as_deref_mut() else {
            return effects;
        };
        if end_unix_s <= m.last_end_unix_s {
            return effects;
        }
        m.last_end_unix_s = end_unix_s;
        match readings {
            Ok((canary, baseline)) => {
                let silent = m.without_data(end_unix_s) - i64::from(m.interval_seconds);
                m.last_data_unix_s = end_unix_s;
                g.observe_metric(canary, baseline);
                if self.roll_back_on_harm(now_unix_ms, &mut effects) {
                    return effects;
                }
                let title = self.gates[gate].title();
                if self.no_data_pause.as_deref() == Some(title.as_str()) {
                    let reason = format!(
                        "{title} has answers again after {silent} s without: the rollout goes \
                         on at step {}",
                        self.step + 1
                    );
                    effects.push(Effect::SetWeight(self.weight()));
                    self.step_shown_safe = false;
                    self.transition_now(
                        Phase::Running,
                        AUTOMATIC,
                        now_unix_ms,
                        reason,
                        &mut effects,
                    );
                }
            }
            Err(problem) => {
                g.no_data(problem.clone());
                let m = g.metric.as_deref().expect("a metric gate");
                let silent = m.without_data(end_unix_s);
                if self.phase == Phase::Running && silent >= i64::from(m.no_data_seconds) {
                    let title = g.title();
                    let reason = format!(
                        "{title} has had no answer for {silent} s (limit {} s; last: \
                         {problem}): no evidence either way, so the rollout pauses at step \
                         {} and goes on by itself once answers come back",
                        m.no_data_seconds,
                        self.step + 1
                    );
                    let phase = Phase::Paused {
                        reason: reason.clone(),
                    };
                    self.transition_now(phase, AUTOMATIC, now_unix_ms, reason, &mut effects);
                    self.no_data_pause = Some(title);
                }
            }
        }
        effects
    }

    /// Whether this second is held (see [`Hold`]): noted when a hold begins and ends, paused
    /// when it outlasts the step's time limit.
    fn held(&mut self, second: &Second, now: i64, effects: &mut Vec<Effect>) -> bool {
        let (c, b) = (&second.canary, &second.baseline);
        let refused = c.mostly_refused() || b.mostly_refused();
        if !refused {
            if !self.hold.held {
                return false;
            }
            self.hold.serving += 1;
            if self.hold.serving < HOLD_RELEASE_SECONDS {
                return true;
            }
            // This second, the fifth serving, counts towards the step again.
            let reason = format!(
                "serving again after {} s held: the step's clock runs again",
                self.hold.seconds + u64::from(self.hold.serving) - 1
            );
            self.hold = Hold::default();
            self.transition_now(self.phase.clone(), AUTOMATIC, now, reason, effects);
            return false;
        }
        self.hold.serving = 0;
        self.hold.seconds += 1;
        let who = match (c.mostly_refused(), b.mostly_refused()) {
            (true, true) => "both versions' own protection",
            (true, false) => "the canary's own protection",
            _ => "the baseline's own protection",
        };
        if !self.hold.held {
            self.hold.held = true;
            let reason = format!(
                "holding step {}: {who} (breaker open or concurrency limit reached) answered most \
                 requests this second (canary {} of {}, baseline {} of {}); those answers are no \
                 evidence either way, so the step's clock stops until both serve again",
                self.step + 1,
                c.refused,
                c.refused + c.requests,
                b.refused,
                b.refused + b.requests,
            );
            self.transition_now(self.phase.clone(), AUTOMATIC, now, reason, effects);
        }
        let limit = u64::from(self.plan.steps[self.step].max_seconds);
        if self.hold.seconds >= limit {
            let reason = format!(
                "{who} has answered most requests for {} s (fallbacks so far: canary {}, \
                 baseline {}); there is nothing to judge the canary by. Resume once it serves \
                 again",
                self.hold.seconds, self.canary_fallbacks, self.baseline_fallbacks
            );
            self.hold = Hold::default();
            let phase = Phase::Paused {
                reason: reason.clone(),
            };
            self.transition_now(phase, AUTOMATIC, now, reason, effects);
        }
        true
    }

    /// What evidence the current step still lacks and how long it would take at the step's
    /// traffic so far, in words.
    pub fn missing_evidence(&self) -> String {
        let seconds = self.step_seconds.max(1);
        let pending: Vec<String> = self
            .gates
            .iter()
            .filter(|g| g.mode == Mode::Enforce && g.verdict != Verdict::Safe)
            .map(|g| {
                if let Some(m) = &g.metric {
                    let s = g.summary();
                    return format!(
                        "{} is not yet shown safe after {} intervals of {} s ({} without an \
                         answer; safety evidence 10^{:.1} of 10^{:.1})",
                        g.title(),
                        m.intervals,
                        m.interval_seconds,
                        m.missing,
                        s.safe_log10,
                        s.safe_threshold_log10
                    );
                }
                if g.verdict == Verdict::Waiting {
                    return format!(
                        "{} waits for enough of the baseline's requests to freeze its threshold",
                        g.kind.name()
                    );
                }
                let needed = estimate::remaining(g, seconds);
                let canary_rps = g.step_canary.requests as f64 / seconds as f64;
                let traffic = format!(
                    "{:.1} canary requests/s, baseline {} {}",
                    canary_rps,
                    g.kind.events(),
                    rate_percent(g.step_baseline.rate())
                );
                match needed {
                    Some(s) if s <= f64::from(crate::plan::MAX_STEP_SECONDS) => format!(
                        "{} needs about {} more at this step's traffic ({traffic})",
                        g.kind.name(),
                        duration_words(s)
                    ),
                    _ => format!(
                        "{} cannot be shown safe within a day at this step's traffic ({traffic})",
                        g.kind.name()
                    ),
                }
            })
            .collect();
        if pending.is_empty() {
            "every gate is shown safe; the step's minimums are not met".into()
        } else {
            pending.join("; ")
        }
    }

    /// Applies an operator's control (or the server's, for webhooks and outside changes).
    pub fn control(
        &mut self,
        control: Control,
        actor: &str,
        now_unix_ms: i64,
    ) -> Result<Vec<Effect>, NotNow> {
        let mut effects = Vec::new();
        let by = |what: &str| format!("{what} by {actor}");
        let phase = self.phase.clone();
        match (control, &phase) {
            (Control::Retry, Phase::RolledBack { .. } | Phase::Aborted { .. }) => {
                self.attempt += 1;
                self.gates = gates_of(&self.plan);
                self.guard = guard_of(&self.plan);
                self.arm_metrics(now_unix_ms);
                let threshold = self.latency_threshold_us.take();
                let detect_ratio = self.latency_detect_ratio.take();
                self.freeze_latency(threshold.map(|threshold_us| LatencyThreshold {
                    threshold_us,
                    detect_ratio,
                }));
                self.observed_seconds = 0;
                self.canary_fallbacks = 0;
                self.baseline_fallbacks = 0;
                self.enter_step(0, now_unix_ms);
                effects.push(Effect::SetWeight(self.weight()));
                let reason = format!(
                    "{}: attempt {} from the first step with new evidence",
                    by("retried"),
                    self.attempt
                );
                self.transition_now(Phase::Running, actor, now_unix_ms, reason, &mut effects);
            }
            (c, p) if p.is_done() => {
                return Err(NotNow(format!(
                    "cannot {} rollout {}: it is {}{}",
                    c.name(),
                    self.id,
                    p.name().replace('_', " "),
                    if matches!(p, Phase::Promoted) {
                        ""
                    } else {
                        "; retry starts it again"
                    }
                )));
            }
            (Control::Retry, p) => {
                return Err(NotNow(format!(
                    "cannot retry rollout {}: it is {}, not rolled back or aborted",
                    self.id,
                    p.name().replace('_', " ")
                )));
            }
            (Control::Pause, Phase::Running | Phase::AwaitingApproval | Phase::Confirming) => {
                let reason = by("paused");
                let phase = Phase::Paused {
                    reason: reason.clone(),
                };
                self.transition_now(phase, actor, now_unix_ms, reason, &mut effects);
            }
            // Paused for a metric's missing answers: a person's pause stays when they return.
            (Control::Pause, Phase::Paused { .. }) if self.no_data_pause.is_some() => {
                let reason = by("paused");
                let phase = Phase::Paused {
                    reason: reason.clone(),
                };
                self.transition_now(phase, actor, now_unix_ms, reason, &mut effects);
            }
            (Control::ExternalChange { reason }, Phase::Paused { .. }) => {
                // Already holding; say why again.
                let phase = Phase::Paused {
                    reason: reason.clone(),
                };
                self.transition_now(phase, actor, now_unix_ms, reason, &mut effects);
            }
            (Control::ExternalChange { reason }, _) => {
                let phase = Phase::Paused {
                    reason: reason.clone(),
                };
                self.transition_now(phase, actor, now_unix_ms, reason, &mut effects);
            }
            (Control::Resume, Phase::Paused { .. }) => {
                // Re-apply the step: whatever changed the service meanwhile is overridden.
                effects.push(Effect::SetWeight(self.weight()));
                // The guard starts over: whoever resumes says the cause is mended.
                let weight = self.weight();
                if let Some(g) = &mut self.guard {
                    g.restart(weight);
                }
                // Metric gates without answers get their whole no-data time again.
                for m in self
                    .gates
                    .iter_mut()
                    .filter_map(|g| g.metric.as_deref_mut())
                {
                    m.last_data_unix_s = m.last_data_unix_s.max(now_unix_ms.div_euclid(1000));
                }
                let mut reason = format!("{}: step {} again", by("resumed"), self.step + 1);
                // Safety is shown afresh after a pause.
                self.step_shown_safe = false;
                if std::mem::take(&mut self.paused_at_limit)
                    && self.step_seconds >= self.step_limit_seconds()
                {
                    // Paused at the limit: judge for another limit's worth from now.
                    let more = u64::from(self.plan.steps[self.step].max_seconds);
                    self.step_extension_seconds = self.step_seconds;
                    reason.push_str(&format!(", judged for up to another {more} s"));
                }
                self.transition_now(Phase::Running, actor, now_unix_ms, reason, &mut effects);
            }
            (Control::Approve, Phase::AwaitingApproval) => {
                let why = by("approved");
                self.advance_or_ask(why, actor, now_unix_ms, &mut effects);
            }
            (Control::Skip, _) => {
                let why = by("skipped");
                self.advance(why, actor, now_unix_ms, &mut effects);
            }
            (Control::Promote, _) => {
                effects.push(Effect::Promote);
                let promotion = if self.last_step() && self.step_shown_safe {
                    Promotion::Evidence
                } else {
                    Promotion::Person
                };
                self.promotion = Some(promotion);
                let mut reason = by("promoted");
                if !promotion.earned() {
                    reason.push_str(" without safety shown");
                }
                self.transition_now(Phase::Promoted, actor, now_unix_ms, reason, &mut effects);
            }
            (Control::Abort, _) => {
                effects.push(Effect::RollBack);
                let reason = by("aborted");
                let phase = Phase::Aborted {
                    reason: reason.clone(),
                };
                self.transition_now(phase, actor, now_unix_ms, reason, &mut effects);
            }
            (Control::Confirm, Phase::Confirming) => {
                self.advance(
                    "the asking webhooks agreed".into(),
                    actor,
                    now_unix_ms,
                    &mut effects,
                );
            }
            (Control::Deny { reason }, Phase::Confirming) => {
                let phase = Phase::Paused {
                    reason: reason.clone(),
                };
                self.transition_now(phase, actor, now_unix_ms, reason, &mut effects);
            }
            (c, p) => {
                let now = match p {
                    Phase::Running => format!("running step {}", self.step + 1),
                    other => other.name().replace('_', " "),
                };
                let hint = match c {
                    Control::Approve => "; nothing awaits approval",
                    Control::Resume => "; only a paused rollout resumes",
                    Control::Pause => "; it is already paused",
                    _ => "",
                };
                return Err(NotNow(format!(
                    "cannot {} rollout {}: it is {now}{hint}",
                    c.name(),
                    self.id
                )));
            }
        }
        Ok(effects)
    }

    /// Records something that happened without a change of phase (a failed write, a frozen
    /// threshold), so it is part of the rollout's story and reaches the webhooks.
    pub fn note(&mut self, actor: &str, now_unix_ms: i64, reason: String) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.transition_now(self.phase.clone(), actor, now_unix_ms, reason, &mut effects);
        effects
    }

    fn complete_step(&mut self, why: String, actor: &str, now: i64, effects: &mut Vec<Effect>) {
        if self.plan.steps[self.step].approval {
            let reason = format!(
                "step {} ({}) done: {why}; waiting for approval",
                self.step + 1,
                percent(self.weight())
            );
            self.transition_now(Phase::AwaitingApproval, actor, now, reason, effects);
        } else {
            self.advance_or_ask(why, actor, now, effects);
        }
    }

    fn advance_or_ask(&mut self, why: String, actor: &str, now: i64, effects: &mut Vec<Effect>) {
        if self.plan.webhooks.iter().any(|w| w.ask) {
            effects.push(Effect::Ask);
            let reason = format!("step {} done: {why}; asking the webhooks", self.step + 1);
            self.transition_now(Phase::Confirming, actor, now, reason, effects);
        } else {
            self.advance(why, actor, now, effects);
        }
    }

    /// To the next step, or the promotion after the last.
    fn advance(&mut self, why: String, actor: &str, now: i64, effects: &mut Vec<Effect>) {
        let done = format!(
            "step {} ({}) done: {why}",
            self.step + 1,
            percent(self.weight())
        );
        if self.last_step() {
            effects.push(Effect::Promote);
            // A person decides when they approve, skip or promote; the rollout itself (or the
            // asking webhooks agreeing with it) on the time limit.
            let automatic = actor == AUTOMATIC || actor == WEBHOOKS;
            let promotion = if self.step_shown_safe {
                Promotion::Evidence
            } else if automatic && (self.step_timed_out || actor == AUTOMATIC) {
                Promotion::TimeLimit
            } else {
                Promotion::Person
            };
            self.promotion = Some(promotion);
            let reason = if promotion.earned() {
                format!("{done}; promoted")
            } else {
                format!("{done}; promoted without safety shown")
            };
            self.transition_now(Phase::Promoted, actor, now, reason, effects);
        } else {
            self.enter_step(self.step + 1, now);
            effects.push(Effect::SetWeight(self.weight()));
            let reason = format!(
                "{done}; step {} at {}",
                self.step + 1,
                percent(self.weight())
            );
            self.transition_now(Phase::Running, actor, now, reason, effects);
        }
    }

    /// Arms the metric gates at `now` (a start or a retry): their first intervals begin
    /// after the warm-up.
    fn arm_metrics(&mut self, now_unix_ms: i64) {
        let now = now_unix_ms.div_euclid(1000);
        for m in self
            .gates
            .iter_mut()
            .filter_map(|g| g.metric.as_deref_mut())
        {
            m.arm(now, self.plan.warmup_seconds);
        }
    }

    fn enter_step(&mut self, step: usize, now: i64) {
        self.step = step;
        self.step_started_unix_ms = now;
        self.step_seconds = 0;
        self.step_canary_requests = 0;
        self.step_extension_seconds = 0;
        self.step_shown_safe = false;
        self.step_timed_out = false;
        self.paused_at_limit = false;
        self.hold = Hold::default();
        for g in &mut self.gates {
            g.start_step();
        }
        let weight = self.weight();
        if let Some(g) = &mut self.guard {
            g.restart(weight);
        }
    }

    fn transition_now(
        &mut self,
        to: Phase,
        actor: &str,
        now: i64,
        reason: String,
        effects: &mut Vec<Effect>,
    ) {
        let from = self.phase.name();
        self.transition(from, to, actor, now, reason, effects);
    }

    fn transition(
        &mut self,
        from: &str,
        to: Phase,
        actor: &str,
        now: i64,
        reason: String,
        effects: &mut Vec<Effect>,
    ) {
        if to != self.phase {
            self.no_data_pause = None;
        }
        self.phase = to;
        let t = Transition {
            seq: self.transitions.len() as u32 + 1,
            time_unix_ms: now,
            from: from.to_string(),
            to: self.phase.name().to_string(),
            step: self.step,
            weight: self.weight(),
            actor: actor.to_string(),
            reason,
        };
        self.transitions.push(t.clone());
        effects.push(Effect::Notify(t));
    }
}

/// The plan's sample-ratio guard, at its first step's weight.
fn guard_of(plan: &Plan) -> Option<Guard> {
    let first = plan.steps.first().map_or(0, |s| s.weight);
    plan.gates
        .sample_ratio
        .as_ref()
        .map(|g| Guard::new(g, plan.alpha, plan.steps.len(), first))
}

/// The plan's gates. Each shows harm alone at its share of α, and safety at the whole α.
fn gates_of(plan: &Plan) -> Vec<Gate> {
    let alpha = plan.alpha / plan.enforced_gates().max(1) as f64;
    let mut gates = Vec::new();
    if let Some(g) = &plan.gates.errors {
        let increase = f64::from(g.min_increase_bp) / 10_000.0;
        gates.push(Gate::ratio(
            GateKind::Errors,
            g.mode,
            alpha,
            g.tolerated_ratio,
            increase,
            plan.detect_errors(),
        ));
    }
    if let Some(g) = &plan.gates.latency {
        let increase = f64::from(g.min_increase_bp) / 10_000.0;
        // Its detect ratio comes with the frozen threshold.
        let mut gate = Gate::ratio(
            GateKind::Latency,
            g.mode,
            alpha,
            g.tolerated_ratio,
            increase,
            None,
        );
        gate.verdict = Verdict::Waiting;
        gates.push(gate);
    }
    if let Some(g) = &plan.gates.ceiling {
        let ceiling = f64::from(g.max_error_rate_bp) / 10_000.0;
        gates.push(Gate::ceiling(g.mode, alpha, ceiling));
    }
    for g in &plan.gates.metrics {
        // Armed by the caller, who knows the time.
        gates.push(Gate::metric(g, alpha));
    }
    for g in &plan.gates.events {
        gates.push(Gate::event(g, alpha));
    }
    gates
        .into_iter()
        .map(|g| g.with_safe_alpha(plan.alpha))
        .collect()
}

/// Basis points as a percentage: `500` → `5 %`, `1250` → `12.5 %`.
pub fn percent(bp: u32) -> String {
    let mut s = format!("{}", bp / 100);
    if !bp.is_multiple_of(100) {
        let _ = write!(s, ".{:02}", bp % 100);
        while s.ends_with('0') {
            s.pop();
        }
    }
    s.push_str(" %");
    s
}

/// Seconds in words: `45 s`, `12 min`, `2.5 h`.
pub fn duration_words(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{:.0} s", seconds.ceil())
    } else if seconds < 7200.0 {
        format!("{:.0} min", (seconds / 60.0).ceil())
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// A rate as a percentage with sensible precision.
pub fn rate_percent(rate: f64) -> String {
    let p = rate * 100.0;
    if p == 0.0 {
        "0 %".into()
    } else if p < 0.1 {
        format!("{p:.3} %")
    } else if p < 10.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

/// The evidence of a gate in one sentence.
pub fn evidence_words(g: &Gate) -> String {
    let s = g.summary();
    if let Some(m) = &g.metric {
        return metric_words(g, m, &s);
    }
    let what = match &g.event {
        Some(e) => format!("`{}`", e.name),
        None => g.kind.events().to_string(),
    };
    let canary = format!(
        "canary {what} {} ({} of {} requests, interval {} to {})",
        rate_percent(s.canary_rate),
        g.canary.events,
        g.canary.requests,
        rate_percent(s.canary_interval.0),
        rate_percent(s.canary_interval.1),
    );
    let against = match g.kind {
        GateKind::Ceiling => format!("the ceiling of {}", rate_percent(s.limit_rate)),
        _ if g.event.as_ref().is_some_and(|e| e.good) => format!(
            "baseline {} ({} of {}); harm is below {}",
            rate_percent(s.baseline_rate),
            g.baseline.events,
            g.baseline.requests,
            rate_percent(s.limit_rate)
        ),
        _ => format!(
            "baseline {} ({} of {}); tolerated up to {}",
            rate_percent(s.baseline_rate),
            g.baseline.events,
            g.baseline.requests,
            rate_percent(s.limit_rate)
        ),
    };
    format!(
        "{canary} against {against}; {}",
        evidence_needed(s.harm_log10, s.threshold_log10)
    )
}

/// "evidence 10^x of 10^y needed", with a second decimal where one would show a shortfall
/// as the threshold itself.
pub fn evidence_needed(have_log10: f64, need_log10: f64) -> String {
    if have_log10 < need_log10 && format!("{have_log10:.1}") == format!("{need_log10:.1}") {
        format!("evidence 10^{have_log10:.2} of 10^{need_log10:.2} needed")
    } else {
        format!("evidence 10^{have_log10:.1} of 10^{need_log10:.1} needed")
    }
}

fn metric_words(g: &Gate, m: &crate::gate::MetricState, s: &crate::GateSummary) -> String {
    let evidence = evidence_needed(s.harm_log10, s.threshold_log10);
    let way = if m.kind.good() { "below" } else { "above" };
    if m.kind.counts() {
        format!(
            "canary {} ({} of {}, interval {} to {}) against baseline {} ({} of {}) over {} \
             intervals of {} s; harm is {way} {}; {evidence}",
            rate_percent(s.canary_rate),
            g.canary.events,
            g.canary.requests,
            rate_percent(s.canary_interval.0),
            rate_percent(s.canary_interval.1),
            rate_percent(s.baseline_rate),
            g.baseline.events,
            g.baseline.requests,
            m.intervals,
            m.interval_seconds,
            rate_percent(s.limit_rate),
        )
    } else {
        let n = m.intervals.max(1) as f64;
        let (op, limit) = if m.kind.good() {
            ("below", format!("the baseline's / {}", m.tolerated_ratio))
        } else {
            ("above", format!("{} × the baseline's", m.tolerated_ratio))
        };
        let difference = if m.min_difference > 0.0 {
            format!(" by more than {}", m.min_difference)
        } else {
            String::new()
        };
        format!(
            "canary {op} {limit}{difference} in {} of {} intervals of {} s (mean {:.4} against \
             the baseline's {:.4}); harm is more than half; {evidence}",
            g.canary.events,
            g.canary.requests,
            m.interval_seconds,
            m.canary_sum / n,
            m.baseline_sum / n,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RolloutView;
    use crate::plan::{Step, Webhook};

    const T0: i64 = 1_700_000_000_000;

    fn plan(weights: &[u32]) -> Plan {
        let mut p = Plan::through("shop", "v2", weights);
        p.warmup_seconds = 0;
        for s in &mut p.steps {
            s.min_seconds = 5;
            s.min_requests = 10;
            s.max_seconds = 30;
        }
        p
    }

    fn start(p: Plan) -> Rollout {
        let (r, effects) = Rollout::start(
            1,
            p,
            "v1",
            StickyKey::ClientIp,
            "alice",
            T0,
            Some(LatencyThreshold::at(50_000)),
        );
        assert_eq!(effects[0], Effect::SetWeight(r.plan.steps[0].weight));
        assert_eq!(r.transitions[0].actor, "alice");
        r
    }

    /// Feeds `n` seconds of the given per-second counts; returns every effect.
    fn feed(r: &mut Rollout, n: usize, canary: Sample, baseline: Sample) -> Vec<Effect> {
        let mut out = Vec::new();
        for _ in 0..n {
            let t = r.last_second + 1;
            let s = Second {
                time_unix_s: t,
                canary,
                baseline,
            };
            out.extend(r.observe(&s, t * 1000));
        }
        out
    }

    fn sample(requests: u64, errors: u64, slow: u64) -> Sample {
        Sample {
            requests,
            errors,
            slow,
            ..Sample::default()
        }
    }

    fn with_events(requests: u64, events: &[u64]) -> Sample {
        let mut s = sample(requests, 0, 0);
        s.events[..events.len()].copy_from_slice(events);
        s
    }

    fn event_plan(gates: &[(&str, crate::plan::MetricKind)]) -> Plan {
        let mut p = plan(&[1000, 5000]);
        for s in &mut p.steps {
            s.max_seconds = 600;
        }
        for (event, kind) in gates {
            p.gates.events.push(crate::plan::EventGate {
                event: event.to_string(),
                kind: *kind,
                tolerated_ratio: 1.2,
                min_difference: 0.0,
                detect: Some(1.5),
                mode: Mode::Enforce,
            });
        }
        p
    }

    #[test]
    fn gates_together_roll_back_what_no_gate_shows_alone_and_safety_takes_the_whole_alpha() {
        use crate::plan::MetricKind::{BadEvents, GoodEvents};
        let gates = [("declined", BadEvents), ("paid", GoodEvents)];
        let p = event_plan(&gates);
        assert_eq!(p.enforced_gates(), 4);
        let r = start(p.clone());
        for s in RolloutView::of(&r, 0).summaries {
            assert!((s.threshold_log10 - 400f64.log10()).abs() < 1e-9, "{s:?}");
            assert!((s.safe_threshold_log10 - 2.0).abs() < 1e-9, "{s:?}");
        }
        // A checkout bug: more declines and fewer payments, each about as bad as the other.
        let (canary, baseline) = (with_events(200, &[15, 45]), with_events(200, &[10, 60]));
        let mut together = start(p.clone());
        let mut alone = start(p);
        alone.harm_alone = true;
        feed(&mut together, 600, canary, baseline);
        feed(&mut alone, 600, canary, baseline);
        assert!(matches!(together.phase, Phase::RolledBack { .. }));
        assert!(matches!(alone.phase, Phase::RolledBack { .. }));
        assert!(
            together.gates.iter().all(|g| g.verdict != Verdict::Harm),
            "no gate alone had shown harm: {:?} after {} s",
            together.transitions.last(),
            together.observed_seconds
        );
        let why = &together.transitions.last().unwrap().reason;
        assert!(
            why.starts_with("event declined and event paid: harm shown by the gates together"),
            "{why}"
        );
        let view = RolloutView::of(&together, 0);
        assert!(view.harm_log10 >= view.harm_threshold_log10 && view.harm_threshold_log10 == 2.0);
        assert!(
            together.observed_seconds < alone.observed_seconds,
            "averaged {} s, alone {} s",
            together.observed_seconds,
            alone.observed_seconds
        );
        let why = &alone.transitions.last().unwrap().reason;
        assert!(why.contains(": harm shown: "), "{why}");
    }

    #[test]
    fn event_gates_judge_each_event_per_second_and_good_events_the_other_way() {
        use crate::plan::MetricKind::{BadEvents, GoodEvents};
        let gates = [("declined", BadEvents), ("paid", GoodEvents)];
        // Declines doubled on the canary: the `declined` gate rolls back.
        let mut r = start(event_plan(&gates));
        feed(
            &mut r,
            600,
            with_events(200, &[20, 60]),
            with_events(200, &[10, 60]),
        );
        assert!(matches!(r.phase, Phase::RolledBack { .. }), "{:?}", r.phase);
        let why = r.transitions.last().unwrap().reason.clone();
        assert!(
            why.contains("event declined") && why.contains("`declined`"),
            "{why}"
        );
        // Conversions fell by a third: fewer good events is harm.
        let mut r = start(event_plan(&gates));
        feed(
            &mut r,
            600,
            with_events(200, &[10, 40]),
            with_events(200, &[10, 60]),
        );
        assert!(matches!(r.phase, Phase::RolledBack { .. }), "{:?}", r.phase);
        assert!(r.transitions.last().unwrap().reason.contains("event paid"));
        // More conversions and as many declines: both gates are shown safe, each step.
        let mut r = start(event_plan(&gates));
        feed(
            &mut r,
            1200,
            with_events(200, &[10, 70]),
            with_events(200, &[10, 60]),
        );
        assert_eq!(r.phase, Phase::Promoted, "{:?}", r.transitions);
        assert_eq!(r.promotion, Some(Promotion::Evidence));
        let paid = r.gates.iter().find(|g| g.title() == "event paid").unwrap();
        assert!(
            paid.canary.events > paid.baseline.events,
            "the tallies keep their sides"
        );
    }

    #[test]
    fn a_skewed_split_pauses_before_any_gate_decides_and_a_resume_starts_the_guard_over() {
        let mut r = start(plan(&[1000, 5000]));
        let visitors = |s: Sample, fresh: u64| Sample { fresh, ..s };
        // Half the new visitors on a 10 % canary: the guard speaks within seconds, and the
        // gates judge nothing while the mismatch stands.
        let (c, b) = (sample(100, 2, 0), sample(100, 1, 0));
        feed(&mut r, 10, visitors(c, 50), visitors(b, 50));
        let Phase::Paused { reason } = &r.phase else {
            panic!("{:?}", r.phase)
        };
        assert!(
            reason.starts_with("sample ratio: the canary got 50.0 %"),
            "{reason}"
        );
        let judged = r.gates[0].canary.requests;
        assert!(judged < 1000, "{judged}");
        feed(
            &mut r,
            10,
            visitors(sample(100, 100, 0), 50),
            visitors(b, 50),
        );
        assert_eq!(r.gates[0].canary.requests, judged);
        assert!(matches!(r.phase, Phase::Paused { .. }), "no harm acted on");
        // Mended and resumed: the guard starts over, the gates judge again.
        r.control(Control::Resume, "ops", 0).unwrap();
        assert!(r.guard.as_ref().unwrap().mismatch.is_none());
        feed(
            &mut r,
            10,
            visitors(sample(100, 100, 0), 10),
            visitors(sample(100, 0, 0), 90),
        );
        assert!(matches!(r.phase, Phase::RolledBack { .. }), "{:?}", r.phase);
    }

    #[test]
    fn a_healthy_canary_climbs_and_is_promoted() {
        let mut r = start(plan(&[1000, 5000]));
        // Plenty of traffic and no errors or slow requests: safety is shown quickly.
        let effects = feed(&mut r, 200, sample(1000, 0, 0), sample(9000, 0, 0));
        assert!(effects.contains(&Effect::SetWeight(5000)), "{effects:?}");
        assert!(effects.contains(&Effect::Promote));
        assert_eq!(r.phase, Phase::Promoted);
        assert_eq!(r.weight(), 10_000);
        let reasons: Vec<&str> = r.transitions.iter().map(|t| t.reason.as_str()).collect();
        assert!(reasons[1].contains("every gate shown safe"), "{reasons:?}");
        // Nothing more happens once promoted.
        assert!(feed(&mut r, 5, sample(1000, 1000, 0), sample(9000, 0, 0)).is_empty());
    }

    fn conversions(kind: crate::plan::MetricKind) -> crate::plan::MetricGate {
        crate::plan::MetricGate {
            name: "checkout".into(),
            kind,
            query: "sum(increase(conversions_total{version=\"{{version}}\"}[{{interval}}]))".into(),
            exposure: kind.counts().then(|| {
                "sum(increase(sessions_total{version=\"{{version}}\"}[{{interval}}]))".into()
            }),
            interval_seconds: 5,
            tolerated_ratio: 1.1,
            min_difference: 0.0,
            detect: Some(1.5),
            no_data_seconds: 20,
            mode: Mode::Enforce,
        }
    }

    /// One long step at 50 % with the metric gate `g` besides the built-in ones.
    fn metric_plan(g: crate::plan::MetricGate) -> Plan {
        let mut p = plan(&[5000]);
        p.steps[0].max_seconds = 3600;
        p.gates.metrics.push(g);
        p
    }

    /// Feeds `n` seconds of healthy per-second traffic and, every interval, the metric
    /// gate's readings (`None`: no answer).
    fn feed_metric(
        r: &mut Rollout,
        n: usize,
        readings: impl Fn(u64) -> Option<(Reading, Reading)>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(feed(r, 1, sample(1000, 0, 0), sample(1000, 0, 0)));
            let now = r.last_second;
            for (gate, end) in r.metrics_due(now, 1) {
                let got =
                    readings(i as u64).ok_or_else(|| "Prometheus: connection refused".to_string());
                out.extend(r.observe_metric(gate, end, got, now * 1000));
                // The same interval again is never judged twice.
                let before = r.gates[gate].clone();
                assert!(
                    r.observe_metric(gate, end, got_again(), now * 1000)
                        .is_empty()
                );
                assert_eq!(r.gates[gate], before);
            }
        }
        out
    }

    fn got_again() -> Result<(Reading, Reading), String> {
        Ok((Reading::Value(1e9), Reading::Value(0.0)))
    }

    fn events(events: f64, exposures: f64) -> Reading {
        Reading::Events { events, exposures }
    }

    #[test]
    fn a_conversion_drop_is_rolled_back_by_its_metric_gate() {
        let mut r = start(metric_plan(conversions(
            crate::plan::MetricKind::GoodEvents,
        )));
        // 500 sessions an interval each; the canary converts 20 % against 30 %.
        let effects = feed_metric(&mut r, 600, |_| {
            Some((events(100.0, 500.0), events(150.0, 500.0)))
        });
        assert!(effects.contains(&Effect::RollBack), "{:?}", r.transitions);
        let reason = &r.transitions.last().unwrap().reason;
        assert!(
            reason.starts_with("metric checkout: harm shown"),
            "{reason}"
        );
        assert!(reason.contains("harm is below"), "{reason}");
    }

    #[test]
    fn a_healthy_metric_is_needed_for_the_promotion_and_earns_it() {
        let mut r = start(metric_plan(conversions(
            crate::plan::MetricKind::GoodEvents,
        )));
        // The built-in gates are safe within seconds; the metric gate decides when.
        feed_metric(&mut r, 10, |_| None);
        assert_eq!(r.phase, Phase::Running);
        assert_eq!(r.gates[0].verdict, Verdict::Safe);
        assert_eq!(r.gates[2].verdict, Verdict::Undecided);
        let missing = r.missing_evidence();
        assert!(
            missing.contains("metric checkout is not yet shown safe"),
            "{missing}"
        );
        let effects = feed_metric(&mut r, 900, |_| {
            Some((events(16.0, 50.0), events(15.0, 50.0)))
        });
        assert!(
            effects.contains(&Effect::Promote),
            "{:?}",
            r.missing_evidence()
        );
        assert_eq!(r.promotion, Some(Promotion::Evidence));
        let m = r.gates.iter().find_map(|g| g.metric.as_ref()).unwrap();
        assert!(m.intervals > 2 && m.missing == 1, "{m:?}");
    }

    #[test]
    fn a_metric_without_answers_pauses_and_goes_on_when_they_come_back() {
        let mut r = start(metric_plan(conversions(
            crate::plan::MetricKind::GoodEvents,
        )));
        feed_metric(&mut r, 12, |_| Some((events(3.0, 10.0), events(3.0, 10.0))));
        assert_eq!(r.phase, Phase::Running);
        let step_seconds = r.step_seconds;
        // No answers: evidence stops, and after 20 s the rollout pauses and says why.
        let effects = feed_metric(&mut r, 40, |_| None);
        let Phase::Paused { reason } = &r.phase else {
            panic!("{:?}", r.phase)
        };
        assert!(
            reason.contains("metric checkout has had no answer for 2"),
            "{reason}"
        );
        assert!(reason.contains("connection refused"), "{reason}");
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::Promote | Effect::RollBack))
        );
        assert!(
            r.step_seconds < step_seconds + 25,
            "the paused step's clock stops"
        );
        let m = r.gates.iter().find_map(|g| g.metric.as_ref()).unwrap();
        assert!(m.missing >= 7 && m.problem.is_some(), "{m:?}");
        // Answers again: the rollout goes on by itself.
        let effects = feed_metric(&mut r, 6, |_| Some((events(3.0, 10.0), events(3.0, 10.0))));
        assert_eq!(r.phase, Phase::Running, "{:?}", r.transitions.last());
        assert!(effects.contains(&Effect::SetWeight(5000)));
        assert!(
            r.transitions
                .last()
                .unwrap()
                .reason
                .contains("has answers again")
        );
        assert_eq!(r.no_data_pause, None);
    }

    #[test]
    fn a_person_s_pause_is_not_resumed_by_answers_coming_back() {
        let mut r = start(metric_plan(conversions(
            crate::plan::MetricKind::GoodEvents,
        )));
        feed_metric(&mut r, 30, |_| None);
        assert!(r.no_data_pause.is_some());
        let now = r.last_second * 1000;
        r.control(Control::Pause, "bob", now).unwrap();
        assert_eq!(r.no_data_pause, None);
        feed_metric(&mut r, 10, |_| {
            Some((events(150.0, 500.0), events(150.0, 500.0)))
        });
        assert!(matches!(r.phase, Phase::Paused { .. }));
    }

    #[test]
    fn a_value_gate_judges_paired_intervals() {
        let mut g = conversions(crate::plan::MetricKind::BadValue);
        g.name = "queue-lag".into();
        g.tolerated_ratio = 1.2;
        let p = metric_plan(g);
        // Deterministic noise of ±10 %.
        let noise = |i: u64| 0.9 + ((i * 7919) % 21) as f64 / 100.0;
        // A canary whose lag is half again the baseline's is rolled back.
        let mut r = start(p.clone());
        feed_metric(&mut r, 1200, |i| {
            Some((
                Reading::Value(150.0 * noise(i)),
                Reading::Value(100.0 * noise(i + 5)),
            ))
        });
        let reason = &r.transitions.last().unwrap().reason;
        assert!(matches!(r.phase, Phase::RolledBack { .. }), "{reason}");
        assert!(reason.contains("metric queue-lag: harm shown"), "{reason}");
        assert!(reason.contains("intervals of 5 s"), "{reason}");
        // One as good as the baseline is shown safe and promoted.
        let mut r = start(p);
        feed_metric(&mut r, 1200, |i| {
            Some((
                Reading::Value(100.0 * noise(i)),
                Reading::Value(100.0 * noise(i + 5)),
            ))
        });
        assert_eq!(r.phase, Phase::Promoted, "{}", r.missing_evidence());
    }

    #[test]
    fn harm_rolls_back_from_any_state() {
        for setup in [None, Some(Control::Pause)] {
            let mut p = plan(&[1000, 5000]);
            p.steps[0].approval = true;
            let mut r = start(p);
            if let Some(c) = setup {
                r.control(c, "bob", T0).unwrap();
            }
            let effects = feed(&mut r, 60, sample(100, 20, 0), sample(900, 1, 0));
            assert!(effects.contains(&Effect::RollBack), "{effects:?}");
            let Phase::RolledBack { reason } = &r.phase else {
                panic!("{:?}", r.phase)
            };
            assert!(
                reason.starts_with("error rate: harm shown: canary errors"),
                "{reason}"
            );
            assert_eq!(r.weight(), 0);
        }
        // Awaiting approval too.
        let mut r = awaiting_approval(&[1000], 60, 1000);
        feed(&mut r, 60, sample(100, 30, 0), sample(900, 1, 0));
        assert!(matches!(r.phase, Phase::RolledBack { .. }));
    }

    /// A rollout of `weights` whose first step needs approval, fed `seconds` of healthy
    /// samples of `per_second` canary requests (nine times as many for the baseline).
    fn awaiting_approval(weights: &[u32], seconds: usize, per_second: u64) -> Rollout {
        let mut p = plan(weights);
        p.steps[0].approval = true;
        let mut r = start(p);
        let (canary, baseline) = (sample(per_second, 0, 0), sample(per_second * 9, 0, 0));
        feed(&mut r, seconds, canary, baseline);
        assert_eq!(r.phase, Phase::AwaitingApproval);
        r
    }

    #[test]
    fn approval_waits_for_a_person() {
        let mut r = awaiting_approval(&[1000, 2000], 100, 1000);
        assert_eq!(r.step, 0);
        let err = r.control(Control::Resume, "bob", T0).unwrap_err();
        assert!(err.0.contains("awaiting approval"), "{err}");
        let effects = r.control(Control::Approve, "bob", T0).unwrap();
        assert!(effects.contains(&Effect::SetWeight(2000)));
        assert_eq!((r.step, &r.phase), (1, &Phase::Running));
        assert!(
            r.transitions
                .last()
                .unwrap()
                .reason
                .contains("approved by bob")
        );
        let err = r.control(Control::Approve, "bob", T0).unwrap_err();
        assert!(err.0.contains("nothing awaits approval"), "{err}");
    }

    #[test]
    fn time_limits_do_what_the_plan_says() {
        // No errors and very little traffic: neither harm nor safety within 30 s.
        let quiet = (sample(1, 0, 0), sample(9, 0, 0));
        for (on_timeout, want) in [
            (OnTimeout::Advance, "running"),
            (OnTimeout::Pause, "paused"),
            (OnTimeout::Rollback, "rolled_back"),
        ] {
            let mut p = plan(&[1000, 2000]);
            p.steps[0].on_timeout = Some(on_timeout);
            let mut r = start(p);
            feed(&mut r, 29, quiet.0, quiet.1);
            assert_eq!((r.step, r.phase.name()), (0, "running"));
            feed(&mut r, 1, quiet.0, quiet.1);
            assert_eq!(r.phase.name(), want, "{on_timeout:?}");
            let last = r.transitions.last().unwrap();
            assert!(
                last.reason.contains("time limit of 30 s"),
                "{}",
                last.reason
            );
        }
    }

    #[test]
    fn paused_time_does_not_count_and_seconds_count_once() {
        let mut r = start(plan(&[1000, 2000]));
        feed(&mut r, 10, sample(1, 0, 0), sample(9, 0, 0));
        r.control(Control::Pause, "bob", T0).unwrap();
        feed(&mut r, 100, sample(1, 0, 0), sample(9, 0, 0));
        assert_eq!(r.step_seconds, 10);
        // A second already judged is not judged again.
        let again = Second {
            time_unix_s: r.last_second,
            canary: sample(100, 100, 0),
            baseline: sample(100, 0, 0),
        };
        let before = r.clone();
        assert!(r.observe(&again, T0).is_empty());
        assert_eq!(r, before);
        let effects = r.control(Control::Resume, "bob", T0).unwrap();
        assert_eq!(effects[0], Effect::SetWeight(1000));
        feed(&mut r, 5, sample(1, 0, 0), sample(9, 0, 0));
        assert_eq!(r.step_seconds, 15);
    }

    #[test]
    fn an_outside_change_pauses_with_its_reason() {
        let mut r = start(plan(&[1000]));
        r.control(
            Control::ExternalChange {
                reason: "carol changed the policy (revision 9)".into(),
            },
            AUTOMATIC,
            T0,
        )
        .unwrap();
        assert_eq!(
            r.phase,
            Phase::Paused {
                reason: "carol changed the policy (revision 9)".into()
            }
        );
    }

    /// A webhook asked before every advance, at an address nobody answers.
    fn asking_webhook() -> Webhook {
        Webhook {
            url: "http://127.0.0.1:1/".into(),
            ask: true,
            timeout_ms: 1000,
            retries: 0,
        }
    }

    #[test]
    fn asking_webhooks_gate_each_advance() {
        let mut p = plan(&[1000, 2000]);
        p.webhooks.push(asking_webhook());
        let mut r = start(p);
        let effects = feed(&mut r, 100, sample(1000, 0, 0), sample(9000, 0, 0));
        assert!(effects.contains(&Effect::Ask));
        assert_eq!(r.phase, Phase::Confirming);
        r.control(Control::Confirm, AUTOMATIC, T0).unwrap();
        assert_eq!((r.step, &r.phase), (1, &Phase::Running));
        feed(&mut r, 100, sample(1000, 0, 0), sample(9000, 0, 0));
        assert_eq!(r.phase, Phase::Confirming);
        r.control(
            Control::Deny {
                reason: "http://127.0.0.1:1/ answered 409".into(),
            },
            AUTOMATIC,
            T0,
        )
        .unwrap();
        assert_eq!(r.phase.name(), "paused");
    }

    #[test]
    fn skip_promote_abort_retry() {
        let mut r = start(plan(&[1000, 2000, 3000]));
        assert_eq!(
            r.control(Control::Skip, "bob", T0).unwrap(),
            vec![
                Effect::SetWeight(2000),
                Effect::Notify(r.transitions.last().unwrap().clone())
            ]
        );
        r.control(Control::Abort, "bob", T0).unwrap();
        assert_eq!(r.weight(), 0);
        let err = r.control(Control::Pause, "bob", T0).unwrap_err();
        assert!(err.0.contains("aborted; retry starts it again"), "{err}");
        feed(&mut r, 50, sample(100, 50, 0), sample(900, 0, 0));
        r.control(Control::Retry, "bob", T0).unwrap();
        assert_eq!((r.step, r.attempt, r.weight()), (0, 2, 1000));
        assert_eq!(
            r.gates[0].canary.requests, 0,
            "a retry starts with new evidence"
        );
        r.control(Control::Promote, "bob", T0).unwrap();
        assert_eq!(r.phase, Phase::Promoted);
        assert!(r.control(Control::Retry, "bob", T0).is_err());
    }

    #[test]
    fn the_latency_gate_waits_for_its_threshold() {
        let (mut r, _) = Rollout::start(
            1,
            plan(&[1000]),
            "v1",
            StickyKey::ClientIp,
            "alice",
            T0,
            None,
        );
        feed(&mut r, 40, sample(1000, 0, 0), sample(9000, 0, 0));
        assert_eq!(r.gates[1].verdict, Verdict::Waiting);
        // Safety could not be shown by every gate: the step ran into its time limit.
        assert!(
            r.transitions
                .last()
                .unwrap()
                .reason
                .contains("latency not yet shown safe")
        );
        let mut r = start(plan(&[1000, 2000]));
        feed(&mut r, 60, sample(100, 0, 20), sample(900, 0, 9));
        let Phase::RolledBack { reason } = &r.phase else {
            panic!("{:?}", r.phase)
        };
        assert!(
            reason.starts_with("latency: harm shown: canary slow requests"),
            "{reason}"
        );
    }

    #[test]
    fn dry_run_gates_report_but_never_act() {
        let mut p = plan(&[1000]);
        p.gates.latency.as_mut().unwrap().mode = Mode::DryRun;
        let mut r = start(p);
        feed(&mut r, 10, sample(100, 0, 30), sample(900, 0, 9));
        assert_eq!(r.gates[1].verdict, Verdict::Harm);
        assert_eq!(r.phase, Phase::Running);
        // Only one gate is enforced, so it has all of α.
        assert_eq!(r.gates[0].alpha, 0.01);
    }

    #[test]
    fn the_warm_up_is_not_judged_but_counts_as_step_time() {
        let mut p = plan(&[1000, 2000]);
        p.warmup_seconds = 5;
        let mut r = start(p);
        // A cold canary: every request slow and failing for five seconds.
        feed(&mut r, 5, sample(100, 100, 100), sample(900, 0, 9));
        assert_eq!(r.phase, Phase::Running);
        assert_eq!((r.gates[0].canary.requests, r.step_seconds), (0, 5));
        feed(&mut r, 5, sample(100, 100, 100), sample(900, 0, 9));
        assert!(matches!(r.phase, Phase::RolledBack { .. }));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut r = start(plan(&[1000, 2000]));
        feed(&mut r, 20, sample(100, 1, 1), sample(900, 3, 9));
        let json = serde_json::to_string(&r).unwrap();
        let back: Rollout = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_last_step_promotes_only_on_evidence_unless_the_plan_says_promote() {
        // Too little traffic to show safety within 30 s: the last step pauses and says what
        // it lacks; a resume judges for another limit's worth.
        let quiet = (sample(2, 0, 0), sample(18, 0, 0));
        let mut r = start(plan(&[1000, 2000]));
        feed(&mut r, 30, quiet.0, quiet.1);
        assert_eq!((r.step, r.phase.name()), (1, "running"));
        feed(&mut r, 30, quiet.0, quiet.1);
        let Phase::Paused { reason } = &r.phase else {
            panic!("{:?}", r.phase)
        };
        assert!(
            reason.contains("a promotion needs every gate shown safe")
                && reason.contains("error rate needs about")
                && reason.contains("at this step's traffic (2.0 canary requests/s"),
            "{reason}"
        );
        assert_eq!(r.promotion, None);
        let effects = r.control(Control::Resume, "bob", T0).unwrap();
        assert_eq!(effects[0], Effect::SetWeight(2000));
        assert!(
            r.transitions
                .last()
                .unwrap()
                .reason
                .contains("judged for up to another 30 s")
        );
        feed(&mut r, 29, quiet.0, quiet.1);
        assert_eq!(r.phase, Phase::Running, "another 30 s");
        feed(&mut r, 1, quiet.0, quiet.1);
        assert_eq!(r.phase.name(), "paused");
        // A person promotes: recorded as without safety shown.
        r.control(Control::Promote, "bob", T0).unwrap();
        assert_eq!(r.promotion, Some(Promotion::Person));
        assert!(
            r.transitions
                .last()
                .unwrap()
                .reason
                .ends_with("promoted by bob without safety shown")
        );

        // `promote` on the last step promotes on time alone, and says so.
        let mut p = plan(&[1000, 2000]);
        p.steps[1].on_timeout = Some(OnTimeout::Promote);
        let mut r = start(p);
        let effects = feed(&mut r, 60, quiet.0, quiet.1);
        assert!(effects.contains(&Effect::Promote));
        assert_eq!(r.promotion, Some(Promotion::TimeLimit));
        assert!(
            r.transitions
                .last()
                .unwrap()
                .reason
                .ends_with("promoted without safety shown"),
            "{}",
            r.transitions.last().unwrap().reason
        );

        // Shown safe: promoted by evidence, also after a person approves.
        let mut p = plan(&[1000, 2000]);
        p.steps[1].approval = true;
        let mut r = start(p);
        feed(&mut r, 200, sample(1000, 0, 0), sample(9000, 0, 0));
        assert_eq!((r.step, &r.phase), (1, &Phase::AwaitingApproval));
        r.control(Control::Approve, "bob", T0).unwrap();
        assert_eq!(
            (&r.phase, r.promotion),
            (&Phase::Promoted, Some(Promotion::Evidence))
        );
    }

    #[test]
    fn the_webhooks_agreeing_to_an_on_time_promotion_do_not_make_it_a_persons() {
        let mut p = plan(&[1000]);
        p.steps[0].on_timeout = Some(OnTimeout::Promote);
        p.webhooks.push(asking_webhook());
        let mut r = start(p);
        feed(&mut r, 30, sample(1, 0, 0), sample(9, 0, 0));
        assert_eq!(r.phase, Phase::Confirming);
        r.control(Control::Confirm, WEBHOOKS, T0).unwrap();
        assert_eq!(r.promotion, Some(Promotion::TimeLimit));
    }

    #[test]
    fn only_a_pause_at_the_time_limit_is_resumed_with_more_time() {
        // A step that completed on its limit and awaits approval, paused and resumed by a
        // person, goes back to awaiting approval at once rather than judging another limit.
        let mut r = awaiting_approval(&[1000, 2000], 30, 1);
        r.control(Control::Pause, "bob", T0).unwrap();
        r.control(Control::Resume, "bob", T0).unwrap();
        assert_eq!(r.step_extension_seconds, 0);
        feed(&mut r, 1, sample(1, 0, 0), sample(9, 0, 0));
        assert_eq!(r.phase, Phase::AwaitingApproval);
        // Safety shown, then a pause: a resume makes the step show it again.
        let mut r = start(plan(&[1000]));
        r.control(Control::Pause, "bob", T0).unwrap();
        r.step_shown_safe = true;
        r.control(Control::Resume, "bob", T0).unwrap();
        assert!(!r.step_shown_safe);
        r.control(Control::Promote, "bob", T0).unwrap();
        assert_eq!(r.promotion, Some(Promotion::Person));
    }

    #[test]
    fn a_stored_plan_that_advances_on_its_last_step_promotes_on_time_and_says_so() {
        let mut p = plan(&[1000]);
        p.steps[0].on_timeout = Some(OnTimeout::Advance);
        let mut r = start(p);
        feed(&mut r, 30, sample(1, 0, 0), sample(9, 0, 0));
        assert_eq!(r.promotion, Some(Promotion::TimeLimit));
    }

    #[test]
    fn fallbacks_are_never_judged_and_a_refused_version_holds_the_step() {
        let mut r = start(plan(&[1000, 2000]));
        // The canary's breaker opens: nine in ten of its requests get the fallback, and
        // what reaches it fails as often as the baseline.
        let refused = Sample {
            refused: 90,
            ..sample(10, 0, 0)
        };
        let effects = feed(&mut r, 20, refused, sample(900, 0, 0));
        assert_eq!(r.phase, Phase::Running, "fallbacks are not harm");
        assert_eq!((r.step_seconds, r.canary_fallbacks), (0, 1800));
        assert!(r.hold.held);
        let notes: Vec<&Effect> = effects
            .iter()
            .filter(|e| matches!(e, Effect::Notify(_)))
            .collect();
        assert_eq!(notes.len(), 1, "one note when the hold begins");
        assert!(
            r.transitions
                .last()
                .unwrap()
                .reason
                .contains("the canary's own protection"),
        );
        // It serves again: after five seconds the clock runs, and the hold says how long.
        feed(&mut r, 5, sample(100, 0, 0), sample(900, 0, 0));
        assert!(!r.hold.held);
        assert!(
            r.transitions
                .last()
                .unwrap()
                .reason
                .starts_with("serving again after 24 s held")
        );
        feed(&mut r, 3, sample(100, 0, 0), sample(900, 0, 0));
        assert_eq!(r.step_seconds, 4, "the fifth second serving and three more");
        // A hold that outlasts the step's time limit pauses.
        let mut r = start(plan(&[1000, 2000]));
        feed(
            &mut r,
            30,
            sample(10, 0, 0),
            Sample {
                refused: 900,
                ..sample(0, 0, 0)
            },
        );
        let Phase::Paused { reason } = &r.phase else {
            panic!("{:?}", r.phase)
        };
        assert!(
            reason.starts_with("the baseline's own protection has answered most requests for 30 s"),
            "{reason}"
        );
    }

    #[test]
    fn evidence_short_of_its_threshold_never_reads_as_reaching_it() {
        assert_eq!(
            evidence_needed(2.58, 2.6021),
            "evidence 10^2.58 of 10^2.60 needed"
        );
        assert_eq!(
            evidence_needed(1.6, 2.6),
            "evidence 10^1.6 of 10^2.6 needed"
        );
        assert_eq!(
            evidence_needed(3.7, 2.0),
            "evidence 10^3.7 of 10^2.0 needed"
        );
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(500), "5 %");
        assert_eq!(percent(1250), "12.5 %");
        assert_eq!(percent(1), "0.01 %");
        assert_eq!(rate_percent(0.051), "5.10 %");
        assert_eq!(Step::at(5).weight, 5);
    }
}
