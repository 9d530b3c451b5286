//! Nanoseconds per routing decision, as the proxy makes it: over a real `http::HeaderMap`,
//! including the host lookup and (for scenario c) User-Agent classification.
//!
//! (a) one version, no rules; (b) a 10 % canary by weight, sticky by cookie; (c) six rules
//! (header, cookie, query, OS, browser, source IP) in front of a sticky weighted split, over
//! a mix of real User-Agents that mostly match none of the rules, so every rule is tried.
//!
//! `cargo bench -p grayline-dataplane --bench decision`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use grayline_dataplane::proxy::facts::HttpFacts;
use grayline_routing::useragent::samples::SAMPLES;
use grayline_routing::*;
use http::HeaderMap;

fn versions() -> Service {
    let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:9001"]));
    s.versions.push(Version::new("v2", &["127.0.0.1:9002"]));
    s.hosts = vec!["shop.example.com".into()];
    s
}

fn canary_split() -> Route {
    Route::Split(Split {
        weights: vec![
            Weight {
                version: "v1".into(),
                weight: 9000,
            },
            Weight {
                version: "v2".into(),
                weight: 1000,
            },
        ],
        sticky: Some(StickyKey::Cookie("uid".into())),
    })
}

fn six_rules() -> Vec<Rule> {
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
    [
        Condition::Header(field("x-canary", MatchOp::Exact("1".into()))),
        Condition::Cookie(field("beta", MatchOp::Regex("^(yes|on)$".into()))),
        Condition::Query(field(
            "preview",
            MatchOp::OneOf(vec!["true".into(), "1".into()]),
        )),
        Condition::Os(family("harmonyos", "4")),
        Condition::Browser(family("wechat", "8")),
        Condition::SourceIp(CidrMatch {
            cidrs: vec!["10.20.0.0/16".into()],
            negate: false,
        }),
    ]
    .into_iter()
    .map(|c| Rule {
        name: String::new(),
        conditions: vec![c],
        route: Route::Version("v2".into()),
        mirror: None,
    })
    .collect()
}

fn request(ua: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", "shop.example.com".parse().unwrap());
    h.insert("user-agent", ua.parse().unwrap());
    h.insert("accept", "text/html,application/xhtml+xml".parse().unwrap());
    h.insert("accept-language", "en-US,en;q=0.9".parse().unwrap());
    h.insert(
        "cookie",
        "session=8f2a61c1; uid=user-4711; theme=dark"
            .parse()
            .unwrap(),
    );
    // The rest of what a browser sends, so lookups search a realistic header list.
    for (name, value) in [
        ("accept-encoding", "gzip, deflate, br"),
        ("cache-control", "max-age=0"),
        ("referer", "https://shop.example.com/products"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("upgrade-insecure-requests", "1"),
    ] {
        h.insert(name, value.parse().unwrap());
    }
    h
}

fn bench(c: &mut Criterion) {
    let ip: IpAddr = "192.168.1.10".parse().unwrap();
    let mut group = c.benchmark_group("decision");

    let mut scenarios: Vec<(&str, Service)> = Vec::new();
    scenarios.push((
        "a_pass_through",
        Service::single("shop", Version::new("v1", &["127.0.0.1:9001"])),
    ));
    scenarios[0].1.hosts = vec!["shop.example.com".into()];
    let mut b = versions();
    b.policy.default_route = Some(canary_split());
    scenarios.push(("b_sticky_canary", b));
    let mut c6 = versions();
    c6.policy.rules = six_rules();
    c6.policy.default_route = Some(canary_split());
    scenarios.push(("c_six_rules", c6));

    let agents: Vec<HeaderMap> = SAMPLES
        .iter()
        .filter(|s| !s.0.is_empty())
        .map(|s| request(s.0))
        .collect();
    for (name, service) in scenarios {
        let catalog = Catalog::compile(&[service]).expect("valid");
        let mut i = 0usize;
        let mut random = 0u64;
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                i = (i + 1) % agents.len();
                random = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let headers = &agents[i];
                let host = headers
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let service = catalog.find(host, "/products/42").expect("service");
                let facts = HttpFacts::new(headers, Some("page=2&sort=price"), Some(ip));
                black_box(service.decide(&facts, random).version)
            })
        });
    }
    let mut k = 0usize;
    group.bench_function("user_agent_classify", |bencher| {
        bencher.iter(|| {
            k = (k + 1) % SAMPLES.len();
            black_box(grayline_routing::useragent::classify(black_box(
                SAMPLES[k].0,
            )))
        })
    });
    let headers = request(SAMPLES[0].0);
    group.bench_function("header_lookup", |bencher| {
        bencher.iter(|| black_box(headers.get(black_box("user-agent")).is_some()))
    });
    let facts = HttpFacts::new(&headers, Some("page=2&sort=price"), Some(ip));
    group.bench_function("cookie_lookup", |b| {
        b.iter(|| black_box(grayline_routing::Request::cookie(&facts, black_box("beta"))))
    });
    group.bench_function("query_lookup", |b| {
        b.iter(|| {
            black_box(grayline_routing::Request::query(&facts, black_box("preview")).is_some())
        })
    });
    group.bench_function("custom_header_lookup", |b| {
        b.iter(|| {
            black_box(grayline_routing::Request::header(
                &facts,
                black_box("x-canary"),
            ))
        })
    });
    let ua = SAMPLES[3].0;
    group.bench_function("ua_cached", |b| {
        b.iter(|| black_box(grayline_routing::useragent::classify_cached(black_box(ua))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
