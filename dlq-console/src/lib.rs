//! The operators' console for dead letters: a JSON API (`/api`, bearer tokens), server-rendered
//! pages (a login form and a session cookie) and a CLI, all over [`actions::Console`].
//! [`fleet`] holds what operators do to live work: pause and resume a kind, see the workers;
//! [`rate`] sets a kind's rate limit; [`suppressions`] is the email suppression list.

pub mod actions;
pub mod api;
pub mod browse;
pub mod cli;
pub mod config;
pub mod control;
pub mod destinations;
pub mod fleet;
pub mod pages;
pub mod rate;
pub mod schedule_actions;
pub mod sessions;
pub mod suppressions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post, put};
use jobs::dead::DeadLetters;
use jobs::schedule::ScheduleStore;
use jobs::sms_templates::SmsTemplates;
use jobs::{Keys, Store};
use tokio::net::TcpListener;

pub use crate::config::Config;

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub console: actions::Console,
    pub schedules: ScheduleStore,
    pub sessions: sessions::Sessions,
}

impl AppState {
    /// Connects lazily: the console starts, and reports not ready, while Redis is down.
    pub fn new(config: Config, templates: SmsTemplates) -> anyhow::Result<Self> {
        tracing::info!(redis = %config.redis.topology.describe(), "Redis");
        let conn = jobs::redis_conn::connect(&config.redis.topology, Duration::from_secs(5))?;
        let keys = Keys::new(&config.redis.namespace);
        let store = Store::new(conn.clone(), keys.clone(), Duration::from_hours(24), Duration::from_secs(5));
        let sessions = sessions::Sessions::new(conn.clone(), keys.clone());
        let control =
            jobs::control::Control::new(conn.clone(), keys.clone(), config.retention.clone(), Duration::from_secs(5));
        let console = actions::Console {
            control,
            dead: DeadLetters::new(conn.clone(), keys.clone()),
            store,
            replay_rate: config.replay_rate,
            templates,
            pauses: jobs::pause::Pauses::new(conn.clone(), keys.clone()),
            rates: jobs::rate::RateLimits::new(conn.clone(), keys.clone()),
            destinations: jobs::destinations::Destinations::new(conn.clone(), &keys),
            suppressions: jobs::suppression::Suppressions::new(conn.clone(), &keys, config.suppression_cap),
            fleet: jobs::fleet::Fleet::new(conn.clone(), keys),
        };
        let schedules = ScheduleStore::new(conn, &config.redis.namespace);
        Ok(Self { config: Arc::new(config), console, schedules, sessions })
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/dead", get(api::list))
        .route("/dead/replay", post(api::replay_many))
        .route("/dead/purge", post(api::purge))
        .route("/dead/{id}", get(api::show).delete(api::delete_one))
        .route("/dead/{id}/replay", post(api::replay_one))
        .route("/queues", get(api::queues))
        .route("/schedules", get(api::schedules))
        .route("/jobs/bulk-cancel", post(control::api_bulk_cancel))
        .route("/jobs/{id}/cancel", post(control::api_cancel))
        .route("/jobs/{id}/run", post(control::api_run_now))
        .route("/schedules/{name}/pause", post(schedule_actions::api_pause))
        .route("/schedules/{name}/resume", post(schedule_actions::api_resume))
        .route("/schedules/{name}/run", post(schedule_actions::api_run))
        .route("/jobs", get(browse::api_list))
        .route("/jobs/{id}", get(browse::api_show))
        .route("/queues/{kind}/pause", post(fleet::api_pause))
        .route("/queues/{kind}/resume", post(fleet::api_resume))
        .route("/queues/{kind}/rate-limit", put(rate::api_put))
        .route("/queues/{kind}/groups", get(browse::api_groups))
        .route("/workers", get(fleet::api_workers))
        .route("/webhook-destinations", get(destinations::api_list))
        .route("/webhook-destinations/{id}/resume", post(destinations::api_resume))
        .route("/suppressions", get(suppressions::api_list).post(suppressions::api_add))
        .route("/suppressions/{address}", axum::routing::delete(suppressions::api_delete));
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/dead", get(pages::dead_list))
        .route("/dead/bulk", post(pages::bulk))
        .route("/dead/{id}", get(pages::dead_detail))
        .route("/dead/{id}/replay", post(pages::replay_one))
        .route("/dead/{id}/edit", post(pages::edit_one))
        .route("/dead/{id}/delete", post(pages::delete_one))
        .route("/schedules", get(pages::schedules))
        .route("/jobs/bulk-cancel", post(control::bulk_cancel))
        .route("/jobs/{id}/cancel", post(control::cancel))
        .route("/jobs/{id}/run", post(control::run_now))
        .route("/schedules/{name}/pause", post(schedule_actions::page_pause))
        .route("/schedules/{name}/resume", post(schedule_actions::page_resume))
        .route("/schedules/{name}/run", post(schedule_actions::page_run))
        .route("/jobs", get(browse::list_page))
        .route("/jobs/{id}", get(browse::detail_page))
        .route("/queues/{kind}/pause", post(fleet::page_pause))
        .route("/queues/{kind}/resume", post(fleet::page_resume))
        .route("/queues/{kind}/rate-limit", post(rate::page_put))
        .route("/workers", get(fleet::workers_page))
        .route("/webhook-destinations", get(destinations::list_page))
        .route("/webhook-destinations/{id}/resume", post(destinations::page_resume))
        .route("/suppressions", get(suppressions::list_page))
        .route("/suppressions/{address}/delete", post(suppressions::page_delete));
    let store = state.console.store.clone();
    Router::new()
        .nest("/api", api)
        .merge(pages)
        .with_state(state)
        .merge(service::ops_router("redis", move || {
            let store = store.clone();
            async move { store.readiness().await.map_err(|e| service::NotReady { state: e.state(), detail: e.detail() }) }
        }))
        .layer(axum::middleware::from_fn(service::problem_errors))
        .layer(axum::middleware::from_fn(service::http_metrics))
        // A handler that panics is a `500` problem, not a connection dropped without an answer.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(service::Problem::internal("a console handler panicked"))
        }))
}

pub async fn run(
    config: Config,
    templates: SmsTemplates,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    service::metrics_handle();
    let operators = config.operators.len();
    let limits = config.http;
    let state = AppState::new(config, templates)?;
    tokio::spawn(jobs::queue_depths::sample(
        state.console.dead.clone(),
        jobs::Kind::ALL.to_vec(),
        Duration::from_secs(5),
    ));
    tokio::spawn(jobs::queue_depths::sample_control(
        state.console.pauses.clone(),
        state.console.fleet.clone(),
        jobs::Kind::ALL.to_vec(),
        Duration::from_secs(5),
    ));
    tracing::info!(addr = %listener.local_addr()?, operators, "dlq-console listening");
    service::http_server::serve(listener, router(state), limits, shutdown).await?;
    Ok(())
}
