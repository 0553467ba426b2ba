//! The routes, shared by both modes so that comparisons compare the same work.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::mpsc;

pub(crate) type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Answers whether the server is draining, for `/healthz`.
pub(crate) type Draining = Arc<dyn Fn() -> bool + Send + Sync>;

/// Routes one request.
pub(crate) async fn route(
    request: Request<Incoming>,
    draining: Draining,
) -> Result<Response<Body>, Infallible> {
    let query = parse_query(request.uri().query());
    let number = |name: &str| {
        query
            .get(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => text(StatusCode::OK, "hello\n"),
        (&Method::GET, "/slow") => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            text(StatusCode::OK, "slow\n")
        }
        (&Method::GET, "/stream") => stream(number("chunks"), Duration::from_millis(number("ms"))),
        (&Method::GET, "/bytes") => {
            let n = usize::try_from(number("n"))
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            full(StatusCode::OK, Bytes::from(vec![b'x'; n]))
        }
        (&Method::POST, "/echo") => Response::new(request.into_body().map_err(Into::into).boxed()),
        (&Method::GET, "/healthz") if draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining")
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    full(status, Bytes::from_static(body.as_bytes()))
}

fn full(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

/// `chunks` chunks of one line each, `gap` apart, with no length: chunked in HTTP/1.1.
fn stream(chunks: u64, gap: Duration) -> Response<Body> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            let line = Bytes::from(format!("chunk {i}\n"));
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    Response::new(ChannelBody(rx).boxed())
}

/// A body fed by a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(http_body::Frame::data(data))))
    }
}

fn parse_query(query: Option<&str>) -> HashMap<&str, &str> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect()
}
