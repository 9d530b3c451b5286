//! The second look: names written without a `/`, for User-Agents the first pass could not
//! place.
//!
//! Older and non-browser clients write `MSIE 8.0`, `Opera 9.50`, `UCWEB7.0.3`,
//! `UC Browser7.4`, `Firefox-4.0/4.0b8`, or name the system as a plain word (`Wget/1.18
//! (linux-gnu)`, `Layar/3.1 Android/2.1`, `Outlook-iOS/665 … iphone`). This pass reads every
//! run of letters, ignoring case for systems. It costs more than the first pass, so it only
//! runs when that one found no browser stronger than Safari, or no system at all.

use super::platform::old_windows;
use super::product::{CHROME, Claim, TRIDENT, VENDOR};
use super::{Browser, Os, trim, version_after};
use crate::version_number::VersionNumber;

/// What the words of a User-Agent say.
#[derive(Debug, Default)]
pub(super) struct Words {
    pub browser: Claim,
    /// The system a word names, with the word's rank (lower is stronger).
    pub os: Option<(Os, VersionNumber, u8)>,
}

/// A browser written as a word followed by `rest`. Unlike systems, browsers keep their case
/// here: in plain text `firefox` is as often a plug-in's name (`firetv-firefox-plugin`).
fn browser(word: &[u8], rest: &[u8]) -> Option<Claim> {
    let (priority, browser) = match word {
        b"HeadlessChrome" => (CHROME, Browser::Chrome),
        b"Firefox" => (6, Browser::Firefox),
        b"Opera" => (8, Browser::Opera),
        b"UCWEB" | b"UCBrowser" => (VENDOR, Browser::Uc),
        b"UC" => {
            // `UC Browser7.4`, and the old Android client's `UC AppleWebKit/534.31`, whose
            // number is WebKit's.
            let version = if let Some(after) = rest.strip_prefix(b" Browser") {
                version_of(after)
            } else if rest.starts_with(b" AppleWebKit") {
                VersionNumber::UNKNOWN
            } else {
                return None;
            };
            return Some(Claim {
                priority: VENDOR,
                browser: Browser::Uc,
                version,
            });
        }
        b"QQBrowser" | b"MQQBrowser" => (VENDOR, Browser::QqBrowser),
        b"baidubrowser" => (VENDOR, Browser::Baidu),
        b"MSIE" => (TRIDENT, Browser::Other),
        _ => return None,
    };
    Some(Claim {
        priority,
        browser,
        version: version_of(rest),
    })
}

/// A system written as a word (any case) at the start of `at`, `len` bytes long: its family,
/// version and rank. Systems without a family come out as [`Os::Other`] so that nothing
/// weaker overrides them. The first letter picks the few names worth comparing.
fn system(at: &[u8], len: usize) -> Option<(Os, VersionNumber, u8)> {
    let (word, rest) = at.split_at(len);
    let names: &[(&[u8], Os, u8)] = match word[0].to_ascii_lowercase() {
        // The number after `AppleTV` is the model's (`AppleTV11,1`), not the system's.
        b'a' if word.eq_ignore_ascii_case(b"appletv") => {
            return Some((Os::Tvos, VersionNumber::UNKNOWN, 1));
        }
        b'a' => &[(b"android", Os::Android, 2)],
        b'd' => &[(b"darwin", Os::Macos, 4)],
        b'f' => &[(b"freebsd", Os::Other, 0)],
        b'h' => &[(b"harmonyos", Os::Harmonyos, 0)],
        b'i' => &[
            (b"iphone", Os::Ios, 1),
            (b"ipod", Os::Ios, 1),
            (b"ios", Os::Ios, 1),
            (b"ipad", Os::Ipados, 1),
        ],
        b'k' => &[(b"kaios", Os::Other, 0)],
        b'l' => &[(b"linux", Os::Linux, 5)],
        // `Mac OS X/10.10.4`, and the PowerPC and 68k Macs' `Mac_PowerPC`, `Mac_68000`.
        b'm' if word.eq_ignore_ascii_case(b"mac")
            && (rest.starts_with(b" OS X") || rest.starts_with(b"_")) =>
        {
            return Some((Os::Macos, version_of(rest), 4));
        }
        b'm' => &[(b"macos", Os::Macos, 4), (b"macintosh", Os::Macos, 4)],
        b'n' => &[(b"netbsd", Os::Other, 0)],
        b'o' => &[(b"openbsd", Os::Other, 0)],
        b's' => &[(b"sunos", Os::Other, 0), (b"symbian", Os::Other, 0)],
        b't' => &[(b"tvos", Os::Tvos, 1)],
        b'w' => match old_windows(at) {
            Some(version) => return Some((Os::Windows, version, 3)),
            None => &[(b"windows", Os::Windows, 3), (b"watchos", Os::Other, 0)],
        },
        _ => return None,
    };
    names
        .iter()
        .find(|(name, ..)| word.eq_ignore_ascii_case(name))
        .map(|&(_, os, rank)| (os, version_of(rest), rank))
}

/// The version written right after a word: `UCWEB7.0`, `MSIE 8.0`, `iOS/7.0`, `Firefox-4.0`.
fn version_of(rest: &[u8]) -> VersionNumber {
    match rest {
        [b' ' | b'/' | b'-', tail @ ..] => version_after(trim(tail)),
        _ => version_after(rest),
    }
}

/// Reads every run of ASCII letters.
pub(super) fn scan(ua: &[u8], want_browser: bool, want_os: bool) -> Words {
    let mut out = Words::default();
    let mut i = 0;
    while i < ua.len() {
        if !ua[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        while i < ua.len() && ua[i].is_ascii_alphabetic() {
            i += 1;
        }
        let (word, rest) = (&ua[start..i], &ua[i..]);
        if want_browser
            && let Some(claim) = browser(word, rest)
            && claim.priority > out.browser.priority
        {
            out.browser = claim;
        }
        if want_os && let Some((os, version, rank)) = system(&ua[start..], word.len()) {
            match &mut out.os {
                Some((_, known_version, known)) if *known == rank && !known_version.is_known() => {
                    *known_version = version;
                }
                Some((.., known)) if *known <= rank => {}
                _ => out.os = Some((os, version, rank)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn browser_of(ua: &str) -> (Browser, String) {
        let w = scan(ua.as_bytes(), true, false);
        (w.browser.browser, w.browser.version.to_string())
    }

    fn os_of(ua: &str) -> Option<(Os, String)> {
        scan(ua.as_bytes(), false, true)
            .os
            .map(|(os, v, _)| (os, v.to_string()))
    }

    #[test]
    fn reads_names_without_a_slash() {
        let b = |f: Browser, v: &str| (f, v.to_string());
        assert_eq!(
            browser_of("J2ME/UCWEB7.0.3.45/139"),
            b(Browser::Uc, "7.0.3.45")
        );
        assert_eq!(
            browser_of("NOKIA6120c/UC Browser7.4.0.65/28"),
            b(Browser::Uc, "7.4.0.65")
        );
        assert_eq!(
            browser_of("(compatible; MSIE 5.0; Windows ME) Opera 5.11"),
            b(Browser::Opera, "5.11")
        );
        assert_eq!(
            browser_of("(X11; rv:2.0b8pre) Gecko/20101031 Firefox-4.0/4.0b8pre"),
            b(Browser::Firefox, "4.0")
        );
        assert_eq!(
            browser_of("(KHTML, like Gecko) HeadlessChrome Safari/537.36"),
            b(Browser::Chrome, "")
        );
        assert_eq!(
            browser_of("Mozilla/4.0 (compatible; MSIE 7.0; baidubrowser 1.x)"),
            b(Browser::Baidu, "1")
        );
        assert_eq!(browser_of("UCompany/1.0"), b(Browser::Other, ""));
    }

    #[test]
    fn reads_systems_as_words_in_any_case() {
        let o = |os: Os, v: &str| Some((os, v.to_string()));
        assert_eq!(os_of("Wget/1.18 (linux-gnu)"), o(Os::Linux, ""));
        assert_eq!(
            os_of("iBrowser/2.7 Lenovo Linux/2.6.35 Android/2.3.5"),
            o(Os::Android, "2.3.5")
        );
        assert_eq!(
            os_of("StoreKitUIService/1.0 iOS/7.0 model/iPhone3,1"),
            o(Os::Ios, "7.0")
        );
        assert_eq!(os_of("Box/1.2.93;Windows/10;Intel64"), o(Os::Windows, "10"));
        assert_eq!(os_of("Mac OS X/10.10.4 (14E11f)"), o(Os::Macos, ""));
        assert_eq!(os_of("Wget/1.18 (freebsd10.3)"), o(Os::Other, "10.3"));
        assert_eq!(os_of("BIOS/1.0 Windowsill/2"), None);
        assert_eq!(
            os_of("Mozilla/4.0 (compatible; MSIE 4.01; WinNT4.0)"),
            o(Os::Windows, "4.0")
        );
        assert_eq!(os_of("Mozilla/3.0 (Win95; I)"), o(Os::Windows, "95"));
        assert_eq!(
            os_of("Mozilla/4.0 (compatible; MSIE 5.5; Win 9x 4.90)").map(|o| o.0),
            Some(Os::Windows)
        );
        assert_eq!(os_of("Mozilla/4.78 [uk] (WinME; U)"), o(Os::Windows, ""));
        assert_eq!(os_of("Mozilla 5.0 (MSIE 6.0 Win 98)"), o(Os::Windows, "98"));
        assert_eq!(os_of("MSIE 6.0 (Win XP)"), o(Os::Windows, ""));
        assert_eq!(
            os_of("Mozilla/4.0 (compatible; MSIE 5.17; Mac_PowerPC)"),
            o(Os::Macos, "")
        );
        assert_eq!(os_of("iTunes-AppleTV/4.1"), o(Os::Tvos, ""));
        assert_eq!(os_of("TestApp-tvOS/1.0-1"), o(Os::Tvos, "1.0"));
        assert_eq!(os_of("Winamp/5.9"), None);
        assert_eq!(os_of("NSPlayer/12 (Win Media)"), None);
    }
}
