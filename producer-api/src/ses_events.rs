//! SES events as SNS carries them in a notification's `Message`: the event publishing format
//! of a configuration set (`eventType`) and the older identity notifications
//! (`notificationType`). Only what Jobplane acts on is read: the job (the `jobplane_job_id`
//! tag the worker sends, echoed in `mail.tags`), what happened, and the addresses to suppress.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The tag the worker puts on every message (`workers/src/deliver/email.rs`).
pub const JOB_TAG: &str = "jobplane_job_id";
/// Recipients read from one event at most (SES sends up to 50 per message).
const RECIPIENTS_MAX: usize = 50;

/// What an event says of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// A transient or undetermined bounce: not the address's fault for good.
    Undelivered,
    /// A permanent bounce: its recipients are suppressed.
    Bounced,
    /// A complaint: its recipients are suppressed.
    Complained,
}

/// One event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The job, when the message carried the tag (a message sent by something else has none).
    pub job_id: Option<String>,
    pub outcome: Outcome,
    pub at: DateTime<Utc>,
    /// SES's code (`5.1.1`, a complaint's feedback type) when there is one.
    pub code: Option<String>,
    /// SES's words (a bounce's diagnostic, the SMTP response).
    pub text: Option<String>,
    /// Addresses to put on the suppression list (a permanent bounce's, a complaint's).
    pub suppress: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "eventType", alias = "notificationType")]
    event_type: String,
    #[serde(default)]
    mail: Mail,
    bounce: Option<Bounce>,
    complaint: Option<Complaint>,
    delivery: Option<DeliveryRaw>,
}

#[derive(Default, Deserialize)]
struct Mail {
    #[serde(default)]
    tags: std::collections::HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    #[serde(rename = "bounceType")]
    kind: String,
    #[serde(default, rename = "bounceSubType")]
    sub_kind: String,
    #[serde(default)]
    bounced_recipients: Vec<Recipient>,
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    email_address: String,
    status: Option<String>,
    diagnostic_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    #[serde(default)]
    complained_recipients: Vec<Recipient>,
    timestamp: Option<DateTime<Utc>>,
    #[serde(rename = "complaintFeedbackType")]
    feedback_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryRaw {
    timestamp: Option<DateTime<Utc>>,
    smtp_response: Option<String>,
}

/// Reads `message` (a notification's `Message`): `Ok(None)` for an event Jobplane does not act
/// on (a send, an open, a click, a delivery delay), `Err` for one that does not read.
pub fn parse(message: &str, now: DateTime<Utc>) -> Result<Option<Event>, String> {
    let raw: Raw = serde_json::from_str(message).map_err(|e| format!("not an SES event: {e}"))?;
    let job_id = raw.mail.tags.get(JOB_TAG).and_then(|v| v.first()).map(|id| id.chars().take(64).collect());
    let event = match raw.event_type.as_str() {
        "Bounce" => {
            let bounce = raw.bounce.ok_or("a Bounce without `bounce`")?;
            let permanent = bounce.kind == "Permanent";
            let first = bounce.bounced_recipients.first();
            let text = first
                .and_then(|r| r.diagnostic_code.clone())
                .or_else(|| Some(format!("{} bounce ({})", bounce.kind, bounce.sub_kind)));
            Event {
                job_id,
                outcome: if permanent { Outcome::Bounced } else { Outcome::Undelivered },
                at: bounce.timestamp.unwrap_or(now),
                code: first.and_then(|r| r.status.clone()),
                text,
                suppress: if permanent { addresses(&bounce.bounced_recipients) } else { Vec::new() },
            }
        }
        "Complaint" => {
            let complaint = raw.complaint.ok_or("a Complaint without `complaint`")?;
            Event {
                job_id,
                outcome: Outcome::Complained,
                at: complaint.timestamp.unwrap_or(now),
                code: complaint.feedback_type.clone(),
                text: Some("the recipient marked the message as spam".into()),
                suppress: addresses(&complaint.complained_recipients),
            }
        }
        "Delivery" => {
            let delivery = raw.delivery.ok_or("a Delivery without `delivery`")?;
            Event {
                job_id,
                outcome: Outcome::Delivered,
                at: delivery.timestamp.unwrap_or(now),
                code: None,
                text: delivery.smtp_response,
                suppress: Vec::new(),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}

fn addresses(recipients: &[Recipient]) -> Vec<String> {
    recipients.iter().take(RECIPIENTS_MAX).map(|r| r.email_address.clone()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-28T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_hard_bounce_suppresses_its_recipients_and_a_soft_one_does_not() {
        let hard = json!({"eventType": "Bounce", "mail": {"tags": {"jobplane_job_id": ["j-1"]}},
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2026-11-27T10:00:00.000Z",
                "bouncedRecipients": [{"emailAddress": "Gone@Example.org", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}});
        let event = parse(&hard.to_string(), now()).unwrap().unwrap();
        assert_eq!(event.job_id.as_deref(), Some("j-1"));
        assert_eq!(event.outcome, Outcome::Bounced);
        assert_eq!(event.suppress, vec!["Gone@Example.org"]);
        assert_eq!(event.code.as_deref(), Some("5.1.1"));
        assert_eq!(event.at, "2026-11-27T10:00:00Z".parse::<DateTime<Utc>>().unwrap());
        let soft = json!({"notificationType": "Bounce", "mail": {},
            "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull", "bouncedRecipients": [{"emailAddress": "a@x.org"}]}});
        let event = parse(&soft.to_string(), now()).unwrap().unwrap();
        assert_eq!((event.outcome, event.job_id, event.suppress.len()), (Outcome::Undelivered, None, 0));
        assert_eq!(event.at, now());
    }

    #[test]
    fn complaints_deliveries_and_other_events() {
        let complaint = json!({"eventType": "Complaint", "mail": {"tags": {"jobplane_job_id": ["j-2"]}},
            "complaint": {"complainedRecipients": [{"emailAddress": "a@x.org"}], "complaintFeedbackType": "abuse"}});
        let event = parse(&complaint.to_string(), now()).unwrap().unwrap();
        assert_eq!((event.outcome, event.suppress), (Outcome::Complained, vec!["a@x.org".to_owned()]));
        let delivery = json!({"eventType": "Delivery", "mail": {"tags": {"jobplane_job_id": ["j-3"]}},
            "delivery": {"timestamp": "2026-11-27T10:00:01.000Z", "smtpResponse": "250 2.0.0 OK"}});
        let event = parse(&delivery.to_string(), now()).unwrap().unwrap();
        assert_eq!((event.outcome, event.text.as_deref()), (Outcome::Delivered, Some("250 2.0.0 OK")));
        assert_eq!(parse(&json!({"eventType": "Open", "mail": {}}).to_string(), now()).unwrap(), None);
        assert!(parse("not json", now()).is_err());
        assert!(parse(&json!({"eventType": "Bounce"}).to_string(), now()).is_err());
    }
}
