//! The IO wrapper: records activity, and hands the stream back when its owner drops it.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

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
///
/// [`Connection::interrupt_io`] ends its reads and fails its writes, for a stream held by
/// someone who must be made to let it go (an upgraded connection's handler).
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

    /// Runs one write-side poll: fails once interrupted, records progress as activity, and
    /// remembers the waker when the stream is not ready.
    fn poll_write_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
        made_progress: impl FnOnce(&R) -> bool,
    ) -> Poll<io::Result<R>>
    where
        T: Unpin,
    {
        let shared = &*self.conn.shared;
        if shared.is_interrupted() {
            return Poll::Ready(Err(interrupted()));
        }
        let poll = f(Pin::new(self.io.as_mut().expect(HELD)), cx);
        match &poll {
            Poll::Ready(Ok(value)) if made_progress(value) => {
                shared.touch();
            }
            Poll::Pending => shared.register_writer(cx.waker()),
            _ => {}
        }
        poll
    }
}

const HELD: &str = "TrackedIo holds its stream until dropped";

fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "connection closing")
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
        let this = self.get_mut();
        let shared = &*this.conn.shared;
        // Interrupted: the end of the stream, as if the peer had closed.
        if shared.is_interrupted() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let poll = Pin::new(this.io.as_mut().expect(HELD)).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) if buf.filled().len() > before => shared.bytes_read(),
            Poll::Pending => shared.register_reader(cx.waker()),
            _ => {}
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |io, cx| io.poll_write(cx, buf), |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |io, cx| io.poll_write_vectored(cx, bufs), |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_write_with(cx, |io, cx| io.poll_flush(cx), |_| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .poll_write_with(cx, |io, cx| io.poll_shutdown(cx), |_| false)
    }
}

impl<T> ReturnedIo<T> {
    /// The stream, if it has already been handed back; otherwise `None`, and the stream can
    /// still be awaited.
    pub fn try_take(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
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
