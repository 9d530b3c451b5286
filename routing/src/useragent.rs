//! User-Agent classification into the OS and browser families that policies route on.
//!
//! No allocation and no regex. The platform comes from the parenthesised comments
//! (`(Linux; Android 14; Pixel 8)`, [`platform`]); the browser from the `Name/version`
//! product tokens ([`product`]), where vendor and in-app browsers (WeChat, UC, Huawei,
//! Samsung) append their own token to a Chrome or Safari User-Agent, so the most specific
//! token wins. Only User-Agents that pass neither test get a slower second look at their
//! plain words ([`word`]): `MSIE 8.0`, `UCWEB7.0`, `Wget/1.18 (linux-gnu)`. Names are
//! compared without regard to case, as some apps and proxies lowercase the whole header.
//!
//! Classification reads bytes and only ASCII bytes carry meaning; any other byte is opaque.
//! So a header that is not UTF-8 classifies exactly like its lossy UTF-8 decoding (every
//! invalid sequence becoming U+FFFD): the proxy, which sees raw header bytes, and the
//! console's simulator, which sees text, cannot disagree.
//!
//! General-purpose User-Agent crates do not know HarmonyOS, WeChat, UC or Huawei Browser, and
//! a decision has a budget of a few hundred nanoseconds, hence this focused classifier. Its
//! agreement with uap-core's corpus is measured by `tests/uap_core.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::version_number::VersionNumber;

mod platform;
mod product;
pub mod samples;
mod word;

/// Operating-system families.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Os {
    Android,
    Ios,
    /// iPads in mobile mode. An iPad in desktop mode (the default since iPadOS 13) sends a
    /// macOS User-Agent and is classified as macOS.
    Ipados,
    Windows,
    Macos,
    Linux,
    Harmonyos,
    Chromeos,
    /// Apple TV. Its apps and media player name it (`AppleTV11,1`, `Apple TV`, `tvOS 17.2`)
    /// beside iOS's `CPU OS 17_2`; Apple's other systems without a browser (watchOS) are
    /// `other`.
    Tvos,
    #[default]
    Other,
}

/// Browser families, including in-app browsers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Browser {
    Chrome,
    Firefox,
    Safari,
    Edge,
    Opera,
    SamsungInternet,
    Wechat,
    Uc,
    HuaweiBrowser,
    Yandex,
    QqBrowser,
    /// The Baidu app's browser and the (discontinued) Baidu Browser.
    Baidu,
    #[default]
    Other,
}

macro_rules! named_families {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every family a policy may name (not `other`).
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            /// The name used in policies and the API.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                    $ty::Other => "other",
                }
            }

            pub fn from_name(name: &str) -> Option<$ty> {
                match name {
                    $($name => Some($ty::$variant),)*
                    _ => None,
                }
            }

            /// The list of valid names, for error messages.
            pub fn names() -> String {
                [$($name),*].join(", ")
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_families!(Os {
    Android => "android",
    Ios => "ios",
    Ipados => "ipados",
    Windows => "windows",
    Macos => "macos",
    Linux => "linux",
    Harmonyos => "harmonyos",
    Chromeos => "chromeos",
    Tvos => "tvos",
});

named_families!(Browser {
    Chrome => "chrome",
    Firefox => "firefox",
    Safari => "safari",
    Edge => "edge",
    Opera => "opera",
    SamsungInternet => "samsung_internet",
    Wechat => "wechat",
    Uc => "uc",
    HuaweiBrowser => "huawei_browser",
    Yandex => "yandex",
    QqBrowser => "qq_browser",
    Baidu => "baidu",
});

/// What a User-Agent says about the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserAgent {
    pub os: Os,
    pub os_version: VersionNumber,
    pub browser: Browser,
    pub browser_version: VersionNumber,
}

/// Like [`classify`], remembering recent answers per thread: real traffic repeats a few
/// hundred User-Agent strings, and hashing one costs a fraction of classifying it. An entry
/// is used only when the whole string is equal, so the answer is always [`classify`]'s.
pub fn classify_cached(ua: impl AsRef<[u8]>) -> UserAgent {
    // Two entries per set, the one used last first: two strings that hash to the same set
    // both stay (with one entry per slot, 57 distinct strings in 512 slots evict each other
    // about three times over).
    const SETS: usize = 256;
    type Slot = Option<(Box<[u8]>, UserAgent)>;
    thread_local! {
        static CACHE: std::cell::RefCell<Vec<[Slot; 2]>> =
            std::cell::RefCell::new(vec![[None, None]; SETS]);
    }
    let b = ua.as_ref();
    if b.len() > 1024 {
        return classify_bytes(b);
    }
    // The set comes from the length and the end of the string (where browsers differ); the
    // whole string is compared before an entry is trusted.
    let tail = &b[b.len().saturating_sub(48)..];
    let set = (xxhash_rust::xxh3::xxh3_64_with_seed(tail, b.len() as u64) % SETS as u64) as usize;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let ways = &mut cache[set];
        if let Some((known, answer)) = &ways[0]
            && **known == *b
        {
            return *answer;
        }
        // Otherwise the second entry (or a new one, evicting it) becomes the first.
        let entry = match ways[1].take() {
            Some(hit) if *hit.0 == *b => hit,
            _ => (b.into(), classify_bytes(b)),
        };
        let answer = entry.1;
        ways[1] = ways[0].replace(entry);
        answer
    })
}

/// Classifies a User-Agent, given as text or as the raw bytes of the header. Unknown clients
/// come out as [`Os::Other`] / [`Browser::Other`] with unknown versions.
pub fn classify(ua: impl AsRef<[u8]>) -> UserAgent {
    classify_bytes(ua.as_ref())
}

fn classify_bytes(ua: &[u8]) -> UserAgent {
    let products = product::scan(ua);
    let mut os = platform::from_comments(ua);
    settle_platform(&mut os, &products, ua);
    let mut browser = products.claim;
    // A Safari with its `Version/` is Safari; anything weaker, or Internet Explorer (which
    // may carry Baidu's name as a word), gets the second look.
    let weak = browser.priority == product::TRIDENT
        || (browser.priority < product::CHROME
            && !(browser.browser == Browser::Safari && products.version.is_known()));
    if weak || !os.found() {
        let words = word::scan(ua, weak, !os.found());
        if words.browser.priority > browser.priority {
            browser = words.browser;
        }
        if let Some((family, version, rank)) = words.os {
            os.os = family;
            os.version = version;
            os.rank = rank;
        }
    }
    let mut out = UserAgent {
        os: os.os,
        os_version: os.version,
        browser: browser.browser,
        browser_version: browser.version,
    };
    settle_browser(&mut out, browser.priority, &products);
    // A family is what a version is the version of.
    if out.os == Os::Other {
        out.os_version = VersionNumber::UNKNOWN;
    }
    if out.browser == Browser::Other {
        out.browser_version = VersionNumber::UNKNOWN;
    }
    out
}

/// What product tokens add to the comments' claim.
fn settle_platform(os: &mut platform::Claim, products: &product::Products, ua: &[u8]) {
    let named = os.found() && os.rank == platform::NAMED;
    match products.platform {
        // An iPad in desktop mode says "Macintosh", but Chrome for iOS still says CriOS.
        Some(product::Platform::Ios) if !named => {
            let os_family = match os.os {
                Os::Ios | Os::Ipados => os.os,
                Os::Macos => Os::Ipados,
                _ => Os::Ios,
            };
            if os_family != os.os {
                os.version = VersionNumber::UNKNOWN;
            }
            os.os = os_family;
            os.rank = platform::NAMED;
        }
        Some(product::Platform::Android) if !named => {
            if os.os != Os::Android {
                os.os = Os::Android;
                os.version = VersionNumber::UNKNOWN;
            }
            os.rank = platform::NAMED;
        }
        // HarmonyOS phones say "Android" in the comment and name themselves in a token.
        Some(product::Platform::Harmonyos(version)) if !named => {
            os.os = Os::Harmonyos;
            os.version = version;
            os.rank = platform::NAMED;
        }
        Some(product::Platform::Other) if !named => {
            os.os = Os::Other;
            os.version = VersionNumber::UNKNOWN;
            os.rank = platform::NAMED;
        }
        _ => {}
    }
    // Citrix's ChromeOS client reports "X11; Windows <arch> <ChromeOS version>".
    if products.citrix_chrome_app && os.x11 && os.os == Os::Windows {
        os.os = Os::Chromeos;
        os.version = VersionNumber::UNKNOWN;
    }
    if !os.found()
        && let Some(at) = products.darwin
    {
        let (family, version) = darwin(&ua[at..]);
        os.os = family;
        os.version = version;
        os.rank = platform::NAMED;
    }
}

/// Apple's apps send `App/1.0 CFNetwork/1240 Darwin/20.5.0`, naming the kernel; macOS apps
/// add the architecture or machine (`Darwin/20.5.0 (x86_64)`, `Darwin/10.13;i386`). Kernel
/// 20 is iOS 14 and macOS 11; kernel 15 to 19 are iOS 9 to 13 and OS X 10.11 to 10.15.
fn darwin(after: &[u8]) -> (Os, VersionNumber) {
    let kernel = VersionNumber::parse_lenient(after, b'.');
    let rest = &after[after
        .iter()
        .position(|&b| !matches!(b, b'0'..=b'9' | b'.'))
        .unwrap_or(after.len())..];
    let rest = trim(rest.strip_prefix(b";").unwrap_or(rest));
    let rest = rest.strip_prefix(b"(").unwrap_or(rest);
    // PowerPC Macs name the machine: `Darwin/9.8.0 (Power Macintosh)`, URL-encoded as
    // `(Power%20Macintosh)` by some.
    let mac = [&b"x86_64"[..], b"i386", b"arm64", b"Mac", b"Power"]
        .iter()
        .any(|arch| rest.starts_with(arch));
    let major = kernel.components().first().copied().unwrap_or(0);
    if mac {
        let version = match major {
            20.. => VersionNumber::from_components(&[major - 9]),
            5..=19 => VersionNumber::from_components(&[10, major - 4]),
            _ => VersionNumber::UNKNOWN,
        };
        (Os::Macos, version)
    } else {
        let version = match major {
            15.. | 10..=11 => VersionNumber::from_components(&[major - 6]),
            13 => VersionNumber::from_components(&[6]),
            _ => VersionNumber::UNKNOWN,
        };
        (Os::Ios, version)
    }
}

/// Rules that need the platform. On Android, HarmonyOS, Linux and ChromeOS, `Safari/` is the
/// system's own WebKit browser (the old Android browser, Epiphany, Midori), not Safari. An
/// iOS app's web view names no browser at all, and is Safari's engine.
fn settle_browser(out: &mut UserAgent, priority: u8, products: &product::Products) {
    let borrowed = matches!(
        out.os,
        Os::Android | Os::Harmonyos | Os::Linux | Os::Chromeos
    );
    if out.browser == Browser::Safari && priority == product::SAFARI {
        if !borrowed {
            // Safari's own number sits in `Version/17.1`; `Safari/605.1.15` is WebKit's build.
            out.browser_version = products.version;
        } else {
            out.browser = Browser::Other;
            out.browser_version = VersionNumber::UNKNOWN;
        }
    } else if out.browser == Browser::Opera && products.presto && products.version.is_known() {
        // Presto-era Opera says `Opera/9.80 … Version/12.16` the same way.
        out.browser_version = products.version;
    } else if priority == 0 && products.webkit && matches!(out.os, Os::Ios | Os::Ipados) {
        out.browser = Browser::Safari;
        out.browser_version = VersionNumber::UNKNOWN;
    }
}

/// Without surrounding spaces (and the `+` that stands for a space in URL-encoded
/// User-Agents).
fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'+' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'+' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The dotted version at the start of `s`.
fn version_after(s: &[u8]) -> VersionNumber {
    VersionNumber::parse_lenient(s, b'.')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::samples::SAMPLES;
    use super::*;

    #[test]
    fn classifies_real_user_agents() {
        let mut failures = Vec::new();
        for &(ua, os, os_version, browser, browser_version) in SAMPLES {
            let got = classify(ua);
            let want = (
                os,
                os_version.to_string(),
                browser,
                browser_version.to_string(),
            );
            let have = (
                got.os,
                got.os_version.to_string(),
                got.browser,
                got.browser_version.to_string(),
            );
            if want != have {
                failures.push(format!("{ua}\n   want {want:?}\n   have {have:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(SAMPLES.len() >= 30);
    }

    #[test]
    fn the_cache_gives_the_same_answers() {
        for _ in 0..3 {
            for &(ua, ..) in SAMPLES {
                assert_eq!(classify_cached(ua), classify(ua), "{ua}");
            }
        }
        // More distinct strings than entries: sets fill, entries are evicted and replaced.
        for i in 0..2000 {
            let ua = format!("{} grayline/{i}", SAMPLES[i % SAMPLES.len()].0);
            assert_eq!(classify_cached(&ua), classify(&ua), "{ua}");
        }
        for &(ua, ..) in SAMPLES.iter().rev() {
            assert_eq!(classify_cached(ua), classify(ua), "{ua}");
        }
        let long = "x".repeat(5000);
        assert_eq!(classify_cached(&long), classify(&long));
    }

    #[test]
    fn family_names_round_trip() {
        for os in Os::ALL {
            assert_eq!(Os::from_name(os.name()), Some(*os));
        }
        for b in Browser::ALL {
            assert_eq!(Browser::from_name(b.name()), Some(*b));
        }
        assert_eq!(Os::from_name("other"), None);
        assert_eq!(Browser::from_name("netscape"), None);
        assert!(Browser::names().contains("huawei_browser"));
    }

    #[test]
    fn survives_garbage() {
        for ua in [
            "(((",
            "/;/;/",
            "(;;)",
            "a/b/c/",
            "Chrome/",
            "(iPhone",
            "Mozilla/5.0 (",
        ] {
            let _ = classify(ua);
        }
        assert_eq!(classify("Chrome/").browser, Browser::Chrome);
    }

    proptest! {
        /// The proxy classifies the header's bytes, the simulator the text they decode to.
        #[test]
        fn bytes_classify_like_their_lossy_text(
            sample in 0..SAMPLES.len(),
            at in any::<prop::sample::Index>(),
            junk in prop::collection::vec(0x80u8..=0xff, 1..4),
        ) {
            let mut ua = SAMPLES[sample].0.as_bytes().to_vec();
            let at = at.index(ua.len() + 1);
            ua.splice(at..at, junk);
            let text = String::from_utf8_lossy(&ua);
            prop_assert_eq!(classify(&ua), classify(text.as_bytes()));
        }

        #[test]
        fn any_bytes_classify_like_their_lossy_text(ua in prop::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(classify(&ua), classify(String::from_utf8_lossy(&ua).as_bytes()));
        }
    }

    #[test]
    fn misses_the_corpus_found_are_fixed() {
        for (ua, os, browser) in [
            (
                "App/0 CFNetwork/1442 Darwin/23.1.0",
                Os::Ios,
                Browser::Other,
            ),
            (
                "Safari/10600.3.18 CFNetwork/720.2.4 Darwin/14.1.0 (x86_64)",
                Os::Macos,
                Browser::Safari,
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; en-US; SM-G988U Build/TP1A.220624.014) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.80 UCMobile/15.0.7.1383 Mobile Safari/537.36",
                Os::Android,
                Browser::Uc,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/50.0.2661.102 UBrowser/5.7.14488.1025 Safari/537.36",
                Os::Windows,
                Browser::Uc,
            ),
            (
                "Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; IEMobile/10.0; ARM; Touch; NOKIA; Lumia 920)",
                Os::Other,
                Browser::Other,
            ),
            (
                "Mozilla/5.0 (Linux; U; Android 2.3.3; en-fr; HTC/WildfireS/1.33.163.2 Build/GRI40) AppleWebKit/533.1 (KHTML, like Gecko) Version/4.0 Mobile Safari/533.1",
                Os::Android,
                Browser::Other,
            ),
            (
                "Mozilla/5.0 (Linux; U; en-us; KFTT Build/IML74K) AppleWebKit/535.19 (KHTML, like Gecko) Silk/2.2 Safari/535.19 Silk-Accelerated=true",
                Os::Android,
                Browser::Other,
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome Safari/537.36",
                Os::Linux,
                Browser::Chrome,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Version/17.0 Safari/605.1.15",
                Os::Ipados,
                Browser::Chrome,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
                Os::Ios,
                Browser::Safari,
            ),
        ] {
            let got = classify(ua);
            assert_eq!((got.os, got.browser), (os, browser), "{ua}");
        }
        assert_eq!(
            classify("App/0 CFNetwork/1442 Darwin/23.1.0")
                .os_version
                .to_string(),
            "17"
        );
    }
}
