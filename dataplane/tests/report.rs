//! The statistics stream against a real (in-process) gRPC server that drops the first
//! connection before acknowledging: the proxy sends the unacknowledged report again on the
//! next connection, so nothing is lost, and sequence numbers let the server count it once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use grayline_dataplane::stats::{self, Outcome};
use grayline_dataplane::telemetry::metrics::Metrics;
use grayline_dataplane::telemetry::report::Reporter;
use grayline_dataplane::uplink::servers::Servers;
use grayline_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// (connection number, sequence, requests in the report)
type Seen = Arc<Mutex<Vec<(usize, u64, u64)>>>;

#[derive(Clone)]
struct FlakyStats {
    seen: Seen,
    connections: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl pb::stats_server::Stats for FlakyStats {
    type ReportStream = ReceiverStream<Result<pb::StatsAck, Status>>;

    async fn report(
        &self,
        request: Request<Streaming<pb::StatsReport>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let connection = {
            let mut n = self.connections.lock().unwrap();
            *n += 1;
            *n
        };
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(report)) = inbound.message().await {
                let requests = report
                    .versions
                    .iter()
                    .map(|v| v.status_2xx + v.status_5xx)
                    .sum();
                seen.lock()
                    .unwrap()
                    .push((connection, report.sequence, requests));
                if connection == 1 {
                    // Hang up without acknowledging anything.
                    return;
                }
                let ack = pb::StatsAck {
                    boot_id: report.boot_id,
                    sequence: report.sequence,
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn record(v: &stats::VersionStats, n: usize) {
    for _ in 0..n {
        v.record(Outcome::status(200), 500);
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn unacknowledged_reports_are_sent_again_after_a_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = FlakyStats {
        seen: Arc::default(),
        connections: Arc::default(),
    };
    let seen = server.seen.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::stats_server::StatsServer::new(server))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let registry = Arc::new(stats::Registry::default());
    let version = registry.get("shop", "v1");
    let reporter = Arc::new(Reporter::new(
        registry.clone(),
        Arc::new(ArcSwapOption::empty()),
        Arc::new(Metrics::new()),
        "edge-1".into(),
    ));
    record(&version, 5);
    reporter.tick();
    assert_eq!(reporter.pending(), 1);

    let stop = CancellationToken::new();
    tokio::spawn(reporter.clone().run_sender(
        Arc::new(Servers::new(vec![format!("http://{address}")], Default::default()).unwrap()),
        "token".into(),
        stop.clone(),
    ));
    wait_for("the first connection got report 1", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|&(c, s, _)| c == 1 && s == 1)
    })
    .await;
    record(&version, 3);
    reporter.tick();
    wait_for("every report acknowledged", || reporter.pending() == 0).await;
    stop.cancel();

    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&(1, 1, 5)), "{seen:?}");
    assert!(
        seen.contains(&(2, 1, 5)),
        "report 1 was sent again: {seen:?}"
    );
    assert!(seen.contains(&(2, 2, 3)), "{seen:?}");
    // Counting each sequence once gives exactly what was recorded.
    let mut unique: Vec<(u64, u64)> = seen.iter().map(|&(_, s, r)| (s, r)).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.iter().map(|&(_, r)| r).sum::<u64>(), 8);
}
