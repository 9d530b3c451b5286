//! The JSON API under `/api/v1`: the same operations as the gRPC config API, with request
//! bodies shaped like the gRPC request messages (`{"service": …, "expected_revision": 7}`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use grayline_routing::{Policy, RequestFacts, Service, Version};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

use super::AppState;
use super::body::JsonBody;
use crate::access::Caller;
use crate::error::ApiError;
use crate::http::Who;
use crate::operations::{Simulation, actor};
use crate::proxies::ProxyStatus;
use crate::stats::{Select, SeriesView};
use crate::store::{HistoryEntry, ServiceRecord, WriteContext};

type ApiResult<T> = Result<Json<T>, ApiError>;
type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/services", get(list_services).post(create_service))
        .route(
            "/services/{name}",
            get(get_service).put(update_service).delete(delete_service),
        )
        .route("/services/{name}/versions", post(create_version))
        .route(
            "/services/{name}/versions/{version}",
            put(update_version).delete(delete_version),
        )
        .route("/services/{name}/policy", put(set_policy))
        .route("/services/{name}/promote", post(promote))
        .route("/services/{name}/restore", post(restore))
        .route("/services/{name}/history", get(service_history))
        .route("/history", get(all_history))
        .route("/simulate", post(simulate))
        .route("/proxies", get(list_proxies))
        .route("/watch", get(watch))
        .route("/session", get(session))
        .route("/stats", get(stats))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    #[serde(default)]
    service: String,
    #[serde(default)]
    window: u32,
    #[serde(default)]
    per_proxy: bool,
    #[serde(default)]
    per_minute: bool,
    #[serde(default)]
    until: i64,
}

#[derive(Debug, Serialize)]
struct Stats {
    series: Vec<SeriesView>,
}

async fn stats(State(s): Shared, Query(q): Query<StatsQuery>) -> Result<Json<Stats>, ApiError> {
    let service = (!q.service.is_empty()).then_some(q.service.as_str());
    let series = s
        .ops
        .stats
        .select(&Select {
            service,
            window_seconds: q.window,
            per_proxy: q.per_proxy,
            per_minute: q.per_minute,
            until_unix_s: q.until,
        })
        .await
        .map_err(|e| match e {
            // The query string's names for the API's fields.
            ApiError::Invalid(mut invalid) => {
                for error in &mut invalid.errors {
                    error.field = match error.field.as_str() {
                        "window_seconds" => "window".into(),
                        "until_unix_s" => "until".into(),
                        other => other.into(),
                    };
                }
                ApiError::Invalid(invalid)
            }
            e => e,
        })?;
    Ok(Json(Stats { series }))
}

fn write_context(
    caller: &Caller,
    headers: &HeaderMap,
    expected_revision: Option<u64>,
) -> Result<WriteContext, ApiError> {
    Ok(WriteContext {
        caller: caller.clone(),
        actor: actor(
            headers
                .get("x-grayline-actor")
                .and_then(|v| v.to_str().ok()),
        )?,
        expected_revision,
        dry_run: false,
    })
}

#[derive(Debug, Serialize)]
struct ServiceList {
    revision: u64,
    services: Vec<ServiceRecord>,
}

async fn list_services(State(s): Shared) -> Json<ServiceList> {
    let (revision, records) = s.ops.list();
    Json(ServiceList {
        revision,
        services: records.iter().map(|r| (**r).clone()).collect(),
    })
}

async fn get_service(State(s): Shared, Path(name): Path<String>) -> ApiResult<ServiceRecord> {
    Ok(Json((*s.ops.get(&name)?).clone()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceBody {
    service: Service,
    #[serde(default)]
    expected_revision: Option<u64>,
    /// Check everything, store nothing.
    #[serde(default)]
    dry_run: bool,
}

async fn create_service(
    State(s): Shared,
    Who { caller, headers }: Who,
    JsonBody(body): JsonBody<ServiceBody>,
) -> Result<(StatusCode, Json<ServiceRecord>), ApiError> {
    let cx = WriteContext {
        dry_run: body.dry_run,
        ..write_context(&caller, &headers, None)?
    };
    let record = s.ops.create_service(&cx, body.service).await?;
    let status = if body.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(record)))
}

async fn update_service(
    State(s): Shared,
    Path(name): Path<String>,
    Who { caller, headers }: Who,
    JsonBody(body): JsonBody<ServiceBody>,
) -> ApiResult<ServiceRecord> {
    if body.service.name != name {
        return Err(ApiError::invalid(
            "service.name",
            format!(
                "`{}` does not match the URL's service `{name}`; services cannot be renamed",
                body.service.name
            ),
        ));
    }
    let cx = WriteContext {
        dry_run: body.dry_run,
        ..write_context(&caller, &headers, body.expected_revision)?
    };
    Ok(Json(s.ops.update_service(&cx, body.service).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    #[serde(default)]
    expected_revision: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Deleted {
    revision: u64,
}

async fn delete_service(
    State(s): Shared,
    Path(name): Path<String>,
    Query(q): Query<Expected>,
    Who { caller, headers }: Who,
) -> ApiResult<Deleted> {
    let cx = write_context(&caller, &headers, q.expected_revision)?;
    Ok(Json(Deleted {
        revision: s.ops.delete_service(&cx, &name).await?,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    version: Version,
    #[serde(default)]
    expected_revision: Option<u64>,
}

async fn create_version(
    State(s): Shared,
    Path(name): Path<String>,
    Who { caller, headers }: Who,
    JsonBody(body): JsonBody<VersionBody>,
) -> Result<(StatusCode, Json<ServiceRecord>), ApiError> {
    let cx = write_context(&caller, &headers, body.expected_revision)?;
    let record = s.ops.create_version(&cx, &name, body.version).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn update_version(
    State(s): Shared,
    Path((name, version)): Path<(String, String)>,
    Who { caller, headers }: Who,
    JsonBody(body): JsonBody<VersionBody>,
) -> ApiResult<ServiceRecord> {
    if body.version.name != version {
        return Err(ApiError::invalid(
            "version.name",
            format!(
                "`{}` does not match the URL's version `{version}`",
                body.version.name
            ),
        ));
    }
    let cx = write_context(&caller, &headers, body.expected_revision)?;
    Ok(Json(s.ops.update_version(&cx, &name, body.version).await?))
}

async fn delete_version(
    State(s): Shared,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<Expected>,
    Who { caller, headers }: Who,
) -> ApiResult<ServiceRecord> {
    let cx = write_context(&caller, &headers, q.expected_revision)?;
    Ok(Json(s.ops.delete_version(&cx, &name, &version).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    policy: Policy,
    #[serde(default)]
    expected_revision: Option<u64>,
}

async fn set_policy(
    State(s): Shared,
    Path(name): Path<String>,
    Who { caller, headers }: Who,
    JsonBody(body): JsonBody<PolicyBody>,
) -> ApiResult<ServiceRecord> {
    let cx = write_context(&caller, &headers, body.expected_revision)?;
    Ok(Json(s.ops.set_policy(&cx, &name, body.policy).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    version: String,
    #[serde(default)]
    expected_revision: Option<u64>,
}

async fn promote(
    State(s): Shared,
    Path(name): Path<String>,
    Who { caller, headers }: Who,
    JsonBody(body): JsonBody<PromoteBody>,
) -> ApiResult<ServiceRecord> {
    let cx = write_context(&caller, &headers, body.expected_revision)?;
    Ok(Json(s.ops.promote(&cx, &name, &body.version).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    revision: u64,
    #[serde(default)]
    expected_revision: Option<u64>,
}

async fn restore(
    State(s): Shared,
    Path(name): Path<String>,
    Who { caller, headers }: Who,
    JsonBody(body): JsonBody<RestoreBody>,
) -> ApiResult<ServiceRecord> {
    let cx = write_context(&caller, &headers, body.expected_revision)?;
    Ok(Json(s.ops.restore(&cx, &name, body.revision).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    before_revision: u64,
}

#[derive(Debug, Serialize)]
struct History {
    entries: Vec<HistoryEntry>,
}

async fn service_history(
    State(s): Shared,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<History> {
    Ok(Json(History {
        entries: s
            .ops
            .history(Some(&name), q.before_revision, q.limit)
            .await?,
    }))
}

async fn all_history(State(s): Shared, Query(q): Query<HistoryQuery>) -> ApiResult<History> {
    Ok(Json(History {
        entries: s.ops.history(None, q.before_revision, q.limit).await?,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateBody {
    #[serde(default)]
    service: String,
    #[serde(default)]
    draft: Option<Service>,
    #[serde(default)]
    request: RequestFacts,
}

async fn simulate(
    State(s): Shared,
    JsonBody(body): JsonBody<SimulateBody>,
) -> ApiResult<Simulation> {
    let mut facts = body.request;
    facts.headers = facts
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    Ok(Json(s.ops.simulate(&body.service, body.draft, &facts)?))
}

#[derive(Debug, Serialize)]
struct Proxies {
    proxies: Vec<ProxyStatus>,
}

async fn list_proxies(State(s): Shared) -> Json<Proxies> {
    Json(Proxies {
        proxies: s.ops.proxies.list(),
    })
}

#[derive(Debug, Serialize)]
struct SessionInfo {
    ok: bool,
    actor: String,
    /// The token's name and role, and the services it may change (absent: all), so the
    /// console offers only what the role may do.
    token: String,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    services: Option<Vec<String>>,
}

/// Lets the console check a token (and an actor name) without side effects.
async fn session(Who { caller, headers }: Who) -> ApiResult<SessionInfo> {
    Ok(Json(SessionInfo {
        ok: true,
        token: caller.name,
        role: caller.access.name(),
        services: caller.services,
        actor: actor(
            headers
                .get("x-grayline-actor")
                .and_then(|v| v.to_str().ok()),
        )?,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    #[serde(default)]
    from_revision: u64,
    #[serde(default)]
    service: String,
}

/// Server-sent events mirroring the gRPC Watch: one `change` event per history entry.
async fn watch(
    State(s): Shared,
    Query(q): Query<WatchQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.ops.watch(q.from_revision, q.service, s.shutdown.clone());
    let stream = ReceiverStream::new(rx).map(|item| {
        Ok(match item {
            Ok(entry) => Event::default()
                .event("change")
                .id(entry.revision.to_string())
                .json_data(&entry)
                .unwrap_or_else(|_| Event::default().comment("unencodable entry")),
            Err(e) => Event::default().event("error").data(e.to_string()),
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
