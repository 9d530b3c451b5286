//! Statistics reporting: every interval, take each version's delta, queue it as a numbered
//! report, and send the queue to the server over the statistics stream. A report leaves the
//! queue only when the server acknowledges its sequence number, and everything still queued is
//! sent again after a reconnect, so nothing is lost and (the server drops sequence numbers it
//! has seen) nothing is counted twice.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use grayline_proto::v1 as pb;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::resilience::breaker::State;
use crate::routes::Routing;
use crate::stats;
use crate::telemetry::metrics::Metrics;
use crate::uplink::servers::Servers;
use crate::uplink::{Backoff, UNREACHABLE, bearer};

/// Reports kept while the server is unreachable: an hour at one per second.
const MAX_QUEUED: usize = 3600;

#[derive(Debug)]
pub struct Reporter {
    stats: Arc<stats::Registry>,
    routing: Arc<ArcSwapOption<Routing>>,
    metrics: Arc<Metrics>,
    queue: Mutex<VecDeque<pb::StatsReport>>,
    queued: Notify,
    next_sequence: AtomicU64,
    pub boot_id: String,
    proxy_id: String,
}

impl Reporter {
    pub fn new(
        stats: Arc<stats::Registry>,
        routing: Arc<ArcSwapOption<Routing>>,
        metrics: Arc<Metrics>,
        proxy_id: String,
    ) -> Reporter {
        Reporter {
            stats,
            routing,
            metrics,
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            next_sequence: AtomicU64::new(1),
            boot_id: format!("{:016x}", fastrand::u64(..)),
            proxy_id,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<pb::StatsReport>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one interval's deltas and queues them as a report (if anything happened).
    pub fn tick(&self) {
        let routing = self.routing.load_full();
        // Made when a version has something to report: most of a large catalog is idle.
        let mut breakers: Option<HashMap<(&str, &str), State>> = None;
        let mut versions = Vec::new();
        for stats in self.stats.for_report() {
            let delta = stats.take();
            if delta.requests() == 0 && delta.upstream_errors == 0 && delta.grpc_errors == 0 {
                continue;
            }
            let breaker = breakers
                .get_or_insert_with(|| {
                    routing
                        .iter()
                        .flat_map(|r| r.versions.iter().flatten())
                        .map(|v| ((v.service(), v.name()), v.breaker.state()))
                        .collect()
                })
                .get(&(stats.service(), stats.version()))
                .copied()
                .unwrap_or(State::Closed);
            if stats.mirrored {
                self.metrics
                    .add_mirrored(stats.service(), stats.version(), &delta);
            } else {
                self.metrics.add(stats.service(), stats.version(), &delta);
            }
            if delta.requests() == 0 {
                continue;
            }
            let mut histogram = Vec::new();
            // Fallbacks alone record no latency; the report still carries a histogram.
            let latency = delta.latency.unwrap_or_else(stats::new_histogram);
            if let Err(e) = V2Serializer::new().serialize(&latency, &mut histogram) {
                tracing::warn!(error = ?e, "could not encode a latency histogram");
                histogram.clear();
            }
            versions.push(pb::VersionStats {
                service: stats.service().to_string(),
                version: stats.version().to_string(),
                status_1xx: delta.status[0],
                status_2xx: delta.status[1],
                status_3xx: delta.status[2],
                status_4xx: delta.status[3],
                status_5xx: delta.status[4],
                upstream_errors: delta.upstream_errors,
                fallbacks: delta.fallbacks,
                breaker: breaker_to_pb(breaker) as i32,
                latency_histogram: histogram,
                mirrored: stats.mirrored,
                grpc_errors: delta.grpc_errors,
                judged: delta.judged.requests,
                judged_errors: delta.judged.errors,
                fresh: delta.judged.fresh,
                judged_latency: delta.judged.latency,
                events: delta
                    .events
                    .into_iter()
                    .map(|e| pb::EventCount {
                        name: e.name,
                        count: e.count,
                        judged: e.judged,
                    })
                    .collect(),
            });
        }
        if versions.is_empty() {
            return;
        }
        let report = pb::StatsReport {
            proxy_id: self.proxy_id.clone(),
            boot_id: self.boot_id.clone(),
            sequence: self.next_sequence.fetch_add(1, Ordering::Relaxed),
            time_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            versions,
        };
        let mut queue = self.queue();
        if queue.len() >= MAX_QUEUED {
            let dropped = queue.pop_front();
            tracing::warn!(
                sequence = dropped.map(|r| r.sequence),
                "statistics queue full while the server is unreachable; dropping the oldest report"
            );
        }
        queue.push_back(report);
        drop(queue);
        self.queued.notify_one();
    }

    /// Reports not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.queue().len()
    }

    /// Calls [`Reporter::tick`] every `interval` until shutdown, and once more at the end.
    pub async fn run_ticker(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                () = shutdown.cancelled() => {
                    self.tick();
                    return;
                }
            }
        }
    }

    /// Keeps the statistics stream open and drains the queue into it.
    pub async fn run_sender(
        self: Arc<Self>,
        servers: Arc<Servers>,
        token: String,
        shutdown: CancellationToken,
    ) {
        // Like the config stream: a returning server gets the queued reports within a second.
        let mut backoff = Backoff::new(UNREACHABLE.0, UNREACHABLE.1);
        // A server that answers but cannot count (its store refuses writes, or has no
        // quorum) is asked again more and more slowly, the reports kept queued meanwhile.
        let mut refused = Backoff::new(REFUSED.0, REFUSED.1);
        loop {
            let result = tokio::select! {
                r = self.session(&servers, &token, &mut backoff) => r,
                () = shutdown.cancelled() => return,
            };
            let delay = match result {
                Ok(()) => backoff.next_delay(),
                Err(e) => match store_trouble(&e) {
                    Some(status) => {
                        tracing::warn!(
                            error = status.message(),
                            queued = self.pending(),
                            "the server cannot count statistics now; they stay queued"
                        );
                        refused.next_delay()
                    }
                    None => {
                        tracing::debug!(
                            error = format!("{e:#}"),
                            queued = self.pending(),
                            "statistics stream failed; will resend"
                        );
                        refused.reset();
                        backoff.next_delay()
                    }
                },
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn session(
        &self,
        servers: &Servers,
        token: &str,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let (channel, server) = servers.connect().await?;
        let result = self.stream(channel, token, backoff).await;
        if result.is_err() {
            servers.failed(server);
        }
        result
    }

    async fn stream(
        &self,
        channel: tonic::transport::Channel,
        token: &str,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let mut client = pb::stats_client::StatsClient::with_interceptor(channel, bearer(token)?);
        let (tx, rx) = mpsc::channel(64);
        let mut acks = client.report(ReceiverStream::new(rx)).await?.into_inner();
        // Reset once the server counts again, not merely answers.
        let mut counted = false;
        let mut sent_up_to = 0;
        loop {
            let unsent: Vec<pb::StatsReport> = self
                .queue()
                .iter()
                .filter(|r| r.sequence > sent_up_to)
                .cloned()
                .collect();
            for report in unsent {
                sent_up_to = report.sequence;
                tx.send(report).await?;
            }
            tokio::select! {
                () = self.queued.notified() => {}
                ack = acks.message() => match ack? {
                    Some(ack) if ack.boot_id == self.boot_id => {
                        self.queue().retain(|r| r.sequence > ack.sequence);
                        if !counted {
                            counted = true;
                            backoff.reset();
                        }
                    }
                    Some(_) => {}
                    None => anyhow::bail!("the server closed the statistics stream"),
                },
            }
        }
    }
}

/// Waits between tries while the server answers that it cannot count (its store refuses
/// writes, or has lost its quorum): up to half a minute, so a thousand proxies do not
/// resend their queues every second to a server that can do nothing with them.
const REFUSED: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// The server's answer when it was the store that refused, not the connection that failed.
fn store_trouble(e: &anyhow::Error) -> Option<&tonic::Status> {
    e.downcast_ref::<tonic::Status>().filter(|s| {
        matches!(
            s.code(),
            tonic::Code::ResourceExhausted | tonic::Code::Unavailable
        ) && !s.message().is_empty()
            && std::error::Error::source(s).is_none()
    })
}

fn breaker_to_pb(state: State) -> pb::BreakerState {
    match state {
        State::Closed => pb::BreakerState::Closed,
        State::Open => pb::BreakerState::Open,
        State::HalfOpen => pb::BreakerState::HalfOpen,
        State::ForcedOpen => pb::BreakerState::ForcedOpen,
        State::Disabled => pb::BreakerState::Disabled,
    }
}
