//! The platform a User-Agent's comments name: `(Linux; Android 14; Pixel 8)`,
//! `(iPhone; CPU iPhone OS 17_1 like Mac OS X)`, `(Windows NT 10.0; Win64; x64)`.
//!
//! Comments are read in order until one names a system; within it the strongest claim wins,
//! because systems borrow each other's names: HarmonyOS phones say "Android", iPhones say
//! "like Mac OS X", and Windows Phone says "Android" and "iPhone" to be served mobile pages.
//! Systems without a family of their own (Windows Phone and Windows Mobile, BlackBerry,
//! Symbian, KaiOS, the BSDs, game consoles, TVs and watches) are recognised too, so that they
//! are not taken for the system they resemble. Windows CE counts as Windows, as uap-core has
//! it, unless it says it is Windows Mobile.

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

/// The first comment that names a platform, and what it says.
pub(super) fn from_comments(ua: &[u8]) -> Claim {
    let mut rest = ua;
    while let Some(open) = memchr::memchr(b'(', rest) {
        rest = &rest[open + 1..];
        let (comment, next) = match memchr::memchr(b')', rest) {
            Some(close) => (&rest[..close], &rest[close + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let claim = from_comment(comment);
        if claim.found() {
            return claim;
        }
        rest = next;
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

/// Whether `s` starts with `prefix` followed by the end, a space or a version.
fn word(s: &[u8], prefix: &[u8]) -> bool {
    s.starts_with(prefix)
        && s.get(prefix.len())
            .is_none_or(|&b| matches!(b, b' ' | b'+' | b'/' | b'_' | b'-' | b':' | b'0'..=b'9'))
}

/// The version after a system's name: `Android 14`, `Bada/1.0`, `Android: 11`.
fn named_version(s: &[u8], name_len: usize) -> VersionNumber {
    let rest = trim(&s[name_len..]);
    match rest {
        [b':' | b'/', tail @ ..] => version_after(trim(tail)),
        _ => version_after(rest),
    }
}

/// Reads one `;`-separated segment. Dispatching on the first byte keeps the comparisons few.
fn segment_claim(s: &[u8], claim: &mut Claim) {
    let Some(&first) = s.first() else {
        return;
    };
    let other = |claim: &mut Claim| claim.set(Os::Other, VersionNumber::UNKNOWN, NAMED);
    match first {
        b'A' if word(s, b"Android") => claim.set(Os::Android, named_version(s, 7), ANDROID),
        // UC Browser's abbreviation.
        b'A' if word(s, b"Adr") => claim.set(Os::Android, named_version(s, 3), ANDROID),
        b'A' if s.starts_with(b"Apple TV") => other(claim),
        b'B' if s.starts_with(b"BlackBerry")
            || word(s, b"BB10")
            || word(s, b"BSD")
            || word(s, b"Bada")
            || word(s, b"BREW")
            || word(s, b"Brew")
            || word(s, b"BMP") =>
        {
            other(claim)
        }
        b'C' if s.starts_with(b"CPU ") => {
            // "CPU iPhone OS 17_1 like Mac OS X", "CPU OS 16_6 like Mac OS X" (iPad).
            if let Some(at) = memchr::memmem::find(s, b"OS ") {
                let version = VersionNumber::parse_lenient(&s[at + 3..], b'_');
                if claim.rank == APPLE_DEVICE {
                    if !claim.version.is_known() {
                        claim.version = version;
                    }
                } else {
                    claim.set(Os::Ios, version, APPLE_DEVICE);
                }
            }
        }
        b'C' if word(s, b"CrOS") => claim.set(Os::Chromeos, VersionNumber::UNKNOWN, DESKTOP),
        b'F' if word(s, b"FreeBSD") || word(s, b"Fuchsia") => other(claim),
        b'H' if word(s, b"HarmonyOS") => claim.set(Os::Harmonyos, named_version(s, 9), NAMED),
        b'I' if word(s, b"IEMobile") => other(claim),
        b'J' if s == b"J2ME/MIDP" || s == b"Java" => other(claim),
        b'K' if word(s, b"KAIOS") || word(s, b"KaiOS") => other(claim),
        b'L' if word(s, b"Linux") => claim.set(Os::Linux, VersionNumber::UNKNOWN, UNIX),
        b'M' if s == b"Macintosh" => claim.set(Os::Macos, VersionNumber::UNKNOWN, MAC),
        b'M' if word(s, b"MeeGo") || word(s, b"Maemo") => other(claim),
        b'M' if s.starts_with(b"Microsoft Windows") => {
            claim.set(Os::Windows, windows_version(named_version(s, 17)), DESKTOP)
        }
        b'N' if word(s, b"NetBSD") || s.starts_with(b"Nintendo") => other(claim),
        b'O' if word(s, b"OpenHarmony") => claim.set(Os::Harmonyos, named_version(s, 11), NAMED),
        b'O' if word(s, b"OpenBSD") => other(claim),
        b'P' if s.starts_with(b"PlayStation")
            || s.starts_with(b"PLAYSTATION")
            || word(s, b"PlayBook") =>
        {
            other(claim)
        }
        b'R' if s.starts_with(b"RIM Tablet OS") => other(claim),
        b'S' if word(s, b"S60")
            || s.starts_with(b"S60V")
            || s.starts_with(b"Series")
            || s.starts_with(b"Symbian")
            || word(s, b"SymbOS")
            || word(s, b"Sailfish")
            || word(s, b"SunOS")
            || s.starts_with(b"SMART-TV") =>
        {
            other(claim)
        }
        b'T' if word(s, b"Tizen") => other(claim),
        b'U' if word(s, b"Ubuntu") => claim.set(Os::Linux, VersionNumber::UNKNOWN, UNIX),
        b'W' if s.starts_with(b"Windows Phone")
            || s.starts_with(b"Windows Mobile")
            || word(s, b"Web0S") =>
        {
            other(claim)
        }
        b'W' if s.starts_with(b"Windows NT ") => {
            claim.set(Os::Windows, windows_version(named_version(s, 10)), DESKTOP)
        }
        b'W' if word(s, b"Windows") || s.starts_with(b"WindowsCE") => {
            claim.set(Os::Windows, named_version(s, 7), DESKTOP)
        }
        b'X' if s == b"X11" => {
            claim.x11 = true;
            claim.set(Os::Linux, VersionNumber::UNKNOWN, UNIX);
        }
        b'X' | b'Z' if s == b"XBLWP7" || s == b"ZuneWP7" => other(claim),
        b'h' if word(s, b"hpwOS") => other(claim),
        b'i' if s.starts_with(b"iPad") => {
            claim.set(Os::Ipados, VersionNumber::UNKNOWN, APPLE_DEVICE)
        }
        b'i' if s.starts_with(b"iPhone") || s.starts_with(b"iPod") => {
            claim.set(Os::Ios, VersionNumber::UNKNOWN, APPLE_DEVICE)
        }
        b'i' if word(s, b"iOS") => claim.set(Os::Ios, named_version(s, 3), APPLE_DEVICE),
        b't' if word(s, b"tvOS") => other(claim),
        b'w' if word(s, b"webOS") || word(s, b"watchOS") || word(s, b"wds") => other(claim),
        _ if claim.rank >= MAC => {
            // "Intel Mac OS X 10_15_7", "PPC Mac OS X", "Macintosh; OS X 10.9.2".
            if let Some(at) = memchr::memmem::find(s, b"OS X") {
                let v = trim(&s[at + 4..]);
                let sep = if memchr::memchr(b'_', v).is_some() {
                    b'_'
                } else {
                    b'.'
                };
                claim.set(Os::Macos, VersionNumber::parse_lenient(v, sep), MAC);
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
}
