//! Full-link lanes across a call chain A → B → C, each service behind its own proxy, each
//! upstream calling the next service's proxy: a request in the gray lane reaches the gray
//! version of every service that has one and the stable version of the others, and a lane
//! header from a client nobody trusts is ignored.

use std::net::IpAddr;
use std::time::Duration;

use grayline_routing::*;
use grayline_tests::{Proxy, Server, Upstream};

use crate::fixtures::*;

/// The proxies trust each other's upstreams (which call from 127.0.0.1); test clients that
/// should not be trusted call from 127.0.0.2.
const TRUSTED: &str = "127.0.0.1/32";
const OUTSIDER: &str = "127.0.0.2";

/// A service named `name` (host `name.mesh`) with the given (version, upstream, lane)
/// versions, the first stable.
fn service(name: &str, versions: &[(&str, &Upstream, &str)]) -> Service {
    let mut s = Service::single(
        name,
        Version::new(versions[0].0, &[&versions[0].1.endpoint()]),
    );
    s.hosts = vec![format!("{name}.mesh")];
    s.versions[0].lane = versions[0].2.to_string();
    for (v, u, lane) in &versions[1..] {
        let mut version = Version::new(v, &[&u.endpoint()]);
        version.lane = lane.to_string();
        s.versions.push(version);
    }
    s
}

/// The upstream names along the chain a request travelled, e.g. `["a-gray", "b-gray",
/// "c-v1"]`, and the lane header each hop's upstream received.
fn path(answer: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let mut hops = Vec::new();
    let mut lanes = Vec::new();
    let mut at = answer;
    while let Some(v) = at["version"].as_str() {
        hops.push(v.to_string());
        lanes.push(
            at["headers"]["x-grayline-lane"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
        );
        at = &at["next"];
    }
    (hops, lanes)
}

async fn call(
    client: &reqwest::Client,
    proxy: &Proxy,
    host: &str,
    headers: &[(&str, &str)],
) -> (Vec<String>, Vec<String>) {
    let mut req = client.get(proxy.url("/checkout")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), 200);
    path(&resp.json().await.expect("json"))
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_lane_holds_along_the_chain_and_falls_back_to_stable_where_a_service_has_none() {
    let server = Server::start();
    let proxy = |id: &str, service: &str| {
        Proxy::start(
            &server,
            id,
            &["--services", service, "--trusted-proxies", TRUSTED],
        )
    };
    let (pc, pb, pa) = (
        proxy("proxy-c", "c"),
        proxy("proxy-b", "b"),
        proxy("proxy-a", "a"),
    );
    let next = |name: &str, p: &Proxy, host: &str| {
        let url = format!("http://{}", p.addr);
        Upstream::start_with(name, &["--next-hop", &url, "--next-hop-host", host])
    };
    let c1 = Upstream::start("c-v1");
    let (b1, bg) = (next("b-v1", &pc, "c.mesh"), next("b-gray", &pc, "c.mesh"));
    let (a1, ag) = (next("a-v1", &pb, "b.mesh"), next("a-gray", &pb, "b.mesh"));
    // C has no gray version; A sends testers into the gray lane.
    let rc = create(&server, &service("c", &[("v1", &c1, "")])).await;
    let rb = create(
        &server,
        &service("b", &[("v1", &b1, ""), ("gray", &bg, "gray")]),
    )
    .await;
    let mut a = service("a", &[("v1", &a1, ""), ("gray", &ag, "gray")]);
    a.policy.rules = vec![header_rule("x-tester", "1", "gray")];
    let ra = create(&server, &a).await;
    for (p, revision) in [(&pa, ra), (&pb, rb), (&pc, rc)] {
        p.wait_revision(revision).await;
    }
    let trusted = reqwest::Client::new();
    let outsider = reqwest::Client::builder()
        .local_address(OUTSIDER.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // No lane: stable all along, and no lane header anywhere.
    assert_eq!(
        call(&trusted, &pa, "a.mesh", &[]).await,
        (
            strings(&["a-v1", "b-v1", "c-v1"]),
            strings(&["-", "-", "-"])
        )
    );
    // Entering the lane through A's policy: B's gray version, C's stable one, the lane
    // carried on through C all the same.
    assert_eq!(
        call(&trusted, &pa, "a.mesh", &[("x-tester", "1")]).await,
        (
            strings(&["a-gray", "b-gray", "c-v1"]),
            strings(&["gray", "gray", "gray"])
        )
    );
    // A trusted caller already in the lane: routed by the lane, before A's policy.
    assert_eq!(
        call(&trusted, &pa, "a.mesh", &[("x-grayline-lane", "gray")]).await,
        (
            strings(&["a-gray", "b-gray", "c-v1"]),
            strings(&["gray", "gray", "gray"])
        )
    );
    // Straight to B from a trusted source.
    assert_eq!(
        call(&trusted, &pb, "b.mesh", &[("x-grayline-lane", "gray")]).await,
        (strings(&["b-gray", "c-v1"]), strings(&["gray", "gray"]))
    );
    // An outside client cannot pick the lane: its header is ignored and goes no further.
    assert_eq!(
        call(&outsider, &pa, "a.mesh", &[("x-grayline-lane", "gray")]).await,
        (
            strings(&["a-v1", "b-v1", "c-v1"]),
            strings(&["-", "-", "-"])
        )
    );
    // A lane that names nothing anywhere passes through on the stable versions.
    assert_eq!(
        call(&trusted, &pa, "a.mesh", &[("x-grayline-lane", "blue")]).await,
        (
            strings(&["a-v1", "b-v1", "c-v1"]),
            strings(&["blue", "blue", "blue"])
        )
    );
    // The service can believe a source itself.
    a.lane_sources = vec![format!("{OUTSIDER}/32")];
    let revision = update(&server, &a).await;
    pa.wait_revision(revision).await;
    assert_eq!(
        call(&outsider, &pa, "a.mesh", &[("x-grayline-lane", "gray")]).await,
        (
            strings(&["a-gray", "b-gray", "c-v1"]),
            strings(&["gray", "gray", "gray"])
        )
    );
}
