//! A gRPC call whose status is still to come: it watches the response go by and records the
//! call's outcome — for the breaker, the endpoint's outlier detection and the statistics —
//! once, when the trailers pass, the stream ends or breaks, or the client goes away.

use std::sync::Arc;

use bytes::Bytes;
use http_body::Frame;

use crate::resilience::breaker::Admit;
use crate::routes::VersionRuntime;
use crate::stats::{EventSet, Outcome};
use crate::upstream::grpc::{Ended, status_of};
use crate::upstream::observed::{Observed, Observer};

/// What the proxy still has to record about a call whose status is still to come: it
/// watches the response go by ([`GrpcBody`]) and records once, when the trailers pass, the
/// stream ends or breaks, or the client goes away (dropping it).
#[derive(Debug)]
pub struct Call {
    pub version: Arc<VersionRuntime>,
    pub endpoint: usize,
    pub admit: Admit,
    /// Time to the response headers, the latency a call is counted with (a streaming call
    /// may stay open for as long as it likes).
    pub latency_us: u64,
    pub stats: bool,
    /// The `grpc-status` of the trailers, once they went by.
    pub status: Option<u32>,
    pub recorded: bool,
    /// The call is in the judged sample.
    pub judged: bool,
    /// The declared events its response headers carried.
    pub events: EventSet,
}

/// A gRPC response passed through, reporting its call's outcome once.
pub type GrpcBody = Observed<Call>;

impl Call {
    /// Records the outcome everywhere a request's outcome goes.
    fn record(&mut self, ended: Ended) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let failed = ended.failed();
        self.version.record_try(self.endpoint, failed);
        self.version.breaker.record(self.admit, failed);
        if self.stats {
            self.version.stats.record(
                Outcome {
                    upstream_error: ended == Ended::Broken,
                    grpc_error: failed,
                    events: self.events,
                    ..Outcome::status(200)
                }
                .judged(self.judged),
                self.latency_us,
            );
        }
    }
}

impl Observer for Call {
    fn frame(&mut self, frame: &Frame<Bytes>) -> bool {
        if let Some(trailers) = frame.trailers_ref() {
            self.status = status_of(trailers);
        }
        true
    }

    fn ended(mut self, whole: bool) {
        let ended = match (whole, self.status) {
            (false, _) => Ended::Broken,
            (true, Some(code)) => Ended::Status(code),
            (true, None) => Ended::NoStatus,
        };
        self.record(ended);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(Ended::Cancelled);
    }
}
