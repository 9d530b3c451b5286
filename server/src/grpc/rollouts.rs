//! The gRPC rollouts API: thin translation between wire messages and [`Operations`].

use std::pin::Pin;
use std::sync::Arc;

use grayline_proto::v1 as pb;
use grayline_proto::{plan_from_pb, status_to_pb};
use grayline_rollout::Control;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::operations::{Operations, actor};

#[derive(Debug)]
pub struct RolloutsService {
    ops: Arc<Operations>,
    shutdown: CancellationToken,
}

impl RolloutsService {
    pub fn new(ops: Arc<Operations>, shutdown: CancellationToken) -> Self {
        RolloutsService { ops, shutdown }
    }
}

fn actor_of<T>(req: &Request<T>) -> Result<String, Status> {
    Ok(actor(
        req.metadata()
            .get("x-grayline-actor")
            .and_then(|v| v.to_str().ok()),
    )?)
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::rollouts_server::Rollouts for RolloutsService {
    async fn start_rollout(
        &self,
        req: Request<pb::StartRolloutRequest>,
    ) -> Reply<pb::RolloutStatus> {
        let actor = actor_of(&req)?;
        let caller = super::caller_of(&req);
        let plan = req
            .into_inner()
            .plan
            .ok_or_else(|| Status::from(ApiError::invalid("plan", "required")))?;
        let plan = plan_from_pb(plan).map_err(|e| Status::from(ApiError::Invalid(e)))?;
        let view = self.ops.start_rollout(&caller, &actor, plan).await?;
        Ok(Response::new(status_to_pb(&view)))
    }

    async fn preview_metric_gate(
        &self,
        req: Request<pb::PreviewMetricGateRequest>,
    ) -> Reply<pb::MetricGatePreview> {
        let caller = super::caller_of(&req);
        let r = req.into_inner();
        let plan = r
            .plan
            .ok_or_else(|| Status::from(ApiError::invalid("plan", "required")))?;
        let plan = plan_from_pb(plan).map_err(|e| Status::from(ApiError::Invalid(e)))?;
        let p = self.ops.preview_metric(&caller, &plan, &r.gate).await?;
        Ok(Response::new(grayline_proto::preview_to_pb(p)))
    }

    async fn get_rollout(&self, req: Request<pb::GetRolloutRequest>) -> Reply<pb::RolloutStatus> {
        let r = req.get_ref();
        let view = self.ops.get_rollout(r.id, &r.service).await?;
        Ok(Response::new(status_to_pb(&view)))
    }

    async fn list_rollouts(
        &self,
        req: Request<pb::ListRolloutsRequest>,
    ) -> Reply<pb::ListRolloutsResponse> {
        let r = req.get_ref();
        let views = self.ops.list_rollouts(&r.service, r.active_only).await?;
        Ok(Response::new(pb::ListRolloutsResponse {
            rollouts: views.iter().map(status_to_pb).collect(),
        }))
    }

    async fn control_rollout(
        &self,
        req: Request<pb::ControlRolloutRequest>,
    ) -> Reply<pb::RolloutStatus> {
        let actor = actor_of(&req)?;
        let caller = super::caller_of(&req);
        let r = req.get_ref();
        let control = match pb::RolloutAction::try_from(r.action) {
            Ok(pb::RolloutAction::Pause) => Control::Pause,
            Ok(pb::RolloutAction::Resume) => Control::Resume,
            Ok(pb::RolloutAction::Approve) => Control::Approve,
            Ok(pb::RolloutAction::Skip) => Control::Skip,
            Ok(pb::RolloutAction::Promote) => Control::Promote,
            Ok(pb::RolloutAction::Abort) => Control::Abort,
            Ok(pb::RolloutAction::Retry) => Control::Retry,
            Ok(pb::RolloutAction::Unspecified) => {
                return Err(ApiError::invalid("action", "required").into());
            }
            Err(_) => {
                return Err(
                    ApiError::invalid("action", format!("unknown action {}", r.action)).into(),
                );
            }
        };
        let view = self
            .ops
            .control_rollout(&caller, &actor, r.id, control)
            .await?;
        Ok(Response::new(status_to_pb(&view)))
    }

    type WatchRolloutsStream = Pin<Box<dyn Stream<Item = Result<pb::RolloutEvent, Status>> + Send>>;

    async fn watch_rollouts(
        &self,
        req: Request<pb::WatchRolloutsRequest>,
    ) -> Reply<Self::WatchRolloutsStream> {
        let service = req.into_inner().service;
        let rx = self.ops.watch_rollouts(service, self.shutdown.clone());
        let stream = ReceiverStream::new(rx).map(|e| {
            Ok(pb::RolloutEvent {
                id: e.id,
                service: e.service.clone(),
                canary: e.canary.clone(),
                attempt: e.attempt,
                transition: Some(grayline_proto::transition_to_pb(&e.transition)),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
