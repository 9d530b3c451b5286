//! The gRPC instance registry: thin translation between wire messages and [`Operations`].
//! Registering needs a token that may register instances (the interceptor puts whose in the
//! request's extensions, with the services it may register); listing needs an admin token.

use std::sync::Arc;

use grayline_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::access::Registrant;
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

/// Who registers, as the interceptor found (a call it did not see may do nothing).
fn registrant<T>(req: &Request<T>) -> Registrant {
    req.extensions()
        .get::<Registrant>()
        .cloned()
        .unwrap_or_else(|| Registrant {
            by: String::new(),
            services: Some(Vec::new()),
            admin: false,
        })
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Reply<pb::RegisterResponse> {
        let by = registrant(&req);
        let registration = Registration::from(req.into_inner());
        by.may_register(&registration.service)?;
        let done = self.ops.register(registration, &by.by).await?;
        Ok(Response::new(pb::RegisterResponse {
            ttl_seconds: done.ttl_seconds,
            warning: done.warning,
        }))
    }

    async fn keep_alive(&self, req: Request<pb::InstanceKey>) -> Reply<pb::RegisterResponse> {
        let by = registrant(&req);
        let k = req.into_inner();
        by.may_register(&k.service)?;
        let ttl_seconds = self.ops.keep_alive(&k.service, &k.address).await?;
        Ok(Response::new(pb::RegisterResponse {
            ttl_seconds,
            warning: String::new(),
        }))
    }

    async fn deregister(&self, req: Request<pb::InstanceKey>) -> Reply<pb::DeregisterResponse> {
        let by = registrant(&req);
        let k = req.into_inner();
        by.may_register(&k.service)?;
        let removed = self.ops.deregister(&k.service, &k.address).await?;
        Ok(Response::new(pb::DeregisterResponse { removed }))
    }

    async fn list_instances(
        &self,
        req: Request<pb::ListInstancesRequest>,
    ) -> Reply<pb::ListInstancesResponse> {
        if !registrant(&req).admin {
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
