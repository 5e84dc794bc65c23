//! The HTTP server of all three processes (`producer-api`, `dlq-console`, the worker's metrics
//! address): HTTP/1.1 with a bound on each way a client can hold a connection open.
//!
//! - `HTTP_HEADER_READ_TIMEOUT_MS`: a request's head (request line and headers) must arrive in
//!   full within this time, counted from when the server starts waiting for it: on a new
//!   connection, or on a kept-alive one between requests (so it is also the keep-alive idle
//!   limit). Otherwise the connection is closed.
//! - `HTTP_IDLE_TIMEOUT_SECONDS`: a connection on which no byte moved either way for this long
//!   is closed (a request body, or the reading of a response, that stalls).
//! - `HTTP_MAX_CONNECTIONS`: connections served at once; one over the cap is answered `503`
//!   with `Retry-After: 1` (best effort) and closed at once, counted in
//!   `jobplane_http_connections_refused_total`.
//!
//! axum's own `serve` has none of these, hence this accept loop around hyper's HTTP/1 server.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jobs::settings::{Env, SettingError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The limits of [`serve`], from the `HTTP_*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `HTTP_HEADER_READ_TIMEOUT_MS`, default 10000 (1 to 300000).
    pub header_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_SECONDS`, default 60 (1 to 3600).
    pub idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`, default 10000 (1 to 1000000): keep it below the process's
    /// open-file limit (`ulimit -n`), less what Redis and PostgreSQL connections need.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_mins(1),
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
        let max_connections: usize = env.parse("HTTP_MAX_CONNECTIONS", 10_000)?;
        if !(1..=1_000_000).contains(&max_connections) {
            return Err(SettingError::new("HTTP_MAX_CONNECTIONS", "must be between 1 and 1000000"));
        }
        Ok(Self { header_read_timeout, idle_timeout, max_connections })
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
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: Arc::clone(&activity) });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut conn = pin!(builder.serve_connection(io, TowerToHyperService::new(router)));
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

/// When a byte last moved on a connection.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(elapsed, Ordering::Relaxed);
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
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_CONNECTIONS", "-1"),
        ] {
            let error = HttpLimits::from_env(&Env::from_pairs(&[(name, value)])).unwrap_err().to_string();
            assert!(error.starts_with(&format!("{name}: ")), "{error}");
        }
    }
}
