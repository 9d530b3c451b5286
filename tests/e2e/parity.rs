//! The two front ends agree: every operation of the gRPC `ConfigApi`, `Rollouts` and
//! `Registry`, and of the JSON API, is sent the same bad input both ways, and both answer it the same way — the
//! codes paired as docs/api.md's error table pairs them, the same message, the same field —
//! and store nothing. The table is read from the docs, so code and docs cannot drift apart.

use std::collections::BTreeSet;

use futures::{SinkExt, StreamExt};
use grayline_proto::v1 as pb;
use grayline_routing::*;
use grayline_tests::Server;
use grayline_tests::server::JsonApi;
use serde_json::{Value, json};
use tonic::Code;

use crate::fixtures::*;

/// What went wrong, as the docs' table names the situations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Invalid,
    NotFound,
    Exists,
    /// A stale `expected_revision`.
    Conflict,
    Precondition,
    Unauthenticated,
}

impl Kind {
    /// The row of docs/api.md's error table for this situation, by its first words.
    fn row(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid input",
            Kind::NotFound => "no such",
            Kind::Exists => "creating what exists",
            Kind::Conflict => "`expected_revision` is stale",
            Kind::Precondition => "a version still in use",
            Kind::Unauthenticated => "no or wrong token",
        }
    }
}

/// One row of the docs' table: gRPC code, HTTP status, JSON `error.code`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    situation: String,
    grpc: String,
    http: u16,
    json: String,
}

/// The error table of docs/api.md.
fn documented() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
    let text = std::fs::read_to_string(path).expect("docs/api.md");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Errors"))
        .expect("an Errors section in docs/api.md");
    let quoted = |cell: &str| cell.split('`').nth(1).unwrap_or_default().to_string();
    section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| situation"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Row {
                situation: cells[1].to_string(),
                grpc: quoted(cells[2]),
                http: cells[3]
                    .parse()
                    .unwrap_or_else(|_| panic!("an HTTP status in `{l}`")),
                json: quoted(cells[4]),
            }
        })
        .collect()
}

/// `InvalidArgument` → `INVALID_ARGUMENT`, as the docs write codes.
fn code_name(code: Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The answers compared so far, and every disagreement, reported together at the end.
struct Parity {
    table: Vec<Row>,
    api: JsonApi,
    compared: usize,
    kinds: BTreeSet<String>,
    disagreements: Vec<String>,
}

/// Whether the two messages must be the same text. They differ only where the wire itself
/// differs (a JSON body that lacks a field says so in serde's words; a protobuf message
/// cannot lack one) — the code and the field must still agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Message {
    Same,
    SameField,
}

impl Parity {
    fn check(
        &mut self,
        what: &str,
        kind: Kind,
        message: Message,
        grpc: Result<(), tonic::Status>,
        (http, body): (u16, Value),
    ) {
        self.compared += 1;
        self.kinds.insert(format!("{kind:?}"));
        if let Some(why) = self.disagreement(kind, message, grpc, http, &body) {
            self.disagreements.push(format!("{what}: {why}"));
        }
    }

    fn disagreement(
        &self,
        kind: Kind,
        message: Message,
        grpc: Result<(), tonic::Status>,
        http: u16,
        body: &Value,
    ) -> Option<String> {
        let Err(status) = grpc else {
            return Some("gRPC accepted it".into());
        };
        let row = self
            .table
            .iter()
            .find(|r| r.situation.starts_with(kind.row()))
            .unwrap_or_else(|| panic!("docs/api.md has no row for {kind:?}"));
        let observed = (
            code_name(status.code()),
            http,
            body["error"]["code"].as_str(),
        );
        let expected = (row.grpc.clone(), row.http, Some(row.json.as_str()));
        if observed != expected {
            return Some(format!(
                "answered {observed:?}, docs/api.md says {kind:?} is {expected:?} \
                 (gRPC `{}`, JSON {body})",
                status.message()
            ));
        }
        let json_message = body["error"]["message"].as_str().unwrap_or_default();
        if message == Message::Same && status.message() != json_message {
            return Some(format!(
                "gRPC says `{}`, JSON says `{json_message}`",
                status.message()
            ));
        }
        let field = body["error"]["fields"][0]["field"]
            .as_str()
            .unwrap_or_default();
        if kind == Kind::Invalid
            && (field.is_empty() || !status.message().starts_with(&format!("{field}: ")))
        {
            return Some(format!(
                "JSON names field `{field}`, gRPC says `{}`",
                status.message()
            ));
        }
        None
    }
}

/// Sends one bad input over gRPC (`$grpc`, a call) and over JSON (`$method`, `$args` of
/// [`JsonApi`]) and compares the answers.
macro_rules! both {
    ($p:expr, $kind:expr, $grpc:expr, $method:ident($($args:expr),*)) => {
        both!($p, $kind, Message::Same, $grpc, $method($($args),*))
    };
    ($p:expr, $kind:expr, $message:expr, $grpc:expr, $method:ident($($args:expr),*)) => {{
        let grpc = $grpc.await.map(|_| ());
        let json = $p.api.$method($($args),*).await;
        $p.check(stringify!($grpc), $kind, $message, grpc, json);
    }};
}

fn svc(s: &Service) -> Value {
    serde_json::to_value(s).unwrap()
}

fn rule_to(version: &str) -> Rule {
    header_rule("x-canary", "1", version)
}

#[tokio::test]
async fn both_apis_answer_every_bad_input_alike_as_the_docs_say() {
    let server = Server::start();
    let mut c = server.admin().await;
    let mut r = server.rollouts("ci").await;
    // shop (v1 stable, v2); `gone`, created and deleted; a rollout, aborted.
    create(&server, &shop()).await;
    let mut gone = shop();
    gone.name = "gone".into();
    gone.hosts = vec!["gone.example.com".into()];
    let gone_created = create(&server, &gone).await;
    let gone_deleted = c
        .delete_service(pb::DeleteServiceRequest {
            name: "gone".into(),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let plan = json!({"service": "shop", "canary": "v2", "steps": [{"weight": 500}]});
    let (status, view) = server
        .json()
        .post("/rollouts", json!({ "plan": plan }))
        .await;
    assert_eq!(status, 201, "{view}");
    let rollout = view["rollout"]["id"].as_u64().unwrap();
    let (status, view) = server
        .json()
        .post(&format!("/rollouts/{rollout}/abort"), json!({}))
        .await;
    assert_eq!(status, 200, "{view}");
    let before = (server.json().get("/history?limit=1000").await.1)["entries"].clone();
    let revision = (server.json().get("/services/shop").await.1)["revision"]
        .as_u64()
        .unwrap();

    let mut p = Parity {
        table: documented(),
        api: server.json(),
        compared: 0,
        kinds: BTreeSet::new(),
        disagreements: Vec::new(),
    };
    let stale_revision = revision + 100;
    let stale = Some(stale_revision);
    let mut bad_endpoint = shop();
    bad_endpoint.name = "other".into();
    bad_endpoint.hosts = vec!["other.example.com".into()];
    bad_endpoint.versions[0].endpoints = vec!["300.1.1.1:80".into()];
    let mut unstable = shop();
    unstable.stable = "v7".into();
    let mut nope = shop();
    nope.name = "nope".into();
    nope.hosts = vec!["nope.example.com".into()];
    // Every host wrong: a long list of field errors, which gRPC must still deliver.
    let mut many = nope.clone();
    many.hosts = (0..64)
        .map(|i| format!("Host-{i}-{}", "x".repeat(180)))
        .collect();
    let mut slow = Version::new("v3", &["127.0.0.1:9003"]);
    slow.timeout_ms = u32::MAX;
    let v8 = Version::new("v8", &["127.0.0.1:9008"]);
    let to_v9 = policy(vec![rule_to("v9")], None);

    // Services.
    both!(
        p,
        Kind::NotFound,
        c.get_service(pb::GetServiceRequest {
            name: "nope".into()
        }),
        get("/services/nope")
    );
    both!(
        p,
        Kind::Invalid,
        c.create_service(pb::CreateServiceRequest {
            service: Some(pb_service(&bad_endpoint)),
            dry_run: false
        }),
        post("/services", json!({"service": svc(&bad_endpoint)}))
    );
    // gRPC keeps the first errors that fit in a trailer and says how many more there are.
    both!(
        p,
        Kind::Invalid,
        Message::SameField,
        c.create_service(pb::CreateServiceRequest {
            service: Some(pb_service(&many)),
            dry_run: false
        }),
        post("/services", json!({"service": svc(&many)}))
    );
    both!(
        p,
        Kind::Exists,
        c.create_service(pb::CreateServiceRequest {
            service: Some(pb_service(&shop())),
            dry_run: false
        }),
        post("/services", json!({"service": svc(&shop())}))
    );
    both!(
        p,
        Kind::Exists,
        c.create_service(pb::CreateServiceRequest {
            service: Some(pb_service(&shop())),
            dry_run: true
        }),
        post(
            "/services",
            json!({"service": svc(&shop()), "dry_run": true})
        )
    );
    both!(
        p,
        Kind::NotFound,
        c.update_service(pb::UpdateServiceRequest {
            service: Some(pb_service(&nope)),
            expected_revision: None,
            dry_run: false
        }),
        put("/services/nope", json!({"service": svc(&nope)}))
    );
    both!(
        p,
        Kind::Conflict,
        c.update_service(pb::UpdateServiceRequest {
            service: Some(pb_service(&shop())),
            expected_revision: stale,
            dry_run: false
        }),
        put(
            "/services/shop",
            json!({"service": svc(&shop()), "expected_revision": stale})
        )
    );
    both!(
        p,
        Kind::Invalid,
        c.update_service(pb::UpdateServiceRequest {
            service: Some(pb_service(&unstable)),
            expected_revision: None,
            dry_run: true
        }),
        put(
            "/services/shop",
            json!({"service": svc(&unstable), "dry_run": true})
        )
    );
    both!(
        p,
        Kind::NotFound,
        c.delete_service(pb::DeleteServiceRequest {
            name: "nope".into(),
            expected_revision: None
        }),
        delete("/services/nope")
    );
    both!(
        p,
        Kind::Conflict,
        c.delete_service(pb::DeleteServiceRequest {
            name: "shop".into(),
            expected_revision: stale
        }),
        delete(&format!(
            "/services/shop?expected_revision={}",
            stale_revision
        ))
    );

    // Versions.
    both!(
        p,
        Kind::NotFound,
        c.create_version(pb::CreateVersionRequest {
            service: "nope".into(),
            version: Some((&v8).into()),
            expected_revision: None
        }),
        post("/services/nope/versions", json!({"version": v8}))
    );
    both!(
        p,
        Kind::Exists,
        c.create_version(pb::CreateVersionRequest {
            service: "shop".into(),
            version: Some((&Version::new("v2", &["127.0.0.1:1"])).into()),
            expected_revision: None
        }),
        post(
            "/services/shop/versions",
            json!({"version": Version::new("v2", &["127.0.0.1:1"])})
        )
    );
    both!(
        p,
        Kind::Invalid,
        c.create_version(pb::CreateVersionRequest {
            service: "shop".into(),
            version: Some((&slow).into()),
            expected_revision: None
        }),
        post("/services/shop/versions", json!({"version": slow}))
    );
    both!(
        p,
        Kind::Conflict,
        c.create_version(pb::CreateVersionRequest {
            service: "shop".into(),
            version: Some((&v8).into()),
            expected_revision: stale
        }),
        post(
            "/services/shop/versions",
            json!({"version": v8, "expected_revision": stale})
        )
    );
    both!(
        p,
        Kind::NotFound,
        c.update_version(pb::UpdateVersionRequest {
            service: "shop".into(),
            version: Some((&v8).into()),
            expected_revision: None
        }),
        put("/services/shop/versions/v8", json!({"version": v8}))
    );
    both!(
        p,
        Kind::NotFound,
        c.delete_version(pb::DeleteVersionRequest {
            service: "shop".into(),
            version: "v8".into(),
            expected_revision: None
        }),
        delete("/services/shop/versions/v8")
    );
    both!(
        p,
        Kind::Precondition,
        c.delete_version(pb::DeleteVersionRequest {
            service: "shop".into(),
            version: "v1".into(),
            expected_revision: None
        }),
        delete("/services/shop/versions/v1")
    );

    // Policy.
    both!(
        p,
        Kind::Invalid,
        c.set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(pb_policy(&to_v9)),
            expected_revision: None
        }),
        put("/services/shop/policy", json!({"policy": to_v9}))
    );
    both!(
        p,
        Kind::NotFound,
        c.set_policy(pb::SetPolicyRequest {
            service: "nope".into(),
            policy: Some(pb::Policy::default()),
            expected_revision: None
        }),
        put("/services/nope/policy", json!({"policy": {}}))
    );
    both!(
        p,
        Kind::Conflict,
        c.set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(pb::Policy::default()),
            expected_revision: stale
        }),
        put(
            "/services/shop/policy",
            json!({"policy": {}, "expected_revision": stale})
        )
    );
    let mut routeless = pb_policy(&policy(vec![rule_to("v2")], None));
    routeless.rules[0].route = None;
    both!(
        p,
        Kind::Invalid,
        Message::SameField,
        c.set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(routeless),
            expected_revision: None
        }),
        put(
            "/services/shop/policy",
            json!({"policy": {"rules": [{"conditions": [{"header": {"name": "x-canary", "match": {"exact": "1"}}}]}]}})
        )
    );

    // Promote and restore.
    both!(
        p,
        Kind::NotFound,
        c.promote(pb::PromoteRequest {
            service: "shop".into(),
            version: "v8".into(),
            expected_revision: None
        }),
        post("/services/shop/promote", json!({"version": "v8"}))
    );
    both!(
        p,
        Kind::NotFound,
        c.promote(pb::PromoteRequest {
            service: "nope".into(),
            version: "v2".into(),
            expected_revision: None
        }),
        post("/services/nope/promote", json!({"version": "v2"}))
    );
    both!(
        p,
        Kind::Conflict,
        c.promote(pb::PromoteRequest {
            service: "shop".into(),
            version: "v2".into(),
            expected_revision: stale
        }),
        post(
            "/services/shop/promote",
            json!({"version": "v2", "expected_revision": stale})
        )
    );
    both!(
        p,
        Kind::Invalid,
        c.restore(pb::RestoreRequest {
            service: "shop".into(),
            revision: 0,
            expected_revision: None
        }),
        post("/services/shop/restore", json!({"revision": 0}))
    );
    both!(
        p,
        Kind::NotFound,
        c.restore(pb::RestoreRequest {
            service: "shop".into(),
            revision: 999,
            expected_revision: None
        }),
        post("/services/shop/restore", json!({"revision": 999}))
    );
    both!(
        p,
        Kind::NotFound,
        c.restore(pb::RestoreRequest {
            service: "shop".into(),
            revision: gone_created,
            expected_revision: None
        }),
        post("/services/shop/restore", json!({"revision": gone_created}))
    );
    both!(
        p,
        Kind::Precondition,
        c.restore(pb::RestoreRequest {
            service: "gone".into(),
            revision: gone_deleted,
            expected_revision: None
        }),
        post("/services/gone/restore", json!({"revision": gone_deleted}))
    );
    both!(
        p,
        Kind::Conflict,
        c.restore(pb::RestoreRequest {
            service: "shop".into(),
            revision: 1,
            expected_revision: stale
        }),
        post(
            "/services/shop/restore",
            json!({"revision": 1, "expected_revision": stale})
        )
    );

    // Simulate.
    both!(
        p,
        Kind::Invalid,
        c.simulate(pb::SimulateRequest {
            service: String::new(),
            draft: None,
            request: None
        }),
        post("/simulate", json!({}))
    );
    both!(
        p,
        Kind::NotFound,
        c.simulate(pb::SimulateRequest {
            service: "nope".into(),
            draft: None,
            request: None
        }),
        post("/simulate", json!({"service": "nope"}))
    );
    both!(
        p,
        Kind::Invalid,
        c.simulate(pb::SimulateRequest {
            service: "shop".into(),
            draft: None,
            request: Some(pb::RequestFacts {
                client_ip: "1.2.3".into(),
                ..Default::default()
            })
        }),
        post(
            "/simulate",
            json!({"service": "shop", "request": {"client_ip": "1.2.3"}})
        )
    );
    both!(
        p,
        Kind::Invalid,
        c.simulate(pb::SimulateRequest {
            service: String::new(),
            draft: Some(pb_service(&unstable)),
            request: None
        }),
        post("/simulate", json!({"draft": svc(&unstable)}))
    );

    // Rollouts.
    let bad_plan =
        json!({"service": "shop", "canary": "v2", "steps": [{"weight": 500}, {"weight": 100}]});
    let wire = |plan: &Value| pb::StartRolloutRequest {
        plan: Some(grayline_proto::plan_to_pb(
            &serde_json::from_value(plan.clone()).unwrap(),
        )),
    };
    let no_service = json!({"service": "nope", "canary": "v2", "steps": [{"weight": 500}]});
    both!(
        p,
        Kind::Invalid,
        r.start_rollout(wire(&bad_plan)),
        post("/rollouts", json!({"plan": bad_plan}))
    );
    both!(
        p,
        Kind::Invalid,
        r.start_rollout(wire(&no_service)),
        post("/rollouts", json!({"plan": no_service}))
    );
    both!(
        p,
        Kind::NotFound,
        r.get_rollout(pb::GetRolloutRequest {
            id: 999,
            service: String::new()
        }),
        get("/rollouts/999")
    );
    both!(
        p,
        Kind::Invalid,
        r.get_rollout(pb::GetRolloutRequest {
            id: 0,
            service: String::new()
        }),
        get("/rollouts/0")
    );
    both!(
        p,
        Kind::NotFound,
        r.get_rollout(pb::GetRolloutRequest {
            id: 0,
            service: "gone".into()
        }),
        get("/services/gone/rollout")
    );
    both!(
        p,
        Kind::NotFound,
        r.control_rollout(pb::ControlRolloutRequest {
            id: 999,
            action: pb::RolloutAction::Pause.into()
        }),
        post("/rollouts/999/pause", json!({}))
    );
    both!(
        p,
        Kind::Invalid,
        r.control_rollout(pb::ControlRolloutRequest {
            id: 0,
            action: pb::RolloutAction::Pause.into()
        }),
        post("/rollouts/0/pause", json!({}))
    );
    both!(
        p,
        Kind::Precondition,
        r.control_rollout(pb::ControlRolloutRequest {
            id: rollout,
            action: pb::RolloutAction::Pause.into()
        }),
        post(&format!("/rollouts/{rollout}/pause"), json!({}))
    );
    both!(
        p,
        Kind::Invalid,
        Message::SameField,
        r.control_rollout(pb::ControlRolloutRequest {
            id: rollout,
            action: 99
        }),
        post(&format!("/rollouts/{rollout}/fly"), json!({}))
    );

    // Statistics: a per-proxy breakdown is not kept per minute.
    both!(
        p,
        Kind::Invalid,
        Message::SameField,
        c.get_stats(pb::StatsRequest {
            service: "shop".into(),
            per_proxy: true,
            per_minute: true,
            ..Default::default()
        }),
        get("/stats?service=shop&per_proxy=true&per_minute=true")
    );

    // Who asks: a bad actor name, and no token or a wrong one, on every API.
    let long_actor = "a".repeat(65);
    let mut odd = server
        .admin_as(Some(&server.admin_token), Some(&long_actor))
        .await;
    p.api = server.json().as_actor(&long_actor);
    both!(
        p,
        Kind::Invalid,
        odd.set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(pb::Policy::default()),
            expected_revision: None
        }),
        put("/services/shop/policy", json!({"policy": {}}))
    );
    // The instance registry: the same checks behind gRPC `Registry` and `/api/v1/registry`.
    p.api = server.json();
    let mut reg = pb::registry_client::RegistryClient::with_interceptor(
        tonic::transport::Channel::from_shared(server.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
        grayline_tests::server::Bearer::new(Some(&server.registration_token), None),
    );
    p.api.token = Some(server.registration_token.clone());
    let register = |service: &str, tag: &str, address: &str, ttl: u32| {
        (
            pb::RegisterRequest {
                service: service.into(),
                tag: tag.into(),
                address: address.into(),
                metadata: Default::default(),
                ttl_seconds: Some(ttl),
            },
            json!({"service": service, "tag": tag, "address": address, "ttl_seconds": ttl}),
        )
    };
    for (kind, (grpc, body)) in [
        (
            Kind::Invalid,
            register("shop", "bad tag", "127.0.0.1:1", 30),
        ),
        (Kind::Invalid, register("shop", "1.1.2", "nowhere", 30)),
        (Kind::Invalid, register("shop", "1.1.2", "0.0.0.0:80", 30)),
        (Kind::Invalid, register("shop", "1.1.2", "127.0.0.1:1", 0)),
        (Kind::NotFound, register("nope", "1.1.2", "127.0.0.1:1", 30)),
    ] {
        both!(
            p,
            kind,
            reg.register(grpc),
            post("/registry/register", body)
        );
    }
    both!(
        p,
        Kind::NotFound,
        reg.keep_alive(pb::InstanceKey {
            service: "shop".into(),
            address: "127.0.0.1:1".into()
        }),
        post(
            "/registry/keepalive",
            json!({"service": "shop", "address": "127.0.0.1:1"})
        )
    );
    both!(
        p,
        Kind::Invalid,
        reg.deregister(pb::InstanceKey {
            service: String::new(),
            address: "127.0.0.1:1".into()
        }),
        post(
            "/registry/deregister",
            json!({"service": "", "address": "127.0.0.1:1"})
        )
    );
    let (_, listed) = server.json().get("/instances").await;
    assert_eq!(
        listed["instances"],
        json!([]),
        "a refused registration stored nothing"
    );
    for token in [None, Some("wrong-token"), Some(server.proxy_token.as_str())] {
        let mut c = server.admin_as(token, None).await;
        let mut api = server.json().without_token();
        api.token = token.map(str::to_string);
        p.api = api;
        both!(
            p,
            Kind::Unauthenticated,
            c.list_services(pb::ListServicesRequest {}),
            get("/services")
        );
        let mut r = pb::rollouts_client::RolloutsClient::with_interceptor(
            tonic::transport::Channel::from_shared(server.grpc_url())
                .unwrap()
                .connect()
                .await
                .unwrap(),
            grayline_tests::server::Bearer::new(token, None),
        );
        both!(
            p,
            Kind::Unauthenticated,
            r.list_rollouts(pb::ListRolloutsRequest::default()),
            get("/rollouts")
        );
    }

    println!(
        "{} bad inputs sent over both APIs ({:?}); {} disagreements",
        p.compared,
        p.kinds,
        p.disagreements.len()
    );
    assert!(
        p.disagreements.is_empty(),
        "the APIs disagree:\n{}",
        p.disagreements.join("\n")
    );
    // Every situation of the table but the size limit was exercised.
    assert_eq!(p.kinds.len(), 6, "{:?}", p.kinds);
    let after = (server.json().get("/history?limit=1000").await.1)["entries"].clone();
    assert_eq!(after, before, "a rejected request stored something");
}

/// A path under `/api/v1` that names no operation is a JSON 404 (a method a path does not
/// offer, a JSON 405) — never the console's page, which would read as success to a script.
#[tokio::test]
async fn unknown_api_paths_are_json_errors_not_the_console() {
    let console = tempfile::tempdir().unwrap();
    std::fs::write(
        console.path().join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .unwrap();
    let server = Server::start_with(&["--console-dir", console.path().to_str().unwrap()]);
    let api = server.json();
    // The console still answers deep links with its page.
    let page = reqwest::get(server.http_url("/services/shop"))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<title>console"));
    for path in [
        "/servics",
        "/services/",
        "/services/shop/histroy",
        "/",
        "/rollouts/1/x/y",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 404, "GET /api/v1{path}: {body}");
        assert_eq!(
            body["error"]["code"], "not_found",
            "GET /api/v1{path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("/api/v1{path}")),
            "{body}"
        );
    }
    let bare = reqwest::Client::new()
        .get(server.http_url("/api/v1"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 404);
    let (status, body) = api.delete("/history").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{body}"
    );
    // Without a token an unknown path is refused like any other.
    let (status, _) = server.json().without_token().get("/servics").await;
    assert_eq!(status, 401);
    // The health check and the live socket are still where they were.
    assert_eq!(
        reqwest::get(server.http_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let (mut live, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/live", server.http))
            .await
            .expect("the live socket");
    let hello = json!({"token": server.admin_token, "service": ""}).to_string();
    live.send(hello.into()).await.unwrap();
    let tick = tokio::time::timeout(std::time::Duration::from_secs(10), live.next())
        .await
        .expect("a tick within 10 s")
        .unwrap()
        .unwrap();
    assert!(tick.into_text().unwrap().contains("time_unix_s"));
}

/// Every setting in force shows on both front ends: a version created with none of its
/// governance written reads back over gRPC (GetService, ListServices, History) with every
/// default filled in — breaker, outlier detection, retry, mirror limits — exactly as the JSON
/// API shows it.
#[tokio::test]
async fn both_apis_show_every_setting_in_force() {
    let server = Server::start();
    let api = server.json();
    let (status, created) = api
        .post(
            "/services",
            json!({"service": {"name": "shop", "stable": "v1",
                "versions": [{"name": "v1", "endpoints": ["127.0.0.1:9001"]}]}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let json_service: Service = serde_json::from_value(created["service"].clone()).unwrap();
    let mut admin = server.admin().await;
    let got = admin
        .get_service(pb::GetServiceRequest {
            name: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = admin
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    let history = admin
        .history(pb::HistoryRequest {
            service: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let seen = [
        got.service.clone(),
        listed[0].service.clone(),
        history[0].after.clone(),
    ];
    for (what, service) in ["GetService", "ListServices", "History"].iter().zip(seen) {
        let service = service.unwrap_or_else(|| panic!("{what}: no service"));
        let v = &service.versions[0];
        let od = v.outlier_detection.as_ref().expect("outlier_detection");
        let retry = v.retry.as_ref().expect("retry");
        let limits = v.mirror_limits.as_ref().expect("mirror_limits");
        assert!(
            od.enabled.is_some()
                && od.consecutive_failures.is_some()
                && od.base_ejection_ms.is_some()
                && od.max_ejection_ms.is_some()
                && od.max_ejection_percent.is_some()
                && retry.budget_percent.is_some()
                && limits.max_in_flight.is_some()
                && v.breaker.as_ref().is_some_and(|b| b.window_ms.is_some())
                && v.timeout_ms.is_some(),
            "{what}: a setting in force is unset: {v:?}"
        );
        assert_eq!(
            from_pb(Some(service)),
            json_service,
            "{what}: not what the JSON API shows"
        );
    }
}
