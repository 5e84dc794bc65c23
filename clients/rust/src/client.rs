//! The calls, each one logical operation retried as [`crate::retry`] says.

use std::time::{Duration, Instant};

use futures::Stream;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use crate::error::{Error, Problem};
use crate::job::Job;
use crate::retry::{self, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_DEADLINE};
use crate::views::{Accepted, AuditEvent, AuditPage, BatchItem, Cancelled, JobView, ScheduleList, ScheduleView};

/// The most jobs one `POST /v1/jobs/batch` takes; [`Client::enqueue_batch`] splits longer lists.
pub const MAX_BATCH: usize = 1000;

/// The most of one answer's body read: 16 MiB, far above the largest the API sends (an audit
/// page of 1000 events). A longer success answer is [`Error::Unexpected`]; a longer error answer
/// is cut there. A hostile or broken server cannot make the client hold more.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// The caller's W3C `traceparent`, passed on so the job's processing continues the trace.
    pub traceparent: Option<String>,
    /// How long this call may keep retrying; default the client's ([`DEFAULT_DEADLINE`]).
    pub deadline: Option<Duration>,
}

impl CallOptions {
    #[must_use]
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    base: String,
    key: SecretString,
    deadline: Duration,
    attempt_timeout: Duration,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// How long each call keeps retrying by default.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most one attempt may take (within the deadline).
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let mut base = Url::parse(&self.base).map_err(|e| Error::Invalid(format!("base URL {}: {e}", self.base)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!("base URL {}: must be http or https", self.base)));
        }
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("jobplane-client-rust/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        Ok(Client { http, base, key: self.key, deadline: self.deadline, attempt_timeout: self.attempt_timeout })
    }
}

/// A producer's handle on the API. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: SecretString,
    deadline: Duration,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base.as_str()).field("key", &"[redacted]").finish_non_exhaustive()
    }
}

/// One request as each attempt sends it.
struct Call<'a> {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    idempotency_key: Option<String>,
    options: &'a CallOptions,
    /// Whether an attempt whose answer never came may be sent again (the call is idempotent,
    /// or carries an idempotency key).
    resend_unanswered: bool,
}

impl Client {
    /// `base` is the producer API's root, such as `http://127.0.0.1:8080`; `key` one of its
    /// `PRODUCER_API_KEYS` secrets.
    pub fn builder(base: impl Into<String>, key: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base.into(),
            key: SecretString::from(key.into()),
            deadline: DEFAULT_DEADLINE,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn new(base: impl Into<String>, key: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base, key).build()
    }

    /// Enqueues one job under its idempotency key (a fresh one when the job names none).
    pub async fn enqueue(&self, job: &Job) -> Result<Accepted, Error> {
        self.enqueue_with(job, &CallOptions::default()).await
    }

    pub async fn enqueue_with(&self, job: &Job, options: &CallOptions) -> Result<Accepted, Error> {
        let key = job.idempotency_key.clone().unwrap_or_else(fresh_key);
        // The API's rule; a key that cannot be a header value would be left out, and the job
        // made without one.
        if !(1..=255).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Invalid(format!("idempotency key {key:?}: must be 1 to 255 visible ASCII characters")));
        }
        let body = serde_json::to_value(job).map_err(|e| Error::Invalid(e.to_string()))?;
        let call = Call {
            method: Method::POST,
            path: "v1/jobs".into(),
            query: Vec::new(),
            body: Some(body),
            idempotency_key: Some(key),
            options,
            resend_unanswered: true,
        };
        let (status, mut accepted): (StatusCode, Accepted) = self.send(&call).await?;
        accepted.replayed = status == StatusCode::OK;
        Ok(accepted)
    }

    /// Enqueues `jobs` in order, [`MAX_BATCH`] to a request; each job without a key gets a
    /// fresh one, so a retried request makes no job twice. The API validates each request
    /// whole: when a request after the first fails, the error is [`Error::Batch`] with the
    /// answers of the requests before it (those jobs were enqueued).
    pub async fn enqueue_batch(&self, jobs: &[Job]) -> Result<Vec<BatchItem>, Error> {
        self.enqueue_batch_with(jobs, &CallOptions::default()).await
    }

    pub async fn enqueue_batch_with(&self, jobs: &[Job], options: &CallOptions) -> Result<Vec<BatchItem>, Error> {
        let mut items = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(MAX_BATCH) {
            let body: Vec<Value> = chunk
                .iter()
                .map(|job| {
                    let mut item = serde_json::to_value(job).map_err(|e| Error::Invalid(e.to_string()))?;
                    item["idempotency_key"] = json!(job.idempotency_key.clone().unwrap_or_else(fresh_key));
                    Ok(item)
                })
                .collect::<Result<_, Error>>()?;
            let call = Call {
                method: Method::POST,
                path: "v1/jobs/batch".into(),
                query: Vec::new(),
                body: Some(json!({"jobs": body})),
                idempotency_key: None,
                options,
                resend_unanswered: true,
            };
            let answer = match self.send::<BatchAnswer>(&call).await {
                Ok((_, answer)) => answer,
                Err(source) if items.is_empty() => return Err(source),
                // The requests before this one were enqueued: say which, whatever the failure.
                Err(source) => return Err(Error::Batch { enqueued: items, source: Box::new(source) }),
            };
            items.extend(answer.jobs);
        }
        Ok(items)
    }

    /// A job's status (`404` once it is gone, or another producer's).
    pub async fn get(&self, id: &str) -> Result<JobView, Error> {
        self.read(Method::GET, format!("v1/jobs/{}", segment(id))).await
    }

    /// Cancels a job that has not started (`409` naming the status for a finished one).
    pub async fn cancel(&self, id: &str) -> Result<Cancelled, Error> {
        self.read(Method::DELETE, format!("v1/jobs/{}", segment(id))).await
    }

    /// Creates or replaces the schedule `request["name"]` (`{"name", "cron", "timezone"?,
    /// "catch_up"?, "job": {...}}`, see `ScheduleRequest` in `/openapi.json`).
    pub async fn put_schedule(&self, request: &impl Serialize) -> Result<ScheduleView, Error> {
        let body = serde_json::to_value(request).map_err(|e| Error::Invalid(e.to_string()))?;
        let options = CallOptions::default();
        let call = Call {
            method: Method::POST,
            path: "v1/schedules".into(),
            query: Vec::new(),
            body: Some(body),
            idempotency_key: None,
            options: &options,
            // The same name again replaces it: sending it twice is harmless.
            resend_unanswered: true,
        };
        self.send(&call).await.map(|(_, view)| view)
    }

    pub async fn list_schedules(&self) -> Result<Vec<ScheduleView>, Error> {
        let list: ScheduleList = self.read(Method::GET, "v1/schedules".into()).await?;
        Ok(list.schedules)
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        let options = CallOptions::default();
        let call = Self::simple(Method::DELETE, format!("v1/schedules/{}", segment(name)), &options, true);
        self.send::<Value>(&call).await.map(|_| ())
    }

    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleView, Error> {
        self.read(Method::POST, format!("v1/schedules/{}/pause", segment(name))).await
    }

    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleView, Error> {
        self.read(Method::POST, format!("v1/schedules/{}/resume", segment(name))).await
    }

    /// One extra tick now. Not resent when an answer was lost (that could fire twice); still
    /// retried on `503`/`429`, which enqueued nothing.
    pub async fn run_schedule(&self, name: &str) -> Result<Value, Error> {
        let options = CallOptions::default();
        let call = Self::simple(Method::POST, format!("v1/schedules/{}/run", segment(name)), &options, false);
        self.send(&call).await.map(|(_, v)| v)
    }

    /// One page of audit events, newest first.
    pub async fn audit_page(&self, query: &AuditQuery, cursor: Option<&str>) -> Result<AuditPage, Error> {
        let mut pairs = query.pairs();
        if let Some(cursor) = cursor {
            pairs.push(("cursor", cursor.to_owned()));
        }
        let options = CallOptions::default();
        let call = Call {
            method: Method::GET,
            path: "v1/audit-logs".into(),
            query: pairs,
            body: None,
            idempotency_key: None,
            options: &options,
            resend_unanswered: true,
        };
        self.send(&call).await.map(|(_, page)| page)
    }

    /// Every audit event `query` selects, newest first, fetched a page at a time as the stream
    /// is read; it ends after the first error.
    pub fn audit_logs(&self, query: AuditQuery) -> impl Stream<Item = Result<AuditEvent, Error>> + '_ {
        use futures::StreamExt;
        let pages = futures::stream::unfold(Some(None::<String>), move |state| {
            let query = query.clone();
            async move {
                let cursor = state?;
                match self.audit_page(&query, cursor.as_deref()).await {
                    Ok(page) => {
                        let next = page.next_cursor.clone().map(Some);
                        Some((Ok(page.items), next))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            }
        });
        pages.flat_map(|page| match page {
            Ok(items) => futures::stream::iter(items.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => futures::stream::iter(vec![Err(e)]),
        })
    }

    fn simple(method: Method, path: String, options: &CallOptions, resend: bool) -> Call<'_> {
        Call { method, path, query: Vec::new(), body: None, idempotency_key: None, options, resend_unanswered: resend }
    }

    async fn read<T: DeserializeOwned>(&self, method: Method, path: String) -> Result<T, Error> {
        let options = CallOptions::default();
        let resend =
            method == Method::GET || method == Method::DELETE || path.ends_with("/pause") || path.ends_with("/resume");
        let call = Self::simple(method, path, &options, resend);
        self.send(&call).await.map(|(_, v)| v)
    }

    /// Sends `call` until it succeeds, fails for good, or its deadline comes.
    async fn send<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<(StatusCode, T), Error> {
        let started = Instant::now();
        let deadline = call.options.deadline.unwrap_or(self.deadline);
        let mut delays = retry::backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let left = deadline.saturating_sub(started.elapsed());
            let (error, hint) = match self.attempt(call, left.min(self.attempt_timeout)).await {
                Ok(done) => return done,
                Err(Retry::Answer(problem)) => {
                    let hint = problem.retry_after;
                    (Error::Problem(problem), hint)
                }
                Err(Retry::Unanswered(source)) => {
                    let error = Error::Transport { attempts, source };
                    if !call.resend_unanswered {
                        return Err(error);
                    }
                    (error, None)
                }
            };
            let wait = delays.next().unwrap_or(Duration::from_secs(5)).max(hint.unwrap_or_default());
            if started.elapsed() + wait >= deadline {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: `Ok` with the final outcome, or `Err` with what is worth retrying.
    async fn attempt<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        timeout: Duration,
    ) -> Result<Result<(StatusCode, T), Error>, Retry> {
        let Ok(url) = self.base.join(&call.path) else {
            return Ok(Err(Error::Invalid(format!("path {}", call.path))));
        };
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .timeout(timeout.max(Duration::from_millis(1)))
            .bearer_auth(self.key.expose_secret())
            .headers(Self::headers(call));
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_builder() => return Ok(Err(Error::Invalid(e.to_string()))),
            Err(e) => return Err(Retry::Unanswered(e)),
        };
        let status = response.status();
        let hint = retry::retry_after(response.headers());
        let (bytes, cut) = match read_limited(response, MAX_ANSWER_BYTES).await {
            Ok(read) => read,
            Err(e) => return Err(Retry::Unanswered(e)),
        };
        if status.is_success() && cut {
            return Ok(Err(Error::Unexpected {
                status: status.as_u16(),
                message: format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
            }));
        }
        if status.is_success() {
            let text = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
            return Ok(serde_json::from_slice(text).map(|v| (status, v)).map_err(|e| Error::Unexpected {
                status: status.as_u16(),
                message: format!("cannot read the answer: {e}"),
            }));
        }
        let mut problem = serde_json::from_slice::<Problem>(&bytes).unwrap_or_else(|_| Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or_default().into(),
            status: status.as_u16(),
            detail: Some(String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned()),
            errors: Vec::new(),
            limit: None,
            enqueued: None,
            retry_after: None,
        });
        problem.retry_after = hint;
        let problem = Box::new(problem);
        if retry::retryable_status(status.as_u16()) {
            Err(Retry::Answer(problem))
        } else {
            Ok(Err(Error::Problem(problem)))
        }
    }

    fn headers(call: &Call<'_>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(key) = call.idempotency_key.as_deref().and_then(|k| HeaderValue::from_str(k).ok()) {
            headers.insert("idempotency-key", key);
        }
        if let Some(trace) = call.options.traceparent.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert("traceparent", trace);
        }
        headers
    }
}

/// What one attempt left worth trying again.
enum Retry {
    /// A `503` or `429`.
    Answer(Box<Problem>),
    /// No answer came.
    Unanswered(reqwest::Error),
}

#[derive(serde::Deserialize)]
struct BatchAnswer {
    jobs: Vec<BatchItem>,
}

/// At most `limit` bytes of `response`'s body, and whether there was more (the rest unread).
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > limit {
            bytes.extend_from_slice(&chunk[..limit - bytes.len()]);
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

/// A fresh idempotency key: a UUIDv7, unique across producers.
fn fresh_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A path segment, percent-encoded.
fn segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}

/// The filters of `GET /v1/audit-logs`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant_id: String,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Events a page: 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

impl AuditQuery {
    pub fn tenant(tenant_id: impl Into<String>) -> Self {
        Self { tenant_id: tenant_id.into(), ..Self::default() }
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut pairs = vec![("tenant_id", self.tenant_id.clone())];
        pairs.extend(self.action.clone().map(|v| ("action", v)));
        pairs.extend(self.actor.clone().map(|v| ("actor", v)));
        pairs.extend(self.from.map(|t| ("from", time(t))));
        pairs.extend(self.to.map(|t| ("to", time(t))));
        pairs.extend(self.limit.map(|n| ("limit", n.to_string())));
        pairs
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;
    use crate::Kind;

    /// A port nothing listens on: each attempt is refused, and the call gives up by its deadline.
    #[tokio::test]
    async fn an_unreachable_api_is_retried_until_the_deadline() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client =
            Client::builder(format!("http://127.0.0.1:{port}"), "k").deadline(Duration::from_secs(1)).build().unwrap();
        let started = Instant::now();
        let job = Job::raw(Kind::Webhook, json!({"url": "https://example.org/h", "event": "e"}));
        let error = client.enqueue(&job).await.unwrap_err();
        let Error::Transport { attempts, .. } = error else { panic!("{error:?}") };
        assert!(attempts >= 2, "{attempts}");
        assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    }

    /// A fake API on a free port (the far side of the network): answers each request with the
    /// next of `answers` (status line and headers, then the body), after reading the request
    /// whole; `endless` makes the last answer a body that never ends.
    fn fake_api(answers: Vec<(String, Vec<u8>)>, endless: bool) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let count = answers.len();
            for (i, (head, body)) in answers.into_iter().enumerate() {
                let Ok((stream, _)) = listener.accept() else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut request = vec![0; length];
                reader.read_exact(&mut request).unwrap();
                let mut stream = stream;
                if endless && i + 1 == count {
                    let _ = write!(stream, "{head}\r\ntransfer-encoding: chunked\r\n\r\n");
                    let chunk = vec![b' '; 1 << 16];
                    while write!(stream, "{:x}\r\n", chunk.len())
                        .and_then(|()| stream.write_all(&chunk))
                        .and_then(|()| stream.write_all(b"\r\n"))
                        .is_ok()
                    {}
                    return;
                }
                let _ = write!(stream, "{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(&body);
            }
        });
        base
    }

    /// A server whose answer never ends is read only up to the limit, not until the attempt's
    /// timeout with all of it held in memory.
    #[tokio::test]
    async fn an_endless_answer_is_cut_at_the_limit() {
        let base = fake_api(vec![("HTTP/1.1 200 OK\r\ncontent-type: application/json".into(), Vec::new())], true);
        let client = Client::builder(base, "k")
            .attempt_timeout(Duration::from_secs(20))
            .deadline(Duration::from_secs(20))
            .build()
            .unwrap();
        let started = Instant::now();
        let error = client.get("j").await.unwrap_err();
        assert!(matches!(error, Error::Unexpected { status: 200, .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    /// When the second request of a batch fails, the caller gets the first request's answers.
    #[tokio::test]
    async fn a_batch_failing_part_way_says_what_was_enqueued() {
        let item = |i: usize| json!({"id": format!("j{i}"), "idempotency_key": format!("k{i}"), "status": "queued", "replayed": false});
        let first = json!({"jobs": (0..MAX_BATCH).map(item).collect::<Vec<_>>()}).to_string();
        let problem =
            json!({"type": "/problems/validation", "title": "Invalid", "status": 422, "detail": "no"}).to_string();
        let base = fake_api(
            vec![
                ("HTTP/1.1 202 Accepted\r\ncontent-type: application/json".into(), first.into_bytes()),
                (
                    "HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/problem+json".into(),
                    problem.into_bytes(),
                ),
            ],
            false,
        );
        let client = Client::new(base, "k").unwrap();
        let job = Job::raw(Kind::Webhook, json!({"url": "https://example.org/h", "event": "e"}));
        let jobs = vec![job; MAX_BATCH + 1];
        let error = client.enqueue_batch(&jobs).await.unwrap_err();
        let Error::Batch { enqueued, source } = &error else { panic!("{error:?}") };
        assert_eq!(enqueued.len(), MAX_BATCH);
        assert_eq!(source.status(), Some(422));
        assert_eq!(error.status(), Some(422));
    }

    /// A key the header cannot carry is refused before sending, not left out (which would
    /// enqueue the job with no key at all).
    #[tokio::test]
    async fn a_key_no_header_can_carry_is_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = Client::new(format!("http://127.0.0.1:{port}"), "k").unwrap();
        let job = Job::raw(Kind::Webhook, json!({"url": "https://example.org/h", "event": "e"}));
        for key in ["order-\u{fc}", "a\nb"] {
            let error = client.enqueue(&job.clone().idempotency_key(key)).await.unwrap_err();
            assert!(matches!(error, Error::Invalid(_)), "{key:?}: {error:?}");
        }
    }

    #[test]
    fn the_key_never_shows_and_bad_bases_are_refused() {
        let client = Client::new("http://127.0.0.1:8080", "secret-value-123").unwrap();
        assert!(!format!("{client:?}").contains("secret-value-123"));
        assert!(matches!(Client::new("ftp://example.org", "k"), Err(Error::Invalid(_))));
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
