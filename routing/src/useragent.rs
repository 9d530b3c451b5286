//! User-Agent classification into the OS and browser families that policies route on.
//!
//! A single pass over the string, no allocation and no regex: the first parenthesised comment
//! names the platform (`(Linux; Android 14; Pixel 8)`), and `Name/version` product tokens name
//! the browser. In-app browsers and vendor browsers (WeChat, UC, Huawei, Samsung) append their
//! own token to a Chrome or Safari User-Agent, so the most specific token wins.
//!
//! General-purpose User-Agent crates do not know HarmonyOS, WeChat, UC or Huawei Browser, and
//! a decision has a budget of a few hundred nanoseconds, hence this focused classifier.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::version_number::VersionNumber;

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
});

/// What a User-Agent says about the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserAgent {
    pub os: Os,
    pub os_version: VersionNumber,
    pub browser: Browser,
    pub browser_version: VersionNumber,
}

/// Classifies a User-Agent string. Unknown clients come out as [`Os::Other`] /
/// [`Browser::Other`] with unknown versions.
pub fn classify(ua: &str) -> UserAgent {
    let mut out = UserAgent::default();
    classify_platform(ua, &mut out);
    classify_browser(ua, &mut out);
    out
}

/// Reads the first `( … ; … )` comment, which carries the platform.
fn classify_platform(ua: &str, out: &mut UserAgent) {
    let Some(open) = memchr::memchr(b'(', ua.as_bytes()) else {
        return;
    };
    let rest = &ua[open + 1..];
    let comment = match memchr::memchr(b')', rest.as_bytes()) {
        Some(close) => &rest[..close],
        None => rest,
    };
    // Lower rank = stronger claim; HarmonyOS phones also say "Android", iPads say "Mac OS X".
    let mut rank = u8::MAX;
    let set = |os: Os, version: VersionNumber, r: u8, rank: &mut u8, out: &mut UserAgent| {
        if r < *rank {
            *rank = r;
            out.os = os;
            out.os_version = version;
        } else if r == *rank && !out.os_version.is_known() {
            out.os_version = version;
        }
    };
    for segment in comment.split(';') {
        let s = segment.trim();
        if let Some(v) = s
            .strip_prefix("OpenHarmony")
            .or_else(|| s.strip_prefix("HarmonyOS"))
        {
            set(
                Os::Harmonyos,
                version_after_space(v, b'.'),
                0,
                &mut rank,
                out,
            );
        } else if s.starts_with("iPad") {
            set(Os::Ipados, VersionNumber::UNKNOWN, 1, &mut rank, out);
        } else if s.starts_with("iPhone") || s.starts_with("iPod") {
            set(Os::Ios, VersionNumber::UNKNOWN, 1, &mut rank, out);
        } else if let Some(v) = s.strip_prefix("CPU ") {
            // "CPU iPhone OS 17_1 like Mac OS X" or "CPU OS 16_6 like Mac OS X" (iPad).
            if let Some(at) = v.find("OS ") {
                let version = VersionNumber::parse_lenient(&v[at + 3..], b'_');
                if rank == 1 {
                    out.os_version = version;
                } else {
                    set(Os::Ios, version, 1, &mut rank, out);
                }
            }
        } else if let Some(v) = s.strip_prefix("Android") {
            set(Os::Android, version_after_space(v, b'.'), 2, &mut rank, out);
        } else if let Some(v) = s.strip_prefix("Windows NT ") {
            set(Os::Windows, windows_version(v), 3, &mut rank, out);
        } else if s.starts_with("Windows") {
            set(Os::Windows, VersionNumber::UNKNOWN, 3, &mut rank, out);
        } else if s.starts_with("CrOS") {
            set(Os::Chromeos, VersionNumber::UNKNOWN, 3, &mut rank, out);
        } else if let Some(at) = s.find("Mac OS X") {
            let v = s[at + 8..].trim_start();
            let sep = if v.contains('_') { b'_' } else { b'.' };
            set(
                Os::Macos,
                VersionNumber::parse_lenient(v, sep),
                4,
                &mut rank,
                out,
            );
        } else if s == "Macintosh" {
            set(Os::Macos, VersionNumber::UNKNOWN, 4, &mut rank, out);
        } else if s == "X11" || s.starts_with("Linux") || s.starts_with("Ubuntu") {
            set(Os::Linux, VersionNumber::UNKNOWN, 5, &mut rank, out);
        }
    }
}

fn version_after_space(s: &str, sep: u8) -> VersionNumber {
    VersionNumber::parse_lenient(s.trim_start(), sep)
}

/// `Windows NT 10.0` is Windows 10 (and 11, which reports the same), 6.3 is 8.1, 6.2 is 8,
/// 6.1 is 7.
fn windows_version(nt: &str) -> VersionNumber {
    let nt = VersionNumber::parse_lenient(nt, b'.');
    let marketing = match nt.components() {
        [10, ..] => "10",
        [6, 3, ..] => "8.1",
        [6, 2, ..] => "8",
        [6, 1, ..] => "7",
        [6, 0, ..] => "6",
        _ => return nt,
    };
    VersionNumber::parse_lenient(marketing, b'.')
}

/// Scans `Name/version` tokens; the most specific family wins.
fn classify_browser(ua: &str, out: &mut UserAgent) {
    let bytes = ua.as_bytes();
    let mut best: (u8, Browser, &str, VersionNumber) =
        (0, Browser::Other, "", VersionNumber::UNKNOWN);
    let mut safari_version = VersionNumber::UNKNOWN;
    for slash in memchr::memchr_iter(b'/', bytes) {
        let start = bytes[..slash]
            .iter()
            .rposition(|b| matches!(b, b' ' | b'(' | b')' | b';' | b','))
            .map_or(0, |p| p + 1);
        let name = &ua[start..slash];
        let version = || VersionNumber::parse_lenient(&ua[slash + 1..], b'.');
        let (priority, family) = match name {
            "MicroMessenger" => (10, Browser::Wechat),
            "UCBrowser" | "UCWEB" => (10, Browser::Uc),
            "HuaweiBrowser" => (10, Browser::HuaweiBrowser),
            "SamsungBrowser" => (9, Browser::SamsungInternet),
            "Edg" | "EdgA" | "EdgiOS" | "Edge" => (8, Browser::Edge),
            "OPR" | "OPiOS" | "OPT" | "Opera" => (8, Browser::Opera),
            "Firefox" | "FxiOS" => (6, Browser::Firefox),
            "Chrome" | "CriOS" | "Chromium" => (5, Browser::Chrome),
            "Version" => {
                safari_version = version();
                continue;
            }
            "Safari" => (1, Browser::Safari),
            _ => continue,
        };
        if priority > best.0 {
            best = (priority, family, name, version());
        }
    }
    let (_, browser, name, mut version) = best;
    if name == "Safari" || (name == "Opera" && safari_version.is_known()) {
        // Safari's own number sits in `Version/17.1`; `Safari/605.1.15` is the WebKit build.
        // Presto-era Opera says `Opera/9.80 … Version/12.16` the same way.
        version = safari_version;
    }
    out.browser = browser;
    out.browser_version = version;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (User-Agent, OS, OS version, browser, browser version) — real strings from the field.
    pub(crate) const CASES: &[(&str, Os, &str, Browser, &str)] = &[
        // Desktop Chrome, Firefox, Edge, Opera, Safari.
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            Os::Windows,
            "10",
            Browser::Chrome,
            "120.0.0.0",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
            Os::Macos,
            "10.15.7",
            Browser::Chrome,
            "119.0.0.0",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Safari/537.36",
            Os::Linux,
            "",
            Browser::Chrome,
            "118.0.0.0",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
            Os::Windows,
            "10",
            Browser::Firefox,
            "121.0",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:109.0) Gecko/20100101 Firefox/115.0",
            Os::Macos,
            "10.15",
            Browser::Firefox,
            "115.0",
        ),
        (
            "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            Os::Linux,
            "",
            Browser::Firefox,
            "120.0",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.61",
            Os::Windows,
            "10",
            Browser::Edge,
            "120.0.2210.61",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19045",
            Os::Windows,
            "10",
            Browser::Edge,
            "18.19045",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 OPR/105.0.0.0",
            Os::Windows,
            "10",
            Browser::Opera,
            "105.0.0.0",
        ),
        (
            "Opera/9.80 (Windows NT 6.1; WOW64) Presto/2.12.388 Version/12.18",
            Os::Windows,
            "7",
            Browser::Opera,
            "12.18",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
            Os::Macos,
            "10.15.7",
            Browser::Safari,
            "17.1",
        ),
        (
            "Mozilla/5.0 (Windows NT 6.3; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36",
            Os::Windows,
            "8.1",
            Browser::Chrome,
            "109.0.0.0",
        ),
        (
            "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
            Os::Chromeos,
            "",
            Browser::Chrome,
            "119.0.0.0",
        ),
        // Mobile Chrome, Firefox, Edge, Opera, Samsung Internet on Android.
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
            Os::Android,
            "10",
            Browser::Chrome,
            "120.0.0.0",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
            Os::Android,
            "14",
            Browser::Chrome,
            "120.0.6099.144",
        ),
        (
            "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0",
            Os::Android,
            "14",
            Browser::Firefox,
            "121.0",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; HD1913) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.193 Mobile Safari/537.36 EdgA/119.0.2151.78",
            Os::Android,
            "10",
            Browser::Edge,
            "119.0.2151.78",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; VOG-L29) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36 OPR/79.2.4195.76738",
            Os::Android,
            "10",
            Browser::Opera,
            "79.2.4195.76738",
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
            Os::Android,
            "13",
            Browser::SamsungInternet,
            "23.0",
        ),
        (
            "Mozilla/5.0 (Linux; Android 12; SAMSUNG SM-T870) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/22.0 Chrome/111.0.5563.116 Safari/537.36",
            Os::Android,
            "12",
            Browser::SamsungInternet,
            "22.0",
        ),
        (
            "Mozilla/5.0 (Linux; Android 11; SM-A205U Build/RP1A.200720.012; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.43 Mobile Safari/537.36",
            Os::Android,
            "11",
            Browser::Chrome,
            "120.0.6099.43",
        ),
        // iOS and iPadOS: Safari, Chrome, Firefox, Edge, Opera.
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1",
            Os::Ios,
            "17.1.2",
            Browser::Safari,
            "17.1.2",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
            Os::Ios,
            "17.2",
            Browser::Chrome,
            "120.0.6099.119",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_7_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/121.0 Mobile/15E148 Safari/605.1.15",
            Os::Ios,
            "16.7.2",
            Browser::Firefox,
            "121.0",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/120.0.2210.60 Mobile/15E148 Safari/605.1.15",
            Os::Ios,
            "17.1",
            Browser::Edge,
            "120.0.2210.60",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 OPiOS/16.0.15.124050 Mobile/15E148 Safari/9537.53",
            Os::Ios,
            "16.6",
            Browser::Opera,
            "16.0.15.124050",
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
            Os::Ipados,
            "16.6",
            Browser::Safari,
            "16.6",
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.101 Mobile/15E148 Safari/604.1",
            Os::Ipados,
            "17.1",
            Browser::Chrome,
            "120.0.6099.101",
        ),
        (
            "Mozilla/5.0 (iPod touch; CPU iPhone OS 15_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.7 Mobile/15E148 Safari/604.1",
            Os::Ios,
            "15.7",
            Browser::Safari,
            "15.7",
        ),
        // WeChat and UC in-app browsers.
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.44(0x18002c2d) NetType/WIFI Language/zh_CN",
            Os::Ios,
            "17.1",
            Browser::Wechat,
            "8.0.44",
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; V2148A Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/111.0.5563.116 Mobile Safari/537.36 XWEB/5317 MMWEBSDK/20230805 MMWEBID/2416 MicroMessenger/8.0.42.2460(0x28002A35) WeChat/arm64 Weixin NetType/WIFI Language/zh_CN ABI/arm64",
            Os::Android,
            "13",
            Browser::Wechat,
            "8.0.42.2460",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI MicroMessenger/7.0.20.1781(0x6700143B) WindowsWechat(0x6309080f) XWEB/8461 Flue",
            Os::Windows,
            "10",
            Browser::Wechat,
            "7.0.20.1781",
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 12; zh-CN; V2055A Build/SP1A.210812.003) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.58 UCBrowser/16.1.3.1251 Mobile Safari/537.36",
            Os::Android,
            "12",
            Browser::Uc,
            "16.1.3.1251",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X; zh-CN) AppleWebKit/537.51.1 (KHTML, like Gecko) Mobile/20F66 UCBrowser/15.7.5.2092 Mobile AliApp(TUnionSDK/0.1.20.4)",
            Os::Ios,
            "16.5",
            Browser::Uc,
            "15.7.5.2092",
        ),
        // HarmonyOS and Huawei Browser.
        (
            "Mozilla/5.0 (Linux; Android 12; HarmonyOS; NOH-AN00; HMSCore 6.13.0.302) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 HuaweiBrowser/14.0.5.302 Mobile Safari/537.36",
            Os::Harmonyos,
            "",
            Browser::HuaweiBrowser,
            "14.0.5.302",
        ),
        (
            "Mozilla/5.0 (Phone; OpenHarmony 4.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 ArkWeb/4.1.6.1 Mobile HuaweiBrowser/5.0.4.300",
            Os::Harmonyos,
            "4.1",
            Browser::HuaweiBrowser,
            "5.0.4.300",
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; ELS-AN00 Build/HUAWEIELS-AN00; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/88.0.4324.93 Mobile Safari/537.36",
            Os::Android,
            "10",
            Browser::Chrome,
            "88.0.4324.93",
        ),
        (
            "Mozilla/5.0 (Linux; HarmonyOS 3.0; ANA-AN00) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/92.0.4515.105 Mobile Safari/537.36",
            Os::Harmonyos,
            "3.0",
            Browser::Chrome,
            "92.0.4515.105",
        ),
        // Things that are not browsers at all.
        ("curl/8.5.0", Os::Other, "", Browser::Other, ""),
        ("", Os::Other, "", Browser::Other, ""),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            Os::Other,
            "",
            Browser::Other,
            "",
        ),
    ];

    #[test]
    fn classifies_real_user_agents() {
        let mut failures = Vec::new();
        for &(ua, os, os_version, browser, browser_version) in CASES {
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
        assert!(CASES.len() >= 30);
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
}
