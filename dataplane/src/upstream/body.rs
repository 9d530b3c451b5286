//! The body of a request on its way upstream, and how it comes back for a retry.
//!
//! A request without a body can be sent any number of times. One with a body can be sent
//! again only if no byte of it was read: [`UpstreamBody::rewindable`] hands the client a body
//! that, dropped unread (the connection was refused, or closed before the request went out),
//! returns the client's stream to a [`Rewind`] slot for the next try.
//!
//! The client's stream is a [`ClientBody`]: when the request is mirrored it hands each chunk
//! it passes on to a [`BodyCopy`] too, so the copy is made as the live request is sent,
//! never before it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::upstream::observed::{Observed, Observer};

/// The client's request body; when the request is mirrored, its chunks are copied for the
/// mirror as they are read.
pub type ClientBody = Observed<BodyCopy>;

/// What the upstream client sends.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    Streamed(ClientBody),
    Rewindable(Rewindable),
    /// A whole body in memory (a mirrored copy).
    Buffered(Option<Bytes>),
}

/// A body that gives its stream back to `slot` if dropped before it was read.
#[derive(Debug)]
pub struct Rewindable {
    body: Option<ClientBody>,
    slot: Arc<Mutex<Option<ClientBody>>>,
    read: bool,
}

/// Where an unread body waits for the next try.
#[derive(Clone, Debug, Default)]
pub struct Rewind(Arc<Mutex<Option<ClientBody>>>);

impl Rewind {
    /// The body, if the last try gave it back unread.
    pub fn take(&self) -> Option<ClientBody> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl UpstreamBody {
    /// A body that `rewind` gets back if the try never reads it.
    pub fn rewindable(body: ClientBody, rewind: &Rewind) -> UpstreamBody {
        UpstreamBody::Rewindable(Rewindable {
            body: Some(body),
            slot: rewind.0.clone(),
            read: false,
        })
    }
}

impl Drop for Rewindable {
    fn drop(&mut self) {
        if !self.read
            && let Some(body) = self.body.take()
        {
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpstreamBody::Streamed(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Rewindable(r) => {
                r.read = true;
                match r.body.as_mut() {
                    Some(b) => Pin::new(b).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Buffered(b) => b.is_none(),
            UpstreamBody::Streamed(b) => b.is_end_stream(),
            UpstreamBody::Rewindable(r) => r.body.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpstreamBody::Streamed(b) => b.size_hint(),
            UpstreamBody::Rewindable(r) => r
                .body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
        }
    }
}

/// A copy of a request body made chunk by chunk as the live request sends it (for a mirror),
/// up to a limit.
#[derive(Debug)]
pub struct BodyCopy {
    buf: BytesMut,
    limit: usize,
    done: Option<oneshot::Sender<Result<Bytes, TooLarge>>>,
}

/// The body was longer than the copy's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge;

/// Where a copy waits for its body: the whole body, or that it was too long; closed without
/// either when the live body broke or the client went away.
pub type CopyReady = oneshot::Receiver<Result<Bytes, TooLarge>>;

impl BodyCopy {
    pub fn new(limit: usize) -> (BodyCopy, CopyReady) {
        let (tx, rx) = oneshot::channel();
        let copy = BodyCopy {
            buf: BytesMut::new(),
            limit,
            done: Some(tx),
        };
        (copy, rx)
    }
}

impl Observer for BodyCopy {
    /// Adds a data chunk; false once the body is over the limit (the copy is called off).
    fn frame(&mut self, frame: &Frame<Bytes>) -> bool {
        let Some(data) = frame.data_ref() else {
            return true;
        };
        if self.buf.len() + data.len() > self.limit {
            if let Some(done) = self.done.take() {
                let _ = done.send(Err(TooLarge));
            }
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    /// A whole body lets the copy go; a broken one calls it off (as does dropping it).
    fn ended(mut self, whole: bool) {
        if let (true, Some(done)) = (whole, self.done.take()) {
            let _ = done.send(Ok(self.buf.split().freeze()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> Frame<Bytes> {
        Frame::data(Bytes::from(s.to_string()))
    }

    #[test]
    fn a_body_copy_is_whole_or_not_sent() {
        let (mut copy, ready) = BodyCopy::new(10);
        assert!(copy.frame(&data("hello ")));
        assert!(copy.frame(&Frame::trailers(http::HeaderMap::new())));
        assert!(copy.frame(&data("you!")));
        copy.ended(true);
        assert_eq!(ready.blocking_recv().unwrap().unwrap(), "hello you!");

        let (mut copy, ready) = BodyCopy::new(10);
        assert!(copy.frame(&data("hello ")));
        assert!(!copy.frame(&data("world!")), "over the limit");
        assert_eq!(ready.blocking_recv().unwrap(), Err(TooLarge));

        let (mut copy, ready) = BodyCopy::new(10);
        assert!(copy.frame(&data("hel")));
        copy.ended(false);
        assert!(
            ready.blocking_recv().is_err(),
            "a broken body is not copied"
        );

        let (copy, ready) = BodyCopy::new(10);
        drop(copy);
        assert!(ready.blocking_recv().is_err(), "nor one the client dropped");
    }
}
