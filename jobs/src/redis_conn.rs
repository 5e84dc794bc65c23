//! Connections to Redis that reconnect on their own and never make a caller wait long.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::settings::{Env, SettingError};

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of every key, so several deployments (or tests) can share one Redis.
    pub namespace: String,
}

impl RedisSettings {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let url = env.or("REDIS_URL", "redis://127.0.0.1:6379");
        redis::Client::open(url.as_str())
            .map_err(|e| SettingError::new("REDIS_URL", format!("not a Redis URL ({e})")))?;
        let namespace = env.or("REDIS_NAMESPACE", "jobplane");
        if namespace.is_empty() || !namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
            return Err(SettingError::new("REDIS_NAMESPACE", "must be letters, digits, _ . or -"));
        }
        Ok(Self { url, namespace })
    }
}

/// A connection that is made on first use and remade after any failure, with each connect
/// attempt and each answer bounded by `timeout`: when Redis is down a call fails fast, and
/// when Redis returns the next call succeeds, with no restart of the process.
pub fn connect(url: &str, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}
