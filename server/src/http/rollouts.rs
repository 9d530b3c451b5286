//! The JSON API of rollouts under `/api/v1`, the same operations as the gRPC `Rollouts`
//! service: `POST /rollouts` `{"plan": …}`, `GET /rollouts[?service=&active=true]`,
//! `GET /rollouts/{id}`, `POST /rollouts/{id}/{action}`, `GET /services/{name}/rollout`
//! (the newest), `GET /rollouts/events[?service=]` (server-sent events, one `transition`
//! event each), `GET /rollouts/leader` (which replica drives the rollouts, on etcd) and
//! `POST /rollouts/preview` `{"plan": …, "gate": NAME}` (a metric or event gate's last hour).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use grayline_rollout::{Plan, RolloutView};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

use super::AppState;
use super::body::JsonBody;
use crate::error::ApiError;
use crate::http::Who;
use crate::operations::{actor, rollout_control};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/rollouts", post(start).get(list))
        .route("/rollouts/events", get(events))
        .route("/rollouts/leader", get(leader))
        .route("/rollouts/preview", post(preview))
        .route("/rollouts/{id}", get(get_one))
        .route("/rollouts/{id}/{action}", post(control))
        .route("/services/{name}/rollout", get(for_service))
}

fn actor_of(headers: &HeaderMap) -> Result<String, ApiError> {
    actor(
        headers
            .get("x-grayline-actor")
            .and_then(|v| v.to_str().ok()),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    plan: Plan,
}

async fn start(
    State(s): Shared,
    Who { caller, headers }: Who,
    JsonBody(body): JsonBody<StartBody>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    let actor = actor_of(&headers)?;
    let view = s.ops.start_rollout(&caller, &actor, body.plan).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    plan: Plan,
    gate: String,
}

async fn preview(
    State(s): Shared,
    Who { caller, .. }: Who,
    JsonBody(body): JsonBody<PreviewBody>,
) -> Result<Json<crate::rollouts::prometheus::Preview>, ApiError> {
    Ok(Json(
        s.ops
            .preview_metric(&caller, &body.plan, &body.gate)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    service: String,
    #[serde(default)]
    active: bool,
}

#[derive(Debug, Serialize)]
struct List {
    rollouts: Vec<RolloutView>,
}

async fn list(State(s): Shared, Query(q): Query<ListQuery>) -> Result<Json<List>, ApiError> {
    Ok(Json(List {
        rollouts: s.ops.list_rollouts(&q.service, q.active).await?,
    }))
}

#[derive(Debug, Serialize)]
struct Leader {
    /// The gRPC URL of the replica that drives the rollouts; `null` with sled (this server
    /// drives them) or while an election is under way.
    leader: Option<String>,
    /// This replica's gRPC URL, as the others reach it; `null` with sled.
    me: Option<String>,
    /// Whether this replica drives the rollouts.
    leads: bool,
}

async fn leader(State(s): Shared) -> Json<Leader> {
    let (leader, me) = s.ops.rollouts.leader();
    Json(Leader {
        leader,
        me,
        leads: s.ops.rollouts.leads(),
    })
}

/// A rollout id from the path, with a field error (not axum's) when it is not a number.
fn id_of(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::invalid("id", format!("`{id}` is not a rollout id")))
}

async fn get_one(State(s): Shared, Path(id): Path<String>) -> Result<Json<RolloutView>, ApiError> {
    Ok(Json(s.ops.get_rollout(id_of(&id)?, "").await?))
}

async fn for_service(
    State(s): Shared,
    Path(name): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    Ok(Json(s.ops.get_rollout(0, &name).await?))
}

async fn control(
    State(s): Shared,
    Path((id, action)): Path<(String, String)>,
    Who { caller, headers }: Who,
) -> Result<Json<RolloutView>, ApiError> {
    let actor = actor_of(&headers)?;
    let (id, control) = (id_of(&id)?, rollout_control(&action)?);
    Ok(Json(
        s.ops.control_rollout(&caller, &actor, id, control).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    service: String,
}

async fn events(
    State(s): Shared,
    Query(q): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.ops.watch_rollouts(q.service, s.shutdown.clone());
    let stream = ReceiverStream::new(rx).map(|e| {
        Ok(Event::default()
            .event("transition")
            .id(format!("{}-{}", e.id, e.transition.seq))
            .json_data(&*e)
            .unwrap_or_else(|_| Event::default().comment("unencodable event")))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
