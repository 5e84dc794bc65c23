//! Flow control of webhook deliveries ([`jobs::destinations`]): each delivery takes a slot of
//! its destination first (one script); a job that finds none, or finds its destination cooling
//! down, is deferred without burning its attempt, and the delivery's end frees the slot (one
//! more script), which counts the outcome for the cool-down and moves the oldest parked job on.

use std::time::Duration;

use jobs::destinations::{Breaker, Delivery, Destination, Destinations, Policy, Slot};
use jobs::queue::Leased;
use jobs::settings::{Env, SettingError};

use crate::outcome::{Delivered, JobError};

/// Reads the `WEBHOOK_*` flow-control settings; `timeout` is `WEBHOOK_TIMEOUT_MS`, which bounds
/// how long a slot is held (with 5 s for the rest of the attempt).
pub fn policy_from_env(env: &Env, timeout: Duration) -> Result<Policy, SettingError> {
    let defaults = Policy::default();
    let in_range = |name: &'static str, value: u64, low: u64, high: u64| {
        if (low..=high).contains(&value) {
            Ok(value)
        } else {
            Err(SettingError::new(name, format!("must be between {low} and {high}")))
        }
    };
    let max_in_flight = env.parse("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", u64::from(defaults.max_in_flight))?;
    // 0 turns flow control off: no slots, no cool-down, no round trips.
    let max_in_flight = in_range("WEBHOOK_MAX_IN_FLIGHT_PER_DESTINATION", max_in_flight, 0, 10_000)?;
    let threshold = env.parse("WEBHOOK_COOLDOWN_FAILURES", u64::from(defaults.threshold))?;
    let threshold = in_range("WEBHOOK_COOLDOWN_FAILURES", threshold, 1, 1000)?;
    let base_gap = env.parse("WEBHOOK_COOLDOWN_MIN_SECONDS", defaults.base_gap.as_secs())?;
    let base_gap = in_range("WEBHOOK_COOLDOWN_MIN_SECONDS", base_gap, 1, 86_400)?;
    let max_gap = env.parse("WEBHOOK_COOLDOWN_MAX_SECONDS", defaults.max_gap.as_secs())?;
    let max_gap = in_range("WEBHOOK_COOLDOWN_MAX_SECONDS", max_gap, base_gap, 86_400)?;
    let max_deferral = env.parse("WEBHOOK_MAX_DEFERRAL_SECONDS", defaults.max_deferral.as_secs())?;
    let max_deferral = in_range("WEBHOOK_MAX_DEFERRAL_SECONDS", max_deferral, 1, 30 * 86_400)?;
    Ok(Policy {
        max_in_flight: u32::try_from(max_in_flight).unwrap_or(u32::MAX),
        hold: timeout + Duration::from_secs(5),
        max_deferral: Duration::from_secs(max_deferral),
        threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
        base_gap: Duration::from_secs(base_gap),
        max_gap: Duration::from_secs(max_gap),
        idle: defaults.idle,
    })
}

/// The webhook sender's gate: the destinations' store and the policy.
#[derive(Debug, Clone)]
pub struct Flow {
    pub destinations: Destinations,
    pub policy: Policy,
}

impl Flow {
    /// Runs `deliver` for `job` to `url` within a slot of its destination, or defers the job.
    pub async fn gate<F>(&self, job: &Leased, url: &str, deliver: F) -> Result<Delivered, JobError>
    where
        F: Future<Output = Result<Delivered, JobError>>,
    {
        // Validation refuses a URL without a host; a foreign writer's goes ungated.
        let Some(to) = Destination::of_url(url) else { return deliver.await };
        let slot = self.destinations.acquire(&to, &job.id, job.token, &self.policy).await;
        match slot.map_err(|e| JobError::Retry(format!("could not take a slot of the destination: {e}")))? {
            Slot::Acquired { .. } => {}
            Slot::Deferred { reason, .. } => {
                metrics::counter!("jobplane_webhook_deferrals_total", "reason" => reason.as_str()).increment(1);
                return Err(JobError::Deferred);
            }
            // Settled by the script: nothing to record.
            Slot::Stale | Slot::Cancelled => return Err(JobError::Deferred),
            Slot::Overdue { since } => {
                return Err(JobError::Expired(format!(
                    "waited for its destination {} since {} (WEBHOOK_MAX_DEFERRAL_SECONDS)",
                    to.origin(),
                    since.to_rfc3339()
                )));
            }
        }
        let result = deliver.await;
        let delivery = match &result {
            // 2xx, or a 4xx the destination chose: it is up.
            Ok(_)
            | Err(JobError::Permanent(_) | JobError::Expired(_) | JobError::Suppressed(_) | JobError::Deferred) => {
                Delivery::Answered
            }
            Err(JobError::Retry(_)) => Delivery::Failed { retry_after: None },
            Err(JobError::RetryAfter { after, .. }) => Delivery::Failed { retry_after: Some(*after) },
            Err(JobError::Throttled { after, .. }) => Delivery::Failed { retry_after: *after },
        };
        match self.destinations.release(&to, &job.id, job.token, delivery, &self.policy).await {
            Ok(released) => count(released.breaker),
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = jobs::store::chain(&e), "could not free the destination's slot; it frees itself at its deadline");
            }
        }
        result
    }
}

fn count(breaker: Breaker) {
    let event = match breaker {
        Breaker::Opened => "opened",
        Breaker::Extended => "extended",
        Breaker::Closed => "closed",
        Breaker::Stale | Breaker::Unchanged => return,
    };
    tracing::info!(event, "a webhook destination's cool-down changed");
    metrics::counter!("jobplane_webhook_cooldowns_total", "event" => event).increment(1);
}

/// Samples `jobplane_webhook_destinations_cooling` every `every`.
pub async fn sample_cooling(destinations: Destinations, every: Duration) {
    loop {
        if let Ok(n) = destinations.cooling_count().await {
            #[expect(clippy::cast_precision_loss, reason = "a gauge")]
            metrics::gauge!("jobplane_webhook_destinations_cooling").set(n as f64);
        }
        tokio::time::sleep(every).await;
    }
}
