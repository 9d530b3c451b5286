//! All the services one proxy serves, compiled, with the host and path-prefix index that
//! finds the service a request belongs to.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::CompiledService;
use crate::invalid::{FieldError, Invalid};
use crate::model::Service;

/// Compiled services and their request index.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Shared, so a proxy rebuilding its catalog reuses the services that did not change.
    services: Vec<Arc<CompiledService>>,
    /// Exact host → services, longest path prefix first; sorted by host for a binary search
    /// (faster than hashing for the few hosts a proxy serves).
    exact: Vec<(String, Vec<usize>)>,
    /// `.example.com` for `*.example.com`, longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    /// Services without hosts, longest path prefix first.
    any_host: Vec<usize>,
}

impl Catalog {
    /// Compiles every service. Errors are prefixed with `services[NAME]`.
    pub fn compile(services: &[Service]) -> Result<Catalog, Invalid> {
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(services.len());
        for s in services {
            match CompiledService::compile(s) {
                Ok(c) => compiled.push(Arc::new(c)),
                Err(e) => errors.extend(e.under(&format!("services[{}]", s.name)).errors),
            }
        }
        Invalid::check(errors)?;
        Catalog::assemble(compiled)
    }

    /// A catalog of services compiled one by one (some, perhaps, for an earlier catalog):
    /// checks that no two take the same host and path prefix, and builds the index.
    pub fn assemble(compiled: Vec<Arc<CompiledService>>) -> Result<Catalog, Invalid> {
        let mut errors = Vec::new();
        // Who took each (path prefix, host), and each path prefix for every host: a catalog
        // of thousands is checked in one pass, not each service against all before it.
        let mut taken: HashMap<(&str, &str), &str> = HashMap::new();
        let mut every_host: HashMap<&str, &str> = HashMap::new();
        for s in compiled.iter().map(|c| c.service()) {
            let prefix = format!("services[{}]", s.name);
            let mut conflict = |field: String, message: String| {
                errors.push(FieldError::new(format!("{prefix}.{field}"), message));
            };
            if s.hosts.is_empty() {
                match every_host.get(s.path_prefix.as_str()) {
                    Some(&other) if other != s.name => {
                        conflict("hosts".into(), every_host_taken(other, &s.path_prefix))
                    }
                    Some(_) => {}
                    None => {
                        every_host.insert(&s.path_prefix, &s.name);
                    }
                }
            }
            for (i, h) in s.hosts.iter().enumerate() {
                match taken.get(&(s.path_prefix.as_str(), h.as_str())) {
                    Some(&other) if other != s.name => {
                        conflict(format!("hosts[{i}]"), host_taken(h, &s.path_prefix, other))
                    }
                    Some(_) => {}
                    None => {
                        taken.insert((&s.path_prefix, h), &s.name);
                    }
                }
            }
        }
        Invalid::check(errors)?;

        let mut catalog = Catalog {
            services: compiled,
            ..Catalog::default()
        };
        // Where each exact host is in `exact` while it is built.
        let mut exact_at: HashMap<String, usize> = HashMap::new();
        for (i, c) in catalog.services.iter().enumerate() {
            let hosts = &c.service().hosts;
            if hosts.is_empty() {
                catalog.any_host.push(i);
            }
            for h in hosts {
                match h.strip_prefix('*') {
                    Some(suffix) => match catalog.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                        Some((_, list)) => list.push(i),
                        None => catalog.wildcard.push((suffix.to_string(), vec![i])),
                    },
                    None => match exact_at.get(h) {
                        Some(&at) => catalog.exact[at].1.push(i),
                        None => {
                            exact_at.insert(h.clone(), catalog.exact.len());
                            catalog.exact.push((h.clone(), vec![i]));
                        }
                    },
                }
            }
        }
        let services = &catalog.services;
        let by_prefix_len = |list: &mut Vec<usize>| {
            list.sort_by_key(|&i| std::cmp::Reverse(services[i].service().path_prefix.len()))
        };
        catalog.exact.iter_mut().for_each(|(_, l)| by_prefix_len(l));
        catalog.exact.sort_by(|a, b| a.0.cmp(&b.0));
        catalog
            .wildcard
            .iter_mut()
            .for_each(|(_, l)| by_prefix_len(l));
        by_prefix_len(&mut catalog.any_host);
        catalog
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(catalog)
    }

    /// The service for a request's `Host` (port and case ignored) and path: exact hosts first,
    /// then the most specific wildcard, then services without hosts; within each, the longest
    /// matching path prefix.
    pub fn find(&self, host: &str, path: &str) -> Option<&CompiledService> {
        self.find_index(host, path).map(|i| &*self.services[i])
    }

    /// Like [`Catalog::find`], but the index into [`Catalog::services`].
    pub fn find_index(&self, host: &str, path: &str) -> Option<usize> {
        let host = strip_port(host);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let pick = |list: &[usize]| {
            list.iter()
                .copied()
                .find(|&i| prefix_matches(&self.services[i].service().path_prefix, path))
        };
        self.exact
            .binary_search_by(|(h, _)| h.as_str().cmp(host))
            .ok()
            .and_then(|i| pick(&self.exact[i].1))
            .or_else(|| {
                self.wildcard
                    .iter()
                    .filter(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })
                    .find_map(|(_, l)| pick(l))
            })
            .or_else(|| pick(&self.any_host))
    }

    pub fn get(&self, name: &str) -> Option<&CompiledService> {
        self.services
            .iter()
            .find(|s| s.name() == name)
            .map(|s| &**s)
    }

    pub fn services(&self) -> &[Arc<CompiledService>] {
        &self.services
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// `/api` takes `/api`, `/api/` and `/api/x` but not `/apix`; a prefix ending in `/` takes
/// everything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?']),
    }
}

/// Where `candidate` would take traffic another service already takes: the same host (or
/// both without hosts) with the same path prefix. Errors name `candidate`'s fields.
pub fn conflicts(others: &[Service], candidate: &Service) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for other in others.iter().filter(|o| o.name != candidate.name) {
        if other.path_prefix != candidate.path_prefix {
            continue;
        }
        if candidate.hosts.is_empty() && other.hosts.is_empty() {
            errors.push(FieldError::new(
                "hosts",
                every_host_taken(&other.name, &other.path_prefix),
            ));
        }
        for (i, h) in candidate.hosts.iter().enumerate() {
            if other.hosts.contains(h) {
                errors.push(FieldError::new(
                    format!("hosts[{i}]"),
                    host_taken(h, &other.path_prefix, &other.name),
                ));
            }
        }
    }
    errors
}

fn every_host_taken(other: &str, path_prefix: &str) -> String {
    format!(
        "service `{other}` already takes every host under path prefix `{path_prefix}`; \
         give this service hosts or another path prefix"
    )
}

fn host_taken(host: &str, path_prefix: &str, other: &str) -> String {
    format!("host `{host}` with path prefix `{path_prefix}` is already served by service `{other}`")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Version;

    fn service(name: &str, hosts: &[&str], prefix: &str) -> Service {
        let mut s = Service::single(name, Version::new("v1", &["127.0.0.1:1"]));
        s.hosts = hosts.iter().map(|h| h.to_string()).collect();
        s.path_prefix = prefix.to_string();
        s
    }

    #[test]
    fn finds_services_by_host_and_prefix() {
        let catalog = Catalog::compile(&[
            service("shop", &["shop.example.com"], "/"),
            service("shop-api", &["shop.example.com"], "/api"),
            service("wild", &["*.example.com"], "/"),
            service("deep-wild", &["*.eu.example.com"], "/"),
            service("fallback", &[], "/"),
            service("any-admin", &[], "/admin/"),
        ])
        .unwrap();
        let find = |host: &str, path: &str| catalog.find(host, path).map(|s| s.name().to_string());
        for (host, path, expected) in [
            ("shop.example.com", "/", Some("shop")),
            ("shop.example.com:8080", "/cart", Some("shop")),
            ("SHOP.example.com", "/", Some("shop")),
            ("shop.example.com", "/api", Some("shop-api")),
            ("shop.example.com", "/api/v1/items", Some("shop-api")),
            ("shop.example.com", "/apix", Some("shop")),
            ("blog.example.com", "/", Some("wild")),
            ("a.eu.example.com", "/", Some("deep-wild")),
            ("example.com", "/", Some("fallback")),
            ("other.org", "/admin/users", Some("any-admin")),
            ("other.org", "/admin", Some("fallback")),
            ("[::1]:80", "/", Some("fallback")),
        ] {
            assert_eq!(find(host, path).as_deref(), expected, "{host}{path}");
        }
    }

    #[test]
    fn nothing_found_without_catch_all() {
        let catalog = Catalog::compile(&[service("shop", &["shop.example.com"], "/api")]).unwrap();
        assert!(catalog.find("shop.example.com", "/").is_none());
        assert!(catalog.find("other", "/api").is_none());
    }

    #[test]
    fn conflicting_services_are_rejected() {
        let a = service("a", &["x.example.com"], "/");
        let b = service("b", &["y.example.com", "x.example.com"], "/");
        let errs = conflicts(std::slice::from_ref(&a), &b);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "hosts[1]");
        assert!(errs[0].message.contains("already served by service `a`"));
        assert!(
            conflicts(
                std::slice::from_ref(&a),
                &service("c", &["x.example.com"], "/api")
            )
            .is_empty()
        );
        // A service never conflicts with its own previous state.
        assert!(conflicts(std::slice::from_ref(&a), &a).is_empty());
        let both_any = conflicts(&[service("d", &[], "/")], &service("e", &[], "/"));
        assert_eq!(both_any[0].field, "hosts");
        let err = Catalog::compile(&[a, b]).unwrap_err();
        assert_eq!(err.errors[0].field, "services[b].hosts[1]");
    }

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        for (prefix, path, expected) in [
            ("/", "/anything", true),
            ("/api", "/api", true),
            ("/api", "/api/", true),
            ("/api", "/api?x=1", true),
            ("/api", "/apix", false),
            ("/api/", "/api/x", true),
            ("/api/", "/api", false),
        ] {
            assert_eq!(prefix_matches(prefix, path), expected, "{prefix} {path}");
        }
    }
}
