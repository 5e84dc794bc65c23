//! Network hardening (issue 13, items 3, 6, 10 and `/docs`): webhooks never ride the
//! environment's proxies past the SSRF guard; the guard refuses every special-purpose IPv6 form;
//! the three HTTP servers cut off slow and idle clients and cap their connections; `/docs` loads
//! no third-party script.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobs::settings::Env;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::console::ADMIN_TOKEN;
use crate::support::{Running, SHOP_KEY, TestApp, WorkerProcess, free_port, namespace, redis_url, wait_until_ok};

/// A raw TCP peer that answers every request `200` and keeps the head of each: a fake proxy
/// (it gets absolute-form requests and `CONNECT`s) or a fake webhook endpoint.
struct Sink {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&connections), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                });
            }
        });
        Self { addr, connections, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Enqueues one webhook to `url` (a single attempt) and waits for it to end.
async fn deliver_once(app: &TestApp, url: &str) -> serde_json::Value {
    let job = json!({"kind": "webhook", "max_attempts": 1, "payload": {"url": url, "event": "t.ping", "data": {}}});
    let response = app.post_job(&job, None).await;
    assert_eq!(response.status(), 202, "{url}");
    let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, &["succeeded", "dead"], Duration::from_secs(20)).await
}

fn assert_refused(job: &serde_json::Value, url: &str) {
    assert_eq!(job["status"], "dead", "{url}: {job}");
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("is not a public address"), "{url}: {error}");
}

/// Item 3: with `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` pointing at a proxy, a webhook to
/// localhost went through the proxy, never seen by the guard. Now the proxy gets nothing and
/// the webhook dies as a blocked destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxies_never_carry_a_webhook() {
    let app = TestApp::spawn().await;
    let proxy = Sink::start().await;
    let target = Sink::start().await;
    let proxy_url = proxy.url();
    let proxies: Vec<(&str, &str)> =
        ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]
            .into_iter()
            .map(|name| (name, proxy_url.as_str()))
            .chain([("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false")])
            .collect();
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &proxies);
    for url in [
        format!("http://localhost:{}/hook", target.addr.port()),
        format!("https://localhost:{}/hook", target.addr.port()),
    ] {
        assert_refused(&deliver_once(&app, &url).await, &url);
    }
    assert_eq!(proxy.count(), 0, "the proxy got {:?}", proxy.heads.lock().unwrap());
    assert_eq!(target.count(), 0);
}

/// Item 3, the opt-in: `WEBHOOK_PROXY_URL` is the one proxy used, and the guard still judges
/// the target (resolved by the worker) before the request is handed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_proxy_url_is_used_and_the_guard_still_applies() {
    let proxy = Sink::start().await;
    let target = Sink::start().await;
    let to_target = format!("http://localhost:{}/hook", target.addr.port());

    let guarded = TestApp::spawn().await;
    let settings = [("WEBHOOK_PROXY_URL", proxy.url()), ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false".into())];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _worker = WorkerProcess::start(&guarded.redis_url, &guarded.namespace, &settings);
    assert_refused(&deliver_once(&guarded, &to_target).await, &to_target);
    assert_refused(&deliver_once(&guarded, "http://127.0.0.1:9/x").await, "http://127.0.0.1:9/x");
    assert_eq!(proxy.count(), 0, "the proxy got {:?}", proxy.heads.lock().unwrap());

    // With the guard lifted, the request goes to the proxy (absolute form), not to the target.
    let open = TestApp::spawn().await;
    let settings = [("WEBHOOK_PROXY_URL", proxy.url()), ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".into())];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _worker = WorkerProcess::start(&open.redis_url, &open.namespace, &settings);
    let job = deliver_once(&open, &to_target).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(proxy.count(), 1);
    assert!(proxy.heads.lock().unwrap()[0].starts_with(&format!("POST {to_target} HTTP/1.1")));
    assert_eq!(target.count(), 0);
}

/// Item 6: special-purpose IPv6 forms the guard let through, each refused before connecting
/// (NAT64 local-use, 6to4 around 127.0.0.1, site-local, IPv4-translated, Teredo,
/// IPv4-compatible, ORCHID, benchmarking, documentation 3fff::/20, discard-only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_purpose_ipv6_destinations_are_refused() {
    let app = TestApp::spawn().await;
    let _worker = WorkerProcess::start(&app.redis_url, &app.namespace, &[("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false")]);
    for host in [
        "64:ff9b:1::7f00:1",
        "2002:7f00:1::1",
        "fec0::1",
        "::ffff:0:7f00:1",
        "2001::1",
        "::7f00:1",
        "2001:10::1",
        "2001:2::1",
        "3fff::1",
        "100::1",
        "64:ff9b::a9fe:a9fe",
    ] {
        let url = format!("http://[{host}]:8080/hook");
        assert_refused(&deliver_once(&app, &url).await, &url);
    }
}

/// The producer API served by `producer_api::run` (the server the binary uses), with `extra`
/// settings; stopped by sending on the returned channel.
pub(crate) async fn start_api(
    extra: &[(&str, &str)],
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (ns, redis) = (namespace(), redis_url());
    let keys = format!("shop:{SHOP_KEY}");
    let db = format!("postgres://postgres@127.0.0.1:{}/jobs", free_port());
    let mut pairs = vec![
        ("PRODUCER_API_KEYS", keys.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_NAMESPACE", ns.as_str()),
        ("DATABASE_URL", db.as_str()),
    ];
    pairs.extend_from_slice(extra);
    let config = producer_api::Config::from_env(&Env::from_pairs(&pairs)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(producer_api::run(config, listener, async {
        let _ = stopped.await;
    }));
    wait_until_ok(&format!("http://{addr}/healthz")).await;
    (addr, stop, server)
}

/// The `dlq-console` binary on a free port, with `extra` settings, once it answers; its address.
pub(crate) async fn start_console(extra: &[(&str, &str)]) -> (String, Running) {
    let addr = format!("127.0.0.1:{}", free_port());
    let (ns, redis) = (namespace(), redis_url());
    let mut env = vec![
        ("CONSOLE_ADDR", addr.as_str()),
        ("CONSOLE_TOKEN", ADMIN_TOKEN),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_NAMESPACE", ns.as_str()),
    ];
    env.extend_from_slice(extra);
    let console = Running::start("dlq-console", &env);
    wait_until_ok(&format!("http://{addr}/healthz")).await;
    (addr, console)
}

/// Sends `sent` and waits, at most `limit`, for the server to close the connection; returns
/// how long that took and what the server wrote.
async fn closed_after(addr: SocketAddr, sent: &[u8], limit: Duration) -> (Duration, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent).await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (started.elapsed(), String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(elapsed) => {
                panic!("{addr}: still open ({elapsed}) after {limit:?}, sent {:?}", String::from_utf8_lossy(sent))
            }
        }
    }
}

const HALF_A_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";

/// Item 10: a connection that sent half a request head stayed open for 50 s and more, on each
/// of the three servers. With `HTTP_HEADER_READ_TIMEOUT_MS=1000` it is closed after about 1 s;
/// a request whose body stalls is closed after `HTTP_IDLE_TIMEOUT_SECONDS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_on_every_server() {
    let limits = [("HTTP_HEADER_READ_TIMEOUT_MS", "1000"), ("HTTP_IDLE_TIMEOUT_SECONDS", "1")];
    let (api, stop, server) = start_api(&limits).await;

    let (console_addr, _console) = start_console(&limits).await;
    let worker = WorkerProcess::start(&redis_url(), &namespace(), &limits);
    wait_until_ok(&format!("http://{}/healthz", worker.metrics_addr)).await;

    let servers = [api, console_addr.parse().unwrap(), worker.metrics_addr.parse().unwrap()];
    for addr in servers {
        let (took, _) = closed_after(addr, HALF_A_REQUEST, Duration::from_secs(5)).await;
        assert!(took >= Duration::from_millis(900), "{addr}: closed after {took:?}, before the timeout");
        // Nothing at all is cut off the same way.
        closed_after(addr, b"", Duration::from_secs(5)).await;
    }

    // A complete head whose body stalls: the idle timeout (the head arrived in time).
    let stalled = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SHOP_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\""
    );
    let (took, _) = closed_after(api, stalled.as_bytes(), Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // A request sent in full is still answered.
    let (_, answer) =
        closed_after(api, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(5))
            .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}

/// Item 10: connections over `HTTP_MAX_CONNECTIONS` are refused at once (a `503` or a close),
/// the ones under it are served, and a freed place is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused() {
    let (api, stop, server) = start_api(&[("HTTP_MAX_CONNECTIONS", "3")]).await;
    // The readiness poll's connection may still be closing: wait until a fresh one is served.
    wait_until_ok(&format!("http://{api}/healthz")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(api).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    for _ in 0..5 {
        let (took, answer) = closed_after(api, b"", Duration::from_secs(3)).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.is_empty() || answer.contains("retry-after: 1"), "{answer}");
        assert!(took < Duration::from_secs(1), "refused only after {took:?}");
    }

    // The held connections are served, and a place freed is taken by a new connection.
    let mut first = held.remove(0);
    first.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), first.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(3);
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    loop {
        match client.get(format!("http://{api}/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(Instant::now() < deadline, "no place freed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}

/// Item 12 (`/docs`): the page loaded an unpinned script from a CDN. Now every script comes
/// from the API itself, under a Content-Security-Policy that allows no other origin.
#[tokio::test]
async fn docs_load_no_third_party_script() {
    let app = TestApp::spawn().await;
    let page = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in ["default-src 'none'", "script-src 'self';", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-eval") && !csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
    let html = page.text().await.unwrap();
    let sources: Vec<&str> = html
        .split("<script")
        .skip(1)
        .map(|tag| tag.split("src=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or(""))
        .collect();
    assert!(!sources.is_empty(), "{html}");
    for src in sources {
        assert!(src.starts_with('/') && !src.starts_with("//"), "a script from elsewhere: {src:?}");
        let asset = app.http.get(app.url(src)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{src}");
        assert!(asset.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
        assert!(asset.bytes().await.unwrap().len() > 100_000, "{src}");
    }
    assert!(!html.contains("https://") && !html.contains("http://"), "{html}");
}
