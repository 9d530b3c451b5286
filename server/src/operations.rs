//! The operations the config API offers, shared by the gRPC and the JSON front ends so both
//! behave the same: same checks, same errors, same field paths.
//!
//! Field paths in errors are relative to the request: `service.versions[0].endpoints[0]` for a
//! whole service, `version.endpoints[0]` for a version, `policy.rules[2]…` for a policy.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use grayline_routing::useragent::classify;
use grayline_routing::{
    CompiledService, Invalid, Lane, Matched, Policy, RequestFacts, Service, Version, describe,
};

use crate::access::{Access, Caller};
use crate::error::ApiError;
use crate::metrics::ServerMetrics;
use crate::proxies::Registry;
use crate::rollouts::Rollouts;
use crate::stats::StatsStore;
use crate::store::{Action, Change, HistoryEntry, ServiceRecord, Store, WriteContext};
use grayline_rollout::{Control, Plan, RolloutEvent, RolloutView};
pub use grayline_routing::api::Simulation;

/// Default and maximum number of history entries per call.
pub const HISTORY_DEFAULT_LIMIT: usize = 100;
pub const HISTORY_MAX_LIMIT: usize = 1000;

#[derive(Debug)]
pub struct Operations {
    pub store: Arc<Store>,
    pub proxies: Arc<Registry>,
    pub instances: Arc<crate::instances::Instances>,
    pub stats: Arc<StatsStore>,
    pub rollouts: Arc<Rollouts>,
    pub metrics: Arc<ServerMetrics>,
}

/// Reads the actor from the `x-grayline-actor` header or metadata; "admin" when absent.
pub fn actor(value: Option<&str>) -> Result<String, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok("admin".to_string()),
        Some(a) if a.len() <= 64 && a.chars().all(|c| !c.is_control()) => Ok(a.to_string()),
        Some(_) => Err(ApiError::invalid(
            "x-grayline-actor",
            "at most 64 printable characters",
        )),
    }
}

impl Operations {
    pub fn list(&self) -> (u64, Vec<Arc<ServiceRecord>>) {
        let catalog = self.store.catalog();
        (
            catalog.revision,
            catalog.services.values().cloned().collect(),
        )
    }

    pub fn get(&self, name: &str) -> Result<Arc<ServiceRecord>, ApiError> {
        self.store.get(name).ok_or_else(|| not_found(name))
    }

    pub async fn create_service(
        &self,
        cx: &WriteContext,
        service: Service,
    ) -> Result<ServiceRecord, ApiError> {
        cx.caller.may(Access::Admin, &service.name)?;
        let name = service.name.clone();
        let versions: Vec<&str> = service.versions.iter().map(|v| v.name.as_str()).collect();
        let summary = format!("created service {name} with {}", versions.join(", "));
        let (_, record) = self
            .store
            .write(&name, cx, |existing| {
                if existing.is_some() {
                    return Err(ApiError::AlreadyExists(format!(
                        "service `{name}` already exists"
                    )));
                }
                Ok(Change {
                    action: Action::Create,
                    after: Some(service.clone()),
                    summary: summary.clone(),
                })
            })
            .await
            .map_err(|e| under(e, "service"))?;
        Ok(written(record))
    }

    pub async fn update_service(
        &self,
        cx: &WriteContext,
        service: Service,
    ) -> Result<ServiceRecord, ApiError> {
        cx.caller.may(Access::Admin, &service.name)?;
        let name = service.name.clone();
        let (_, record) = self
            .store
            .write(&name, cx, |existing| {
                existing.ok_or_else(|| not_found(&name))?;
                Ok(Change {
                    action: Action::Update,
                    summary: format!("replaced service {name}"),
                    after: Some(service.clone()),
                })
            })
            .await
            .map_err(|e| under(e, "service"))?;
        Ok(written(record))
    }

    /// Deletes a service; returns the revision of the deletion.
    pub async fn delete_service(&self, cx: &WriteContext, name: &str) -> Result<u64, ApiError> {
        cx.caller.may(Access::Admin, name)?;
        let (entry, _) = self
            .store
            .write(name, cx, |existing| {
                existing.ok_or_else(|| not_found(name))?;
                Ok(Change {
                    action: Action::Delete,
                    after: None,
                    summary: format!("deleted service {name}"),
                })
            })
            .await?;
        Ok(entry.revision)
    }

    pub async fn create_version(
        &self,
        cx: &WriteContext,
        service: &str,
        version: Version,
    ) -> Result<ServiceRecord, ApiError> {
        cx.caller.may(Access::Admin, service)?;
        let vname = version.name.clone();
        let index = std::sync::atomic::AtomicUsize::new(0);
        let result = self
            .store
            .write(service, cx, |existing| {
                let mut s = existing.ok_or_else(|| not_found(service))?.service.clone();
                index.store(s.versions.len(), std::sync::atomic::Ordering::Relaxed);
                if s.version(&vname).is_some() {
                    return Err(ApiError::AlreadyExists(format!(
                        "service `{service}` already has a version `{vname}`"
                    )));
                }
                let summary = format!(
                    "added version {vname} ({})",
                    plural(version.endpoints.len(), "endpoint")
                );
                s.versions.push(version.clone());
                Ok(Change {
                    action: Action::CreateVersion,
                    after: Some(s),
                    summary,
                })
            })
            .await;
        let (_, record) = result
            .map_err(|e| reroot_version(e, index.load(std::sync::atomic::Ordering::Relaxed)))?;
        Ok(written(record))
    }

    pub async fn update_version(
        &self,
        cx: &WriteContext,
        service: &str,
        version: Version,
    ) -> Result<ServiceRecord, ApiError> {
        cx.caller.may(Access::Admin, service)?;
        let vname = version.name.clone();
        let index = std::sync::atomic::AtomicUsize::new(0);
        let result = self
            .store
            .write(service, cx, |existing| {
                let mut s = existing.ok_or_else(|| not_found(service))?.service.clone();
                let i = s
                    .versions
                    .iter()
                    .position(|v| v.name == vname)
                    .ok_or_else(|| version_not_found(service, &vname))?;
                index.store(i, std::sync::atomic::Ordering::Relaxed);
                s.versions[i] = version.clone();
                Ok(Change {
                    action: Action::UpdateVersion,
                    after: Some(s),
                    summary: format!("changed version {vname}"),
                })
            })
            .await;
        let (_, record) = result
            .map_err(|e| reroot_version(e, index.load(std::sync::atomic::Ordering::Relaxed)))?;
        Ok(written(record))
    }

    pub async fn delete_version(
        &self,
        cx: &WriteContext,
        service: &str,
        version: &str,
    ) -> Result<ServiceRecord, ApiError> {
        cx.caller.may(Access::Admin, service)?;
        let (_, record) = self
            .store
            .write(service, cx, |existing| {
                let mut s = existing.ok_or_else(|| not_found(service))?.service.clone();
                s.version(version)
                    .ok_or_else(|| version_not_found(service, version))?;
                if s.stable == version {
                    return Err(ApiError::Precondition(format!(
                        "version `{version}` is the stable version of `{service}`; promote another version first"
                    )));
                }
                if let Some((path, _)) = s
                    .version_references()
                    .into_iter()
                    .find(|(_, v)| *v == version)
                {
                    return Err(ApiError::Precondition(format!(
                        "version `{version}` is still routed to by {path}; change the policy first"
                    )));
                }
                s.versions.retain(|v| v.name != version);
                Ok(Change {
                    action: Action::DeleteVersion,
                    after: Some(s),
                    summary: format!("removed version {version}"),
                })
            })
            .await?;
        Ok(written(record))
    }

    pub async fn set_policy(
        &self,
        cx: &WriteContext,
        service: &str,
        policy: Policy,
    ) -> Result<ServiceRecord, ApiError> {
        cx.caller.may(Access::Operator, service)?;
        let (_, record) = self
            .store
            .write(service, cx, |existing| {
                let mut s = existing.ok_or_else(|| not_found(service))?.service.clone();
                s.policy = policy.clone();
                let summary = format!("policy: {}", describe::policy(&s).join("; "));
                Ok(Change {
                    action: Action::SetPolicy,
                    after: Some(s),
                    summary,
                })
            })
            .await?;
        Ok(written(record))
    }

    /// Makes `version` stable and sends it all traffic (the rules are cleared).
    pub async fn promote(
        &self,
        cx: &WriteContext,
        service: &str,
        version: &str,
    ) -> Result<ServiceRecord, ApiError> {
        cx.caller.may(Access::Operator, service)?;
        let (_, record) = self
            .store
            .write(service, cx, |existing| {
                let mut s = existing.ok_or_else(|| not_found(service))?.service.clone();
                let v = s
                    .version(version)
                    .ok_or_else(|| version_not_found(service, version))?;
                if let Some(tag) = v.tag()
                    && self.instances.registered_with(service, tag) == 0
                {
                    return Err(ApiError::Precondition(format!(
                        "version `{version}` of `{service}` has no instance registered (tag \
                         `{tag}`): promoting it would send every request to its fallback"
                    )));
                }
                s.stable = version.to_string();
                s.policy = Policy::default();
                Ok(Change {
                    action: Action::Promote,
                    after: Some(s),
                    summary: format!("promoted {version}: 100 % and stable"),
                })
            })
            .await?;
        Ok(written(record))
    }

    /// Puts `service` back as it was right after `revision`.
    pub async fn restore(
        &self,
        cx: &WriteContext,
        service: &str,
        revision: u64,
    ) -> Result<ServiceRecord, ApiError> {
        cx.caller.may(Access::Operator, service)?;
        // Revisions start at 1; 0 is what an unset field reads as.
        if revision == 0 {
            return Err(ApiError::invalid("revision", "required"));
        }
        let entry = self
            .store
            .entry(revision)
            .await?
            .filter(|e| e.service == service)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "revision {revision} is not in the history of service `{service}`"
                ))
            })?;
        let Some(target) = entry.after else {
            return Err(ApiError::Precondition(format!(
                "revision {revision} deleted service `{service}`; restore a revision from before it"
            )));
        };
        let (_, record) = self
            .store
            .write(service, cx, |_| {
                Ok(Change {
                    action: Action::Restore,
                    after: Some(target.clone()),
                    summary: format!("restored revision {revision}"),
                })
            })
            .await
            .map_err(|e| match e {
                ApiError::Invalid(invalid) => ApiError::Precondition(format!(
                    "revision {revision} cannot be restored now: {invalid}"
                )),
                other => other,
            })?;
        Ok(written(record))
    }

    pub async fn history(
        &self,
        service: Option<&str>,
        before_revision: u64,
        limit: u32,
    ) -> Result<Vec<HistoryEntry>, ApiError> {
        let limit = match limit as usize {
            0 => HISTORY_DEFAULT_LIMIT,
            n => n.min(HISTORY_MAX_LIMIT),
        };
        self.store.history(service, before_revision, limit).await
    }

    /// Every accepted change after `from_revision` (0: from now on), replayed from the history
    /// and then followed live, for one service (or all when `service` is empty). The stream
    /// ends when the receiver is dropped or the server stops.
    pub fn watch(
        &self,
        from_revision: u64,
        service: String,
        shutdown: CancellationToken,
    ) -> mpsc::Receiver<Result<HistoryEntry, ApiError>> {
        let store = self.store.clone();
        // Subscribe before reading the replay, so nothing falls between the two.
        let mut events = store.events();
        let mut last = if from_revision == 0 {
            store.catalog().revision
        } else {
            from_revision
        };
        let wanted = move |e: &HistoryEntry| service.is_empty() || service == e.service;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let replay = match store.history_after(last).await {
                    Ok(entries) => entries,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                for entry in replay {
                    last = entry.revision;
                    if wanted(&entry) && tx.send(Ok(entry)).await.is_err() {
                        return;
                    }
                }
                // Follow live events until we fall behind, then replay again.
                loop {
                    tokio::select! {
                        event = events.recv() => match event {
                            Ok(entry) if entry.revision > last => {
                                last = entry.revision;
                                if wanted(&entry) && tx.send(Ok((*entry).clone())).await.is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        () = tx.closed() => return,
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        });
        rx
    }

    /// The Prometheus text: gauges are read now, counters were kept as reports came in.
    pub fn metrics_text(&self) -> String {
        let connected = self.proxies.local().iter().filter(|p| p.connected).count();
        self.metrics.proxies_connected.set(connected as i64);
        self.metrics
            .revision
            .set(self.store.catalog().revision as i64);
        self.metrics.encode()
    }

    /// Decides `request` with the stored service, or with `draft` when given (validated,
    /// never stored).
    pub fn simulate(
        &self,
        service: &str,
        draft: Option<Service>,
        request: &RequestFacts,
    ) -> Result<Simulation, ApiError> {
        if draft.is_none() && service.is_empty() {
            return Err(ApiError::invalid("service", "required (or give a draft)"));
        }
        let service = match draft {
            Some(draft) => draft,
            None => self.get(service)?.service.clone(),
        };
        let compiled = CompiledService::compile(&service).map_err(|e| under_invalid(e, "draft"))?;
        if !request.client_ip.trim().is_empty()
            && request
                .client_ip
                .trim()
                .parse::<std::net::IpAddr>()
                .is_err()
        {
            return Err(ApiError::invalid(
                "request.client_ip",
                format!("`{}` is not an IP address", request.client_ip),
            ));
        }
        if !request.lane.is_empty() && !grayline_routing::lane::is_lane_name(&request.lane) {
            return Err(ApiError::invalid(
                "request.lane",
                format!(
                    "`{}` is not a lane name: letters, digits, `.`, `_` and `-`",
                    request.lane
                ),
            ));
        }
        let decision = compiled.decide(request, fastrand::u64(..));
        let ua = classify(&request.user_agent);
        let (rule_index, rule_name) = match decision.matched {
            Matched::Rule(i) => (i as i32, service.policy.rules[i].name.clone()),
            Matched::Default | Matched::Lane => (-1, String::new()),
        };
        let lane = match decision.lane {
            Lane::None => String::new(),
            Lane::Carried => request.lane.clone(),
            Lane::Entered(lane) => lane.to_string(),
        };
        Ok(Simulation {
            version: decision.version_name.to_string(),
            rule_index,
            rule_name,
            explanation: describe::decision(&service, &decision),
            bucket: decision.bucket,
            os: ua.os.name().to_string(),
            os_version: ua.os_version.to_string(),
            browser: ua.browser.name().to_string(),
            browser_version: ua.browser_version.to_string(),
            lane,
            mirror: decision
                .mirror
                .map(|m| service.versions[m].name.clone())
                .unwrap_or_default(),
        })
    }
}

/// The instance registry: both front ends (and the proxy stream) call these.
impl Operations {
    /// Registers or renews an instance; `role` says who asks.
    pub async fn register(
        &self,
        r: crate::instances::Registration,
        by: &str,
    ) -> Result<crate::instances::Registered, ApiError> {
        self.instances.register(r, by).await
    }

    pub async fn keep_alive(&self, service: &str, address: &str) -> Result<u32, ApiError> {
        check_instance_key(service, address)?;
        self.instances.keep_alive(service, address).await
    }

    pub async fn deregister(&self, service: &str, address: &str) -> Result<bool, ApiError> {
        check_instance_key(service, address)?;
        self.instances.deregister(service, address).await
    }

    /// The instances registered now, of `service` (or all when empty), with the versions
    /// that take each and the proxies that eject it.
    pub fn instances(&self, service: &str) -> Vec<grayline_routing::api::InstanceView> {
        let service = (!service.is_empty()).then_some(service);
        let proxies = self.proxies.list();
        self.instances
            .list(service)
            .into_iter()
            .map(|l| {
                let r = &l.record;
                grayline_routing::api::InstanceView {
                    versions: self.instances.versions_of(&r.service, &r.tag),
                    ejected_by: proxies
                        .iter()
                        .filter(|p| {
                            p.ejected_endpoints
                                .iter()
                                .any(|e| e.service == r.service && e.endpoint == r.address)
                        })
                        .map(|p| p.id.clone())
                        .collect(),
                    service: r.service.clone(),
                    tag: r.tag.clone(),
                    address: r.address.clone(),
                    metadata: r.metadata.clone(),
                    ttl_seconds: r.ttl_seconds,
                    registered_unix_ms: r.registered_unix_ms,
                    last_renewed_unix_ms: l.renewed_unix_ms,
                    expires_unix_ms: l.expires_unix_ms(),
                    registered_by: r.registered_by.clone(),
                }
            })
            .collect()
    }
}

fn check_instance_key(service: &str, address: &str) -> Result<(), ApiError> {
    if service.is_empty() {
        return Err(ApiError::invalid("service", "required"));
    }
    if address.is_empty() {
        return Err(ApiError::invalid("address", "required"));
    }
    Ok(())
}

/// Rollouts: both front ends call these, so checks and errors are the same.
impl Operations {
    pub async fn start_rollout(
        &self,
        caller: &Caller,
        actor: &str,
        plan: Plan,
    ) -> Result<RolloutView, ApiError> {
        caller.may(Access::Operator, &plan.service)?;
        let tag = self.store.get(&plan.service).and_then(|r| {
            r.service
                .version(&plan.canary)
                .and_then(|v| v.tag().map(str::to_string))
        });
        if let Some(tag) = tag
            && self.instances.registered_with(&plan.service, &tag) == 0
        {
            return Err(ApiError::Precondition(format!(
                "canary `{}` of `{}` has no instance registered (tag `{tag}`): there would be \
                 nothing to judge; start its instances first",
                plan.canary, plan.service
            )));
        }
        self.rollouts.start(plan, actor).await
    }

    /// The last hour of a plan's metric gate per version (see [`Rollouts::preview_metric`]):
    /// an operator's, since it makes the server query the plan's Prometheus.
    pub async fn preview_metric(
        &self,
        caller: &Caller,
        plan: &Plan,
        gate: &str,
    ) -> Result<crate::rollouts::prometheus::Preview, ApiError> {
        caller.may(Access::Operator, &plan.service)?;
        self.rollouts.preview_metric(plan, gate).await
    }

    /// By id, or (id 0) the newest of `service`.
    pub async fn get_rollout(&self, id: u64, service: &str) -> Result<RolloutView, ApiError> {
        match (id, service) {
            (0, "") => Err(ApiError::invalid("id", "give a rollout id or a service")),
            (0, service) => self.rollouts.for_service(service).await,
            (id, _) => self.rollouts.get(id).await,
        }
    }

    pub async fn list_rollouts(
        &self,
        service: &str,
        active_only: bool,
    ) -> Result<Vec<RolloutView>, ApiError> {
        let service = (!service.is_empty()).then_some(service);
        self.rollouts.list(service, active_only).await
    }

    pub async fn control_rollout(
        &self,
        caller: &Caller,
        actor: &str,
        id: u64,
        control: Control,
    ) -> Result<RolloutView, ApiError> {
        if id == 0 {
            return Err(ApiError::invalid("id", "required"));
        }
        if caller.access < Access::Admin || caller.services.is_some() {
            let service = self.rollouts.get(id).await?.rollout.plan.service;
            caller.may(Access::Operator, &service)?;
        }
        self.rollouts.control(id, control, actor).await
    }

    /// Every rollout transition of `service` (or all, when empty) from now on, until the
    /// receiver is dropped or the server stops.
    pub fn watch_rollouts(
        &self,
        service: String,
        shutdown: CancellationToken,
    ) -> mpsc::Receiver<Arc<RolloutEvent>> {
        let mut events = self.rollouts.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(e) if service.is_empty() || e.service == service => {
                            if tx.send(e).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "a rollout watcher fell behind");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => return,
                }
            }
        });
        rx
    }
}

/// The control an action name stands for (the JSON API's `/rollouts/{id}/{action}`).
pub fn rollout_control(action: &str) -> Result<Control, ApiError> {
    Ok(match action {
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "approve" => Control::Approve,
        "skip" => Control::Skip,
        "promote" => Control::Promote,
        "abort" => Control::Abort,
        "retry" => Control::Retry,
        other => {
            return Err(ApiError::invalid(
                "action",
                format!(
                    "unknown action `{other}`: use pause, resume, approve, skip, promote, abort or retry"
                ),
            ));
        }
    })
}

fn written(record: Option<ServiceRecord>) -> ServiceRecord {
    record.expect("a write that keeps the service returns its record")
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("service `{name}` not found"))
}

fn version_not_found(service: &str, version: &str) -> ApiError {
    ApiError::NotFound(format!("service `{service}` has no version `{version}`"))
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn under_invalid(e: Invalid, prefix: &str) -> ApiError {
    ApiError::Invalid(e.under(prefix))
}

/// Prefixes the field paths of a validation error with the request field that held the
/// service.
fn under(e: ApiError, prefix: &str) -> ApiError {
    match e {
        ApiError::Invalid(invalid) => under_invalid(invalid, prefix),
        other => other,
    }
}

/// Errors about `versions[index]` become errors about the request's `version` field.
fn reroot_version(e: ApiError, index: usize) -> ApiError {
    match e {
        ApiError::Invalid(mut invalid) => {
            let from = format!("versions[{index}]");
            for err in &mut invalid.errors {
                if let Some(rest) = err.field.strip_prefix(&from) {
                    err.field = format!("version{rest}");
                }
            }
            ApiError::Invalid(invalid)
        }
        other => other,
    }
}
