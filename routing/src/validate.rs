//! Checks of a service's shape: names, hosts, path prefix, versions and their settings.
//! The policy is checked while it is compiled, in [`crate::engine`].

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::invalid::FieldError;
use crate::limits::*;
use crate::model::{Breaker, Event, HealthCheck, OutlierDetection, Retry, Service, Version};

/// Names of services and versions: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 63 characters.
pub(crate) fn check_name(name: &str, path: &str, what: &str, errors: &mut Vec<FieldError>) {
    if let Some(problem) = name_problem(name, what) {
        errors.push(FieldError::new(path, problem));
    }
}

/// What is wrong with `name` as the name of a `what` (a service, version, tag…), if anything.
pub fn name_problem(name: &str, what: &str) -> Option<String> {
    if name.is_empty() {
        Some(format!("{what} name must not be empty"))
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "{what} name is longer than {MAX_NAME_LEN} characters"
        ))
    } else if !name.as_bytes()[0].is_ascii_alphanumeric()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some(format!(
            "`{name}` is not a valid {what} name: use letters, digits, `.`, `_` and `-`, \
             starting with a letter or digit"
        ))
    } else {
        None
    }
}

pub(crate) fn check_service(s: &Service, errors: &mut Vec<FieldError>) {
    check_name(&s.name, "name", "service", errors);
    check_hosts(&s.hosts, errors);
    check_path_prefix(&s.path_prefix, errors);

    if s.versions.is_empty() {
        errors.push(FieldError::new(
            "versions",
            "a service needs at least one version",
        ));
    } else if s.versions.len() > MAX_VERSIONS {
        errors.push(FieldError::new(
            "versions",
            format!("at most {MAX_VERSIONS} versions, got {}", s.versions.len()),
        ));
    }
    let mut seen = HashSet::new();
    for (i, v) in s.versions.iter().enumerate() {
        let path = format!("versions[{i}]");
        check_version(v, &path, errors);
        if !seen.insert(v.name.as_str()) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("duplicate version name `{}`", v.name),
            ));
        }
    }

    if s.stable.is_empty() {
        errors.push(FieldError::new(
            "stable",
            "the stable version must be named",
        ));
    } else if s.version(&s.stable).is_none() {
        errors.push(FieldError::new(
            "stable",
            format!(
                "stable version `{}` is not one of the service's versions",
                s.stable
            ),
        ));
    }
    check_events(&s.events, errors);
}

/// `events`: at most [`MAX_EVENTS`], each a unique name with statuses an answer can have.
fn check_events(events: &[Event], errors: &mut Vec<FieldError>) {
    if events.len() > MAX_EVENTS {
        errors.push(FieldError::new(
            "events",
            format!("at most {MAX_EVENTS} events, got {}", events.len()),
        ));
    }
    let mut names = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        let path = format!("events[{i}]");
        check_name(&e.name, &format!("{path}.name"), "event", errors);
        if !names.insert(e.name.as_str()) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!("duplicate event name `{}`", e.name),
            ));
        }
        let mut statuses = HashSet::new();
        for (j, &status) in e.statuses.iter().enumerate() {
            let at = format!("{path}.statuses[{j}]");
            if !(100..=599).contains(&status) {
                errors.push(FieldError::new(
                    at,
                    format!("{status} is not an HTTP status (100 to 599)"),
                ));
            } else if !statuses.insert(status) {
                errors.push(FieldError::new(at, format!("{status} is listed twice")));
            }
        }
    }
}

fn check_hosts(hosts: &[String], errors: &mut Vec<FieldError>) {
    if hosts.len() > MAX_HOSTS {
        errors.push(FieldError::new(
            "hosts",
            format!("at most {MAX_HOSTS} hosts, got {}", hosts.len()),
        ));
    }
    let mut seen = HashSet::new();
    for (i, h) in hosts.iter().enumerate() {
        let path = format!("hosts[{i}]");
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if h.len() > MAX_HOST_LEN {
            errors.push(FieldError::new(
                path,
                format!("longer than {MAX_HOST_LEN} characters"),
            ));
        } else if !is_host(bare) || h.bytes().any(|b| b.is_ascii_uppercase()) {
            errors.push(FieldError::new(
                path,
                format!(
                    "`{h}` is not a lowercase host name like `shop.example.com` or `*.example.com`"
                ),
            ));
        } else if !seen.insert(h.as_str()) {
            errors.push(FieldError::new(path, format!("duplicate host `{h}`")));
        }
    }
}

fn check_path_prefix(p: &str, errors: &mut Vec<FieldError>) {
    if !p.starts_with('/') {
        errors.push(FieldError::new("path_prefix", "must start with `/`"));
    } else if p.len() > MAX_PATH_PREFIX_LEN {
        errors.push(FieldError::new(
            "path_prefix",
            format!("longer than {MAX_PATH_PREFIX_LEN} characters"),
        ));
    } else if p
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#')
    {
        errors.push(FieldError::new(
            "path_prefix",
            "must not contain spaces, control characters, `?` or `#`",
        ));
    }
}

fn check_version(v: &Version, path: &str, errors: &mut Vec<FieldError>) {
    check_name(&v.name, &format!("{path}.name"), "version", errors);
    if let Some(instances) = &v.instances {
        let path = format!("{path}.instances");
        match (&instances.tag, &instances.dns) {
            (Some(tag), None) => check_name(tag, &format!("{path}.tag"), "tag", errors),
            (None, Some(dns)) => {
                if let Err(e) = parse_dns(dns) {
                    errors.push(FieldError::new(format!("{path}.dns"), e));
                }
            }
            _ => errors.push(FieldError::new(
                path.clone(),
                "give one source: `tag` (instances registered with that version tag) or `dns` \
                 (a name the proxies resolve)",
            )),
        }
        if !v.endpoints.is_empty() {
            errors.push(FieldError::new(
                format!("{}.endpoints", path.trim_end_matches(".instances")),
                "a version lists its endpoints or takes its `instances` from a source, not both",
            ));
        }
    } else if v.endpoints.is_empty() {
        errors.push(FieldError::new(
            format!("{path}.endpoints"),
            "a version needs at least one endpoint (host:port), or `instances` to take them from",
        ));
    } else if v.endpoints.len() > MAX_ENDPOINTS {
        errors.push(FieldError::new(
            format!("{path}.endpoints"),
            format!(
                "at most {MAX_ENDPOINTS} endpoints, got {}",
                v.endpoints.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, e) in v.endpoints.iter().enumerate() {
        let p = format!("{path}.endpoints[{i}]");
        if let Err(msg) = parse_endpoint(e) {
            errors.push(FieldError::new(p, msg));
        } else if !seen.insert(e.as_str()) {
            errors.push(FieldError::new(p, format!("duplicate endpoint `{e}`")));
        }
    }
    check_range(
        v.timeout_ms,
        1,
        MAX_TIMEOUT_MS,
        &format!("{path}.timeout_ms"),
        errors,
    );
    check_range(
        v.max_concurrent,
        0,
        MAX_CONCURRENT,
        &format!("{path}.max_concurrent"),
        errors,
    );
    check_breaker(&v.breaker, &format!("{path}.breaker"), errors);
    check_outlier_detection(
        &v.outlier_detection,
        &format!("{path}.outlier_detection"),
        errors,
    );
    check_retry(&v.retry, v.timeout_ms, &format!("{path}.retry"), errors);
    check_health_check(&v.health_check, &format!("{path}.health_check"), errors);
    use crate::model::Protocol;
    if v.health_check.grpc && !matches!(v.protocol, Protocol::H2c | Protocol::H2) {
        errors.push(FieldError::new(
            format!("{path}.health_check.grpc"),
            "the gRPC health protocol needs `protocol: h2c` (or `h2` with `tls`)",
        ));
    }
    match (v.protocol, &v.tls) {
        (Protocol::H2, None) => errors.push(FieldError::new(
            format!("{path}.protocol"),
            "`h2` is HTTP/2 over TLS and needs `tls`; without TLS use `h2c`",
        )),
        (Protocol::H2c, Some(_)) => errors.push(FieldError::new(
            format!("{path}.protocol"),
            "`h2c` is HTTP/2 without TLS; with `tls` use `h2`",
        )),
        _ => {}
    }
    if let Some(tls) = &v.tls {
        check_upstream_tls(tls, &format!("{path}.tls"), errors);
    }
}

/// A version's `tls`: absolute paths (they are read on each proxy's host), a certificate
/// with its key, a server name a certificate can carry.
fn check_upstream_tls(tls: &crate::model::UpstreamTls, path: &str, errors: &mut Vec<FieldError>) {
    for (field, value) in [
        ("ca", &tls.ca),
        ("client_cert", &tls.client_cert),
        ("client_key", &tls.client_key),
    ] {
        if !value.is_empty()
            && (!value.starts_with('/') || value.len() > 4096 || value.contains('\0'))
        {
            errors.push(FieldError::new(
                format!("{path}.{field}"),
                format!("`{value}` is not an absolute path; the file is read on each proxy's host"),
            ));
        }
    }
    match (tls.client_cert.is_empty(), tls.client_key.is_empty()) {
        (false, true) => errors.push(FieldError::new(
            format!("{path}.client_key"),
            "a client certificate needs its key",
        )),
        (true, false) => errors.push(FieldError::new(
            format!("{path}.client_cert"),
            "a client key needs its certificate",
        )),
        _ => {}
    }
    let name = tls.server_name.as_str();
    if !name.is_empty() && !is_hostname(name) && name.parse::<std::net::IpAddr>().is_err() {
        errors.push(FieldError::new(
            format!("{path}.server_name"),
            format!("`{name}` is neither a host name nor an IP address"),
        ));
    }
}

fn check_health_check(h: &HealthCheck, path: &str, errors: &mut Vec<FieldError>) {
    let field = |f: &str| format!("{path}.{f}");
    if !h.path.starts_with('/')
        || h.path.len() > 1024
        || h.path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'#')
    {
        errors.push(FieldError::new(
            field("path"),
            "a path starting with `/`, at most 1024 characters, no spaces or `#`",
        ));
    }
    check_range(h.interval_ms, 100, 3_600_000, &field("interval_ms"), errors);
    check_range(h.timeout_ms, 1, 3_600_000, &field("timeout_ms"), errors);
    if h.timeout_ms > h.interval_ms && h.interval_ms >= 100 {
        errors.push(FieldError::new(
            field("timeout_ms"),
            format!(
                "{} is longer than interval_ms ({})",
                h.timeout_ms, h.interval_ms
            ),
        ));
    }
    check_range(
        h.healthy_threshold,
        1,
        100,
        &field("healthy_threshold"),
        errors,
    );
    check_range(
        h.unhealthy_threshold,
        1,
        100,
        &field("unhealthy_threshold"),
        errors,
    );
    check_range(
        h.panic_threshold_percent,
        0,
        100,
        &field("panic_threshold_percent"),
        errors,
    );
}

fn check_outlier_detection(o: &OutlierDetection, path: &str, errors: &mut Vec<FieldError>) {
    let field = |f: &str| format!("{path}.{f}");
    check_range(
        o.consecutive_failures,
        1,
        MAX_CONSECUTIVE_FAILURES,
        &field("consecutive_failures"),
        errors,
    );
    check_range(
        o.base_ejection_ms,
        1,
        MAX_EJECTION_MS,
        &field("base_ejection_ms"),
        errors,
    );
    check_range(
        o.max_ejection_ms,
        1,
        MAX_EJECTION_MS,
        &field("max_ejection_ms"),
        errors,
    );
    if o.max_ejection_ms < o.base_ejection_ms && o.base_ejection_ms <= MAX_EJECTION_MS {
        errors.push(FieldError::new(
            field("max_ejection_ms"),
            format!(
                "{} is shorter than base_ejection_ms ({})",
                o.max_ejection_ms, o.base_ejection_ms
            ),
        ));
    }
    check_range(
        o.max_ejection_percent,
        0,
        100,
        &field("max_ejection_percent"),
        errors,
    );
}

fn check_retry(r: &Retry, timeout_ms: u32, path: &str, errors: &mut Vec<FieldError>) {
    let field = |f: &str| format!("{path}.{f}");
    check_range(
        r.attempts,
        0,
        MAX_RETRY_ATTEMPTS,
        &field("attempts"),
        errors,
    );
    if r.per_try_timeout_ms > timeout_ms {
        errors.push(FieldError::new(
            field("per_try_timeout_ms"),
            format!(
                "{} is longer than the version's timeout_ms ({timeout_ms}), which bounds all tries together",
                r.per_try_timeout_ms
            ),
        ));
    }
    check_range(r.budget_percent, 0, 100, &field("budget_percent"), errors);
}

fn check_breaker(b: &Breaker, path: &str, errors: &mut Vec<FieldError>) {
    let field = |f: &str| format!("{path}.{f}");
    check_range(
        b.error_threshold_percent,
        1,
        100,
        &field("error_threshold_percent"),
        errors,
    );
    check_range(
        b.request_volume,
        1,
        MAX_REQUEST_VOLUME,
        &field("request_volume"),
        errors,
    );
    check_range(
        b.sleep_window_ms,
        1,
        MAX_SLEEP_WINDOW_MS,
        &field("sleep_window_ms"),
        errors,
    );
    check_range(
        b.window_ms,
        MIN_WINDOW_MS,
        MAX_WINDOW_MS,
        &field("window_ms"),
        errors,
    );
}

fn check_range(value: u32, min: u32, max: u32, path: &str, errors: &mut Vec<FieldError>) {
    if value < min || value > max {
        errors.push(FieldError::new(
            path,
            format!("{value} is out of range; allowed {min} to {max}"),
        ));
    }
}

/// A host name or an IPv4 address. Digits and dots alone are an attempt at an IPv4 address
/// (RFC 1123 keeps the last label of a name from being all digits), so `300.1.1.1` is a bad
/// address, not a name.
fn is_host(h: &str) -> bool {
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        h.parse::<Ipv4Addr>().is_ok()
    } else {
        is_hostname(h)
    }
}

/// Host names per RFC 1123: dot-separated labels of letters, digits and inner hyphens.
fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= MAX_HOST_LEN
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An endpoint's host and port. Accepts `host:port`, `1.2.3.4:port` and `[v6]:port`.
/// What a version's `instances.dns` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsName<'a> {
    /// `host:port`: the host's A and AAAA records, each with the port.
    Address { host: &'a str, port: u16 },
    /// `_service._proto.name`: its SRV records, each a host and a port.
    Srv(&'a str),
}

/// Reads a version's `instances.dns`: `host:port` with a DNS host name (not an IP address:
/// that is an endpoint), or an SRV name whose first two labels start with `_`.
pub fn parse_dns(text: &str) -> Result<DnsName<'_>, String> {
    let labels_ok = |name: &str, srv: bool| {
        let name = name.strip_suffix('.').unwrap_or(name);
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').enumerate().all(|(i, l)| {
                let l = if srv && i < 2 {
                    l.strip_prefix('_').unwrap_or("")
                } else {
                    l
                };
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    if text.starts_with('_') {
        let srv = text.split('.').count() >= 3
            && text.split('.').take(2).all(|l| l.starts_with('_'))
            && labels_ok(text, true);
        return if srv {
            Ok(DnsName::Srv(text))
        } else {
            Err(format!(
                "`{text}` is not an SRV name like `_http._tcp.shop-v2.internal` (lowercase labels)"
            ))
        };
    }
    let (host, port) = parse_endpoint(text)?;
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return Err(format!(
            "`{text}` is an address, not a name: list it under `endpoints`"
        ));
    }
    if !labels_ok(host, false) {
        return Err(format!(
            "`{host}` is not a lowercase DNS name like `shop-v2.internal`"
        ));
    }
    Ok(DnsName::Address { host, port })
}

pub fn parse_endpoint(e: &str) -> Result<(&str, u16), String> {
    let bad = |why: &str| format!("`{e}` is not a valid endpoint: {why} (expected host:port)");
    let (host, port) = if let Some(rest) = e.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or_else(|| bad("an IPv6 address needs the form [addr]:port"))?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| bad("bad IPv6 address"))?;
        (v6, port)
    } else {
        let (host, port) = e.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
        if host.contains(':') {
            return Err(bad("write IPv6 addresses in brackets"));
        }
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            host.parse::<Ipv4Addr>()
                .map_err(|_| bad("bad IPv4 address"))?;
        } else if !is_hostname(host) {
            return Err(bad("bad host name"));
        }
        (host, port)
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| bad("port must be a number from 1 to 65535"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert_eq!(
            parse_dns("shop-v2.internal:8080"),
            Ok(DnsName::Address {
                host: "shop-v2.internal",
                port: 8080
            })
        );
        assert_eq!(
            parse_dns("_http._tcp.shop-v2.internal"),
            Ok(DnsName::Srv("_http._tcp.shop-v2.internal"))
        );
        assert_eq!(
            parse_dns("localhost:80"),
            Ok(DnsName::Address {
                host: "localhost",
                port: 80
            })
        );
        for bad in [
            "shop.internal",
            "10.0.0.1:80",
            "[::1]:80",
            "Shop.internal:80",
            "-x.internal:80",
            "_http._tcp",
            "_http.tcp.shop",
            "_http._tcp.shop:80",
            "_http._tcp.Shop",
        ] {
            assert!(parse_dns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints() {
        for ok in [
            "127.0.0.1:80",
            "[::1]:8080",
            "app-v2.internal:443",
            "localhost:1",
        ] {
            assert!(parse_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:65536",
            "host:-1",
            "::1:80",
            "[::1]80",
            "[zz]:80",
            "bad_host:80",
            "-x:80",
            "http://x:80",
            "a b:80",
            "300.1.1.1:80",
            "1.2.3:80",
            "1.2.3.4.5:80",
            "01.2.3.4:80",
            "1..2.3:80",
            "8080:80",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        let why = parse_endpoint("300.1.1.1:80").unwrap_err();
        assert!(why.contains("bad IPv4 address"), "{why}");
        // Digits are fine in a name that is not all digits and dots.
        assert!(parse_endpoint("10.0.0.1x:80").is_ok());
        assert!(parse_endpoint("api.1and1.com:80").is_ok());
        assert!(parse_endpoint("1e100.net:443").is_ok());
    }

    #[test]
    fn hosts() {
        let check = |h: &str| {
            let mut e = Vec::new();
            check_hosts(&[h.to_string()], &mut e);
            e.is_empty()
        };
        for ok in ["shop.example.com", "*.example.com", "10.0.0.1", "localhost"] {
            assert!(check(ok), "{ok}");
        }
        for bad in [
            "300.1.1.1",
            "1.2.3",
            "*.300.1.1.1",
            "Shop.example.com",
            "a_b.com",
        ] {
            assert!(!check(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        for ok in ["v1", "1.1.2", "checkout", "a-b_c.d", &"a".repeat(63)] {
            let mut e = Vec::new();
            check_name(ok, "n", "version", &mut e);
            assert!(e.is_empty(), "{ok}: {e:?}");
        }
        for bad in ["", "-v1", ".x", "v 1", "v/1", "ü", &"a".repeat(64)] {
            let mut e = Vec::new();
            check_name(bad, "n", "version", &mut e);
            assert_eq!(e.len(), 1, "{bad}");
        }
    }
}
