//! The JSON instance registry, shaped like the gRPC messages: `POST /api/v1/registry/register`
//! (`{"service", "tag", "address", "metadata"?, "ttl_seconds"?}`), `…/keepalive` and
//! `…/deregister` (`{"service", "address"}`) take the registration, proxy or admin token, or a
//! token of the directory with the registration (or admin) role, limited to its services;
//! `GET /api/v1/instances?service=` (admin) lists them.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use grayline_routing::api::InstanceView;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::body::JsonBody;
use crate::access::Registrant;
use crate::error::ApiError;
use crate::instances::{Registered, Registration};

type Shared = State<Arc<AppState>>;

/// The routes that take any registrant's token (the caller layers [`require_registrant`]).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/register", post(register))
        .route("/keepalive", post(keep_alive))
        .route("/deregister", post(deregister))
}

/// Lets the tokens that may register instances through, noting whose.
pub async fn require_registrant(State(state): Shared, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.tokens.registrant(header) {
        Ok(registrant) => {
            req.extensions_mut().insert(registrant);
            next.run(req).await
        }
        Err(message) => ApiError::Unauthenticated(message).into_response(),
    }
}

async fn register(
    State(s): Shared,
    Extension(registrant): Extension<Registrant>,
    JsonBody(body): JsonBody<Registration>,
) -> Result<Json<Registered>, ApiError> {
    registrant.may_register(&body.service)?;
    Ok(Json(s.ops.register(body, &registrant.by).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceKey {
    service: String,
    address: String,
}

#[derive(Debug, Serialize)]
struct Renewed {
    ttl_seconds: u32,
}

async fn keep_alive(
    State(s): Shared,
    Extension(registrant): Extension<Registrant>,
    JsonBody(k): JsonBody<InstanceKey>,
) -> Result<Json<Renewed>, ApiError> {
    registrant.may_register(&k.service)?;
    let ttl_seconds = s.ops.keep_alive(&k.service, &k.address).await?;
    Ok(Json(Renewed { ttl_seconds }))
}

#[derive(Debug, Serialize)]
struct Removed {
    removed: bool,
}

async fn deregister(
    State(s): Shared,
    Extension(registrant): Extension<Registrant>,
    JsonBody(k): JsonBody<InstanceKey>,
) -> Result<Json<Removed>, ApiError> {
    registrant.may_register(&k.service)?;
    let removed = s.ops.deregister(&k.service, &k.address).await?;
    Ok(Json(Removed { removed }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    service: String,
}

#[derive(Debug, Serialize)]
pub struct Listed {
    instances: Vec<InstanceView>,
}

/// `GET /api/v1/instances` (admin).
pub async fn list(State(s): Shared, Query(q): Query<ListQuery>) -> Json<Listed> {
    Json(Listed {
        instances: s.ops.instances(&q.service),
    })
}
