//! The sample-ratio guard end to end: a rule that sends testers to the canary makes the
//! canary's share of new visitors larger than the split gives it; the guard pauses the
//! rollout before any gate decides, and once the testers are gone a resume starts it over
//! and the rollout goes on to its promotion.

use std::time::Duration;

use grayline_routing::{Condition, FieldMatch, MatchOp, Route, Rule, Service, Version};
use grayline_tests::cli::grayline;
use grayline_tests::{Load, Proxy, Server, Upstream, eventually};
use serde_json::{Value, json};

use crate::fixtures::*;

fn plan() -> Value {
    json!({
        "service": "shop",
        "canary": "v2",
        "warmup_seconds": 2,
        "steps": [
            {"weight": 1000, "min_seconds": 5, "min_requests": 20, "max_seconds": 30},
            {"weight": 5000, "min_seconds": 5, "min_requests": 20, "max_seconds": 30,
             "on_timeout": "promote"},
        ],
    })
}

async fn phase_of(server: &Server, id: u64) -> Value {
    server.json().get(&format!("/rollouts/{id}")).await.1
}

#[tokio::test]
async fn testers_routed_to_the_canary_trip_the_guard_and_a_resume_starts_it_over() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.versions.push(Version::new("v2", &[&v2.endpoint()]));
    // Testers (x-canary: 1) always get v2, before any split.
    s.policy.rules.push(Rule {
        name: "testers".into(),
        conditions: vec![Condition::Header(FieldMatch {
            name: "x-canary".into(),
            op: MatchOp::Exact("1".into()),
            negate: false,
        })],
        route: Route::Version("v2".into()),
        mirror: None,
    });
    let (proxy, everyone): (Proxy, Load) = serve_under_load(&server, &s).await;
    let every = Duration::from_millis(25);
    let testers = Load::start(&proxy.url("/"), &[("x-canary", "1")], 2, every);

    let view = start_rollout(&server, plan()).await;
    let id = view["rollout"]["id"].as_u64().unwrap();
    let started = &rollout_reasons(&view)[0];
    assert!(
        started.contains("beware: rule `testers` sends people to v2 outside the split"),
        "{started}"
    );
    let paused = eventually("paused by the guard", Duration::from_secs(60), || async {
        let v = phase_of(&server, id).await;
        match v["rollout"]["phase"]["state"].as_str() {
            Some("paused") => Ok(v),
            _ => Err(format!("{}; guard {}", v["rollout"]["phase"], v["guard"])),
        }
    })
    .await;
    let reason = paused["rollout"]["phase"]["reason"].as_str().unwrap();
    println!("{}", rollout_reasons(&paused).join("\n"));
    assert!(
        reason.starts_with("sample ratio: the canary got") && reason.contains("for 10 %"),
        "{reason}"
    );
    assert!(reason.contains("more than the split gives it"), "{reason}");
    // Nothing was decided on the numbers: still the first step, no gate acted.
    assert_eq!(paused["rollout"]["step"], 0);
    let guard = &paused["rollout"]["guard"];
    let share =
        guard["step"]["events"].as_f64().unwrap() / guard["step"]["requests"].as_f64().unwrap();
    assert!(share > 0.15, "{guard}");
    assert!(
        paused["guard"]["share"].as_f64().unwrap() > 0.15,
        "{}",
        paused["guard"]
    );
    // While the mismatch stands the gates judge nothing.
    let judged = paused["rollout"]["gates"][0]["canary"]["requests"].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = phase_of(&server, id).await;
    assert_eq!(still["rollout"]["gates"][0]["canary"]["requests"], judged);
    // Over gRPC too.
    let status = server
        .rollouts("ci")
        .await
        .get_rollout(grayline_proto::v1::GetRolloutRequest {
            id,
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let guard = status.sample_ratio.expect("the guard's status");
    assert!(guard.mismatch.starts_with("sample ratio"), "{guard:?}");
    assert!((guard.expected - 0.1).abs() < 1e-9, "{guard:?}");
    // And on the command line.
    let dir = tempfile::TempDir::new().unwrap();
    let out = grayline(&server, dir.path(), &["rollout", "status", "shop"])
        .await
        .expect(0)
        .stdout;
    assert!(out.contains("sample ratio: MISMATCH: canary"), "{out}");

    // The testers go; a resume starts the guard over and the rollout goes on.
    testers.stop().await;
    let (status, _) = server
        .json()
        .post(&format!("/rollouts/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200);
    let done = eventually("promoted", Duration::from_secs(120), || async {
        let v = phase_of(&server, id).await;
        match v["rollout"]["phase"]["state"].as_str() {
            Some("promoted") => Ok(v),
            _ => Err(format!(
                "{}; {:?}; guard {}",
                v["rollout"]["phase"],
                rollout_reasons(&v).last(),
                v["guard"]
            )),
        }
    })
    .await;
    everyone.stop().await;
    let story = rollout_reasons(&done);
    println!("{}", story.join("\n"));
    assert_eq!(
        story
            .iter()
            .filter(|r| r.starts_with("sample ratio"))
            .count(),
        1,
        "{story:?}"
    );
    let guard = &done["rollout"]["guard"];
    assert!(
        guard["total"]["requests"].as_u64().unwrap() > 100,
        "{guard}"
    );
}
