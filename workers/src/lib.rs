//! The worker process. In this first version it starts, validates its settings, connects to
//! Redis and PostgreSQL and answers `/healthz`, `/readyz` and `/metrics`; job processing
//! (fetch, leases, retries, dead letters) is the worker-runtime issue.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use jobs::redis_conn::RedisSettings;
use jobs::settings::{Env, SettingError};
use jobs::{Keys, Kind, Store};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Config {
    /// `WORKER_METRICS_ADDR`, default `127.0.0.1:9091`; `0` turns the endpoint off.
    pub metrics_addr: Option<SocketAddr>,
    pub redis: RedisSettings,
    /// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/jobs`.
    pub database_url: String,
    /// `WORKER_KINDS` (or `--kinds`): the kinds this worker consumes, default all.
    pub kinds: BTreeSet<Kind>,
    pub json_logs: bool,
}

impl Config {
    pub fn from_env(env: &Env, kinds_flag: Option<&str>) -> Result<Self, SettingError> {
        let metrics_addr = match env.or("WORKER_METRICS_ADDR", "127.0.0.1:9091").as_str() {
            "0" => None,
            raw => Some(raw.parse().map_err(|e| {
                SettingError::new("WORKER_METRICS_ADDR", format!("`{raw}` is not host:port or 0 ({e})"))
            })?),
        };
        let kinds = parse_kinds(kinds_flag.or(env.get("WORKER_KINDS")))
            .map_err(|problem| SettingError::new("WORKER_KINDS", problem))?;
        Ok(Self {
            metrics_addr,
            redis: RedisSettings::from_env(env)?,
            database_url: env.or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jobs"),
            kinds,
            json_logs: env.get("LOG_FORMAT") == Some("json"),
        })
    }
}

fn parse_kinds(raw: Option<&str>) -> Result<BTreeSet<Kind>, String> {
    match raw.map(str::trim).filter(|r| !r.is_empty() && *r != "all") {
        None => Ok(Kind::ALL.into_iter().collect()),
        Some(list) => list.split(',').map(|k| k.trim().parse::<Kind>().map_err(|e| e.to_string())).collect(),
    }
}

/// Runs until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    service::metrics_handle();
    let conn = jobs::redis_conn::connect(&config.redis.url, Duration::from_secs(2))?;
    let store = Store::new(conn, Keys::new(&config.redis.namespace), Duration::from_hours(24), Duration::from_secs(2));
    if let Err(e) = store.ping().await {
        tracing::warn!(error = %e, "redis not reachable yet; will keep trying");
    }
    tokio::spawn(service::migrate_until_done(config.database_url.clone()));
    let kinds: Vec<&str> = config.kinds.iter().map(|k| k.as_str()).collect();
    tracing::info!(?kinds, "worker started (job processing arrives with the worker runtime)");
    match config.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("WORKER_METRICS_ADDR: cannot listen on {addr} ({e})"))?;
            tracing::info!(%addr, "worker metrics listening");
            axum::serve(listener, service::ops_router(store)).with_graceful_shutdown(shutdown).await?;
        }
        None => shutdown.await,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_narrow_and_bad_ones_are_named() {
        assert_eq!(parse_kinds(None).unwrap().len(), 4);
        assert_eq!(parse_kinds(Some("email, webhook")).unwrap().len(), 2);
        let err = Config::from_env(&Env::from_pairs(&[("WORKER_KINDS", "email,fax")]), None).unwrap_err();
        assert!(err.to_string().starts_with("WORKER_KINDS: unknown kind `fax`"), "{err}");
        let err = Config::from_env(&Env::default(), Some("pager")).unwrap_err();
        assert!(err.to_string().starts_with("WORKER_KINDS: "));
        let err = Config::from_env(&Env::from_pairs(&[("WORKER_METRICS_ADDR", "nope")]), None).unwrap_err();
        assert!(err.to_string().starts_with("WORKER_METRICS_ADDR: "));
        assert!(
            Config::from_env(&Env::from_pairs(&[("WORKER_METRICS_ADDR", "0")]), None).unwrap().metrics_addr.is_none()
        );
    }
}
