//! `POST /v1/callbacks/ses`: SES events through SNS. The SNS envelope is verified first
//! ([`crate::sns`]: signature, certificate host, topic), then:
//! - a `SubscriptionConfirmation` is confirmed (a GET of its `SubscribeURL`, on SNS's hosts only);
//! - a `Notification` carrying an SES event ([`crate::ses_events`]) suppresses the addresses of
//!   a hard bounce or a complaint and puts the report on the job through [`super::accept`].
//!
//! A `MessageId` is applied once ([`jobs::suppression::Suppressions::claim_message`]); SNS's
//! resends are `204` no-ops. A notification whose `Timestamp` is older than the claim is kept
//! (6 h; SNS resends for an hour at most) is a replay: `403`. Every authentic message answers `204`, job or no job.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use jobs::Kind;
use jobs::delivery::{Delivery, DeliveryStatus};
use jobs::suppression::SuppressionReason;

use super::{ACCEPTED, Report, accept};
use crate::AppState;
use crate::problem::ApiError;
use crate::ses_events::{self, Outcome};
use crate::sns::Envelope;

/// The largest SNS request: SNS messages are at most 256 KiB, plus the envelope.
pub const BODY_LIMIT: usize = 288 * 1024;
/// How long a message id is remembered: longer than SNS retries an HTTP(S) delivery.
const SEEN_FOR: std::time::Duration = std::time::Duration::from_hours(6);

#[utoipa::path(post, path = "/v1/callbacks/ses", tag = "callbacks",
    request_body(content = String, description = "An SNS message (JSON, sent as text/plain): a SubscriptionConfirmation, or a Notification carrying an SES event (Bounce, Complaint, Delivery)", content_type = "text/plain"),
    responses(
        (status = 204, description = "Verified and applied (or a resend, or an event Jobplane ignores); the same whether or not the job exists"),
        (status = 403, description = "Not a verified SNS message: bad signature, certificate off SNS's hosts, unknown topic, a SubscribeURL off SNS's hosts"),
        (status = 413, description = "Body over 288 KiB"),
        (status = 503, description = "Redis unreachable, or authentic callbacks over CALLBACK_RATE_LIMIT_PER_SECOND (header `Retry-After`): SNS retries (it never retries a 4xx)"),
    ))]
pub async fn notification(State(state): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let envelope = match state.sns.verify(&body).await {
        Ok(envelope) => envelope,
        Err(refused) => {
            tracing::warn!(reason = %refused, "SES callback refused");
            return Err(ApiError::CallbackForbidden);
        }
    };
    if envelope.kind == "Notification" && !recent(&envelope.timestamp, Utc::now()) {
        // SNS stops resending after an hour at most: an older message is a replay, which the
        // claim below (kept SEEN_FOR) could no longer tell apart (a removed suppression would
        // come back).
        tracing::warn!(topic = %envelope.topic_arn, "SES callback refused: its Timestamp is not recent");
        return Err(ApiError::CallbackForbidden);
    }
    super::admit(&state)?;
    match envelope.kind.as_str() {
        "SubscriptionConfirmation" => confirm(&state, &envelope).await,
        "Notification" => {
            if !state.suppressions.claim_message(&envelope.message_id, SEEN_FOR).await? {
                return Ok(ACCEPTED);
            }
            let applied = apply(&state, &envelope).await;
            if applied.is_err()
                && let Err(e) = state.suppressions.release_message(&envelope.message_id).await
            {
                tracing::warn!(error = %e, "an SNS message failed and its claim could not be given back");
            }
            applied.map(|()| ACCEPTED)
        }
        _ => {
            tracing::info!(topic = %envelope.topic_arn, kind = %envelope.kind, "SNS message ignored");
            Ok(ACCEPTED)
        }
    }
}

/// Whether SNS's `Timestamp` is within [`SEEN_FOR`] of `now` (a few minutes ahead allowed for
/// clock skew).
fn recent(timestamp: &str, now: chrono::DateTime<Utc>) -> bool {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(timestamp) else { return false };
    let age = now.signed_duration_since(at);
    age <= chrono::Duration::from_std(SEEN_FOR).unwrap_or(chrono::Duration::MAX) && age >= -chrono::Duration::minutes(5)
}

async fn confirm(state: &AppState, envelope: &Envelope) -> Result<StatusCode, ApiError> {
    let url = envelope.subscribe_url.as_deref().unwrap_or_default();
    if !state.sns.on_pattern(url) {
        tracing::warn!(topic = %envelope.topic_arn, "SNS subscription refused: its SubscribeURL is not on an SNS host");
        return Err(ApiError::CallbackForbidden);
    }
    match state.sns.confirm(envelope).await {
        Ok(()) => {
            tracing::info!(topic = %envelope.topic_arn, "SNS subscription confirmed");
            Ok(ACCEPTED)
        }
        Err(e) => Err(ApiError::Internal(format!("the SNS subscription could not be confirmed: {e}"))),
    }
}

/// Suppresses what the event says to, and puts its report on the job.
async fn apply(state: &AppState, envelope: &Envelope) -> Result<(), ApiError> {
    let event = match ses_events::parse(&envelope.message, Utc::now()) {
        Ok(Some(event)) => event,
        Ok(None) => return Ok(()),
        Err(e) => {
            // Signed by SNS, so not a forgery: a message of another shape on the topic.
            tracing::warn!(topic = %envelope.topic_arn, error = %e, "SNS notification is not an SES event; ignored");
            return Ok(());
        }
    };
    let (status, reason) = match event.outcome {
        Outcome::Delivered => (DeliveryStatus::Delivered, None),
        Outcome::Undelivered => (DeliveryStatus::Undelivered, None),
        Outcome::Bounced => (DeliveryStatus::Bounced, Some(SuppressionReason::Bounce)),
        Outcome::Complained => (DeliveryStatus::Complained, Some(SuppressionReason::Complaint)),
    };
    if let Some(reason) = reason {
        let detail = match (&event.code, &event.text) {
            (Some(code), Some(text)) => format!("{code}: {text}"),
            (code, text) => code.clone().or_else(|| text.clone()).unwrap_or_default(),
        };
        for address in &event.suppress {
            let added = state.suppressions.add(address, reason, &detail, event.job_id.as_deref(), event.at).await?;
            if added == Some(true) {
                metrics::counter!("jobplane_suppressions_added_total", "reason" => reason.as_str()).increment(1);
            }
        }
    }
    if let Some(job_id) = event.job_id {
        let delivery = match &event.code {
            Some(code) => Delivery::coded(status, event.at, code, event.text.as_deref()),
            None => Delivery::new(status, event.at, event.text.as_deref()),
        };
        accept(state, &Report { provider: "ses", kind: Kind::Email, job_id, delivery }).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recent_messages_are_taken() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-28T07:00:00Z").unwrap().with_timezone(&Utc);
        assert!(recent("2026-11-28T06:59:00.000Z", now));
        assert!(recent("2026-11-28T01:00:01.000Z", now));
        assert!(!recent("2026-11-28T00:59:00.000Z", now), "older than SEEN_FOR");
        assert!(recent("2026-11-28T07:04:00.000Z", now), "a little clock skew");
        assert!(!recent("2026-11-28T08:00:00.000Z", now));
        assert!(!recent("yesterday", now));
    }
}
