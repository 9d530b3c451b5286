//! DNS discovery: the names versions give as `instances.dns`, resolved with hickory's
//! resolver and resolved again when the answer's TTL runs out (never sooner than
//! [`MIN_REFRESH`], never later than [`MAX_REFRESH`]). `host:port` takes the host's A and
//! AAAA records with the port; an SRV name takes its records' targets (their addresses) and
//! ports. What each name resolves to goes to the caller, which rebuilds the routing state;
//! a name that stops resolving because no server answers keeps its last answer, and one the
//! server says does not exist (or has no records) resolves to nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use grayline_routing::{DnsName, parse_dns};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The soonest a name is resolved again, however short its TTL (dnsmasq answers from its
/// hosts file with TTL 0 by default).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The latest a name is resolved again, however long its TTL.
pub const MAX_REFRESH: Duration = Duration::from_secs(60);
/// How long after a failed lookup (no answer) it is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// A resolver asking `servers` (`--dns-server`), or the system's (`/etc/resolv.conf`) when
/// none are given. It caches nothing: the TTLs are honoured here. Without a usable system
/// configuration it asks nobody (and says so): a proxy whose versions name no DNS name must
/// start all the same, and one whose versions do serves what it saved.
pub fn resolver(servers: &[SocketAddr]) -> TokioResolver {
    let system = || match TokioResolver::builder_tokio() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system DNS configuration; DNS names will not resolve (give --dns-server)");
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::new()),
                TokioConnectionProvider::default(),
            )
        }
    };
    let mut builder = if servers.is_empty() {
        system()
    } else {
        let mut group = NameServerConfigGroup::new();
        for s in servers {
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[s.ip()],
                s.port(),
                true,
            ));
        }
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            TokioConnectionProvider::default(),
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.cache_size = 0;
    // A and AAAA both: a name may have instances on either.
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    builder.build()
}

/// What one lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// `host:port` endpoints, sorted, and how long they are valid.
    Found(Vec<String>, Duration),
    /// The name does not exist or has no such records: no endpoints.
    Nothing,
    /// No answer (server down, timeout): keep what was known.
    Failed(String),
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// Resolves one `instances.dns` name.
pub async fn lookup(resolver: &TokioResolver, name: &str) -> Answer {
    let now = Instant::now();
    let absent = |e: &hickory_resolver::ResolveError| e.is_nx_domain() || e.is_no_records_found();
    match parse_dns(name) {
        Err(e) => Answer::Failed(e),
        Ok(DnsName::Address { host, port }) => match resolver.lookup_ip(host).await {
            Ok(ips) => {
                let mut found: Vec<String> = ips.iter().map(|ip| endpoint(ip, port)).collect();
                found.sort();
                found.dedup();
                Answer::Found(found, ips.valid_until().saturating_duration_since(now))
            }
            Err(e) if absent(&e) => Answer::Nothing,
            Err(e) => Answer::Failed(e.to_string()),
        },
        Ok(DnsName::Srv(srv)) => {
            let records = match resolver.srv_lookup(srv).await {
                Ok(r) => r,
                Err(e) if absent(&e) => return Answer::Nothing,
                Err(e) => return Answer::Failed(e.to_string()),
            };
            let mut valid = records
                .as_lookup()
                .valid_until()
                .saturating_duration_since(now);
            let mut found = Vec::new();
            for record in records.iter() {
                let target = record.target().to_utf8();
                match resolver.lookup_ip(target.as_str()).await {
                    Ok(ips) => {
                        valid = valid.min(ips.valid_until().saturating_duration_since(now));
                        found.extend(ips.iter().map(|ip| endpoint(ip, record.port())));
                    }
                    Err(e) if absent(&e) => {}
                    Err(e) => return Answer::Failed(format!("{target}: {e}")),
                }
            }
            found.sort();
            found.dedup();
            Answer::Found(found, valid)
        }
    }
}

/// Resolves the names in `names` as they come and go, and again as their answers expire,
/// handing each change to `resolved` (never a failed lookup), until `stop`.
pub async fn run(
    resolver: TokioResolver,
    mut names: watch::Receiver<BTreeSet<String>>,
    resolved: impl Fn(&str, Vec<String>),
    stop: CancellationToken,
) {
    // When each name is due, and what it resolved to last.
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    let mut last: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        {
            let wanted = names.borrow_and_update();
            due.retain(|n, _| wanted.contains(n));
            last.retain(|n, _| wanted.contains(n));
            for n in wanted.iter() {
                due.entry(n.clone()).or_insert_with(Instant::now);
            }
        }
        let now = Instant::now();
        let ready: Vec<String> = due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            let next = match lookup(&resolver, &name).await {
                Answer::Found(endpoints, valid) => {
                    if last.get(&name) != Some(&endpoints) {
                        tracing::info!(name, ?endpoints, ttl = ?valid, "resolved");
                        last.insert(name.clone(), endpoints.clone());
                        resolved(&name, endpoints);
                    }
                    valid.clamp(MIN_REFRESH, MAX_REFRESH)
                }
                Answer::Nothing => {
                    if last.get(&name).is_none_or(|l| !l.is_empty()) {
                        tracing::warn!(
                            name,
                            "the name resolves to nothing: its version has no instance"
                        );
                        last.insert(name.clone(), Vec::new());
                        resolved(&name, Vec::new());
                    }
                    RETRY
                }
                Answer::Failed(error) => {
                    tracing::warn!(name, %error, "no DNS answer; keeping the last one");
                    RETRY
                }
            };
            due.insert(name, Instant::now() + next);
        }
        let sleep = due.values().min().map_or(MAX_REFRESH, |at| {
            at.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            changed = names.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}
