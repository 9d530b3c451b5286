//! Metric gates end to end: a real Prometheus (Debian's) scraping the demo upstreams' business
//! counters every second, the real server querying it for every interval of a rollout, real
//! proxies and traffic in between.

use std::time::Duration;

use grayline_tests::cli::grayline;
use grayline_tests::prometheus::Prometheus;
use grayline_tests::{Load, Proxy, Server, Upstream, eventually};
use serde_json::{Value, json};

use crate::fixtures::*;

/// A server asking `prometheus`, a proxy with about 300 requests per second, and `shop`'s
/// v1 (stable) and v2 upstreams converting at the given shares.
struct Shop {
    server: Server,
    prometheus: Prometheus,
    _proxy: Proxy,
    _upstreams: [Upstream; 2],
    load: Option<Load>,
}

async fn shop_converting(v1: f64, v2: f64) -> Shop {
    let v1 = Upstream::start_with("v1", &["--conversion-rate", &v1.to_string()]);
    let v2 = Upstream::start_with("v2", &["--conversion-rate", &v2.to_string()]);
    let prometheus = Prometheus::start(&[v1.endpoint(), v2.endpoint()]);
    // As in the field, Prometheus has the series before the rollout asks for them.
    prometheus.wait_for("grayline_demo_sessions_total", 2).await;
    let server = Server::start_with(&["--prometheus-url", &prometheus.url()]);
    let (proxy, load) = shop_under_load(&server, &v1, &v2).await;
    Shop {
        server,
        prometheus,
        _proxy: proxy,
        _upstreams: [v1, v2],
        load: Some(load),
    }
}

/// Conversions per session: fewer is harm.
fn conversions_gate() -> Value {
    json!({
        "name": "conversions",
        "kind": "good_events",
        "query": r#"sum(increase(grayline_demo_conversions_total{version="{{version}}"}[{{interval}}]))"#,
        "exposure": r#"sum(increase(grayline_demo_sessions_total{version="{{version}}"}[{{interval}}]))"#,
        "interval_seconds": 2,
        "tolerated_ratio": 1.2,
        "detect": 1.5,
        "no_data_seconds": 6,
    })
}

/// One step at `weight` judged by the conversions gate alone (the built-in gates report).
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
            "metrics": [conversions_gate()],
        },
    })
}

async fn start(server: &Server, plan: Value) -> u64 {
    start_rollout(server, plan).await["rollout"]["id"]
        .as_u64()
        .unwrap()
}

/// Waits until rollout `id` satisfies `check` (given its view), printing its story if not.
async fn until(
    server: &Server,
    id: u64,
    what: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let api = server.json();
    eventually(what, within, || async {
        let (_, view) = api.get(&format!("/rollouts/{id}")).await;
        if check(&view) {
            Ok(view)
        } else {
            Err(format!(
                "{}: {:?}; gate: {}",
                view["rollout"]["phase"],
                rollout_reasons(&view).last(),
                view["rollout"]["gates"][2]["metric"]
            ))
        }
    })
    .await
}

fn state(view: &Value) -> &str {
    view["rollout"]["phase"]["state"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_canary_whose_conversions_drop_is_rolled_back_by_the_prometheus_gate() {
    let mut shop = shop_converting(0.3, 0.12).await;
    // Before it starts: the gate's last hour, on both APIs.
    let api = shop.server.json();
    // Prometheus has scraped the upstreams only a few times yet: the last minute fills in.
    let preview = eventually(
        "a preview with the baseline's last minute",
        Duration::from_secs(30),
        || async {
            let body = json!({"plan": plan(&[5000], 60), "gate": "conversions"});
            let (status, preview) = api.post("/rollouts/preview", body).await;
            assert_eq!(status, 200, "{preview}");
            let points = preview["points"].as_array().unwrap();
            let last = points.last().unwrap()["baseline"].as_f64();
            last.is_some()
                .then_some(preview.clone())
                .ok_or(format!("{:?}", points.last()))
        },
    )
    .await;
    let baseline: Vec<f64> = preview["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["baseline"].as_f64())
        .collect();
    assert!(baseline.iter().all(|r| *r > 0.15 && *r < 0.45), "{preview}");
    assert_eq!(preview["points"].as_array().unwrap().len(), 61, "{preview}");
    let wire: grayline_rollout::Plan = serde_json::from_value(plan(&[5000], 60)).unwrap();
    let grpc = shop
        .server
        .rollouts("ci")
        .await
        .preview_metric_gate(grayline_proto::v1::PreviewMetricGateRequest {
            plan: Some(grayline_proto::plan_to_pb(&wire)),
            gate: "conversions".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((grpc.canary.as_str(), grpc.baseline.as_str()), ("v2", "v1"));
    assert!(
        grpc.baseline_queries[0].contains(r#"{version="v1"}[60s]"#),
        "{grpc:?}"
    );
    // And from the command line, with a plan file.
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::write(dir.path().join("plan.json"), plan(&[5000], 60).to_string()).unwrap();
    let cli = [
        "rollout",
        "preview",
        "-f",
        "plan.json",
        "--gate",
        "conversions",
    ];
    let out = grayline(&shop.server, dir.path(), &cli)
        .await
        .expect(0)
        .stdout;
    assert!(out.contains("metric conversions: the last hour"), "{out}");
    assert!(
        out.contains("v1: mean 2") || out.contains("v1: mean 3"),
        "{out}"
    );
    let cli = ["rollout", "preview", "-f", "plan.json", "--gate", "revenue"];
    let err = grayline(&shop.server, dir.path(), &cli)
        .await
        .expect(2)
        .stderr;
    assert!(err.contains("no metric or event gate `revenue`"), "{err}");
    let body = json!({"plan": plan(&[5000], 60), "gate": "revenue"});
    let (status, err) = api.post("/rollouts/preview", body).await;
    assert_eq!(
        (status, err["error"]["fields"][0]["field"].as_str()),
        (400, Some("gate")),
        "{err}"
    );
    let id = start(&shop.server, plan(&[5000], 60)).await;
    let done = until(
        &shop.server,
        id,
        "rolled back",
        Duration::from_secs(90),
        |v| state(v) != "running",
    )
    .await;
    shop.load.take().unwrap().stop().await;
    println!("{}", rollout_reasons(&done).join("\n"));
    let reason = done["rollout"]["phase"]["reason"].as_str().unwrap();
    assert_eq!(state(&done), "rolled_back", "{:?}", rollout_reasons(&done));
    assert!(
        reason.starts_with("metric conversions: harm shown"),
        "{reason}"
    );
    assert!(reason.contains("harm is below"), "{reason}");
    let m = &done["rollout"]["gates"][2]["metric"];
    assert!(m["intervals"].as_u64().unwrap() >= 1, "{m}");
    // The canary converted at about 12 %, the baseline at about 30 %.
    let (c, b) = (
        &done["rollout"]["gates"][2]["canary"],
        &done["rollout"]["gates"][2]["baseline"],
    );
    let rate = |t: &Value| t["events"].as_f64().unwrap() / t["requests"].as_f64().unwrap();
    assert!(rate(c) < 0.2 && rate(b) > 0.22, "{c} {b}");
    let record = shop.server.json().get("/services/shop").await.1;
    assert_eq!(record["service"]["stable"], "v1");
    // The CLI shows the gate like the others, with its query.
    let dir = tempfile::TempDir::new().unwrap();
    let out = grayline(&shop.server, dir.path(), &["rollout", "status", "shop"])
        .await
        .expect(0)
        .stdout;
    assert!(out.contains("metric conversions"), "{out}");
    assert!(out.contains("good_events, every 2 s"), "{out}");
    assert!(out.contains("grayline_demo_conversions_total"), "{out}");
    let out = grayline(
        &shop.server,
        dir.path(),
        &["rollout", "status", "shop", "-o", "json"],
    )
    .await
    .expect(0)
    .stdout;
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["gates"][2]["metric"]["name"], "conversions", "{json}");
    assert_eq!(json["gates"][2]["verdict"], "harm", "{json}");
}

#[tokio::test]
async fn prometheus_down_pauses_the_rollout_and_back_it_goes_on_to_an_earned_promotion() {
    let mut shop = shop_converting(0.3, 0.3).await;
    let id = start(&shop.server, plan(&[2000, 5000], 8)).await;
    // Down before the first interval is asked: the gate has no answer at all.
    shop.prometheus.stop();
    let paused = until(
        &shop.server,
        id,
        "paused for no data",
        Duration::from_secs(60),
        |v| state(v) == "paused",
    )
    .await;
    let reason = paused["rollout"]["phase"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("metric conversions has had no answer for"),
        "{reason}"
    );
    assert!(reason.contains("goes on by itself"), "{reason}");
    assert_eq!(paused["rollout"]["step"], 0, "{reason}");
    let m = &paused["rollout"]["gates"][2]["metric"];
    assert!(
        m["missing"].as_u64().unwrap() >= 1 && m["intervals"] == 0,
        "{m}"
    );
    // Paused, the step's clock stands still.
    let seconds = paused["rollout"]["step_seconds"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, still) = shop.server.json().get(&format!("/rollouts/{id}")).await;
    assert_eq!(state(&still), "paused");
    assert_eq!(still["rollout"]["step_seconds"].as_u64().unwrap(), seconds);

    shop.prometheus.resume();
    let done = until(
        &shop.server,
        id,
        "promoted",
        Duration::from_secs(120),
        |v| state(v) == "promoted",
    )
    .await;
    shop.load.take().unwrap().stop().await;
    let story = rollout_reasons(&done);
    println!(
        "{}\nmetric gate: {}",
        story.join("\n"),
        done["rollout"]["gates"][2]
    );
    assert!(
        story
            .iter()
            .any(|r| r.contains("metric conversions has answers again")),
        "{story:?}"
    );
    assert_eq!(done["rollout"]["promotion"], "evidence", "{story:?}");
    // Every interval was judged once or given up on once: never more than there were.
    let m = &done["rollout"]["gates"][2]["metric"];
    let judged = m["intervals"].as_i64().unwrap() + m["missing"].as_i64().unwrap();
    let started = done["rollout"]["started_unix_ms"].as_i64().unwrap() / 1000;
    let span = m["last_end_unix_s"].as_i64().unwrap() - started;
    assert!(
        judged >= 3 && judged <= span / 2 + 1,
        "{judged} intervals in {span} s: {m}"
    );
    let record = shop.server.json().get("/services/shop").await.1;
    assert_eq!(record["service"]["stable"], "v2");
}

#[tokio::test]
async fn bad_metric_gates_name_their_field_on_both_apis_and_change_nothing() {
    let server = Server::start_with(&["--prometheus-url", "http://127.0.0.1:9"]);
    create(&server, &shop()).await;
    let before = server.json().get("/services").await.1["revision"].clone();
    let api = server.json();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut p = plan(&[500], 5);
        edit(&mut p["gates"]["metrics"][0]);
        p
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with(&|g| g["query"] = json!("sum(increase(paid_total[10s])")),
            "plan.gates.metrics[0].query",
        ),
        (
            with(&|g| {
                g["exposure"] = json!(r#"sum(increase(carts{v="{{version}}"}[{{interval}}])"#)
            }),
            "plan.gates.metrics[0].exposure",
        ),
        (
            with(&|g| g["query"] = json!(r#"carts{v="{{version}}"}[{{interval}}]"#)),
            "plan.gates.metrics[0].query",
        ),
        (
            with(&|g| g["interval_seconds"] = json!(0)),
            "plan.gates.metrics[0].interval_seconds",
        ),
        (
            with(&|g| g["query"] = json!("{{colour}}")),
            "plan.gates.metrics[0].query",
        ),
        (
            with(&|g| g["kind"] = json!("bad_value")),
            "plan.gates.metrics[0].exposure",
        ),
    ];
    for (plan, field) in cases {
        refused_on_both_apis(&server, plan, field).await;
    }
    let (status, err) = api
        .post(
            "/rollouts",
            json!({"plan": with(&|g| g["kind"] = json!("conversions"))}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("kind"), "{err}");
    assert_eq!(server.json().get("/services").await.1["revision"], before);
    assert_eq!(api.get("/rollouts").await.1["rollouts"], json!([]));
    // An interval shorter than every scrape interval of the plan's Prometheus.
    let slow = Prometheus::start_every(&[], 5);
    let mut p = plan(&[500], 5);
    p["prometheus_url"] = json!(slow.url());
    refused_on_both_apis(&server, p.clone(), "plan.gates.metrics[0].interval_seconds").await;
    p["gates"]["metrics"][0]["interval_seconds"] = json!(10);
    p["gates"]["metrics"][0]["no_data_seconds"] = json!(30);
    start(&server, p).await;
}

#[tokio::test]
async fn a_server_without_prometheus_refuses_metric_gates_unless_the_plan_names_one() {
    let server = Server::start();
    create(&server, &shop()).await;
    let (status, err) = server
        .json()
        .post("/rollouts", json!({ "plan": plan(&[500], 5) }))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        err["error"]["fields"][0]["field"], "plan.prometheus_url",
        "{err}"
    );
    let mut p = plan(&[500], 5);
    p["prometheus_url"] = json!("http://127.0.0.1:9");
    start(&server, p).await;
}
