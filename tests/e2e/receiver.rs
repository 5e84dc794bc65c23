//! A local HTTP receiver (a webhook endpoint, Twilio, an SMS gateway): records every request,
//! on any path, and answers as a test scripts it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// One answer: a status, an optional `Retry-After`, a delay before answering, and a body
/// (`"receiver says so"` unless given; the request's own body when `echo`).
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub delay: Duration,
    pub body: Option<&'static str>,
    pub echo: bool,
}

impl Reply {
    pub const OK: Reply = Reply { status: 200, retry_after: None, delay: Duration::ZERO, body: None, echo: false };

    pub fn with_body(status: u16, body: &'static str) -> Self {
        Self { status, body: Some(body), ..Self::OK }
    }

    pub fn status(status: u16) -> Self {
        Self { status, ..Self::OK }
    }
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The peer's address: which host (network namespace) delivered it.
    pub from: SocketAddr,
}

impl Delivery {
    pub fn webhook_id(&self) -> String {
        self.header("webhook-id")
    }

    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }
}

#[derive(Debug, Default)]
struct Script {
    replies: VecDeque<Reply>,
    otherwise: Option<Reply>,
    deliveries: Vec<Delivery>,
    /// Requests being answered now, and the most ever at once.
    concurrent: usize,
    peak: usize,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    /// Answers with `replies` in turn, then with `otherwise` forever.
    pub async fn start(replies: &[Reply], otherwise: Reply) -> Self {
        Self::start_on("127.0.0.1", replies, otherwise).await
    }

    /// Like [`Receiver::start`], listening on `ip` (an address other hosts reach).
    pub async fn start_on(ip: &str, replies: &[Reply], otherwise: Reply) -> Self {
        let script = Arc::new(Mutex::new(Script {
            replies: replies.iter().copied().collect(),
            otherwise: Some(otherwise),
            deliveries: Vec::new(),
            concurrent: 0,
            peak: 0,
        }));
        let app = Router::new().route("/hook", post(receive)).fallback(receive).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            async move { axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await },
        );
        Self { addr, script }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The most requests it was answering at once.
    pub fn peak_concurrency(&self) -> usize {
        self.script.lock().unwrap().peak
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.script.lock().unwrap().deliveries.clone()
    }

    /// Waits until at least `n` deliveries arrived, for at most `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.deliveries();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let echoed = body.clone();
    let reply = {
        let mut script = script.lock().unwrap();
        script.deliveries.push(Delivery { at: Instant::now(), path: uri.path().to_owned(), headers, body, from });
        let fallback = script.otherwise.unwrap_or(Reply::OK);
        script.concurrent += 1;
        script.peak = script.peak.max(script.concurrent);
        script.replies.pop_front().unwrap_or(fallback)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    script.lock().unwrap().concurrent -= 1;
    let body =
        if reply.echo { echoed } else { Bytes::from_static(reply.body.unwrap_or("receiver says so").as_bytes()) };
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), body).into_response();
    if let Some(seconds) = reply.retry_after {
        response.headers_mut().insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}
