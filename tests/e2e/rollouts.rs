//! Automated rollouts end to end: the real server judging real proxies' statistics of real
//! upstreams that fail or slow down on command, with steps compressed to seconds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grayline_proto::v1 as pb;
use grayline_routing::*;
use grayline_tests::{Load, Proxy, Server, Traffic, Upstream, eventually};
use serde_json::{Value, json};

use crate::fixtures::*;

/// A server, one proxy and the upstreams of `shop`'s v1 (stable) and v2, with steady traffic
/// of about 300 requests per second through the proxy.
struct Bench {
    server: Server,
    proxy: Proxy,
    _v1: Upstream,
    _v2: Upstream,
    load: Option<Load>,
}

async fn bench(v1_flags: &[&str], v2_flags: &[&str]) -> Bench {
    let server = Server::start();
    let v1 = Upstream::start_with("v1", v1_flags);
    let v2 = Upstream::start_with("v2", v2_flags);
    let (proxy, load) = shop_under_load(&server, &v1, &v2).await;
    Bench {
        server,
        proxy,
        _v1: v1,
        _v2: v2,
        load: Some(load),
    }
}

/// Waits until the server has counted `n` requests of `version` (so the latency gate can
/// freeze the baseline's p99 at the start).
async fn counted(server: &Server, version: &str, n: u64) {
    let api = server.json();
    eventually(
        &format!("{n} requests of {version} counted"),
        Duration::from_secs(30),
        || async {
            let (_, stats) = api.get("/stats?service=shop&window=600").await;
            let have = stats["series"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["version"] == version)
                .and_then(|s| s["totals"]["requests"].as_u64())
                .unwrap_or(0);
            (have >= n).then_some(()).ok_or(format!("{have}"))
        },
    )
    .await;
}

/// Steps compressed to seconds. Seconds are too few for any gate to show safety, so every
/// step ends at its time limit: the last one promotes on time, as the plan says explicitly
/// (see `field.rs` for promotions earned by evidence).
fn plan(weights: &[u32], max_seconds: u32) -> Value {
    let last = weights.len() - 1;
    json!({
        "service": "shop",
        "canary": "v2",
        "warmup_seconds": 2,
        "steps": weights.iter().enumerate().map(|(i, w)| {
            let mut step = json!({
                "weight": w, "min_seconds": 2, "min_requests": 20, "max_seconds": max_seconds,
            });
            if i == last {
                step["on_timeout"] = json!("promote");
            }
            step
        }).collect::<Vec<_>>(),
    })
}

/// Waits until the rollout reaches `phase`, and returns its view.
async fn phase(server: &Server, id: u64, phase: &str, within: Duration) -> Value {
    let api = server.json();
    eventually(&format!("rollout {id} {phase}"), within, || async {
        let (status, view) = api.get(&format!("/rollouts/{id}")).await;
        if status != 200 {
            return Err(format!("{status}: {view}"));
        }
        let now = view["rollout"]["phase"]["state"].as_str().unwrap_or("");
        if now == phase {
            Ok(view)
        } else {
            let last = &view["rollout"]["transitions"]
                .as_array()
                .and_then(|t| t.last().cloned());
            Err(format!(
                "{now} (step {}): {last:?}",
                view["rollout"]["step"]
            ))
        }
    })
    .await
}

fn transitions(view: &Value) -> Vec<String> {
    view["rollout"]["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| format!("{} -> {}: {}", t["from"], t["to"], t["reason"]))
        .collect()
}

/// The gate's whole-rollout canary request count.
fn canary_requests(view: &Value, gate: usize) -> u64 {
    view["rollout"]["gates"][gate]["canary"]["requests"]
        .as_u64()
        .expect("gate counts")
}

async fn stop(b: &mut Bench) {
    if let Some(load) = b.load.take() {
        let (sent, failed) = load.stop().await;
        assert_eq!(failed, 0, "{failed} of {sent} requests got no answer");
    }
}

#[tokio::test]
async fn a_healthy_canary_is_promoted_by_itself_through_every_step() {
    let mut b = bench(&[], &[]).await;
    counted(&b.server, "v1", 2500).await;
    let view = start_rollout(&b.server, plan(&[1000, 3000, 6000], 6)).await;
    let id = view["rollout"]["id"].as_u64().unwrap();
    assert!(
        view["rollout"]["latency_threshold_us"].as_u64().is_some(),
        "the baseline's p99 is frozen at the start: {view}"
    );
    let done = phase(&b.server, id, "promoted", Duration::from_secs(90)).await;
    stop(&mut b).await;
    println!("{}", transitions(&done).join("\n"));
    // On time, not on evidence: said so in the state, the transition and the history.
    assert_eq!(done["rollout"]["promotion"], "time_limit", "{done}");
    assert!(
        transitions(&done)
            .last()
            .unwrap()
            .ends_with("promoted without safety shown\""),
        "{:?}",
        transitions(&done)
    );
    let record = b.server.json().get("/services/shop").await.1;
    assert_eq!(record["service"]["stable"], "v2");
    // Each step and the promotion is a revision by the rollout, in the history.
    let (_, history) = b.server.json().get("/services/shop/history").await;
    let by_rollout: Vec<(String, String)> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == format!("rollout {id}"))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["summary"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let actions: Vec<&str> = by_rollout.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["promote", "set_policy", "set_policy", "set_policy"],
        "{by_rollout:?}"
    );
    assert!(by_rollout[1].1.contains("v2 at 60 %"), "{by_rollout:?}");
    assert!(
        by_rollout[0].1.contains("promoted without safety shown"),
        "{by_rollout:?}"
    );
    // The proxy follows.
    b.proxy
        .wait_revision(record["revision"].as_u64().unwrap())
        .await;
    let replies = Traffic::new().burst(&b.proxy.url("/"), &[], 50, 8).await;
    assert!(replies.iter().all(|r| r.version.as_deref() == Some("v2")));
}

#[tokio::test]
async fn a_canary_with_five_percent_errors_is_rolled_back_automatically() {
    let mut b = bench(&["--fail-rate", "0.001"], &["--fail-rate", "0.05"]).await;
    let view = start_rollout(&b.server, plan(&[2000, 5000], 120)).await;
    let id = view["rollout"]["id"].as_u64().unwrap();
    let started = Instant::now();
    let done = phase(&b.server, id, "rolled_back", Duration::from_secs(120)).await;
    let reason = done["rollout"]["phase"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("error rate: harm shown"), "{reason}");
    println!(
        "rolled back after {} canary requests in {:.0?}: {reason}",
        canary_requests(&done, 0),
        started.elapsed()
    );
    // All traffic is back on v1.
    let record = b.server.json().get("/services/shop").await.1;
    b.proxy
        .wait_revision(record["revision"].as_u64().unwrap())
        .await;
    stop(&mut b).await;
    let replies = Traffic::new().burst(&b.proxy.url("/"), &[], 100, 8).await;
    assert!(replies.iter().all(|r| r.version.as_deref() == Some("v1")));
}

#[tokio::test]
async fn a_canary_that_only_gets_slower_is_rolled_back_by_the_latency_gate() {
    let mut b = bench(&[], &["--delay-ms", "60"]).await;
    counted(&b.server, "v1", 2500).await;
    let view = start_rollout(&b.server, plan(&[2000, 5000], 120)).await;
    let id = view["rollout"]["id"].as_u64().unwrap();
    let done = phase(&b.server, id, "rolled_back", Duration::from_secs(120)).await;
    stop(&mut b).await;
    let reason = done["rollout"]["phase"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("latency: harm shown"), "{reason}");
    let errors = &done["rollout"]["gates"][0];
    assert_eq!(
        errors["canary"]["events"], 0,
        "no errors, only latency: {errors}"
    );
    println!(
        "rolled back after {} canary requests: {reason}",
        canary_requests(&done, 1)
    );
}

#[tokio::test]
async fn an_approval_step_waits_and_a_killed_server_resumes_the_rollout_with_its_evidence() {
    let mut b = bench(&[], &[]).await;
    let mut p = plan(&[1000, 3000], 6);
    p["steps"][0]["approval"] = json!(true);
    let view = start_rollout(&b.server, p).await;
    let id = view["rollout"]["id"].as_u64().unwrap();
    let waiting = phase(&b.server, id, "awaiting_approval", Duration::from_secs(60)).await;
    let before = canary_requests(&waiting, 0);
    assert!(before > 0, "{waiting}");

    // Down for a few seconds, then back: the rollout is where it was, with its evidence, and
    // the downtime is not observed time.
    b.server.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    b.server.restart();
    let restarted = Instant::now();
    let back = phase(&b.server, id, "awaiting_approval", Duration::from_secs(10)).await;
    assert_eq!(back["rollout"]["step"], 0);
    assert!(
        canary_requests(&back, 0) >= before,
        "evidence survives: {back}"
    );
    // Still waiting, a while later, and still gathering evidence.
    let later = eventually(
        "evidence after the restart",
        Duration::from_secs(20),
        || async {
            let v = b.server.json().get(&format!("/rollouts/{id}")).await.1;
            (canary_requests(&v, 0) > before + 50)
                .then_some(v)
                .ok_or("no new evidence".to_string())
        },
    )
    .await;
    assert_eq!(later["rollout"]["phase"]["state"], "awaiting_approval");
    let observed = later["rollout"]["observed_seconds"].as_u64().unwrap()
        - waiting["rollout"]["observed_seconds"].as_u64().unwrap();
    let wall = restarted.elapsed().as_secs() + 3;
    assert!(
        observed <= wall,
        "{observed} s observed in {wall} s since the restart: downtime counted"
    );

    // A person approves; the rollout goes on by itself to promotion.
    let approved = b
        .server
        .rollouts("alice")
        .await
        .control_rollout(pb::ControlRolloutRequest {
            id,
            action: pb::RolloutAction::Approve as i32,
        })
        .await
        .expect("approve")
        .into_inner();
    assert_eq!((approved.phase.as_str(), approved.step), ("running", 1));
    assert!(
        approved
            .transitions
            .last()
            .unwrap()
            .reason
            .contains("approved by alice")
    );
    let done = phase(&b.server, id, "promoted", Duration::from_secs(60)).await;
    stop(&mut b).await;
    println!("{}", transitions(&done).join("\n"));
}

/// A loopback receiver that records every webhook call, and refuses the first ask.
#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<Mutex<Vec<(String, String, String)>>>,
    asks: Arc<Mutex<u32>>,
}

async fn receiver() -> (String, Receiver) {
    use axum::http::{HeaderMap, StatusCode};
    let recv = Receiver::default();
    let state = recv.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let event = h("x-grayline-event");
                state
                    .calls
                    .lock()
                    .unwrap()
                    .push((event.clone(), h("x-grayline-signature"), body));
                if event == "ask" {
                    let mut asks = state.asks.lock().unwrap();
                    *asks += 1;
                    if *asks == 1 {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "change freeze until the next ask",
                        );
                    }
                }
                (StatusCode::OK, "ok")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, recv)
}

fn sign(secret: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[tokio::test]
async fn webhooks_get_every_transition_signed_and_an_asking_webhook_holds_the_advance() {
    let mut b = bench(&[], &[]).await;
    let (url, recv) = receiver().await;
    let mut p = plan(&[1000, 3000], 4);
    p["webhooks"] = json!([{"url": url, "ask": true, "retries": 0, "timeout_ms": 2000}]);
    let view = start_rollout(&b.server, p).await;
    let id = view["rollout"]["id"].as_u64().unwrap();
    // The first ask is refused: the rollout pauses and says why.
    let paused = phase(&b.server, id, "paused", Duration::from_secs(60)).await;
    let reason = paused["rollout"]["phase"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("503") && reason.contains("change freeze"),
        "{reason}"
    );
    let (status, resumed) = b
        .server
        .json()
        .as_actor("bob")
        .post(&format!("/rollouts/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    let done = phase(&b.server, id, "promoted", Duration::from_secs(60)).await;
    stop(&mut b).await;
    let count = done["rollout"]["transitions"].as_array().unwrap().len();
    let secret = b.server.webhook_secret();
    let seqs = eventually(
        "every transition delivered",
        Duration::from_secs(10),
        || async {
            let calls = recv.calls.lock().unwrap().clone();
            let mut seqs = Vec::new();
            for (event, signature, body) in &calls {
                if signature != &sign(&secret, body) {
                    return Err(format!("bad signature on {body}"));
                }
                if event == "transition" {
                    let v: Value = serde_json::from_str(body).unwrap();
                    assert_eq!(v["rollout"]["id"], id);
                    seqs.push(v["transition"]["seq"].as_u64().unwrap());
                }
            }
            seqs.sort_unstable();
            (seqs.len() == count)
                .then_some(seqs)
                .ok_or(format!("{} of {count}", calls.len()))
        },
    )
    .await;
    assert_eq!(seqs, (1..=count as u64).collect::<Vec<_>>());
    assert!(*recv.asks.lock().unwrap() >= 3, "asked before each advance");
}

#[tokio::test]
async fn bad_plans_name_their_field_on_both_apis_and_change_nothing() {
    let server = Server::start();
    create(&server, &shop()).await;
    let before = server.json().get("/services").await.1["revision"].clone();
    let api = server.json();
    let mut grpc = server.rollouts("ci").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"service": "shop", "canary": "v2", "steps": [{"weight": 500}, {"weight": 100}]}),
            "plan.steps[1].weight",
        ),
        (
            json!({"service": "shop", "canary": "v2", "alpha": 0.9, "steps": [{"weight": 500}]}),
            "plan.alpha",
        ),
        (
            json!({"service": "shop", "canary": "v7", "steps": [{"weight": 500}]}),
            "plan.canary",
        ),
        (
            json!({"service": "nope", "canary": "v2", "steps": [{"weight": 500}]}),
            "plan.service",
        ),
        (
            json!({"service": "shop", "canary": "v2", "steps": [{"weight": 10000}]}),
            "plan.steps[0].weight",
        ),
    ];
    for (plan, field) in cases {
        refused_on_both_apis(&server, plan, field).await;
    }
    let (status, err) = api.post("/rollouts", json!({"plan": {"service": "shop", "canary": "v2", "steps": [{"weight": 500, "wieght": 1}]}})).await;
    assert_eq!(
        (status, err["error"]["fields"][0]["field"].as_str()),
        (400, Some("plan.steps[0].wieght")),
        "{err}"
    );
    // A second rollout on the same service.
    let view = start_rollout(
        &server,
        json!({"service": "shop", "canary": "v2", "steps": [{"weight": 500}]}),
    )
    .await;
    let after_first = server.json().get("/services").await.1["revision"].clone();
    let (status, err) = api
        .post(
            "/rollouts",
            json!({"plan": {"service": "shop", "canary": "v2", "steps": [{"weight": 500}]}}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["fields"][0]["field"], "plan.service");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already has rollout 1"),
        "{err}"
    );
    assert_eq!(
        server.json().get("/services").await.1["revision"],
        after_first
    );
    assert_ne!(before, after_first);
    // Controls the state does not allow, unknown actions and ids.
    let id = view["rollout"]["id"].as_u64().unwrap();
    let (status, err) = api
        .post(&format!("/rollouts/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 412, "{err}");
    let (status, _) = api.post(&format!("/rollouts/{id}/dance"), json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(api.get("/rollouts/99").await.0, 404);
    assert_eq!(api.get("/rollouts/x").await.0, 400);
    let status = grpc
        .control_rollout(pb::ControlRolloutRequest { id, action: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = grpc
        .control_rollout(pb::ControlRolloutRequest {
            id,
            action: pb::RolloutAction::Approve as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        server.json().get("/services").await.1["revision"],
        after_first
    );
}

#[tokio::test]
async fn a_manual_change_pauses_the_rollout_and_resume_puts_the_step_back() {
    let server = Server::start();
    create(&server, &shop()).await;
    let view = start_rollout(
        &server,
        json!({"service": "shop", "canary": "v2", "steps": [{"weight": 2500}]}),
    )
    .await;
    let id = view["rollout"]["id"].as_u64().unwrap();
    set_policy_as(
        &server,
        "carol",
        &policy(vec![], Some(Route::Version("v1".into()))),
    )
    .await;
    let paused = phase(&server, id, "paused", Duration::from_secs(10)).await;
    let reason = paused["rollout"]["phase"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("carol changed the service at revision"),
        "{reason}"
    );
    assert!(reason.contains("resume to put v2 back at 25 %"), "{reason}");
    let (status, resumed) = server
        .json()
        .as_actor("dave")
        .post(&format!("/rollouts/{id}/resume"), json!({}))
        .await;
    assert_eq!(
        (status, resumed["rollout"]["phase"]["state"].as_str()),
        (200, Some("running")),
        "{resumed}"
    );
    let record = server.json().get("/services/shop").await.1;
    let weights = &record["service"]["policy"]["default_route"]["split"]["weights"];
    assert_eq!(
        weights[1],
        json!({"version": "v2", "weight": 2500}),
        "{record}"
    );
    // Aborting sends everything back to the stable version.
    let (status, aborted) = server
        .json()
        .as_actor("dave")
        .post(&format!("/rollouts/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 200, "{aborted}");
    let record = server.json().get("/services/shop").await.1;
    assert_eq!(
        record["service"]["policy"]["default_route"],
        json!({"version": "v1"})
    );
    let (_, list) = server.json().get("/rollouts?service=shop").await;
    assert_eq!(list["rollouts"].as_array().unwrap().len(), 1);
    assert_eq!(
        server.json().get("/rollouts?active=true").await.1["rollouts"],
        json!([])
    );
}

async fn set_policy_as(server: &Server, actor: &str, p: &Policy) {
    server
        .admin_as(Some(&server.admin_token), Some(actor))
        .await
        .set_policy(pb::SetPolicyRequest {
            service: "shop".into(),
            policy: Some(pb_policy(p)),
            expected_revision: None,
        })
        .await
        .expect("set policy");
}

#[tokio::test]
async fn webhook_deliveries_pending_at_a_crash_are_made_after_the_restart_with_their_ids() {
    let mut server = Server::start();
    let v1 = Upstream::start("v1");
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.versions.push(Version::new("v2", &[&v1.endpoint()]));
    create(&server, &s).await;
    let hook = crate::fixtures::Hook::start().await;
    let plan = serde_json::json!({"service": "shop", "canary": "v2", "warmup_seconds": 1,
        "steps": [{"weight": 1000, "min_requests": 1000000}],
        "webhooks": [{"url": hook.url, "retries": 10, "timeout_ms": 1000}]});
    let (status, view) = server
        .json()
        .post("/rollouts", serde_json::json!({"plan": plan}))
        .await;
    assert_eq!(status, 201, "{view}");
    let id = view["rollout"]["id"].as_u64().unwrap();
    let refused = eventually(
        "the webhook refused the first transition",
        Duration::from_secs(20),
        || async {
            let refused = hook.deliveries(false);
            refused
                .contains(&format!("{id}-1"))
                .then_some(refused.clone())
                .ok_or(format!("{refused:?}"))
        },
    )
    .await;
    // Killed while it retries (1 s, 2 s, 4 s, … apart); the webhook then recovers.
    server.kill9();
    hook.accept();
    server.restart();
    hook.wait_accepted(
        "the restarted server makes the deliveries it left",
        &refused,
    )
    .await;
}
