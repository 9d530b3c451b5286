//! Statistics survive the server: every request sent through the proxies is counted exactly
//! once, across a kill -9 of the server and its restart, per second and in the per-minute
//! history.

use std::time::Duration;

use grayline_routing::*;
use grayline_tests::{Load, Proxy, Server, Upstream, eventually};

use crate::fixtures::*;

async fn total(server: &Server) -> u64 {
    server_totals(server).await.values().sum()
}

#[tokio::test]
async fn every_request_is_counted_once_across_a_server_crash() {
    let mut server = Server::start();
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.versions.push(Version::new("v2", &[&v2.endpoint()]));
    s.policy.default_route = Some(split(&[("v1", 5000), ("v2", 5000)], None));
    let revision = create(&server, &s).await;
    let proxies = [
        Proxy::start(&server, "edge-a", &[]),
        Proxy::start(&server, "edge-b", &[]),
    ];
    for p in &proxies {
        p.wait_revision(revision).await;
    }
    let loads: Vec<Load> = proxies
        .iter()
        .map(|p| Load::start(&p.url("/"), &[], 4, Duration::from_millis(20)))
        .collect();
    // Mid-way: kill the server, keep sending, bring it back.
    eventually("traffic counted", Duration::from_secs(20), || async {
        let t = total(&server).await;
        (t > 500).then_some(()).ok_or(format!("{t}"))
    })
    .await;
    server.kill9();
    let during = loads.iter().map(Load::sent).sum::<u64>();
    eventually(
        "traffic while the server is down",
        Duration::from_secs(20),
        || async {
            let now = loads.iter().map(Load::sent).sum::<u64>();
            (now > during + 300).then_some(()).ok_or(format!("{now}"))
        },
    )
    .await;
    server.restart();
    eventually(
        "more traffic after the restart",
        Duration::from_secs(20),
        || async {
            let t = total(&server).await;
            (t > during).then_some(()).ok_or(format!("{t}"))
        },
    )
    .await;
    let mut sent = 0;
    for load in loads {
        let (n, failed) = load.stop().await;
        assert_eq!(failed, 0, "the proxies kept serving");
        sent += n;
    }
    eventually(
        &format!("all {sent} requests counted once"),
        Duration::from_secs(20),
        || async {
            let t = total(&server).await;
            (t == sent)
                .then_some(())
                .ok_or(format!("counted {t} of {sent}"))
        },
    )
    .await;
    println!("{sent} requests sent through two proxies, all counted once across the crash");
    // The per-minute history holds the same count once the last minute is over (up to a
    // minute from now), and keeps it across another crash.
    eventually(
        &format!("all {sent} requests in the per-minute history"),
        Duration::from_secs(90),
        || async {
            let t = history_total(&server).await;
            (t == sent)
                .then_some(())
                .ok_or(format!("{t} of {sent} in the history"))
        },
    )
    .await;
    server.kill9();
    server.restart();
    assert_eq!(history_total(&server).await, sent);
}
