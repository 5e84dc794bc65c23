//! The operators' console. In this first version it starts, validates its settings and
//! answers `/healthz`, `/readyz` and `/metrics`; the dead-letter pages, JSON API and CLI are
//! the console issue.

use std::net::SocketAddr;
use std::time::Duration;

use jobs::redis_conn::RedisSettings;
use jobs::settings::{Env, SettingError};
use jobs::{Keys, Store};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Config {
    /// `CONSOLE_ADDR`, default `127.0.0.1:8081`.
    pub addr: SocketAddr,
    pub redis: RedisSettings,
    /// Operator names that hold a token (`CONSOLE_TOKEN` is the operator `admin`); the
    /// tokens themselves are checked by the console issue's auth layer.
    pub operators: Vec<String>,
    pub json_logs: bool,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let mut operators = Vec::new();
        if env.get("CONSOLE_TOKEN").is_some() {
            operators.push("admin".to_owned());
        }
        if let Some(list) = env.get("CONSOLE_OPERATORS") {
            for pair in list.split(',') {
                let (name, token) = pair
                    .trim()
                    .split_once(':')
                    .ok_or_else(|| SettingError::new("CONSOLE_OPERATORS", "each entry must be name:token"))?;
                if name.is_empty() || token.len() < 16 {
                    return Err(SettingError::new(
                        "CONSOLE_OPERATORS",
                        format!("entry `{name}`: a name and a token of at least 16 characters"),
                    ));
                }
                operators.push(name.to_owned());
            }
        }
        if operators.is_empty() {
            return Err(SettingError::new("CONSOLE_TOKEN", "is required (or CONSOLE_OPERATORS=name:token,...)"));
        }
        Ok(Self {
            addr: env.parse("CONSOLE_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            redis: RedisSettings::from_env(env)?,
            operators,
            json_logs: env.get("LOG_FORMAT") == Some("json"),
        })
    }
}

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    service::metrics_handle();
    let conn = jobs::redis_conn::connect(&config.redis.url, Duration::from_secs(1))?;
    let store = Store::new(conn, Keys::new(&config.redis.namespace), Duration::from_hours(24), Duration::from_secs(1));
    tracing::info!(addr = %listener.local_addr()?, operators = config.operators.len(), "dlq-console listening");
    let app = service::ops_router(store).layer(axum::middleware::from_fn(service::http_metrics));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_required() {
        let err = Config::from_env(&Env::default()).unwrap_err();
        assert!(err.to_string().starts_with("CONSOLE_TOKEN: is required"));
        let err = Config::from_env(&Env::from_pairs(&[("CONSOLE_OPERATORS", "ana")])).unwrap_err();
        assert!(err.to_string().starts_with("CONSOLE_OPERATORS: "));
        let ok =
            Config::from_env(&Env::from_pairs(&[("CONSOLE_OPERATORS", "ana:0123456789abcdef,bo:0123456789abcdeg")]))
                .unwrap();
        assert_eq!(ok.operators, ["ana", "bo"]);
    }
}
