//! `--wait`: the release pipeline's "is it live?". Returns once every connected proxy that
//! serves the service runs the revision (or a later one); fails, naming the proxies, when
//! one rejected it or the time is up.

use std::time::{Duration, Instant};

use grayline_proto::v1 as pb;

use crate::connect::Connection;
use crate::exit::{Code, Failure, Result};

const POLL: Duration = Duration::from_millis(200);

/// What waiting found.
#[derive(Debug, PartialEq, Eq)]
pub struct Live {
    /// Proxies that run the revision.
    pub proxies: Vec<String>,
}

fn serves(p: &pb::ProxyStatus, service: &str) -> bool {
    p.connected && (p.services.is_empty() || p.services.iter().any(|s| s == service))
}

/// Judges one look at the proxies: `Ok(Some)` live everywhere, `Ok(None)` not yet, `Err` a
/// rejection.
fn judge(proxies: &[pb::ProxyStatus], service: &str, revision: u64) -> Result<Option<Live>> {
    let serving: Vec<&pb::ProxyStatus> = proxies.iter().filter(|p| serves(p, service)).collect();
    let rejected: Vec<String> = serving
        .iter()
        .filter(|p| p.nack_revision >= revision && p.applied_revision < p.nack_revision)
        .map(|p| {
            format!(
                "{} rejected revision {}: {}",
                p.id, p.nack_revision, p.nack_error
            )
        })
        .collect();
    if !rejected.is_empty() {
        return Err(Failure::new(Code::NotLive, rejected.join("; ")));
    }
    if serving.iter().all(|p| p.applied_revision >= revision) {
        return Ok(Some(Live {
            proxies: serving.iter().map(|p| p.id.clone()).collect(),
        }));
    }
    Ok(None)
}

pub async fn until_live(
    c: &mut Connection,
    service: &str,
    revision: u64,
    timeout: Duration,
) -> Result<Live> {
    let deadline = Instant::now() + timeout;
    loop {
        let proxies = c
            .config
            .list_proxies(pb::ListProxiesRequest {})
            .await?
            .into_inner()
            .proxies;
        if let Some(live) = judge(&proxies, service, revision)? {
            return Ok(live);
        }
        if Instant::now() >= deadline {
            let behind: Vec<String> = proxies
                .iter()
                .filter(|p| serves(p, service) && p.applied_revision < revision)
                .map(|p| format!("{} (at revision {})", p.id, p.applied_revision))
                .collect();
            return Err(Failure::new(
                Code::NotLive,
                format!(
                    "after {}, {} of the proxies serving `{service}` do not run revision {revision}: {}",
                    humantime::format_duration(timeout),
                    behind.len(),
                    behind.join(", ")
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One line for people: where the revision is live.
pub fn describe(service: &str, revision: u64, live: &Live) -> String {
    match live.proxies.len() {
        0 => format!("revision {revision} of {service}: no connected proxy serves it"),
        n => format!(
            "revision {revision} of {service} is live on {n} prox{}: {}",
            if n == 1 { "y" } else { "ies" },
            live.proxies.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(id: &str, applied: u64, nack: u64, services: &[&str]) -> pb::ProxyStatus {
        pb::ProxyStatus {
            id: id.into(),
            connected: true,
            applied_revision: applied,
            nack_revision: nack,
            nack_error: if nack > 0 {
                "endpoint not allowed".into()
            } else {
                String::new()
            },
            services: services.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn live_only_when_every_serving_proxy_runs_it() {
        let ps = vec![
            proxy("a", 5, 0, &[]),
            proxy("b", 4, 0, &[]),
            proxy("c", 1, 0, &["blog"]),
        ];
        assert_eq!(judge(&ps, "shop", 5).unwrap(), None);
        assert_eq!(judge(&ps, "shop", 4).unwrap().unwrap().proxies, ["a", "b"]);
        let ps = vec![proxy("a", 5, 0, &[]), proxy("b", 4, 5, &[])];
        let err = judge(&ps, "shop", 5).unwrap_err();
        assert_eq!(err.code, Code::NotLive);
        assert!(
            err.message
                .contains("b rejected revision 5: endpoint not allowed"),
            "{err}"
        );
        // An old rejection, since superseded, does not count.
        let ps = vec![proxy("a", 6, 5, &[])];
        assert!(judge(&ps, "shop", 5).unwrap().is_some());
    }
}
