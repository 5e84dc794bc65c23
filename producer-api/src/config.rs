//! The producer API's settings, read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use jobs::OtpLimits;
use jobs::redis_conn::RedisSettings;
use jobs::schedule::ScheduleLimits;
use jobs::settings::{Env, SettingError};
use jobs::sms_templates::SmsTemplates;
use jobs::store::ReplicaWait;

use crate::auth::ApiKeys;

#[derive(Debug, Clone)]
pub struct Config {
    /// `PRODUCER_ADDR`, default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    pub redis: RedisSettings,
    /// `REDIS_TIMEOUT_MS`, default 1000: the longest any request waits on Redis, so a dead
    /// Redis gives a `503` well within 2 s.
    pub redis_timeout: Duration,
    /// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/jobs`.
    pub database_url: jobs::settings::SecretUrl,
    /// `PRODUCER_API_KEYS`, required: `name:secret,...`.
    pub api_keys: ApiKeys,
    /// `IDEMPOTENCY_TTL_SECONDS`, default 86400 (24 h).
    pub idempotency_ttl: Duration,
    /// `LOG_FORMAT=json` for JSON lines.
    pub json_logs: bool,
    /// `SMS_TEMPLATE_<NAME>`: the templates an OTP SMS may name; the worker renders the same.
    pub sms_templates: SmsTemplates,
    /// `OTP_RATE_LIMIT_PER_NUMBER` (5), `OTP_RATE_LIMIT_PER_KEY` (1000), `OTP_RATE_WINDOW_SECONDS` (3600).
    pub otp_limits: OtpLimits,
    /// `REDIS_WAIT_REPLICAS` (default 0: off) and `REDIS_WAIT_TIMEOUT_MS` (default 200): a `202`
    /// only once that many replicas hold the job.
    pub replica_wait: Option<ReplicaWait>,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`, `HTTP_IDLE_TIMEOUT_SECONDS`, `HTTP_MAX_CONNECTIONS`.
    pub http: service::HttpLimits,
    /// `SCHEDULES_MAX_PER_PRODUCER` (1000), `SCHEDULES_MAX` (10000), `SCHEDULES_MIN_INTERVAL_SECONDS` (1).
    pub schedule_limits: ScheduleLimits,
    /// How long a cancelled job stays readable, per kind (`JOB_RETENTION_SECONDS[_<KIND>]`,
    /// the worker's setting for succeeded jobs).
    pub retention: std::collections::BTreeMap<jobs::Kind, Duration>,
    /// `SUPPRESSION_CAP` (default 100000): most addresses on the email suppression list.
    pub suppression_cap: u64,
    /// `SES_SNS_URL_PATTERN` (default: SNS's own hosts) and `SES_SNS_TOPIC_ARNS` (default: none,
    /// so every SNS message is refused): what `POST /v1/callbacks/ses` accepts (`crate::sns`).
    pub sns: crate::sns::Verifier,
    /// `CALLBACK_BASE_URL`, `CALLBACK_SECRET`, `TWILIO_AUTH_TOKEN`, `CALLBACK_RATE_LIMIT_PER_SECOND`:
    /// the providers' callbacks (`/v1/callbacks/*`).
    pub callbacks: crate::callbacks::CallbackConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let redis_timeout = env.millis("REDIS_TIMEOUT_MS", 1000)?;
        if redis_timeout.is_zero() || redis_timeout > Duration::from_secs(30) {
            return Err(SettingError::new("REDIS_TIMEOUT_MS", "must be between 1 and 30000"));
        }
        let idempotency_ttl = env.seconds("IDEMPOTENCY_TTL_SECONDS", 86_400)?;
        if idempotency_ttl < Duration::from_mins(1) {
            return Err(SettingError::new("IDEMPOTENCY_TTL_SECONDS", "must be at least 60"));
        }
        let replicas: u32 = env.parse("REDIS_WAIT_REPLICAS", 0)?;
        if replicas > 16 {
            return Err(SettingError::new("REDIS_WAIT_REPLICAS", "must be between 0 and 16"));
        }
        let wait_timeout = env.millis("REDIS_WAIT_TIMEOUT_MS", 200)?;
        if wait_timeout.is_zero() || wait_timeout >= redis_timeout {
            return Err(SettingError::new(
                "REDIS_WAIT_TIMEOUT_MS",
                format!("must be at least 1 and below REDIS_TIMEOUT_MS ({})", redis_timeout.as_millis()),
            ));
        }
        Ok(Self {
            replica_wait: (replicas > 0).then_some(ReplicaWait { replicas, timeout: wait_timeout }),
            addr: env.parse("PRODUCER_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            redis: RedisSettings::from_env(env)?,
            redis_timeout,
            database_url: db::database_url(env)?,
            api_keys: ApiKeys::parse(env.require("PRODUCER_API_KEYS", "comma-separated name:secret pairs")?)
                .map_err(|problem| SettingError::new("PRODUCER_API_KEYS", problem))?,
            idempotency_ttl,
            json_logs: match env.or("LOG_FORMAT", "text").as_str() {
                "json" => true,
                "text" => false,
                other => return Err(SettingError::new("LOG_FORMAT", format!("`{other}` is not text or json"))),
            },
            sms_templates: SmsTemplates::from_env(env)?,
            otp_limits: OtpLimits::from_env(env)?,
            retention: jobs::settings::finished_retention(env)?,
            http: service::HttpLimits::from_env(env)?,
            schedule_limits: ScheduleLimits::from_env(env)?,
            suppression_cap: jobs::suppression::cap_from_env(env)?,
            sns: sns_verifier(env)?,
            callbacks: crate::callbacks::CallbackConfig::from_env(env)?,
        })
    }
}

/// `SES_SNS_URL_PATTERN` and `SES_SNS_TOPIC_ARNS`, checked.
fn sns_verifier(env: &Env) -> Result<crate::sns::Verifier, SettingError> {
    let pattern = env.get("SES_SNS_URL_PATTERN").filter(|p| !p.is_empty()).unwrap_or(crate::sns::DEFAULT_URL_PATTERN);
    let topics: Vec<String> = env
        .get("SES_SNS_TOPIC_ARNS")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = topics.iter().find(|t| !t.starts_with("arn:") || t.len() > 256) {
        return Err(SettingError::new(
            "SES_SNS_TOPIC_ARNS",
            format!("`{bad}` is not a topic ARN (arn:aws:sns:<region>:<account>:<name>)"),
        ));
    }
    crate::sns::Verifier::new(pattern, topics).map_err(|problem| SettingError::new("SES_SNS_URL_PATTERN", problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(pairs: &[(&str, &str)]) -> String {
        Config::from_env(&Env::from_pairs(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn each_bad_setting_names_its_variable() {
        let keys = ("PRODUCER_API_KEYS", "shop:0123456789abcdef");
        assert!(error(&[]).starts_with("PRODUCER_API_KEYS: is required"));
        assert!(error(&[("PRODUCER_API_KEYS", "nocolon")]).starts_with("PRODUCER_API_KEYS: "));
        assert!(error(&[keys, ("PRODUCER_ADDR", "localhost")]).starts_with("PRODUCER_ADDR: "));
        assert!(error(&[keys, ("REDIS_URL", "http://x")]).starts_with("REDIS_URL: "));
        assert!(error(&[keys, ("REDIS_TIMEOUT_MS", "0")]).starts_with("REDIS_TIMEOUT_MS: "));
        assert!(error(&[keys, ("REDIS_WAIT_REPLICAS", "-1")]).starts_with("REDIS_WAIT_REPLICAS: "));
        assert!(error(&[keys, ("REDIS_WAIT_REPLICAS", "17")]).starts_with("REDIS_WAIT_REPLICAS: "));
        assert!(error(&[keys, ("REDIS_WAIT_TIMEOUT_MS", "1000")]).starts_with("REDIS_WAIT_TIMEOUT_MS: "));
        assert!(error(&[keys, ("REDIS_CLUSTER_URLS", "x")]).starts_with("REDIS_CLUSTER_URLS: "));
        assert!(error(&[keys, ("LOG_FORMAT", "xml")]).starts_with("LOG_FORMAT: "));
        assert!(error(&[keys, ("REDIS_NAMESPACE", "a{b}")]).starts_with("REDIS_NAMESPACE: "));
        assert!(
            error(&[keys, ("SMS_TEMPLATE_LOGIN", "no code")]).starts_with("SMS_TEMPLATE_LOGIN: must contain {code}")
        );
        assert!(error(&[keys, ("OTP_RATE_LIMIT_PER_NUMBER", "x")]).starts_with("OTP_RATE_LIMIT_PER_NUMBER: "));
        assert!(error(&[keys, ("HTTP_MAX_CONNECTIONS", "0")]).starts_with("HTTP_MAX_CONNECTIONS: "));
        assert!(error(&[keys, ("SCHEDULES_MAX", "0")]).starts_with("SCHEDULES_MAX: "));
        assert!(error(&[keys, ("SCHEDULES_MAX_PER_PRODUCER", "x")]).starts_with("SCHEDULES_MAX_PER_PRODUCER: "));
        assert!(
            error(&[keys, ("SCHEDULES_MIN_INTERVAL_SECONDS", "0")]).starts_with("SCHEDULES_MIN_INTERVAL_SECONDS: ")
        );
        assert!(error(&[keys, ("SUPPRESSION_CAP", "0")]).starts_with("SUPPRESSION_CAP: "));
        assert!(error(&[keys, ("SES_SNS_URL_PATTERN", "(")]).starts_with("SES_SNS_URL_PATTERN: "));
        assert!(error(&[keys, ("SES_SNS_TOPIC_ARNS", "topic")]).starts_with("SES_SNS_TOPIC_ARNS: "));
        let config = Config::from_env(&Env::from_pairs(&[keys])).unwrap();
        assert_eq!(config.schedule_limits, ScheduleLimits::default());
        assert_eq!(config.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.idempotency_ttl, Duration::from_hours(24));
        assert_eq!(config.otp_limits.per_number, 5);
        assert!(config.sms_templates.contains("default"));
        assert!(config.sns.is_default_pattern());
        assert_eq!(config.suppression_cap, jobs::suppression::DEFAULT_CAP);
    }

    #[test]
    fn debug_never_shows_a_secret_setting() {
        let config = Config::from_env(&Env::from_pairs(&[
            ("PRODUCER_API_KEYS", "shop:s3cretpw-0123456789"),
            ("DATABASE_URL", "postgres://app:s3cretpw@db:5432/jobs"),
            ("REDIS_URL", "redis://:s3cretpw@redis:6379"),
        ]))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cretpw"), "{shown}");
    }
}
