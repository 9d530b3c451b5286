//! The server's JSON API (`/api/v1`), typed. Every call carries the session's token and actor;
//! errors keep the server's code, message and per-field problems so forms can show them where
//! they belong.

use gloo_net::http::{Request, RequestBuilder, Response};
use grayline_rollout::{Plan, RolloutView};
use grayline_routing::api::{HistoryEntry, ProxyStatus, SeriesView, ServiceRecord};
use grayline_routing::{FieldError, Policy, Service};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Who is calling: the admin token and the name recorded in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub token: String,
    pub actor: String,
}

/// What went wrong with a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status; 0 when the server could not be reached.
    pub status: u16,
    pub code: String,
    pub message: String,
    pub fields: Vec<FieldError>,
}

impl ApiError {
    fn network(e: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: 0,
            code: "network".into(),
            message: format!("the server could not be reached: {e}"),
            fields: Vec::new(),
        }
    }

    pub fn is_unauthenticated(&self) -> bool {
        self.status == 401
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    fields: Vec<FieldError>,
}

const BASE: &str = "/api/v1";

fn authorized(req: RequestBuilder, auth: &Auth) -> RequestBuilder {
    req.header("Authorization", &format!("Bearer {}", auth.token))
        .header("x-grayline-actor", &auth.actor)
}

async fn read<T: DeserializeOwned>(resp: Result<Response, gloo_net::Error>) -> Result<T, ApiError> {
    let resp = resp.map_err(ApiError::network)?;
    let status = resp.status();
    if resp.ok() {
        return resp.json::<T>().await.map_err(|e| ApiError {
            status,
            code: "decode".into(),
            message: format!("unexpected answer from the server: {e}"),
            fields: Vec::new(),
        });
    }
    let text = resp.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ApiError {
            status,
            code: body.error.code,
            message: body.error.message,
            fields: body.error.fields,
        },
        Err(_) => ApiError {
            status,
            code: "http".into(),
            message: format!("HTTP {status}: {text}"),
            fields: Vec::new(),
        },
    })
}

pub async fn get<T: DeserializeOwned>(auth: &Auth, path: &str) -> Result<T, ApiError> {
    read(
        authorized(Request::get(&format!("{BASE}{path}")), auth)
            .send()
            .await,
    )
    .await
}

async fn send<B: Serialize, T: DeserializeOwned>(
    req: RequestBuilder,
    auth: &Auth,
    body: &B,
) -> Result<T, ApiError> {
    let req = authorized(req, auth)
        .json(body)
        .map_err(ApiError::network)?;
    read(req.send().await).await
}

pub async fn post<B: Serialize, T: DeserializeOwned>(
    auth: &Auth,
    path: &str,
    body: &B,
) -> Result<T, ApiError> {
    send(Request::post(&format!("{BASE}{path}")), auth, body).await
}

pub async fn put<B: Serialize, T: DeserializeOwned>(
    auth: &Auth,
    path: &str,
    body: &B,
) -> Result<T, ApiError> {
    send(Request::put(&format!("{BASE}{path}")), auth, body).await
}

#[derive(Clone, Debug, Deserialize)]
pub struct ServiceList {
    /// The catalog's revision: the list is the same while it is.
    pub revision: u64,
    pub services: Vec<ServiceRecord>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Proxies {
    pub proxies: Vec<ProxyStatus>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct History {
    pub entries: Vec<HistoryEntry>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Stats {
    pub series: Vec<SeriesView>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SessionInfo {
    pub actor: String,
    /// The token's role: `viewer`, `operator` or `admin` (absent from older servers: admin).
    #[serde(default = "admin")]
    pub role: String,
    /// The services it may change; absent: all.
    #[serde(default)]
    pub services: Option<Vec<String>>,
}

fn admin() -> String {
    "admin".into()
}

/// What a signed-in token may do, as the server said at sign-in (the server checks every
/// change itself; this only keeps the console from offering what would be refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub role: String,
    pub services: Option<Vec<String>>,
}

impl Grant {
    fn rank(role: &str) -> u8 {
        match role {
            "admin" => 2,
            "operator" => 1,
            _ => 0,
        }
    }

    /// Whether the role `need` (and, for a service, the token's list) covers it.
    pub fn may(&self, need: &str, service: Option<&str>) -> bool {
        Grant::rank(&self.role) >= Grant::rank(need)
            && match (&self.services, service) {
                (Some(list), Some(s)) => list.iter().any(|l| l == s),
                (Some(_), None) => need == "viewer",
                (None, _) => true,
            }
    }
}

pub async fn session(auth: &Auth) -> Result<SessionInfo, ApiError> {
    get(auth, "/session").await
}

pub async fn services(auth: &Auth) -> Result<ServiceList, ApiError> {
    get(auth, "/services").await
}

pub async fn service(auth: &Auth, name: &str) -> Result<ServiceRecord, ApiError> {
    get(auth, &format!("/services/{name}")).await
}

pub async fn proxies(auth: &Auth) -> Result<Proxies, ApiError> {
    get(auth, "/proxies").await
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Instances {
    pub instances: Vec<grayline_routing::api::InstanceView>,
}

/// The instances registered under `name` now.
pub async fn instances(auth: &Auth, name: &str) -> Result<Instances, ApiError> {
    get(auth, &format!("/instances?service={name}")).await
}

pub async fn history(auth: &Auth, name: &str) -> Result<History, ApiError> {
    get(auth, &format!("/services/{name}/history?limit=200")).await
}

pub async fn stats(auth: &Auth, name: &str, window: u32) -> Result<Stats, ApiError> {
    get(auth, &format!("/stats?service={name}&window={window}")).await
}

#[derive(Serialize)]
struct ServiceBody<'a> {
    service: &'a Service,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_revision: Option<u64>,
}

pub async fn create_service(auth: &Auth, service: &Service) -> Result<ServiceRecord, ApiError> {
    post(
        auth,
        "/services",
        &ServiceBody {
            service,
            expected_revision: None,
        },
    )
    .await
}

pub async fn update_service(
    auth: &Auth,
    service: &Service,
    expected_revision: u64,
) -> Result<ServiceRecord, ApiError> {
    put(
        auth,
        &format!("/services/{}", service.name),
        &ServiceBody {
            service,
            expected_revision: Some(expected_revision),
        },
    )
    .await
}

#[derive(Serialize)]
struct PolicyBody<'a> {
    policy: &'a Policy,
    expected_revision: u64,
}

pub async fn set_policy(
    auth: &Auth,
    name: &str,
    policy: &Policy,
    expected_revision: u64,
) -> Result<ServiceRecord, ApiError> {
    put(
        auth,
        &format!("/services/{name}/policy"),
        &PolicyBody {
            policy,
            expected_revision,
        },
    )
    .await
}

#[derive(Serialize)]
struct PromoteBody<'a> {
    version: &'a str,
    expected_revision: u64,
}

pub async fn promote(
    auth: &Auth,
    name: &str,
    version: &str,
    expected_revision: u64,
) -> Result<ServiceRecord, ApiError> {
    post(
        auth,
        &format!("/services/{name}/promote"),
        &PromoteBody {
            version,
            expected_revision,
        },
    )
    .await
}

#[derive(Serialize)]
struct RestoreBody {
    revision: u64,
}

pub async fn restore(auth: &Auth, name: &str, revision: u64) -> Result<ServiceRecord, ApiError> {
    post(
        auth,
        &format!("/services/{name}/restore"),
        &RestoreBody { revision },
    )
    .await
}

#[derive(Serialize)]
struct StartBody<'a> {
    plan: &'a Plan,
}

/// Starts an automated rollout.
pub async fn start_rollout(auth: &Auth, plan: &Plan) -> Result<RolloutView, ApiError> {
    post(auth, "/rollouts", &StartBody { plan }).await
}

pub use grayline_rollout::view::MetricPreview;

#[derive(Serialize)]
struct PreviewBody<'a> {
    plan: &'a Plan,
    gate: &'a str,
}

/// The last hour of `plan`'s metric gate `gate` for its canary and baseline.
pub async fn preview_metric(
    auth: &Auth,
    plan: &Plan,
    gate: &str,
) -> Result<MetricPreview, ApiError> {
    post(auth, "/rollouts/preview", &PreviewBody { plan, gate }).await
}

/// Why the server's store refuses writes now (`GET /readyz` answering 503), or `None`
/// while it takes them (or the answer could not be read: the live indicator shows that).
pub async fn store_refusing() -> Option<String> {
    let resp = Request::get("/readyz").send().await.ok()?;
    if resp.status() != 503 {
        return None;
    }
    let text = resp.text().await.ok()?;
    Some(text.trim().trim_start_matches("not ready: ").to_string())
}

/// The services with a rollout running (or paused) now.
pub async fn services_in_rollout(auth: &Auth) -> Result<Vec<String>, ApiError> {
    let list: serde_json::Value = get(auth, "/rollouts?active=true").await?;
    Ok(list["rollouts"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|r| r["rollout"]["plan"]["service"].as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// The newest rollout of a service, if it ever had one.
pub async fn service_rollout(auth: &Auth, name: &str) -> Result<Option<RolloutView>, ApiError> {
    match get(auth, &format!("/services/{name}/rollout")).await {
        Ok(view) => Ok(Some(view)),
        Err(e) if e.status == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// `action`: pause, resume, approve, skip, promote, abort or retry.
pub async fn control_rollout(auth: &Auth, id: u64, action: &str) -> Result<RolloutView, ApiError> {
    post(
        auth,
        &format!("/rollouts/{id}/{action}"),
        &serde_json::json!({}),
    )
    .await
}

#[cfg(test)]
mod grant_tests {
    use super::Grant;

    #[test]
    fn roles_include_the_ones_below_and_services_limit_changes() {
        let grant = |role: &str, services: Option<&[&str]>| Grant {
            role: role.into(),
            services: services.map(|s| s.iter().map(|s| s.to_string()).collect()),
        };
        let viewer = grant("viewer", None);
        assert!(viewer.may("viewer", Some("shop")) && !viewer.may("operator", Some("shop")));
        let ci = grant("operator", Some(&["shop"]));
        assert!(ci.may("operator", Some("shop")));
        assert!(!ci.may("operator", Some("cart")));
        assert!(!ci.may("admin", Some("shop")));
        assert!(
            !ci.may("operator", None),
            "a scoped token changes named services only"
        );
        let admin = grant("admin", None);
        assert!(admin.may("admin", None) && admin.may("operator", Some("cart")));
        assert!(
            !grant("root", None).may("operator", None),
            "an unknown role may not change"
        );
    }
}
