//! Dotted version numbers (`15.4`, `120.0.6099.71`) as found in User-Agent strings, and the
//! component-wise comparison OS and browser conditions use.

use std::cmp::Ordering;
use std::fmt;

/// Up to four numeric components; more are ignored.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VersionNumber {
    parts: [u32; 4],
    len: u8,
}

impl VersionNumber {
    pub const UNKNOWN: VersionNumber = VersionNumber {
        parts: [0; 4],
        len: 0,
    };

    /// Reads leading digits separated by `sep` (`.` or `_`), stopping at anything else:
    /// `"17_1_2 like"` with `_` gives 17.1.2. Returns [`VersionNumber::UNKNOWN`] when `s` does
    /// not start with a digit. Text or raw bytes alike: only ASCII digits and `sep` count.
    pub fn parse_lenient(s: impl AsRef<[u8]>, sep: u8) -> VersionNumber {
        let mut v = VersionNumber::UNKNOWN;
        let mut current: Option<u32> = None;
        for &b in s.as_ref() {
            match b {
                b'0'..=b'9' => {
                    let d = u32::from(b - b'0');
                    current = Some(current.unwrap_or(0).saturating_mul(10).saturating_add(d));
                }
                _ if b == sep && current.is_some() => {
                    if !v.push(current.take().unwrap_or(0)) {
                        return v;
                    }
                }
                _ => break,
            }
        }
        if let Some(c) = current {
            v.push(c);
        }
        v
    }

    /// Strict parse for policy bounds: 1–4 dot-separated numbers, nothing else.
    pub fn parse_bound(s: &str) -> Result<VersionNumber, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        let mut v = VersionNumber::UNKNOWN;
        for part in s.split('.') {
            if part.is_empty() || part.len() > 9 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "`{s}` is not a version like `10` or `15.4` (1 to 4 numbers separated by dots)"
                ));
            }
            let n: u32 = part.parse().map_err(|_| format!("`{part}` is too large"))?;
            if !v.push(n) {
                return Err(format!("`{s}` has more than 4 components"));
            }
        }
        Ok(v)
    }

    /// The version with these components (at most four are kept).
    pub fn from_components(parts: &[u32]) -> VersionNumber {
        let mut v = VersionNumber::UNKNOWN;
        for &p in parts.iter().take(4) {
            v.push(p);
        }
        v
    }

    fn push(&mut self, n: u32) -> bool {
        if usize::from(self.len) == self.parts.len() {
            return false;
        }
        self.parts[usize::from(self.len)] = n;
        self.len += 1;
        true
    }

    pub fn is_known(&self) -> bool {
        self.len > 0
    }

    pub fn components(&self) -> &[u32] {
        &self.parts[..usize::from(self.len)]
    }

    /// Compares `self` with `bound` over the components `bound` gives; components `self` lacks
    /// count as 0. So 13.5.1 compares equal to the bound 13, and 13 compares less than 13.1.
    pub fn cmp_to_bound(&self, bound: &VersionNumber) -> Ordering {
        for i in 0..usize::from(bound.len) {
            let mine = if i < usize::from(self.len) {
                self.parts[i]
            } else {
                0
            };
            match mine.cmp(&bound.parts[i]) {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        Ordering::Equal
    }

    /// Whether `self` lies within the optional inclusive bounds. An unknown version lies
    /// within no bound, but within "no bounds at all".
    pub fn within(&self, min: Option<&VersionNumber>, max: Option<&VersionNumber>) -> bool {
        if min.is_none() && max.is_none() {
            return true;
        }
        if !self.is_known() {
            return false;
        }
        min.is_none_or(|m| self.cmp_to_bound(m) != Ordering::Less)
            && max.is_none_or(|m| self.cmp_to_bound(m) != Ordering::Greater)
    }
}

impl fmt::Display for VersionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.components().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VersionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VersionNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> VersionNumber {
        VersionNumber::parse_bound(s).unwrap()
    }

    #[test]
    fn lenient_parse_stops_at_the_first_foreign_byte() {
        for (input, sep, expected) in [
            ("17_1_2 like Mac", b'_', "17.1.2"),
            ("120.0.6099.71 Safari", b'.', "120.0.6099.71"),
            ("8.0.44(0x18002c2d)", b'.', "8.0.44"),
            ("1.2.3.4.5", b'.', "1.2.3.4"),
            ("14; Pixel", b'.', "14"),
            ("x1", b'.', ""),
            ("", b'.', ""),
        ] {
            assert_eq!(
                VersionNumber::parse_lenient(input, sep).to_string(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn bounds_are_strict() {
        for bad in [
            "",
            "1.",
            ".1",
            "1..2",
            "a",
            "1.2.3.4.5",
            "1-2",
            "9999999999",
        ] {
            assert!(VersionNumber::parse_bound(bad).is_err(), "{bad:?}");
        }
        assert_eq!(v("15.4").components(), &[15, 4]);
    }

    #[test]
    fn comparison_uses_the_bound_components() {
        let ua = VersionNumber::parse_lenient("13.5.1", b'.');
        assert!(ua.within(Some(&v("13")), Some(&v("13"))));
        assert!(ua.within(Some(&v("13.5")), None));
        assert!(!ua.within(Some(&v("13.6")), None));
        assert!(!ua.within(None, Some(&v("13.4"))));
        assert!(ua.within(None, Some(&v("14"))));
        let short = VersionNumber::parse_lenient("13", b'.');
        assert!(!short.within(Some(&v("13.1")), None));
        assert!(short.within(None, Some(&v("13.0.0"))));
        assert!(VersionNumber::UNKNOWN.within(None, None));
        assert!(!VersionNumber::UNKNOWN.within(Some(&v("1")), None));
    }
}
