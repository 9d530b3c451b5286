//! The demo upstream's gRPC service (`grayline.v1.Demo`), served by tonic on the same port
//! as the HTTP answers: unary, server-streaming and bidirectional calls whose answers name the
//! version and echo the call's metadata. It fails like the HTTP side (on command, or a share
//! at random): a unary call with `UNAVAILABLE` straight away (a trailers-only answer), a
//! stream after its first answer (the status in the trailers).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use grayline_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::State;

#[derive(Debug)]
pub struct Demo {
    pub state: Arc<State>,
}

type Answers = ReceiverStream<Result<pb::HelloReply, Status>>;

impl Demo {
    fn reply(&self, metadata: &MetadataMap, name: &str, index: u32) -> pb::HelloReply {
        pb::HelloReply {
            version: self.state.name.clone(),
            message: format!("hello {name} from {}", self.state.name),
            index,
            metadata: metadata
                .clone()
                .into_headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
        }
    }

    /// Counts the call and waits the configured delay; the status to fail it with, if any.
    async fn begin(&self) -> Option<Status> {
        self.state.served.fetch_add(1, Ordering::SeqCst);
        let delay = self.state.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.state
            .failing_now()
            .then(|| Status::unavailable(format!("{} is failing on purpose", self.state.name)))
    }
}

#[tonic::async_trait]
impl pb::demo_server::Demo for Demo {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        if let Some(status) = self.begin().await {
            return Err(status);
        }
        let reply = self.reply(request.metadata(), &request.get_ref().name, 0);
        Ok(Response::new(reply))
    }

    type CountdownStream = Answers;

    async fn countdown(
        &self,
        request: Request<pb::CountdownRequest>,
    ) -> Result<Response<Answers>, Status> {
        let failure = self.begin().await;
        let r = request.get_ref();
        let (count, interval) = (r.count.clamp(1, 10_000), u64::from(r.interval_ms));
        let answers: Vec<pb::HelloReply> = (0..count)
            .map(|i| self.reply(request.metadata(), &r.name, i))
            .collect();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for (i, answer) in answers.into_iter().enumerate() {
                if i > 0 {
                    if let Some(status) = failure {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(interval)).await;
                }
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
            if let Some(status) = failure {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ChatStream = Answers;

    async fn chat(
        &self,
        request: Request<Streaming<pb::HelloRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let failure = self.begin().await;
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let demo = Demo {
            state: self.state.clone(),
        };
        tokio::spawn(async move {
            let mut index = 0;
            while let Ok(Some(message)) = inbound.message().await {
                if tx
                    .send(Ok(demo.reply(&metadata, &message.name, index)))
                    .await
                    .is_err()
                {
                    return;
                }
                if let Some(status) = failure.clone() {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                index += 1;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
