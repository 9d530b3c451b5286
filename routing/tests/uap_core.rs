//! Agreement of the User-Agent classifier with uap-core's test corpus, family by family.
//!
//! uap-core (Apache-2.0) names far more families than policies can; the tables below map
//! each of its families that corresponds to a Grayline family, and the families Grayline
//! must *not* claim (a Windows Phone is not `windows`) to `other`. Families left out are not
//! counted: bots, apps and libraries uap-core names by product, whose engine Grayline
//! reports instead. docs/policy.md states the same mapping.
//!
//! The corpus is read from `shared/corpora/uap-core/` beside the repository.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use grayline_routing::useragent::{Browser, Os, classify};
use serde::Deserialize;

/// The share of a family's cases on which Grayline must agree with uap-core.
const BAR: f64 = 0.98;

/// uap-core browser family → Grayline browser family.
const BROWSERS: &[(&str, Browser)] = &[
    ("Chrome", Browser::Chrome),
    ("Chrome Mobile", Browser::Chrome),
    ("Chrome Mobile iOS", Browser::Chrome),
    ("Chrome Mobile WebView", Browser::Chrome),
    ("Chromium", Browser::Chrome),
    ("HeadlessChrome", Browser::Chrome),
    ("Firefox", Browser::Firefox),
    ("Firefox Mobile", Browser::Firefox),
    ("Firefox iOS", Browser::Firefox),
    ("Firefox Beta", Browser::Firefox),
    ("Safari", Browser::Safari),
    ("Mobile Safari", Browser::Safari),
    ("Mobile Safari UI/WKWebView", Browser::Safari),
    ("Edge", Browser::Edge),
    ("Edge Mobile", Browser::Edge),
    ("Opera", Browser::Opera),
    ("Opera Mobile", Browser::Opera),
    ("Opera Mini", Browser::Opera),
    ("Opera Tablet", Browser::Opera),
    ("Opera Touch", Browser::Opera),
    ("Opera GX", Browser::Opera),
    ("Opera Coast", Browser::Opera),
    ("Samsung Internet", Browser::SamsungInternet),
    ("WeChat Browser", Browser::Wechat),
    ("UC Browser", Browser::Uc),
    ("Huawei Browser", Browser::HuaweiBrowser),
    ("Yandex Browser", Browser::Yandex),
    ("QQ Browser", Browser::QqBrowser),
    ("QQ Browser Mobile", Browser::QqBrowser),
    ("QQ Browser Mini", Browser::QqBrowser),
    ("Baidu Browser", Browser::Baidu),
    ("Baidu Explorer", Browser::Baidu),
    // Browsers Grayline has no family for, which must not pass for the one they resemble.
    ("Android", Browser::Other),
    ("Amazon Silk", Browser::Other),
    ("Kindle", Browser::Other),
    ("IE", Browser::Other),
    ("IE Mobile", Browser::Other),
    ("Other", Browser::Other),
];

/// uap-core OS family → Grayline OS family. uap-core's `iOS` covers iPhones and iPads;
/// Grayline's `ios` and `ipados` together are measured against it.
const OSES: &[(&str, Os)] = &[
    ("iOS", Os::Ios),
    ("Mac OS X", Os::Macos),
    // The classic Mac OS, which uap-core names for the PowerPC Macs' `Mac_PowerPC` (Mac OS 8
    // to 9 or X): Grayline's `macos` is every Mac system, as `windows` counts Windows 95.
    ("Mac OS", Os::Macos),
    ("Android", Os::Android),
    ("Windows", Os::Windows),
    ("Linux", Os::Linux),
    ("Ubuntu", Os::Linux),
    ("Debian", Os::Linux),
    ("Gentoo", Os::Linux),
    ("Red Hat", Os::Linux),
    ("Mandriva", Os::Linux),
    ("Chrome OS", Os::Chromeos),
    ("HarmonyOS", Os::Harmonyos),
    ("tvOS", Os::Tvos),
    ("ATV OS X", Os::Tvos),
    // Systems Grayline has no family for, which must not pass for the one they resemble.
    ("Other", Os::Other),
    ("Windows Phone", Os::Other),
    ("Windows Mobile", Os::Other),
    ("Firefox OS", Os::Other),
    ("KaiOS", Os::Other),
    ("BlackBerry OS", Os::Other),
    ("BlackBerry Tablet OS", Os::Other),
    ("Symbian OS", Os::Other),
    ("Symbian^3", Os::Other),
    ("Symbian^3 Anna", Os::Other),
    ("Symbian^3 Belle", Os::Other),
    ("Nokia Series 40", Os::Other),
    ("Nokia Series 30 Plus", Os::Other),
    ("MeeGo", Os::Other),
    ("Maemo", Os::Other),
    ("Sailfish", Os::Other),
    ("Bada", Os::Other),
    ("BREW", Os::Other),
    ("Brew MP", Os::Other),
    ("webOS", Os::Other),
    ("Web0S", Os::Other),
    ("Tizen", Os::Other),
    ("FreeBSD", Os::Other),
    ("OpenBSD", Os::Other),
    ("NetBSD", Os::Other),
    ("BSD", Os::Other),
    ("Solaris", Os::Other),
    ("WatchOS", Os::Other),
    ("Roku", Os::Other),
    ("Kindle", Os::Other),
    ("WebTV", Os::Other),
];

#[derive(Deserialize)]
struct Corpus {
    test_cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    user_agent_string: String,
    family: String,
    major: Option<String>,
}

fn corpus(file: &str) -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/uap-core");
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "uap-core's test corpus is expected at {} ({e}); it is the public repository \
             ua-parser/uap-core's {file}, kept in shared/corpora/uap-core/ beside this repository",
            path.display()
        )
    });
    serde_norway::from_str::<Corpus>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .test_cases
}

/// Per Grayline family: cases, agreements, agreements on the major version too, and the
/// first few disagreements.
#[derive(Default)]
struct Tally {
    cases: usize,
    agreed: usize,
    major_known: usize,
    major_agreed: usize,
    misses: Vec<String>,
}

/// Tallies `cases` by the Grayline family uap-core's family maps to, and returns the report
/// and the families under the bar.
fn measure<F: Copy + std::fmt::Display>(
    what: &str,
    cases: &[Case],
    mapping: &[(&str, F)],
    same: impl Fn(F, F) -> bool,
    read: impl Fn(&str) -> (F, Option<u32>),
) -> (String, Vec<String>) {
    let map: BTreeMap<&str, F> = mapping.iter().copied().collect();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    // What Grayline calls the cases uap-core names by a family left out of the mapping.
    let mut unmapped: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut counted = 0;
    for case in cases {
        let Some(&want) = map.get(case.family.as_str()) else {
            let (got, _) = read(&case.user_agent_string);
            *unmapped
                .entry(got.to_string())
                .or_default()
                .entry(case.family.as_str())
                .or_default() += 1;
            continue;
        };
        counted += 1;
        let (got, major) = read(&case.user_agent_string);
        let t = tallies.entry(want.to_string()).or_default();
        t.cases += 1;
        if same(want, got) {
            t.agreed += 1;
            let expected = case.major.as_deref().and_then(|m| m.parse::<u32>().ok());
            if expected.is_some() {
                t.major_known += 1;
                t.major_agreed += usize::from(major == expected);
            }
        } else if t.misses.len() < 12 {
            t.misses.push(format!(
                "    {:?} [{}] is {got}",
                case.user_agent_string, case.family
            ));
        }
    }
    let agreed: usize = tallies.values().map(|t| t.agreed).sum();
    let mut report = format!(
        "{what}: {counted} of {} cases mapped, {:.1} % agreement\n",
        cases.len(),
        100.0 * agreed as f64 / counted as f64
    );
    let mut under = Vec::new();
    for (family, t) in &tallies {
        let share = t.agreed as f64 / t.cases as f64;
        let _ = write!(
            report,
            "  {family:<17} {:>6.1} % of {:>3}",
            100.0 * share,
            t.cases
        );
        if family != "other" && t.major_known > 0 {
            let _ = write!(
                report,
                "   (and the major version on {:.1} % of {})",
                100.0 * t.major_agreed as f64 / t.major_known as f64,
                t.major_known,
            );
        }
        report.push('\n');
        for miss in &t.misses {
            let _ = writeln!(report, "{miss}");
        }
        if share < BAR {
            under.push(format!("{what} {family}: {:.1} %", 100.0 * share));
        }
    }
    let _ = writeln!(
        report,
        "  cases of families left out of the mapping, as Grayline calls them:"
    );
    for (family, names) in &unmapped {
        let mut names: Vec<_> = names.iter().collect();
        names.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = names
            .iter()
            .take(5)
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        let total: usize = names.iter().map(|(_, c)| **c).sum();
        let _ = writeln!(
            report,
            "    {family:<17} {total:>4}  ({}, …)",
            top.join(", ")
        );
    }
    (report, under)
}

fn major(v: &grayline_routing::version_number::VersionNumber) -> Option<u32> {
    v.components().first().copied()
}

#[test]
fn agrees_with_uap_core_on_every_mapped_family() {
    let (browsers, mut under) = measure(
        "browser",
        &corpus("test_ua.yaml"),
        BROWSERS,
        |want, got| want == got,
        |ua| {
            let c = classify(ua);
            (c.browser, major(&c.browser_version))
        },
    );
    let (oses, under_os) = measure(
        "os",
        &corpus("test_os.yaml"),
        OSES,
        // uap-core does not tell iPadOS from iOS.
        |want, got| want == got || (want == Os::Ios && got == Os::Ipados),
        |ua| {
            let c = classify(ua);
            (c.os, major(&c.os_version))
        },
    );
    under.extend(under_os);
    println!("{browsers}{oses}");
    assert!(
        under.is_empty(),
        "under {:.0} %: {}\n{browsers}{oses}",
        100.0 * BAR,
        under.join(", ")
    );
}
