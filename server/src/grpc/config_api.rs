//! The gRPC config API: thin translation between wire messages and [`Operations`].

use std::sync::Arc;

use grayline_proto::v1 as pb;
use grayline_proto::{policy_from_pb, service_from_pb, version_from_pb};
use grayline_routing::{Invalid, RequestFacts};
use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{entry_to_pb, proxy_to_pb, record_to_pb};
use crate::error::ApiError;
use crate::operations::{Operations, actor};
use crate::stats::{Select, series_to_pb};
use crate::store::WriteContext;

#[derive(Debug)]
pub struct ConfigApiService {
    ops: Arc<Operations>,
    shutdown: CancellationToken,
}

impl ConfigApiService {
    pub fn new(ops: Arc<Operations>, shutdown: CancellationToken) -> Self {
        ConfigApiService { ops, shutdown }
    }
}

fn write_context<T>(
    req: &Request<T>,
    expected_revision: Option<u64>,
) -> Result<WriteContext, Status> {
    let actor = actor(
        req.metadata()
            .get("x-grayline-actor")
            .and_then(|v| v.to_str().ok()),
    )?;
    Ok(WriteContext {
        actor,
        caller: super::caller_of(req),
        expected_revision,
        dry_run: false,
    })
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| ApiError::invalid(field, "required").into())
}

fn invalid_under(e: Invalid, prefix: &str) -> Status {
    ApiError::Invalid(e.under(prefix)).into()
}

fn name_required(name: &str, field: &str) -> Result<(), Status> {
    if name.is_empty() {
        Err(ApiError::invalid(field, "required").into())
    } else {
        Ok(())
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::config_api_server::ConfigApi for ConfigApiService {
    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Reply<pb::ListServicesResponse> {
        let (revision, records) = self.ops.list();
        Ok(Response::new(pb::ListServicesResponse {
            services: records.iter().map(|r| record_to_pb(r)).collect(),
            revision,
        }))
    }

    async fn get_service(&self, req: Request<pb::GetServiceRequest>) -> Reply<pb::ServiceRecord> {
        let name = &req.get_ref().name;
        name_required(name, "name")?;
        let record = self.ops.get(name)?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn create_service(
        &self,
        req: Request<pb::CreateServiceRequest>,
    ) -> Reply<pb::ServiceRecord> {
        let mut cx = write_context(&req, None)?;
        let req = req.into_inner();
        cx.dry_run = req.dry_run;
        let service = required(req.service, "service")?;
        let service = service_from_pb(service).map_err(|e| invalid_under(e, "service"))?;
        let record = self.ops.create_service(&cx, service).await?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn update_service(
        &self,
        req: Request<pb::UpdateServiceRequest>,
    ) -> Reply<pb::ServiceRecord> {
        let mut cx = write_context(&req, req.get_ref().expected_revision)?;
        let req = req.into_inner();
        cx.dry_run = req.dry_run;
        let service = required(req.service, "service")?;
        let service = service_from_pb(service).map_err(|e| invalid_under(e, "service"))?;
        let record = self.ops.update_service(&cx, service).await?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn delete_service(
        &self,
        req: Request<pb::DeleteServiceRequest>,
    ) -> Reply<pb::DeleteServiceResponse> {
        let cx = write_context(&req, req.get_ref().expected_revision)?;
        name_required(&req.get_ref().name, "name")?;
        let revision = self.ops.delete_service(&cx, &req.get_ref().name).await?;
        Ok(Response::new(pb::DeleteServiceResponse { revision }))
    }

    async fn create_version(
        &self,
        req: Request<pb::CreateVersionRequest>,
    ) -> Reply<pb::ServiceRecord> {
        let cx = write_context(&req, req.get_ref().expected_revision)?;
        let pb::CreateVersionRequest {
            service, version, ..
        } = req.into_inner();
        name_required(&service, "service")?;
        let version =
            version_from_pb(required(version, "version")?, "version").map_err(ApiError::from)?;
        let record = self.ops.create_version(&cx, &service, version).await?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn update_version(
        &self,
        req: Request<pb::UpdateVersionRequest>,
    ) -> Reply<pb::ServiceRecord> {
        let cx = write_context(&req, req.get_ref().expected_revision)?;
        let pb::UpdateVersionRequest {
            service, version, ..
        } = req.into_inner();
        name_required(&service, "service")?;
        let version =
            version_from_pb(required(version, "version")?, "version").map_err(ApiError::from)?;
        let record = self.ops.update_version(&cx, &service, version).await?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn delete_version(
        &self,
        req: Request<pb::DeleteVersionRequest>,
    ) -> Reply<pb::ServiceRecord> {
        let cx = write_context(&req, req.get_ref().expected_revision)?;
        let r = req.get_ref();
        name_required(&r.service, "service")?;
        name_required(&r.version, "version")?;
        let record = self.ops.delete_version(&cx, &r.service, &r.version).await?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn set_policy(&self, req: Request<pb::SetPolicyRequest>) -> Reply<pb::ServiceRecord> {
        let cx = write_context(&req, req.get_ref().expected_revision)?;
        let pb::SetPolicyRequest {
            service, policy, ..
        } = req.into_inner();
        name_required(&service, "service")?;
        let policy = policy_from_pb(required(policy, "policy")?).map_err(ApiError::from)?;
        let record = self.ops.set_policy(&cx, &service, policy).await?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn promote(&self, req: Request<pb::PromoteRequest>) -> Reply<pb::ServiceRecord> {
        let cx = write_context(&req, req.get_ref().expected_revision)?;
        let r = req.get_ref();
        name_required(&r.service, "service")?;
        name_required(&r.version, "version")?;
        let record = self.ops.promote(&cx, &r.service, &r.version).await?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn restore(&self, req: Request<pb::RestoreRequest>) -> Reply<pb::ServiceRecord> {
        let cx = write_context(&req, req.get_ref().expected_revision)?;
        let r = req.get_ref();
        name_required(&r.service, "service")?;
        let record = self.ops.restore(&cx, &r.service, r.revision).await?;
        Ok(Response::new(record_to_pb(&record)))
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> Reply<pb::HistoryResponse> {
        let r = req.get_ref();
        let service = (!r.service.is_empty()).then_some(r.service.as_str());
        let entries = self
            .ops
            .history(service, r.before_revision, r.limit)
            .await?;
        Ok(Response::new(pb::HistoryResponse {
            entries: entries.iter().map(entry_to_pb).collect(),
        }))
    }

    async fn simulate(&self, req: Request<pb::SimulateRequest>) -> Reply<pb::SimulateResponse> {
        let pb::SimulateRequest {
            service,
            draft,
            request,
        } = req.into_inner();
        let draft = draft
            .map(service_from_pb)
            .transpose()
            .map_err(|e| invalid_under(e, "draft"))?;
        let facts = request.map(facts_from_pb).unwrap_or_default();
        let sim = self.ops.simulate(&service, draft, &facts)?;
        Ok(Response::new(pb::SimulateResponse {
            version: sim.version,
            rule_index: sim.rule_index,
            rule_name: sim.rule_name,
            explanation: sim.explanation,
            bucket: sim.bucket.map(u32::from),
            os: sim.os,
            os_version: sim.os_version,
            browser: sim.browser,
            browser_version: sim.browser_version,
            lane: sim.lane,
            mirror: sim.mirror,
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::HistoryEntry, Status>> + Send>>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Reply<Self::WatchStream> {
        let pb::WatchRequest {
            from_revision,
            service,
        } = req.into_inner();
        let rx = self
            .ops
            .watch(from_revision, service, self.shutdown.clone());
        let stream =
            ReceiverStream::new(rx).map(|item| item.map(|e| entry_to_pb(&e)).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_stats(&self, req: Request<pb::StatsRequest>) -> Reply<pb::StatsResponse> {
        let r = req.get_ref();
        let service = (!r.service.is_empty()).then_some(r.service.as_str());
        let series = self
            .ops
            .stats
            .select(&Select {
                service,
                window_seconds: r.window_seconds,
                per_proxy: r.per_proxy,
                per_minute: r.per_minute,
                until_unix_s: r.until_unix_s,
            })
            .await?;
        Ok(Response::new(pb::StatsResponse {
            series: series.iter().map(series_to_pb).collect(),
        }))
    }

    type LiveStatsStream = ReceiverStream<Result<pb::StatsTick, Status>>;

    async fn live_stats(&self, req: Request<pb::LiveStatsRequest>) -> Reply<Self::LiveStatsStream> {
        let service = req.into_inner().service;
        let mut ticks = self.ops.stats.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let tick = tokio::select! {
                    t = ticks.recv() => match t {
                        Ok(t) => t,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    },
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => return,
                };
                let series = tick
                    .series
                    .iter()
                    .filter(|s| service.is_empty() || s.service == service)
                    .map(series_to_pb)
                    .collect();
                let msg = pb::StatsTick {
                    time_unix_s: tick.time_unix_s,
                    series,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_proxies(
        &self,
        _: Request<pb::ListProxiesRequest>,
    ) -> Reply<pb::ListProxiesResponse> {
        Ok(Response::new(pb::ListProxiesResponse {
            proxies: self
                .ops
                .proxies
                .list()
                .into_iter()
                .map(proxy_to_pb)
                .collect(),
        }))
    }
}

fn facts_from_pb(r: pb::RequestFacts) -> RequestFacts {
    RequestFacts {
        host: r.host,
        path: r.path,
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        cookies: r.cookies.into_iter().collect(),
        query: r.query.into_iter().collect(),
        user_agent: r.user_agent,
        client_ip: r.client_ip,
        lane: r.lane,
    }
}
