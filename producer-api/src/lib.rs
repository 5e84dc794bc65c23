//! The producer API: authenticates producers, validates their jobs and enqueues them into
//! Redis with one round trip. `router(state)` and `run(config, listener, shutdown)` let tests
//! start it in-process on port 0.

pub mod audit_logs;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod schedules;
pub mod ses_events;
pub mod sns;
pub mod suppressions;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use jobs::sms_templates::SmsTemplates;
use jobs::{Keys, OtpLimits, Store};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use crate::auth::ApiKeys;
pub use crate::config::Config;
use crate::problem::ApiError;

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub api_keys: ApiKeys,
    /// PostgreSQL, for `GET /v1/audit-logs` only; connects on first use.
    pub db: sqlx::PgPool,
    pub schedules: jobs::schedule::ScheduleStore,
    pub sms_templates: Arc<SmsTemplates>,
    pub otp_limits: OtpLimits,
    pub schedule_limits: jobs::schedule::ScheduleLimits,
    /// Cancels jobs (`DELETE /v1/jobs/{id}`).
    pub control: jobs::control::Control,
    /// The email suppression list (`GET /v1/suppressions/{address}`; SES bounces add to it).
    pub suppressions: jobs::suppression::Suppressions,
    /// Verifies SNS messages (`POST /v1/callbacks/ses`) and caches SNS's certificates.
    pub sns: sns::Verifier,
    /// The providers' callbacks (`/v1/callbacks/*`): their settings and rate limit.
    pub callbacks: callbacks::Callbacks,
}

impl AppState {
    /// Connects lazily: the API starts, and reports not ready, while Redis is down.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        tracing::info!(redis = %config.redis.topology.describe(), "Redis");
        let conn = jobs::redis_conn::connect(&config.redis.topology, config.redis_timeout)?;
        let schedules = jobs::schedule::ScheduleStore::new(conn.clone(), &config.redis.namespace);
        let control = jobs::control::Control::new(
            conn.clone(),
            Keys::new(&config.redis.namespace),
            config.retention.clone(),
            config.redis_timeout,
        );
        let suppressions = jobs::suppression::Suppressions::new(
            conn.clone(),
            &Keys::new(&config.redis.namespace),
            config.suppression_cap,
        );
        let store = Store::new(conn, Keys::new(&config.redis.namespace), config.idempotency_ttl, config.redis_timeout)
            .with_otp_limits(config.otp_limits)
            .with_replica_wait(config.replica_wait);
        let db = db::pool(config.database_url.expose(), 8).map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
        Ok(Self {
            store,
            api_keys: config.api_keys.clone(),
            db,
            schedules,
            sms_templates: Arc::new(config.sms_templates.clone()),
            otp_limits: config.otp_limits,
            schedule_limits: config.schedule_limits,
            control,
            suppressions,
            sns: config.sns.clone(),
            callbacks: callbacks::Callbacks::new(&config.callbacks),
        })
    }
}

pub fn router(state: AppState) -> Router {
    let store = state.store.clone();
    let callbacks = callbacks::router();
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    Router::new()
        .route("/v1/jobs", post(routes::create_job).layer(DefaultBodyLimit::max(routes::SINGLE_BODY_LIMIT)))
        .route("/v1/jobs/batch", post(routes::create_batch).layer(DefaultBodyLimit::max(routes::BATCH_BODY_LIMIT)))
        .route("/v1/jobs/{id}", get(routes::get_job).delete(routes::cancel_job))
        .route("/v1/audit-logs", get(audit_logs::list))
        .route(
            "/v1/schedules",
            post(schedules::put).get(schedules::list).layer(DefaultBodyLimit::max(schedules::BODY_LIMIT)),
        )
        .route("/v1/schedules/{name}", axum::routing::delete(schedules::delete))
        .route("/v1/schedules/{name}/pause", post(schedules::pause))
        .route("/v1/schedules/{name}/resume", post(schedules::resume))
        .route("/v1/schedules/{name}/run", post(schedules::run))
        .route("/v1/suppressions/{address}", get(suppressions::check))
        .merge(callbacks)
        .route("/openapi.json", get(openapi::json))
        .route("/docs", get(openapi::docs))
        .route(openapi::REDOC_PATH, get(openapi::redoc_js))
        .with_state(state)
        .merge(service::ops_router("redis", move || {
            let store = store.clone();
            async move { store.readiness().await.map_err(|e| service::NotReady { state: e.state(), detail: e.detail() }) }
        }))
        .fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn(service::problem_errors))
        .layer(middleware::from_fn(service::http_metrics))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal("a handler panicked".into()))
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<axum::body::Body>| {
            tracing::debug_span!("request", method = %request.method(), uri = %logged_uri(request.uri()), version = ?request.version())
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// A request's URI as the request span shows it: a callback's query is hidden, since Mitake's
/// carries `CALLBACK_SECRET` (and every callback's names a job).
fn logged_uri(uri: &axum::http::Uri) -> std::borrow::Cow<'_, str> {
    match uri.query() {
        Some(_) if uri.path().starts_with("/v1/callbacks/") => format!("{}?[redacted]", uri.path()).into(),
        _ => uri.to_string().into(),
    }
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    service::metrics_handle();
    if !config.sns.is_default_pattern() {
        tracing::warn!(
            "SES_SNS_URL_PATTERN overrides SNS's hosts: SNS messages are verified with certificates from other hosts. \
             Only tests should set it; never in production"
        );
    }
    let state = AppState::new(&config)?;
    // Enqueueing needs only Redis: a PostgreSQL outage at start must not stop the API.
    tokio::spawn(db::migrate_until_done(config.database_url.expose().to_owned()));
    tracing::info!(addr = %listener.local_addr()?, "producer-api listening");
    service::http_server::serve(listener, router(state), config.http, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_spans_never_show_a_callbacks_query() {
        let uri: axum::http::Uri = "/v1/callbacks/mitake?secret=s3cret-0123456789abcdef&job=x".parse().unwrap();
        assert_eq!(logged_uri(&uri), "/v1/callbacks/mitake?[redacted]");
        let uri: axum::http::Uri = "/v1/audit-logs?limit=5".parse().unwrap();
        assert_eq!(logged_uri(&uri), "/v1/audit-logs?limit=5");
    }
}
