//! The console and mesh traffic: mirroring a canary first from the wizard and watching its
//! copies counted apart, the lanes table, and the simulator routing by lane.

use std::time::Duration;

use grayline_routing::{Service, Version};
use grayline_tests::browser::Browser;
use grayline_tests::{Traffic, Upstream, eventually};

use super::{console_server, sign_in};
use crate::fixtures::create;

#[tokio::test]
async fn mirror_a_canary_first_then_watch_its_copies_and_the_lanes() {
    let server = console_server();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut shop = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    shop.hosts = vec!["shop.example".into()];
    create(&server, &shop).await;
    // A second service with a version in the gray lane.
    let mut cart = Service::single("cart", Version::new("v1", &["127.0.0.1:9"]));
    cart.hosts = vec!["cart.example".into()];
    let mut gray = Version::new("v1-gray", &["127.0.0.1:10"]);
    gray.lane = "gray".into();
    cart.versions.push(gray);
    create(&server, &cart).await;
    let proxy = grayline_tests::Proxy::start(&server, "edge", &[]);
    let b = Browser::start().await;
    sign_in(&b, &server).await;

    // The overview says where each lane goes.
    let row = b.wait_text("#lanes tr[data-lane=gray]", "v1-gray").await;
    assert!(
        row.contains("v1 (stable)"),
        "shop falls back to stable: {row}"
    );
    b.screenshot("overview-lanes").await;

    // The simulator routes by lane.
    b.goto(&server.http_url("/release?service=cart")).await;
    b.wait_text("main", "cart (revision 2)").await;
    b.click("#wizard-step-3").await;
    b.wait_text("#sim-why", "no rule matched").await;
    assert!(
        !b.exists("#sim-lane-out").await,
        "no lane, none to go on in"
    );
    b.fill("#sim-lane", "gray").await;
    b.wait_text("#sim-version", "v1-gray").await;
    b.wait_text("#sim-why", "in lane gray").await;
    b.wait_text("#sim-lane-out", "gray").await;
    // A lane the service has no version in: the stable version, and the lane goes on.
    b.fill("#sim-lane", "blue").await;
    b.wait_text("#sim-why", "no rule matched").await;
    assert_eq!(b.text("#sim-version").await, "v1");
    b.wait_text("#sim-lane-out", "blue").await;

    // Mirror first: v2 gets copies of half the requests and answers nobody.
    b.goto(&server.http_url("/release?service=shop")).await;
    b.wait_text("main", "shop (revision 1)").await;
    b.click("#wizard-next").await;
    b.click("#wizard-add-canary").await;
    b.fill("#wizard-canary-0-endpoints", &v2.endpoint()).await;
    b.click("#wizard-next").await;
    b.click("#wizard-mode-mirror").await;
    b.fill("#wizard-mirror-percent", "fifty").await;
    b.click("#wizard-next").await;
    b.wait_text("#wizard-problems", "not a percentage").await;
    b.click("#wizard-back").await;
    b.wait_text("#wizard-mirror-percent-errors", "not a percentage")
        .await;
    b.fill("#wizard-mirror-percent", "50").await;
    b.screenshot("wizard-3-mirror").await;
    b.click("#wizard-next").await;
    b.wait_text(
        "#wizard-plain",
        "All traffic → v1 (stable), and a copy of 50 % to v2 (mirrored)",
    )
    .await;
    b.click("#wizard-apply").await;
    b.wait_text("#banner", "Release applied as revision 3")
        .await;
    proxy.wait_revision(3).await;

    let replies = Traffic::new()
        .burst(&proxy.url("/"), &[("host", "shop.example")], 300, 8)
        .await;
    assert!(replies.iter().all(|r| r.version.as_deref() == Some("v1")));
    b.goto(&server.http_url("/services/shop")).await;
    b.find("#mirrored-v2").await;
    eventually(
        "the copies shown apart",
        Duration::from_secs(20),
        || async {
            let (copies, live) = (
                b.text("#mirrored-total-v2").await,
                b.text("#total-v2").await,
            );
            let served = v2.served().await;
            (copies == served.to_string() && served > 0 && live == "0")
                .then_some(())
                .ok_or(format!("copies {copies}, live {live}, v2 served {served}"))
        },
    )
    .await;
    b.wait_text("#policy-plain", "a copy of 50 % to v2 (mirrored)")
        .await;
    b.screenshot("service-mirrored").await;
    b.close().await;
}
