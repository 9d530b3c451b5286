//! The gRPC instance registry: thin translation between wire messages and [`Operations`].
//! Registering needs the registration, proxy or admin token (the interceptor puts which in
//! the request's extensions); listing needs the admin token.

use std::sync::Arc;

use grayline_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::Role;
use crate::error::ApiError;
use crate::instances::Registration;
use crate::operations::Operations;

#[derive(Debug)]
pub struct RegistryService {
    ops: Arc<Operations>,
}

impl RegistryService {
    pub fn new(ops: Arc<Operations>) -> Self {
        RegistryService { ops }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// Who registers: the role whose token the call presented (`proxy` for the proxy token).
fn registrant<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<Role>()
        .map_or(Role::Registration, |r| *r)
        .name()
        .to_string()
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Reply<pb::RegisterResponse> {
        let by = registrant(&req);
        let done = self
            .ops
            .register(Registration::from(req.into_inner()), &by)
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            ttl_seconds: done.ttl_seconds,
            warning: done.warning,
        }))
    }

    async fn keep_alive(&self, req: Request<pb::InstanceKey>) -> Reply<pb::RegisterResponse> {
        let k = req.into_inner();
        let ttl_seconds = self.ops.keep_alive(&k.service, &k.address).await?;
        Ok(Response::new(pb::RegisterResponse {
            ttl_seconds,
            warning: String::new(),
        }))
    }

    async fn deregister(&self, req: Request<pb::InstanceKey>) -> Reply<pb::DeregisterResponse> {
        let k = req.into_inner();
        let removed = self.ops.deregister(&k.service, &k.address).await?;
        Ok(Response::new(pb::DeregisterResponse { removed }))
    }

    async fn list_instances(
        &self,
        req: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        if req.extensions().get::<Role>() != Some(&Role::Admin) {
            return Err(ApiError::Unauthenticated(
                "listing instances needs the admin token".into(),
            )
            .into());
        }
        let instances = self
            .ops
            .instances(&req.get_ref().service)
            .into_iter()
            .map(pb::RegisteredInstance::from)
            .collect();
        Ok(Response::new(pb::ListInstancesResponse { instances }))
    }
}
