//! The facts about a request that the decision engine looks at.
//!
//! The proxy implements [`Request`] over the live HTTP request without copying it; the
//! simulator and tests use [`RequestFacts`], a plain owned struct.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Read access to a request. Lookups return the first value when a name repeats.
pub trait Request {
    /// A header value; `name` is lowercase.
    fn header(&self, name: &str) -> Option<&str>;
    /// A cookie value from the `Cookie` header(s).
    fn cookie(&self, name: &str) -> Option<&str>;
    /// A query parameter, percent-decoded (allocates only when the value is encoded).
    fn query(&self, name: &str) -> Option<Cow<'_, str>>;
    /// The address of the client: the peer, or what a trusted front proxy said it was.
    fn client_ip(&self) -> Option<IpAddr>;
    /// The `User-Agent` header as raw bytes: classification reads only its ASCII bytes, so a
    /// value that is not UTF-8 classifies like its lossy decoding, the text a simulator sees.
    fn user_agent(&self) -> Option<&[u8]> {
        self.header("user-agent").map(str::as_bytes)
    }
    /// The full-link lane the request arrived in, already checked: a proxy gives it only
    /// when the lane header came from a trusted source and names a lane. `None` by default.
    fn lane(&self) -> Option<&str> {
        None
    }
}

/// Finds `name` in a `Cookie` header value (`a=1; b=2`). Surrounding double quotes are kept,
/// as RFC 6265 leaves them part of the value.
pub fn find_cookie<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    find_cookie_bytes(cookie_header.as_bytes(), name).and_then(|v| std::str::from_utf8(v).ok())
}

/// [`find_cookie`] over raw header bytes: one pass, no allocation, nothing decoded but the
/// value found.
pub fn find_cookie_bytes<'a>(cookie_header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    // A pair is a match only if it starts with the name (after optional whitespace) and
    // then, after more, comes `=`; any other pair is skipped to its `;` without looking at
    // its bytes one by one.
    let name = name.as_bytes();
    // Such a name is never the text before a pair's first `=` with its whitespace trimmed.
    if name.contains(&b'=') || matches!(name.last(), Some(b' ' | b'\t')) {
        return None;
    }
    let mut rest = cookie_header;
    loop {
        let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
        let pair = trim_leading_ows(&rest[..end]);
        if let Some(after) = pair.strip_prefix(name)
            && let [b'=', value @ ..] = trim_leading_ows(after)
        {
            return Some(trim_ows(value));
        }
        rest = rest.get(end + 1..)?;
    }
}

fn trim_leading_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Without surrounding spaces and tabs (HTTP's optional whitespace).
fn trim_ows(s: &[u8]) -> &[u8] {
    let mut s = trim_leading_ows(s);
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Finds `name` in a raw query string (`a=1&b=x%20y`), decoding `%XX` and `+`. Keys are
/// compared raw unless they are encoded, and only the value found is decoded.
pub fn find_query<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let bytes = query.as_bytes();
    let mut start = 0;
    let pairs = std::iter::from_fn(|| {
        if start > bytes.len() {
            return None;
        }
        let end = memchr::memchr(b'&', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        let pair = &query[start..end];
        start = end + 1;
        Some(pair)
    });
    pairs.into_iter().find_map(|pair| {
        let (k, v) = match memchr::memchr(b'=', pair.as_bytes()) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        let matches = if k.bytes().any(|b| b == b'%' || b == b'+') {
            decode(k) == name
        } else {
            k == name
        };
        matches.then(|| decode(v))
    })
}

fn decode(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b == b'%' || b == b'+') {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| Cow::Owned(v.into_owned()))
            .unwrap_or(Cow::Borrowed(s))
    } else {
        Cow::Borrowed(s)
    }
}

/// An owned set of request facts, for the simulator and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestFacts {
    pub host: String,
    pub path: String,
    /// Header names are matched case-insensitively.
    pub headers: BTreeMap<String, String>,
    pub cookies: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
    pub user_agent: String,
    /// Textual IPv4 or IPv6 address; empty when unknown.
    pub client_ip: String,
    /// The lane the request arrives in, as if its lane header came from a trusted source;
    /// empty for none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub lane: String,
}

impl RequestFacts {
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_string());
        self
    }

    pub fn with_cookie(mut self, name: &str, value: &str) -> Self {
        self.cookies.insert(name.to_string(), value.to_string());
        self
    }

    pub fn with_query(mut self, name: &str, value: &str) -> Self {
        self.query.insert(name.to_string(), value.to_string());
        self
    }

    pub fn with_user_agent(mut self, ua: &str) -> Self {
        self.user_agent = ua.to_string();
        self
    }

    pub fn with_client_ip(mut self, ip: &str) -> Self {
        self.client_ip = ip.to_string();
        self
    }

    pub fn with_lane(mut self, lane: &str) -> Self {
        self.lane = lane.to_string();
        self
    }
}

impl Request for RequestFacts {
    fn header(&self, name: &str) -> Option<&str> {
        if name == "user-agent" && !self.user_agent.is_empty() {
            return Some(&self.user_agent);
        }
        if name == "cookie" && !self.cookies.is_empty() {
            return None; // cookies are given one by one, see `cookie`
        }
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.cookies.get(name) {
            return Some(v);
        }
        let header = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("cookie"))?;
        find_cookie(header.1, name)
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        self.query.get(name).map(|v| Cow::Borrowed(v.as_str()))
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip.trim().parse().ok()
    }

    fn lane(&self) -> Option<&str> {
        (!self.lane.is_empty()).then_some(self.lane.as_str())
    }
}

/// A request seen through another, with one extra cookie: how a proxy routes the first
/// request of a user it has just minted a sticky cookie for.
#[derive(Debug)]
pub struct WithCookie<'a, R: ?Sized> {
    pub inner: &'a R,
    pub name: &'a str,
    pub value: &'a str,
}

impl<R: Request + ?Sized> Request for WithCookie<'_, R> {
    fn header(&self, name: &str) -> Option<&str> {
        self.inner.header(name)
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        if name == self.name {
            Some(self.value)
        } else {
            self.inner.cookie(name)
        }
    }

    fn query(&self, name: &str) -> Option<Cow<'_, str>> {
        self.inner.query(name)
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.inner.client_ip()
    }

    fn user_agent(&self) -> Option<&[u8]> {
        self.inner.user_agent()
    }

    fn lane(&self) -> Option<&str> {
        self.inner.lane()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_lookup() {
        for (header, name, expected) in [
            ("a=1; b=2", "b", Some("2")),
            ("a=1;b=2", "b", Some("2")),
            (" uid = abc ", "uid", Some("abc")),
            ("a=1; ab=2", "b", None),
            ("a=1; b", "b", None),
            ("a=x=y", "a", Some("x=y")),
            ("a=\"q\"", "a", Some("\"q\"")),
            ("", "a", None),
            ("a=; b=2", "a", Some("")),
            // Never a name: it holds `=` or ends in whitespace.
            ("==", "=", None),
            ("a =1", "a ", None),
        ] {
            assert_eq!(find_cookie(header, name), expected, "{header:?} {name}");
        }
    }

    /// The cookie scan as first written, byte by byte: the meaning the faster one keeps.
    fn find_cookie_by_bytes<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
        let (mut start, mut eq) = (0, None);
        for (i, b) in header
            .iter()
            .copied()
            .enumerate()
            .chain([(header.len(), b';')])
        {
            match b {
                b'=' if eq.is_none() => eq = Some(i),
                b';' => {
                    if let Some(e) = eq
                        && trim_ows(&header[start..e]) == name
                    {
                        return Some(trim_ows(&header[e + 1..i]));
                    }
                    start = i + 1;
                    eq = None;
                }
                _ => {}
            }
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn cookie_scan_agrees_with_the_byte_by_byte_one(
            header in "[ab= ;\t\"x]{0,24}",
            name in "[ab= \tx]{0,3}",
        ) {
            proptest::prop_assert_eq!(
                find_cookie_bytes(header.as_bytes(), &name),
                find_cookie_by_bytes(header.as_bytes(), name.as_bytes()),
            );
        }
    }

    #[test]
    fn query_lookup_decodes() {
        for (query, name, expected) in [
            ("a=1&b=2", "b", Some("2")),
            ("a=x%20y", "a", Some("x y")),
            ("a=x+y", "a", Some("x y")),
            ("flag&a=1", "flag", Some("")),
            ("a=1&a=2", "a", Some("1")),
            ("x%2By=1", "x+y", Some("1")),
            ("a%20b=c%26d", "a b", Some("c&d")),
            ("&&a=1", "a", Some("1")),
            ("ab=1", "a", None),
            ("", "a", None),
        ] {
            assert_eq!(
                find_query(query, name).as_deref(),
                expected,
                "{query:?} {name}"
            );
        }
        assert!(matches!(find_query("a=plain", "a"), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn facts_answer_like_a_request() {
        let r = RequestFacts::default()
            .with_header("X-Canary", "yes")
            .with_header("Cookie", "uid=7; lang=fr")
            .with_client_ip(" 10.1.2.3 ");
        assert_eq!(r.header("x-canary"), Some("yes"));
        assert_eq!(r.cookie("lang"), Some("fr"));
        assert_eq!(r.client_ip(), "10.1.2.3".parse().ok());
        let minted = WithCookie {
            inner: &r,
            name: "gl",
            value: "m1",
        };
        assert_eq!(minted.cookie("gl"), Some("m1"));
        assert_eq!(minted.cookie("uid"), Some("7"));
    }
}
