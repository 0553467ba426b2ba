//! The response future of [`InFlight`](super::InFlight).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{HeaderValue, CONNECTION};
use http::{Response, StatusCode};
use pin_project_lite::pin_project;

use super::body::RequestGuard;
use super::InFlightBody;

pin_project! {
    /// Resolves with the inner service's response, its body wrapped in an [`InFlightBody`]
    /// that keeps the request in flight.
    ///
    /// Dropping this future before it resolves releases the request.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
        close_after: bool,
        connect: bool,
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(inner: F, guard: RequestGuard, close_after: bool, connect: bool) -> Self {
        ResponseFuture {
            inner,
            guard: Some(guard),
            close_after,
            connect,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<InFlightBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if *this.close_after {
            let close = HeaderValue::from_static("close");
            response.headers_mut().insert(CONNECTION, close);
        }
        let mut guard = this
            .guard
            .take()
            .expect("ResponseFuture polled after it resolved (a bug in the caller)");
        // The handler is done; until the HTTP layer polls the body, the request waits on it.
        guard.set_working(false);
        // An upgrade: what the client sends from now on is no HTTP/1 request head.
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS || (*this.connect && status.is_success()) {
            guard.conn().upgraded();
        }
        Poll::Ready(Ok(response.map(|body| InFlightBody::new(body, guard))))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
