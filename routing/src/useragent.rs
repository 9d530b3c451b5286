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

pub mod samples;

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

/// Like [`classify`], remembering recent answers per thread: real traffic repeats a few
/// hundred User-Agent strings, and hashing one costs a fraction of classifying it. An entry
/// is used only when the whole string is equal, so the answer is always [`classify`]'s.
pub fn classify_cached(ua: &str) -> UserAgent {
    const SLOTS: usize = 512;
    type Slot = Option<(Box<str>, UserAgent)>;
    thread_local! {
        static CACHE: std::cell::RefCell<Vec<Slot>> = std::cell::RefCell::new(vec![None; SLOTS]);
    }
    if ua.len() > 1024 {
        return classify(ua);
    }
    // The slot comes from the length and the ends of the string (where browsers differ); the
    // whole string is compared before an entry is trusted.
    let b = ua.as_bytes();
    let tail = &b[b.len().saturating_sub(48)..];
    let slot = (xxhash_rust::xxh3::xxh3_64_with_seed(tail, b.len() as u64) % SLOTS as u64) as usize;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        match &cache[slot] {
            Some((known, answer)) if **known == *ua => *answer,
            _ => {
                let answer = classify(ua);
                cache[slot] = Some((ua.into(), answer));
                answer
            }
        }
    })
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
}
