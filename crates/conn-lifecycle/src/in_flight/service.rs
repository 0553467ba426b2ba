use std::task::{Context, Poll};

use http::{Method, Request, Response, Version};
use tower_service::Service;

use super::body::RequestGuard;
use super::future::ResponseFuture;
use super::InFlightBody;
use crate::connection::Connection;

/// Counts each request in flight from [`Service::call`] until its response body is dropped.
///
/// A request stays in flight while its body streams, and is released however it ends: body
/// finished, request cancelled, handler error, or, for HTTP/2, a stream reset (hyper drops the
/// body on another task then, possibly after the connection itself ended; the count is kept
/// in shared state, so that is fine). Cloning shares the connection's count.
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    conn: Connection,
}

impl<S> InFlight<S> {
    /// Wraps `inner`, counting its requests on `conn`.
    pub fn new(inner: S, conn: Connection) -> Self {
        InFlight { inner, conn }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InFlight<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<InFlightBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Before HTTP/1.1 a body without a known length can only be framed by closing the
        // connection; remember that, so a cut one is closed abortively.
        let version = request.version();
        if version >= Version::HTTP_2 {
            self.conn.set_http2();
        }
        let guard = RequestGuard::new(self.conn.clone(), version <= Version::HTTP_10);
        // HTTP/1 may have more requests pipelined behind the last allowed one; marking its
        // response `Connection: close` makes hyper stop right after it. (HTTP/2 forbids the
        // header; its GOAWAY comes from the close trigger.)
        let close_after = guard.last && version <= Version::HTTP_11;
        // A successful CONNECT turns the connection into a tunnel, as a 101 does.
        let connect = request.method() == Method::CONNECT;
        ResponseFuture::new(self.inner.call(request), guard, close_after, connect)
    }
}
