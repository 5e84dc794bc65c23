//! The HTTP server of all three processes (`producer-api`, `dlq-console`, the worker's metrics
//! address): HTTP/1.1 with a bound on each way a client can hold a connection open.
//!
//! - `HTTP_HEADER_READ_TIMEOUT_MS`: a request's head (request line and headers) must arrive in
//!   full within this time, counted from when the server starts waiting for it: on a new
//!   connection, or on a kept-alive one between requests (so it is also the keep-alive idle
//!   limit). Otherwise the connection is closed.
//! - `HTTP_IDLE_TIMEOUT_SECONDS`: a connection on which no byte moved either way for this long
//!   is closed (a request body, or the reading of a response, that stalls).
//! - `HTTP_BODY_TIMEOUT_SECONDS`: a request's body must arrive in full within this time of its
//!   head, and a response must be taken in full by the client within this time of the handler
//!   returning it; otherwise the connection is closed. Without it, a client that sends (or
//!   reads) one byte just before each idle timeout holds its connection for as long as it
//!   likes: a few such clients fill `HTTP_MAX_CONNECTIONS`. The handler's own time is not
//!   counted.
//! - `HTTP_MAX_CONNECTIONS`: connections served at once; one over the cap is answered `503`
//!   with `Retry-After: 1` (best effort) and closed at once, counted in
//!   `jobplane_http_connections_refused_total`.
//!
//! axum's own `serve` has none of these, hence this accept loop around hyper's HTTP/1 server.

use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jobs::settings::{Env, SettingError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// The limits of [`serve`], from the `HTTP_*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `HTTP_HEADER_READ_TIMEOUT_MS`, default 10000 (1 to 300000).
    pub header_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_SECONDS`, default 60 (1 to 3600).
    pub idle_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECONDS`, default 60 (1 to 3600): for a request's body to arrive, and
    /// for a response to be taken by the client, each in full.
    pub body_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`, default 10000 (1 to 1000000): keep it below the process's
    /// open-file limit (`ulimit -n`), less what Redis and PostgreSQL connections need.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_mins(1),
            body_timeout: Duration::from_mins(1),
            max_connections: 10_000,
        }
    }
}

impl HttpLimits {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let header_read_timeout = env.millis("HTTP_HEADER_READ_TIMEOUT_MS", 10_000)?;
        if header_read_timeout.is_zero() || header_read_timeout > Duration::from_mins(5) {
            return Err(SettingError::new("HTTP_HEADER_READ_TIMEOUT_MS", "must be between 1 and 300000"));
        }
        let idle_timeout = env.seconds("HTTP_IDLE_TIMEOUT_SECONDS", 60)?;
        if idle_timeout.is_zero() || idle_timeout > Duration::from_hours(1) {
            return Err(SettingError::new("HTTP_IDLE_TIMEOUT_SECONDS", "must be between 1 and 3600"));
        }
        let body_timeout = env.seconds("HTTP_BODY_TIMEOUT_SECONDS", 60)?;
        if body_timeout.is_zero() || body_timeout > Duration::from_hours(1) {
            return Err(SettingError::new("HTTP_BODY_TIMEOUT_SECONDS", "must be between 1 and 3600"));
        }
        let max_connections: usize = env.parse("HTTP_MAX_CONNECTIONS", 10_000)?;
        if !(1..=1_000_000).contains(&max_connections) {
            return Err(SettingError::new("HTTP_MAX_CONNECTIONS", "must be between 1 and 1000000"));
        }
        Ok(Self { header_read_timeout, idle_timeout, body_timeout, max_connections })
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; then stops
/// accepting, lets each connection finish the request it is on, and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    metrics::describe_counter!(
        "jobplane_http_connections_refused_total",
        "TCP connections closed at once because HTTP_MAX_CONNECTIONS were open"
    );
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopped) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(stream, router.clone(), limits, stopped.clone(), permit));
            }
            Err(_) => refuse(&stream, limits.max_connections),
        }
    }
    drop(listener);
    drop(stop);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One connection, until the client or a limit ends it, or a graceful shutdown.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    router: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: Arc::clone(&activity) });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let service = {
        let activity = Arc::clone(&activity);
        tower::service_fn(move |request: hyper::Request<Incoming>| {
            let activity = Arc::clone(&activity);
            let request = request.map(|body| Body::new(RequestBody::new(body, &activity, limits.body_timeout)));
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                activity.set_deadline(&activity.response_deadline, limits.body_timeout);
                Ok::<_, Infallible>(response.map(|inner| Body::new(ResponseBody { inner, activity })))
            }
        })
    };
    let mut conn = pin!(builder.serve_connection(io, TowerToHyperService::new(service)));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = activity.idle_for(limits.idle_timeout) => {
                tracing::debug!("HTTP connection idle too long; closed");
                return;
            }
            () = activity.body_overdue() => {
                tracing::debug!("HTTP body not sent or taken in HTTP_BODY_TIMEOUT_SECONDS; closed");
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Over the cap: a `503` if the socket takes it without waiting, then closed.
fn refuse(stream: &TcpStream, max: usize) {
    static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
    metrics::counter!("jobplane_http_connections_refused_total").increment(1);
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    // One warning a minute at most, however many are refused.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60);
    if LAST_WARNED.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(max_connections = max, "HTTP_MAX_CONNECTIONS reached: refusing new connections");
    }
}

/// Errors of one connection (it went away before being accepted) retry at once; others (out
/// of file descriptors) after a second, as axum's `serve` does.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        tracing::warn!(error = %e, "accepting a connection failed; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// No deadline.
const NONE: u64 = u64::MAX;

/// When a byte last moved on a connection, and by when the body under way must have moved.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start`.
    last: AtomicU64,
    /// Milliseconds from `start` by which the request's body must be in, or [`NONE`].
    request_deadline: AtomicU64,
    /// Milliseconds from `start` by which the response must be written out, or [`NONE`].
    response_deadline: AtomicU64,
    /// The handler's response was handed to hyper in full: the next completed flush (hyper
    /// flushes the socket only once its buffer is empty) means the client took it.
    response_handed: AtomicBool,
    /// A deadline was set.
    deadline_set: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            request_deadline: AtomicU64::new(NONE),
            response_deadline: AtomicU64::new(NONE),
            response_handed: AtomicBool::new(false),
            deadline_set: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn set_deadline(&self, deadline: &AtomicU64, limit: Duration) {
        let limit = u64::try_from(limit.as_millis()).unwrap_or(NONE);
        deadline.store(self.now().saturating_add(limit).min(NONE - 1), Ordering::Relaxed);
        self.deadline_set.notify_one();
    }

    /// Resolves once a request body or a response is late (see [`HttpLimits::body_timeout`]).
    async fn body_overdue(&self) {
        loop {
            let set = self.deadline_set.notified();
            let deadline =
                self.request_deadline.load(Ordering::Relaxed).min(self.response_deadline.load(Ordering::Relaxed));
            if deadline == NONE {
                set.await;
                continue;
            }
            let at = self.start + Duration::from_millis(deadline);
            if Instant::now() >= at {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = set => {}
            }
        }
    }

    /// Resolves once nothing moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let deadline = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records its activity.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) && self.activity.response_handed.swap(false, Ordering::Relaxed) {
            self.activity.response_deadline.store(NONE, Ordering::Relaxed);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request's body, due in full by the connection's request deadline, which it lifts once it
/// ended or was dropped (the handler did not want the rest: hyper then closes the connection).
struct RequestBody {
    inner: Incoming,
    activity: Arc<Activity>,
}

impl RequestBody {
    fn new(inner: Incoming, activity: &Arc<Activity>, limit: Duration) -> Self {
        if !inner.is_end_stream() {
            activity.set_deadline(&activity.request_deadline, limit);
        }
        Self { inner, activity: Arc::clone(activity) }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.activity.request_deadline.store(NONE, Ordering::Relaxed);
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

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.activity.request_deadline.store(NONE, Ordering::Relaxed);
    }
}

/// A response's body, due at the client by the connection's response deadline (set when the
/// handler returned it). Hyper drops it once it holds all of it (or gives up); the next
/// completed flush then lifts the deadline.
struct ResponseBody {
    inner: Body,
    activity: Arc<Activity>,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.activity.response_handed.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_each_bad_one_names_its_variable() {
        assert_eq!(HttpLimits::from_env(&Env::default()).unwrap(), HttpLimits::default());
        for (name, value) in [
            ("HTTP_HEADER_READ_TIMEOUT_MS", "0"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "x"),
            ("HTTP_IDLE_TIMEOUT_SECONDS", "0"),
            ("HTTP_IDLE_TIMEOUT_SECONDS", "3601"),
            ("HTTP_BODY_TIMEOUT_SECONDS", "0"),
            ("HTTP_BODY_TIMEOUT_SECONDS", "3601"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_CONNECTIONS", "-1"),
        ] {
            let error = HttpLimits::from_env(&Env::from_pairs(&[(name, value)])).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{name}: ")), "{error}");
        }
    }

    /// Serves `router` on one end of an in-memory pipe of `capacity` bytes (a socket whose
    /// buffers stay small, as over a real network) within `limits`; returns the client's end
    /// and the connection's task.
    fn serve_pipe(
        router: Router,
        limits: HttpLimits,
        capacity: usize,
    ) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(capacity);
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let (stop, stopped) = watch::channel(());
        let task = tokio::spawn(async move {
            let _stop = stop;
            connection(server, router, limits, stopped, permit).await;
        });
        (client, task)
    }

    const SLOW: HttpLimits = HttpLimits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(1),
        max_connections: 1,
    };

    /// A client that takes a large response a little at a time, never idle for long, held its
    /// connection (a place under `HTTP_MAX_CONNECTIONS`) until the last byte: hours for `/docs`'
    /// 1 MB script at one segment a minute. Now it has `HTTP_BODY_TIMEOUT_SECONDS` to take it.
    #[tokio::test]
    async fn a_response_taken_slowly_ends_the_connection_after_the_body_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let big = axum::routing::get(|| async { vec![b'x'; 1 << 20] });
        let (mut client, task) = serve_pipe(Router::new().route("/big", big), SLOW, 4096);
        client.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        let mut read = 0;
        while !task.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(10), "still served after {read} bytes");
            read += client.read(&mut buf).await.unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(read < 500_000, "{read}");

        // Taken at once, the same response comes in full and the connection stays open.
        let big = axum::routing::get(|| async { vec![b'x'; 1 << 20] });
        let (mut client, task) = serve_pipe(Router::new().route("/big", big), SLOW, 4096);
        client.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        while got.len() < (1 << 20) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!task.is_finished(), "a kept-alive connection closed by the body timeout");
    }
}
