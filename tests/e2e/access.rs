//! Tokens with roles, as a platform team hands them out: a dashboard that may only read, a
//! pipeline that may only move one service's traffic, and the operator's admin token; each
//! refusal names the role it needs (never the token), the history says which token made a
//! change, and a token is rotated by adding the new file and removing the old, with no
//! restart.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_routing::*;
use grayline_tests::{Server, eventually};
use serde_json::json;
use tempfile::TempDir;
use tonic::Code;

use crate::fixtures::*;

const VIEWER: &str = "viewer-0123456789abcdef";
const CI: &str = "ci-pipeline-0123456789abcdef";
const CI_NEXT: &str = "ci-pipeline-next-0123456789abcdef";
const SHOP_INSTANCES: &str = "shop-instances-0123456789abcdef";

fn token_file(dir: &Path, name: &str, text: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn two_versions(name: &str, prefix: &str) -> Service {
    let mut s = Service::single(name, Version::new("v1", &["127.0.0.1:9"]));
    s.versions.push(Version::new("v2", &["127.0.0.1:9"]));
    s.path_prefix = prefix.into();
    s
}

fn weights(v2: u32) -> serde_json::Value {
    json!({"policy": {"default_route": {"split": {"weights": [
        {"version": "v1", "weight": 10_000 - v2}, {"version": "v2", "weight": v2}]}}}})
}

#[tokio::test]
async fn tokens_with_roles_do_what_their_role_allows_on_both_apis_and_rotate_without_a_restart() {
    let root = TempDir::new().unwrap();
    let tokens = root.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    token_file(
        &tokens,
        "dashboard",
        &format!("token: {VIEWER}\nrole: viewer\n"),
    );
    token_file(
        &tokens,
        "ci",
        &format!("token: {CI}\nrole: operator\nservices: [shop]\n"),
    );
    token_file(
        &tokens,
        "shop-instances",
        &format!("token: {SHOP_INSTANCES}\nrole: registration\nservices: [shop]\n"),
    );
    let dir = tokens.display().to_string();
    let server = Server::start_with(&["--tokens-dir", &dir]);
    create(&server, &two_versions("shop", "/shop")).await;
    create(&server, &two_versions("cart", "/cart")).await;
    let as_token = |t: &str| {
        let mut api = server.json();
        api.token = Some(t.to_string());
        api
    };

    // The viewer reads everything and changes nothing, over both APIs.
    let viewer = as_token(VIEWER);
    let (status, body) = viewer.get("/services").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = viewer.get("/session").await;
    assert_eq!(
        (status, body["role"].as_str(), body["token"].as_str()),
        (200, Some("viewer"), Some("dashboard")),
        "{body}"
    );
    let (status, body) = viewer.put("/services/shop/policy", weights(1000)).await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        message,
        "this needs the operator role or admin; the token presented is a viewer"
    );
    assert!(!message.contains(VIEWER) && !message.contains("dashboard"));
    let mut grpc = server.admin_as(Some(VIEWER), Some("dash")).await;
    let refused = grpc
        .set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(pb_policy(&Policy::default())),
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::PermissionDenied, message.as_str())
    );
    let listed = grpc
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.services.len(), 2);

    // The pipeline moves shop's traffic and starts its rollout; not cart's, and it may not
    // create or delete services.
    let ci = as_token(CI).as_actor("pipeline");
    let (status, body) = ci.put("/services/shop/policy", weights(1000)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = ci.put("/services/cart/policy", weights(1000)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may change only `shop`"),
        "{body}"
    );
    let (status, body) = ci.delete("/services/cart").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"]["message"],
        "this needs the admin role; the token presented is an operator"
    );
    let plan =
        json!({"service": "shop", "canary": "v2", "steps": [{"weight": 2000, "min_seconds": 60}]});
    let (status, body) = ci.post("/rollouts", json!({"plan": plan})).await;
    assert_eq!(status, 201, "{body}");
    let id = body["rollout"]["id"].as_u64().unwrap();
    let (status, body) = viewer
        .post(&format!("/rollouts/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = ci.post(&format!("/rollouts/{id}/abort"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let plan =
        json!({"service": "cart", "canary": "v2", "steps": [{"weight": 2000, "min_seconds": 60}]});
    let (status, body) = ci.post("/rollouts", json!({"plan": plan})).await;
    assert_eq!(status, 403, "{body}");

    // A registration token registers, renews and deregisters instances of its services,
    // over both APIs, and uses no admin API; the registry records its name.
    let instances = as_token(SHOP_INSTANCES);
    let instance = |service: &str| json!({"service": service, "tag": "1.1.2", "address": "127.0.0.1:7001", "ttl_seconds": 30});
    let (status, body) = instances.post("/registry/register", instance("shop")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = instances.post("/registry/register", instance("cart")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may register instances of `shop` only"),
        "{body}"
    );
    let key = json!({"service": "shop", "address": "127.0.0.1:7001"});
    let (status, body) = instances.post("/registry/keepalive", key.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = instances.get("/services").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has the registration role"),
        "{body}"
    );
    assert!(!body.to_string().contains("shop-instances"), "{body}");
    let (status, body) = viewer.post("/registry/register", instance("shop")).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs the registration role (or admin); the token presented is a viewer"),
        "{body}"
    );
    assert!(!body.to_string().contains("dashboard"), "{body}");
    let (status, body) = server.json().get("/instances?service=shop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["instances"][0]["registered_by"], "shop-instances",
        "{body}"
    );
    let mut registry = pb::registry_client::RegistryClient::new(
        tonic::transport::Channel::from_shared(server.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {SHOP_INSTANCES}").parse().unwrap();
    let mut deregister = tonic::Request::new(pb::InstanceKey {
        service: "cart".into(),
        address: "127.0.0.1:7001".into(),
    });
    deregister
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let refused = registry.deregister(deregister).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let mut deregister = tonic::Request::new(pb::InstanceKey {
        service: "shop".into(),
        address: "127.0.0.1:7001".into(),
    });
    deregister.metadata_mut().insert("authorization", bearer);
    assert!(
        registry
            .deregister(deregister)
            .await
            .unwrap()
            .into_inner()
            .removed
    );

    // The history names the token of each change, never its value.
    let (status, body) = server.json().get("/services/shop/history").await;
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().expect("entries");
    let tokens_of: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or(""),
                e["token"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(tokens_of.contains(&("pipeline", "ci")), "{body}");
    assert!(tokens_of.iter().any(|(_, t)| *t == "admin"), "{body}");
    assert!(!body.to_string().contains(CI));
    let work = TempDir::new().unwrap();
    let shown = grayline_tests::cli::grayline(&server, work.path(), &["history", "shop"])
        .await
        .expect(0);
    assert!(shown.stdout.contains("pipeline (ci)"), "{}", shown.stdout);

    // Rotation: the new token added, the old one removed; no restart.
    token_file(
        &tokens,
        "ci-next",
        &format!("token: {CI_NEXT}\nrole: operator\nservices: [shop]\n"),
    );
    std::fs::remove_file(tokens.join("ci.yaml")).unwrap();
    eventually("the rotated token", Duration::from_secs(15), || async {
        let (next, _) = as_token(CI_NEXT)
            .put("/services/shop/policy", weights(500))
            .await;
        let (old, _) = as_token(CI).get("/services").await;
        (next == 200 && old == 401)
            .then_some(())
            .ok_or(format!("new token {next}, old token {old}"))
    })
    .await;
    let refused = server
        .admin_as(Some(CI), None)
        .await
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // A token file others can read is refused (the tokens in use stay).
    std::fs::set_permissions(
        tokens.join("ci-next.yaml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    eventually(
        "the open file reported",
        Duration::from_secs(15),
        || async {
            server
                .process
                .log_text()
                .contains("the tokens directory changed but does not read")
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    let (status, _) = as_token(CI_NEXT).get("/services").await;
    assert_eq!(status, 200);
}
