//! The data plane end to end: the real server, several real proxies and one real upstream
//! process per version, with traffic sent through the proxies.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use grayline_proto::v1 as pb;
use grayline_routing::useragent::samples::SAMPLES;
use grayline_routing::useragent::{Browser, Os};
use grayline_routing::*;
use grayline_tests::{Proxy, Server, Traffic, Upstream, eventually};

use crate::fixtures::*;

mod endpoint_failure;
mod forwarding;
mod grpc;
mod lanes;
mod mirror;
mod proxy_trouble;

/// A service named `shop` for any host, one version per upstream (named after it).
fn service(upstreams: &[&Upstream]) -> Service {
    let mut s = Service::single(
        "shop",
        Version::new(&upstreams[0].name, &[&upstreams[0].endpoint()]),
    );
    for u in &upstreams[1..] {
        s.versions.push(Version::new(&u.name, &[&u.endpoint()]));
    }
    s
}

fn tally(replies: &[grayline_tests::dataplane::Reply]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in replies {
        assert_eq!(r.status, 200, "{r:?}");
        *out.entry(r.version.clone().expect("tagged")).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn a_ten_percent_split_holds_on_every_proxy_and_the_server_counts_every_request() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut s = service(&[&v1, &v2]);
    s.policy.default_route = Some(split(&[("v1", 9000), ("v2", 1000)], None));
    let revision = create(&server, &s).await;
    let proxies = [
        Proxy::start(&server, "edge-a", &[]),
        Proxy::start(&server, "edge-b", &[]),
    ];
    let traffic = Traffic::new();
    let mut live = server
        .admin()
        .await
        .live_stats(pb::LiveStatsRequest {
            service: "shop".into(),
        })
        .await
        .expect("live stats")
        .into_inner();
    let n = 5000;
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    for proxy in &proxies {
        proxy.wait_revision(revision).await;
        let counts = tally(&traffic.burst(&proxy.url("/"), &[], n, 16).await);
        let canary = counts.get("v2").copied().unwrap_or(0);
        // p = 0.1 over 5000 requests: mean 500, sd 21.2; accept ±5 sd.
        println!(
            "{}: {counts:?} ({:.2} % to v2)",
            proxy.id,
            canary as f64 / n as f64 * 100.0
        );
        assert!(
            (394..=606).contains(&canary),
            "{}: {canary} of {n} to v2",
            proxy.id
        );
        for (v, c) in counts {
            *sent.entry(v).or_default() += c;
        }
    }
    // Every request the proxies served shows in the server's statistics, exactly once.
    let started = Instant::now();
    eventually(
        "server totals equal what was sent",
        Duration::from_secs(15),
        || async {
            let totals = server_totals(&server).await;
            (totals == sent)
                .then_some(())
                .ok_or(format!("server {totals:?} vs sent {sent:?}"))
        },
    )
    .await;
    println!(
        "server statistics matched {sent:?} {:?} after the last request",
        started.elapsed()
    );
    // The live stream pushed seconds with traffic in them.
    let mut live_requests = 0;
    while live_requests == 0 {
        let tick = tokio::time::timeout(Duration::from_secs(10), live.message())
            .await
            .expect("a tick every second")
            .expect("stream")
            .expect("open");
        assert!(tick.series.iter().all(|s| s.service == "shop"));
        live_requests = tick
            .series
            .iter()
            .flat_map(|s| &s.points)
            .map(|p| p.requests)
            .sum::<u64>();
    }
    assert_eq!(v1.served().await + v2.served().await, 2 * n as u64);
    // Per proxy too.
    let per_proxy = server
        .admin()
        .await
        .get_stats(pb::StatsRequest {
            service: "shop".into(),
            window_seconds: 3600,
            per_proxy: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for p in &proxies {
        let total: u64 = per_proxy
            .series
            .iter()
            .filter(|s| s.proxy_id == p.id)
            .map(|s| s.totals.as_ref().map_or(0, |t| t.requests))
            .sum();
        assert_eq!(total, n as u64, "{}", p.id);
    }
    // The same counts on the Prometheus endpoints.
    let (status, metrics) = proxies[0].admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "grayline_proxy_requests_total{service=\"shop\",version=\"v1\",class=\"2xx\"}"
        ),
        "{metrics}"
    );
    let text = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expected = format!(
        "grayline_requests_total{{service=\"shop\",version=\"v2\",class=\"2xx\"}} {}",
        sent["v2"]
    );
    assert!(text.contains(&expected), "{text}");
}

#[tokio::test]
async fn header_cookie_query_ip_os_and_browser_rules() {
    let server = Server::start();
    let (v1, v2, v3) = (
        Upstream::start("v1"),
        Upstream::start("v2"),
        Upstream::start("v3"),
    );
    let mut s = service(&[&v1, &v2, &v3]);
    let field = |name: &str, op: MatchOp| FieldMatch {
        name: name.into(),
        op,
        negate: false,
    };
    let family = |f: &str, min: &str| FamilyMatch {
        family: f.into(),
        min_version: min.into(),
        max_version: String::new(),
        negate: false,
    };
    let rule = |c: Condition, v: &str| Rule {
        name: String::new(),
        conditions: vec![c],
        route: Route::Version(v.into()),
        mirror: None,
    };
    s.policy.rules = vec![
        rule(
            Condition::Header(field("x-canary", MatchOp::Exact("1".into()))),
            "v2",
        ),
        rule(
            Condition::Cookie(field("beta", MatchOp::Regex("^(yes|on)$".into()))),
            "v2",
        ),
        rule(
            Condition::Query(field(
                "preview",
                MatchOp::OneOf(vec!["true".into(), "1".into()]),
            )),
            "v3",
        ),
        rule(
            Condition::SourceIp(CidrMatch {
                cidrs: vec!["10.20.0.0/16".into()],
                negate: false,
            }),
            "v3",
        ),
        rule(Condition::Os(family("harmonyos", "")), "v3"),
        rule(Condition::Browser(family("wechat", "8")), "v2"),
        rule(Condition::Os(family("ios", "17")), "v3"),
        rule(Condition::Browser(family("samsung_internet", "")), "v2"),
    ];
    let revision = create(&server, &s).await;
    let proxy = Proxy::start(&server, "edge", &["--trusted-proxies", "127.0.0.0/8"]);
    proxy.wait_revision(revision).await;
    let t = Traffic::new();
    let url = |p: &str| proxy.url(p);
    let version = |r: grayline_tests::dataplane::Reply| r.version.unwrap_or_default();

    assert_eq!(version(t.send(&url("/"), &[("x-canary", "1")]).await), "v2");
    assert_eq!(version(t.send(&url("/"), &[("x-canary", "2")]).await), "v1");
    assert_eq!(
        version(t.send(&url("/"), &[("cookie", "a=1; beta=on")]).await),
        "v2"
    );
    assert_eq!(
        version(t.send(&url("/"), &[("cookie", "beta=maybe")]).await),
        "v1"
    );
    assert_eq!(version(t.send(&url("/x?preview=true"), &[]).await), "v3");
    assert_eq!(version(t.send(&url("/x?preview=no"), &[]).await), "v1");
    assert_eq!(
        version(t.send(&url("/"), &[("x-forwarded-for", "10.20.3.4")]).await),
        "v3"
    );
    assert_eq!(
        version(t.send(&url("/"), &[("x-forwarded-for", "10.21.3.4")]).await),
        "v1"
    );

    // OS and browser rules, driven by real User-Agent strings.
    let expected = |os: Os, os_version: &str, browser: Browser, browser_version: &str| {
        let major = |v: &str| {
            v.split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0)
        };
        if os == Os::Harmonyos {
            "v3"
        } else if browser == Browser::Wechat && major(browser_version) >= 8 {
            "v2"
        } else if os == Os::Ios && major(os_version) >= 17 {
            "v3"
        } else if browser == Browser::SamsungInternet {
            "v2"
        } else {
            "v1"
        }
    };
    let mut checked = 0;
    let mut by_version: BTreeMap<&str, u32> = BTreeMap::new();
    for &(ua, os, os_version, browser, browser_version) in SAMPLES {
        if ua.is_empty() {
            continue;
        }
        let want = expected(os, os_version, browser, browser_version);
        let got = version(t.send(&url("/"), &[("user-agent", ua)]).await);
        assert_eq!(got, want, "{ua}");
        *by_version.entry(want).or_default() += 1;
        checked += 1;
    }
    println!("{checked} User-Agents routed: {by_version:?}");
    assert!(checked >= 30);
    assert!(
        by_version.len() == 3,
        "every version was reached: {by_version:?}"
    );
}

#[tokio::test]
async fn sticky_users_never_flip_as_the_canary_grows() {
    let server = Server::start();
    let (v1, v2, v3) = (
        Upstream::start("v1"),
        Upstream::start("v2"),
        Upstream::start("v3"),
    );
    let sticky = || Some(StickyKey::Cookie("uid".into()));
    let mut s = service(&[&v1, &v2, &v3]);
    s.policy.default_route = Some(split(&[("v1", 4000), ("v2", 5000), ("v3", 1000)], sticky()));
    let mut revision = create(&server, &s).await;
    let proxies = [
        Proxy::start(&server, "edge-a", &[]),
        Proxy::start(&server, "edge-b", &[]),
    ];
    let t = Traffic::new();

    // A new client gets a cookie and keeps its version.
    proxies[0].wait_revision(revision).await;
    let first = t.send(&proxies[0].url("/"), &[]).await;
    let cookie = first.set_cookie.clone().expect("a sticky cookie is minted");
    assert!(
        cookie.starts_with("uid=") && cookie.contains("Path=/"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    for proxy in &proxies {
        proxy.wait_revision(revision).await;
        for _ in 0..20 {
            let r = t.send(&proxy.url("/"), &[("cookie", &pair)]).await;
            assert_eq!(
                r.version, first.version,
                "the cookie keeps the version on every proxy"
            );
            assert!(
                r.set_cookie.is_none(),
                "no new cookie once the client has one"
            );
        }
    }

    // 300 users; the canary v3 grows from 10 % to 50 %, taking from its neighbour v2.
    let users: Vec<String> = (0..300).map(|i| format!("uid=user-{i}")).collect();
    let mut current: Vec<String> = Vec::new();
    for u in &users {
        current.push(
            t.send(&proxies[0].url("/"), &[("cookie", u)])
                .await
                .version
                .unwrap(),
        );
    }
    let mut moved = 0;
    for (v2_weight, v3_weight) in [(4000, 2000), (3000, 3000), (2000, 4000), (1000, 5000)] {
        revision = set_policy(
            &server,
            "shop",
            &policy(
                vec![],
                Some(split(
                    &[("v1", 4000), ("v2", v2_weight), ("v3", v3_weight)],
                    sticky(),
                )),
            ),
        )
        .await;
        for p in &proxies {
            p.wait_revision(revision).await;
        }
        for (i, u) in users.iter().enumerate() {
            let a = t
                .send(&proxies[0].url("/"), &[("cookie", u)])
                .await
                .version
                .unwrap();
            let b = t
                .send(&proxies[1].url("/"), &[("cookie", u)])
                .await
                .version
                .unwrap();
            assert_eq!(a, b, "both proxies agree on user {i}");
            if current[i] == "v3" {
                assert_eq!(a, "v3", "user {i} left the canary");
            } else if a != current[i] {
                assert_eq!(
                    a, "v3",
                    "user {i} moved from {} to {a}, not onto the canary",
                    current[i]
                );
                moved += 1;
            }
            current[i] = a;
        }
    }
    let on_canary = current.iter().filter(|v| *v == "v3").count();
    println!("{moved} users moved onto the canary; {on_canary} of 300 are on it at 50 %");
    assert!((110..=190).contains(&on_canary), "{on_canary}");
}

#[tokio::test]
async fn promote_reaches_every_proxy_within_a_second() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut s = service(&[&v1, &v2]);
    s.policy.default_route = Some(split(&[("v1", 5000), ("v2", 5000)], None));
    let revision = create(&server, &s).await;
    let proxies = [
        Proxy::start(&server, "edge-a", &[]),
        Proxy::start(&server, "edge-b", &[]),
        Proxy::start(&server, "edge-c", &[]),
    ];
    for p in &proxies {
        p.wait_revision(revision).await;
    }
    let t = Traffic::new();
    let started = Instant::now();
    let promoted = server
        .admin()
        .await
        .promote(pb::PromoteRequest {
            service: "shop".into(),
            version: "v2".into(),
            expected_revision: Some(revision),
        })
        .await
        .unwrap()
        .into_inner();
    for p in &proxies {
        eventually("all traffic to v2", Duration::from_secs(1), || async {
            let c = p.config().await;
            if c["revision"].as_u64() < Some(promoted.revision) {
                return Err(format!("{} at {}", p.id, c["revision"]));
            }
            Ok(())
        })
        .await;
    }
    let elapsed = started.elapsed();
    println!("promote applied on 3 proxies {elapsed:?} after the call");
    assert!(elapsed < Duration::from_secs(1));
    for p in &proxies {
        let counts = tally(&t.burst(&p.url("/"), &[], 200, 8).await);
        assert_eq!(
            counts,
            BTreeMap::from([("v2".to_string(), 200)]),
            "{}",
            p.id
        );
    }
}

#[tokio::test]
async fn traffic_survives_a_server_outage_and_proxy_restart() {
    let mut server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut s = service(&[&v1, &v2]);
    s.policy.rules = vec![header_rule("x-canary", "1", "v2")];
    let revision = create(&server, &s).await;
    let mut proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;

    // Steady traffic while the server is killed.
    let t = Traffic::new();
    let failures = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = tokio_util_like::Flag::default();
    let worker = {
        let (t, url, failures, sent, stop) = (
            t.clone(),
            proxy.url("/"),
            failures.clone(),
            sent.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_set() {
                let r = t.send(&url, &[]).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if r.status != 200 || r.version.as_deref() != Some("v1") {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    eventually("some traffic before", Duration::from_secs(5), || async {
        (sent.load(Ordering::Relaxed) > 50)
            .then_some(())
            .ok_or("waiting".into())
    })
    .await;
    server.kill9();
    let at_kill = sent.load(Ordering::Relaxed);
    eventually(
        "traffic after the server died",
        Duration::from_secs(10),
        || async {
            (sent.load(Ordering::Relaxed) > at_kill + 300)
                .then_some(())
                .ok_or("waiting".into())
        },
    )
    .await;
    stop.set();
    worker.await.unwrap();
    println!(
        "{} requests while the server was down, {} failed",
        sent.load(Ordering::Relaxed) - at_kill,
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);

    // A proxy restarted while the server is down serves its saved config.
    proxy.restart();
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.config().await["server_connected"], false);
    assert_eq!(
        t.send(&proxy.url("/"), &[("x-canary", "1")])
            .await
            .version
            .as_deref(),
        Some("v2")
    );
    assert_eq!(
        t.send(&proxy.url("/"), &[]).await.version.as_deref(),
        Some("v1")
    );

    // The server comes back; a change made before the proxy has reconnected still arrives.
    server.restart();
    let changed = set_policy(
        &server,
        "shop",
        &policy(
            vec![header_rule("x-canary", "1", "v1")],
            Some(Route::Version("v2".into())),
        ),
    )
    .await;
    proxy.wait_revision(changed).await;
    assert_eq!(
        t.send(&proxy.url("/"), &[]).await.version.as_deref(),
        Some("v2")
    );
    assert_eq!(
        t.send(&proxy.url("/"), &[("x-canary", "1")])
            .await
            .version
            .as_deref(),
        Some("v1")
    );
    eventually(
        "the proxy shows as connected again",
        Duration::from_secs(10),
        || async {
            let c = proxy.config().await;
            (c["server_connected"] == true)
                .then_some(())
                .ok_or(format!("{c}"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_config_the_proxy_cannot_apply_is_nacked_and_traffic_continues() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut s = service(&[&v1, &v2]);
    s.policy.default_route = Some(split(&[("v1", 5000), ("v2", 5000)], None));
    let revision = create(&server, &s).await;
    let proxy = Proxy::start(&server, "strict", &["--upstream-allow", "127.0.0.0/8"]);
    proxy.wait_revision(revision).await;

    // A new version outside the networks this proxy may reach.
    s.versions.push(Version::new("v3", &["10.255.0.1:80"]));
    let rejected = update(&server, &s).await;
    let status = eventually(
        "the NACK shows in the API",
        Duration::from_secs(10),
        || async {
            let p = proxy_status(&server, "strict").await?;
            (p.nack_revision == rejected)
                .then_some(p.clone())
                .ok_or(format!("{p:?}"))
        },
    )
    .await;
    println!("NACK error: {}", status.nack_error);
    assert!(
        status
            .nack_error
            .contains("services[shop].versions[2].endpoints[0]"),
        "{}",
        status.nack_error
    );
    assert!(
        status
            .nack_error
            .contains("outside this proxy's allowed upstream networks")
    );
    assert_eq!(status.applied_revision, revision);
    let (_, json) = server.json().get("/proxies").await;
    assert_eq!(json["proxies"][0]["nack_error"], status.nack_error);
    assert_eq!(proxy.config().await["revision"], revision);
    let counts = tally(&Traffic::new().burst(&proxy.url("/"), &[], 200, 8).await);
    assert_eq!(
        counts.len(),
        2,
        "the previous 50/50 split still runs: {counts:?}"
    );
}

#[tokio::test]
async fn a_failing_version_trips_its_breaker_and_recovers() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut s = service(&[&v1, &v2]);
    s.versions[1].breaker = Breaker {
        request_volume: 5,
        error_threshold_percent: 50,
        sleep_window_ms: 1500,
        ..Breaker::default()
    };
    s.policy.rules = vec![header_rule("x-canary", "1", "v2")];
    let revision = create(&server, &s).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let t = Traffic::new();
    let canary = [("x-canary", "1")];

    v2.set_failing(true).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(t.send(&proxy.url("/"), &canary).await.status);
    }
    assert_eq!(
        statuses, [500; 5],
        "the upstream's errors pass through until the breaker opens"
    );
    let served_when_open = v2.served().await;
    let fallback = t.send(&proxy.url("/"), &canary).await;
    assert_eq!(fallback.status, 503, "{fallback:?}");
    let body: serde_json::Value = serde_json::from_str(&fallback.body).unwrap();
    assert_eq!(
        (body["error"].as_str(), body["side"].as_str()),
        (Some("fallback"), Some("proxy"))
    );
    assert_eq!(
        (body["service"].as_str(), body["version"].as_str()),
        (Some("shop"), Some("v2"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("circuit breaker open")
    );
    for _ in 0..20 {
        assert_eq!(t.send(&proxy.url("/"), &canary).await.status, 503);
    }
    assert_eq!(
        v2.served().await,
        served_when_open,
        "an open breaker sends nothing upstream"
    );
    // Other versions are not affected.
    assert_eq!(t.send(&proxy.url("/"), &[]).await.status, 200);

    // The upstream heals; after the sleep window a probe closes the breaker.
    v2.set_failing(false).await;
    let started = Instant::now();
    eventually("the breaker closes", Duration::from_secs(10), || async {
        let r = t.send(&proxy.url("/"), &canary).await;
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{}", r.status))
    })
    .await;
    println!(
        "breaker closed {:?} after the upstream healed (sleep window 1.5 s)",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    for _ in 0..10 {
        assert_eq!(t.send(&proxy.url("/"), &canary).await.status, 200);
    }

    // An empty-response fallback, and the concurrency limit.
    s.versions[1].fallback.policy = FallbackPolicy::ReturnEmpty;
    s.versions[1].max_concurrent = 2;
    let revision = update(&server, &s).await;
    proxy.wait_revision(revision).await;
    let replies = t.burst(&proxy.url("/slow?ms=400"), &canary, 8, 8).await;
    let mut by_status: HashMap<u16, u32> = HashMap::new();
    for r in &replies {
        *by_status.entry(r.status).or_default() += 1;
    }
    println!("8 concurrent slow requests with max_concurrent 2: {by_status:?}");
    assert!(
        by_status.get(&204).copied().unwrap_or(0) >= 4,
        "{by_status:?}"
    );
    assert!(
        by_status.get(&200).copied().unwrap_or(0) >= 2,
        "{by_status:?}"
    );
}

#[tokio::test]
async fn upstream_failures_say_which_side_failed() {
    let server = Server::start();
    let v1 = Upstream::start("v1");
    let mut s = service(&[&v1]);
    s.versions[0].timeout_ms = 300;
    // A port nobody listens on: bind, note, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    s.versions
        .push(Version::new("gone", &[&closed.to_string()]));
    s.policy.rules = vec![header_rule("x-gone", "1", "gone")];
    let revision = create(&server, &s).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let t = Traffic::new();

    let slow = t.send(&proxy.url("/slow?ms=2000"), &[]).await;
    assert_eq!(slow.status, 504, "{slow:?}");
    let body: serde_json::Value = serde_json::from_str(&slow.body).unwrap();
    assert_eq!(
        (body["error"].as_str(), body["side"].as_str()),
        (Some("upstream_timeout"), Some("upstream"))
    );
    let gone = t.send(&proxy.url("/"), &[("x-gone", "1")]).await;
    assert_eq!(gone.status, 502, "{gone:?}");
    let body: serde_json::Value = serde_json::from_str(&gone.body).unwrap();
    assert_eq!(
        (body["error"].as_str(), body["side"].as_str()),
        (Some("upstream_unavailable"), Some("upstream"))
    );
    assert_eq!(body["version"], "gone");

    // A host no service takes is the client's problem.
    let mut scoped = service(&[&v1]);
    scoped.hosts = vec!["shop.example.com".into()];
    let revision = update(&server, &scoped).await;
    proxy.wait_revision(revision).await;
    let miss = t.send(&proxy.url("/"), &[]).await;
    assert_eq!(miss.status, 404);
    assert!(
        miss.body.contains("\"side\":\"downstream\""),
        "{}",
        miss.body
    );
    let hit = t
        .send(&proxy.url("/"), &[("host", "shop.example.com")])
        .await;
    assert_eq!(hit.status, 200, "{hit:?}");
}

#[tokio::test]
async fn bodies_stream_upgrades_pass_and_h2c_works() {
    use futures::{SinkExt, StreamExt};
    let server = Server::start();
    let v1 = Upstream::start("v1");
    let revision = create(&server, &service(&[&v1])).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;

    // A large body through /echo.
    let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let resp = reqwest::Client::new()
        .post(proxy.url("/echo"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), big.as_slice());

    // The upstream sees who asked and which version was chosen.
    let r = Traffic::new().send(&proxy.url("/who"), &[]).await;
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["headers"]["x-grayline-version"], "v1");
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");

    // HTTP/2 without TLS (prior knowledge).
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2.get(proxy.url("/h2")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-grayline-version"], "v1");

    // A WebSocket through the proxy.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr))
        .await
        .unwrap();
    ws.send("hello".into()).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "v1: hello");
}

#[tokio::test]
async fn a_proxy_without_config_is_not_ready() {
    let server = Server::start();
    let dead = format!(
        "http://{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    );
    let proxy = Proxy::start(&server, "lonely", &["--server", &dead]);
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let r = Traffic::new().send(&proxy.url("/"), &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("not_ready"), "{}", r.body);
    assert_eq!(proxy.admin_get("/healthz").await.0, 200);
}

/// A stop flag shared with a spawned task.
mod tokio_util_like {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Debug, Default)]
    pub struct Flag(Arc<AtomicBool>);

    impl Flag {
        pub fn set(&self) {
            self.0.store(true, Ordering::Relaxed);
        }

        pub fn is_set(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }
}

/// The value of the unlabelled `metric` on `proxy`'s metrics.
async fn proxy_metric(proxy: &Proxy, metric: &str) -> u64 {
    let (_, metrics) = proxy.admin_get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{metric} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {metric} in {metrics}"))
}

async fn pushed_services(proxy: &Proxy) -> u64 {
    proxy_metric(proxy, "grayline_proxy_config_pushed_services_total").await
}

#[tokio::test]
async fn a_proxy_is_sent_only_what_changed_even_across_its_own_restart() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let named = |i: usize| {
        let mut s = service(&[&v1, &v2]);
        // Names long enough that what the proxy holds passes 16 KiB.
        s.name = format!("service-{i:04}");
        s.hosts = vec![format!("s{i}.example")];
        s
    };
    let mut revision = 0;
    // Enough services for the first push to come in several parts, and for the restarted
    // proxy's list of what it holds to follow its Hello in parts.
    for i in 0..1000 {
        revision = create(&server, &named(i)).await;
    }
    let mut proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    assert_eq!(
        pushed_services(&proxy).await,
        1000,
        "the first push is whole"
    );
    let bytes = proxy_metric(&proxy, "grayline_proxy_config_push_bytes_total").await;
    assert!(
        bytes > grayline_proto::parts::PART_BYTES as u64,
        "{bytes} bytes: a push the server cuts in parts"
    );

    let to_v2 = policy(vec![], Some(Route::Version("v2".into())));
    let changed = set_policy(&server, "service-0007", &to_v2).await;
    proxy.wait_revision(changed).await;
    assert_eq!(
        pushed_services(&proxy).await,
        1001,
        "a change carries one service"
    );
    let t = Traffic::new();
    let version = |host: &'static str| {
        let (t, url) = (t.clone(), proxy.url("/"));
        async move { t.send(&url, &[("host", host)]).await }
    };
    assert_eq!(version("s7.example").await.version.as_deref(), Some("v2"));

    // While the proxy is down, one service changes and another goes.
    proxy.process.kill9();
    set_policy(&server, "service-0003", &to_v2).await;
    delete(&server, "service-0004").await;
    let now = server
        .admin()
        .await
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .revision;
    proxy.restart();
    proxy.wait_revision(now).await;
    assert_eq!(
        pushed_services(&proxy).await,
        1,
        "the restarted proxy holds its saved config and is sent what differs from it"
    );
    let config = proxy.config().await;
    assert_eq!(config["services"].as_array().unwrap().len(), 999);
    let version = |host: &'static str| {
        let (t, url) = (t.clone(), proxy.url("/"));
        async move { t.send(&url, &[("host", host)]).await }
    };
    assert_eq!(version("s3.example").await.version.as_deref(), Some("v2"));
    assert_eq!(version("s7.example").await.version.as_deref(), Some("v2"));
    assert_eq!(version("s5.example").await.version.as_deref(), Some("v1"));
    assert_eq!(version("s4.example").await.status, 404);
    // What it saved is what it serves.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(proxy.state_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["revision"], now);
    assert_eq!(saved["services"], config["services"]);
}
