//! What every Jobplane process does the same way: structured logs, the Prometheus recorder,
//! `/healthz` `/readyz` `/metrics` (readiness through the [`Readiness`] trait: this crate knows
//! nothing of Redis), HTTP request metrics, and shutdown on SIGINT or SIGTERM.
//!
//! # Layout
//! - [`http_server`]: the accept loop and its limits, for all three processes.
//! - [`problem`]: errors as `application/problem+json`, one shape and one set of `type` URIs.
//! - [`auth`]: bearer secrets kept as digests (the API's keys, the console's operator tokens).
//! - [`csrf`]: the CSRF check of the console's forms, as an extractor.

pub mod auth;
pub mod csrf;
pub mod http_server;
pub mod problem;
pub use http_server::HttpLimits;
pub use problem::Problem;

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Logs to stderr, as text or as JSON lines (`LOG_FORMAT=json`), filtered by `RUST_LOG`. With
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP/HTTP (protobuf) as
/// service `program` (or `OTEL_SERVICE_NAME`), W3C trace context propagated. Returns the tracer
/// provider to flush at exit, when there is one.
pub fn init_tracing(program: &str, json: bool) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // JSON lines carry the current span's fields (a job's id, kind, attempt, producer, trace).
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let provider = otlp_provider(program);
    // `RUST_LOG` filters the log lines only: exported spans are every info-level span.
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("jobplane"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    // A second call (tests starting several apps in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
    provider
}

/// The OTLP exporter, when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector. Its client keeps
/// the environment's proxies (`HTTPS_PROXY`...): it reaches only the collector the operator set.
fn otlp_provider(program: &str) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty())?;
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(e) => exit_on_bad_setting(program, &otlp_endpoint_problem(&endpoint, &e)),
    };
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| program.to_owned());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(name).build();
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// The one line a bad `OTEL_EXPORTER_OTLP_ENDPOINT` stops the process with, without any password
/// the endpoint holds (the exporter's own error repeats the endpoint whole).
fn otlp_endpoint_problem(endpoint: &str, error: &opentelemetry_otlp::ExporterBuildError) -> String {
    let reason = match error {
        opentelemetry_otlp::ExporterBuildError::InvalidUri(_, reason) => format!("not a valid URI: {reason}"),
        other => other.to_string().replace(endpoint, &jobs::settings::redacted_url(endpoint)),
    };
    format!("OTEL_EXPORTER_OTLP_ENDPOINT: `{}` cannot be used ({reason})", jobs::settings::redacted_url(endpoint))
}

/// Makes `span` a child of the remote span a W3C `traceparent` names (when spans are exported).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The W3C `traceparent` of `span`, when spans are exported and it belongs to a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!("00-{}-{}-{:02x}", span_context.trace_id(), span_context.span_id(), span_context.trace_flags().to_u8())
    })
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("jobplane_audit_batch_size".into()),
                    &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0],
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case ours just renders empty.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

/// The help text and unit of every metric the three processes export (Prometheus `# HELP`).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("jobplane_http_requests_total", "HTTP requests answered, by route, method and status");
    describe_histogram!("jobplane_http_request_duration_seconds", Unit::Seconds, "HTTP request latency, by route");
    describe_counter!(
        "jobplane_jobs_enqueued_total",
        "Jobs written to Redis by the producer API, by kind and producer"
    );
    describe_counter!("jobplane_otp_rate_limited_total", "OTP SMS refused with 429 by a rate limit, by limit");
    describe_counter!(
        "jobplane_jobs_completed_total",
        "Attempts finished, by kind and outcome (succeeded, retrying, or the dead reason)"
    );
    describe_histogram!("jobplane_attempt_duration_seconds", Unit::Seconds, "How long one attempt ran, by kind");
    describe_counter!("jobplane_dead_letters_total", "Jobs that became dead letters, by kind and reason");
    describe_counter!(
        "jobplane_dead_letters_evicted_total",
        "Dead letters evicted by the cap or the age limit, by kind"
    );
    describe_counter!(
        "jobplane_stale_outcomes_total",
        "Outcomes ignored because the job's lease had moved on, by kind"
    );
    describe_counter!("jobplane_fetch_errors_total", "Fetches from Redis that failed, by kind");
    describe_gauge!(
        "jobplane_queue_depth",
        "Jobs in a queue, by kind and state (queued, scheduled, retrying, running, dead)"
    );
    describe_gauge!("jobplane_queue_paused", "1 while the kind is paused (workers lease none of its jobs), else 0");
    describe_gauge!(
        "jobplane_queue_latency_seconds",
        Unit::Seconds,
        "Age of the kind's oldest ready job, since it became due: how far behind its queue runs"
    );
    describe_gauge!("jobplane_workers", "Live worker processes serving the kind (heartbeat within their lease)");
    describe_gauge!(
        "jobplane_rate_limit_per_second",
        "The kind's rate limit in force, tokens a second, after any provider throttle (0: no limit)"
    );
    describe_counter!(
        "jobplane_throttle_events_total",
        "A provider's \"too many requests\" for the kind, seen by this worker"
    );
    describe_counter!(
        "jobplane_webhook_deferrals_total",
        "Webhooks deferred for their destination, by reason (busy: no free slot; cooling: cool-down)"
    );
    describe_counter!(
        "jobplane_webhook_cooldowns_total",
        "Webhook destinations' cool-down changes, by event (opened, extended: a probe failed, closed)"
    );
    describe_gauge!("jobplane_webhook_destinations_cooling", "Webhook destinations cooling down (fleet-wide)");
    describe_histogram!("jobplane_audit_batch_size", "Audit-log events per batch statement");
    describe_counter!("jobplane_audit_events_written_total", "Audit-log events committed to PostgreSQL");
    describe_counter!(
        "jobplane_audit_partitions_dropped_total",
        "Monthly audit-log partitions detached and dropped past AUDIT_RETENTION_MONTHS"
    );
    describe_counter!("jobplane_sms_sent_total", "OTP SMS handed to the provider, by provider and status");
    describe_counter!("jobplane_sms_records_dropped_total", "sms_deliveries rows given up after retries");
    describe_counter!(
        "jobplane_sms_delivery_status_dropped_total",
        "Delivery reports not written to sms_deliveries (PostgreSQL failed or was too slow), by provider"
    );
    describe_gauge!(
        "jobplane_sms_credit_remaining",
        "Credit left at the SMS provider, as it last stated it (Mitake's AccountPoint), by provider"
    );
    describe_counter!(
        "jobplane_delivery_reports_total",
        "Authentic delivery reports from providers' callbacks, by provider and status (resends included)"
    );
    describe_counter!("jobplane_schedule_fired_total", "Schedule ticks that enqueued a job, by kind");
    describe_histogram!(
        "jobplane_schedule_lateness_seconds",
        Unit::Seconds,
        "How long after its tick a schedule's job was enqueued"
    );
    describe_counter!(
        "jobplane_schedule_limited_total",
        "Schedule creations refused with 429 by a quota, by limit (schedules_per_producer, schedules_max)"
    );
    describe_counter!(
        "jobplane_http_connections_refused_total",
        "HTTP connections refused (503 and closed) because HTTP_MAX_CONNECTIONS were open"
    );
    describe_counter!(
        "jobplane_redis_full_total",
        "Redis calls refused because Redis reached its maxmemory (OOM under noeviction)"
    );
}

/// What `/readyz` checks: the dependency a process cannot work without (Redis, for all three),
/// so that this crate need not know it. A closure answering `Result<(), NotReady>` is one.
pub trait Readiness: Clone + Send + Sync + 'static {
    fn check(&self) -> impl Future<Output = Result<(), NotReady>> + Send;
}

impl<F, Fut> Readiness for F
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), NotReady>> + Send,
{
    fn check(&self) -> impl Future<Output = Result<(), NotReady>> + Send {
        self()
    }
}

/// Why the dependency cannot serve now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// Its state in the answer, a word or a line: `full`, or why it does not answer.
    pub state: String,
    /// A sentence for the operator, when the state alone does not say enough.
    pub detail: Option<String>,
}

/// `/healthz` (the process answers), `/readyz` (`dependency` is ready: `200` `{"status":
/// "ready", "<dependency>": "ok"}`, else `503` `{"status": "not ready", "<dependency>": <state>,
/// "detail": ...}`) and `/metrics`.
pub fn ops_router(dependency: &'static str, readiness: impl Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(move || readyz(dependency, readiness.clone())))
        .route("/metrics", get(render_metrics))
}

async fn readyz(dependency: &'static str, readiness: impl Readiness) -> Response {
    match readiness.check().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", dependency: "ok"})).into_response(),
        Err(NotReady { state, detail }) => {
            let mut body = serde_json::json!({"status": "not ready", dependency: state});
            if let Some(detail) = detail {
                body["detail"] = detail.into();
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn render_metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_handle().render())
}

/// Middleware: counts requests by route, method and status and times them by route. Runs
/// before authentication, so every label value comes from a closed set whatever a client
/// sends: the route is the matched template (`unmatched` otherwise), the method one of the
/// standard ones (`other` otherwise), the status a code the server itself chose.
pub async fn http_metrics(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = status_label(response.status());
    metrics::counter!("jobplane_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("jobplane_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Middleware: every error answer is `application/problem+json` (RFC 9457), whoever wrote it.
/// The handlers write their own; this turns the rest into one, keeping the status and headers
/// (`Allow`, `Retry-After`, ...): axum's extractor rejections (a query string, path or body that
/// does not read, a wrong `Content-Type`), which are plain text, and the empty answers of a
/// method a route does not take (`405`) or of no route at all (`404`). Their short text becomes
/// the `detail`. A JSON answer (`/readyz`) or an HTML page (the console's) is left as it is.
pub async fn problem_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Only what nobody shaped: no body type, or plain text. A JSON body (`/readyz` saying why it
    // is not ready) and an HTML page are the answers their handlers meant.
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(content_type.is_empty() || content_type.starts_with("text/plain")) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // A rejection's text is a line; anything longer is not worth showing.
    let text = axum::body::to_bytes(body, 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let detail = match text {
        Ok(text) if !text.is_empty() => text,
        _ => match status {
            StatusCode::NOT_FOUND => "no such route".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => "this route does not take this method (see Allow)".to_owned(),
            _ => status.canonical_reason().unwrap_or("error").to_owned(),
        },
    };
    let body = Problem::about_blank(status, detail).to_json();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// The `method` label: a standard method's name, `other` for any other token a client sends.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The `status` label: the code, which the server sets (100 to 599 in practice; anything
/// else, were a layer ever to produce it, is `other`).
fn status_label(status: StatusCode) -> String {
    let code = status.as_u16();
    if (100..600).contains(&code) { code.to_string() } else { "other".to_owned() }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Prints one line naming what is wrong and exits with status 2: the form every bad
/// setting takes at start.
pub fn exit_on_bad_setting(program: &str, error: &dyn std::fmt::Display) -> ! {
    eprintln!("{program}: {error}");
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_otlp_endpoint_is_named_without_its_password() {
        use opentelemetry_otlp::WithExportConfig as _;
        let endpoint = "http://user:s3cretpw@coll ector/v1/traces";
        let error =
            opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build().unwrap_err();
        let line = otlp_endpoint_problem(endpoint, &error);
        assert!(line.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "), "{line}");
        assert!(!line.contains("s3cretpw"), "{line}");
    }

    #[tokio::test]
    async fn readyz_answers_what_the_readiness_check_says() {
        use tower::ServiceExt as _;
        async fn get_readyz(state: Result<(), NotReady>) -> (StatusCode, serde_json::Value) {
            let app = ops_router("redis", move || std::future::ready(state.clone()));
            let request = Request::get("/readyz").body(axum::body::Body::empty()).unwrap();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            (status, serde_json::from_slice(&bytes).unwrap())
        }
        assert_eq!(get_readyz(Ok(())).await, (StatusCode::OK, serde_json::json!({"status": "ready", "redis": "ok"})));
        let full = NotReady { state: "full".into(), detail: Some("Redis uses 2 bytes of its maxmemory 1".into()) };
        assert_eq!(
            get_readyz(Err(full)).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "not ready", "redis": "full", "detail": "Redis uses 2 bytes of its maxmemory 1"})
            )
        );
        let down = NotReady { state: "connection refused".into(), detail: None };
        assert_eq!(
            get_readyz(Err(down)).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "not ready", "redis": "connection refused"})
            )
        );
    }

    #[test]
    fn label_values_come_from_a_closed_set() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for made_up in ["X0001MMMM", "get", "PROPFIND", "TRACE", "CONNECT"] {
            assert_eq!(method_label(&Method::from_bytes(made_up.as_bytes()).unwrap()), "other", "{made_up}");
        }
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "418");
        assert_eq!(status_label(StatusCode::from_u16(999).unwrap()), "other");
    }
}
