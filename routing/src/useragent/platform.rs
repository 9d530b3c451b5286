//! The platform a User-Agent's comments name: `(Linux; Android 14; Pixel 8)`,
//! `(iPhone; CPU iPhone OS 17_1 like Mac OS X)`, `(Windows NT 10.0; Win64; x64)`.
//!
//! Comments are read in order until one names a system; within it the strongest claim wins,
//! because systems borrow each other's names: HarmonyOS phones say "Android", iPhones say
//! "like Mac OS X", and Windows Phone says "Android" and "iPhone" to be served mobile pages.
//! Systems without a family of their own (Windows Phone and Windows Mobile, BlackBerry,
//! Symbian, KaiOS, the BSDs, game consoles, watches and TVs other than Apple's) are
//! recognised too, so that they are not taken for the system they resemble. Windows CE counts
//! as Windows, as uap-core has it, unless it says it is Windows Mobile; the Windows and Mac
//! systems of the 1990s count as Windows and macOS.
//!
//! Names are read in any case: `(linux; android 11; mi 10 pro)` is Android 11.

use super::{Os, trim, version_after};
use crate::version_number::VersionNumber;

/// A claim to be the platform; lower ranks are stronger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Claim {
    pub os: Os,
    pub version: VersionNumber,
    pub rank: u8,
    /// The comment also said `X11`.
    pub x11: bool,
}

/// A system named outright, or one that has no family (then [`Os::Other`]).
pub(super) const NAMED: u8 = 0;
const APPLE_DEVICE: u8 = 1;
const ANDROID: u8 = 2;
const DESKTOP: u8 = 3;
const MAC: u8 = 4;
const UNIX: u8 = 5;
const NONE: u8 = u8::MAX;

impl Claim {
    const NOTHING: Claim = Claim {
        os: Os::Other,
        version: VersionNumber::UNKNOWN,
        rank: NONE,
        x11: false,
    };

    pub(super) fn found(&self) -> bool {
        self.rank != NONE
    }

    fn set(&mut self, os: Os, version: VersionNumber, rank: u8) {
        if rank < self.rank {
            self.rank = rank;
            self.os = os;
            self.version = version;
        } else if rank == self.rank && !self.version.is_known() {
            self.version = version;
        }
    }
}

/// The parenthesised comments of a User-Agent, in order; an unclosed one runs to the end.
struct Comments<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Comments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let open = memchr::memchr(b'(', self.rest)?;
        let inside = &self.rest[open + 1..];
        let (comment, next) = match memchr::memchr(b')', inside) {
            Some(close) => (&inside[..close], &inside[close + 1..]),
            None => (inside, &inside[inside.len()..]),
        };
        self.rest = next;
        Some(comment)
    }
}

/// The first comment that names a platform, and what it says. HarmonyOS phones say "Android"
/// there and may name themselves in a later comment (Baidu's app adds `BDOS/1.0 (HarmonyOS
/// 2.2.0)`), which then wins.
pub(super) fn from_comments(ua: &[u8]) -> Claim {
    let mut comments = Comments { rest: ua };
    while let Some(comment) = comments.next() {
        let claim = from_comment(comment);
        if !claim.found() {
            continue;
        }
        if claim.os == Os::Android {
            let harmonyos = comments
                .map(from_comment)
                .find(|later| later.os == Os::Harmonyos);
            return harmonyos.unwrap_or(claim);
        }
        return claim;
    }
    Claim::NOTHING
}

fn from_comment(comment: &[u8]) -> Claim {
    let mut claim = Claim::NOTHING;
    for segment in comment.split(|&b| b == b';') {
        segment_claim(trim(segment), &mut claim);
    }
    claim
}

/// Whether `s` starts with `prefix`, in any case.
fn prefix(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// Whether `s` starts with `name` (in any case) followed by the end, a space or a version.
fn word(s: &[u8], name: &[u8]) -> bool {
    prefix(s, name)
        && s.get(name.len())
            .is_none_or(|&b| matches!(b, b' ' | b'+' | b'/' | b'_' | b'-' | b':' | b'0'..=b'9'))
}

/// Where `needle` first occurs in `s`, in any case.
fn find(s: &[u8], needle: &[u8]) -> Option<usize> {
    s.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// The version after a system's name: `Android 14`, `Bada/1.0`, `Android: 11`.
fn named_version(s: &[u8], name_len: usize) -> VersionNumber {
    let rest = trim(&s[name_len..]);
    match rest {
        [b':' | b'/', tail @ ..] => version_after(trim(tail)),
        _ => version_after(rest),
    }
}

/// An Apple system's version, written `17_1_2` by iOS and most of macOS, `10.9.2` or `11.1`
/// by some clients.
fn apple_version(s: &[u8]) -> VersionNumber {
    let sep = if memchr::memchr(b'_', s).is_some() {
        b'_'
    } else {
        b'.'
    };
    VersionNumber::parse_lenient(s, sep)
}

/// Windows before XP and the abbreviations of its day: `Win95`, `Win 98`, `Win 9x 4.90` (ME),
/// `WinNT4.0`, `WinME`, `Win3.11`, `Win16`, `Win32`. The number after `Win` is the version,
/// except in `Win16`, `Win32` and `Win64`, where it counts bits. `s` starts at the name;
/// `Winamp` and the like are not Windows.
pub(super) fn old_windows(s: &[u8]) -> Option<VersionNumber> {
    if !prefix(s, b"Win") {
        return None;
    }
    let rest = &s[3..];
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let ends = |at: usize| rest.get(at).is_none_or(|b| !b.is_ascii_alphabetic());
    match rest {
        [b'1', b'6', ..] | [b'3', b'2', ..] | [b'6', b'4', ..] => Some(VersionNumber::UNKNOWN),
        _ if (prefix(rest, b"9x") || prefix(rest, b"ME") || prefix(rest, b"XP")) && ends(2) => {
            Some(VersionNumber::UNKNOWN)
        }
        [b'0'..=b'9', ..] => Some(version_after(rest)),
        _ if prefix(rest, b"NT") && ends(2) => Some(version_after(&rest[2..])),
        _ => None,
    }
}

/// Reads one `;`-separated segment, in any case. Dispatching on the first letter keeps the
/// comparisons few.
fn segment_claim(s: &[u8], claim: &mut Claim) {
    let Some(&first) = s.first() else {
        return;
    };
    let other = |claim: &mut Claim| claim.set(Os::Other, VersionNumber::UNKNOWN, NAMED);
    match first.to_ascii_lowercase() {
        b'a' if word(s, b"Android") => claim.set(Os::Android, named_version(s, 7), ANDROID),
        // UC Browser's abbreviation.
        b'a' if word(s, b"Adr") => claim.set(Os::Android, named_version(s, 3), ANDROID),
        // `Apple TV` (its media player), `AppleTV11,1` (the model), `AppleTv Apple TV 4`.
        // Ranked with iPhones, so that the `CPU OS 17_2` that follows gives the version.
        b'a' if prefix(s, b"Apple TV") || prefix(s, b"AppleTV") => {
            claim.set(Os::Tvos, VersionNumber::UNKNOWN, APPLE_DEVICE)
        }
        b'b' if prefix(s, b"BlackBerry")
            || word(s, b"BB10")
            || word(s, b"BSD")
            || word(s, b"Bada")
            || word(s, b"BREW")
            || word(s, b"BMP") =>
        {
            other(claim)
        }
        b'c' if prefix(s, b"CPU ") => {
            // "CPU iPhone OS 17_1 like Mac OS X", "CPU OS 16_6 like Mac OS X" (iPad).
            if let Some(at) = find(s, b"OS ") {
                let version = apple_version(&s[at + 3..]);
                if claim.rank == APPLE_DEVICE {
                    if !claim.version.is_known() {
                        claim.version = version;
                    }
                } else {
                    claim.set(Os::Ios, version, APPLE_DEVICE);
                }
            }
        }
        b'c' if word(s, b"CrOS") => claim.set(Os::Chromeos, VersionNumber::UNKNOWN, DESKTOP),
        b'f' if word(s, b"FreeBSD") || word(s, b"Fuchsia") => other(claim),
        b'h' if word(s, b"HarmonyOS") => claim.set(Os::Harmonyos, named_version(s, 9), NAMED),
        b'h' if word(s, b"hpwOS") => other(claim),
        b'i' if word(s, b"IEMobile") => other(claim),
        // Apple writes its devices' names so, or the whole header is lowercased (`ipad`);
        // `Iphone12 pro max` and `iphone Build/IMM76D` are the model names of Android phones.
        b'i' if s.starts_with(b"iPad") || s == b"ipad" => {
            claim.set(Os::Ipados, VersionNumber::UNKNOWN, APPLE_DEVICE)
        }
        b'i' if s.starts_with(b"iPhone")
            || s.starts_with(b"iPod")
            || s == b"iphone"
            || s == b"ipod touch" =>
        {
            claim.set(Os::Ios, VersionNumber::UNKNOWN, APPLE_DEVICE)
        }
        b'i' if word(s, b"iOS") => claim.set(Os::Ios, named_version(s, 3), APPLE_DEVICE),
        b'j' if s.eq_ignore_ascii_case(b"J2ME/MIDP") || s.eq_ignore_ascii_case(b"Java") => {
            other(claim)
        }
        b'k' if word(s, b"KaiOS") => other(claim),
        b'l' if word(s, b"Linux") => claim.set(Os::Linux, VersionNumber::UNKNOWN, UNIX),
        b'm' if s.eq_ignore_ascii_case(b"Macintosh") => {
            claim.set(Os::Macos, VersionNumber::UNKNOWN, MAC)
        }
        // Internet Explorer and Opera on PowerPC and 68k Macs: `Mac_PowerPC`, `Mac_PPC`,
        // `Mac_68000`. Microsoft's apps: `Mac OS/10.15.6`.
        b'm' if prefix(s, b"Mac_") => claim.set(Os::Macos, VersionNumber::UNKNOWN, MAC),
        b'm' if prefix(s, b"Mac OS/") => claim.set(Os::Macos, named_version(s, 6), MAC),
        b'm' if word(s, b"MeeGo") || word(s, b"Maemo") => other(claim),
        b'm' if prefix(s, b"Microsoft Windows") => {
            claim.set(Os::Windows, windows_version(named_version(s, 17)), DESKTOP)
        }
        b'n' if word(s, b"NetBSD") || prefix(s, b"Nintendo") => other(claim),
        b'o' if word(s, b"OpenHarmony") => claim.set(Os::Harmonyos, named_version(s, 11), NAMED),
        b'o' if word(s, b"OpenBSD") => other(claim),
        b'p' if prefix(s, b"PlayStation") || word(s, b"PlayBook") => other(claim),
        b'r' if prefix(s, b"RIM Tablet OS") => other(claim),
        // Sailfish OS and Samsung's TVs write their names so: `sailfish` is also a Pixel's
        // code name, and an Android TV box may add `smart-tv`.
        b's' if word(s, b"S60")
            || prefix(s, b"S60V")
            || prefix(s, b"Series")
            || prefix(s, b"Symbian")
            || word(s, b"SymbOS")
            || s.starts_with(b"Sailfish")
            || word(s, b"SunOS")
            || s.starts_with(b"SMART-TV") =>
        {
            other(claim)
        }
        b't' if word(s, b"Tizen") => other(claim),
        b't' if word(s, b"tvOS") => claim.set(Os::Tvos, named_version(s, 4), APPLE_DEVICE),
        b'u' if word(s, b"Ubuntu") => claim.set(Os::Linux, VersionNumber::UNKNOWN, UNIX),
        b'w' if prefix(s, b"Windows Phone")
            || prefix(s, b"Windows Mobile")
            || word(s, b"Web0S")
            || word(s, b"webOS")
            || word(s, b"watchOS")
            || word(s, b"wds") =>
        {
            other(claim)
        }
        b'w' if prefix(s, b"Windows NT ") => {
            claim.set(Os::Windows, windows_version(named_version(s, 10)), DESKTOP)
        }
        b'w' if word(s, b"Windows") || prefix(s, b"WindowsCE") => {
            claim.set(Os::Windows, named_version(s, 7), DESKTOP)
        }
        b'w' => {
            if let Some(version) = old_windows(s) {
                claim.set(Os::Windows, version, DESKTOP);
            }
        }
        b'x' if s.eq_ignore_ascii_case(b"X11") => {
            claim.x11 = true;
            claim.set(Os::Linux, VersionNumber::UNKNOWN, UNIX);
        }
        b'x' | b'z' if s.eq_ignore_ascii_case(b"XBLWP7") || s.eq_ignore_ascii_case(b"ZuneWP7") => {
            other(claim)
        }
        _ if claim.rank >= MAC => {
            // "Intel Mac OS X 10_15_7", "PPC Mac OS X", "Macintosh; OS X 10.9.2".
            if let Some(at) = find(s, b"OS X") {
                claim.set(Os::Macos, apple_version(trim(&s[at + 4..])), MAC);
            }
        }
        _ => {}
    }
}

/// `Windows NT 10.0` is Windows 10 (and 11, which reports the same), 6.3 is 8.1, 6.2 is 8,
/// 6.1 is 7.
fn windows_version(nt: VersionNumber) -> VersionNumber {
    match nt.components() {
        [10, ..] => VersionNumber::from_components(&[10]),
        [6, 3, ..] => VersionNumber::from_components(&[8, 1]),
        [6, 2, ..] => VersionNumber::from_components(&[8]),
        [6, 1, ..] => VersionNumber::from_components(&[7]),
        [6, 0, ..] => VersionNumber::from_components(&[6]),
        _ => nt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ua: &str, os: Os, version: &str) {
        let c = from_comments(ua.as_bytes());
        assert_eq!(
            (c.os, c.version.to_string().as_str()),
            (os, version),
            "{ua}"
        );
    }

    #[test]
    fn the_strongest_claim_of_the_first_naming_comment_wins() {
        check(
            "(Linux; Android 12; HarmonyOS; NOH-AN00)",
            Os::Harmonyos,
            "",
        );
        check("(iPad; CPU OS 16_6 like Mac OS X)", Os::Ipados, "16.6");
        check(
            "(Mobile; Windows Phone 8.1; Android 4.0; ARM)",
            Os::Other,
            "",
        );
        check(
            "(Windows; U; wds 7.10; en-US; DELL; Venue Pro)",
            Os::Other,
            "",
        );
        check("(Windows NT 6.3; Win64; x64)", Os::Windows, "8.1");
        check("(Macintosh; Intel Mac OS X 10_15_7)", Os::Macos, "10.15.7");
        check("(Macintosh; OS X 10.9.2)", Os::Macos, "10.9.2");
        check("(X11; CrOS x86_64 14541.0.0)", Os::Chromeos, "");
        check("(X11; U; SunOS i86pc; en-US)", Os::Other, "");
        check("(surveyon) (Android: 11; MODEL:CPH2127)", Os::Android, "11");
        check(
            "Bot/1 (+http://x) (KHTML) (HarmonyOS 3.0.0)",
            Os::Harmonyos,
            "3.0.0",
        );
        check(
            "PAN GP/4 (Microsoft Windows 10 Pro , 64-bit)",
            Os::Windows,
            "10",
        );
        check("(compatible; Googlebot/2.1)", Os::Other, "");
        assert!(!from_comments(b"curl/8.5.0").found());
        assert!(from_comments(b"(X11; Linux x86_64)").x11);
    }

    #[test]
    fn reads_past_borrowed_names_lowercase_and_old_systems() {
        for (ua, os, version) in [
            // HarmonyOS may name itself in a later comment, after Android only.
            (
                "(Linux; Android 12; LNA-AL00 Build/HUAWEILNA-AL00; wv) (KHTML, like Gecko) BDOS/1.0 (HarmonyOS 3.0.0) (Baidu; P1 12)",
                Os::Harmonyos,
                "3.0.0",
            ),
            (
                "(Linux; Android 12; LNA-AL00; wv) (KHTML, like Gecko) (Baidu; P1 12)",
                Os::Android,
                "12",
            ),
            (
                "(iPhone; CPU iPhone OS 17_1 like Mac OS X) (HarmonyOS 3.0)",
                Os::Ios,
                "17.1",
            ),
            // Names in any case, except those that are also models' names.
            (
                "(linux; android 11; mi 10 pro build/rkq1.200826.002; wv)",
                Os::Android,
                "11",
            ),
            ("(windows nt 6.1; wow64)", Os::Windows, "7"),
            ("(macintosh; intel mac os x 10_13_6)", Os::Macos, "10.13.6"),
            ("(ipad; cpu os 14_6 like mac os x)", Os::Ipados, "14.6"),
            ("(Linux; Android 10; sailfish)", Os::Android, "10"),
            ("(Linux; Android 10; Iphone12 pro max)", Os::Android, "10"),
            (
                "(Linux; U; Android 5.0.1; NVIDIA Shield; smart-tv)",
                Os::Android,
                "5.0.1",
            ),
            // Apple TV, with the version of the `CPU OS` beside it.
            (
                "(AppleTV11,1; CPU OS 11.1 like Mac OS X; en-US)",
                Os::Tvos,
                "11.1",
            ),
            (
                "(Apple TV; U; CPU OS 8_3 like Mac OS X; en_us)",
                Os::Tvos,
                "8.3",
            ),
            (
                "(com.MTGx.ViaFree.dk; build:7341; tvOS 12.1.0)",
                Os::Tvos,
                "12.1.0",
            ),
            // The Macs and Windows of the 1990s.
            ("(compatible; MSIE 5.17; Mac_PowerPC)", Os::Macos, ""),
            ("(Macintosh; I; 68K)", Os::Macos, ""),
            ("(Mac OS/10.15.6; Desktop; es-MX)", Os::Macos, "10.15.6"),
            ("(Windows; U; Win98; en-US; rv:1.7.5)", Os::Windows, "98"),
            ("(X11; U; Win95; en-US; rv:1.8.1)", Os::Windows, "95"),
            ("(Windows; U; Win 9x 4.90; en-US)", Os::Windows, ""),
            ("(Windows; U; WinNT4.0; en-US)", Os::Windows, "4.0"),
            ("(Windows NT 10.0; Win64; x64)", Os::Windows, "10"),
        ] {
            check(ua, os, version);
        }
        assert_eq!(old_windows(b"Winamp/5.9"), None);
        assert_eq!(old_windows(b"Win Media"), None);
    }
}
