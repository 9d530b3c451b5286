//! Event gates end to end: the demo upstreams name each converting session's answer in the
//! `x-grayline-event` header, a real proxy counts the events the service declares per
//! version in its statistics, and the real server judges them per second.

use std::time::Duration;

use grayline_routing::{Event, Service, Version};
use grayline_tests::cli::grayline;
use grayline_tests::{Load, Proxy, Server, Upstream, eventually};
use serde_json::{Value, json};

use crate::fixtures::*;

struct Shop {
    server: Server,
    proxy: Proxy,
    upstreams: [Upstream; 2],
    load: Option<Load>,
}

/// `shop` declaring the events `converted` (named by the answers) and `conflict` (a 409),
/// v1 (stable) and v2 converting at the given shares, about 300 requests per second.
async fn shop_converting(v1: f64, v2: f64) -> Shop {
    let v1 = Upstream::start_with("v1", &["--conversion-rate", &v1.to_string()]);
    let v2 = Upstream::start_with("v2", &["--conversion-rate", &v2.to_string()]);
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.versions.push(Version::new("v2", &[&v2.endpoint()]));
    s.events = vec![
        Event {
            name: "converted".into(),
            statuses: Vec::new(),
        },
        Event {
            name: "conflict".into(),
            statuses: vec![409],
        },
    ];
    let server = Server::start();
    let (proxy, load) = serve_under_load(&server, &s).await;
    Shop {
        server,
        proxy,
        upstreams: [v1, v2],
        load: Some(load),
    }
}

/// Conversions per judged request: fewer is harm. The built-in gates only report.
fn plan(weights: &[u32], min_seconds: u32) -> Value {
    json!({
        "service": "shop",
        "canary": "v2",
        "warmup_seconds": 2,
        "steps": weights.iter().map(|w| json!({
            "weight": w, "min_seconds": min_seconds, "min_requests": 20, "max_seconds": 300,
        })).collect::<Vec<_>>(),
        "gates": {
            "errors": {"mode": "dry_run"},
            "latency": {"mode": "dry_run"},
            "events": [{"event": "converted", "kind": "good_events", "detect": 1.5}],
        },
    })
}

async fn start(server: &Server, plan: Value) -> u64 {
    start_rollout(server, plan).await["rollout"]["id"]
        .as_u64()
        .unwrap()
}

async fn until_done(server: &Server, id: u64, within: Duration) -> Value {
    let api = server.json();
    eventually("the rollout decided", within, || async {
        let (_, view) = api.get(&format!("/rollouts/{id}")).await;
        match view["rollout"]["phase"]["state"].as_str() {
            Some("running") | Some("awaiting_approval") => Err(format!(
                "{}; gate: {}",
                view["rollout"]["phase"], view["rollout"]["gates"][2]
            )),
            _ => Ok(view),
        }
    })
    .await
}

/// How many of `n` answers from `url` named an event.
async fn answers_with_events(url: &str, n: usize) -> usize {
    let client = reqwest::Client::new();
    let mut named = 0;
    for _ in 0..n {
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        named += usize::from(resp.headers().contains_key("x-grayline-event"));
    }
    named
}

#[tokio::test]
async fn a_canary_converting_less_is_rolled_back_by_the_event_gate_the_proxy_counts() {
    let mut shop = shop_converting(0.3, 0.12).await;
    // The upstream names its conversions; the proxy counts them and keeps the header from
    // the client.
    let direct = format!("http://{}/", shop.upstreams[0].endpoint());
    assert!(answers_with_events(&direct, 40).await > 0);
    assert_eq!(answers_with_events(&shop.proxy.url("/"), 40).await, 0);
    eventually(
        "the proxy's metrics count conversions",
        Duration::from_secs(20),
        || async {
            let (_, metrics) = shop.proxy.admin_get("/metrics").await;
            metrics
                .lines()
                .find(|l| {
                    l.starts_with("grayline_proxy_events_total")
                        && l.contains(r#"version="v1""#)
                        && l.contains(r#"event="converted""#)
                })
                .map(str::to_string)
                .ok_or(metrics)
        },
    )
    .await;

    // Gates on events the service does not declare, or that are not counts, are refused.
    let mut p = plan(&[5000], 60);
    p["gates"]["events"][0]["event"] = json!("purchased");
    refused_on_both_apis(&shop.server, p, "plan.gates.events[0].event").await;
    let mut p = plan(&[5000], 60);
    p["gates"]["events"][0]["kind"] = json!("good_value");
    refused_on_both_apis(&shop.server, p, "plan.gates.events[0].kind").await;
    assert_eq!(
        shop.server.json().get("/rollouts").await.1["rollouts"],
        json!([])
    );

    // Before the start, the event gate's last hour from the proxy's counts: v1 converts about
    // 30 % of its answers, v2 takes no traffic yet. A gate the plan lacks is named.
    let api = shop.server.json();
    let preview = eventually(
        "the preview shows v1's conversions",
        Duration::from_secs(20),
        || async {
            let body = json!({"plan": plan(&[5000], 60), "gate": "converted"});
            let (status, p) = api.post("/rollouts/preview", body).await;
            let points = p["points"].as_array().cloned().unwrap_or_default();
            let v1: Vec<f64> = points
                .iter()
                .filter_map(|q| q["baseline"].as_f64())
                .collect();
            let v2 = points.iter().filter(|q| !q["canary"].is_null()).count();
            (status == 200 && !v1.is_empty() && v2 == 0)
                .then_some((v1, p.clone()))
                .ok_or(format!("{status} {p}"))
        },
    )
    .await;
    println!("preview: {}", preview.1);
    let mean = preview.0.iter().sum::<f64>() / preview.0.len() as f64;
    assert!((0.2..0.4).contains(&mean), "{}", preview.1);
    assert_eq!(preview.1["points"].as_array().unwrap().len(), 61);
    let body = json!({"plan": plan(&[5000], 60), "gate": "refunds"});
    let (status, error) = api.post("/rollouts/preview", body).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error
            .to_string()
            .contains("no metric or event gate `refunds`; it has converted"),
        "{error}"
    );
    // An event the service does not declare is refused where the plan names it.
    let mut p = plan(&[5000], 60);
    p["gates"]["events"][0]["event"] = json!("purchased");
    let (status, error) = api
        .post("/rollouts/preview", json!({"plan": p, "gate": "purchased"}))
        .await;
    assert_eq!(
        (status, error["error"]["fields"][0]["field"].as_str()),
        (400, Some("plan.gates.events[0].event")),
        "{error}"
    );

    let id = start(&shop.server, plan(&[5000], 60)).await;
    let done = until_done(&shop.server, id, Duration::from_secs(90)).await;
    shop.load.take().unwrap().stop().await;
    println!("{}", rollout_reasons(&done).join("\n"));
    let reason = done["rollout"]["phase"]["reason"].as_str().unwrap();
    assert_eq!(done["rollout"]["phase"]["state"], "rolled_back", "{reason}");
    assert!(
        reason.starts_with("event converted: harm shown"),
        "{reason}"
    );
    assert!(reason.contains("harm is below"), "{reason}");
    // The canary converted about 12 % of its judged requests, the baseline about 30 %.
    let gate = &done["rollout"]["gates"][2];
    let rate = |t: &Value| t["events"].as_f64().unwrap() / t["requests"].as_f64().unwrap();
    assert!(
        rate(&gate["canary"]) < 0.2 && rate(&gate["baseline"]) > 0.22,
        "{gate}"
    );
    let record = shop.server.json().get("/services/shop").await.1;
    assert_eq!(record["service"]["stable"], "v1");
    // The CLI shows it as it shows every gate.
    let dir = tempfile::TempDir::new().unwrap();
    let out = grayline(&shop.server, dir.path(), &["rollout", "status", "shop"])
        .await
        .expect(0)
        .stdout;
    assert!(out.contains("event converted"), "{out}");
}

#[tokio::test]
async fn a_canary_converting_as_well_is_promoted_on_the_event_gate_s_evidence() {
    let mut shop = shop_converting(0.3, 0.3).await;
    let id = start(&shop.server, plan(&[2000, 5000], 5)).await;
    let done = until_done(&shop.server, id, Duration::from_secs(120)).await;
    shop.load.take().unwrap().stop().await;
    let story = rollout_reasons(&done);
    println!(
        "{}\nevent gate: {}",
        story.join("\n"),
        done["rollout"]["gates"][2]
    );
    assert_eq!(done["rollout"]["phase"]["state"], "promoted", "{story:?}");
    assert_eq!(done["rollout"]["promotion"], "evidence", "{story:?}");
    let gate = &done["rollout"]["gates"][2];
    assert!(gate["canary"]["events"].as_u64().unwrap() > 0, "{gate}");
    let record = shop.server.json().get("/services/shop").await.1;
    assert_eq!(record["service"]["stable"], "v2");
}
