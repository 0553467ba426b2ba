use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::connection::Connection;

/// Keeps one request in flight until dropped.
pub(crate) struct RequestGuard {
    conn: Connection,
    /// The request asked for HTTP/1.0 or older; only then can a body be close-delimited.
    close_delimited: bool,
    /// The body reached its end.
    complete: bool,
    /// This is the last request the policy allows on the connection.
    pub(crate) last: bool,
    /// The application is working on the request (see `Connection::set_working`).
    working: bool,
}

impl RequestGuard {
    #[inline]
    pub(crate) fn new(conn: Connection, close_delimited: bool) -> Self {
        let last = conn.request_started();
        RequestGuard {
            conn,
            close_delimited,
            complete: false,
            last,
            working: true,
        }
    }

    /// The connection the request came on.
    pub(crate) fn conn(&self) -> &crate::connection::Shared {
        &self.conn.shared
    }

    /// Records whether the application is working on the request now, or waits on the peer.
    #[inline]
    pub(crate) fn set_working(&mut self, working: bool) {
        if self.working != working {
            self.working = working;
            self.conn.set_working(working);
        }
    }
}

impl Drop for RequestGuard {
    #[inline]
    fn drop(&mut self) {
        let cut_close_delimited = self.close_delimited && !self.complete;
        self.conn
            .request_finished(self.working, cut_close_delimited);
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it is dropped.
    ///
    /// Frames pass through untouched; the wrapper adds no allocation.
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        guard: RequestGuard,
    }
}

impl<B: Body> InFlightBody<B> {
    #[inline]
    pub(crate) fn new(inner: B, mut guard: RequestGuard) -> Self {
        // A body of known length is framed by its length even in HTTP/1.0.
        if inner.size_hint().exact().is_some() {
            guard.close_delimited = false;
        }
        InFlightBody { inner, guard }
    }
}

impl<B> InFlightBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        // Pending: the application has yet to produce the frame. Ready: the frame goes to the
        // HTTP layer, which polls again once the peer has taken what it had.
        let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) else {
            this.guard.set_working(true);
            return Poll::Pending;
        };
        this.guard.set_working(false);
        // hyper may stop polling once `is_end_stream` is true, so check both.
        if frame.is_none() || this.inner.is_end_stream() {
            this.guard.complete = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for InFlightBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightBody")
            .field("connection", &self.guard.conn.id())
            .finish_non_exhaustive()
    }
}
