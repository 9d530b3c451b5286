//! Versions made of registered instances: a version selected by tag grows as instances
//! register behind their own proxies, loses the ones killed with `kill -9` (TTL) or stopped
//! cleanly (at once), keeps them through a server outage, and the registry refuses what it
//! must with the field named.

use std::time::{Duration, Instant};

use grayline_routing::*;
use grayline_tests::{Proxy, Replies, Server, Upstream, eventually, failure_share};
use serde_json::json;

use crate::fixtures::*;

/// An instance: an upstream and the proxy beside it that registers it (TTL 2 s).
struct Instance {
    upstream: Upstream,
    sidecar: Proxy,
}

impl Instance {
    fn start(server: &Server, k: usize, ttl: &str) -> Instance {
        let upstream = Upstream::start("v2");
        let sidecar = Proxy::registering(
            server,
            &format!("side-{k}"),
            ("shop", "1.1.2", &upstream.endpoint()),
            ttl,
            &[],
        );
        Instance { upstream, sidecar }
    }
}

/// The endpoints the edge proxy has for shop's v2 now.
async fn endpoints(edge: &Proxy) -> Vec<String> {
    let mut e: Vec<String> = edge.config().await["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["version"] == "v2")
        .filter_map(|e| e["endpoint"].as_str().map(str::to_string))
        .collect();
    e.sort();
    e
}

#[tokio::test]
async fn a_tagged_version_grows_with_its_instances_and_loses_the_dead_ones() {
    let mut server = Server::start();
    let mut shop = Service::single("shop", Version::tagged("v2", "1.1.2"));
    shop.stable = "v2".into();
    let revision = create(&server, &shop).await;
    let edge = Proxy::start(&server, "edge", &[]);
    edge.wait_revision(revision).await;

    // No instance yet: the version's fallback answers, and says why.
    let r = reqwest::get(edge.url("/")).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("no instance registered"), "{body}");

    // Scaled from one to five: each new instance gets traffic within seconds.
    let load = Replies::start(edge.url("/"), 4);
    let mut instances = Vec::new();
    for k in 0..5 {
        let started = Instant::now();
        let i = Instance::start(&server, k, "2");
        eventually(
            &format!("instance {k} gets traffic"),
            Duration::from_secs(10),
            || async {
                let served = i.upstream.served().await;
                (served > 0).then_some(()).ok_or(format!("{served} served"))
            },
        )
        .await;
        println!(
            "instance {k}: first request {:?} after its start",
            started.elapsed()
        );
        instances.push(i);
    }
    assert_eq!(endpoints(&edge).await.len(), 5);
    let (before, revision_now) = (
        server_revision(&server).await,
        edge.config().await["revision"].as_u64(),
    );
    assert_eq!(before, revision, "instances made no revision");
    assert_eq!(revision_now, Some(revision));

    // Two killed at once, the instance and its proxy: the registry lets them expire, and
    // the edge's retries hide the connections they refuse meanwhile.
    let killed_at = Instant::now();
    for i in instances.iter_mut().take(2) {
        i.upstream.process.kill9();
        i.sidecar.process.kill9();
    }
    let gone: Vec<String> = instances[..2]
        .iter()
        .map(|i| i.upstream.endpoint())
        .collect();
    eventually(
        "the killed instances leave the edge",
        Duration::from_secs(15),
        || async {
            let now = endpoints(&edge).await;
            (!now.iter().any(|e| gone.contains(e)))
                .then_some(())
                .ok_or(format!("{now:?}"))
        },
    )
    .await;
    println!(
        "killed instances gone from the edge after {:?}",
        killed_at.elapsed()
    );
    // A clean stop deregisters at once, long before its TTL.
    let mut clean = Instance::start(&server, 9, "60");
    eventually("the clean one is in", Duration::from_secs(10), || async {
        let n = endpoints(&edge).await.len();
        (n == 4).then_some(()).ok_or(format!("{n} endpoints"))
    })
    .await;
    let stopped = Instant::now();
    assert!(clean.sidecar.process.terminate(), "a clean stop");
    eventually("the stopped one is out", Duration::from_secs(5), || async {
        let n = endpoints(&edge).await.len();
        (n == 3).then_some(()).ok_or(format!("{n} endpoints"))
    })
    .await;
    println!(
        "a cleanly stopped instance left after {:?}",
        stopped.elapsed()
    );
    clean.upstream.process.kill9();
    let replies = load.stop().await;
    let (failed, all) = failure_share(&replies, killed_at + Duration::from_secs(1), None);
    println!("after the first second of the kills: {failed} of {all} requests failed");
    assert!(all > 100, "{all} requests");
    assert!(failed * 100 < all, "{failed} of {all} failed");

    // The instances are saved with the edge's last good config: through a server outage
    // and the edge's own restart it serves the three left.
    server.kill9();
    let mut edge = edge;
    edge.restart();
    eventually(
        "the edge serves from its saved config",
        Duration::from_secs(10),
        || edge.answers_ok("/"),
    )
    .await;
    assert_eq!(endpoints(&edge).await.len(), 3);
}

async fn server_revision(server: &Server) -> u64 {
    let (_, v) = server.json().get("/services/shop").await;
    v["revision"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn the_registry_refuses_bad_registrations_and_lists_what_it_holds() {
    let server = Server::start();
    let mut shop = Service::single("shop", Version::new("v1", &["127.0.0.1:9"]));
    shop.versions.push(Version::tagged("v2", "1.1.2"));
    create(&server, &shop).await;
    // No instance of v2 is registered yet: promoting it is refused.
    let (status, answer) = server
        .json()
        .post("/services/shop/promote", json!({"version": "v2"}))
        .await;
    assert_eq!(status, 412, "{answer}");
    assert!(
        answer.to_string().contains("no instance registered"),
        "{answer}"
    );

    let mut registrant = server.json();
    registrant.token = Some(server.registration_token.clone());
    let register = |tag: &str, address: &str| json!({"service": "shop", "tag": tag, "address": address, "ttl_seconds": 30});

    let (status, body) = registrant
        .post("/registry/register", register("1.1.2", "127.0.0.1:7001"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ttl_seconds"], 30);
    assert_eq!(body["warning"], "");
    let (status, body) = registrant
        .post("/registry/register", register("1.1.9", "127.0.0.1:7002"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["warning"]
            .as_str()
            .unwrap()
            .contains("gets no traffic"),
        "{body}"
    );

    // Refused, naming the field; nothing stored.
    for (body, code, field) in [
        (register("1.1.2", "nowhere"), 400, "address"),
        (register("bad tag!", "127.0.0.1:7003"), 400, "tag"),
        (
            json!({"service": "shop", "tag": "1.1.2", "address": "127.0.0.1:7003", "ttl_seconds": 0}),
            400,
            "ttl_seconds",
        ),
        (
            json!({"service": "shop", "tag": "1.1.2", "address": "127.0.0.1:7003", "color": "red"}),
            400,
            "color",
        ),
        (
            json!({"service": "nope", "tag": "1.1.2", "address": "127.0.0.1:7003"}),
            404,
            "",
        ),
    ] {
        let (status, answer) = registrant.post("/registry/register", body.clone()).await;
        assert_eq!(status, code, "{body} → {answer}");
        assert!(answer.to_string().contains(field), "{body} → {answer}");
    }
    let (status, _) = registrant
        .clone()
        .without_token()
        .post("/registry/register", register("1.1.2", "127.0.0.1:7004"))
        .await;
    assert_eq!(status, 401);
    // The registration token registers and does nothing else.
    let (status, answer) = registrant.get("/services").await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer.to_string().contains("admin.token"), "{answer}");

    let (status, listed) = server.json().get("/instances?service=shop").await;
    assert_eq!(status, 200);
    let listed = listed["instances"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["address"], "127.0.0.1:7001");
    assert_eq!(listed[0]["versions"], json!(["v2"]));
    assert_eq!(listed[0]["registered_by"], "registration");
    assert_eq!(listed[1]["versions"], json!([]));

    // The command line: register once, list, deregister; a bad address exits 2 naming it.
    let dir = tempfile::tempdir().unwrap();
    let cli =
        |args: &'static [&'static str]| grayline_tests::cli::grayline(&server, dir.path(), args);
    let out = cli(&[
        "register",
        "shop",
        "--tag",
        "1.1.2",
        "--address",
        "127.0.0.1:7100",
        "--meta",
        "zone=b",
        "--once",
    ])
    .await
    .expect(0);
    assert!(
        out.stdout
            .contains("registered 127.0.0.1:7100 of shop (TTL 30 s)"),
        "{}",
        out.stdout
    );
    let out = cli(&["instances", "shop"]).await.expect(0);
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains("127.0.0.1:7100"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        row.contains("v2") && row.contains("zone=b") && row.contains("admin"),
        "{row}"
    );
    let out = cli(&["instances", "shop"]).await.expect(0);
    assert!(
        out.stdout.contains("none (no traffic)"),
        "the unselected tag: {}",
        out.stdout
    );
    let out = cli(&[
        "register",
        "shop",
        "--tag",
        "1.1.2",
        "--address",
        "nowhere",
        "--once",
    ])
    .await
    .expect(2);
    assert!(out.stderr.contains("address"), "{}", out.stderr);
    let out = cli(&["deregister", "shop", "127.0.0.1:7100"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("deregistered 127.0.0.1:7100 of shop"),
        "{}",
        out.stdout
    );

    // Ten thousand registrations from one client: the service's thousand are kept, the rest
    // refused with the reason, and the server answers all along.
    let started = Instant::now();
    let statuses = futures::future::join_all((0..32).map(|w| {
        let registrant = registrant.clone();
        async move {
            let mut seen = Vec::new();
            for i in (w..10_000).step_by(32) {
                let address = format!("10.{}.{}.{}:80", i / 62_500, (i / 250) % 250, i % 250 + 1);
                let (status, body) = registrant
                    .post("/registry/register", register("1.1.2", &address))
                    .await;
                seen.push((status, body));
            }
            seen
        }
    }))
    .await;
    let all: Vec<_> = statuses.into_iter().flatten().collect();
    let ok = all.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = all.iter().filter(|(s, _)| *s != 200).collect();
    println!(
        "10000 registrations in {:?}: {ok} kept, {} refused",
        started.elapsed(),
        refused.len()
    );
    assert_eq!(
        ok,
        1000 - 2,
        "the thousand a service may hold, two already there"
    );
    assert!(
        refused
            .iter()
            .all(|(s, b)| *s == 413 && b.to_string().contains("the most one service may have")),
        "{:?}",
        refused.first()
    );
    let health = Instant::now();
    let r = reqwest::get(server.http_url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(health.elapsed() < Duration::from_secs(2));
    // Deregistered through gRPC-equivalent JSON, by address.
    let (status, body) = registrant
        .post(
            "/registry/deregister",
            json!({"service": "shop", "address": "127.0.0.1:7001"}),
        )
        .await;
    assert_eq!((status, body["removed"].clone()), (200, json!(true)));
    let (status, body) = registrant
        .post(
            "/registry/keepalive",
            json!({"service": "shop", "address": "127.0.0.1:7001"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("register it again"), "{body}");
}

#[tokio::test]
async fn health_checks_take_a_failing_endpoint_out_of_every_proxy_and_bring_it_back() {
    let server = Server::start();
    let ups = [
        Upstream::start("v1"),
        Upstream::start("v1"),
        Upstream::start("v1"),
    ];
    let endpoints: Vec<String> = ups.iter().map(Upstream::endpoint).collect();
    let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let mut v1 = Version::new("v1", &refs);
    // Health checks alone: outlier detection off, so only the checks take it out.
    v1.outlier_detection.enabled = false;
    v1.health_check = HealthCheck {
        enabled: true,
        interval_ms: 200,
        timeout_ms: 150,
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..HealthCheck::default()
    };
    let revision = create(&server, &Service::single("shop", v1)).await;
    let proxies = [
        Proxy::start(&server, "edge-a", &[]),
        Proxy::start(&server, "edge-b", &[]),
    ];
    for p in &proxies {
        p.wait_revision(revision).await;
    }
    // One endpoint's /healthz fails: every proxy takes it out, and the server hears why.
    ups[1].set_healthy(false).await;
    let out = std::time::Instant::now();
    for p in &proxies {
        wait_unhealthy(p, "the failing endpoint is out", &endpoints[1..2]).await;
    }
    println!("out of both proxies after {:?}", out.elapsed());
    eventually("the server knows why", Duration::from_secs(10), || async {
        let (_, list) = server.json().get("/proxies").await;
        let text = list.to_string();
        (text.matches("health_check").count() == 2)
            .then_some(())
            .ok_or(text)
    })
    .await;
    let before = ups[1].served().await;
    for _ in 0..60 {
        let r = reqwest::get(proxies[0].url("/")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(ups[1].served().await, before, "no request reached it");

    // Most look unhealthy: the panic threshold (50 %) sends traffic to all of them again.
    ups[0].set_healthy(false).await;
    eventually("two of three out", Duration::from_secs(10), || async {
        let n = unhealthy(&proxies[0]).await.len();
        (n == 2).then_some(()).ok_or(format!("{n}"))
    })
    .await;
    let before = ups[1].served().await;
    for _ in 0..60 {
        let r = reqwest::get(proxies[0].url("/")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        ups[1].served().await > before,
        "in panic every endpoint takes traffic"
    );

    // Healthy again: back in rotation.
    ups[0].set_healthy(true).await;
    ups[1].set_healthy(true).await;
    for p in &proxies {
        wait_unhealthy(p, "all back", &[]).await;
    }
}

#[tokio::test]
async fn a_rollout_needs_canary_instances_and_pauses_when_they_are_gone() {
    let server = Server::start();
    let v1 = Upstream::start("v1");
    let mut shop = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    shop.versions.push(Version::tagged("v2", "1.1.2"));
    create(&server, &shop).await;
    let plan = json!({"plan": {"service": "shop", "canary": "v2", "steps": [{"weight": 1000, "max_seconds": 600}]}});
    let (status, answer) = server.json().post("/rollouts", plan.clone()).await;
    assert_eq!(status, 412, "{answer}");
    assert!(
        answer.to_string().contains("no instance registered"),
        "{answer}"
    );

    let v2 = Upstream::start("v2");
    let mut registrant = server.json();
    registrant.token = Some(server.registration_token.clone());
    let key = json!({"service": "shop", "address": v2.endpoint()});
    let (status, _) = registrant
        .post(
            "/registry/register",
            json!({"service": "shop", "tag": "1.1.2", "address": v2.endpoint()}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, view) = server.json().post("/rollouts", plan).await;
    assert_eq!(status, 201, "{view}");
    let id = view["rollout"]["id"].as_u64().unwrap();

    // Its only instance goes: the rollout pauses saying so instead of judging fallbacks.
    let (status, _) = registrant.post("/registry/deregister", key).await;
    assert_eq!(status, 200);
    eventually("the rollout pauses", Duration::from_secs(10), || async {
        let (_, view) = server.json().get(&format!("/rollouts/{id}")).await;
        let phase = &view["rollout"]["phase"];
        (phase["state"] == "paused"
            && phase["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no instance registered")))
        .then_some(())
        .ok_or(phase.to_string())
    })
    .await;
}

/// The endpoints `p`'s health checks keep out now.
async fn unhealthy(p: &Proxy) -> Vec<String> {
    p.config().await["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["unhealthy"] == true)
        .filter_map(|e| e["endpoint"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn grpc_health_checks_follow_the_servers_serving_status() {
    let server = Server::start();
    let ups = [Upstream::start("v1"), Upstream::start("v1")];
    let endpoints: Vec<String> = ups.iter().map(Upstream::endpoint).collect();
    let mut v1 = Version::new("v1", &[&endpoints[0], &endpoints[1]]);
    v1.protocol = Protocol::H2c;
    v1.health_check = HealthCheck {
        enabled: true,
        grpc: true,
        interval_ms: 200,
        timeout_ms: 150,
        healthy_threshold: 1,
        unhealthy_threshold: 2,
        ..HealthCheck::default()
    };
    let revision = create(&server, &Service::single("shop", v1)).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    ups[0].set_healthy(false).await;
    wait_unhealthy(&proxy, "NOT_SERVING takes it out", &endpoints[..1]).await;
    ups[0].set_healthy(true).await;
    wait_unhealthy(&proxy, "SERVING brings it back", &[]).await;
}

/// Waits until `p`'s health checks keep out exactly `want`.
async fn wait_unhealthy(p: &Proxy, what: &str, want: &[String]) {
    eventually(what, Duration::from_secs(10), || async {
        let u = unhealthy(p).await;
        (u == want).then_some(()).ok_or(format!("{u:?}"))
    })
    .await;
}
