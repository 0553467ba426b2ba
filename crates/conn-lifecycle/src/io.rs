//! The IO wrapper: records activity, and hands the stream back when its owner drops it.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::connection::Connection;

/// A stream wrapper that records activity on its [`Connection`] and, when dropped, hands
/// the stream back through its [`ReturnedIo`].
///
/// hyper drops the IO of a connection it gives up on (a protocol error, its header read
/// timeout, a cancelled protocol detection) without closing it, and a tokio-rustls stream
/// dropped that way sends no close_notify. With this wrapper the stream is not lost: the
/// task that owns the connection awaits the [`ReturnedIo`] and runs the close sequence
/// itself. Nothing is locked on reads or writes; the hand-back is one message, sent once.
pub struct TrackedIo<T> {
    /// Always `Some` until `Drop` (or `into_inner`) takes it.
    io: Option<T>,
    back: Option<oneshot::Sender<T>>,
    conn: Connection,
}

/// Resolves with the stream once its [`TrackedIo`] is dropped.
///
/// Resolves with `None` if the stream was taken out with [`TrackedIo::into_inner`].
#[derive(Debug)]
pub struct ReturnedIo<T> {
    rx: oneshot::Receiver<T>,
}

impl<T> TrackedIo<T> {
    pub(crate) fn new(io: T, conn: Connection) -> (Self, ReturnedIo<T>) {
        let (tx, rx) = oneshot::channel();
        let io = TrackedIo {
            io: Some(io),
            back: Some(tx),
            conn,
        };
        (io, ReturnedIo { rx })
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        self.io
            .as_ref()
            .expect("TrackedIo holds its stream until dropped")
    }

    /// The wrapped stream, mutably. Reads and writes made through it do not count as activity.
    pub fn get_mut(&mut self) -> &mut T {
        self.io
            .as_mut()
            .expect("TrackedIo holds its stream until dropped")
    }

    /// Takes the stream out; the [`ReturnedIo`] then resolves with `None`.
    pub fn into_inner(mut self) -> T {
        self.back = None;
        self.io
            .take()
            .expect("TrackedIo holds its stream until dropped")
    }

    fn poll_io<R>(
        &mut self,
        f: impl FnOnce(Pin<&mut T>) -> Poll<io::Result<R>>,
        made_progress: impl FnOnce(&R) -> bool,
    ) -> Poll<io::Result<R>>
    where
        T: Unpin,
    {
        let result = ready!(f(Pin::new(self.get_mut())));
        if let Ok(value) = &result {
            if made_progress(value) {
                self.conn.shared.touch();
            }
        }
        Poll::Ready(result)
    }
}

impl<T> Drop for TrackedIo<T> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            // If nobody waits for the stream any more, it is simply dropped.
            let _ = back.send(io);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = self.get_mut();
        let result = ready!(Pin::new(this.get_mut()).poll_read(cx, buf));
        if result.is_ok() && buf.filled().len() > before {
            this.conn.shared.touch();
        }
        Poll::Ready(result)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(|io| io.poll_write(cx, buf), |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(|io| io.poll_write_vectored(cx, bufs), |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().get_mut()).poll_shutdown(cx)
    }
}

impl<T> Future for ReturnedIo<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(Result::ok)
    }
}

impl<T> fmt::Debug for TrackedIo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedIo")
            .field("connection", &self.conn.id())
            .finish_non_exhaustive()
    }
}
