//! What providers send back after a send: SMS delivery reports (Twilio, Mitake) and, through
//! SNS, SES events. Served under `/v1/callbacks/*` WITHOUT the producers' bearer keys: each
//! provider authenticates its own way (a signature, or `CALLBACK_SECRET` in the URL), checked
//! before anything else is read.
//!
//! Every callback route shares, through [`router`]:
//! - a body limit of [`BODY_LIMIT`] (`413` beyond it),
//! - one rate limit for all authentic callbacks together (`CALLBACK_RATE_LIMIT_PER_SECOND`,
//!   `503` with `Retry-After` beyond it, not `429`: SNS never retries a 4xx), taken by [`admit`] once a request has been verified:
//!   a flood of forged callbacks costs one signature check each and never uses up the
//!   providers' share, so it cannot crowd out their real reports,
//! - uniform answers: `403` for a bad signature or secret, and for an authentic report `204`
//!   whether or not the job exists (unknown and expired jobs are dropped silently), so no
//!   caller learns which job ids exist; `503` when Redis cannot take it (the provider retries).
//!
//! A handler verifies its provider's request, maps it to a [`Report`] and hands it to [`accept`],
//! which puts it on the job ([`jobs::delivery`]: idempotent, with precedence) and counts it
//! (`jobplane_delivery_reports_total{provider,status}`).
//!
//! To add a provider: a module here with an `async fn` handler taking
//! `State<AppState>` and the request parts it needs (`Bytes` for the body), answering
//! `Result<StatusCode, ApiError>` (`ApiError::CallbackForbidden` when verification fails, then
//! `admit(&state)?`, then `accept(&state, report).await` and [`ACCEPTED`]); one `.route("/v1/callbacks/<name>", ...)`
//! line in [`router`]; its path in `openapi.rs`. SMS providers also write the final status on
//! the job's `sms_deliveries` rows (`sms_rows::record`).

pub mod mitake;
pub mod ses;
mod sms_rows;
pub mod twilio;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use jobs::Kind;
use jobs::callbacks::CallbackSettings;
use jobs::delivery::{Delivery, DeliveryOutcome};
use jobs::settings::{Env, SettingError};
use secrecy::SecretString;

use crate::AppState;
use crate::problem::ApiError;

/// The largest callback body: a provider's report is a few hundred bytes, an SNS notification
/// a few KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The answer to every authentic report, whatever became of it.
pub const ACCEPTED: StatusCode = StatusCode::NO_CONTENT;

/// What the callback routes need beyond the store: the settings and the shared rate limit.
#[derive(Debug, Clone)]
pub struct Callbacks {
    pub settings: CallbackSettings,
    /// `TWILIO_AUTH_TOKEN`: verifies `X-Twilio-Signature`; without it every Twilio callback is refused.
    pub twilio_token: Option<SecretString>,
    limiter: Arc<Limiter>,
}

/// The callbacks' settings: `CALLBACK_BASE_URL`, `CALLBACK_SECRET`, `TWILIO_AUTH_TOKEN`,
/// `CALLBACK_RATE_LIMIT_PER_SECOND`.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    pub settings: CallbackSettings,
    pub twilio_token: Option<SecretString>,
    /// Callbacks taken per second, all providers together (default 100); a burst of as many.
    pub rate_per_second: u32,
}

impl CallbackConfig {
    pub fn from_env(env: &Env) -> Result<Self, SettingError> {
        let rate_per_second: u32 = env.parse("CALLBACK_RATE_LIMIT_PER_SECOND", 100)?;
        if !(1..=100_000).contains(&rate_per_second) {
            return Err(SettingError::new("CALLBACK_RATE_LIMIT_PER_SECOND", "must be between 1 and 100000"));
        }
        Ok(Self {
            settings: CallbackSettings::from_env(env)?,
            twilio_token: env.get("TWILIO_AUTH_TOKEN").map(SecretString::from),
            rate_per_second,
        })
    }
}

impl Callbacks {
    pub fn new(config: &CallbackConfig) -> Self {
        Self {
            settings: config.settings.clone(),
            twilio_token: config.twilio_token.clone(),
            limiter: Arc::new(Limiter::new(config.rate_per_second)),
        }
    }
}

/// The `/v1/callbacks/*` routes, with their body limit; no bearer key (the handlers verify, then
/// [`admit`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/callbacks/twilio", post(twilio::report))
        .route("/v1/callbacks/ses", post(ses::notification).layer(DefaultBodyLimit::max(ses::BODY_LIMIT)))
        .route("/v1/callbacks/mitake", get(mitake::report).post(mitake::report))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Takes one authentic callback from the shared rate limit: `503` (`Retry-After: 1`) beyond
/// it, which providers retry (SNS drops a message answered with any 4xx). Called after verification only, so forged requests never use up the providers' share.
pub fn admit(state: &AppState) -> Result<(), ApiError> {
    if state.callbacks.limiter.take() { Ok(()) } else { Err(ApiError::CallbacksBusy(Duration::from_secs(1))) }
}

/// A verified report of one provider on one job's message.
#[derive(Debug, Clone)]
pub struct Report {
    /// `twilio`, `mitake`, `ses`: the metric's `provider` label.
    pub provider: &'static str,
    pub kind: Kind,
    /// As the provider gave it back (the callback URL's `job`, Mitake's `clientid`); any text:
    /// one that is not a UUID names no job.
    pub job_id: String,
    pub delivery: Delivery,
}

/// Puts `report` on its job and counts it. Unknown or expired jobs are dropped: the caller
/// answers [`ACCEPTED`] either way.
pub async fn accept(state: &AppState, report: &Report) -> Result<DeliveryOutcome, ApiError> {
    let outcome = state.store.record_delivery(report.kind, &report.job_id, &report.delivery).await?;
    metrics::counter!(
        "jobplane_delivery_reports_total",
        "provider" => report.provider,
        "status" => report.delivery.status.as_str()
    )
    .increment(1);
    tracing::info!(
        provider = report.provider,
        job_id = %report.job_id.chars().take(36).collect::<String>(),
        status = report.delivery.status.as_str(),
        outcome = ?outcome,
        "delivery report"
    );
    Ok(outcome)
}

/// One token bucket for every callback: `rate` a second, as many at once.
#[derive(Debug)]
struct Limiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    fn new(rate: u32) -> Self {
        Self { rate: f64::from(rate), state: Mutex::new((f64::from(rate), Instant::now())) }
    }

    fn take(&self) -> bool {
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = *guard;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        let (left, taken) = if tokens >= 1.0 { (tokens - 1.0, true) } else { (tokens, false) };
        *guard = (left, now);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_takes_its_burst_then_refuses() {
        let limiter = Limiter::new(3);
        assert_eq!((0..5).map(|_| limiter.take()).filter(|t| *t).count(), 3);
    }

    #[test]
    fn bad_settings_name_their_variable() {
        let error = |pairs: &[(&str, &str)]| CallbackConfig::from_env(&Env::from_pairs(pairs)).unwrap_err().to_string();
        assert!(error(&[("CALLBACK_RATE_LIMIT_PER_SECOND", "0")]).starts_with("CALLBACK_RATE_LIMIT_PER_SECOND: "));
        assert!(error(&[("CALLBACK_SECRET", "short")]).starts_with("CALLBACK_SECRET: "));
        assert!(error(&[("CALLBACK_BASE_URL", "nope")]).starts_with("CALLBACK_BASE_URL: "));
        let config = CallbackConfig::from_env(&Env::from_pairs(&[("TWILIO_AUTH_TOKEN", "tok-s3cret")])).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
