//! A body passed through untouched while something watches its frames go by: a copy of a
//! request body ([`crate::upstream::body::BodyCopy`]), a gRPC call's outcome in a response's
//! trailers (`proxy::call::Call`), a pooled connection given back at the body's end
//! ([`crate::upstream::client::Checkin`]). Without an observer it costs one branch per frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Watches a body's frames. Dropped without [`Observer::ended`] (the body was dropped
/// first), it is up to the observer what that means.
pub trait Observer {
    /// A frame went by; false when the observer wants no more.
    fn frame(&mut self, frame: &Frame<Bytes>) -> bool;
    /// The body is over: `whole` when it ended cleanly, false when it broke.
    fn ended(self, whole: bool);
}

#[derive(Debug)]
pub struct Observed<O> {
    inner: Incoming,
    observer: Option<O>,
}

impl<O: Observer> Observed<O> {
    pub fn new(inner: Incoming, observer: Option<O>) -> Observed<O> {
        Observed { inner, observer }
    }

    /// The body, without its observer (dropped without [`Observer::ended`]).
    pub fn into_inner(self) -> Incoming {
        self.inner
    }

    fn end(&mut self, whole: bool) {
        if let Some(o) = self.observer.take() {
            o.ended(whole);
        }
    }
}

impl<O: Observer + Unpin> Body for Observed<O> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.observer.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if this.observer.as_mut().is_some_and(|o| !o.frame(frame)) {
                        this.observer = None;
                    }
                    // Whoever reads the body may stop at the end of the stream without
                    // asking again.
                    if frame.is_trailers() || this.inner.is_end_stream() {
                        this.end(true);
                    }
                }
                Poll::Ready(None) => this.end(true),
                Poll::Ready(Some(Err(_))) => this.end(false),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
