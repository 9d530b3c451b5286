//! The statistics stream: proxies send numbered reports, the server counts each sequence
//! once and acknowledges it.

use std::sync::Arc;

use grayline_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ApiError;
use crate::stats::StatsStore;

#[derive(Debug)]
pub struct StatsService {
    stats: Arc<StatsStore>,
    shutdown: CancellationToken,
}

impl StatsService {
    pub fn new(stats: Arc<StatsStore>, shutdown: CancellationToken) -> Self {
        StatsService { stats, shutdown }
    }
}

fn check(r: &pb::StatsReport) -> Result<(), ApiError> {
    if r.proxy_id.is_empty() || r.proxy_id.len() > 128 {
        return Err(ApiError::invalid(
            "proxy_id",
            "required, at most 128 characters",
        ));
    }
    if r.boot_id.len() > 64 {
        return Err(ApiError::invalid("boot_id", "at most 64 characters"));
    }
    if r.sequence == 0 {
        return Err(ApiError::invalid("sequence", "starts at 1"));
    }
    if r.versions.len() > 10_000 {
        return Err(ApiError::invalid(
            "versions",
            "at most 10000 versions per report",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::stats_server::Stats for StatsService {
    type ReportStream = ReceiverStream<Result<pb::StatsAck, Status>>;

    async fn report(
        &self,
        request: Request<Streaming<pb::StatsReport>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let certificate = request
            .extensions()
            .get::<super::ProxyCertificate>()
            .cloned();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let stats = self.stats.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let report = tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(r)) => r,
                        Ok(None) | Err(_) => return,
                    },
                    () = shutdown.cancelled() => return,
                };
                if let Err(e) = check(&report) {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
                let named = super::ProxyCertificate::check(
                    certificate.as_ref(),
                    &report.proxy_id,
                    "proxy_id",
                );
                if let Err(status) = named {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                if let Err(e) = stats.ingest(&report).await {
                    // Not acknowledged: the proxy keeps the report and resends it.
                    let _ = tx.send(Err(e.into())).await;
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
