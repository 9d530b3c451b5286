//! The proxy and the console's simulator classify every User-Agent alike: the whole uap-core
//! corpus, as sent and with bytes that are not UTF-8 slipped in, goes through the proxy's
//! view of a request (`HttpFacts` over the raw header) and the simulator's (`RequestFacts`
//! holding the text a browser or JSON would carry: the lossy decoding), and both must see
//! the same OS, browser and versions, and take the same rule.
//!
//! The corpus is read from `shared/corpora/uap-core/` beside the repository.

use std::path::PathBuf;

use grayline_dataplane::proxy::facts::HttpFacts;
use grayline_routing::useragent::{Browser, Os, classify};
use grayline_routing::*;
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;

#[derive(Deserialize)]
struct Corpus {
    test_cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    user_agent_string: String,
}

fn corpus() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/uap-core");
    ["test_ua.yaml", "test_os.yaml"]
        .iter()
        .flat_map(|file| {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "uap-core's test corpus is expected at {} ({e}), beside the repository",
                    path.display()
                )
            });
            serde_norway::from_str::<Corpus>(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .test_cases
        })
        .map(|c| c.user_agent_string)
        .collect()
}

/// One rule per (OS, browser) pair, so the rule taken shows what the engine read.
fn service() -> CompiledService {
    let family = |f: &str| FamilyMatch {
        family: f.into(),
        min_version: String::new(),
        max_version: String::new(),
        negate: false,
    };
    let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:9001"]));
    s.versions.push(Version::new("v2", &["127.0.0.1:9002"]));
    for os in Os::ALL {
        for browser in Browser::ALL {
            s.policy.rules.push(Rule {
                name: String::new(),
                conditions: vec![
                    Condition::Os(family(os.name())),
                    Condition::Browser(family(browser.name())),
                ],
                route: Route::Version("v2".into()),
                mirror: None,
            });
        }
    }
    CompiledService::compile(&s).expect("valid")
}

/// The corpus's User-Agents, and each with a byte sequence that is not UTF-8 (or is, but
/// not ASCII) slipped in before every delimiter and at both ends.
fn variants(ua: &str) -> Vec<Vec<u8>> {
    const JUNK: [&[u8]; 5] = [
        b"\xe9",
        b"\xff\xfe",
        b"\xc3",
        b"\xf0\x9f\x98",
        "é".as_bytes(),
    ];
    let bytes = ua.as_bytes();
    let mut out = vec![bytes.to_vec()];
    let cuts = (0..=bytes.len()).filter(|&i| {
        i == 0 || i == bytes.len() || matches!(bytes[i], b'/' | b'(' | b')' | b';' | b' ')
    });
    for (n, at) in cuts.enumerate() {
        let mut v = bytes.to_vec();
        v.splice(at..at, JUNK[n % JUNK.len()].iter().copied());
        out.push(v);
    }
    out
}

#[test]
fn the_proxy_and_the_simulator_agree_on_the_whole_corpus() {
    let service = service();
    let (mut checked, mut not_utf8) = (0, 0);
    let mut disagreements = Vec::new();
    for ua in corpus() {
        for raw in variants(&ua) {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_bytes(&raw).expect("a valid header value");
            headers.insert(http::header::USER_AGENT, value);
            let proxy = HttpFacts::new(&headers, None, None);
            let text = String::from_utf8_lossy(&raw).into_owned();
            not_utf8 += usize::from(std::str::from_utf8(&raw).is_err());
            let simulator = RequestFacts::default().with_user_agent(&text);

            let seen_by_proxy = classify(proxy.user_agent().unwrap_or_default());
            let seen_by_simulator = classify(&simulator.user_agent);
            let rule = |r: &dyn Request| service.decide(r, 0).matched;
            let (p, s) = (rule(&proxy), rule(&simulator));
            if seen_by_proxy != seen_by_simulator || p != s {
                disagreements.push(format!(
                    "{:?}: proxy {seen_by_proxy:?} {p:?}, simulator {seen_by_simulator:?} {s:?}",
                    String::from_utf8_lossy(&raw)
                ));
            }
            checked += 1;
        }
    }
    println!("{checked} User-Agents, {not_utf8} of them not UTF-8, classified alike");
    assert!(
        checked > 20_000 && not_utf8 > 10_000,
        "{checked} {not_utf8}"
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements[..disagreements.len().min(20)].join("\n")
    );
}
