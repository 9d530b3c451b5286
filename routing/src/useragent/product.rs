//! Product tokens (`Name/1.2`): the browser they name, and what a few of them say about the
//! platform underneath.
//!
//! Every browser lists the engines it is built on before or after its own token
//! (`… Chrome/120 Safari/537.36 Edg/120`), so each family has a priority and the most
//! specific token wins: vendor and in-app browsers over Edge and Opera, over Firefox, over
//! Chrome, over Safari. Some products exist on one platform only (Chrome for iOS is `CriOS`,
//! Amazon's Silk runs on Fire OS, an Android), which settles the OS when the comment is
//! vague or, as with an iPad in desktop mode, pretends to be a Mac.

use super::Browser;
use super::version_after;
use crate::version_number::VersionNumber;

/// A claim to be the browser: higher priorities win; 0 is "nothing found".
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Claim {
    pub priority: u8,
    pub browser: Browser,
    pub version: VersionNumber,
}

/// What a product token says about the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Platform {
    /// Built for iOS and iPadOS only.
    Ios,
    /// Amazon's Silk: Fire OS, an Android, even when it sends a desktop User-Agent. UC
    /// Browser's Java client (`JUC (Linux; U; 2.3.6; …)`) runs on Android too.
    Android,
    /// An e-reader's own system.
    Kindle,
}

/// What the product tokens of one User-Agent say.
#[derive(Debug, Default)]
pub(super) struct Products {
    pub claim: Claim,
    /// `Version/…`: Safari's (and Presto Opera's) own version number.
    pub version: VersionNumber,
    pub webkit: bool,
    pub platform: Option<Platform>,
    /// Where the `Darwin/` version starts: Apple's apps name the kernel, not the system.
    pub darwin: Option<usize>,
    /// The browser's token is `Opera/`: Presto's, whose own version is in `Version/`.
    pub presto: bool,
    /// The User-Agent ends in `CitrixChromeApp`, Citrix's client on ChromeOS (and Windows).
    pub citrix_chrome_app: bool,
}

/// Priorities, from the most specific kind of browser to the engine.
pub(super) const VENDOR: u8 = 10;
const SAMSUNG: u8 = 9;
const EDGE_OR_OPERA: u8 = 8;
const FIREFOX: u8 = 6;
/// Chrome and everything stronger is trusted without a second look at the string.
pub(super) const CHROME: u8 = 5;
/// Internet Explorer's engine: not a family, but stronger than the Firefox, Chrome or Safari
/// it may mention to be served modern pages; no other browser sends it.
pub(super) const TRIDENT: u8 = 7;
pub(super) const SAFARI: u8 = 1;

enum Meaning {
    /// A browser, with its priority.
    Is(u8, Browser),
    /// A browser that runs on one platform only.
    IsOn(u8, Browser, Platform),
    Version,
    WebKit,
    Darwin,
}

/// The meaning of a token name. Most names mean nothing (`Mozilla`, `Gecko`, `Mobile`), so
/// the length picks the few names worth comparing.
fn meaning(name: &[u8]) -> Option<Meaning> {
    use Browser as B;
    use Meaning::{Darwin, Is, IsOn, Version, WebKit};
    Some(match (name.len(), name) {
        (3, b"Edg") => Is(EDGE_OR_OPERA, B::Edge),
        (3, b"OPR" | b"OPT" | b"OPX") => Is(EDGE_OR_OPERA, B::Opera),
        (4, b"EdgA" | b"Edge") => Is(EDGE_OR_OPERA, B::Edge),
        // Huawei Browser for the PC.
        (4, b"HBPC") => Is(VENDOR, B::HuaweiBrowser),
        // Firefox Focus (Klar where "focus" is a trademark) renders with the system WebView,
        // so its User-Agent also says `Chrome/`.
        (4, b"Klar") => Is(EDGE_OR_OPERA, B::Firefox),
        (4, b"Silk") => IsOn(VENDOR, B::Other, Platform::Android),
        (5, b"Opera") => Is(EDGE_OR_OPERA, B::Opera),
        (5, b"UCWEB") => Is(VENDOR, B::Uc),
        (5, b"CriOS") => IsOn(CHROME, B::Chrome, Platform::Ios),
        (5, b"FxiOS") => IsOn(FIREFOX, B::Firefox, Platform::Ios),
        (5, b"OPiOS" | b"Coast") => IsOn(EDGE_OR_OPERA, B::Opera, Platform::Ios),
        (5, b"Focus") => Is(EDGE_OR_OPERA, B::Firefox),
        (6, b"Chrome") => Is(CHROME, B::Chrome),
        (6, b"Safari") => Is(SAFARI, B::Safari),
        (6, b"EdgiOS") => IsOn(EDGE_OR_OPERA, B::Edge, Platform::Ios),
        (6, b"Kindle") => IsOn(VENDOR, B::Other, Platform::Kindle),
        (6, b"Darwin") => Darwin,
        (7, b"Version") => Version,
        (7, b"Firefox") => Is(FIREFOX, B::Firefox),
        (7, b"Trident") => Is(TRIDENT, B::Other),
        (8, b"Chromium") => Is(CHROME, B::Chrome),
        (8, b"UCMobile" | b"UBrowser") => Is(VENDOR, B::Uc),
        (8, b"IEMobile") => Is(TRIDENT, B::Other),
        (9, b"UCBrowser") => Is(VENDOR, B::Uc),
        (9, b"YaBrowser") => Is(VENDOR, B::Yandex),
        (9, b"QQBrowser") => Is(VENDOR, B::QqBrowser),
        (10, b"MQQBrowser") => Is(VENDOR, B::QqBrowser),
        (11, b"AppleWebKit") => WebKit,
        (11, b"baiduboxapp" | b"BIDUBrowser") => Is(VENDOR, B::Baidu),
        (12, b"baidubrowser") => Is(VENDOR, B::Baidu),
        (13, b"HuaweiBrowser") => Is(VENDOR, B::HuaweiBrowser),
        (14, b"HeadlessChrome") => Is(CHROME, B::Chrome),
        (14, b"SamsungBrowser") => Is(SAMSUNG, B::SamsungInternet),
        (14, b"MicroMessenger") => Is(VENDOR, B::Wechat),
        // WeChat's token, lowercased by some Android builds and old clients.
        (14, n) if n.eq_ignore_ascii_case(b"MicroMessenger") => Is(VENDOR, B::Wechat),
        (15, b"YaSearchBrowser") => Is(VENDOR, B::Yandex),
        _ => return None,
    })
}

/// Bytes that end a token name on its left.
fn delimits(b: u8) -> bool {
    matches!(b, b' ' | b'(' | b')' | b';' | b',' | b'/' | b'+' | b'[')
}

/// Scans every `Name/version` token.
pub(super) fn scan(ua: &[u8]) -> Products {
    let mut out = Products::default();
    for slash in memchr::memchr_iter(b'/', ua) {
        let start = ua[..slash]
            .iter()
            .rposition(|&b| delimits(b))
            .map_or(0, |p| p + 1);
        let Some(meaning) = meaning(&ua[start..slash]) else {
            continue;
        };
        let after = &ua[slash + 1..];
        let (priority, browser) = match meaning {
            Meaning::Is(p, b) => (p, b),
            Meaning::IsOn(p, b, platform) => {
                out.platform = Some(platform);
                (p, b)
            }
            Meaning::Version => {
                out.version = version_after(after);
                continue;
            }
            Meaning::WebKit => {
                out.webkit = true;
                continue;
            }
            Meaning::Darwin => {
                out.darwin = Some(slash + 1);
                continue;
            }
        };
        if priority > out.claim.priority {
            out.presto = &ua[start..slash] == b"Opera";
            out.claim = Claim {
                priority,
                browser,
                version: version_after(after),
            };
        }
    }
    out.citrix_chrome_app = ua.ends_with(b" CitrixChromeApp");
    if ua.starts_with(b"JUC") && matches!(ua.get(3), Some(b' ' | b'(')) {
        out.platform = Some(Platform::Android);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ua: &str, browser: Browser, version: &str) {
        let p = scan(ua.as_bytes());
        assert_eq!(
            (p.claim.browser, p.claim.version.to_string().as_str()),
            (browser, version),
            "{ua}"
        );
    }

    #[test]
    fn the_most_specific_token_wins() {
        check(
            "Chrome/120.0 Safari/537.36 Edg/120.1",
            Browser::Edge,
            "120.1",
        );
        check("Safari/604.1 CriOS/120.2", Browser::Chrome, "120.2");
        check("Chrome/50.0 UBrowser/5.7 Safari/537.36", Browser::Uc, "5.7");
        check("Chrome/123.0 UCMobile/15.0.7 Mobile", Browser::Uc, "15.0.7");
        check("Silk/3.25 like Chrome/34.0", Browser::Other, "3.25");
        check(
            "(compatible; Trident/7.0; QQBrowser/7.6)",
            Browser::QqBrowser,
            "7.6",
        );
        check("J2ME/UCWEB/7.0", Browser::Uc, "7.0");
        check(
            "Version/4.0 Chrome/112.0 Mobile Safari/537.36 micromessenger/8.0.38",
            Browser::Wechat,
            "8.0.38",
        );
        check(
            "Version/4.0 Focus/115.2.0 Chrome/115.0 Mobile Safari/537.36",
            Browser::Firefox,
            "115.2.0",
        );
        check(
            "Version/4.0 Klar/8.8.1 Chrome/76.0 Mobile Safari/537.36",
            Browser::Firefox,
            "8.8.1",
        );
        check(
            "Chrome/114.0.5735.199 Safari/537.36 HBPC/12.1.3.303",
            Browser::HuaweiBrowser,
            "12.1.3.303",
        );
        check("Mozilla/5.0 Gecko/20100101", Browser::Other, "");
    }

    #[test]
    fn notes_versions_engines_and_platforms() {
        let p = scan(b"(iPad) AppleWebKit/605 Version/16.6 Mobile/15E148 Safari/604.1");
        assert!(p.webkit);
        assert_eq!(p.version.to_string(), "16.6");
        assert_eq!(p.platform, None);
        let p = scan(b"(Macintosh) AppleWebKit/605 EdgiOS/108 Version/13 Safari/605");
        assert_eq!(p.platform, Some(Platform::Ios));
        let p = scan(b"App/1 CFNetwork/1240 Darwin/20.5.0");
        assert_eq!(p.darwin, Some(28));
        assert!(scan(b"(X11) Chrome/68 Safari/537.36 CitrixChromeApp").citrix_chrome_app);
    }
}
