//! Typed outcomes of a handler, and how each becomes the next step of the job's life.

use std::time::Duration;

use apalis_core::error::{AbortError, BoxDynError};
use chrono::{DateTime, Utc};
use jobs::queue::{Leased, Outcome};
use jobs::record::DeadReason;
use jobs::retry::Backoff;

/// What a succeeded attempt reports: the provider's id of what it sent, when there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    pub provider_id: Option<String>,
}

impl Delivered {
    /// Succeeded; the far side named no message.
    pub fn done() -> Self {
        Self::default()
    }

    /// Succeeded, and the provider calls the message `id`.
    pub fn with_id(id: impl Into<String>) -> Self {
        Self { provider_id: Some(id.into()) }
    }
}

/// Why an attempt failed. Anything else a handler returns counts as [`JobError::Retry`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Try again after the policy's backoff.
    #[error("{0}")]
    Retry(String),
    /// Try again, not sooner than `after` (a `Retry-After`, a throttle).
    #[error("{message}")]
    RetryAfter { after: Duration, message: String },
    /// The provider refused for the whole kind ("too many requests": SES throttling, Twilio
    /// 20429, an SMS gateway's 429): the kind slows down for every worker ([`jobs::rate`]),
    /// and this job tries again, not sooner than `after` when the provider named a time. The
    /// attempt counts, as any attempt that reached the provider.
    #[error("{message}")]
    Throttled { after: Option<Duration>, message: String },
    /// Never try again: straight to the dead letters.
    #[error("{0}")]
    Permanent(String),
    /// Too late to deliver (an OTP past its TTL): never sent, kept with the dead letters.
    #[error("{0}")]
    Expired(String),
    /// An email to an address on the suppression list: never sent, straight to the dead
    /// letters with reason `suppressed`.
    #[error("{0}")]
    Suppressed(String),
    /// Not run: the job waits for its destination ([`crate::deliver::flow`]), its attempt
    /// given back by the same script. Nothing is recorded for it.
    #[error("deferred: waiting for its destination")]
    Deferred,
}

/// Turns a handler's result into the outcome `finish.lua` records, and the error text kept.
pub fn judge(
    job: &Leased,
    result: Result<(), &BoxDynError>,
    backoff: &Backoff,
    now: DateTime<Utc>,
) -> (Outcome, Option<String>) {
    let Err(error) = result else { return (Outcome::Succeeded, None) };
    let last = job.attempt >= job.max_attempts;
    let retry = |after: Option<Duration>, reason: DeadReason| {
        if last {
            Outcome::Dead(reason)
        } else {
            let delay = backoff.next_delay(job.attempt, after);
            let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            Outcome::Retry { at: now.checked_add_signed(delay).unwrap_or(DateTime::<Utc>::MAX_UTC) }
        }
    };
    if let Some(e) = error.downcast_ref::<JobError>() {
        let outcome = match e {
            // The ack layer records nothing for a deferred job; were it judged, a retry.
            JobError::Retry(_) | JobError::Deferred => retry(None, DeadReason::Exhausted),
            JobError::RetryAfter { after, .. } => retry(Some(*after), DeadReason::Exhausted),
            JobError::Throttled { after, .. } => retry(*after, DeadReason::Exhausted),
            JobError::Permanent(_) => Outcome::Dead(DeadReason::Permanent),
            JobError::Expired(_) => Outcome::Dead(DeadReason::Expired),
            JobError::Suppressed(_) => Outcome::Dead(DeadReason::Suppressed),
        };
        return (outcome, Some(e.to_string()));
    }
    if let Some(abort) = error.downcast_ref::<AbortError>() {
        // apalis's catch-panic layer reports a panic as an AbortError around a PanicError.
        let detail = std::error::Error::source(abort).map_or_else(|| abort.to_string(), ToString::to_string);
        return (retry(None, DeadReason::Panicked), Some(format!("panicked: {detail}")));
    }
    (retry(None, DeadReason::Exhausted), Some(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(attempt: u32, max_attempts: u32) -> Leased {
        Leased {
            id: "j".into(),
            kind: jobs::Kind::Webhook,
            attempt,
            token: u64::from(attempt),
            max_attempts,
            created_at: Utc::now(),
            producer: "p".into(),
            traceparent: None,
        }
    }

    fn boxed(e: JobError) -> BoxDynError {
        Box::new(e)
    }

    #[test]
    fn outcomes_follow_the_error_and_the_attempt() {
        let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(1), jitter: true };
        let now = Utc::now();
        assert_eq!(judge(&job(1, 3), Ok(()), &backoff, now), (Outcome::Succeeded, None));
        let (o, e) = judge(&job(1, 3), Err(&boxed(JobError::Retry("503".into()))), &backoff, now);
        assert!(matches!(o, Outcome::Retry { at } if at <= now + chrono::Duration::seconds(1)));
        assert_eq!(e.as_deref(), Some("503"));
        let (o, _) = judge(&job(3, 3), Err(&boxed(JobError::Retry("503".into()))), &backoff, now);
        assert_eq!(o, Outcome::Dead(DeadReason::Exhausted));
        let (o, _) = judge(&job(1, 3), Err(&boxed(JobError::Permanent("400".into()))), &backoff, now);
        assert_eq!(o, Outcome::Dead(DeadReason::Permanent));
        let (o, _) = judge(&job(1, 3), Err(&boxed(JobError::Expired("ttl".into()))), &backoff, now);
        assert_eq!(o, Outcome::Dead(DeadReason::Expired));
        let (o, e) = judge(&job(1, 3), Err(&boxed(JobError::Suppressed("a@x.org".into()))), &backoff, now);
        assert_eq!((o, e.as_deref()), (Outcome::Dead(DeadReason::Suppressed), Some("a@x.org")));
        let after = JobError::RetryAfter { after: Duration::from_secs(7), message: "429".into() };
        let (o, _) = judge(&job(1, 3), Err(&boxed(after)), &backoff, now);
        assert_eq!(o, Outcome::Retry { at: now + chrono::Duration::seconds(7) });
        let throttled = JobError::Throttled { after: Some(Duration::from_secs(9)), message: "slow down".into() };
        let (o, e) = judge(&job(1, 3), Err(&boxed(throttled)), &backoff, now);
        assert_eq!((o, e.as_deref()), (Outcome::Retry { at: now + chrono::Duration::seconds(9) }, Some("slow down")));
        let other: BoxDynError = "io".into();
        assert!(matches!(judge(&job(1, 3), Err(&other), &backoff, now).0, Outcome::Retry { .. }));
    }
}
