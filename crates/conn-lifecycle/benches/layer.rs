//! What the in-flight layer adds to one request, next to the same service without it.
//!
//! One request here is: `poll_ready`, `call`, the response future polled to its end, the
//! response body polled to its end, and everything dropped (which is when the layer releases
//! the request). The handler answers at once with a `Full` body, so what is left to measure
//! is the layer itself.
//!
//! Two numbers come out: the heap allocations per request, counted by an instrumented
//! global allocator and printed first, then criterion's time per request.
//!
//! ```text
//! cargo bench -p conn-lifecycle --bench layer
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use conn_lifecycle::{InFlightLayer, Lifecycle};
use criterion::Criterion;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer, Service};

// Every allocation of this process goes through the counters; a `Region` reads them
// around a loop of requests.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Requests per allocation count: enough that a one-off allocation shows as a fraction.
const COUNTED_REQUESTS: u32 = 10_000;

/// The handler: a small body, ready at once, as `GET /` of the `serve` example.
async fn hello(_request: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

/// A waker for futures that never wait: the handler and its body are always ready.
struct NeverWoken;

impl Wake for NeverWoken {
    fn wake(self: Arc<Self>) {}
}

/// Runs one request through `service`, as hyper would, to the drop of its body.
fn one_request<S, B>(service: &mut S, cx: &mut Context<'_>)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    let Poll::Ready(Ok(())) = service.poll_ready(cx) else {
        unreachable!("a service_fn is always ready (a bug in this benchmark)");
    };
    let mut response = pin!(service.call(Request::new(())));
    let Poll::Ready(Ok(response)) = response.as_mut().poll(cx) else {
        unreachable!("the handler answers at once (a bug in this benchmark)");
    };

    let mut body = pin!(response.into_body());
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(cx) {
        black_box(frame.is_ok());
    }
}

/// The bare service, and the same one behind the in-flight layer on a fresh connection.
fn services() -> (
    impl Service<Request<()>, Response = Response<impl Body>, Error = Infallible>,
    impl Service<Request<()>, Response = Response<impl Body>, Error = Infallible>,
) {
    let conn = Lifecycle::default().connection();
    let layered = InFlightLayer::new(conn).layer(service_fn(hello));
    (service_fn(hello), layered)
}

/// Heap allocations and bytes per request, averaged over [`COUNTED_REQUESTS`].
fn allocations<S, B>(mut service: S) -> (f64, f64)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    let waker = Waker::from(Arc::new(NeverWoken));
    let mut cx = Context::from_waker(&waker);
    // A first request outside the count, so that anything made once is not counted.
    one_request(&mut service, &mut cx);

    let region = Region::new(GLOBAL);
    for _ in 0..COUNTED_REQUESTS {
        one_request(&mut service, &mut cx);
    }
    let change = region.change();
    let per_request = |n: usize| n as f64 / f64::from(COUNTED_REQUESTS);
    (
        per_request(change.allocations + change.reallocations),
        per_request(change.bytes_allocated),
    )
}

fn print_allocations() {
    let (bare, layered) = services();
    let (bare_count, bare_bytes) = allocations(bare);
    let (layered_count, layered_bytes) = allocations(layered);
    println!("allocations per request ({COUNTED_REQUESTS} requests each):");
    println!("  bare service      {bare_count:.2} allocations, {bare_bytes:.1} bytes");
    println!("  in-flight layer   {layered_count:.2} allocations, {layered_bytes:.1} bytes");
    println!(
        "  added by layer    {:.2} allocations, {:.1} bytes",
        layered_count - bare_count,
        layered_bytes - bare_bytes
    );
}

fn time_per_request(c: &mut Criterion) {
    let (mut bare, mut layered) = services();
    let waker = Waker::from(Arc::new(NeverWoken));
    let mut cx = Context::from_waker(&waker);

    let mut group = c.benchmark_group("one request");
    group.bench_function("bare service", |b| {
        b.iter(|| one_request(&mut bare, &mut cx))
    });
    group.bench_function("in-flight layer", |b| {
        b.iter(|| one_request(&mut layered, &mut cx))
    });
    group.finish();
}

fn main() {
    print_allocations();
    let mut criterion = Criterion::default().configure_from_args();
    time_per_request(&mut criterion);
    criterion.final_summary();
}
