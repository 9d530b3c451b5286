//! Automated rollouts in the server: the judge of `grayline-rollout` fed every second with
//! the proxies' statistics of canary and baseline, its decisions written through the store
//! like any other change (a history entry per step, by `rollout N`), its state in sled.
//!
//! Durability: a rollout's record (plan, step, evidence, the effects still to carry out) is
//! written and flushed before its effects are carried out, and again after each judged
//! second. After a crash the pending effects are carried out again (each is idempotent:
//! it computes the service it wants from the service as it is), and judging resumes with the
//! first second after the restart, so no second is judged twice and downtime is not
//! observed time.

pub(crate) mod keep;
pub use keep::{import, load};
pub mod leader;
mod policy;
pub mod prometheus;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use grayline_proto::v1::RolloutAction;
use grayline_rollout::judge::AUTOMATIC;
use grayline_rollout::judge::LatencyThreshold;
use grayline_rollout::{
    Control, Effect, Phase, Plan, Rollout, RolloutEvent, RolloutView, Sample, Second,
};
use grayline_routing::{FieldError, Invalid};
use grayline_routing::{Route, Service, StickyKey};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, broadcast, watch};
use tokio_util::sync::CancellationToken;

use self::leader::{Leadership, Role};
use crate::error::ApiError;
use crate::stats::{Closed, StatsStore};
use crate::store::{Change, HistoryEntry, Store, WriteContext, now_unix_ms};

pub use webhook::signature;

/// The cookie a rollout's split is sticky by when neither the plan nor the service says.
pub const DEFAULT_STICKY_COOKIE: &str = "grayline-user";
/// Minutes of the baseline's latency the latency gate's quantile is frozen from at the start.
const FREEZE_MINUTES: usize = 5;
/// How long a rollout command waits for an election under way (the leader's lease is
/// 5 s) before it answers unavailable.
const ELECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(8);
/// At least this many baseline requests per `1 − quantile` before a quantile is frozen
/// (1000 for a p99, 20 for a p50), and never fewer than 100.
const FREEZE_TAIL_REQUESTS: f64 = 10.0;

/// Puts the webhook deliveries of `transition` into the record's outbox (persist it next)
/// and returns them, to send once it is durable.
fn queue(record: &mut Record, transition: &grayline_rollout::Transition) -> Vec<Outgoing> {
    let r = &record.rollout;
    if r.plan.webhooks.is_empty() {
        return Vec::new();
    }
    let body = serde_json::json!({
        "event": "transition",
        "rollout": summary_json(r),
        "transition": transition,
    })
    .to_string();
    let delivery = format!("{}-{}", r.id, transition.seq);
    let outgoing: Vec<Outgoing> = (0..r.plan.webhooks.len())
        .map(|hook| Outgoing {
            delivery: delivery.clone(),
            hook,
            body: body.clone(),
        })
        .collect();
    record.outbox.extend(outgoing.iter().cloned());
    outgoing
}

/// What is stored per rollout (and exported as it is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    rollout: Rollout,
    /// The service revision the rollout last wrote (0: none yet).
    revision: u64,
    /// Effects decided but not yet known to be carried out.
    #[serde(default)]
    pending: Vec<Pending>,
    /// Webhook deliveries of transitions not yet known to have ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outbox: Vec<Outgoing>,
}

/// A transition's webhook call, stored with the record before it is first sent and removed
/// once it ended (answered 2xx, or gave up after its retries): the replica that drives the
/// rollouts next — another one after the leader died, or this one after a restart — sends
/// what is left again, with the same delivery id and body. At least once, not exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outgoing {
    /// `x-grayline-delivery`: `<rollout>-<transition seq>`.
    delivery: String,
    /// Which of the plan's webhooks.
    hook: usize,
    body: String,
}

/// A delivery that ended: (rollout, delivery id, hook).
type Ended = (u64, String, usize);

impl Record {
    pub fn id(&self) -> u64 {
        self.rollout.id
    }

    /// The service revision the rollout last wrote (0: none yet).
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

/// An effect as stored until it is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    SetWeight(u32),
    Promote,
    RollBack,
    Ask,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<u64, Record>,
    /// Baseline latencies gathered for rollouts whose quantile is not frozen yet.
    warming: HashMap<u64, Histogram<u64>>,
    next_id: u64,
    /// Metric gates (rollout, gate index) with a query under way: one at a time each.
    asking: std::collections::HashSet<(u64, usize)>,
}

/// A metric gate's answers for one interval.
#[derive(Debug)]
struct MetricAnswer {
    id: u64,
    attempt: u32,
    gate: usize,
    end_unix_s: i64,
    readings: Result<
        (
            grayline_rollout::gate::Reading,
            grayline_rollout::gate::Reading,
        ),
        String,
    >,
}

#[derive(Debug)]
pub struct Rollouts {
    store: Arc<Store>,
    stats: Arc<StatsStore>,
    /// To pause a rollout whose canary has no instance registered.
    instances: Arc<crate::instances::Instances>,
    keep: keep::Keep,
    /// With etcd: who drives the rollouts (set when the driver starts).
    leadership: OnceLock<(Leadership, watch::Receiver<Role>)>,
    /// Whether this replica drives the rollouts now: always with sled; with etcd from when
    /// it leads and has read the rollouts afresh until it stops leading.
    driving: watch::Sender<bool>,
    /// For controls forwarded to the replica that leads.
    admin_token: String,
    /// How this replica reaches the one that leads over TLS.
    peer_tls: grayline_proto::tls::ClientTls,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<RolloutEvent>>,
    webhooks: webhook::Webhooks,
    /// Deliveries that ended, to take out of their record's outbox.
    ended: tokio::sync::mpsc::UnboundedSender<Ended>,
    ended_rx: Mutex<tokio::sync::mpsc::UnboundedReceiver<Ended>>,
    prometheus: prometheus::Prometheus,
    /// The metric gates' answers, judged by the driving loop.
    answers: tokio::sync::mpsc::UnboundedSender<MetricAnswer>,
    answers_rx: Mutex<tokio::sync::mpsc::UnboundedReceiver<MetricAnswer>>,
    /// The last transition this process told watchers of, by rollout, whatever its role
    /// was: a replica that changes role tells what happened in between, once.
    announced: std::sync::Mutex<HashMap<u64, u32>>,
    /// Seconds before this one were not seen by this process and are never judged.
    resume_from: i64,
}

impl Rollouts {
    /// Loads every stored rollout. `webhook_secret` signs webhook bodies; `admin_token`
    /// authenticates controls forwarded to the replica that leads, reached with `peer_tls`
    /// when it serves TLS; `prometheus_url` is where metric gates ask unless their plan
    /// says.
    pub async fn open(
        store: Arc<Store>,
        stats: Arc<StatsStore>,
        instances: Arc<crate::instances::Instances>,
        webhook_secret: Vec<u8>,
        admin_token: String,
        peer_tls: grayline_proto::tls::ClientTls,
        prometheus_url: Option<String>,
    ) -> anyhow::Result<Rollouts> {
        let keep = keep::Keep::beside(&store)?;
        let (records, next_id) = keep.load().await?;
        let active = records
            .values()
            .filter(|r| !r.rollout.phase.is_done())
            .count();
        tracing::info!(rollouts = records.len(), active, "rollouts loaded");
        let (ended, ended_rx) = tokio::sync::mpsc::unbounded_channel();
        let (answers, answers_rx) = tokio::sync::mpsc::unbounded_channel();
        // What happened before this process started is history, not news.
        let announced = records
            .values()
            .map(|r| (r.rollout.id, r.rollout.transitions.len() as u32))
            .collect();
        Ok(Rollouts {
            announced: std::sync::Mutex::new(announced),
            ended,
            ended_rx: Mutex::new(ended_rx),
            prometheus: prometheus::Prometheus::new(prometheus_url)?,
            answers,
            answers_rx: Mutex::new(answers_rx),
            driving: watch::Sender::new(keep.etcd().is_none()),
            store,
            stats,
            instances,
            keep,
            leadership: OnceLock::new(),
            admin_token,
            peer_tls,
            inner: Mutex::new(Inner {
                records,
                next_id,
                ..Inner::default()
            }),
            events: broadcast::channel(256).0,
            webhooks: webhook::Webhooks::new(webhook_secret)?,
            resume_from: now_unix_ms() / 1000 + 1,
        })
    }

    /// Whether this replica drives the rollouts (always, with sled).
    pub fn leads(&self) -> bool {
        *self.driving.borrow()
    }

    /// Where a rollout command runs: `None` here, because this replica drives the
    /// rollouts, else the address of the replica that does. Waits out an election under
    /// way (up to `ELECTION_WAIT`) rather than failing the command at once.
    async fn driver(&self) -> Result<Option<String>, ApiError> {
        let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
        let mut driving = self.driving.subscribe();
        loop {
            if *driving.borrow_and_update() {
                return Ok(None);
            }
            if let (Some(leader), Some(me)) = self.leader()
                && leader != me
            {
                return Ok(Some(leader));
            }
            tokio::select! {
                _ = driving.changed() => {}
                // The role is watched by the driver; a short poll also covers the time
                // before the election started.
                () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ApiError::Unavailable(
                        "no replica drives the rollouts right now (an election is under way); \
                         try again in a few seconds"
                            .into(),
                    ));
                }
            }
        }
    }

    /// The replica that drives the rollouts (its gRPC address), as far as this one knows,
    /// and this replica's own.
    pub fn leader(&self) -> (Option<String>, Option<String>) {
        match self.leadership.get() {
            None => (None, None),
            Some((l, role)) => match &*role.borrow() {
                Role::Leader { .. } => (Some(l.me.clone()), Some(l.me.clone())),
                Role::Follower { leader } => (leader.clone(), Some(l.me.clone())),
            },
        }
    }

    fn fence(&self) -> Option<etcd_client::Compare> {
        self.leadership.get().map(|(l, _)| l.fence())
    }

    /// The records as they are now: this replica's own while it leads, else read afresh
    /// from the store (the leader writes them there).
    async fn records(&self) -> Result<BTreeMap<u64, Record>, ApiError> {
        if self.leads() {
            return Ok(self.inner.lock().await.records.clone());
        }
        Ok(self.keep.load().await.map_err(ApiError::Internal)?.0)
    }

    /// A client of the rollouts API of `leader` (the replica that drives them), acting as
    /// `actor`.
    async fn leader_client(
        &self,
        leader: String,
        actor: &str,
    ) -> Result<
        grayline_proto::v1::rollouts_client::RolloutsClient<
            tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Forward>,
        >,
        ApiError,
    > {
        let channel = self
            .peer_tls
            .endpoint(&leader)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("the leader's address: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "the replica that drives the rollouts ({leader}) cannot be reached: {e}"
                ))
            })?;
        let forward = Forward {
            authorization: format!("Bearer {}", self.admin_token)
                .parse()
                .map_err(|_| ApiError::Internal(anyhow::anyhow!("the admin token is not ASCII")))?,
            actor: actor.parse().map_err(|_| {
                ApiError::invalid("x-grayline-actor", "must be ASCII to be forwarded")
            })?,
        };
        Ok(grayline_proto::v1::rollouts_client::RolloutsClient::with_interceptor(channel, forward))
    }

    /// Every rollout transition as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RolloutEvent>> {
        self.events.subscribe()
    }

    pub async fn get(&self, id: u64) -> Result<RolloutView, ApiError> {
        self.records()
            .await?
            .get(&id)
            .map(view)
            .ok_or_else(|| ApiError::NotFound(format!("rollout {id} not found")))
    }

    /// The newest rollout of `service`.
    pub async fn for_service(&self, service: &str) -> Result<RolloutView, ApiError> {
        self.records()
            .await?
            .values()
            .rev()
            .find(|r| r.rollout.plan.service == service)
            .map(view)
            .ok_or_else(|| ApiError::NotFound(format!("service `{service}` has no rollout")))
    }

    /// Newest first, for one service or all; only the running ones if `active_only`.
    pub async fn list(
        &self,
        service: Option<&str>,
        active_only: bool,
    ) -> Result<Vec<RolloutView>, ApiError> {
        Ok(self
            .records()
            .await?
            .values()
            .rev()
            .filter(|r| service.is_none_or(|s| s == r.rollout.plan.service))
            .filter(|r| !active_only || !r.rollout.phase.is_done())
            .map(view)
            .collect())
    }

    /// Checks `plan` (field paths start at `plan.`) and starts it at its first step.
    pub async fn start(self: &Arc<Self>, plan: Plan, actor: &str) -> Result<RolloutView, ApiError> {
        if let Some(leader) = self.driver().await? {
            let mut client = self.leader_client(leader, actor).await?;
            let started = client
                .start_rollout(grayline_proto::v1::StartRolloutRequest {
                    plan: Some(grayline_proto::plan_to_pb(&plan)),
                })
                .await
                .map_err(from_status)?
                .into_inner();
            return self.get(started.id).await;
        }
        let record = self.store.get(&plan.service);
        let service = record.as_ref().map(|r| &r.service);
        plan.check(service)
            .and_then(|()| self.prometheus.check(&plan))
            .map_err(|e| ApiError::Invalid(e.under("plan")))?;
        // Before taking the lock: it asks Prometheus (for up to 2 s).
        self.prometheus
            .check_intervals(&plan)
            .await
            .map_err(|e| ApiError::Invalid(e.under("plan")))?;
        let service = service.expect("checked: the service exists");
        let mut inner = self.inner.lock().await;
        if let Some(running) = inner
            .records
            .values()
            .find(|r| r.rollout.plan.service == plan.service && !r.rollout.phase.is_done())
        {
            return Err(ApiError::invalid(
                "plan.service",
                format!(
                    "service `{}` already has rollout {} ({}, step {} of {}); finish or abort it first",
                    plan.service,
                    running.rollout.id,
                    running.rollout.phase.name().replace('_', " "),
                    running.rollout.step + 1,
                    running.rollout.plan.steps.len()
                ),
            ));
        }
        let sticky = plan
            .sticky
            .clone()
            .unwrap_or_else(|| match &service.policy.default_route {
                Some(Route::Split(split)) if split.sticky.is_some() => {
                    split.sticky.clone().expect("checked")
                }
                _ => StickyKey::Cookie(DEFAULT_STICKY_COOKIE.to_string()),
            });
        let threshold = plan.gates.latency.as_ref().and_then(|g| {
            let recent = self
                .stats
                .recent_latency(&service.name, &service.stable, FREEZE_MINUTES);
            latency_threshold(&recent, g.quantile, plan.detect_latency())
        });
        let id = inner.next_id;
        inner.next_id += 1;
        let next_id = inner.next_id;
        let baseline = service.stable.clone();
        let (mut rollout, effects) =
            Rollout::start(id, plan, &baseline, sticky, actor, now_unix_ms(), threshold);
        if let Some(t) = threshold {
            let words = format!(
                "; latency threshold {} frozen from the last minutes{}",
                micros(t.threshold_us),
                detect_words(&rollout)
            );
            rollout.transitions[0].reason.push_str(&words);
        }
        if rollout.guard.is_some() {
            let words = rules_outside_split(service, &rollout);
            rollout.transitions[0].reason.push_str(&words);
        }
        let record = Record {
            rollout,
            revision: 0,
            pending: Vec::new(),
            outbox: Vec::new(),
        };
        self.keep.put(&record, Some(next_id), self.fence()).await?;
        inner.records.insert(id, record);
        self.apply(&mut inner, id, effects).await?;
        Ok(view(&inner.records[&id]))
    }

    /// The last hour of `plan`'s metric gate `gate` per version, or of its event gate on the
    /// event `gate` (a metric gate of that name comes first), its gates checked as a start
    /// would check them; for a person choosing the gate before the rollout starts.
    pub async fn preview_metric(
        &self,
        plan: &Plan,
        gate: &str,
    ) -> Result<prometheus::Preview, ApiError> {
        let record = self.store.get(&plan.service);
        let service = record.as_ref().map(|r| &r.service);
        // The canary need not be a version yet (the wizard previews before it creates it):
        // what matters here is the service, its gates and where to ask.
        let relevant = |f: &str| {
            ["service", "gates.metrics", "gates.events", "prometheus_url"]
                .iter()
                .any(|p| {
                    f.strip_prefix(p)
                        .is_some_and(|r| r.is_empty() || r.starts_with(['.', '[']))
                })
        };
        let mut errors: Vec<_> = plan
            .check(service)
            .err()
            .map(|e| e.errors)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| relevant(&e.field))
            .collect();
        errors.extend(
            self.prometheus
                .check(plan)
                .err()
                .map(|e| e.errors)
                .unwrap_or_default(),
        );
        grayline_routing::Invalid::check(errors).map_err(|e| ApiError::Invalid(e.under("plan")))?;
        let service = service.expect("checked: the service exists");
        let Some(g) = plan.gates.metrics.iter().find(|g| g.name == gate) else {
            if let Some(e) = plan.gates.events.iter().find(|e| e.event == gate) {
                let versions = (plan.canary.as_str(), service.stable.as_str());
                let now = now_unix_ms().div_euclid(1000);
                return Ok(self.preview_event(&plan.service, versions, &e.event, now));
            }
            let names: Vec<&str> = plan
                .gates
                .metrics
                .iter()
                .map(|g| g.name.as_str())
                .chain(plan.gates.events.iter().map(|e| e.event.as_str()))
                .collect();
            return Err(ApiError::invalid(
                "gate",
                format!(
                    "the plan has no metric or event gate `{gate}`; it has {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        };
        let url = self.prometheus.url_for(plan).expect("checked: a URL");
        self.prometheus
            .preview(
                url,
                &plan.service,
                (&plan.canary, &service.stable),
                g,
                now_unix_ms().div_euclid(1000),
            )
            .await
            .map_err(ApiError::Unavailable)
    }

    /// The last hour of `event` per answer of `canary` and `baseline`, a point a minute (the
    /// minute's first second), the newest the minute so far: from the proxies' counts this
    /// server has seen since it started (see `stats::events`).
    fn preview_event(
        &self,
        service: &str,
        (canary, baseline): (&str, &str),
        event: &str,
        now_unix_s: i64,
    ) -> prometheus::Preview {
        let step = prometheus::PREVIEW_STEP_SECONDS;
        let last = now_unix_s.div_euclid(60);
        let first = last - prometheus::PREVIEW_SECONDS / 60;
        let rates = |version: &str| -> BTreeMap<i64, f64> {
            self.stats
                .event_minutes(service, version, event, first, last)
                .into_iter()
                .filter(|(_, answers, _)| *answers > 0)
                .map(|(m, answers, events)| (m * 60, events as f64 / answers as f64))
                .collect()
        };
        let (c, b) = (rates(canary), rates(baseline));
        let asked = |version: &str| {
            vec![format!(
                "`{event}` per answer of {version}, as the proxies count it (every answer, not only the judged sample)"
            )]
        };
        prometheus::Preview {
            gate: event.to_string(),
            canary: canary.to_string(),
            baseline: baseline.to_string(),
            step_seconds: step,
            points: prometheus::preview_points(last * 60, &c, &b),
            canary_queries: asked(canary),
            baseline_queries: asked(baseline),
        }
    }

    /// Applies an operator's control to rollout `id`.
    pub async fn control(
        self: &Arc<Self>,
        id: u64,
        control: Control,
        actor: &str,
    ) -> Result<RolloutView, ApiError> {
        if let Some(leader) = self.driver().await? {
            let mut client = self.leader_client(leader, actor).await?;
            let action = match &control {
                Control::Pause => RolloutAction::Pause,
                Control::Resume => RolloutAction::Resume,
                Control::Approve => RolloutAction::Approve,
                Control::Skip => RolloutAction::Skip,
                Control::Promote => RolloutAction::Promote,
                Control::Abort => RolloutAction::Abort,
                Control::Retry => RolloutAction::Retry,
                other => {
                    return Err(ApiError::Internal(anyhow::anyhow!(
                        "{} is not forwarded to the leader",
                        other.name()
                    )));
                }
            };
            client
                .control_rollout(grayline_proto::v1::ControlRolloutRequest {
                    id,
                    action: action as i32,
                })
                .await
                .map_err(from_status)?;
            return self.get(id).await;
        }
        let mut inner = self.inner.lock().await;
        let service = inner
            .records
            .get(&id)
            .ok_or_else(|| ApiError::NotFound(format!("rollout {id} not found")))?
            .rollout
            .plan
            .service
            .clone();
        if control == Control::Retry {
            if let Some(other) = inner.records.values().find(|r| {
                r.rollout.id != id
                    && r.rollout.plan.service == service
                    && !r.rollout.phase.is_done()
            }) {
                return Err(ApiError::Precondition(format!(
                    "cannot retry rollout {id}: service `{service}` has rollout {} running",
                    other.rollout.id
                )));
            }
            let current = self.store.get(&service);
            if let Err(e) = inner.records[&id]
                .rollout
                .plan
                .check(current.as_ref().map(|r| &r.service))
            {
                return Err(ApiError::Precondition(format!(
                    "cannot retry rollout {id}: its plan no longer fits the service: {e}"
                )));
            }
        }
        let record = inner.records.get_mut(&id).expect("checked");
        let effects = record
            .rollout
            .control(control, actor, now_unix_ms())
            .map_err(|e| ApiError::Precondition(e.0))?;
        self.apply(&mut inner, id, effects).await?;
        Ok(view(&inner.records[&id]))
    }

    /// Persists the record with its pending effects, carries them out, then persists again.
    /// Notifications go out once the decision is durable.
    async fn apply(
        self: &Arc<Self>,
        inner: &mut Inner,
        id: u64,
        effects: Vec<Effect>,
    ) -> Result<(), ApiError> {
        let record = inner.records.get_mut(&id).expect("caller checked");
        let mut notes = Vec::new();
        for e in &effects {
            match e {
                Effect::SetWeight(w) => record.pending.push(Pending::SetWeight(*w)),
                Effect::Promote => record.pending.push(Pending::Promote),
                Effect::RollBack => record.pending.push(Pending::RollBack),
                Effect::Ask => record.pending.push(Pending::Ask),
                Effect::Notify(t) => notes.push(t.clone()),
            }
        }
        let outgoing: Vec<Outgoing> = notes.iter().flat_map(|t| queue(record, t)).collect();
        self.persist(record).await?;
        for t in notes {
            self.announce(record, t);
        }
        self.send(record, outgoing);
        self.carry_out(inner, id).await
    }

    /// Carries out the pending effects of rollout `id`; a write the store refuses pauses the
    /// rollout (or is noted, once it is done) with the store's reason.
    async fn carry_out(self: &Arc<Self>, inner: &mut Inner, id: u64) -> Result<(), ApiError> {
        loop {
            let record = inner.records.get_mut(&id).expect("caller checked");
            let Some(next) = record.pending.first().copied() else {
                return Ok(());
            };
            let outcome = match next {
                Pending::Ask => {
                    self.ask(record);
                    Ok(())
                }
                Pending::SetWeight(w) => {
                    self.write(record, false, |s, r| policy::at_weight(s, r, w))
                        .await
                }
                Pending::Promote => self.write(record, true, policy::promoted).await,
                Pending::RollBack => self.write(record, false, policy::rolled_back).await,
            };
            record.pending.remove(0);
            if let Err(e) = outcome {
                let reason = format!("the service could not be changed: {e}");
                tracing::warn!(rollout = id, error = %reason, "rollout write refused");
                let now = now_unix_ms();
                let effects = if record.rollout.phase.is_done() {
                    record.rollout.note(AUTOMATIC, now, reason)
                } else {
                    record
                        .rollout
                        .control(Control::ExternalChange { reason }, AUTOMATIC, now)
                        .unwrap_or_default()
                };
                record.pending.clear();
                let notes: Vec<_> = effects
                    .into_iter()
                    .filter_map(|e| match e {
                        Effect::Notify(t) => Some(t),
                        _ => None,
                    })
                    .collect();
                let outgoing: Vec<Outgoing> = notes.iter().flat_map(|t| queue(record, t)).collect();
                self.persist(record).await?;
                for t in notes {
                    self.announce(record, t);
                }
                self.send(record, outgoing);
                return Ok(());
            }
            self.persist(record).await?;
        }
    }

    /// Writes the service the way `make` wants it, unless it already is.
    async fn write(
        &self,
        record: &mut Record,
        promote: bool,
        make: impl Fn(&Service, &Rollout) -> Service,
    ) -> Result<(), ApiError> {
        let r = &record.rollout;
        let name = r.plan.service.clone();
        let reason = r
            .transitions
            .last()
            .map(|t| t.reason.clone())
            .unwrap_or_default();
        let summary = format!(
            "rollout {}: {} at {} — {reason}",
            r.id,
            r.plan.canary,
            grayline_rollout::judge::percent(r.weight())
        );
        let cx = WriteContext {
            actor: policy::actor(r.id),
            ..WriteContext::default()
        };
        let unchanged = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .store
            .write(&name, &cx, |existing| {
                let existing = existing
                    .ok_or_else(|| ApiError::NotFound(format!("service `{name}` not found")))?;
                let after = make(&existing.service, r);
                if after == existing.service {
                    unchanged.store(true, std::sync::atomic::Ordering::Relaxed);
                    // Nothing to write; refuse quietly so the store writes nothing.
                    return Err(ApiError::Precondition(String::new()));
                }
                Ok(Change {
                    action: policy::action(promote),
                    after: Some(after),
                    summary: summary.clone(),
                })
            })
            .await;
        match result {
            Ok((entry, _)) => {
                record.revision = entry.revision;
                Ok(())
            }
            Err(_) if unchanged.load(std::sync::atomic::Ordering::Relaxed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn persist(&self, record: &Record) -> Result<(), ApiError> {
        self.keep.put(record, None, self.fence()).await
    }

    /// Tells watchers of a transition (once its record is durable).
    fn announce(&self, record: &Record, transition: grayline_rollout::Transition) {
        let r = &record.rollout;
        {
            let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
            let last = announced.entry(r.id).or_insert(0);
            *last = (*last).max(transition.seq);
        }
        let _ = self.events.send(Arc::new(RolloutEvent {
            id: r.id,
            service: r.plan.service.clone(),
            canary: r.plan.canary.clone(),
            attempt: r.attempt,
            transition,
        }));
    }

    /// Sends webhook deliveries of `record` in the background (they are in its outbox,
    /// durably); each one that ends is taken out of the outbox by the driving loop.
    fn send(&self, record: &Record, outgoing: Vec<Outgoing>) {
        let id = record.rollout.id;
        for o in outgoing {
            let Some(hook) = record.rollout.plan.webhooks.get(o.hook).cloned() else {
                let _ = self.ended.send((id, o.delivery, o.hook));
                continue;
            };
            let (webhooks, ended) = (self.webhooks.clone(), self.ended.clone());
            tokio::spawn(async move {
                let sent = webhooks
                    .deliver(&hook, "transition", &o.delivery, o.body.as_bytes())
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(url = %hook.url, delivery = %o.delivery, error = %e, "webhook delivery gave up");
                }
                let _ = ended.send((id, o.delivery, o.hook));
            });
        }
    }

    /// Takes a delivery that ended out of its record's outbox.
    async fn delivered(&self, (id, delivery, hook): Ended) {
        let mut inner = self.inner.lock().await;
        let Some(record) = inner.records.get_mut(&id) else {
            return;
        };
        let before = record.outbox.len();
        record
            .outbox
            .retain(|o| !(o.delivery == delivery && o.hook == hook));
        if record.outbox.len() == before {
            return;
        }
        if let Err(e) = self.persist(record).await {
            // Left in the store's outbox: sent once more by whoever drives next.
            tracing::warn!(rollout = id, %delivery, error = %e, "could not note a webhook delivery as done");
        }
    }

    /// Asks the plan's asking webhooks in the background; their answer comes back as a
    /// control.
    fn ask(self: &Arc<Self>, record: &Record) {
        let r = &record.rollout;
        let next = if r.step + 1 < r.plan.steps.len() {
            serde_json::json!({"step": r.step + 2, "weight": r.plan.steps[r.step + 1].weight})
        } else {
            serde_json::json!({"promote": true})
        };
        let body = serde_json::json!({"event": "ask", "rollout": summary_json(r), "next": next});
        let delivery = format!("{}-ask-{}", r.id, r.transitions.len());
        let (this, hooks, id) = (self.clone(), r.plan.webhooks.clone(), r.id);
        tokio::spawn(async move {
            let control = match this
                .webhooks
                .ask(&hooks, &delivery, body.to_string().as_bytes())
                .await
            {
                Ok(()) => Control::Confirm,
                Err(e) => Control::Deny {
                    reason: format!("an asking webhook refused the advance: {e}"),
                },
            };
            if let Err(e) = this
                .control(id, control, grayline_rollout::judge::WEBHOOKS)
                .await
            {
                // The rollout moved on meanwhile (paused, aborted, …).
                tracing::info!(rollout = id, error = %e, "webhook answer no longer applies");
            }
        });
    }

    /// Runs the rollouts until `stop`: judges every closed second, pauses rollouts whose
    /// service someone else changes, and first finishes what a crash interrupted. With etcd
    /// only while this replica leads (`me` is its advertised gRPC address): when it takes
    /// over, it reads the rollouts afresh and carries on where the last leader stopped.
    pub fn spawn(self: Arc<Self>, stop: CancellationToken, me: String) {
        tokio::spawn(async move {
            let mut role = match self.keep.etcd() {
                None => None,
                Some(etcd) => {
                    let leadership = Leadership::new(etcd.clone(), me);
                    let rx = leadership.clone().spawn(stop.clone());
                    let _ = self.leadership.set((leadership, rx.clone()));
                    Some(rx)
                }
            };
            loop {
                if let Some(rx) = &mut role {
                    // Follow until this replica leads.
                    while !rx.borrow_and_update().is_leader() {
                        tokio::select! {
                            r = rx.changed() => if r.is_err() { return },
                            () = stop.cancelled() => return,
                            () = self.relay() => {}
                        }
                    }
                    match self.keep.load().await {
                        Ok((records, next_id)) => {
                            // Transitions the last leader made that this replica did not
                            // relay before it took over.
                            for record in records.values() {
                                self.catch_up(record);
                            }
                            let mut inner = self.inner.lock().await;
                            inner.records = records;
                            inner.next_id = next_id;
                            inner.warming.clear();
                        }
                        Err(e) => {
                            tracing::error!(
                                error = format!("{e:#}"),
                                "cannot read the rollouts to drive them"
                            );
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                let go_on = self.drive(&stop, role.as_mut()).await;
                if role.is_some() {
                    self.driving.send_replace(false);
                }
                if !go_on {
                    return;
                }
            }
        });
    }

    /// While this replica follows: turns the leader's record writes into this replica's
    /// events, so watchers of any replica see every transition (webhooks stay the leader's).
    /// Returns only when the store cannot be read, after a pause.
    async fn relay(&self) {
        let Some(etcd) = self.keep.etcd() else {
            return std::future::pending().await;
        };
        let prefix = etcd.key("rollouts/r/");
        let snapshot = etcd
            .get(
                prefix.clone(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await;
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the rollouts of the leading replica");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                return;
            }
        };
        let decode = |bytes: &[u8]| serde_json::from_slice::<Record>(bytes).ok();
        // What the leader did while this replica led or was away, then what it does.
        for record in snapshot.kvs().iter().filter_map(|kv| decode(kv.value())) {
            self.catch_up(&record);
        }
        let revision = snapshot.header().map_or(0, |h| h.revision());
        let mut changes = etcd.watch_prefix(prefix, revision);
        while let Some(change) = changes.recv().await {
            if let Some(record) = change.value.as_deref().and_then(decode) {
                self.catch_up(&record);
            }
        }
    }

    /// Tells watchers of the transitions of `record` this process has not told of yet.
    fn catch_up(&self, record: &Record) {
        let r = &record.rollout;
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        let last = announced.entry(r.id).or_insert(0);
        for t in r.transitions.iter().filter(|t| t.seq > *last) {
            let _ = self.events.send(Arc::new(RolloutEvent {
                id: r.id,
                service: r.plan.service.clone(),
                canary: r.plan.canary.clone(),
                attempt: r.attempt,
                transition: t.clone(),
            }));
        }
        *last = (*last).max(r.transitions.len() as u32);
    }

    /// Judges and follows changes until `stop` (false) or until this replica stops leading
    /// (true).
    async fn drive(
        self: &Arc<Self>,
        stop: &CancellationToken,
        mut role: Option<&mut watch::Receiver<Role>>,
    ) -> bool {
        let mut closed = self.stats.subscribe_closed();
        let mut changes = self.store.events();
        self.recover().await;
        // Commands run here from now on: every change after this is seen by `on_change`.
        self.driving.send_replace(true);
        let mut previous: Option<i64> = None;
        let mut metrics = tokio::time::interval(std::time::Duration::from_secs(1));
        metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let lost = async {
                match role.as_mut() {
                    Some(rx) => loop {
                        if rx.changed().await.is_err() || !rx.borrow().is_leader() {
                            return;
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = closed.recv() => match c {
                    Ok(c) => self.judge(&c, &mut previous).await,
                    // Seconds we did not get are not observed.
                    Err(broadcast::error::RecvError::Lagged(_)) => previous = None,
                    Err(broadcast::error::RecvError::Closed) => return false,
                },
                e = changes.recv() => match e {
                    Ok(entry) => self.on_change(&entry).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "rollouts fell behind the store's changes");
                    }
                    Err(broadcast::error::RecvError::Closed) => return false,
                },
                ended = async { self.ended_rx.lock().await.recv().await } => {
                    if let Some(ended) = ended {
                        self.delivered(ended).await;
                    }
                }
                _ = metrics.tick() => self.ask_metrics().await,
                answer = async { self.answers_rx.lock().await.recv().await } => {
                    if let Some(answer) = answer {
                        self.judge_metric(answer).await;
                    }
                }
                () = lost => return true,
                () = stop.cancelled() => return false,
            }
        }
    }

    /// After a restart: carries out pending effects, notices changes made by others since
    /// the rollout's last write, and asks again where an ask was in flight.
    async fn recover(self: &Arc<Self>) {
        let mut inner = self.inner.lock().await;
        // Webhook deliveries the last driver (or this process before a restart) did not
        // see end: sent again, as they were.
        for record in inner.records.values().filter(|r| !r.outbox.is_empty()) {
            tracing::info!(
                rollout = record.rollout.id,
                deliveries = record.outbox.len(),
                "resuming webhook deliveries"
            );
            self.send(record, record.outbox.clone());
        }
        let ids: Vec<u64> = inner
            .records
            .iter()
            .filter(|(_, r)| !r.pending.is_empty() || !r.rollout.phase.is_done())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let record = inner.records.get_mut(&id).expect("listed");
            let service = record.rollout.plan.service.clone();
            if let Ok(latest) = self.store.history(Some(&service), 0, 1).await
                && let Some(latest) = latest.first()
                && latest.revision > record.revision
            {
                if latest.actor == policy::actor(id) {
                    // Written, but the crash came before the record said so.
                    record.revision = latest.revision;
                } else if record.revision > 0 && !record.rollout.phase.is_done() {
                    self.outside_change(&mut inner, id, latest).await;
                    continue;
                }
            }
            let record = inner.records.get_mut(&id).expect("listed");
            if record.rollout.phase == Phase::Confirming && !record.pending.contains(&Pending::Ask)
            {
                record.pending.push(Pending::Ask);
            }
            if let Err(e) = self.carry_out(&mut inner, id).await {
                tracing::error!(rollout = id, error = %e, "could not resume rollout");
            }
        }
    }

    async fn on_change(self: &Arc<Self>, entry: &HistoryEntry) {
        let mut inner = self.inner.lock().await;
        let Some(id) = inner
            .records
            .iter()
            .rev()
            .find(|(_, r)| r.rollout.plan.service == entry.service && !r.rollout.phase.is_done())
            .map(|(id, _)| *id)
        else {
            return;
        };
        if entry.actor == policy::actor(id) {
            return;
        }
        self.outside_change(&mut inner, id, entry).await;
    }

    async fn outside_change(self: &Arc<Self>, inner: &mut Inner, id: u64, entry: &HistoryEntry) {
        let record = inner.records.get_mut(&id).expect("caller checked");
        let r = &record.rollout;
        let reason = format!(
            "{} changed the service at revision {} ({}: {}); resume to put {} back at {}",
            entry.actor,
            entry.revision,
            entry.action.as_str(),
            entry.summary,
            r.plan.canary,
            grayline_rollout::judge::percent(r.plan.steps[r.step].weight)
        );
        record.revision = record.revision.max(entry.revision);
        let now = now_unix_ms();
        let effects =
            match record
                .rollout
                .control(Control::ExternalChange { reason }, AUTOMATIC, now)
            {
                Ok(effects) => effects,
                Err(_) => return,
            };
        if let Err(e) = self.apply(inner, id, effects).await {
            tracing::error!(rollout = id, error = %e, "could not pause rollout");
        }
    }

    /// Why a running rollout cannot be judged: its canary takes registered instances and has
    /// none now, so whatever it shows is its fallback's.
    fn without_instances(&self, r: &Rollout) -> Option<String> {
        if r.phase != Phase::Running {
            return None;
        }
        let record = self.store.get(&r.plan.service)?;
        let tag = record.service.version(&r.plan.canary)?.tag()?.to_string();
        (self.instances.registered_with(&r.plan.service, &tag) == 0).then(|| {
            format!(
                "canary {} has no instance registered (tag {tag}): there is nothing to judge; \
                 resume once its instances are back",
                r.plan.canary
            )
        })
    }

    /// Queries the metric gates' intervals that are due, one query under way per gate; the
    /// answers come back to the driving loop (`judge_metric`).
    async fn ask_metrics(self: &Arc<Self>) {
        let now = now_unix_ms().div_euclid(1000);
        let mut inner = self.inner.lock().await;
        let Inner {
            records, asking, ..
        } = &mut *inner;
        for (&id, record) in records.iter() {
            let r = &record.rollout;
            for (gate, end) in r.metrics_due(now, prometheus::SETTLE_SECONDS) {
                let (Some(g), Some(url)) = (r.metric_gate(gate), self.prometheus.url_for(&r.plan))
                else {
                    continue;
                };
                if !asking.insert((id, gate)) {
                    continue;
                }
                let (prometheus, answers) = (self.prometheus.clone(), self.answers.clone());
                let (g, url, attempt) = (g.clone(), url.to_string(), r.attempt);
                let versions = (r.plan.canary.clone(), r.baseline.clone());
                let service = r.plan.service.clone();
                tokio::spawn(async move {
                    let readings = prometheus
                        .interval(&url, &service, (&versions.0, &versions.1), &g, end)
                        .await;
                    let _ = answers.send(MetricAnswer {
                        id,
                        attempt,
                        gate,
                        end_unix_s: end,
                        readings,
                    });
                });
            }
        }
    }

    /// Judges one metric gate's interval and saves the evidence.
    async fn judge_metric(self: &Arc<Self>, a: MetricAnswer) {
        let mut inner = self.inner.lock().await;
        inner.asking.remove(&(a.id, a.gate));
        let Some(record) = inner.records.get_mut(&a.id) else {
            return;
        };
        if record.rollout.attempt != a.attempt {
            return;
        }
        if let Err(problem) = &a.readings {
            tracing::debug!(
                rollout = a.id,
                gate = a.gate,
                problem,
                "metric gate: no answer"
            );
        }
        let effects =
            record
                .rollout
                .observe_metric(a.gate, a.end_unix_s, a.readings, now_unix_ms());
        if !effects.is_empty()
            && let Err(e) = self.apply(&mut inner, a.id, effects).await
        {
            tracing::error!(rollout = a.id, error = %e, "could not carry out a decision");
        }
        if let Err(e) = self.persist(&inner.records[&a.id]).await {
            tracing::error!(rollout = a.id, error = %e, "could not save rollout evidence");
        }
    }

    /// Judges the seconds of `closed` for every running rollout.
    async fn judge(self: &Arc<Self>, closed: &Closed, previous: &mut Option<i64>) {
        let from = previous
            .map_or(closed.upto, |p| p + 1)
            .max(self.resume_from);
        *previous = Some(closed.upto);
        let mut inner = self.inner.lock().await;
        let ids: Vec<u64> = inner
            .records
            .iter()
            .filter(|(_, r)| !r.rollout.phase.is_done())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(reason) = self.without_instances(&inner.records[&id].rollout) {
                let record = inner.records.get_mut(&id).expect("listed");
                if let Ok(effects) = record.rollout.control(
                    Control::ExternalChange { reason },
                    AUTOMATIC,
                    now_unix_ms(),
                ) {
                    let _ = self.apply(&mut inner, id, effects).await;
                }
                continue;
            }
            let mut judged = false;
            for t in from..=closed.upto {
                let record = inner.records.get_mut(&id).expect("listed");
                let r = &record.rollout;
                if r.phase.is_done() || t <= r.last_second {
                    continue;
                }
                let baseline_latency = closed.find(&r.plan.service, &r.baseline, t);
                let latency_gate = r.plan.gates.latency.as_ref().map(|g| g.quantile);
                let detect = r.plan.detect_latency();
                if let (Some(q), None) = (latency_gate, r.latency_threshold_us) {
                    let warm = inner
                        .warming
                        .entry(id)
                        .or_insert_with(crate::stats::new_histogram);
                    if let Some(c) = baseline_latency {
                        let _ = warm.add(&c.latency);
                    }
                    if let Some(threshold) = latency_threshold(warm, q, detect) {
                        let requests = warm.len();
                        inner.warming.remove(&id);
                        let record = inner.records.get_mut(&id).expect("listed");
                        record.rollout.freeze_latency(Some(threshold));
                        let words = detect_words(&record.rollout);
                        let effects = record.rollout.note(
                            AUTOMATIC,
                            now_unix_ms(),
                            format!(
                                "latency gate: the baseline's p{} is {}, frozen from {requests} requests{words}",
                                quantile_name(q),
                                micros(threshold.threshold_us)
                            ),
                        );
                        let _ = self.apply(&mut inner, id, effects).await;
                    }
                }
                let record = inner.records.get_mut(&id).expect("listed");
                let r = &record.rollout;
                let threshold = r.latency_threshold_us;
                let second = Second {
                    time_unix_s: t,
                    canary: sample(closed, &r.plan, &r.plan.canary, t, threshold),
                    baseline: sample(closed, &r.plan, &r.baseline, t, threshold),
                };
                let effects = record.rollout.observe(&second, now_unix_ms());
                judged = true;
                if effects.is_empty() {
                    continue;
                }
                if let Err(e) = self.apply(&mut inner, id, effects).await {
                    tracing::error!(rollout = id, error = %e, "could not carry out a decision");
                }
            }
            if judged {
                let record = &inner.records[&id];
                if let Err(e) = self.persist(record).await {
                    tracing::error!(rollout = id, error = %e, "could not save rollout evidence");
                }
            }
        }
    }
}

/// Adds the admin token and the actor to a control forwarded to the leader.
#[derive(Clone, Debug)]
struct Forward {
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    actor: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for Forward {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", self.authorization.clone());
        req.metadata_mut()
            .insert("x-grayline-actor", self.actor.clone());
        Ok(req)
    }
}

/// The leader's answer to a forwarded call, as this replica's own error (field paths kept).
fn from_status(s: tonic::Status) -> ApiError {
    let message = s.message().to_string();
    match s.code() {
        tonic::Code::InvalidArgument => ApiError::Invalid(Invalid {
            errors: message
                .split("; ")
                .map(|part| match part.split_once(": ") {
                    Some((field, msg)) if !field.contains(' ') => FieldError::new(field, msg),
                    _ => FieldError::new("", part),
                })
                .collect(),
        }),
        tonic::Code::NotFound => ApiError::NotFound(message),
        tonic::Code::AlreadyExists => ApiError::AlreadyExists(message),
        tonic::Code::FailedPrecondition => ApiError::Precondition(message),
        tonic::Code::Unauthenticated => ApiError::Unauthenticated(message),
        _ => ApiError::Unavailable(format!(
            "the replica that drives the rollouts answered: {message}"
        )),
    }
}

impl Closed {
    fn find(&self, service: &str, version: &str, t: i64) -> Option<&crate::stats::ClosedSecond> {
        self.seconds
            .iter()
            .find(|c| c.point.time_unix_s == t && c.service == service && c.version == version)
    }
}

/// One version's second, the gates' way: only what the version did is evidence — its
/// judged sample (at most one answer per user and second, see `grayline_routing::judged`),
/// the 5xx among them (the proxy's 502/504 for a version it could not reach included) and
/// those slower than the frozen quantile. The fallbacks the proxies answered instead of
/// asking it (breaker open, concurrency limit reached) are passed apart, never as its errors.
/// From proxies that report no judged sample (older ones), every answer is judged.
fn sample(closed: &Closed, plan: &Plan, version: &str, t: i64, threshold: Option<u64>) -> Sample {
    let Some(c) = closed.find(&plan.service, version, t) else {
        return Sample::default();
    };
    let refused = c.point.fallbacks;
    let answered = c.point.answered();
    let j = &c.judged;
    if j.requests > 0 {
        let mut events = [0; grayline_rollout::plan::MAX_EVENT_GATES];
        for (n, g) in events.iter_mut().zip(&plan.gates.events) {
            *n = j.events.get(&g.event).map_or(0, |&e| e.min(j.requests));
        }
        return Sample {
            requests: j.requests,
            errors: j.errors.min(j.requests),
            slow: threshold.map_or(0, |t| j.slower_than(t).min(j.requests)),
            refused,
            answered,
            events,
            fresh: j.fresh,
        };
    }
    let slow = threshold.map_or(0, |t| {
        c.latency.len() - c.latency.count_between(0, t).min(c.latency.len())
    });
    // A proxy that reports no judged sample reports no events either: its seconds count
    // nothing for an event gate.
    Sample {
        requests: answered,
        errors: c.point.status_5xx.min(answered),
        slow: slow.min(answered),
        refused,
        answered,
        events: Default::default(),
        fresh: j.fresh,
    }
}

/// Words for the service's rules that send people to the canary or the baseline outside
/// the rollout's split: what the sample-ratio guard will find if new visitors match them.
fn rules_outside_split(service: &Service, r: &Rollout) -> String {
    // (rule, version) in policy order, each once.
    let mut found: Vec<(usize, &str)> = Vec::new();
    for (path, version) in service.version_references() {
        let rule = path
            .strip_prefix("policy.rules[")
            .and_then(|rest| rest[..rest.find(']')?].parse::<usize>().ok());
        if let Some(i) = rule
            && (version == r.plan.canary || version == r.baseline)
            && !found.contains(&(i, version))
        {
            found.push((i, version));
        }
    }
    if found.is_empty() {
        return String::new();
    }
    let words: Vec<String> = found
        .iter()
        .map(|&(i, version)| {
            let rule = match service.policy.rules.get(i).map(|rule| rule.name.as_str()) {
                Some(name) if !name.is_empty() => format!("rule `{name}`"),
                _ => format!("policy.rules[{i}]"),
            };
            format!("{rule} sends people to {version}")
        })
        .collect();
    format!(
        "; beware: {} outside the split, and the sample-ratio guard pauses the rollout if \
         new visitors come that way",
        words.join(", ")
    )
}

/// The `q` quantile of `h` once it holds enough requests to say.
fn frozen_quantile(h: &Histogram<u64>, q: f64) -> Option<u64> {
    let needed = (FREEZE_TAIL_REQUESTS / (1.0 - q)).max(100.0);
    (h.len() as f64 >= needed).then(|| h.value_at_quantile(q).max(1))
}

/// The latency gate's threshold from the baseline's latencies `h`, and — for a plan that must
/// catch a canary `detect` times slower — the share of `h` above `threshold / detect` over its
/// share above the threshold: what such a canary would show.
fn latency_threshold(h: &Histogram<u64>, q: f64, detect: Option<f64>) -> Option<LatencyThreshold> {
    let threshold_us = frozen_quantile(h, q)?;
    let above = |us: u64| (h.len() - h.count_between(0, us).min(h.len())) as f64;
    let detect_ratio = detect.and_then(|factor| {
        let at = above(threshold_us);
        (at > 0.0).then(|| above((threshold_us as f64 / factor) as u64) / at)
    });
    Some(LatencyThreshold {
        threshold_us,
        detect_ratio,
    })
}

/// What the frozen latency detect ratio means, for the note that freezes it.
fn detect_words(r: &Rollout) -> String {
    match (r.plan.detect_latency(), r.latency_detect_ratio) {
        (Some(factor), Some(ratio)) => format!(
            "; a canary {factor}× slower would show {ratio:.2}× the baseline's slow share{}",
            match r.plan.gates.latency.as_ref() {
                Some(g) if ratio < g.tolerated_ratio => format!(
                    ", below the tolerated {}×: judged at {}×",
                    g.tolerated_ratio, g.tolerated_ratio
                ),
                _ => String::new(),
            }
        ),
        _ => String::new(),
    }
}

fn quantile_name(q: f64) -> String {
    let p = q * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round())
    } else {
        format!("{p:.1}")
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn view(r: &Record) -> RolloutView {
    RolloutView::of(&r.rollout, r.revision)
}

/// What webhooks are told about a rollout besides the transition.
fn summary_json(r: &Rollout) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "service": r.plan.service,
        "canary": r.plan.canary,
        "baseline": r.baseline,
        "attempt": r.attempt,
        "phase": r.phase.name(),
        "step": r.step + 1,
        "steps": r.plan.steps.len(),
        "weight": r.weight(),
        "promotion": r.promotion.map(|p| p.name()),
        "canary_fallbacks": r.canary_fallbacks,
        "baseline_fallbacks": r.baseline_fallbacks,
        "gates": r.gates.iter().map(|g| serde_json::json!({
            "gate": g.kind,
            "name": g.metric.as_ref().map(|m| &m.name).or(g.event.as_ref().map(|e| &e.name)),
            "verdict": g.verdict,
            "canary_requests": g.canary.requests,
            "canary_events": g.canary.events,
            "baseline_requests": g.baseline.requests,
            "baseline_events": g.baseline.events,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_judge_never_sees_mirrored_copies() {
        let store = StatsStore::new(Arc::new(crate::metrics::ServerMetrics::new()));
        let mut closed = store.subscribe_closed();
        let now_s = now_unix_ms() / 1000;
        let t = now_s - 10;
        // 10 live requests of the canary, all fine, and 40 mirrored copies, all failed.
        store
            .ingest(&crate::stats::tests::live_and_mirrored(1, t * 1000, 10, 40))
            .await
            .unwrap();
        store.tick(now_s);
        let closed = closed.try_recv().unwrap();
        let plan = Plan::through("shop", "v2", &[500]);
        let canary = sample(&closed, &plan, "v2", t, Some(50_000));
        assert_eq!(
            (canary.requests, canary.errors, canary.slow),
            (10, 0, 0),
            "only the canary's live traffic is judged"
        );
    }

    #[tokio::test]
    async fn the_judge_sees_the_judged_sample_and_fallbacks_apart() {
        let store = StatsStore::new(Arc::new(crate::metrics::ServerMetrics::new()));
        let mut closed = store.subscribe_closed();
        let now_s = now_unix_ms() / 1000;
        let t = now_s - 10;
        // 100 answers, 50 of them failed — one heavy user's; the judged sample holds that
        // user once: 10 answers, 1 failed, 2 slower than 1 ms. And 30 fallbacks.
        let mut r = crate::stats::tests::live_and_mirrored(1, t * 1000, 100, 0);
        r.versions.truncate(1);
        let v = &mut r.versions[0];
        v.status_2xx = 50;
        v.status_5xx = 50;
        v.fallbacks = 30;
        v.judged = 10;
        v.judged_errors = 1;
        let mut buckets = vec![0; 60];
        buckets[grayline_routing::judged::latency_bucket(500)] = 8;
        buckets[grayline_routing::judged::latency_bucket(5_000)] = 2;
        v.judged_latency = buckets;
        // Declined payments: 20 answers, 3 of them judged; and an event no gate judges.
        let event = |name: &str, count, judged| grayline_proto::v1::EventCount {
            name: name.into(),
            count,
            judged,
        };
        v.events = vec![event("declined", 20, 3), event("paid", 5, 1)];
        store.ingest(&r).await.unwrap();
        store.tick(now_s);
        let closed = closed.try_recv().unwrap();
        let mut plan = Plan::through("shop", "v2", &[500]);
        plan.gates.events.push(grayline_rollout::plan::EventGate {
            event: "declined".into(),
            kind: grayline_rollout::plan::MetricKind::BadEvents,
            tolerated_ratio: 1.2,
            min_difference: 0.0,
            detect: None,
            mode: grayline_rollout::plan::Mode::Enforce,
        });
        let canary = sample(&closed, &plan, "v2", t, Some(1_000));
        assert_eq!(
            (canary.requests, canary.errors, canary.slow, canary.refused),
            (10, 1, 2, 30)
        );
        assert_eq!(canary.events[..2], [3, 0], "the gate's event, judged");
        // 30 refused against 100 answered is not "mostly refused", though the sample is 10.
        assert_eq!(canary.answered, 100);
        assert!(!canary.mostly_refused());
    }

    #[test]
    fn rules_that_send_people_to_either_version_outside_the_split_are_named() {
        use grayline_routing::{Condition, FieldMatch, MatchOp, Rule, Version};
        let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:1"]));
        for v in ["v2", "v3"] {
            s.versions.push(Version::new(v, &["127.0.0.1:2"]));
        }
        let rule = |name: &str, to: &str| Rule {
            name: name.into(),
            conditions: vec![Condition::Header(FieldMatch {
                name: "x".into(),
                op: MatchOp::Present,
                negate: false,
            })],
            route: Route::Version(to.into()),
            mirror: None,
        };
        s.policy.rules = vec![rule("testers", "v2"), rule("", "v3"), rule("", "v1")];
        let (r, _) = Rollout::start(
            1,
            Plan::through("shop", "v2", &[500]),
            "v1",
            StickyKey::ClientIp,
            "ci",
            0,
            None,
        );
        let words = rules_outside_split(&s, &r);
        assert_eq!(
            words,
            "; beware: rule `testers` sends people to v2, policy.rules[2] sends people to v1 \
             outside the split, and the sample-ratio guard pauses the rollout if new visitors \
             come that way"
        );
        s.policy.rules.truncate(0);
        assert_eq!(rules_outside_split(&s, &r), "");
    }

    #[test]
    fn quantiles_freeze_only_with_enough_requests() {
        let mut h = crate::stats::new_histogram();
        for i in 1..=999u64 {
            h.record(i * 10).unwrap();
        }
        assert_eq!(frozen_quantile(&h, 0.99), None);
        h.record(10_000).unwrap();
        let t = frozen_quantile(&h, 0.99).unwrap();
        assert!((9800..=9950).contains(&t), "{t}");
        assert!(frozen_quantile(&h, 0.5).is_some());
        assert_eq!(quantile_name(0.99), "99");
        assert_eq!(quantile_name(0.995), "99.5");
        assert_eq!(micros(48_200), "48 ms");
        assert_eq!(micros(1500), "1.5 ms");
    }
}
