//! The operations: reading services, their history and statistics, promoting, undoing,
//! restoring, setting weights, simulating requests and listing proxies.

use grayline_proto::v1 as pb;
use grayline_routing::api::{HistoryEntry, ServiceRecord};
use grayline_routing::{Route, Split, Weight, describe};

use std::collections::{HashMap, HashSet};

use crate::args::{HistoryArgs, ListArgs, Output, SimulateArgs, StatsArgs, WaitArg};
use crate::connect::Connection;
use crate::exit::{Code, Failure, Result};
use crate::output::{self, Table, share};
use crate::wait;
use crate::wire;

fn default_split(s: &grayline_routing::Service) -> String {
    match &s.policy.default_route {
        None => format!("{} 100 %", s.stable),
        Some(Route::Version(v)) => format!("{v} 100 %"),
        Some(Route::Split(split)) => split
            .weights
            .iter()
            .filter(|w| w.weight > 0)
            .map(|w| format!("{} {}", w.version, share(w.weight)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

pub async fn get(c: &mut Connection, name: &str, format: Output) -> Result<()> {
    let r = wire::record(
        c.config
            .get_service(pb::GetServiceRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner(),
    )?;
    output::print(format, &r, || {
        let s = &r.service;
        let mut out = format!(
            "{} (revision {})\nhosts: {}\npath prefix: {}\nstable: {}\n\nversions:\n",
            s.name,
            r.revision,
            if s.hosts.is_empty() {
                "any".into()
            } else {
                s.hosts.join(", ")
            },
            s.path_prefix,
            s.stable
        );
        for v in &s.versions {
            out.push_str(&format!("  {}: {}\n", v.name, v.endpoints.join(", ")));
        }
        out.push_str("\npolicy:\n");
        for line in describe::policy(s) {
            out.push_str(&format!("  {line}\n"));
        }
        out.trim_end().to_string()
    })
}

/// The series a statistics request selects.
async fn series(
    c: &mut Connection,
    request: pb::StatsRequest,
) -> Result<Vec<grayline_routing::api::SeriesView>> {
    Ok(c.config
        .get_stats(request)
        .await?
        .into_inner()
        .series
        .into_iter()
        .map(wire::series)
        .collect())
}

/// What `list` shows of a service besides its record: its traffic over the last minute.
#[derive(Debug, Default)]
struct Traffic {
    requests_per_second: f64,
    /// The worst version's share of 5xx among its answers, and the stable version's.
    worst_5xx: f64,
    stable_5xx: f64,
}

pub async fn list(c: &mut Connection, args: &ListArgs, format: Output) -> Result<()> {
    let list = c
        .config
        .list_services(pb::ListServicesRequest {})
        .await?
        .into_inner();
    let mut records = list
        .services
        .into_iter()
        .map(wire::record)
        .collect::<Result<Vec<ServiceRecord>>>()?;
    let catalog_revision = list.revision;
    const WINDOW: u32 = 60;
    let series = series(
        c,
        pb::StatsRequest {
            window_seconds: WINDOW,
            ..Default::default()
        },
    )
    .await?;
    let stable_of: HashMap<&str, &str> = records
        .iter()
        .map(|r| (r.service.name.as_str(), r.service.stable.as_str()))
        .collect();
    let mut traffic: HashMap<String, Traffic> = HashMap::new();
    for s in series.iter().filter(|s| !s.mirrored) {
        let t = traffic.entry(s.service.clone()).or_default();
        t.requests_per_second += s.totals.requests as f64 / f64::from(WINDOW);
        let share = if s.totals.answered() == 0 {
            0.0
        } else {
            s.totals.status_5xx as f64 / s.totals.answered() as f64
        };
        t.worst_5xx = t.worst_5xx.max(share);
        if stable_of.get(s.service.as_str()) == Some(&s.version.as_str()) {
            t.stable_5xx = share;
        }
    }
    let needs = |word: &str| args.filters.iter().any(|f| f == word);
    let running: HashSet<String> = if needs("rollout") {
        c.rollouts
            .list_rollouts(pb::ListRolloutsRequest {
                service: String::new(),
                active_only: true,
            })
            .await?
            .into_inner()
            .rollouts
            .into_iter()
            .map(|r| r.service)
            .collect()
    } else {
        HashSet::new()
    };
    let proxies: Vec<_> = if needs("behind") || needs("nack") {
        c.config
            .list_proxies(pb::ListProxiesRequest {})
            .await?
            .into_inner()
            .proxies
            .into_iter()
            .map(wire::proxy)
            .filter(|p| p.connected)
            .collect()
    } else {
        Vec::new()
    };
    let serves = |p: &grayline_routing::api::ProxyStatus, service: &str| {
        p.services.is_empty() || p.services.iter().any(|s| s == service)
    };
    let quiet = Traffic::default();
    records.retain(|r| {
        let name = r.service.name.as_str();
        let t = traffic.get(name).unwrap_or(&quiet);
        args.filters.iter().all(|f| match f.as_str() {
            "rollout" => running.contains(name),
            "errors" => t.worst_5xx > t.stable_5xx,
            "behind" => proxies
                .iter()
                .any(|p| serves(p, name) && p.applied_revision < catalog_revision),
            "nack" => proxies
                .iter()
                .any(|p| serves(p, name) && !p.nack_error.is_empty()),
            word => name.to_lowercase().contains(&word.to_lowercase()),
        })
    });
    let by = |r: &ServiceRecord| traffic.get(r.service.name.as_str()).unwrap_or(&quiet);
    records.sort_by(|a, b| {
        let by_name = grayline_routing::natural::cmp(&a.service.name, &b.service.name);
        match args.sort.as_str() {
            "traffic" => by(b)
                .requests_per_second
                .total_cmp(&by(a).requests_per_second)
                .then(by_name),
            "errors" => by(b).worst_5xx.total_cmp(&by(a).worst_5xx).then(by_name),
            _ => by_name,
        }
    });
    output::print(format, &records, || {
        let mut t = Table::new(&[
            "SERVICE",
            "REVISION",
            "STABLE",
            "VERSIONS",
            "DEFAULT ROUTE",
            "RULES",
            "REQ/S",
            "WORST 5XX %",
        ]);
        for r in &records {
            let s = &r.service;
            let traffic = by(r);
            t.row(vec![
                s.name.clone(),
                r.revision.to_string(),
                s.stable.clone(),
                s.versions
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                default_split(s),
                s.policy.rules.len().to_string(),
                format!("{:.1}", traffic.requests_per_second),
                format!("{:.2}", 100.0 * traffic.worst_5xx),
            ]);
        }
        t.render()
    })
}

async fn history_of(c: &mut Connection, service: &str, limit: u32) -> Result<Vec<HistoryEntry>> {
    c.config
        .history(pb::HistoryRequest {
            service: service.to_string(),
            limit,
            before_revision: 0,
        })
        .await?
        .into_inner()
        .entries
        .into_iter()
        .map(wire::entry)
        .collect()
}

async fn entry_at(c: &mut Connection, service: &str, revision: u64) -> Result<HistoryEntry> {
    let entries = c
        .config
        .history(pb::HistoryRequest {
            service: service.to_string(),
            limit: 1,
            before_revision: revision + 1,
        })
        .await?
        .into_inner()
        .entries;
    match entries.into_iter().next().map(wire::entry).transpose()? {
        Some(e) if e.revision == revision => Ok(e),
        _ => Err(Failure::new(
            Code::NotFound,
            format!("revision {revision} is not in the history of service `{service}`"),
        )),
    }
}

pub async fn history(c: &mut Connection, args: &HistoryArgs, format: Output) -> Result<()> {
    if let Some(revs) = &args.diff {
        let (a, b) = (
            entry_at(c, &args.service, revs[0]).await?,
            entry_at(c, &args.service, revs[1]).await?,
        );
        let d = output::diff(
            a.after.as_ref(),
            b.after.as_ref(),
            &format!("revision {}", a.revision),
            &format!("revision {}", b.revision),
        );
        let value = serde_json::json!({"from": a.revision, "to": b.revision, "diff": d});
        return output::print(format, &value, || {
            if d.is_empty() {
                "no difference".to_string()
            } else {
                d.trim_end().to_string()
            }
        });
    }
    let entries = history_of(c, &args.service, args.limit).await?;
    output::print(format, &entries, || {
        let mut t = Table::new(&["REVISION", "TIME (UTC)", "ACTOR", "ACTION", "SUMMARY"]);
        for e in &entries {
            t.row(vec![
                e.revision.to_string(),
                wire::time(e.time_unix_ms),
                e.who(),
                e.action.as_str().to_string(),
                e.summary.clone(),
            ]);
        }
        t.render()
    })
}

/// Prints the written record (or its revision) and waits for the proxies if asked.
async fn written(
    c: &mut Connection,
    r: pb::ServiceRecord,
    what: &str,
    wait_arg: &WaitArg,
    format: Output,
) -> Result<()> {
    let r = wire::record(r)?;
    output::print(format, &r, || {
        format!("{what}: {} is at revision {}", r.service.name, r.revision)
    })?;
    if let Some(timeout) = wait_arg.wait {
        let live = wait::until_live(c, &r.service.name, r.revision, timeout).await?;
        eprintln!("{}", wait::describe(&r.service.name, r.revision, &live));
    }
    Ok(())
}

pub async fn promote(
    c: &mut Connection,
    service: &str,
    version: &str,
    expected: Option<u64>,
    wait_arg: &WaitArg,
    format: Output,
) -> Result<()> {
    let r = c
        .config
        .promote(pb::PromoteRequest {
            service: service.to_string(),
            version: version.to_string(),
            expected_revision: expected,
        })
        .await?
        .into_inner();
    written(c, r, &format!("promoted {version}"), wait_arg, format).await
}

pub async fn restore(
    c: &mut Connection,
    service: &str,
    revision: u64,
    wait_arg: &WaitArg,
    format: Output,
) -> Result<()> {
    let r = c
        .config
        .restore(pb::RestoreRequest {
            service: service.to_string(),
            revision,
            expected_revision: None,
        })
        .await?
        .into_inner();
    written(
        c,
        r,
        &format!("restored revision {revision}"),
        wait_arg,
        format,
    )
    .await
}

/// Restores the revision before the service's last change.
pub async fn undo(
    c: &mut Connection,
    service: &str,
    wait_arg: &WaitArg,
    format: Output,
) -> Result<()> {
    let last = history_of(c, service, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            Failure::new(
                Code::NotFound,
                format!("service `{service}` has no history"),
            )
        })?;
    if last.previous_revision == 0 {
        return Err(Failure::new(
            Code::Conflict,
            format!(
                "nothing to undo: revision {} created service `{service}`",
                last.revision
            ),
        ));
    }
    let r = c
        .config
        .restore(pb::RestoreRequest {
            service: service.to_string(),
            revision: last.previous_revision,
            expected_revision: Some(last.revision),
        })
        .await?
        .into_inner();
    let what = format!("undid revision {} ({})", last.revision, last.summary);
    written(c, r, &what, wait_arg, format).await
}

/// `v2=25%`, `v2=25`, `v2=0.5%`, `v2=2500bp` → (v2, basis points).
pub fn parse_weight(s: &str) -> Result<(String, u32)> {
    let bad = || {
        Failure::invalid(format!(
            "`{s}` is not VERSION=PERCENT (v2=25%) or VERSION=BASISbp (v2=2500bp)"
        ))
    };
    let (version, value) = s.split_once('=').ok_or_else(bad)?;
    let value = value.trim();
    let bp = if let Some(bp) = value.strip_suffix("bp") {
        bp.trim().parse::<u32>().map_err(|_| bad())?
    } else {
        let pct: f64 = value
            .trim_end_matches('%')
            .trim()
            .parse()
            .map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&pct) {
            return Err(Failure::invalid(format!("`{s}`: a weight is 0 to 100 %")));
        }
        (pct * 100.0).round() as u32
    };
    if version.trim().is_empty() {
        return Err(bad());
    }
    Ok((version.trim().to_string(), bp))
}

/// Sets the default split: the named versions get their weights, the stable version the rest;
/// the split's sticky key stays.
pub async fn set_weight(
    c: &mut Connection,
    service: &str,
    weights: &[String],
    expected: Option<u64>,
    wait_arg: &WaitArg,
    format: Output,
) -> Result<()> {
    let current = wire::record(
        c.config
            .get_service(pb::GetServiceRequest {
                name: service.to_string(),
            })
            .await?
            .into_inner(),
    )?;
    let mut policy = current.service.policy.clone();
    let sticky = match &policy.default_route {
        Some(Route::Split(s)) => s.sticky.clone(),
        _ => None,
    };
    let stable = current.service.stable.clone();
    let mut named = Vec::new();
    for w in weights {
        named.push(parse_weight(w)?);
    }
    let total: u32 = named
        .iter()
        .filter(|(v, _)| *v != stable)
        .map(|(_, w)| w)
        .sum();
    if total > 10_000 {
        return Err(Failure::invalid(format!(
            "the weights add up to {}, more than 100 %",
            share(total)
        )));
    }
    let mut split: Vec<Weight> = named
        .iter()
        .filter(|(v, _)| *v != stable)
        .map(|(v, w)| Weight {
            version: v.clone(),
            weight: *w,
        })
        .collect();
    split.insert(
        0,
        Weight {
            version: stable,
            weight: 10_000 - total,
        },
    );
    policy.default_route = Some(Route::Split(Split {
        weights: split,
        sticky,
    }));
    let r = c
        .config
        .set_policy(pb::SetPolicyRequest {
            service: service.to_string(),
            policy: Some((&policy).into()),
            expected_revision: Some(expected.unwrap_or(current.revision)),
        })
        .await?
        .into_inner();
    written(
        c,
        r,
        &format!("weights set ({})", weights.join(", ")),
        wait_arg,
        format,
    )
    .await
}

fn pairs(
    items: &[String],
    sep: char,
    what: &str,
) -> Result<std::collections::HashMap<String, String>> {
    items
        .iter()
        .map(|i| {
            i.split_once(sep)
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| Failure::invalid(format!("`{i}` is not {what}")))
        })
        .collect()
}

pub async fn simulate(c: &mut Connection, args: &SimulateArgs, format: Output) -> Result<()> {
    let headers = pairs(&args.headers, ':', "Name: value")?
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let r = c
        .config
        .simulate(pb::SimulateRequest {
            service: args.service.clone(),
            draft: None,
            request: Some(pb::RequestFacts {
                host: args.host.clone(),
                path: args.path.clone(),
                headers,
                cookies: pairs(&args.cookies, '=', "name=value")?,
                query: pairs(&args.query, '=', "name=value")?,
                user_agent: args.user_agent.clone(),
                client_ip: args.client_ip.clone(),
                lane: args.lane.clone(),
            }),
        })
        .await?
        .into_inner();
    let value = serde_json::json!({
        "version": r.version, "rule_index": r.rule_index, "rule_name": r.rule_name,
        "explanation": r.explanation, "bucket": r.bucket,
        "os": r.os, "os_version": r.os_version, "browser": r.browser, "browser_version": r.browser_version,
        "lane": r.lane, "mirror": r.mirror,
    });
    output::print(format, &value, || {
        let mut text = format!(
            "→ {}\n{}\nUser-Agent reads as {} {} · {} {}",
            r.version, r.explanation, r.os, r.os_version, r.browser, r.browser_version
        );
        if !r.lane.is_empty() {
            text.push_str(&format!("\nGoes on in lane {}", r.lane));
        }
        text
    })
}

pub async fn proxies(c: &mut Connection, format: Output) -> Result<()> {
    let list = c
        .config
        .list_proxies(pb::ListProxiesRequest {})
        .await?
        .into_inner();
    let proxies: Vec<_> = list.proxies.into_iter().map(wire::proxy).collect();
    output::print(format, &proxies, || {
        let mut t = Table::new(&[
            "PROXY",
            "STREAM",
            "REVISION",
            "SERVICES",
            "EJECTED",
            "PROBLEM",
            "LAST SEEN (UTC)",
        ]);
        for p in &proxies {
            let mut problems = Vec::new();
            if !p.nack_error.is_empty() {
                problems.push(format!(
                    "rejected revision {}: {}",
                    p.nack_revision, p.nack_error
                ));
            }
            if !p.ack_warning.is_empty() {
                problems.push(p.ack_warning.clone());
            }
            if !p.token_error.is_empty() {
                problems.push(format!("token rejected: {}", p.token_error));
            }
            t.row(vec![
                p.id.clone(),
                if p.connected {
                    "connected"
                } else {
                    "disconnected"
                }
                .into(),
                p.applied_revision.to_string(),
                if p.services.is_empty() {
                    "all".into()
                } else {
                    p.services.join(",")
                },
                p.ejected_endpoints.len().to_string(),
                problems.join("; "),
                wire::time(p.last_seen_unix_ms),
            ]);
        }
        t.render()
    })
}

fn micros(us: u64) -> String {
    if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

pub async fn stats(c: &mut Connection, args: &StatsArgs, format: Output) -> Result<()> {
    loop {
        let series = series(
            c,
            pb::StatsRequest {
                service: args.service.clone().unwrap_or_default(),
                window_seconds: args.window(),
                per_proxy: args.per_proxy,
                per_minute: args.per_minute,
                until_unix_s: args.until.unwrap_or(0),
            },
        )
        .await?;
        if args.watch && format == Output::Table {
            // Clear the screen and go home, like `watch`.
            print!("\x1b[2J\x1b[H");
        }
        output::print(format, &series, || {
            let mut t = Table::new(&[
                "SERVICE",
                "VERSION",
                "PROXY",
                "REQUESTS",
                "REQ/S",
                "5XX %",
                "FALLBACK %",
                "P50",
                "P99 (LATEST)",
            ]);
            for s in &series {
                let latest = s
                    .points
                    .iter()
                    .rev()
                    .find(|p| p.requests > 0)
                    .cloned()
                    .unwrap_or_default();
                // Errors among the version's answers; the fallbacks the proxies answered
                // instead of asking it, among all its requests.
                let share = |part: u64, of: u64| {
                    if of == 0 {
                        0.0
                    } else {
                        100.0 * part as f64 / of as f64
                    }
                };
                let errors = share(s.totals.status_5xx, s.totals.answered());
                let fallbacks = share(s.totals.fallbacks, s.totals.requests);
                t.row(vec![
                    s.service.clone(),
                    // Mirrored copies are counted apart from the version's live traffic.
                    if s.mirrored {
                        format!("{} (mirrored)", s.version)
                    } else {
                        s.version.clone()
                    },
                    if s.proxy_id.is_empty() {
                        "all".into()
                    } else {
                        s.proxy_id.clone()
                    },
                    s.totals.requests.to_string(),
                    format!(
                        "{:.1}",
                        s.totals.requests as f64 / f64::from(args.window().max(1))
                    ),
                    format!("{errors:.2}"),
                    format!("{fallbacks:.2}"),
                    micros(latest.p50_us),
                    micros(latest.p99_us),
                ]);
            }
            let span =
                humantime::format_duration(std::time::Duration::from_secs(args.window().into()));
            let until = match args.until {
                Some(t) => format!(
                    " up to {}",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64)
                    )
                ),
                None => String::new(),
            };
            let resolution = if args.per_minute { ", per minute" } else { "" };
            format!("last {span}{until}{resolution}\n{}", t.render())
        })?;
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse() {
        assert_eq!(parse_weight("v2=25%").unwrap(), ("v2".into(), 2500));
        assert_eq!(parse_weight("v2=0.5").unwrap(), ("v2".into(), 50));
        assert_eq!(parse_weight("v2=2500bp").unwrap(), ("v2".into(), 2500));
        assert!(parse_weight("v2").is_err());
        assert!(parse_weight("v2=150%").is_err());
        assert!(parse_weight("=5%").is_err());
    }
}
