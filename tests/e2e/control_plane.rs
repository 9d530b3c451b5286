//! The config API over real sockets: every call, every kind of bad input, history, restore,
//! promote, optimistic concurrency, authentication, and durability across SIGKILL.

use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_routing::*;
use grayline_tests::Server;
use grayline_tests::server::AdminClient;
use serde_json::json;
use tonic::Code;

use crate::fixtures::*;

async fn create(client: &mut AdminClient, s: &Service) -> pb::ServiceRecord {
    client
        .create_service(pb::CreateServiceRequest {
            dry_run: false,
            service: Some(pb_service(s)),
        })
        .await
        .expect("create")
        .into_inner()
}

async fn set_policy(client: &mut AdminClient, service: &str, p: &Policy) -> pb::ServiceRecord {
    client
        .set_policy(pb::SetPolicyRequest {
            service: service.into(),
            policy: Some(pb_policy(p)),
            expected_revision: None,
        })
        .await
        .expect("set policy")
        .into_inner()
}

async fn simulate_cookie(
    client: &mut AdminClient,
    service: &str,
    uid: &str,
) -> pb::SimulateResponse {
    client
        .simulate(pb::SimulateRequest {
            service: service.into(),
            draft: None,
            request: Some(pb::RequestFacts {
                cookies: [("uid".to_string(), uid.to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .expect("simulate")
        .into_inner()
}

async fn catalog_state(client: &mut AdminClient) -> (u64, usize) {
    let list = client
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner();
    let history = client
        .history(pb::HistoryRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    (list.revision, history.entries.len())
}

#[tokio::test]
async fn every_config_call_over_grpc() {
    let server = Server::start();
    let mut c = server
        .admin_as(Some(&server.admin_token), Some("alice"))
        .await;

    // Create, read, list.
    let created = create(&mut c, &shop()).await;
    assert_eq!(created.revision, 1);
    let got = c
        .get_service(pb::GetServiceRequest {
            name: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Every setting in force is filled in, as the JSON API shows it: a gRPC client need not
    // know the defaults.
    let (status, json) = server.json().get("/services/shop").await;
    assert_eq!(status, 200, "{json}");
    let in_force = |v: &pb::Version| {
        let o = v.outlier_detection.as_ref().expect("outlier_detection");
        let r = v.retry.as_ref().expect("retry");
        let b = v.breaker.as_ref().expect("breaker");
        json!({
            "outlier_detection": {
                "enabled": o.enabled.expect("enabled"),
                "consecutive_failures": o.consecutive_failures.expect("consecutive_failures"),
                "base_ejection_ms": o.base_ejection_ms.expect("base_ejection_ms"),
                "max_ejection_ms": o.max_ejection_ms.expect("max_ejection_ms"),
                "max_ejection_percent": o.max_ejection_percent.expect("max_ejection_percent"),
            },
            "retry": {
                "attempts": r.attempts,
                "per_try_timeout_ms": r.per_try_timeout_ms,
                "budget_percent": r.budget_percent.expect("budget_percent"),
            },
            "breaker_enabled": b.enabled.expect("enabled"),
        })
    };
    let shown = |v: &serde_json::Value| {
        json!({
            "outlier_detection": v["outlier_detection"],
            "retry": v["retry"],
            "breaker_enabled": v["breaker"]["enabled"],
        })
    };
    let versions = &got.service.as_ref().expect("service").versions;
    for (i, v) in versions.iter().enumerate() {
        assert_eq!(
            in_force(v),
            shown(&json["service"]["versions"][i]),
            "{json}"
        );
    }
    assert_eq!(from_pb(got.service), shop());
    let list = c
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((list.revision, list.services.len()), (1, 1));

    // Update the whole service.
    let mut updated = shop();
    updated.hosts.push("*.shop.example.com".into());
    let r = c
        .update_service(pb::UpdateServiceRequest {
            dry_run: false,
            service: Some(pb_service(&updated)),
            expected_revision: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.revision, from_pb(r.service).hosts.len()), (2, 2));

    // Versions: create, update, and later delete.
    let mut v3 = Version::new("v3", &["127.0.0.1:9003"]);
    let r = c
        .create_version(pb::CreateVersionRequest {
            service: "shop".into(),
            version: Some((&v3).into()),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_pb(r.service).versions.len(), 3);
    v3.timeout_ms = 1500;
    v3.load_balance = LoadBalance::Random;
    let r = c
        .update_version(pb::UpdateVersionRequest {
            service: "shop".into(),
            version: Some((&v3).into()),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_pb(r.service).version("v3").unwrap().timeout_ms, 1500);

    // A sticky 50/50 split, then simulate: the same user always lands on the same version.
    let p = policy(
        vec![header_rule("x-canary", "1", "v3")],
        Some(split(
            &[("v1", 5000), ("v2", 5000)],
            Some(StickyKey::Cookie("uid".into())),
        )),
    );
    let with_policy = set_policy(&mut c, "shop", &p).await;
    let first = simulate_cookie(&mut c, "shop", "alice").await;
    assert_eq!(first.rule_index, -1);
    assert!(
        first.explanation.contains("sticky by cookie uid"),
        "{first:?}"
    );
    for _ in 0..5 {
        assert_eq!(
            simulate_cookie(&mut c, "shop", "alice").await.version,
            first.version
        );
    }
    let by_rule = c
        .simulate(pb::SimulateRequest {
            service: "shop".into(),
            draft: None,
            request: Some(pb::RequestFacts {
                headers: [("X-Canary".to_string(), "1".to_string())].into(),
                user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((by_rule.version.as_str(), by_rule.rule_index), ("v3", 0));
    assert_eq!(
        (by_rule.os.as_str(), by_rule.browser.as_str()),
        ("ios", "safari")
    );

    // Promote v2: all traffic, stable, rules gone.
    let promoted = c
        .promote(pb::PromoteRequest {
            service: "shop".into(),
            version: "v2".into(),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    let s = from_pb(promoted.service);
    assert_eq!((s.stable.as_str(), s.policy.rules.len()), ("v2", 0));
    for uid in ["a", "b", "c", "d"] {
        assert_eq!(simulate_cookie(&mut c, "shop", uid).await.version, "v2");
    }

    // History, newest first, with actor and actions; restore undoes the promote.
    let history = c
        .history(pb::HistoryRequest {
            service: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "promote",
            "set_policy",
            "update_version",
            "create_version",
            "update",
            "create"
        ]
    );
    assert!(history.iter().all(|e| e.actor == "alice"));
    assert_eq!(history[0].previous_revision, with_policy.revision);
    let restored = c
        .restore(pb::RestoreRequest {
            service: "shop".into(),
            revision: history[0].previous_revision,
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_pb(restored.service).policy, p);
    assert_eq!(
        simulate_cookie(&mut c, "shop", "alice").await.version,
        first.version
    );

    // Delete the version no route uses any more... v3 is still used by the rule.
    let err = c
        .delete_version(pb::DeleteVersionRequest {
            service: "shop".into(),
            version: "v3".into(),
            expected_revision: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("policy.rules[0].route"),
        "{}",
        err.message()
    );
    set_policy(&mut c, "shop", &Policy::default()).await;
    let r = c
        .delete_version(pb::DeleteVersionRequest {
            service: "shop".into(),
            version: "v3".into(),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(from_pb(r.service).version("v3").is_none());

    // Proxies (none yet), then delete the service.
    let proxies = c
        .list_proxies(pb::ListProxiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(proxies.proxies.is_empty());
    let deleted = c
        .delete_service(pb::DeleteServiceRequest {
            name: "shop".into(),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.revision, 10);
    let err = c
        .get_service(pb::GetServiceRequest {
            name: "shop".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A deleted service can be brought back by restoring a revision of it.
    let back = c
        .restore(pb::RestoreRequest {
            service: "shop".into(),
            revision: 1,
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_pb(back.service), shop());
}

#[tokio::test]
async fn watch_replays_history_then_follows_live() {
    let server = Server::start();
    let mut c = server.admin().await;
    create(&mut c, &shop()).await;
    let mut other = shop();
    other.name = "blog".into();
    other.hosts = vec!["blog.example.com".into()];
    create(&mut c, &other).await;

    let mut from_start = c
        .watch(pb::WatchRequest {
            from_revision: 0,
            service: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut replay = c
        .watch(pb::WatchRequest {
            from_revision: 1,
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let e = replay.message().await.unwrap().unwrap();
    assert_eq!((e.revision, e.service.as_str()), (2, "blog"));

    set_policy(&mut c, "blog", &Policy::default()).await; // 3, filtered out of `from_start`
    set_policy(
        &mut c,
        "shop",
        &policy(vec![], Some(split(&[("v1", 9000), ("v2", 1000)], None))),
    )
    .await; // 4
    let e = tokio::time::timeout(Duration::from_secs(5), from_start.message())
        .await
        .expect("live event in time")
        .unwrap()
        .unwrap();
    assert_eq!((e.revision, e.action.as_str()), (4, "set_policy"));
    assert!(
        e.summary.contains("90 % to v1, 10 % to v2"),
        "{}",
        e.summary
    );
    for expected in [3, 4] {
        assert_eq!(replay.message().await.unwrap().unwrap().revision, expected);
    }
}

/// Sends one bad request and checks the code, that the message starts with the field path,
/// and (checked by the caller) that nothing was stored.
macro_rules! rejects {
    ($call:expr, $code:expr, $field:expr) => {{
        let err = $call
            .await
            .expect_err(concat!("should fail: ", stringify!($call)));
        assert_eq!(
            err.code(),
            $code,
            "{}: {}",
            stringify!($call),
            err.message()
        );
        assert!(
            err.message().starts_with($field),
            "{}: message `{}` does not start with `{}`",
            stringify!($call),
            err.message(),
            $field
        );
    }};
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_and_changes_nothing() {
    let server = Server::start();
    let mut c = server.admin().await;
    create(&mut c, &shop()).await;
    let before = catalog_state(&mut c).await;

    let create_req = |s: &Service| pb::CreateServiceRequest {
        dry_run: false,
        service: Some(pb_service(s)),
    };
    let policy_req = |p: Policy| pb::SetPolicyRequest {
        service: "shop".into(),
        policy: Some(pb_policy(&p)),
        expected_revision: None,
    };
    let rule = |c: Condition| Rule {
        name: String::new(),
        conditions: vec![c],
        route: Route::Version("v2".into()),
        mirror: None,
    };
    let header = |op: MatchOp| {
        Condition::Header(FieldMatch {
            name: "x".into(),
            op,
            negate: false,
        })
    };

    // Unknown version in a route.
    rejects!(
        c.set_policy(policy_req(policy(vec![header_rule("x", "1", "v9")], None))),
        Code::InvalidArgument,
        "policy.rules[0].route.version: unknown version `v9`"
    );
    // Weights that do not sum to 10000, and a weight above it.
    rejects!(
        c.set_policy(policy_req(policy(
            vec![],
            Some(split(&[("v1", 9000), ("v2", 999)], None))
        ))),
        Code::InvalidArgument,
        "policy.default_route.split.weights: weights sum to 9999"
    );
    rejects!(
        c.set_policy(policy_req(policy(
            vec![],
            Some(split(&[("v1", 20000), ("v2", 0)], None))
        ))),
        Code::InvalidArgument,
        "policy.default_route.split.weights[0].weight"
    );
    // Huge numbers.
    let mut huge = Version::new("v3", &["127.0.0.1:1"]);
    huge.timeout_ms = u32::MAX;
    rejects!(
        c.create_version(pb::CreateVersionRequest {
            service: "shop".into(),
            version: Some((&huge).into()),
            expected_revision: None
        }),
        Code::InvalidArgument,
        "version.timeout_ms: 4294967295 is out of range"
    );
    let mut huge = shop();
    huge.versions[1].breaker.request_volume = u32::MAX;
    rejects!(
        c.update_service(pb::UpdateServiceRequest {
            dry_run: false,
            service: Some(pb_service(&huge)),
            expected_revision: None
        }),
        Code::InvalidArgument,
        "service.versions[1].breaker.request_volume"
    );
    // Empty names.
    let mut empty = shop();
    empty.name = String::new();
    rejects!(
        c.create_service(create_req(&empty)),
        Code::InvalidArgument,
        "service.name"
    );
    let mut empty = shop();
    empty.name = "other".into();
    empty.hosts = vec![];
    empty.versions[1].name = String::new();
    rejects!(
        c.create_service(create_req(&empty)),
        Code::InvalidArgument,
        "service.versions[1].name"
    );
    // Bad regex, and a regex too large.
    rejects!(
        c.set_policy(policy_req(policy(
            vec![rule(header(MatchOp::Regex("(beta".into())))],
            None
        ))),
        Code::InvalidArgument,
        "policy.rules[0].conditions[0].header.match.regex: unclosed group"
    );
    rejects!(
        c.set_policy(policy_req(policy(
            vec![rule(header(MatchOp::Regex(r"\w{1000}\w{1000}".into())))],
            None
        ))),
        Code::InvalidArgument,
        "policy.rules[0].conditions[0].header.match.regex: regex too large"
    );
    // Bad CIDR.
    rejects!(
        c.set_policy(policy_req(policy(
            vec![rule(Condition::SourceIp(CidrMatch {
                cidrs: vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()],
                negate: false
            }))],
            None
        ))),
        Code::InvalidArgument,
        "policy.rules[0].conditions[0].source_ip.cidrs[1]"
    );
    // Bad endpoint.
    let mut bad = shop();
    bad.name = "other".into();
    bad.hosts = vec!["other.example.com".into()];
    bad.versions[0].endpoints = vec!["no-port".into()];
    rejects!(
        c.create_service(create_req(&bad)),
        Code::InvalidArgument,
        "service.versions[0].endpoints[0]"
    );
    // Duplicates: a version name, a service, a version, a host another service serves.
    let mut dup = shop();
    dup.name = "other".into();
    dup.hosts = vec!["other.example.com".into()];
    dup.versions[1].name = "v1".into();
    rejects!(
        c.create_service(create_req(&dup)),
        Code::InvalidArgument,
        "service.versions[1].name: duplicate version name"
    );
    rejects!(
        c.create_service(create_req(&shop())),
        Code::AlreadyExists,
        "service `shop` already exists"
    );
    rejects!(
        c.create_version(pb::CreateVersionRequest {
            service: "shop".into(),
            version: Some((&Version::new("v2", &["127.0.0.1:5"])).into()),
            expected_revision: None
        }),
        Code::AlreadyExists,
        "service `shop` already has a version `v2`"
    );
    let mut same_host = shop();
    same_host.name = "copy".into();
    rejects!(
        c.create_service(create_req(&same_host)),
        Code::InvalidArgument,
        "service.hosts[0]: host `shop.example.com` with path prefix `/` is already served by service `shop`"
    );
    // Unknown OS and browser families.
    rejects!(
        c.set_policy(policy_req(policy(
            vec![rule(Condition::Os(FamilyMatch {
                family: "beos".into(),
                min_version: String::new(),
                max_version: String::new(),
                negate: false
            }))],
            None
        ))),
        Code::InvalidArgument,
        "policy.rules[0].conditions[0].os.family: unknown OS family `beos`"
    );
    rejects!(
        c.set_policy(policy_req(policy(
            vec![rule(Condition::Browser(FamilyMatch {
                family: "mosaic".into(),
                min_version: "1".into(),
                max_version: String::new(),
                negate: false
            }))],
            None
        ))),
        Code::InvalidArgument,
        "policy.rules[0].conditions[0].browser.family"
    );
    // An empty rule, and a rule without a route.
    rejects!(
        c.set_policy(policy_req(policy(
            vec![Rule {
                name: "nothing".into(),
                conditions: vec![],
                route: Route::Version("v2".into()),
                mirror: None
            }],
            None
        ))),
        Code::InvalidArgument,
        "policy.rules[0].conditions: a rule needs at least one condition"
    );
    rejects!(
        c.set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(pb::Policy {
                rules: vec![pb::Rule {
                    name: String::new(),
                    conditions: vec![
                        pb_policy(&policy(vec![rule(header(MatchOp::Present))], None)).rules[0]
                            .conditions[0]
                            .clone()
                    ],
                    route: None,
                    mirror: None
                }],
                default_route: None,
                default_mirror: None
            }),
            expected_revision: None
        }),
        Code::InvalidArgument,
        "policy.rules[0].route: a route must name a version or a split"
    );
    // The stable version missing.
    let mut unstable = shop();
    unstable.stable = "v7".into();
    rejects!(
        c.update_service(pb::UpdateServiceRequest {
            dry_run: false,
            service: Some(pb_service(&unstable)),
            expected_revision: None
        }),
        Code::InvalidArgument,
        "service.stable: stable version `v7` is not one of the service's versions"
    );
    rejects!(
        c.delete_version(pb::DeleteVersionRequest {
            service: "shop".into(),
            version: "v1".into(),
            expected_revision: None
        }),
        Code::FailedPrecondition,
        "version `v1` is the stable version"
    );
    // Unknown service, version and revision; a promote to nowhere.
    rejects!(
        c.get_service(pb::GetServiceRequest {
            name: "nope".into()
        }),
        Code::NotFound,
        "service `nope` not found"
    );
    rejects!(
        c.set_policy(pb::SetPolicyRequest {
            service: "nope".into(),
            policy: Some(pb::Policy::default()),
            expected_revision: None
        }),
        Code::NotFound,
        "service `nope` not found"
    );
    rejects!(
        c.update_version(pb::UpdateVersionRequest {
            service: "shop".into(),
            version: Some((&Version::new("v8", &["127.0.0.1:5"])).into()),
            expected_revision: None
        }),
        Code::NotFound,
        "service `shop` has no version `v8`"
    );
    rejects!(
        c.promote(pb::PromoteRequest {
            service: "shop".into(),
            version: "v8".into(),
            expected_revision: None
        }),
        Code::NotFound,
        "service `shop` has no version `v8`"
    );
    rejects!(
        c.restore(pb::RestoreRequest {
            service: "shop".into(),
            revision: 99,
            expected_revision: None
        }),
        Code::NotFound,
        "revision 99 is not in the history of service `shop`"
    );
    rejects!(
        c.create_service(pb::CreateServiceRequest {
            service: None,
            dry_run: false
        }),
        Code::InvalidArgument,
        "service: required"
    );
    // An oversized request: more than 1 MiB of hosts.
    let mut big = shop();
    big.name = "big".into();
    big.hosts = (0..60_000)
        .map(|i| format!("host-{i}.example.com"))
        .collect();
    let err = c.create_service(create_req(&big)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "oversized: {err:?}");
    assert!(
        err.message().contains("length too large"),
        "{}",
        err.message()
    );
    // A service over the limits but under the size cap.
    big.hosts.truncate(100);
    rejects!(
        c.create_service(create_req(&big)),
        Code::InvalidArgument,
        "service.hosts: at most 64 hosts"
    );

    assert_eq!(
        catalog_state(&mut c).await,
        before,
        "a rejected write stored something"
    );
    let stored = c
        .get_service(pb::GetServiceRequest {
            name: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_pb(stored.service), shop());
}

#[tokio::test]
async fn json_api_mirrors_grpc_with_field_errors() {
    let server = Server::start();
    let api = server.json();
    let body = json!({"service": serde_json::to_value(shop()).unwrap()});
    let (status, created) = api.post("/services", body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["revision"], 1);

    // What JSON wrote, gRPC reads.
    let mut c = server.admin().await;
    let got = c
        .get_service(pb::GetServiceRequest {
            name: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_pb(got.service), shop());

    // Negative numbers are caught by the parser, with the field path.
    let (status, err) = api
        .post(
            "/services/shop/versions",
            json!({"version": {"name": "v3", "endpoints": ["127.0.0.1:1"], "timeout_ms": -5}}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["fields"][0]["field"], "version.timeout_ms");
    // Validation errors come back per field, for the console to show at each one.
    let (status, err) = api
        .put(
            "/services/shop/policy",
            json!({"policy": {"rules": [{"conditions": [{"header": {"name": "x", "match": {"regex": "(a"}}}],
                                          "route": {"version": "v9"}}],
                              "default_route": {"split": {"weights": [{"version": "v1", "weight": 10}]}}}}),
        )
        .await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = err["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "policy.rules[0].conditions[0].header.match.regex",
            "policy.rules[0].route.version",
            "policy.default_route.split.weights"
        ]
    );
    // Unknown fields and unknown families are named too.
    let (status, err) = api
        .put("/services/shop/policy", json!({"policy": {"rules": [{"conditions": [{"planet": {}}], "route": {"version": "v1"}}]}}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        err["error"]["fields"][0]["field"],
        "policy.rules[0].conditions[0]"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown variant `planet`"),
        "{err}"
    );
    // Too large.
    let huge = "x".repeat(2 * 1024 * 1024);
    let (status, err) = api
        .put(
            "/services/shop/policy",
            json!({"policy": {"rules": [], "pad": huge}}),
        )
        .await;
    assert_eq!(status, 413, "{err}");
    // Not found, conflict.
    assert_eq!(api.get("/services/nope").await.0, 404);
    let (status, err) = api
        .post(
            "/services/shop/promote",
            json!({"version": "v2", "expected_revision": 7}),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "revision_conflict");
    // Promote, history and restore over JSON.
    let (status, promoted) = api
        .post(
            "/services/shop/promote",
            json!({"version": "v2", "expected_revision": 1}),
        )
        .await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["service"]["stable"], "v2");
    let (_, history) = api.get("/services/shop/history").await;
    assert_eq!(history["entries"][0]["action"], "promote");
    let undo = history["entries"][0]["previous_revision"].clone();
    let (status, restored) = api
        .post("/services/shop/restore", json!({"revision": undo}))
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["service"]["stable"], "v1");
    // Simulate a draft without storing it.
    let mut draft = shop();
    draft.policy.rules = vec![header_rule("x-beta", "yes", "v2")];
    let (status, sim) = api
        .post(
            "/simulate",
            json!({"draft": draft, "request": {"headers": {"X-Beta": "yes"}}}),
        )
        .await;
    assert_eq!(status, 200, "{sim}");
    assert_eq!(
        (sim["version"].as_str(), sim["rule_index"].as_i64()),
        (Some("v2"), Some(0))
    );
    assert_eq!(catalog_state(&mut c).await.0, 3);
    // Delete with an expected revision.
    assert_eq!(
        api.delete("/services/shop?expected_revision=1").await.0,
        409
    );
    assert_eq!(
        api.delete("/services/shop?expected_revision=3").await.0,
        200
    );
}

#[tokio::test]
async fn two_writers_conflict_on_the_revision() {
    let server = Server::start();
    let mut alice = server
        .admin_as(Some(&server.admin_token), Some("alice"))
        .await;
    let mut bob = server
        .admin_as(Some(&server.admin_token), Some("bob"))
        .await;
    let base = create(&mut alice, &shop()).await.revision;

    let alice_policy = policy(vec![], Some(split(&[("v1", 9000), ("v2", 1000)], None)));
    let bob_policy = policy(vec![], Some(split(&[("v1", 5000), ("v2", 5000)], None)));
    let a = alice
        .set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(pb_policy(&alice_policy)),
            expected_revision: Some(base),
        })
        .await
        .unwrap()
        .into_inner();
    let err = bob
        .set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(pb_policy(&bob_policy)),
            expected_revision: Some(base),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains(&format!("is at revision {}, not {base}", a.revision)),
        "{}",
        err.message()
    );
    let now = alice
        .get_service(pb::GetServiceRequest {
            name: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_pb(now.service).policy, alice_policy);
    let history = bob
        .history(pb::HistoryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 2);
    assert_eq!(history.entries[0].actor, "alice");
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let mut server = Server::start();
    let mut c = server.admin().await;
    create(&mut c, &shop()).await;
    let mut last = Policy::default();
    for i in 1..=30u32 {
        last = policy(vec![], Some(split(&[("v1", 10_000 - i), ("v2", i)], None)));
        set_policy(&mut c, "shop", &last).await;
    }
    // The last write was acknowledged; kill at once, without a chance to flush.
    server.kill9();
    server.restart();
    let mut c = server.admin().await;
    let got = c
        .get_service(pb::GetServiceRequest {
            name: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.revision, 31);
    assert_eq!(from_pb(got.service).policy, last);
    let history = c
        .history(pb::HistoryRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 31);
    // And it keeps counting from there.
    let next = set_policy(&mut c, "shop", &Policy::default()).await;
    assert_eq!(next.revision, 32);
}

#[tokio::test]
async fn every_api_requires_the_right_token() {
    let server = Server::start();
    for token in [None, Some("wrong-token"), Some(server.proxy_token.as_str())] {
        let mut c = server.admin_as(token, None).await;
        let err = c
            .list_services(pb::ListServicesRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}");
        assert!(err.message().contains("admin.token"), "{}", err.message());
    }
    let mut with_admin = pb::proxy_config_client::ProxyConfigClient::with_interceptor(
        tonic::transport::Channel::from_shared(server.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
        grayline_tests::server::Bearer::new(Some(&server.admin_token), None),
    );
    let hello = pb::ProxyMessage {
        kind: Some(pb::proxy_message::Kind::Hello(pb::Hello {
            proxy_id: "p".into(),
            ..Default::default()
        })),
    };
    let err = with_admin
        .stream(tokio_stream::iter(vec![hello]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let (status, body) = server.json().without_token().get("/services").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");
    // The console's files and the health check are public; the tokens never reach the log.
    assert_eq!(
        reqwest::get(server.http_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let log = server.process.log_text();
    assert!(
        log.contains("admin.token"),
        "the log should say where the token is"
    );
    assert!(!log.contains(&server.admin_token) && !log.contains(&server.proxy_token));
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_with_streams_open() {
    let mut server = Server::start();
    let mut c = server.admin().await;
    let _watch = c
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (_tx, _push) = crate::proxy_stream::connect(&server, "p1", &[]).await;
    assert!(
        server.process.terminate(),
        "exit status was not 0:\n{}",
        server.process.log_text()
    );
}
