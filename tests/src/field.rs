//! Automated rollouts in the field: a real server and proxy, two real upstreams per service
//! whose faults are set as the case says, sticky-cookie traffic with a new user id on every
//! request, and many services rolling out at once. Shared outages hit both upstreams of a
//! service together. What each rollout did is read back from the server's API.
//!
//! The end-to-end test runs it compressed (`e2e/field.rs`); `bench/field-rollouts` runs it at
//! the field's own traffic and step lengths (the `grayline-field` binary).

use std::time::{Duration, Instant};

use grayline_routing::{Service, Version};
use serde_json::{Value, json};

use crate::{Proxy, Server, Upstream, eventually};

/// What a case's canary should come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// As good as the baseline: a rollback is a false rollback.
    Healthy,
    /// Worse than the plan tolerates: a promotion is a wrong promotion.
    Regression,
}

/// Both versions of a service also fail `error_rate` of their requests for `seconds`, from
/// `start` seconds after the rollouts start.
#[derive(Clone, Copy, Debug)]
pub struct SharedOutage {
    pub start: u64,
    pub seconds: u64,
    pub error_rate: f64,
}

/// One service rolling out.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub expect: Expect,
    pub requests_per_second: f64,
    pub baseline_errors: f64,
    pub canary_errors: f64,
    /// Added to every canary answer.
    pub canary_delay_ms: u64,
    pub outage: Option<SharedOutage>,
    /// The rollout plan, without `service` and `canary`.
    pub plan: Value,
}

impl Case {
    /// A healthy canary: both versions at `errors`.
    pub fn healthy(name: &str, requests_per_second: f64, errors: f64, plan: Value) -> Case {
        Case {
            name: name.to_string(),
            expect: Expect::Healthy,
            requests_per_second,
            baseline_errors: errors,
            canary_errors: errors,
            canary_delay_ms: 0,
            outage: None,
            plan,
        }
    }

    /// A canary that fails `canary` of its requests against the baseline's `baseline`.
    pub fn errors(name: &str, rps: f64, baseline: f64, canary: f64, plan: Value) -> Case {
        Case {
            expect: Expect::Regression,
            canary_errors: canary,
            ..Case::healthy(name, rps, baseline, plan)
        }
    }

    /// A canary `delay_ms` slower on every request.
    pub fn slower(name: &str, rps: f64, errors: f64, delay_ms: u64, plan: Value) -> Case {
        Case {
            expect: Expect::Regression,
            canary_delay_ms: delay_ms,
            ..Case::healthy(name, rps, errors, plan)
        }
    }
}

/// How one case's rollout ended (or stood at the deadline).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub case: String,
    pub expect: Expect,
    /// promoted, rolled_back, paused, running, …
    pub phase: String,
    /// evidence, time_limit, person; empty unless promoted.
    pub promotion: String,
    /// Seconds the rollout judged.
    pub seconds: u64,
    /// Canary requests judged (answered by the canary) until it ended.
    pub canary_requests: u64,
    /// Requests of either version the proxies answered with a fallback.
    pub fallbacks: u64,
    pub reason: String,
}

impl Outcome {
    pub fn rolled_back(&self) -> bool {
        self.phase == "rolled_back"
    }

    pub fn promoted(&self) -> bool {
        self.phase == "promoted"
    }

    /// A healthy canary rolled back.
    pub fn false_rollback(&self) -> bool {
        self.expect == Expect::Healthy && self.rolled_back()
    }

    /// A regression promoted.
    pub fn wrong_promotion(&self) -> bool {
        self.expect == Expect::Regression && self.promoted()
    }
}

/// Runs every case at once until each rollout has ended or paused, or `deadline` passes.
/// `seed` picks the user ids.
pub async fn run(cases: &[Case], seed: u64, deadline: Duration) -> Vec<Outcome> {
    let began = Instant::now();
    let server = Server::start();
    let mut upstreams = Vec::new();
    let mut last_revision = 0;
    for case in cases {
        let rate = |r: f64| format!("{r}");
        let v1 = Upstream::start_with("v1", &["--fail-rate", &rate(case.baseline_errors)]);
        let v2 = Upstream::start_with(
            "v2",
            &[
                "--fail-rate",
                &rate(case.canary_errors),
                "--delay-ms",
                &case.canary_delay_ms.to_string(),
            ],
        );
        let mut s = Service::single(&case.name, Version::new("v1", &[&v1.endpoint()]));
        s.versions.push(Version::new("v2", &[&v2.endpoint()]));
        s.hosts = vec![host(case)];
        let (status, body) = server
            .json()
            .post("/services", json!({ "service": s }))
            .await;
        assert_eq!(status, 201, "{body}");
        last_revision = body["revision"].as_u64().expect("revision");
        upstreams.push((v1, v2));
    }
    let proxy = Proxy::start(&server, "field", &[]);
    proxy.wait_revision(last_revision).await;
    let traffic: Vec<Sender> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| Sender::start(&proxy, c, seed.wrapping_add(i as u64)))
        .collect();
    // A baseline's latency gate freezes from its recent traffic: let it flow first.
    let api = server.json();
    eventually("traffic counted", Duration::from_secs(60), || async {
        let (_, stats) = api.get("/stats?window=600").await;
        let counted = stats["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["proxy_id"] == "" && s["totals"]["requests"].as_u64() >= Some(100))
            .count();
        (counted >= cases.len())
            .then_some(())
            .ok_or(format!("{counted} of {} baselines", cases.len()))
    })
    .await;

    let mut ids = Vec::new();
    for case in cases {
        let mut plan = case.plan.clone();
        plan["service"] = json!(case.name);
        plan["canary"] = json!("v2");
        let (status, view) = server
            .json()
            .as_actor("field")
            .post("/rollouts", json!({ "plan": plan }))
            .await;
        assert_eq!(status, 201, "{}: {view}", case.name);
        ids.push(view["rollout"]["id"].as_u64().expect("id"));
    }
    let started = Instant::now();
    println!(
        "{} rollouts started {:.0?} after the start of the run",
        ids.len(),
        began.elapsed()
    );
    let outages: Vec<_> = cases
        .iter()
        .zip(&upstreams)
        .filter_map(|(case, (v1, v2))| {
            let o = case.outage?;
            let (a, b) = (v1.control_url(), v2.control_url());
            let (base, canary) = (case.baseline_errors, case.canary_errors);
            Some(tokio::spawn(async move {
                let at = |s: u64| started + Duration::from_secs(s);
                tokio::time::sleep_until(at(o.start).into()).await;
                let with = |r: f64| 1.0 - (1.0 - r) * (1.0 - o.error_rate);
                set_fail_rate(&a, with(base)).await;
                set_fail_rate(&b, with(canary)).await;
                tokio::time::sleep_until(at(o.start + o.seconds).into()).await;
                set_fail_rate(&a, base).await;
                set_fail_rate(&b, canary).await;
            }))
        })
        .collect();

    let mut views: Vec<Value> = vec![Value::Null; ids.len()];
    loop {
        let mut open = 0;
        for (i, id) in ids.iter().enumerate() {
            let (status, view) = api.get(&format!("/rollouts/{id}")).await;
            assert_eq!(status, 200, "{view}");
            let state = view["rollout"]["phase"]["state"].as_str().unwrap_or("");
            if !matches!(state, "promoted" | "rolled_back" | "aborted" | "paused") {
                open += 1;
            }
            views[i] = view;
        }
        if open == 0 || started.elapsed() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for o in outages {
        o.abort();
    }
    for t in traffic {
        t.stop().await;
    }
    cases
        .iter()
        .zip(views)
        .map(|(case, view)| {
            let r = &view["rollout"];
            Outcome {
                case: case.name.clone(),
                expect: case.expect,
                phase: r["phase"]["state"].as_str().unwrap_or("").to_string(),
                promotion: r["promotion"].as_str().unwrap_or("").to_string(),
                seconds: r["observed_seconds"].as_u64().unwrap_or(0),
                canary_requests: r["gates"][0]["canary"]["requests"].as_u64().unwrap_or(0),
                fallbacks: r["canary_fallbacks"].as_u64().unwrap_or(0)
                    + r["baseline_fallbacks"].as_u64().unwrap_or(0),
                // Why it stopped where it did; else what happened last.
                reason: r["phase"]["reason"]
                    .as_str()
                    .or_else(|| {
                        r["transitions"]
                            .as_array()
                            .and_then(|t| t.last())
                            .and_then(|t| t["reason"].as_str())
                    })
                    .unwrap_or("")
                    .to_string(),
            }
        })
        .collect()
}

/// The outcomes as a table, then the counts the docs quote.
pub fn report(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "case                              expect      outcome                 seconds  canary requests  fallbacks\n",
    );
    for o in outcomes {
        let outcome = match (o.phase.as_str(), o.promotion.as_str()) {
            ("promoted", "evidence") => "promoted on evidence".to_string(),
            ("promoted", _) => "promoted without safety".to_string(),
            (phase, _) => phase.replace('_', " "),
        };
        out.push_str(&format!(
            "{:<33} {:<11} {:<23} {:>7}  {:>15}  {:>9}\n",
            o.case,
            match o.expect {
                Expect::Healthy => "healthy",
                Expect::Regression => "regression",
            },
            outcome,
            o.seconds,
            o.canary_requests,
            o.fallbacks
        ));
    }
    // Why the undecided ones stopped where they did, and why a healthy one was rolled back.
    for o in outcomes
        .iter()
        .filter(|o| o.phase == "paused" || o.false_rollback())
    {
        let why: String = o.reason.chars().take(400).collect();
        out.push_str(&format!(
            "  {} {}: {why}\n",
            o.case,
            o.phase.replace('_', " ")
        ));
    }
    let healthy = outcomes.iter().filter(|o| o.expect == Expect::Healthy);
    let bad = outcomes.iter().filter(|o| o.expect == Expect::Regression);
    let count = |it: &mut dyn Iterator<Item = &Outcome>, f: fn(&Outcome) -> bool| {
        it.filter(|o| f(o)).count()
    };
    out.push_str(&format!(
        "false rollbacks: {} of {} healthy; earned promotions: {}; wrong promotions: {} of {} regressions; caught: {}\n",
        count(&mut healthy.clone(), Outcome::false_rollback),
        healthy.clone().count(),
        count(&mut healthy.clone(), |o| o.promoted() && o.promotion == "evidence"),
        count(&mut bad.clone(), Outcome::wrong_promotion),
        bad.clone().count(),
        count(&mut bad.clone(), Outcome::rolled_back),
    ));
    out
}

fn host(case: &Case) -> String {
    format!("{}.field", case.name)
}

async fn set_fail_rate(control: &str, rate: f64) {
    let url = format!("{control}/faults?fail_rate={rate}");
    match reqwest::get(&url).await {
        Ok(r) if r.status().is_success() => {}
        other => panic!("{url}: {other:?}"),
    }
}

/// One service's traffic: requests at a steady rate, each from a new user (a random
/// `grayline-user` cookie, so the rollout's sticky split sends each by its own bucket).
struct Sender {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    fn start(proxy: &Proxy, case: &Case, seed: u64) -> Sender {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let url = proxy.url("/");
        let host = host(case);
        let every = Duration::from_secs_f64(1.0 / case.requests_per_second.max(0.1));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let task = tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut in_flight = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let user = format!("{:016x}", rng.u64(..));
                let req = client
                    .get(&url)
                    .header("host", &host)
                    .header("cookie", format!("grayline-user={user}"));
                in_flight.spawn(async move {
                    if let Ok(r) = req.send().await {
                        let _ = r.bytes().await;
                    }
                });
                while in_flight.try_join_next().is_some() {}
            }
            in_flight.shutdown().await;
        });
        Sender { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
