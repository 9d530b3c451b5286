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

mod policy;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context as _;
use grayline_rollout::judge::AUTOMATIC;
use grayline_rollout::{
    Control, Effect, GateKind, Phase, Plan, Rollout, RolloutEvent, RolloutView, Sample, Second,
};
use grayline_routing::{FallbackPolicy, Route, Service, StickyKey};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::stats::{Closed, StatsStore};
use crate::store::{Change, Durable, HistoryEntry, Store, WriteContext, now_unix_ms};

pub use webhook::signature;

/// The cookie a rollout's split is sticky by when neither the plan nor the service says.
pub const DEFAULT_STICKY_COOKIE: &str = "grayline-user";
/// Minutes of the baseline's latency the latency gate's quantile is frozen from at the start.
const FREEZE_MINUTES: usize = 5;
/// At least this many baseline requests per `1 − quantile` before a quantile is frozen
/// (1000 for a p99, 20 for a p50), and never fewer than 100.
const FREEZE_TAIL_REQUESTS: f64 = 10.0;

/// What is stored per rollout.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    rollout: Rollout,
    /// The service revision the rollout last wrote (0: none yet).
    revision: u64,
    /// Effects decided but not yet known to be carried out.
    #[serde(default)]
    pending: Vec<Pending>,
}

/// An effect as stored until it is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Pending {
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
}

#[derive(Debug)]
pub struct Rollouts {
    store: Arc<Store>,
    stats: Arc<StatsStore>,
    tree: sled::Tree,
    durable: Arc<Durable>,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<RolloutEvent>>,
    webhooks: webhook::Webhooks,
    /// Seconds before this one were not seen by this process and are never judged.
    resume_from: i64,
}

const NEXT_ID_KEY: &[u8] = b"next_id";

fn key(id: u64) -> [u8; 9] {
    let mut k = [b'r'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl Rollouts {
    /// Loads every stored rollout. `webhook_secret` signs webhook bodies.
    pub fn open(
        store: Arc<Store>,
        stats: Arc<StatsStore>,
        webhook_secret: Vec<u8>,
    ) -> anyhow::Result<Rollouts> {
        let tree = store.tree("rollouts")?;
        let mut inner = Inner {
            next_id: 1,
            ..Inner::default()
        };
        for item in tree.scan_prefix(b"r") {
            let (k, v) = item.context("reading stored rollouts")?;
            let id = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .with_context(|| format!("stored rollout key {k:?} is damaged"))?;
            let record: Record = serde_json::from_slice(&v)
                .with_context(|| format!("stored rollout {id} is damaged"))?;
            inner.next_id = inner.next_id.max(id + 1);
            inner.records.insert(id, record);
        }
        if let Some(v) = tree.get(NEXT_ID_KEY)? {
            let stored = v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| anyhow::anyhow!("the stored next rollout id is damaged"))?;
            inner.next_id = inner.next_id.max(stored);
        }
        let active = inner
            .records
            .values()
            .filter(|r| !r.rollout.phase.is_done())
            .count();
        tracing::info!(rollouts = inner.records.len(), active, "rollouts loaded");
        Ok(Rollouts {
            durable: store.durable(),
            store,
            stats,
            tree,
            inner: Mutex::new(inner),
            events: broadcast::channel(256).0,
            webhooks: webhook::Webhooks::new(webhook_secret)?,
            resume_from: now_unix_ms() / 1000 + 1,
        })
    }

    /// Every rollout transition as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RolloutEvent>> {
        self.events.subscribe()
    }

    pub async fn get(&self, id: u64) -> Result<RolloutView, ApiError> {
        let inner = self.inner.lock().await;
        inner
            .records
            .get(&id)
            .map(view)
            .ok_or_else(|| ApiError::NotFound(format!("rollout {id} not found")))
    }

    /// The newest rollout of `service`.
    pub async fn for_service(&self, service: &str) -> Result<RolloutView, ApiError> {
        let inner = self.inner.lock().await;
        inner
            .records
            .values()
            .rev()
            .find(|r| r.rollout.plan.service == service)
            .map(view)
            .ok_or_else(|| ApiError::NotFound(format!("service `{service}` has no rollout")))
    }

    /// Newest first, for one service or all; only the running ones if `active_only`.
    pub async fn list(&self, service: Option<&str>, active_only: bool) -> Vec<RolloutView> {
        let inner = self.inner.lock().await;
        inner
            .records
            .values()
            .rev()
            .filter(|r| service.is_none_or(|s| s == r.rollout.plan.service))
            .filter(|r| !active_only || !r.rollout.phase.is_done())
            .map(view)
            .collect()
    }

    /// Checks `plan` (field paths start at `plan.`) and starts it at its first step.
    pub async fn start(self: &Arc<Self>, plan: Plan, actor: &str) -> Result<RolloutView, ApiError> {
        let mut inner = self.inner.lock().await;
        let record = self.store.get(&plan.service);
        let service = record.as_ref().map(|r| &r.service);
        plan.check(service)
            .map_err(|e| ApiError::Invalid(e.under("plan")))?;
        let service = service.expect("checked: the service exists");
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
            frozen_quantile(&recent, g.quantile)
        });
        let id = inner.next_id;
        inner.next_id += 1;
        self.tree
            .insert(NEXT_ID_KEY, &inner.next_id.to_be_bytes())
            .map_err(ApiError::from)?;
        let baseline = service.stable.clone();
        let (mut rollout, effects) =
            Rollout::start(id, plan, &baseline, sticky, actor, now_unix_ms(), threshold);
        if let Some(t) = threshold {
            rollout.transitions[0].reason.push_str(&format!(
                "; latency threshold {} frozen from the last minutes",
                micros(t)
            ));
        }
        inner.records.insert(
            id,
            Record {
                rollout,
                revision: 0,
                pending: Vec::new(),
            },
        );
        self.apply(&mut inner, id, effects).await?;
        Ok(view(&inner.records[&id]))
    }

    /// Applies an operator's control to rollout `id`.
    pub async fn control(
        self: &Arc<Self>,
        id: u64,
        control: Control,
        actor: &str,
    ) -> Result<RolloutView, ApiError> {
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
        self.persist(record).await?;
        for t in notes {
            self.notify(record, t);
        }
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
                self.persist(record).await?;
                for e in effects {
                    if let Effect::Notify(t) = e {
                        self.notify(record, t);
                    }
                }
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
        make: impl FnOnce(&Service, &Rollout) -> Service,
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
        let mut unchanged = false;
        let result = self
            .store
            .write(&name, &cx, |existing| {
                let existing = existing
                    .ok_or_else(|| ApiError::NotFound(format!("service `{name}` not found")))?;
                let after = make(&existing.service, r);
                if after == existing.service {
                    unchanged = true;
                    // Nothing to write; refuse quietly so the store writes nothing.
                    return Err(ApiError::Precondition(String::new()));
                }
                Ok(Change {
                    action: policy::action(promote),
                    after: Some(after),
                    summary,
                })
            })
            .await;
        match result {
            Ok((entry, _)) => {
                record.revision = entry.revision;
                Ok(())
            }
            Err(_) if unchanged => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn persist(&self, record: &Record) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(record).context("encoding a rollout")?;
        self.tree.insert(key(record.rollout.id), bytes)?;
        self.durable.sync().await?;
        Ok(())
    }

    fn notify(&self, record: &Record, transition: grayline_rollout::Transition) {
        let r = &record.rollout;
        let event = RolloutEvent {
            id: r.id,
            service: r.plan.service.clone(),
            canary: r.plan.canary.clone(),
            attempt: r.attempt,
            transition,
        };
        if !r.plan.webhooks.is_empty() {
            let body = serde_json::json!({
                "event": "transition",
                "rollout": summary_json(r),
                "transition": event.transition,
            });
            let delivery = format!("{}-{}", r.id, event.transition.seq);
            self.webhooks
                .notify(&r.plan.webhooks, delivery, body.to_string().into_bytes());
        }
        let _ = self.events.send(Arc::new(event));
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
            if let Err(e) = this.control(id, control, "webhooks").await {
                // The rollout moved on meanwhile (paused, aborted, …).
                tracing::info!(rollout = id, error = %e, "webhook answer no longer applies");
            }
        });
    }

    /// Runs the rollouts until `stop`: judges every closed second, pauses rollouts whose
    /// service someone else changes, and first finishes what a crash interrupted.
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) {
        let mut closed = self.stats.subscribe_closed();
        let mut changes = self.store.events();
        tokio::spawn(async move {
            self.recover().await;
            let mut previous: Option<i64> = None;
            loop {
                tokio::select! {
                    c = closed.recv() => match c {
                        Ok(c) => self.judge(&c, &mut previous).await,
                        // Seconds we did not get are not observed.
                        Err(broadcast::error::RecvError::Lagged(_)) => previous = None,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    e = changes.recv() => match e {
                        Ok(entry) => self.on_change(&entry).await,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "rollouts fell behind the store's changes");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// After a restart: carries out pending effects, notices changes made by others since
    /// the rollout's last write, and asks again where an ask was in flight.
    async fn recover(self: &Arc<Self>) {
        let mut inner = self.inner.lock().await;
        let ids: Vec<u64> = inner
            .records
            .iter()
            .filter(|(_, r)| !r.pending.is_empty() || !r.rollout.phase.is_done())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let record = inner.records.get_mut(&id).expect("listed");
            let service = record.rollout.plan.service.clone();
            if let Ok(latest) = self.store.history(Some(&service), 0, 1)
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
        let catalog = self.store.catalog();
        for id in ids {
            let mut judged = false;
            for t in from..=closed.upto {
                let record = inner.records.get_mut(&id).expect("listed");
                let r = &record.rollout;
                if r.phase.is_done() || t <= r.last_second {
                    continue;
                }
                let service = catalog.services.get(&r.plan.service).map(|s| &s.service);
                let baseline_latency = closed.find(&r.plan.service, &r.baseline, t);
                let latency_gate = r.plan.gates.latency.as_ref().map(|g| g.quantile);
                if let (Some(q), None) = (latency_gate, r.latency_threshold_us) {
                    let warm = inner
                        .warming
                        .entry(id)
                        .or_insert_with(crate::stats::new_histogram);
                    if let Some(c) = baseline_latency {
                        let _ = warm.add(&c.latency);
                    }
                    if let Some(threshold) = frozen_quantile(warm, q) {
                        let requests = warm.len();
                        inner.warming.remove(&id);
                        let record = inner.records.get_mut(&id).expect("listed");
                        record.rollout.freeze_latency(Some(threshold));
                        let effects = record.rollout.note(
                            AUTOMATIC,
                            now_unix_ms(),
                            format!(
                                "latency gate: the baseline's p{} is {}, frozen from {requests} requests",
                                quantile_name(q),
                                micros(threshold)
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
                    canary: sample(
                        closed,
                        service,
                        &r.plan.service,
                        &r.plan.canary,
                        t,
                        threshold,
                    ),
                    baseline: sample(closed, service, &r.plan.service, &r.baseline, t, threshold),
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

impl Closed {
    fn find(&self, service: &str, version: &str, t: i64) -> Option<&crate::stats::ClosedSecond> {
        self.seconds
            .iter()
            .find(|c| c.point.time_unix_s == t && c.service == service && c.version == version)
    }
}

/// One version's second, the gates' way: errors are 5xx answers plus fallbacks that were not
/// 5xx (a "return empty" fallback answers 204); slow requests are those above the frozen
/// quantile.
fn sample(
    closed: &Closed,
    service: Option<&Service>,
    name: &str,
    version: &str,
    t: i64,
    threshold: Option<u64>,
) -> Sample {
    let Some(c) = closed.find(name, version, t) else {
        return Sample::default();
    };
    let silent_fallbacks = service
        .and_then(|s| s.version(version))
        .is_some_and(|v| v.fallback.policy == FallbackPolicy::ReturnEmpty);
    let errors = c.point.status_5xx
        + if silent_fallbacks {
            c.point.fallbacks
        } else {
            0
        };
    let slow = threshold.map_or(0, |t| {
        c.latency.len() - c.latency.count_between(0, t).min(c.latency.len())
    });
    Sample {
        requests: c.point.requests,
        errors: errors.min(c.point.requests),
        slow: slow.min(c.point.requests),
    }
}

/// The `q` quantile of `h` once it holds enough requests to say.
fn frozen_quantile(h: &Histogram<u64>, q: f64) -> Option<u64> {
    let needed = (FREEZE_TAIL_REQUESTS / (1.0 - q)).max(100.0);
    (h.len() as f64 >= needed).then(|| h.value_at_quantile(q).max(1))
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
        "gates": r.gates.iter().map(|g| serde_json::json!({
            "gate": match g.kind { GateKind::Errors => "errors", GateKind::Latency => "latency", GateKind::Ceiling => "ceiling" },
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
        let canary = sample(&closed, None, "shop", "v2", t, Some(50_000));
        assert_eq!(
            (canary.requests, canary.errors, canary.slow),
            (10, 0, 0),
            "only the canary's live traffic is judged"
        );
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
