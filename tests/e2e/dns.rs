//! Versions made of what a DNS name resolves to, against a real DNS server (dnsmasq): A
//! records with the version's port, SRV records with their own ports; records changed
//! mid-test are followed within the TTL; with the DNS server gone the proxy keeps the last
//! answer.

use std::time::Duration;

use grayline_routing::*;
use grayline_tests::dns::{Dnsmasq, Srv};
use grayline_tests::{Proxy, Server, Upstream, eventually};

use crate::fixtures::*;

/// The endpoints the proxy has for `version` now, sorted.
async fn endpoints(proxy: &Proxy, version: &str) -> Vec<String> {
    let mut e: Vec<String> = proxy.config().await["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["version"] == version)
        .filter_map(|e| e["endpoint"].as_str().map(str::to_string))
        .collect();
    e.sort();
    e
}

async fn wait_endpoints(proxy: &Proxy, version: &str, want: &[String]) {
    eventually(
        &format!("{version} resolves to {want:?}"),
        Duration::from_secs(10),
        || async {
            let now = endpoints(proxy, version).await;
            (now == want).then_some(()).ok_or(format!("{now:?}"))
        },
    )
    .await;
}

fn srv(port: u16, target: &str) -> Srv {
    Srv {
        name: "_http._tcp.v2.shop.test".into(),
        target: target.into(),
        port,
    }
}

#[tokio::test]
async fn versions_follow_their_dns_names_and_keep_the_last_answer_without_dns() {
    // v1 by A record: two upstreams on one port, on 127.0.0.1 and 127.0.0.2.
    let v1a = Upstream::start_with("v1", &["--listen", "127.0.0.1:0"]);
    let port = v1a.addr.port();
    let v1b = Upstream::start_with("v1", &["--listen", &format!("127.0.0.2:{port}")]);
    // v2 by SRV record, each instance on a port of its own.
    let (v2a, v2b) = (Upstream::start("v2"), Upstream::start("v2"));
    let mut dns = Dnsmasq::start(
        "127.0.0.1 v1.shop.test\n127.0.0.1 a.shop.test\n127.0.0.1 b.shop.test\n",
        &[srv(v2a.addr.port(), "a.shop.test")],
    );

    let server = Server::start();
    let mut shop = Service::single(
        "shop",
        Version::resolved("v1", &format!("v1.shop.test:{port}")),
    );
    shop.versions
        .push(Version::resolved("v2", "_http._tcp.v2.shop.test"));
    shop.policy = policy(vec![], Some(split(&[("v1", 5000), ("v2", 5000)], None)));
    let revision = create(&server, &shop).await;
    let proxy = Proxy::start(&server, "edge", &["--dns-server", &dns.address()]);
    proxy.wait_revision(revision).await;
    wait_endpoints(&proxy, "v1", &[format!("127.0.0.1:{port}")]).await;
    wait_endpoints(&proxy, "v2", &[v2a.endpoint()]).await;
    eventually("both versions serve", Duration::from_secs(10), || async {
        let (a, b) = (v1a.served().await, v2a.served().await);
        let _ = reqwest::get(proxy.url("/")).await;
        (a > 0 && b > 0)
            .then_some(())
            .ok_or(format!("v1 {a}, v2 {b}"))
    })
    .await;

    // The A record moves to the second instance; dnsmasq reads its hosts again (SIGHUP).
    dns.set_hosts("127.0.0.2 v1.shop.test\n127.0.0.1 a.shop.test\n127.0.0.1 b.shop.test\n");
    let moved = std::time::Instant::now();
    wait_endpoints(&proxy, "v1", &[format!("127.0.0.2:{port}")]).await;
    println!("A record change followed after {:?}", moved.elapsed());
    eventually("the moved v1 serves", Duration::from_secs(10), || async {
        let _ = reqwest::get(proxy.url("/")).await;
        let b = v1b.served().await;
        (b > 0).then_some(()).ok_or(format!("{b}"))
    })
    .await;

    // The SRV records change (dnsmasq reads them only at start): both v2 instances.
    dns.restart_with(&[
        srv(v2a.addr.port(), "a.shop.test"),
        srv(v2b.addr.port(), "b.shop.test"),
    ]);
    let mut both = vec![v2a.endpoint(), v2b.endpoint()];
    both.sort();
    wait_endpoints(&proxy, "v2", &both).await;

    // No DNS server at all: the proxy keeps the last answers, past several TTLs.
    dns.stop();
    let config_before = (endpoints(&proxy, "v1").await, endpoints(&proxy, "v2").await);
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(4) {
        let r = reqwest::get(proxy.url("/")).await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let config_after = (endpoints(&proxy, "v1").await, endpoints(&proxy, "v2").await);
    assert_eq!(config_before, config_after);
}
