//! What every Jobplane process does the same way: structured logs, the Prometheus recorder,
//! `/healthz` `/readyz` `/metrics`, HTTP request metrics, and shutdown on SIGINT or SIGTERM.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Logs to stderr, as text or as JSON lines (`LOG_FORMAT=json`), filtered by `RUST_LOG`.
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second call (tests starting several apps in one process) keeps the first subscriber.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case ours just renders empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `/healthz` (the process answers), `/readyz` (Redis answers) and `/metrics`.
pub fn ops_router(store: jobs::Store) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(store)
}

async fn readyz(State(store): State<jobs::Store>) -> Response {
    match store.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready", "redis": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "not ready", "redis": e.to_string()})))
                .into_response()
        }
    }
}

async fn render_metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_handle().render())
}

/// Middleware: counts requests by route and status and times them by route.
pub async fn http_metrics(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("jobplane_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("jobplane_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
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

/// Applies the PostgreSQL migrations once (the `migrate` subcommands, compose's migrate step).
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let pool = jobs::db::pool(database_url, 2).context("DATABASE_URL")?;
    jobs::db::migrate(&pool).await.context("applying migrations")?;
    pool.close().await;
    Ok(())
}

/// Applies the migrations in the background, retrying every 5 s until PostgreSQL answers,
/// for processes whose main duty does not wait on PostgreSQL.
pub async fn migrate_until_done(database_url: String) {
    loop {
        match migrate(&database_url).await {
            Ok(()) => {
                tracing::info!("migrations applied");
                return;
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "migrations not applied yet; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}
