//! Review of the network hardening (issue 13, item 10): a slow client that keeps a connection
//! busy without ever letting the idle timeout fire. (The other side of it, a response taken
//! slowly, is `service`'s `a_response_taken_slowly_ends_the_connection_after_the_body_timeout`:
//! over loopback the kernel takes a whole response into its buffers, so only a pipe shows it.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net_hardening::{start_api, start_console};
use crate::support::SHOP_KEY;

/// Idle timeout well above the pace of the slow clients below (so it never fires), and the
/// body timeout under test.
const LIMITS: [(&str, &str); 2] = [("HTTP_IDLE_TIMEOUT_SECONDS", "30"), ("HTTP_BODY_TIMEOUT_SECONDS", "1")];

/// How long a slow client is kept at it before the test gives up on the server closing.
const PATIENCE: Duration = Duration::from_secs(8);

/// Sends `head`, then one byte of body every 200 ms (never idle for long); returns how long the
/// server took to close the connection. Panics if it is still open after [`PATIENCE`].
async fn dribble_body(addr: SocketAddr, head: &str) -> Duration {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < PATIENCE {
        if stream.write_all(b" ").await.is_err() {
            return started.elapsed();
        }
        // An answer (400...) is fine: the connection must still end.
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            return started.elapsed();
        }
    }
    panic!("{addr}: a body dribbled for {PATIENCE:?} still held the connection open")
}

/// A request body sent one byte at a time, just often enough never to trip the idle timeout,
/// held a connection (one of `HTTP_MAX_CONNECTIONS`) for as long as the client liked: on the
/// console, with no credentials at all (`POST /login` reads its form before checking the
/// token). `HTTP_BODY_TIMEOUT_SECONDS` bounds the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dribbled_under_the_idle_timeout_is_cut_off() {
    let (console_addr, _console) = start_console(&LIMITS).await;
    let login = "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: 100000\r\n\r\ntoken=";
    let took = dribble_body(console_addr.parse().unwrap(), login).await;
    assert!(took < Duration::from_secs(5), "the console closed only after {took:?}");

    let (api, stop, _server) = start_api(&LIMITS).await;
    let job = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SHOP_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{\"kind\":"
    );
    let took = dribble_body(api, &job).await;
    assert!(took < Duration::from_secs(5), "the API closed only after {took:?}");

    // A body sent at once is still taken, and the connection kept for the next request.
    let mut stream = TcpStream::connect(api).await.unwrap();
    for _ in 0..2 {
        stream.write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed");
        assert!(buf.starts_with(b"HTTP/1.1 "), "{}", String::from_utf8_lossy(&buf[..n]));
    }
    let _ = stop.send(());
}
