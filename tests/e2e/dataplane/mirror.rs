//! Traffic mirroring end to end: a route copies its share of requests to the canary, the
//! copies carry their marker and their bodies, the client never waits for them, and the
//! server counts them apart from live traffic.

use std::time::{Duration, Instant};

use grayline_routing::*;
use grayline_tests::{Proxy, Server, Traffic, Upstream, eventually};

use crate::fixtures::*;

/// `shop` (any host): v1 stable takes every live request, and `weight` basis points of them
/// are copied to v2.
fn mirrored(v1: &Upstream, v2: &Upstream, weight: u32) -> Service {
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.versions.push(Version::new("v2", &[&v2.endpoint()]));
    s.policy.default_mirror = Some(Mirror {
        version: "v2".into(),
        weight,
    });
    s
}

/// A proxy counter from `/metrics`, 0 when absent.
async fn metric(proxy: &Proxy, series: &str) -> u64 {
    let (_, text) = proxy.admin_get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_mirror_copies_its_share_marked_and_counted_apart() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let revision = create(&server, &mirrored(&v1, &v2, 2000)).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;

    let n = 2000;
    let replies = Traffic::new()
        .burst(&proxy.url("/copy-me"), &[], n, 16)
        .await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.version.as_deref() == Some("v1")),
        "every client is answered by v1"
    );
    // p = 0.2 over 2000 requests: mean 400, sd 17.9; accept ±5 sd. Statistics reach the
    // server in periodic reports, and the report with the last live requests may come after
    // the one that completed the mirrored count (when those requests drew no copy): both
    // totals are awaited together.
    let copies = eventually(
        "the copies and the live requests counted by the server",
        Duration::from_secs(15),
        || async {
            let served = v2.served().await;
            let counted = version_totals(&server, "v2", true).await.requests;
            let live = version_totals(&server, "v1", false).await.requests;
            (counted == served && served > 0 && live == n as u64)
                .then_some(served)
                .ok_or(format!(
                    "v2 served {served}, the server counted {counted} mirrored \
                     and {live} live of {n}"
                ))
        },
    )
    .await;
    println!("{copies} of {n} requests copied to v2");
    assert!((311..=489).contains(&copies), "{copies} copies of {n}");
    assert_eq!(v1.served().await, n as u64);
    // Counted apart: v2 has no live traffic, v1 all of it.
    assert_eq!(version_totals(&server, "v2", false).await.requests, 0);
    assert_eq!(version_totals(&server, "v1", true).await.requests, 0);
    assert_eq!(server_totals(&server).await.get("v2"), None);
    // Each copy says it is one, and which version served the live request.
    let seen = v2.requests().await;
    assert!(!seen.is_empty());
    for r in &seen {
        assert_eq!(r["path"], "/copy-me");
        assert_eq!(r["headers"]["x-grayline-mirror"], "v1", "{r}");
        assert_eq!(r["headers"]["x-grayline-version"], "v2", "{r}");
    }
    assert!(
        v1.requests()
            .await
            .iter()
            .all(|r| r["headers"].get("x-grayline-mirror").is_none()),
        "live requests carry no marker"
    );
    let (_, text) = proxy.admin_get("/metrics").await;
    assert!(
        text.contains(&format!(
            "grayline_proxy_mirrored_requests_total{{service=\"shop\",version=\"v2\",class=\"2xx\"}} {copies}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn the_client_never_waits_for_a_mirror_that_hangs_or_fails() {
    let server = Server::start();
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start_with("v2", &["--delay-ms", "4000"]);
    let mut s = mirrored(&v1, &v2, 10_000);
    s.versions[1].timeout_ms = 10_000;
    s.versions[1].mirror_limits.max_in_flight = 4;
    let revision = create(&server, &s).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let t = Traffic::new();

    // The copies hang for 4 s; the clients do not.
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for _ in 0..60 {
        let sent = Instant::now();
        let r = t.send(&proxy.url("/"), &[]).await;
        slowest = slowest.max(sent.elapsed());
        assert_eq!((r.status, r.version.as_deref()), (200, Some("v1")));
    }
    let all = started.elapsed();
    println!("60 requests with a hanging mirror: {all:?}, slowest {slowest:?}");
    assert!(slowest < Duration::from_millis(1000), "slowest {slowest:?}");
    assert!(
        all < Duration::from_secs(4),
        "the copies were never waited for"
    );
    // Only max_in_flight copies went out; the rest were skipped.
    assert!(
        v2.served().await <= 4,
        "{} copies in flight",
        v2.served().await
    );
    let skipped =
        r#"grayline_proxy_mirror_skipped_total{service="shop",version="v2",reason="in_flight"}"#;
    assert!(metric(&proxy, skipped).await >= 56);

    // A failing mirror costs the clients nothing either.
    v2.set_faults(0.0, 0).await;
    v2.set_failing(true).await;
    eventually(
        "the hanging copies to end",
        Duration::from_secs(15),
        || async {
            let skipped_now = metric(&proxy, skipped).await;
            let r = t.send(&proxy.url("/"), &[]).await;
            assert_eq!(r.status, 200);
            (metric(&proxy, skipped).await == skipped_now)
                .then_some(())
                .ok_or("copies still skipped".to_string())
        },
    )
    .await;
    let replies = t.burst(&proxy.url("/"), &[], 100, 4).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.version.as_deref() == Some("v1"))
    );
    eventually(
        "the failed copies counted apart",
        Duration::from_secs(15),
        || async {
            let copies = version_totals(&server, "v2", true).await;
            let live = version_totals(&server, "v1", false).await;
            (copies.status_5xx >= 50 && live.status_5xx == 0)
                .then_some(())
                .ok_or(format!("copies {copies:?}, live {live:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn mirrored_bodies_arrive_whole_and_longer_ones_are_not_copied() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut s = mirrored(&v1, &v2, 10_000);
    s.versions[1].mirror_limits.max_body_bytes = 1024;
    let revision = create(&server, &s).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let client = reqwest::Client::new();

    let body: String = (0..100).map(|i| format!("{i:04}|")).collect::<String>() + "end";
    let resp = client
        .post(proxy.url("/orders"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (answer["version"].as_str(), answer["body_bytes"].as_u64()),
        (Some("v1"), Some(body.len() as u64))
    );
    let copy = eventually(
        "the copy with its body",
        Duration::from_secs(10),
        || async {
            v2.requests()
                .await
                .into_iter()
                .find(|r| r["path"] == "/orders")
                .ok_or("no copy yet".to_string())
        },
    )
    .await;
    assert_eq!(copy["method"], "POST");
    assert_eq!(
        copy["body"].as_str(),
        Some(body.as_str()),
        "the copy's body is the client's"
    );

    // Over max_body_bytes: served, not copied.
    let long = "x".repeat(4096);
    let resp = client
        .post(proxy.url("/too-long"))
        .body(long.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["body_bytes"].as_u64(), Some(4096));
    let skipped = r#"grayline_proxy_mirror_skipped_total{service="shop",version="v2",reason="body_too_large"}"#;
    eventually("the long body skipped", Duration::from_secs(5), || async {
        (metric(&proxy, skipped).await == 1)
            .then_some(())
            .ok_or("not counted".to_string())
    })
    .await;
    assert!(v2.requests().await.iter().all(|r| r["path"] != "/too-long"));
}
