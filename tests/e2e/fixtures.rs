//! Services and policies the tests share.

use grayline_proto::v1 as pb;
use grayline_routing::*;
use std::collections::BTreeMap;

use grayline_tests::{Proxy, Server, Upstream};

/// `shop` with versions v1 (stable) and v2 on made-up endpoints.
pub fn shop() -> Service {
    let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:9001"]));
    s.versions.push(Version::new("v2", &["127.0.0.1:9002"]));
    s.hosts = vec!["shop.example.com".into()];
    s
}

pub fn split(weights: &[(&str, u32)], sticky: Option<StickyKey>) -> Route {
    Route::Split(Split {
        weights: weights
            .iter()
            .map(|(v, w)| Weight {
                version: v.to_string(),
                weight: *w,
            })
            .collect(),
        sticky,
    })
}

pub fn header_rule(name: &str, value: &str, version: &str) -> Rule {
    Rule {
        name: format!("{name} is {value}"),
        conditions: vec![Condition::Header(FieldMatch {
            name: name.into(),
            op: MatchOp::Exact(value.into()),
            negate: false,
        })],
        route: Route::Version(version.into()),
        mirror: None,
    }
}

pub fn policy(rules: Vec<Rule>, default_route: Option<Route>) -> Policy {
    Policy {
        rules,
        default_route,
        default_mirror: None,
    }
}

pub fn pb_service(s: &Service) -> pb::Service {
    s.into()
}

pub fn pb_policy(p: &Policy) -> pb::Policy {
    p.into()
}

pub fn from_pb(s: Option<pb::Service>) -> Service {
    grayline_proto::service_from_pb(s.expect("service in response")).expect("valid service")
}

/// Creates a service with the admin token; returns its revision.
/// A proxy `edge` with `shop` (any host) served by one version, v1, on an upstream of its own;
/// the proxy has the config when this returns.
pub async fn shop_of_one_version_on_a_proxy(server: &Server) -> (Upstream, Proxy) {
    let v1 = Upstream::start("v1");
    let s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    let revision = create(server, &s).await;
    let proxy = Proxy::start(server, "edge", &[]);
    proxy.wait_revision(revision).await;
    (v1, proxy)
}

pub async fn create(server: &Server, s: &Service) -> u64 {
    server
        .admin()
        .await
        .create_service(pb::CreateServiceRequest {
            dry_run: false,
            service: Some(pb_service(s)),
        })
        .await
        .expect("create")
        .into_inner()
        .revision
}

/// Replaces a whole service; returns its revision.
pub async fn update(server: &Server, s: &Service) -> u64 {
    server
        .admin()
        .await
        .update_service(pb::UpdateServiceRequest {
            dry_run: false,
            service: Some(pb_service(s)),
            expected_revision: None,
        })
        .await
        .expect("update")
        .into_inner()
        .revision
}

/// Sets a service's policy; returns the new revision.
/// Deletes service `name`.
pub async fn delete(server: &Server, name: &str) {
    server
        .admin()
        .await
        .delete_service(pb::DeleteServiceRequest {
            name: name.into(),
            expected_revision: None,
        })
        .await
        .unwrap();
}

pub async fn set_policy(server: &Server, service: &str, p: &Policy) -> u64 {
    server
        .admin()
        .await
        .set_policy(pb::SetPolicyRequest {
            service: service.into(),
            policy: Some(pb_policy(p)),
            expected_revision: None,
        })
        .await
        .expect("set policy")
        .into_inner()
        .revision
}

/// Every series of `shop` the server has, over the last hour.
async fn shop_series(server: &Server) -> Vec<pb::StatsSeries> {
    server
        .admin()
        .await
        .get_stats(pb::StatsRequest {
            service: "shop".into(),
            window_seconds: 3600,
            per_proxy: false,
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner()
        .series
}

/// The server's totals over the last hour of `version` of `shop`: its live traffic, or the
/// mirrored copies it received.
pub async fn version_totals(server: &Server, version: &str, mirrored: bool) -> pb::StatsPoint {
    shop_series(server)
        .await
        .into_iter()
        .find(|s| s.version == version && s.mirrored == mirrored)
        .and_then(|s| s.totals)
        .unwrap_or_default()
}

/// Live requests the server counted per version of `shop` over the last hour.
pub async fn server_totals(server: &Server) -> BTreeMap<String, u64> {
    shop_series(server)
        .await
        .iter()
        .filter(|s| !s.mirrored)
        .map(|s| {
            (
                s.version.clone(),
                s.totals.as_ref().map_or(0, |t| t.requests),
            )
        })
        .collect()
}

/// Every request of `shop` in the per-minute history of the last hour.
pub async fn history_total(server: &Server) -> u64 {
    let (status, body) = server
        .json()
        .get("/stats?service=shop&per_minute=true&window=3600")
        .await;
    assert_eq!(status, 200, "{body}");
    body["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["totals"]["requests"].as_u64().unwrap_or(0))
        .sum()
}

/// The server's status of proxy `id`, or why not.
pub async fn proxy_status(server: &Server, id: &str) -> Result<pb::ProxyStatus, String> {
    let mut c = server.admin().await;
    let list = c
        .list_proxies(pb::ListProxiesRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    list.proxies
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| format!("proxy {id} not listed"))
}

/// A loopback address nobody listens on: bound, noted, closed.
pub fn unused_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// A webhook receiver that answers 503 until told to accept, and remembers which delivery
/// ids it refused and which it accepted.
pub struct Hook {
    pub url: String,
    state: std::sync::Arc<HookState>,
}

#[derive(Default)]
pub struct HookState {
    accepting: std::sync::atomic::AtomicBool,
    calls: std::sync::Mutex<Vec<(String, bool)>>,
}

impl Hook {
    pub async fn start() -> Hook {
        use axum::http::{HeaderMap, StatusCode};
        let state = std::sync::Arc::new(HookState::default());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let state = state.clone();
                move |headers: HeaderMap| {
                    let state = state.clone();
                    async move {
                        let delivery = headers
                            .get("x-grayline-delivery")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let accepted = state.accepting.load(std::sync::atomic::Ordering::SeqCst);
                        state.calls.lock().unwrap().push((delivery, accepted));
                        if accepted {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hook { url, state }
    }

    pub fn accept(&self) {
        self.state
            .accepting
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits until every delivery id in `ids` has been accepted.
    pub async fn wait_accepted(&self, what: &str, ids: &std::collections::BTreeSet<String>) {
        grayline_tests::eventually(what, std::time::Duration::from_secs(30), || async {
            let accepted = self.deliveries(true);
            ids.is_subset(&accepted)
                .then_some(())
                .ok_or(format!("waiting for {ids:?}, accepted {accepted:?}"))
        })
        .await;
    }

    /// The delivery ids of the calls accepted (or refused).
    pub fn deliveries(&self, accepted: bool) -> std::collections::BTreeSet<String> {
        let calls = self.state.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(_, a)| *a == accepted)
            .map(|(d, _)| d.clone())
            .collect()
    }
}

/// Token files every replica of a test shares, written to `root`; their flags.
pub fn shared_tokens(root: &std::path::Path) -> Vec<String> {
    let mut flags = Vec::new();
    for (flag, name, value) in [
        ("--admin-token-file", "admin.token", "a".repeat(32)),
        ("--proxy-token-file", "proxy.token", "p".repeat(32)),
        (
            "--registration-token-file",
            "registration.token",
            "r".repeat(32),
        ),
        ("--webhook-secret-file", "webhook.secret", "w".repeat(32)),
    ] {
        let path = root.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(&path, perms).unwrap();
        flags.push(flag.to_string());
        flags.push(path.display().to_string());
    }
    flags
}

/// Starts `plan` on the JSON API and over gRPC, and checks both refuse it naming `field`
/// first.
pub async fn refused_on_both_apis(server: &Server, plan: serde_json::Value, field: &str) {
    let (status, err) = server
        .json()
        .post("/rollouts", serde_json::json!({ "plan": plan }))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["fields"][0]["field"], field, "{err}");
    let wire: grayline_rollout::Plan = serde_json::from_value(plan).unwrap();
    let status = server
        .rollouts("ci")
        .await
        .start_rollout(pb::StartRolloutRequest {
            plan: Some(grayline_proto::plan_to_pb(&wire)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with(field), "{}", status.message());
}

/// `shop` with v1 (stable) and v2 on the given upstreams, a proxy that applied it, and
/// about 300 requests per second through the proxy.
pub async fn shop_under_load(
    server: &Server,
    v1: &Upstream,
    v2: &Upstream,
) -> (Proxy, grayline_tests::Load) {
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.versions.push(Version::new("v2", &[&v2.endpoint()]));
    serve_under_load(server, &s).await
}

/// Creates `s`, starts a proxy that applied it, and sends about 300 requests per second
/// through it.
pub async fn serve_under_load(server: &Server, s: &Service) -> (Proxy, grayline_tests::Load) {
    let revision = create(server, s).await;
    let proxy = Proxy::start(server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let every = std::time::Duration::from_millis(25);
    let load = grayline_tests::Load::start(&proxy.url("/"), &[], 8, every);
    (proxy, load)
}

/// Starts `plan` on the JSON API as `pipeline`, and returns the new rollout's view.
pub async fn start_rollout(server: &Server, plan: serde_json::Value) -> serde_json::Value {
    let (status, view) = server
        .json()
        .as_actor("pipeline")
        .post("/rollouts", serde_json::json!({ "plan": plan }))
        .await;
    assert_eq!(status, 201, "{view}");
    view
}

/// The reasons of a rollout's transitions, oldest first.
pub fn rollout_reasons(view: &serde_json::Value) -> Vec<String> {
    view["rollout"]["transitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["reason"].as_str().unwrap_or("").to_string())
        .collect()
}
