//! One endpoint of a version failing: outlier detection takes it out, retries hide what
//! happened before, the breaker keeps the version open, and everyone can see which endpoint
//! is out.

use std::time::{Duration, Instant};

use grayline_routing::*;
use grayline_tests::{
    Proxy, Replies as Load, Server, Traffic, Upstream, eventually, failure_share,
};

use crate::fixtures::*;

#[tokio::test]
async fn one_dead_endpoint_of_two_fails_no_get_and_is_ejected() {
    let server = Server::start();
    let (alive, mut doomed) = (Upstream::start("v1"), Upstream::start("v1"));
    let dead_endpoint = doomed.endpoint();
    // Every setting at its default.
    let s = Service::single(
        "shop",
        Version::new("v1", &[&alive.endpoint(), &dead_endpoint]),
    );
    let revision = create(&server, &s).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;

    let load = Load::start(proxy.url("/"), 8);
    let before = Instant::now();
    eventually("traffic flows", Duration::from_secs(10), || async {
        let n = load.count_since(before);
        (n > 500).then_some(()).ok_or(format!("{n} replies"))
    })
    .await;
    doomed.process.kill9();
    let killed = Instant::now();
    eventually(
        "three seconds of traffic after the kill",
        Duration::from_secs(20),
        || async {
            let n = load.count_since(killed + Duration::from_secs(3));
            (n > 0).then_some(()).ok_or(format!("{n} replies"))
        },
    )
    .await;
    let replies = load.stop().await;
    let one_second = killed + Duration::from_secs(1);
    let (early_failed, early) = failure_share(&replies, killed, Some(one_second));
    let (failed, total) = failure_share(&replies, one_second, None);
    let rate = failed as f64 / total as f64 * 100.0;
    println!(
        "one of two endpoints killed: {early_failed} of {early} failed in the first second, \
         {failed} of {total} ({rate:.3} %) after it"
    );
    assert!(total > 500, "enough traffic to judge: {total}");
    assert!(
        rate < 1.0,
        "{failed} of {total} failed after the first second"
    );
    // Every request here is a GET: one in flight on the endpoint as it died goes to the
    // other endpoint, as nginx sends it to its next upstream; one refused goes there too.
    assert_eq!(
        early_failed + failed,
        0,
        "GETs failed although another endpoint was up"
    );

    // The proxy shows the endpoint as ejected, on /config and /metrics...
    let config = proxy.config().await;
    let endpoints = config["endpoints"].as_array().expect("endpoints").clone();
    let dead = endpoints
        .iter()
        .find(|e| e["endpoint"] == dead_endpoint.as_str())
        .unwrap_or_else(|| panic!("{endpoints:?}"));
    assert_eq!(dead["ejected"], true, "{dead}");
    assert_eq!(
        (dead["service"].as_str(), dead["version"].as_str()),
        (Some("shop"), Some("v1"))
    );
    assert!(dead["ejected_for_ms"].as_u64().unwrap() > 0, "{dead}");
    let alive_entry = endpoints
        .iter()
        .find(|e| e["endpoint"] == alive.endpoint().as_str())
        .unwrap();
    assert_eq!(alive_entry["ejected"], false);
    let (_, metrics) = proxy.admin_get("/metrics").await;
    let gauge = format!(
        "grayline_proxy_endpoint_ejected{{service=\"shop\",version=\"v1\",endpoint=\"{dead_endpoint}\"}} 1"
    );
    assert!(metrics.contains(&gauge), "{metrics}");
    assert!(
        metrics.contains("grayline_proxy_retries_total{service=\"shop\",version=\"v1\"}"),
        "{metrics}"
    );

    // ...and the server knows which endpoint of which version is out on which proxy.
    let status = eventually(
        "the server lists the ejected endpoint",
        Duration::from_secs(10),
        || async {
            let p = proxy_status(&server, "edge").await?;
            (!p.ejected_endpoints.is_empty())
                .then_some(p.clone())
                .ok_or(format!("{p:?}"))
        },
    )
    .await;
    let e = &status.ejected_endpoints[0];
    assert_eq!(
        (e.service.as_str(), e.version.as_str(), e.endpoint.as_str()),
        ("shop", "v1", dead_endpoint.as_str())
    );
    assert!(e.until_unix_ms > 0);
    let (_, json) = server.json().get("/proxies").await;
    assert_eq!(
        json["proxies"][0]["ejected_endpoints"][0]["endpoint"],
        dead_endpoint.as_str()
    );
}

#[tokio::test]
async fn a_request_that_never_reached_the_upstream_goes_to_another_endpoint_with_its_body() {
    let server = Server::start();
    let live = Upstream::start("v1");
    let closed = unused_address();
    let mut v = Version::new("v1", &[&closed, &live.endpoint()]);
    // Keep the refusing endpoint in rotation: every second request meets it.
    v.outlier_detection.enabled = false;
    let revision = create(&server, &Service::single("shop", v)).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;

    let client = reqwest::Client::new();
    for i in 0..20 {
        let body = format!("order {i}: {}", "x".repeat(i * 1000));
        let resp = client
            .post(proxy.url("/echo"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "POST {i}");
        assert_eq!(resp.text().await.unwrap(), body, "POST {i} kept its body");
    }
    assert_eq!(live.served().await, 20);
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains("grayline_proxy_retries_total{service=\"shop\",version=\"v1\"} 10"),
        "{metrics}"
    );
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_503_within_the_budget() {
    let server = Server::start();
    let (sick, well) = (Upstream::start("v1"), Upstream::start("v1"));
    let mut v = Version::new("v1", &[&sick.endpoint(), &well.endpoint()]);
    v.outlier_detection.enabled = false;
    v.retry = Retry {
        attempts: 1,
        per_try_timeout_ms: 0,
        budget_percent: 20,
    };
    v.breaker.enabled = false;
    let revision = create(&server, &Service::single("shop", v)).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    sick.fail_with(true, 503).await;

    let t = Traffic::new();
    // Few requests: the budget's floor (10 per second) covers every retry.
    let replies = t.burst(&proxy.url("/"), &[], 60, 4).await;
    assert!(replies.iter().all(|r| r.status == 200), "every GET retried");
    // POST is not idempotent: its 503s pass through.
    let client = reqwest::Client::new();
    let mut posts = Vec::new();
    for _ in 0..20 {
        posts.push(
            client
                .post(proxy.url("/"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(posts.contains(&503) && posts.contains(&200), "{posts:?}");

    // Many requests: retries stay within 20 % of them plus the floor.
    let n = 2000;
    let before = sick.served().await + well.served().await;
    let replies = t.burst(&proxy.url("/"), &[], n, 8).await;
    let tries = sick.served().await + well.served().await - before;
    let retries = tries - n as u64;
    let failed = replies.iter().filter(|r| r.status == 503).count();
    println!("{n} GETs, half to a 503 endpoint: {retries} retries, {failed} answered 503");
    // In the 10 s window: 60 GETs + 20 POSTs + 2000 GETs, 20 % of them plus 100.
    let allowed = (60 + 20 + n as u64) / 5 + 100;
    assert!(retries <= allowed, "{retries} retries > {allowed}");
    assert!(retries >= allowed - 60, "the budget was used: {retries}");
    assert!(failed > 0, "the budget ran out before the failures did");
}
