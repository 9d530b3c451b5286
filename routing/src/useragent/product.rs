//! Product tokens (`Name/1.2`): the browser they name, and what a few of them say about the
//! platform underneath.
//!
//! Every browser lists the engines it is built on before or after its own token
//! (`… Chrome/120 Safari/537.36 Edg/120`), so each family has a priority and the most
//! specific token wins: in-app browsers over the vendor engines they embed, vendor browsers
//! over Edge and Opera, over Firefox, over Chrome, over Safari. Some products exist on one
//! platform only (Chrome for iOS is `CriOS`, Amazon's Silk runs on Fire OS, an Android), and
//! a few tokens name the system itself (`HarmonyOS/2.0.0`, `KAIOS/2.5`); either settles the
//! OS when the comment is vague or borrows another system's name, as HarmonyOS phones say
//! "Android" and an iPad in desktop mode says "Macintosh".
//!
//! Names are compared without regard to case: some apps and proxies lowercase the whole
//! header (`mozilla/5.0 (linux; android 11; …) … micromessenger/8.0.6`), and vendors change
//! the case of their own token between versions (`BaiduBoxApp/3.6`, `baiduboxapp/11.12`).

use super::{Browser, trim, version_after};
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
    /// HarmonyOS, with the version the token gives. Its phones say "Android" in the comment
    /// and name themselves in a token: `HarmonyOS/2.0.0`, `Build/HarmonyOS 3.1.0`, `Hmos/1`
    /// (DingTalk's mark), or `ArkWeb/4.1.6.1`, the engine only HarmonyOS ships.
    Harmonyos(VersionNumber),
    /// A system without a family, under the one it resembles: the Kindle's (`Kindle/3.0`),
    /// KaiOS (`(Mobile; …; Android; rv:48.0) … KAIOS/2.5`).
    Other,
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
///
/// In-app browsers embed a vendor's engine and keep its token: WeChat on Android renders with
/// Tencent's X5 (`MQQBrowser/6.2 TBS/045617 … MicroMessenger/8.0.6`), WeChat for Windows
/// with QQ Browser's core (`QBCore/… QQBrowser/9.0 … MicroMessenger/7.0.20`).
const IN_APP: u8 = 11;
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
    /// A token that names the system, not a browser.
    Names(Platform),
    /// `HarmonyOS/2.0.0`: the system and its version.
    Harmonyos,
    Version,
    WebKit,
    Darwin,
    /// `Build/`: Android's build id, which some HarmonyOS phones replace with the system's
    /// name (`Huawei P60 Pro Build/HarmonyOS 3.1.0`).
    Build,
}

/// A short name in lower case, to compare with lower-case literals. No name worth comparing
/// is longer than 16 bytes, so longer ones have none.
struct Lower {
    bytes: [u8; 16],
    len: usize,
}

impl Lower {
    fn new(name: &[u8]) -> Option<Lower> {
        let mut bytes = [0; 16];
        bytes.get_mut(..name.len())?.copy_from_slice(name);
        bytes.make_ascii_lowercase();
        Some(Lower {
            bytes,
            len: name.len(),
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The meaning of a token name, in any case. Most names mean nothing (`Mozilla`, `Gecko`,
/// `Mobile`), so the length picks the few names worth comparing.
fn meaning(name: &[u8]) -> Option<Meaning> {
    use Browser as B;
    use Meaning::{Build, Darwin, Harmonyos, Is, IsOn, Names, Version, WebKit};
    let lower = Lower::new(name)?;
    Some(match (name.len(), lower.as_bytes()) {
        (3, b"edg") => Is(EDGE_OR_OPERA, B::Edge),
        (3, b"opr" | b"opt" | b"opx") => Is(EDGE_OR_OPERA, B::Opera),
        // `EdgW/` is Edge's web view on Android, which apps embed as Windows apps embed
        // WebView2 (whose User-Agent is Edge's own, `Edg/`).
        (4, b"edga" | b"edge" | b"edgw") => Is(EDGE_OR_OPERA, B::Edge),
        // Huawei Browser for the PC.
        (4, b"hbpc") => Is(VENDOR, B::HuaweiBrowser),
        // UC Browser for the PC since 2024 (before, `UBrowser/`).
        (4, b"ucpc") => Is(VENDOR, B::Uc),
        // Firefox Focus (Klar where "focus" is a trademark) renders with the system WebView,
        // so its User-Agent also says `Chrome/`.
        (4, b"klar") => Is(EDGE_OR_OPERA, B::Firefox),
        (4, b"silk") => IsOn(VENDOR, B::Other, Platform::Android),
        (4, b"hmos") => Names(Platform::Harmonyos(VersionNumber::UNKNOWN)),
        (5, b"opera") => Is(EDGE_OR_OPERA, B::Opera),
        (5, b"ucweb") => Is(VENDOR, B::Uc),
        (5, b"crios") => IsOn(CHROME, B::Chrome, Platform::Ios),
        (5, b"fxios") => IsOn(FIREFOX, B::Firefox, Platform::Ios),
        (5, b"opios" | b"coast") => IsOn(EDGE_OR_OPERA, B::Opera, Platform::Ios),
        (5, b"focus") => Is(EDGE_OR_OPERA, B::Firefox),
        (5, b"kaios") => Names(Platform::Other),
        (5, b"build") => Build,
        (6, b"chrome") => Is(CHROME, B::Chrome),
        (6, b"safari") => Is(SAFARI, B::Safari),
        (6, b"edgios") => IsOn(EDGE_OR_OPERA, B::Edge, Platform::Ios),
        (6, b"kindle") => IsOn(VENDOR, B::Other, Platform::Other),
        (6, b"darwin") => Darwin,
        (6, b"arkweb") => Names(Platform::Harmonyos(VersionNumber::UNKNOWN)),
        (7, b"version") => Version,
        (7, b"firefox") => Is(FIREFOX, B::Firefox),
        (7, b"trident") => Is(TRIDENT, B::Other),
        // Baidu Browser for Android before it took the `baidubrowser/` token.
        (7, b"flyflow") => Is(VENDOR, B::Baidu),
        (8, b"chromium") => Is(CHROME, B::Chrome),
        (8, b"ucmobile" | b"ubrowser") => Is(VENDOR, B::Uc),
        (8, b"iemobile") => Is(TRIDENT, B::Other),
        (9, b"ucbrowser") => Is(VENDOR, B::Uc),
        (9, b"yabrowser") => Is(VENDOR, B::Yandex),
        (9, b"qqbrowser") => Is(VENDOR, B::QqBrowser),
        (9, b"bdbrowser") => Is(VENDOR, B::Baidu),
        (9, b"harmonyos") => Harmonyos,
        (10, b"mqqbrowser") => Is(VENDOR, B::QqBrowser),
        (11, b"applewebkit") => WebKit,
        (11, b"baiduboxapp" | b"bidubrowser") => Is(VENDOR, B::Baidu),
        (12, b"baidubrowser") => Is(VENDOR, B::Baidu),
        (13, b"huaweibrowser") => Is(VENDOR, B::HuaweiBrowser),
        (14, b"headlesschrome") => Is(CHROME, B::Chrome),
        (14, b"samsungbrowser") => Is(SAMSUNG, B::SamsungInternet),
        (14, b"micromessenger") => Is(IN_APP, B::Wechat),
        (14, b"bdbrowser_i18n") => Is(VENDOR, B::Baidu),
        (15, b"yasearchbrowser") => Is(VENDOR, B::Yandex),
        _ => return None,
    })
}

/// A browser's name with something its build adds: a suffix (China Mobile's
/// `UCBrowser-CMCC/9.9.2`) or the version glued on (`UCWEB7.9.3.103/139/800`, where the
/// number after the slash is not the browser's). Gives the browser's meaning and where its
/// version is written. Only tried for names that mean nothing as they are.
fn variant<'a>(name: &'a [u8], after: &'a [u8]) -> Option<(Meaning, &'a [u8])> {
    let cut = name
        .iter()
        .position(|&b| b == b'-' || b.is_ascii_digit())
        .filter(|&cut| cut > 0)?;
    let meaning =
        meaning(&name[..cut]).filter(|m| matches!(m, Meaning::Is(..) | Meaning::IsOn(..)))?;
    let version = if name[cut] == b'-' {
        after
    } else {
        &name[cut..]
    };
    Some((meaning, version))
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
        let name = &ua[start..slash];
        let after = &ua[slash + 1..];
        let Some((meaning, version)) = meaning(name)
            .map(|m| (m, after))
            .or_else(|| variant(name, after))
        else {
            continue;
        };
        let (priority, browser) = match meaning {
            Meaning::Is(p, b) => (p, b),
            Meaning::IsOn(p, b, platform) => {
                out.platform = Some(platform);
                (p, b)
            }
            // `Hmos/1` or `ArkWeb/4.1` after `HarmonyOS/4.0` keeps the system's version.
            Meaning::Names(Platform::Harmonyos(_))
                if matches!(out.platform, Some(Platform::Harmonyos(_))) =>
            {
                continue;
            }
            Meaning::Names(platform) => {
                out.platform = Some(platform);
                continue;
            }
            Meaning::Harmonyos => {
                out.platform = Some(Platform::Harmonyos(version_after(after)));
                continue;
            }
            Meaning::Build => {
                if let Some(name) = after.get(..9)
                    && name.eq_ignore_ascii_case(b"HarmonyOS")
                {
                    let version = version_after(trim(&after[9..]));
                    out.platform = Some(Platform::Harmonyos(version));
                }
                continue;
            }
            Meaning::Version => {
                out.version = version_after(after);
                continue;
            }
            Meaning::WebKit => {
                out.webkit = true;
                continue;
            }
            // Apple's apps give the kernel's version (`Darwin/23.4.0`); without one
            // (`darwin/arm64`) it is only a platform's name, which the word pass reads.
            Meaning::Darwin if after.first().is_some_and(u8::is_ascii_digit) => {
                out.darwin = Some(slash + 1);
                continue;
            }
            Meaning::Darwin => continue,
        };
        if priority > out.claim.priority {
            out.presto = name.eq_ignore_ascii_case(b"Opera");
            out.claim = Claim {
                priority,
                browser,
                version: version_after(version),
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
    fn names_in_any_case_and_with_what_builds_add() {
        for (ua, browser, version) in [
            (
                "mqqbrowser/6.2 tbs/045617 mobile safari/537.36 micromessenger/8.0.6.1900",
                Browser::Wechat,
                "8.0.6.1900",
            ),
            (
                "Safari/537.36 QBCore/3.43 QQBrowser/9.0 MicroMessenger/6.5.2.501",
                Browser::Wechat,
                "6.5.2.501",
            ),
            (
                "Mobile Safari/534.30 BaiduBoxApp/3.6_73",
                Browser::Baidu,
                "3.6",
            ),
            (
                "Chrome/130.0.0.0 Safari/537.36 UCPC/1.1.0.12",
                Browser::Uc,
                "1.1.0.12",
            ),
            (
                "Chrome/91.0 Mobile Safari/537.36 EdgW/1.0",
                Browser::Edge,
                "1.0",
            ),
            (
                "Version/4.0 UCBrowser-CMCC/9.9.2.467 U3/0.8.0",
                Browser::Uc,
                "9.9.2.467",
            ),
            (
                "Mobile Safari/525.20.1/UCWEB7.9.3.103/139/800",
                Browser::Uc,
                "7.9.3.103",
            ),
            (
                "FlyFlow/2.4 Version/4.0 Mobile Safari/534.30",
                Browser::Baidu,
                "2.4",
            ),
            (
                "Safari/534.24 T5/2.0 bdbrowser_i18n/4.4.0.2",
                Browser::Baidu,
                "4.4.0.2",
            ),
            // A glued-on version or suffix counts only after a browser's whole name.
            ("SP-engine/2.70.0 U3/0.8.0 T7/13.32", Browser::Other, ""),
        ] {
            check(ua, browser, version);
        }
    }

    #[test]
    fn tokens_that_name_the_system() {
        let platform = |ua: &str| scan(ua.as_bytes()).platform;
        let harmonyos = |v: &[u32]| Some(Platform::Harmonyos(VersionNumber::from_components(v)));
        assert_eq!(
            platform("HuaweiBrowser/11.1 Safari/537.36 HarmonyOS/2.0.0"),
            harmonyos(&[2, 0, 0])
        );
        assert_eq!(
            platform("(Linux; Huawei P60 Pro Build/HarmonyOS 3.1.0)"),
            harmonyos(&[3, 1, 0])
        );
        assert_eq!(platform("(Linux; ELS-AN00 Build/HUAWEIELS-AN00; wv)"), None);
        assert_eq!(
            platform("abi/64 Pad/APad Hmos/1 UT4Aplus/0.2.25"),
            harmonyos(&[])
        );
        assert_eq!(platform("HarmonyOS/4.0 ArkWeb/4.1.6.1"), harmonyos(&[4, 0]));
        assert_eq!(
            platform("Gecko/48.0 Firefox/48.0 KAIOS/2.5"),
            Some(Platform::Other)
        );
        assert_eq!(scan(b"node/v20 darwin/arm64").darwin, None);
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
