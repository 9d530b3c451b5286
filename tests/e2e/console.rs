//! The console in headless Chromium against a real server, proxy and upstreams: sign-in,
//! the release wizard (a header canary, then a sticky 10 % ratio canary), the live dashboard,
//! promote and undo, restoring from history, and bad input that changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_tests::browser::{Browser, console_dir};
use grayline_tests::{Proxy, Server, Traffic, Upstream, eventually};

mod mesh;

fn console_server() -> Server {
    let dir = console_dir();
    Server::start_with(&["--console-dir", &dir.display().to_string()])
}

async fn sign_in(b: &Browser, server: &Server) {
    b.goto(&server.http_url("/")).await;
    b.fill("#signin-token", &server.admin_token).await;
    b.fill("#signin-actor", "Ada").await;
    b.click("#signin-submit").await;
    b.find("#sign-out").await;
}

async fn revision(server: &Server) -> u64 {
    server
        .admin()
        .await
        .list_services(pb::ListServicesRequest {})
        .await
        .expect("list")
        .into_inner()
        .revision
}

async fn versions_seen(
    t: &Traffic,
    proxy: &Proxy,
    headers: &[(&str, &str)],
    n: usize,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in t.burst(&proxy.url("/"), headers, n, 8).await {
        assert_eq!(r.status, 200, "{r:?}");
        *out.entry(r.version.unwrap_or_default()).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn sign_in_explains_a_wrong_token_and_survives_a_reload() {
    let server = console_server();
    let b = Browser::start().await;
    b.goto(&server.http_url("/services/nowhere")).await;
    b.fill("#signin-token", "not-the-token").await;
    b.click("#signin-submit").await;
    let error = b.wait_text("#signin-error", "did not accept").await;
    assert!(error.contains("admin.token"), "{error}");
    b.screenshot("signin-error").await;

    b.fill("#signin-token", &server.admin_token).await;
    b.click("#signin-submit").await;
    // The deep link is kept: the page for a service that does not exist says so.
    b.wait_text("main", "service `nowhere` not found").await;
    b.client.refresh().await.unwrap();
    b.wait_text("main", "service `nowhere` not found").await;
    assert!(
        !b.exists("#signin-token").await,
        "the session survives a reload"
    );
    // The console runs under a policy that lets no inline script run but Trunk's loader (by
    // its hash): a script injected into the page is refused by the browser.
    let page = server
        .http_client()
        .get(server.http_url("/"))
        .send()
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let scripts = policy
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap();
    assert!(
        scripts.contains("'sha256-") && !scripts.contains("unsafe-inline"),
        "{policy}"
    );
    let injected = b
        .client
        .execute(
            "const s = document.createElement('script'); s.textContent = 'window.injected = 1'; \
             document.head.appendChild(s); return window.injected === 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        injected,
        serde_json::Value::Bool(false),
        "an injected script ran"
    );
    b.click("#sign-out").await;
    b.find("#signin-token").await;
    b.close().await;
}

#[tokio::test]
async fn releases_through_the_wizard_then_watch_promote_undo_and_restore() {
    let server = console_server();
    let (v1, v2, v3) = (
        Upstream::start("v1"),
        Upstream::start("v2"),
        Upstream::start("v3"),
    );
    let proxy = Proxy::start(&server, "edge", &[]);
    let t = Traffic::new();
    let b = Browser::start().await;
    sign_in(&b, &server).await;
    b.wait_text("main", "No services yet").await;

    // First release: a new service with a header-based canary.
    b.click("#new-release").await;
    b.find("#wizard-name").await;
    b.fill("#wizard-name", "shop").await;
    b.fill("#wizard-stable-name", "v1").await;
    b.fill("#wizard-stable-endpoints", &v1.endpoint()).await;
    b.screenshot("wizard-1-service").await;
    b.click("#wizard-next").await;
    b.fill("#wizard-canary-0-endpoints", &v2.endpoint()).await;
    assert_eq!(
        b.find("#wizard-canary-0-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("v2")
    );
    b.screenshot("wizard-2-canary").await;
    b.click("#wizard-next").await;
    b.click("#wizard-mode-content").await;
    b.fill("#wizard-rule-0-name", "testers").await;
    b.fill("#wizard-rule-0-cond-0-name", "x-canary").await;
    b.fill("#wizard-rule-0-cond-0-value", "1").await;
    b.screenshot("wizard-3-policy").await;
    // Back and Next keep what was entered.
    b.click("#wizard-back").await;
    assert_eq!(
        b.find("#wizard-canary-0-endpoints")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(v2.endpoint().as_str())
    );
    b.click("#wizard-next").await;
    assert_eq!(
        b.find("#wizard-rule-0-cond-0-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("x-canary")
    );
    b.click("#wizard-next").await;
    let plain = b
        .wait_text("#wizard-plain", "header x-canary is \"1\" → v2")
        .await;
    assert!(plain.contains("Otherwise → v1 (stable)"), "{plain}");
    // The simulator runs the proxies' engine in the page.
    b.fill("#sim-headers", "x-canary: 1").await;
    b.wait_text("#sim-version", "v2").await;
    b.wait_text("#sim-why", "rule 1 \"testers\" matched").await;
    b.fill("#sim-headers", "x-canary: 0").await;
    b.wait_text("#sim-version", "v1").await;
    b.screenshot("wizard-4-review").await;
    b.click("#wizard-apply").await;
    b.wait_text("#banner", "Release applied as revision 1")
        .await;

    proxy.wait_revision(1).await;
    let canary = versions_seen(&t, &proxy, &[("x-canary", "1")], 50).await;
    assert_eq!(canary, BTreeMap::from([("v2".to_string(), 50)]));
    let rest = versions_seen(&t, &proxy, &[], 50).await;
    assert_eq!(rest, BTreeMap::from([("v1".to_string(), 50)]));

    // Second release on the same service: a 10 % ratio canary, sticky by cookie.
    b.goto(&server.http_url("/release?service=shop")).await;
    b.wait_text("main", "shop (revision 1)").await;
    b.click("#wizard-next").await;
    b.click("#wizard-add-canary").await;
    b.fill("#wizard-canary-0-name", "v3").await;
    b.fill("#wizard-canary-0-endpoints", &v3.endpoint()).await;
    b.click("#wizard-next").await;
    b.click("#wizard-mode-ratio").await;
    b.fill_and_leave("#wizard-weights-v3-percent", "10").await;
    b.fill_and_leave("#wizard-weights-v2-percent", "0").await;
    b.select("#wizard-sticky", "cookie").await;
    assert_eq!(
        b.find("#wizard-sticky-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("uid")
    );
    b.wait_text("#wizard-weights-total", "Total: 100 %").await;
    b.screenshot("wizard-3-ratio").await;
    b.click("#wizard-next").await;
    b.wait_text(
        "#wizard-plain",
        "90 % to v1, 10 % to v3, sticky by cookie uid",
    )
    .await;
    b.click("#wizard-apply").await;
    b.wait_text("#banner", "Release applied as revision 2")
        .await;
    proxy.wait_revision(2).await;

    // 3000 new users: about 10 % land on v3; each keeps its version through its cookie.
    let replies = t.burst(&proxy.url("/"), &[], 3000, 16).await;
    let on_v3 = replies
        .iter()
        .filter(|r| r.version.as_deref() == Some("v3"))
        .count();
    println!("{on_v3} of 3000 new users on the 10 % canary");
    assert!((220..=380).contains(&on_v3), "{on_v3}");
    let first = &replies[0];
    let cookie = first
        .set_cookie
        .as_deref()
        .expect("a sticky cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for _ in 0..10 {
        assert_eq!(
            t.send(&proxy.url("/"), &[("cookie", &cookie)])
                .await
                .version,
            first.version
        );
    }

    // The dashboard counts what was sent.
    let sent = versions_seen(&t, &proxy, &[], 400).await;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for r in replies.iter().filter_map(|r| r.version.clone()).chain(
        sent.iter()
            .flat_map(|(v, n)| std::iter::repeat_n(v.clone(), *n as usize)),
    ) {
        *expected.entry(r).or_default() += 1;
    }
    *expected.entry("v2".into()).or_default() += 50;
    *expected.entry("v1".into()).or_default() += 50;
    *expected.entry(first.version.clone().unwrap()).or_default() += 10;
    b.goto(&server.http_url("/services/shop")).await;
    for (version, count) in &expected {
        let css = format!("#total-{version}");
        eventually(
            &format!("{css} shows {count}"),
            Duration::from_secs(20),
            || async {
                let text = b.text(&css).await;
                (text == count.to_string()).then_some(()).ok_or(text)
            },
        )
        .await;
    }
    println!("the dashboard shows {expected:?}");
    eventually("the charts draw lines", Duration::from_secs(15), || async {
        let n = b
            .client
            .find_all(fantoccini::Locator::Css("figure.chart polyline"))
            .await
            .map_err(|e| e.to_string())?
            .len();
        (n >= 3).then_some(()).ok_or(format!("{n} lines"))
    })
    .await;
    b.screenshot("dashboard").await;

    // Promote v3, then undo.
    b.click("#promote-v3").await;
    let dialog = b
        .wait_text("#promote-dialog", "v3 becomes the stable version")
        .await;
    assert!(dialog.contains("100 %"), "{dialog}");
    b.screenshot("promote-confirm").await;
    b.click("#promote-confirm").await;
    b.wait_text("#banner", "v3 promoted").await;
    proxy.wait_revision(3).await;
    assert_eq!(
        versions_seen(&t, &proxy, &[], 100).await,
        BTreeMap::from([("v3".to_string(), 100)])
    );
    b.click("#undo").await;
    b.wait_text("#banner", "Undone").await;
    proxy.wait_revision(4).await;
    let after_undo = versions_seen(&t, &proxy, &[], 600).await;
    assert_eq!(
        after_undo.len(),
        2,
        "the 90/10 split is back: {after_undo:?}"
    );

    // Restore the first release from the history.
    b.click("#history-link").await;
    b.wait_text("table.history-table", "promote").await;
    b.screenshot("history").await;
    b.click("#restore-1").await;
    b.click("#restore-confirm-1").await;
    b.wait_text("#history-message", "Revision 1 restored as revision 5")
        .await;
    proxy.wait_revision(5).await;
    assert_eq!(
        versions_seen(&t, &proxy, &[("x-canary", "1")], 20).await,
        BTreeMap::from([("v2".to_string(), 20)])
    );
    assert_eq!(
        versions_seen(&t, &proxy, &[], 20).await,
        BTreeMap::from([("v1".to_string(), 20)])
    );
    let history = server.json().get("/services/shop/history").await.1;
    assert_eq!(history["entries"][0]["actor"], "Ada");
    b.close().await;
}

#[tokio::test]
async fn bad_entries_show_at_their_fields_and_change_nothing() {
    let server = console_server();
    let v1 = Upstream::start("v1");
    let b = Browser::start().await;
    sign_in(&b, &server).await;

    // Create a service through the wizard to work on.
    b.click("#new-release").await;
    b.fill("#wizard-name", "shop").await;
    b.fill("#wizard-stable-endpoints", &v1.endpoint()).await;
    b.click("#wizard-next").await;
    b.fill("#wizard-canary-0-endpoints", "127.0.0.1:1").await;
    b.click("#wizard-step-3").await;
    b.click("#wizard-apply").await;
    b.wait_text("#banner", "revision 1").await;
    let before = revision(&server).await;

    // A bad regex: shown at the condition, and Apply stays off.
    b.goto(&server.http_url("/release?service=shop")).await;
    b.wait_text("main", "shop (revision 1)").await;
    b.click("#wizard-step-2").await;
    b.click("#wizard-mode-content").await;
    b.fill("#wizard-rule-0-cond-0-name", "x-beta").await;
    b.select("#wizard-rule-0-cond-0-op", "regex").await;
    b.fill("#wizard-rule-0-cond-0-value", "(beta").await;
    b.click("#wizard-step-3").await;
    b.wait_text("#wizard-problems", "unclosed group").await;
    let apply = b.find("#wizard-apply").await;
    assert!(
        !apply.is_enabled().await.unwrap(),
        "Apply is off while the policy is invalid"
    );
    b.click("#wizard-problems button").await;
    b.wait_text("#wizard-rule-0-cond-0-errors", "unclosed group")
        .await;
    b.screenshot("error-regex").await;
    assert_eq!(revision(&server).await, before, "nothing was stored");

    // Fixed, and the matching requests split between two versions: first 50 + 40 %, which
    // the rule's split names as its own problem, then 50 + 50 %.
    b.select("#wizard-rule-0-cond-0-op", "present").await;
    b.select("#wizard-rule-0-version", "__split__").await;
    b.fill_and_leave("#wizard-rule-0-weights-v1-percent", "50")
        .await;
    b.fill_and_leave("#wizard-rule-0-weights-v2-percent", "40")
        .await;
    b.wait_text("#wizard-rule-0-weights-errors", "must sum to 10000")
        .await;
    b.fill_and_leave("#wizard-rule-0-weights-v2-percent", "50")
        .await;
    b.click("#wizard-step-3").await;
    b.wait_text(
        "#wizard-plain",
        "If header x-beta is present → 50 % to v1, 50 % to v2",
    )
    .await;
    b.click("#wizard-apply").await;
    b.wait_text("#banner", "Release applied as revision 2")
        .await;
    let (_, stored) = server.json().get("/services/shop").await;
    let weights = &stored["service"]["policy"]["rules"][0]["route"]["split"]["weights"];
    assert_eq!(
        (weights[0]["weight"].as_u64(), weights[1]["weight"].as_u64()),
        (Some(5000), Some(5000))
    );
    let before = revision(&server).await;

    // Weights that do not add up, edited in place: the server's error shows at the weights.
    b.goto(&server.http_url("/services/shop")).await;
    b.click("#edit-weights").await;
    b.fill_and_leave("#edit-v2-percent", "30").await;
    b.wait_text("#edit-total", "must add up to 100 %").await;
    b.click("#edit-save").await;
    b.wait_text("#edit-errors", "must sum to 10000").await;
    b.screenshot("error-weights").await;
    assert_eq!(revision(&server).await, before, "nothing was stored");

    // Readable on a phone.
    b.resize(390, 844).await;
    b.goto(&server.http_url("/")).await;
    b.find(".service-card").await;
    b.screenshot("overview-390px").await;
    b.goto(&server.http_url("/release")).await;
    b.find("#wizard-name").await;
    b.screenshot("wizard-390px").await;
    b.close().await;
}

/// Waits (up to `secs`) until `css` shows `needle`.
async fn wait_long(b: &Browser, css: &str, needle: &str, secs: u64) -> String {
    eventually(
        &format!("{css} shows {needle}"),
        Duration::from_secs(secs),
        || async {
            let text = b.text(css).await;
            text.contains(needle).then_some(text.clone()).ok_or(text)
        },
    )
    .await
}

/// `shop` with v1 only, through the API, a proxy, and steady traffic through it.
async fn shop_with_traffic(server: &Server, v1: &Upstream) -> (Proxy, grayline_tests::Load) {
    use grayline_routing::{Service, Version};
    let s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    let record = server
        .json()
        .post("/services", serde_json::json!({ "service": s }))
        .await;
    assert_eq!(record.0, 201, "{}", record.1);
    let proxy = Proxy::start(server, "edge", &[]);
    proxy.wait_revision(1).await;
    let load = grayline_tests::Load::start(&proxy.url("/"), &[], 6, Duration::from_millis(25));
    (proxy, load)
}

/// Signed in, the wizard on `shop` with a new canary v2 at `v2` and an automatic rollout
/// from `preset`.
async fn rollout_wizard(server: &Server, v2: &Upstream, preset: &str) -> Browser {
    let b = Browser::start().await;
    sign_in(&b, server).await;
    b.goto(&server.http_url("/release?service=shop")).await;
    b.wait_text("main", "shop (revision 1)").await;
    b.click("#wizard-next").await;
    b.click("#wizard-add-canary").await;
    b.fill("#wizard-canary-0-name", "v2").await;
    b.fill("#wizard-canary-0-endpoints", &v2.endpoint()).await;
    b.click("#wizard-next").await;
    b.click("#wizard-mode-rollout").await;
    b.select("#wizard-rollout-preset", preset).await;
    b.wait_text("#wizard-rollout-steps", "Canary %").await;
    b
}

/// The standard preset compressed for a gate's test: 30 %, 50 %, 70 %, each 2 s to 120 s
/// with 20 canary requests, a 2 s warm-up.
async fn gate_test_steps(b: &Browser) {
    for (i, percent) in ["30", "50", "70"].into_iter().enumerate() {
        b.fill(&format!("#wizard-rollout-step-{i}-min"), "2").await;
        b.fill(&format!("#wizard-rollout-step-{i}-max"), "120")
            .await;
        b.fill(&format!("#wizard-rollout-step-{i}-requests"), "20")
            .await;
        b.fill(&format!("#wizard-rollout-step-{i}-percent"), percent)
            .await;
    }
    b.fill("#wizard-rollout-warmup", "2").await;
}

#[tokio::test]
async fn an_automatic_rollout_runs_from_the_wizard_to_promotion() {
    let server = console_server();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let (proxy, load) = shop_with_traffic(&server, &v1).await;
    let b = rollout_wizard(&server, &v2, "quick").await;
    // Compressed to seconds for the test: 2 s to 5 s per step.
    for i in 0..3 {
        b.fill(&format!("#wizard-rollout-step-{i}-min"), "2").await;
        b.fill(&format!("#wizard-rollout-step-{i}-max"), "5").await;
        b.fill(&format!("#wizard-rollout-step-{i}-requests"), "20")
            .await;
    }
    b.fill("#wizard-rollout-warmup", "2").await;
    // A bad entry is named at its field, then fixed.
    b.fill("#wizard-rollout-step-1-percent", "5").await;
    b.click("#wizard-step-3").await;
    b.wait_text("#wizard-problems", "not above the previous step's 1000")
        .await;
    b.click("#wizard-step-2").await;
    b.wait_text("#wizard-rollout-step-1-errors", "weights must rise")
        .await;
    b.fill("#wizard-rollout-step-1-percent", "30").await;
    b.screenshot("rollout-1-plan").await;
    b.click("#wizard-next").await;
    b.wait_text(
        "#wizard-rollout-plain",
        "Automatic rollout of v2 against v1: 10 % → 30 % → 60 % → promote",
    )
    .await;
    b.wait_text("#wizard-rollout-traffic", "requests/s").await;
    b.wait_text("#wizard-rollout-estimate-0", "≈").await;
    // Seconds a step cannot show safety at this traffic; the review says so before it starts.
    b.wait_text("#wizard-rollout-warning", "promoted without safety shown")
        .await;
    b.screenshot("rollout-2-review").await;
    b.click("#wizard-apply").await;
    b.wait_text("#rollout-title", "Rollout 1: v2 against v1")
        .await;
    b.wait_text("#rollout-gates", "Errors").await;
    b.screenshot("rollout-3-running").await;
    wait_long(&b, "#rollout-phase", "promoted", 90).await;
    b.wait_text("#rollout-phase", "promoted without safety shown")
        .await;
    b.wait_text("#rollout-reason", "; promoted without safety shown")
        .await;
    b.screenshot("rollout-4-promoted").await;
    let (sent, failed) = load.stop().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests unanswered");
    let (_, record) = server.json().get("/services/shop").await;
    assert_eq!(record["service"]["stable"], "v2");
    // The history shows the rollout's steps.
    b.click("#history-link").await;
    b.wait_text("table.history-table", "rollout 1").await;
    b.wait_text("table.history-table", "v2 at 60 %").await;
    b.screenshot("rollout-5-history").await;
    drop(proxy);
    b.close().await;
}

#[tokio::test]
async fn an_automatic_rollback_happens_on_screen_and_the_controls_work() {
    let server = console_server();
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start_with("v2", &["--fail-rate", "0.3"]);
    let (_proxy, load) = shop_with_traffic(&server, &v1).await;
    let (status, body) = server
        .json()
        .post(
            "/services/shop/versions",
            serde_json::json!({"version": {"name": "v2", "endpoints": [v2.endpoint()]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let b = Browser::start().await;
    sign_in(&b, &server).await;
    let (status, body) = server
        .json()
        .as_actor("pipeline")
        .post(
            "/rollouts",
            serde_json::json!({"plan": {"service": "shop", "canary": "v2", "warmup_seconds": 2,
                "steps": [{"weight": 2000, "min_seconds": 2, "max_seconds": 120}, {"weight": 5000}]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    b.goto(&server.http_url("/services/shop")).await;
    b.wait_text("#rollout-phase", "running").await;
    let reason = wait_long(&b, "#rollout-phase", "rolled back", 60).await;
    println!("{reason}");
    let why = b
        .wait_text("#rollout-reason", "error rate: harm shown")
        .await;
    println!("on screen: {why}");
    b.wait_text("#rollout-gate-errors", "harm shown").await;
    b.screenshot("rollout-rolled-back").await;
    // Fixed canary: retry from the screen, then pause and abort.
    v2.set_faults(0.0, 0).await;
    b.click("#rollout-retry").await;
    b.wait_text("#rollout-phase", "running").await;
    b.click("#rollout-pause").await;
    b.wait_text("#rollout-phase", "paused").await;
    b.wait_text("#rollout-reason", "paused by Ada").await;
    b.click("#rollout-abort").await;
    b.wait_text("#rollout-phase", "aborted").await;
    b.screenshot("rollout-aborted").await;
    load.stop().await;
    let (_, record) = server.json().get("/services/shop").await;
    assert_eq!(
        record["service"]["policy"]["default_route"],
        serde_json::json!({"version": "v1"})
    );
    b.close().await;
}

#[tokio::test]
async fn instances_appear_and_vanish_on_the_service_page() {
    let server = console_server();
    let v1 = Upstream::start("v1");
    let mut shop = grayline_routing::Service::single(
        "shop",
        grayline_routing::Version::new("v1", &[&v1.endpoint()]),
    );
    shop.versions
        .push(grayline_routing::Version::tagged("v2", "1.1.2"));
    crate::fixtures::create(&server, &shop).await;
    let b = Browser::start().await;
    sign_in(&b, &server).await;
    b.goto(&server.http_url("/services/shop")).await;
    b.wait_text("#instances", "Address").await;
    b.wait_text(
        ".version[data-version=v2]",
        "the instances registered with tag 1.1.2",
    )
    .await;

    // An instance behind its own registering proxy appears; killed, it goes with its TTL.
    let app = Upstream::start("v2");
    let mut sidecar = Proxy::registering(
        &server,
        "side",
        ("shop", "1.1.2", &app.endpoint()),
        "2",
        &[],
    );
    let row = b.wait_text("#instances", &app.endpoint()).await;
    assert!(row.contains("v2") && row.contains("proxy side"), "{row}");
    b.screenshot("instances").await;
    sidecar.process.kill9();
    eventually(
        "the killed instance leaves the page",
        Duration::from_secs(15),
        || async {
            let text = b.text("#instances").await;
            (!text.contains(&app.endpoint())).then_some(()).ok_or(text)
        },
    )
    .await;
    b.close().await;
}

#[tokio::test]
async fn two_thousand_services_come_a_page_at_a_time_in_natural_order_and_a_search_finds_one() {
    let server = console_server();
    let mut c = server.admin().await;
    for i in 0..2000 {
        let mut s = grayline_routing::Service::single(
            &format!("svc{i}"),
            grayline_routing::Version::new("v1", &["127.0.0.1:9001"]),
        );
        s.hosts = vec![format!("svc{i}.example.com")];
        c.create_service(pb::CreateServiceRequest {
            dry_run: false,
            service: Some(crate::fixtures::pb_service(&s)),
        })
        .await
        .expect("create");
    }
    let b = Browser::start().await;
    let started = std::time::Instant::now();
    sign_in(&b, &server).await;
    let signed_in = std::time::Instant::now();
    b.wait_text("#services-count", "1–50 of 2000 services")
        .await;
    let first_screen = started.elapsed();
    let after_sign_in = signed_in.elapsed();
    // Past one page, a compact table.
    let shown = b.attrs(".service-row", "data-service").await;
    assert_eq!(shown.len(), 50);
    assert!(b.attrs(".service-card", "data-service").await.is_empty());
    assert_eq!(shown[..4], ["svc0", "svc1", "svc2", "svc3"], "{shown:?}");
    assert_eq!(shown[49], "svc49");
    b.click("#page-next").await;
    b.wait_text("#services-count", "51–100 of 2000").await;
    assert_eq!(b.attrs(".service-row", "data-service").await[0], "svc50");

    let typed = std::time::Instant::now();
    b.fill("#service-search", "svc1234").await;
    b.wait_text("#services-count", "1 service matching “svc1234”")
        .await;
    let search = typed.elapsed();
    assert_eq!(b.attrs(".service-row", "data-service").await, ["svc1234"]);
    b.fill("#service-search", "svc12").await;
    let text = b
        .wait_text("#services-count", "of 111 services matching")
        .await;
    assert!(text.contains("1–50"), "{text}");
    // Cards remain a choice.
    b.select("#services-layout", "cards").await;
    eventually("cards instead of rows", Duration::from_secs(5), || async {
        let cards = b.attrs(".service-card", "data-service").await;
        (cards.len() == 50 && cards[0] == "svc12")
            .then_some(())
            .ok_or(format!("{cards:?}"))
    })
    .await;
    b.select("#services-layout", "table").await;
    b.fill("#service-search", "nothing-like-it").await;
    b.wait_text("#services-count", "No service of 2000 matches")
        .await;
    b.screenshot("two-thousand-services").await;
    // Timed through WebDriver, so an upper bound; not asserted (docs/benchmarks.md).
    println!(
        "2000 services: sign-in to the first page {} ms (of which after the sign-in form {} ms); \
         typing a name to one row {} ms",
        first_screen.as_millis(),
        after_sign_in.as_millis(),
        search.as_millis()
    );
    b.close().await;
}

#[tokio::test]
async fn the_overview_filters_by_rollout_and_errors_and_sorts_by_traffic() {
    use grayline_routing::{Service, Version};
    let server = console_server();
    let v1 = Upstream::start("v1");
    let failing = Upstream::start_with("v2", &["--fail-rate", "0.5"]);
    let (proxy, load) = shop_with_traffic(&server, &v1).await;
    // `pay`: half its traffic to a version that fails half of it; `quiet`: no traffic, and
    // a rollout waiting for some.
    let mut pay = Service::single("pay", Version::new("v1", &[&v1.endpoint()]));
    pay.versions
        .push(Version::new("v2", &[&failing.endpoint()]));
    pay.hosts = vec!["pay.example.com".into()];
    pay.policy.default_route = Some(crate::fixtures::split(&[("v1", 5000), ("v2", 5000)], None));
    crate::fixtures::create(&server, &pay).await;
    let mut quiet = Service::single("quiet", Version::new("v1", &[&v1.endpoint()]));
    quiet.versions.push(Version::new("v2", &[&v1.endpoint()]));
    quiet.hosts = vec!["quiet.example.com".into()];
    let revision = crate::fixtures::create(&server, &quiet).await;
    let (status, body) = server
        .json()
        .post(
            "/rollouts",
            serde_json::json!({"plan": {"service": "quiet", "canary": "v2", "steps": [{"weight": 500}]}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    proxy.wait_revision(revision).await;
    let pay_load = grayline_tests::Load::start(
        &proxy.url("/"),
        &[("host", "pay.example.com")],
        2,
        Duration::from_millis(25),
    );
    let b = Browser::start().await;
    sign_in(&b, &server).await;
    b.wait_text("#services-count", "3 services").await;
    let cards = || b.attrs(".service-card", "data-service");
    assert_eq!(cards().await, ["pay", "quiet", "shop"]);
    b.click("#filter-rollout").await;
    b.wait_text("#services-count", "rollout running").await;
    assert_eq!(cards().await, ["quiet"]);
    b.click("#filter-rollout").await;
    b.click("#filter-errors").await;
    b.wait_text("#services-count", "errors above stable").await;
    eventually(
        "only pay fails more than its stable version",
        Duration::from_secs(20),
        || async {
            let shown = cards().await;
            (shown == ["pay"]).then_some(()).ok_or(format!("{shown:?}"))
        },
    )
    .await;
    b.click("#filter-errors").await;
    b.select("#services-order", "traffic").await;
    eventually(
        "the busiest first, the quiet one last",
        Duration::from_secs(20),
        || async {
            let shown = cards().await;
            (shown.len() == 3 && shown[2] == "quiet" && shown[0] == "shop")
                .then_some(())
                .ok_or(format!("{shown:?}"))
        },
    )
    .await;
    b.screenshot("overview-sorted-by-traffic").await;
    // The same in the compact table, sorted by its header.
    b.select("#services-layout", "table").await;
    b.click("#sort-name").await;
    let rows = || b.attrs(".service-row", "data-service");
    eventually("rows by name", Duration::from_secs(5), || async {
        let shown = rows().await;
        (shown == ["pay", "quiet", "shop"])
            .then_some(())
            .ok_or(format!("{shown:?}"))
    })
    .await;
    b.click("#sort-traffic").await;
    eventually(
        "rows by traffic, the busiest first",
        Duration::from_secs(20),
        || async {
            let shown = rows().await;
            (shown.len() == 3 && shown[2] == "quiet" && shown[0] == "shop")
                .then_some(())
                .ok_or(format!("{shown:?}"))
        },
    )
    .await;
    let quiet = b.text(".service-row[data-service=quiet]").await;
    assert!(quiet.contains("rollout"), "{quiet}");
    b.screenshot("overview-table").await;
    pay_load.stop().await;
    load.stop().await;
    b.close().await;
}

#[tokio::test]
async fn the_console_offers_only_what_the_signed_in_role_may_do() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::TempDir::new().unwrap();
    let tokens = root.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let (viewer, ci) = ("viewer-console-0123456789", "ci-console-0123456789abcd");
    for (name, text) in [
        ("dash", format!("token: {viewer}\nrole: viewer\n")),
        (
            "ci",
            format!("token: {ci}\nrole: operator\nservices: [shop]\n"),
        ),
    ] {
        let path = tokens.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let dir = console_dir().display().to_string();
    let tokens = tokens.display().to_string();
    let server = Server::start_with(&["--console-dir", &dir, "--tokens-dir", &tokens]);
    for (name, prefix) in [("shop", "/shop"), ("cart", "/cart")] {
        use grayline_routing::{Service, Version};
        let mut s = Service::single(name, Version::new("v1", &["127.0.0.1:9"]));
        s.versions.push(Version::new("v2", &["127.0.0.1:9"]));
        s.path_prefix = prefix.into();
        crate::fixtures::create(&server, &s).await;
    }
    let b = Browser::start().await;
    let shown = |css: &'static str| {
        let b = &b;
        async move { b.find(css).await.is_displayed().await.unwrap() }
    };
    let sign_in_as = |token: String| {
        let (b, server) = (&b, &server);
        async move {
            b.goto(&server.http_url("/services/shop")).await;
            b.fill("#signin-token", &token).await;
            b.click("#signin-submit").await;
            b.find("#sign-out").await;
        }
    };

    // A viewer sees everything and is offered no change.
    sign_in_as(viewer.to_string()).await;
    b.wait_text("#role", "viewer").await;
    b.wait_text("main", "Versions").await;
    assert!(
        !shown("#promote-v2").await,
        "a viewer is offered a promotion"
    );
    assert!(
        !shown(".weight-edit").await,
        "a viewer is offered the weights"
    );
    b.screenshot("role-viewer").await;
    b.click("#sign-out").await;

    // The pipeline's operator token: shop's promotion and weights, not cart's; no new
    // releases (they change services, an admin's job).
    sign_in_as(ci.to_string()).await;
    b.wait_text("#role", "operator of shop").await;
    b.wait_text("main", "Versions").await;
    assert!(shown("#promote-v2").await && shown(".weight-edit").await);
    b.goto(&server.http_url("/services/cart")).await;
    b.wait_text("main", "Versions").await;
    assert!(!shown("#promote-v2").await, "cart is not the pipeline's");
    b.goto(&server.http_url("/")).await;
    assert!(!shown("#new-release").await);
    b.click("#sign-out").await;

    // The admin token is offered everything.
    sign_in_as(server.admin_token.clone()).await;
    b.wait_text("#role", "admin").await;
    assert!(shown("#promote-v2").await);
    b.close().await;
}

#[tokio::test]
async fn a_metric_gate_is_tried_on_the_last_hour_in_the_wizard_and_rolls_the_canary_back() {
    let v1 = Upstream::start_with("v1", &["--conversion-rate", "0.3"]);
    let v2 = Upstream::start_with("v2", &["--conversion-rate", "0.1"]);
    let prometheus = grayline_tests::prometheus::Prometheus::start(&[v1.endpoint(), v2.endpoint()]);
    let dir = console_dir();
    let server = Server::start_with(&[
        "--console-dir",
        &dir.display().to_string(),
        "--prometheus-url",
        &prometheus.url(),
    ]);
    let (_proxy, load) = shop_with_traffic(&server, &v1).await;
    // v2 runs already (its counters are scraped) but takes no traffic until the rollout.
    prometheus.wait_for("grayline_demo_sessions_total", 2).await;
    let b = rollout_wizard(&server, &v2, "standard").await;
    gate_test_steps(&b).await;
    b.click("#wizard-rollout-add-metric").await;
    // A query without {{version}} is refused when tried, naming its field.
    b.fill(
        "#wizard-rollout-metric-0-query",
        "sum(grayline_demo_conversions_total)",
    )
    .await;
    b.click("#wizard-rollout-metric-0-test").await;
    b.wait_text(
        "#wizard-rollout-metric-0-preview-error",
        "plan.gates.metrics[0].query: has no {{version}}",
    )
    .await;
    b.fill(
        "#wizard-rollout-metric-0-query",
        r#"sum(increase(grayline_demo_conversions_total{version="{{version}}"}[{{interval}}]))"#,
    )
    .await;
    b.fill(
        "#wizard-rollout-metric-0-exposure",
        r#"sum(increase(grayline_demo_sessions_total{version="{{version}}"}[{{interval}}]))"#,
    )
    .await;
    b.fill("#wizard-rollout-metric-0-interval-seconds", "2")
        .await;
    b.click("#wizard-rollout-metric-0-test").await;
    let preview = b
        .wait_text("#wizard-rollout-metric-0-preview", "minutes with data")
        .await;
    println!("preview: {preview}");
    // v1 has served (and converted) for a while; v2 has not served yet.
    assert!(
        preview.contains("v1 3") || preview.contains("v1 2"),
        "{preview}"
    );
    assert!(
        preview.contains("grayline_demo_conversions_total{version=\"v2\"}[60s]"),
        "{preview}"
    );
    b.screenshot("metric-1-preview").await;
    b.click("#wizard-next").await;
    b.wait_text("#wizard-rollout-plain", "metric conversions (good events)")
        .await;
    b.click("#wizard-apply").await;
    b.wait_text("#rollout-title", "Rollout 1: v2 against v1")
        .await;
    b.wait_text(
        "#rollout-gate-metric-conversions",
        "good events per exposure",
    )
    .await;
    wait_long(&b, "#rollout-phase", "rolled back", 90).await;
    b.wait_text("#rollout-reason", "metric conversions: harm shown")
        .await;
    b.wait_text("#rollout-gate-metric-conversions", "harm shown")
        .await;
    b.screenshot("metric-2-rolled-back").await;
    load.stop().await;
    let (_, record) = server.json().get("/services/shop").await;
    assert_eq!(record["service"]["stable"], "v1");
    b.close().await;
}

#[tokio::test]
async fn an_event_gate_built_in_the_wizard_rolls_back_a_canary_that_converts_less() {
    use grayline_routing::{Event, Service, Version};
    let server = console_server();
    let v1 = Upstream::start_with("v1", &["--conversion-rate", "0.3"]);
    let v2 = Upstream::start_with("v2", &["--conversion-rate", "0.1"]);
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.events = vec![Event {
        name: "converted".into(),
        statuses: Vec::new(),
    }];
    let (_proxy, load) = crate::fixtures::serve_under_load(&server, &s).await;
    let b = rollout_wizard(&server, &v2, "standard").await;
    gate_test_steps(&b).await;
    // The service declares `converted`: the new gate takes it, as bad events at first.
    b.click("#wizard-rollout-add-event").await;
    b.wait_text("#wizard-rollout-event-0-event", "converted")
        .await;
    // A ratio that is no number is named at its field.
    b.fill("#wizard-rollout-event-0-tolerated-ratio", "soon")
        .await;
    b.click("#wizard-step-3").await;
    b.wait_text("#wizard-problems", "is not a number").await;
    b.click("#wizard-step-2").await;
    b.wait_text("#wizard-rollout-event-0-errors", "is not a number")
        .await;
    b.fill("#wizard-rollout-event-0-tolerated-ratio", "1.2")
        .await;
    b.fill("#wizard-rollout-event-0-min-difference", "1").await;
    b.select("#wizard-rollout-event-0-kind", "good_events")
        .await;
    // The last hour, from the proxy's counts: v1 converts about 30 % of its answers; v2 has
    // not served yet.
    b.click("#wizard-rollout-event-0-test").await;
    let preview = b
        .wait_text("#wizard-rollout-event-0-preview", "minutes with data")
        .await;
    println!("preview: {preview}");
    assert!(
        preview.contains("v1 3") || preview.contains("v1 2"),
        "{preview}"
    );
    assert!(
        preview.contains("`converted` per answer of v2"),
        "{preview}"
    );
    b.screenshot("event-1-gate").await;
    b.click("#wizard-next").await;
    b.wait_text(
        "#wizard-rollout-plain",
        "event converted at most 1.2× fewer per request than the baseline's or by at most 1.00 points",
    )
    .await;
    b.click("#wizard-apply").await;
    b.wait_text("#rollout-title", "Rollout 1: v2 against v1")
        .await;
    b.wait_text("#rollout-gate-event-converted", "converted")
        .await;
    b.wait_text("#rollout-together", "All gates together").await;
    wait_long(&b, "#rollout-phase", "rolled back", 90).await;
    b.wait_text("#rollout-reason", "event converted: harm shown")
        .await;
    b.screenshot("event-2-rolled-back").await;
    load.stop().await;
    let (_, record) = server.json().get("/services/shop").await;
    assert_eq!(record["service"]["stable"], "v1");
    b.close().await;
}
