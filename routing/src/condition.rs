//! Rule conditions compiled for matching: regexes built, CIDRs parsed, names normalised.

use std::net::IpAddr;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

use crate::invalid::FieldError;
use crate::limits::*;
use crate::model::{CidrMatch, Condition, FamilyMatch, FieldMatch, MatchOp};
use crate::request::Request;
use crate::useragent::{Browser, Os, UserAgent};
use crate::version_number::VersionNumber;

/// A condition ready to be evaluated.
#[derive(Clone, Debug)]
pub struct CompiledCondition {
    test: Test,
    negate: bool,
}

#[derive(Clone, Debug)]
enum Test {
    Header(String, CompiledOp),
    Cookie(String, CompiledOp),
    Query(String, CompiledOp),
    Os(Os, Range),
    Browser(Browser, Range),
    SourceIp(Vec<IpNet>),
}

#[derive(Clone, Debug)]
struct Range {
    min: Option<VersionNumber>,
    max: Option<VersionNumber>,
}

#[derive(Clone, Debug)]
enum CompiledOp {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Present,
    Absent,
    /// Sorted, for a binary search.
    OneOf(Vec<String>),
}

impl CompiledOp {
    fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (CompiledOp::Present, v) => v.is_some(),
            (CompiledOp::Absent, v) => v.is_none(),
            (_, None) => false,
            (CompiledOp::Exact(want), Some(v)) => v == want,
            (CompiledOp::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (CompiledOp::Regex(re), Some(v)) => re.is_match(v),
            (CompiledOp::OneOf(list), Some(v)) => {
                list.binary_search_by(|probe| probe.as_str().cmp(v)).is_ok()
            }
        }
    }
}

/// Lazily classified User-Agent, shared by all conditions of one decision.
#[derive(Debug, Default)]
pub(crate) struct UaCache(Option<UserAgent>);

impl UaCache {
    pub(crate) fn get(&mut self, req: &(impl Request + ?Sized)) -> &UserAgent {
        self.0.get_or_insert_with(|| {
            crate::useragent::classify_cached(req.user_agent().unwrap_or_default())
        })
    }
}

impl CompiledCondition {
    pub(crate) fn matches(&self, req: &(impl Request + ?Sized), ua: &mut UaCache) -> bool {
        let hit = match &self.test {
            Test::Header(name, op) => op.matches(req.header(name)),
            Test::Cookie(name, op) => op.matches(req.cookie(name)),
            Test::Query(name, op) => op.matches(req.query(name).as_deref()),
            Test::Os(family, range) => {
                let ua = ua.get(req);
                ua.os == *family && ua.os_version.within(range.min.as_ref(), range.max.as_ref())
            }
            Test::Browser(family, range) => {
                let ua = ua.get(req);
                ua.browser == *family
                    && ua
                        .browser_version
                        .within(range.min.as_ref(), range.max.as_ref())
            }
            Test::SourceIp(nets) => req
                .client_ip()
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&canonical(ip)))),
        };
        hit != self.negate
    }

    /// Checks and compiles one condition; `path` is its field path, e.g.
    /// `policy.rules[0].conditions[1]`.
    pub fn compile(c: &Condition, path: &str, errors: &mut Vec<FieldError>) -> Option<Self> {
        let before = errors.len();
        let (test, negate) = match c {
            Condition::Header(m) => {
                let p = format!("{path}.header");
                check_token(&m.name, &format!("{p}.name"), "header", errors);
                let op = compile_op(m, &p, errors);
                (Test::Header(m.name.to_ascii_lowercase(), op?), m.negate)
            }
            Condition::Cookie(m) => {
                let p = format!("{path}.cookie");
                check_token(&m.name, &format!("{p}.name"), "cookie", errors);
                (
                    Test::Cookie(m.name.clone(), compile_op(m, &p, errors)?),
                    m.negate,
                )
            }
            Condition::Query(m) => {
                let p = format!("{path}.query");
                check_name(&m.name, &format!("{p}.name"), errors);
                (
                    Test::Query(m.name.clone(), compile_op(m, &p, errors)?),
                    m.negate,
                )
            }
            Condition::Os(m) => {
                let p = format!("{path}.os");
                let family = Os::from_name(&m.family);
                if family.is_none() {
                    errors.push(FieldError::new(
                        format!("{p}.family"),
                        format!(
                            "unknown OS family `{}`; expected one of {}",
                            m.family,
                            Os::names()
                        ),
                    ));
                }
                let range = compile_range(m, &p, errors);
                (Test::Os(family?, range?), m.negate)
            }
            Condition::Browser(m) => {
                let p = format!("{path}.browser");
                let family = Browser::from_name(&m.family);
                if family.is_none() {
                    errors.push(FieldError::new(
                        format!("{p}.family"),
                        format!(
                            "unknown browser family `{}`; expected one of {}",
                            m.family,
                            Browser::names()
                        ),
                    ));
                }
                let range = compile_range(m, &p, errors);
                (Test::Browser(family?, range?), m.negate)
            }
            Condition::SourceIp(m) => (
                Test::SourceIp(compile_cidrs(m, &format!("{path}.source_ip"), errors)),
                m.negate,
            ),
        };
        (errors.len() == before).then_some(CompiledCondition { test, negate })
    }
}

/// IPv4-mapped IPv6 addresses (how a dual-stack socket reports IPv4 peers) match IPv4 nets.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// HTTP token characters (RFC 9110), the alphabet of header and cookie names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn check_token(name: &str, path: &str, what: &str, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        errors.push(FieldError::new(
            path,
            format!("{what} name must not be empty"),
        ));
    } else if name.len() > MAX_FIELD_NAME_LEN {
        errors.push(FieldError::new(
            path,
            format!("longer than {MAX_FIELD_NAME_LEN} characters"),
        ));
    } else if !is_token(name) {
        errors.push(FieldError::new(
            path,
            format!("`{name}` is not a valid {what} name (letters, digits and !#$%&'*+-.^_`|~)"),
        ));
    }
}

fn check_name(name: &str, path: &str, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        errors.push(FieldError::new(path, "name must not be empty"));
    } else if name.len() > MAX_FIELD_NAME_LEN {
        errors.push(FieldError::new(
            path,
            format!("longer than {MAX_FIELD_NAME_LEN} characters"),
        ));
    }
}

fn check_value(v: &str, path: &str, errors: &mut Vec<FieldError>) {
    if v.len() > MAX_VALUE_LEN {
        errors.push(FieldError::new(
            path,
            format!("longer than {MAX_VALUE_LEN} characters"),
        ));
    }
}

fn compile_op(m: &FieldMatch, path: &str, errors: &mut Vec<FieldError>) -> Option<CompiledOp> {
    let path = format!("{path}.match");
    Some(match &m.op {
        MatchOp::Exact(v) => {
            check_value(v, &format!("{path}.exact"), errors);
            CompiledOp::Exact(v.clone())
        }
        MatchOp::Prefix(v) => {
            check_value(v, &format!("{path}.prefix"), errors);
            if v.is_empty() {
                errors.push(FieldError::new(
                    format!("{path}.prefix"),
                    "must not be empty (use `present` to match any value)",
                ));
            }
            CompiledOp::Prefix(v.clone())
        }
        MatchOp::Regex(pattern) => {
            CompiledOp::Regex(compile_regex(pattern, &format!("{path}.regex"), errors)?)
        }
        MatchOp::Present => CompiledOp::Present,
        MatchOp::Absent => CompiledOp::Absent,
        MatchOp::OneOf(values) => {
            let p = format!("{path}.one_of");
            if values.is_empty() {
                errors.push(FieldError::new(&p, "must list at least one value"));
            } else if values.len() > MAX_ONE_OF {
                errors.push(FieldError::new(
                    &p,
                    format!("at most {MAX_ONE_OF} values, got {}", values.len()),
                ));
            }
            for (i, v) in values.iter().enumerate() {
                check_value(v, &format!("{p}[{i}]"), errors);
            }
            let mut sorted = values.clone();
            sorted.sort();
            sorted.dedup();
            CompiledOp::OneOf(sorted)
        }
    })
}

fn compile_regex(pattern: &str, path: &str, errors: &mut Vec<FieldError>) -> Option<Regex> {
    if pattern.is_empty() {
        errors.push(FieldError::new(path, "must not be empty"));
        return None;
    }
    if pattern.len() > MAX_REGEX_LEN {
        errors.push(FieldError::new(
            path,
            format!(
                "pattern is {} characters; at most {MAX_REGEX_LEN} are allowed",
                pattern.len()
            ),
        ));
        return None;
    }
    match RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(re) => Some(re),
        Err(e) => {
            errors.push(FieldError::new(path, regex_message(&e)));
            None
        }
    }
}

/// The regex crate's message without its multi-line caret diagram: `unclosed group`.
fn regex_message(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => format!(
            "regex too large: compiled it needs more than the {} KiB allowed",
            limit / 1024
        ),
        other => {
            let text = other.to_string();
            text.lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .map_or(text.clone(), str::to_string)
        }
    }
}

fn compile_range(m: &FamilyMatch, path: &str, errors: &mut Vec<FieldError>) -> Option<Range> {
    let mut bound = |s: &str, field: &str| -> Result<Option<VersionNumber>, ()> {
        if s.is_empty() {
            return Ok(None);
        }
        VersionNumber::parse_bound(s).map(Some).map_err(|msg| {
            errors.push(FieldError::new(format!("{path}.{field}"), msg));
        })
    };
    let min = bound(&m.min_version, "min_version");
    let max = bound(&m.max_version, "max_version");
    let (min, max) = (min.ok()?, max.ok()?);
    if let (Some(lo), Some(hi)) = (&min, &max)
        && lo.cmp_to_bound(hi) == std::cmp::Ordering::Greater
    {
        errors.push(FieldError::new(
            format!("{path}.min_version"),
            format!(
                "min_version {} is above max_version {}",
                m.min_version, m.max_version
            ),
        ));
        return None;
    }
    Some(Range { min, max })
}

fn compile_cidrs(m: &CidrMatch, path: &str, errors: &mut Vec<FieldError>) -> Vec<IpNet> {
    let p = format!("{path}.cidrs");
    if m.cidrs.is_empty() {
        errors.push(FieldError::new(&p, "must list at least one network"));
    }
    parse_networks(&m.cidrs, &p, errors)
}

/// IP networks (a bare address is a /32 or /128), at most [`MAX_CIDRS`]; each one that is
/// not a network is reported at `path[i]`.
pub(crate) fn parse_networks(
    texts: &[String],
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<IpNet> {
    if texts.len() > MAX_CIDRS {
        errors.push(FieldError::new(
            path,
            format!("at most {MAX_CIDRS} networks, got {}", texts.len()),
        ));
    }
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let t = text.trim();
            let parsed = t
                .parse::<IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    errors.push(FieldError::new(
                        format!("{path}[{i}]"),
                        format!("`{text}` is not an IP network like 10.0.0.0/8 or 2001:db8::/32"),
                    ));
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestFacts;

    fn compile(c: Condition) -> CompiledCondition {
        let mut errors = Vec::new();
        CompiledCondition::compile(&c, "c", &mut errors)
            .unwrap_or_else(|| panic!("{c:?} did not compile: {errors:?}"))
    }

    fn errors_of(c: Condition) -> Vec<FieldError> {
        let mut errors = Vec::new();
        assert!(CompiledCondition::compile(&c, "c", &mut errors).is_none());
        errors
    }

    fn check(c: Condition, req: &RequestFacts, expected: bool) {
        let compiled = compile(c.clone());
        let got = compiled.matches(req, &mut UaCache::default());
        assert_eq!(got, expected, "{c:?} on {req:?}");
        // Negation always inverts.
        let negated = match c {
            Condition::Header(mut m) => {
                m.negate = !m.negate;
                Condition::Header(m)
            }
            Condition::Cookie(mut m) => {
                m.negate = !m.negate;
                Condition::Cookie(m)
            }
            Condition::Query(mut m) => {
                m.negate = !m.negate;
                Condition::Query(m)
            }
            Condition::Os(mut m) => {
                m.negate = !m.negate;
                Condition::Os(m)
            }
            Condition::Browser(mut m) => {
                m.negate = !m.negate;
                Condition::Browser(m)
            }
            Condition::SourceIp(mut m) => {
                m.negate = !m.negate;
                Condition::SourceIp(m)
            }
        };
        let got = compile(negated).matches(req, &mut UaCache::default());
        assert_eq!(got, !expected, "negated, on {req:?}");
    }

    fn field(name: &str, op: MatchOp) -> FieldMatch {
        FieldMatch {
            name: name.into(),
            op,
            negate: false,
        }
    }

    fn family(name: &str, min: &str, max: &str) -> FamilyMatch {
        FamilyMatch {
            family: name.into(),
            min_version: min.into(),
            max_version: max.into(),
            negate: false,
        }
    }

    fn cidrs(list: &[&str]) -> CidrMatch {
        CidrMatch {
            cidrs: list.iter().map(|s| s.to_string()).collect(),
            negate: false,
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_operator_on_headers_cookies_and_queries() {
        let with = |v: &str| {
            RequestFacts::default()
                .with_header("X-Tier", v)
                .with_cookie("tier", v)
                .with_query("tier", v)
        };
        let without = RequestFacts::default();
        type Kind = fn(FieldMatch) -> Condition;
        let kinds: [(Kind, &str); 3] = [
            (Condition::Header, "x-tier"),
            (Condition::Cookie, "tier"),
            (Condition::Query, "tier"),
        ];
        for (kind, name) in kinds {
            let table: Vec<(MatchOp, Option<&str>, bool)> = vec![
                (MatchOp::Exact("gold".into()), Some("gold"), true),
                (MatchOp::Exact("gold".into()), Some("Gold"), false),
                (MatchOp::Exact("gold".into()), Some("golden"), false),
                (MatchOp::Exact("gold".into()), None, false),
                (MatchOp::Exact(String::new()), Some(""), true),
                (MatchOp::Prefix("go".into()), Some("gold"), true),
                (MatchOp::Prefix("go".into()), Some("ago"), false),
                (MatchOp::Prefix("go".into()), None, false),
                (MatchOp::Regex("^g.l".into()), Some("gold"), true),
                (MatchOp::Regex("ol".into()), Some("gold"), true),
                (MatchOp::Regex("^ol".into()), Some("gold"), false),
                (MatchOp::Regex("x".into()), None, false),
                (MatchOp::Present, Some(""), true),
                (MatchOp::Present, None, false),
                (MatchOp::Absent, None, true),
                (MatchOp::Absent, Some("gold"), false),
                (
                    MatchOp::OneOf(strings(&["silver", "gold"])),
                    Some("gold"),
                    true,
                ),
                (
                    MatchOp::OneOf(strings(&["silver", "gold"])),
                    Some("bronze"),
                    false,
                ),
                (MatchOp::OneOf(strings(&["silver"])), None, false),
            ];
            for (op, value, expected) in table {
                let req = value.map_or(without.clone(), with);
                check(kind(field(name, op)), &req, expected);
            }
        }
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let req = RequestFacts::default().with_header("x-canary", "1");
        check(
            Condition::Header(field("X-Canary", MatchOp::Exact("1".into()))),
            &req,
            true,
        );
    }

    #[test]
    fn os_and_browser_families_with_version_ranges() {
        let android13 = "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
        let ios17 = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
        let ua = |s: &str| RequestFacts::default().with_user_agent(s);
        let table = [
            (Condition::Os(family("android", "", "")), android13, true),
            (Condition::Os(family("android", "13", "")), android13, true),
            (Condition::Os(family("android", "14", "")), android13, false),
            (Condition::Os(family("android", "", "12")), android13, false),
            (
                Condition::Os(family("android", "10", "13")),
                android13,
                true,
            ),
            (Condition::Os(family("ios", "", "")), android13, false),
            (Condition::Os(family("ios", "17", "17")), ios17, true),
            (Condition::Os(family("ios", "17.2", "")), ios17, false),
            (
                Condition::Browser(family("chrome", "", "")),
                android13,
                true,
            ),
            (
                Condition::Browser(family("chrome", "120", "")),
                android13,
                true,
            ),
            (
                Condition::Browser(family("chrome", "121", "")),
                android13,
                false,
            ),
            (
                Condition::Browser(family("safari", "", "")),
                android13,
                false,
            ),
            (
                Condition::Browser(family("safari", "16", "17.1")),
                ios17,
                true,
            ),
            (Condition::Os(family("android", "", "")), "", false),
            (
                Condition::Browser(family("chrome", "1", "")),
                "curl/8.0",
                false,
            ),
        ];
        for (c, agent, expected) in table {
            check(c, &ua(agent), expected);
        }
    }

    #[test]
    fn source_ip_networks() {
        let ip = |s: &str| RequestFacts::default().with_client_ip(s);
        let table = [
            (cidrs(&["10.0.0.0/8"]), ip("10.200.3.4"), true),
            (cidrs(&["10.0.0.0/8"]), ip("11.0.0.1"), false),
            (cidrs(&["192.168.1.7"]), ip("192.168.1.7"), true),
            (cidrs(&["192.168.1.7"]), ip("192.168.1.8"), false),
            (cidrs(&["10.0.0.0/8"]), ip("::ffff:10.1.1.1"), true),
            (cidrs(&["2001:db8::/32"]), ip("2001:db8::1"), true),
            (cidrs(&["2001:db8::/32"]), ip("2001:db9::1"), false),
            (cidrs(&["1.2.3.4/32", "5.6.0.0/16"]), ip("5.6.7.8"), true),
            (cidrs(&["10.0.0.0/8"]), RequestFacts::default(), false),
            (cidrs(&["10.1.2.3/8"]), ip("10.9.9.9"), true),
        ];
        for (m, req, expected) in table {
            check(Condition::SourceIp(m), &req, expected);
        }
    }

    #[test]
    fn bad_conditions_name_their_field() {
        let table: Vec<(Condition, &str, &str)> = vec![
            (
                Condition::Header(field("x", MatchOp::Regex("(abc".into()))),
                "c.header.match.regex",
                "unclosed group",
            ),
            (
                Condition::Header(field("x", MatchOp::Regex("a{1000}{1000}".into()))),
                "c.header.match.regex",
                "too large",
            ),
            (
                Condition::Header(field("x", MatchOp::Regex("a".repeat(2000)))),
                "c.header.match.regex",
                "at most 1024",
            ),
            (
                Condition::Header(field("x", MatchOp::Regex(String::new()))),
                "c.header.match.regex",
                "must not be empty",
            ),
            (
                Condition::Header(field("", MatchOp::Present)),
                "c.header.name",
                "must not be empty",
            ),
            (
                Condition::Header(field("bad name", MatchOp::Present)),
                "c.header.name",
                "not a valid header name",
            ),
            (
                Condition::Cookie(field("a;b", MatchOp::Present)),
                "c.cookie.name",
                "not a valid cookie name",
            ),
            (
                Condition::Query(field("", MatchOp::Present)),
                "c.query.name",
                "must not be empty",
            ),
            (
                Condition::Query(field("q", MatchOp::OneOf(vec![]))),
                "c.query.match.one_of",
                "at least one",
            ),
            (
                Condition::Cookie(field("c", MatchOp::Prefix(String::new()))),
                "c.cookie.match.prefix",
                "must not be empty",
            ),
            (
                Condition::Header(field("x", MatchOp::Exact("v".repeat(5000)))),
                "c.header.match.exact",
                "longer than",
            ),
            (
                Condition::Os(family("symbian", "", "")),
                "c.os.family",
                "unknown OS family `symbian`",
            ),
            (
                Condition::Browser(family("netscape", "", "")),
                "c.browser.family",
                "unknown browser family",
            ),
            (
                Condition::Os(family("android", "ten", "")),
                "c.os.min_version",
                "not a version",
            ),
            (
                Condition::Os(family("android", "14", "12")),
                "c.os.min_version",
                "above max_version",
            ),
            (
                Condition::SourceIp(cidrs(&["10.0.0.0/33"])),
                "c.source_ip.cidrs[0]",
                "not an IP network",
            ),
            (
                Condition::SourceIp(cidrs(&["10.0.0.0/8", "nope"])),
                "c.source_ip.cidrs[1]",
                "`nope`",
            ),
            (
                Condition::SourceIp(cidrs(&[])),
                "c.source_ip.cidrs",
                "at least one",
            ),
        ];
        for (c, field_path, needle) in table {
            let errors = errors_of(c.clone());
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == field_path && e.message.contains(needle)),
                "{c:?}: wanted {field_path}: …{needle}…, got {errors:?}"
            );
        }
    }
}
