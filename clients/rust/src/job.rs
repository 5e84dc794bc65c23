//! A job to enqueue, built from one of the `jobs` crate's typed payloads.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::payload::{AuditLog, Email, OtpSms, Webhook};
use crate::{Kind, Priority};

/// One job: `POST /v1/jobs`, or an item of [`crate::Client::enqueue_batch`].
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    kind: Kind,
    payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<Priority>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// Sent as the `Idempotency-Key` header (single) or the item's `idempotency_key` (batch).
    #[serde(skip)]
    pub(crate) idempotency_key: Option<String>,
}

impl Job {
    fn of(kind: Kind, payload: &impl Serialize) -> Self {
        Self {
            kind,
            payload: serde_json::to_value(payload).expect("payloads serialize"),
            run_at: None,
            delay_seconds: None,
            max_attempts: None,
            priority: None,
            group: None,
            idempotency_key: None,
        }
    }

    pub fn otp_sms(payload: &OtpSms) -> Self {
        Self::of(Kind::OtpSms, payload)
    }

    pub fn email(payload: &Email) -> Self {
        Self::of(Kind::Email, payload)
    }

    pub fn webhook(payload: &Webhook) -> Self {
        Self::of(Kind::Webhook, payload)
    }

    pub fn audit_log(payload: &AuditLog) -> Self {
        Self::of(Kind::AuditLog, payload)
    }

    /// A job of `kind` whose payload is given as JSON (checked by the API, or by [`Job::check`]).
    pub fn raw(kind: Kind, payload: Value) -> Self {
        Self { payload, ..Self::of(kind, &Value::Null) }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Run at `at` (a time in the past means now); replaces a delay.
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self.delay_seconds = None;
        self
    }

    /// Run after `delay`, in whole seconds; replaces a `run_at`.
    #[must_use]
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.delay_seconds = Some(delay.as_secs());
        self.run_at = None;
        self
    }

    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// A tenant or customer: groups are served round-robin within a kind and priority.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Your own key for this job, such as an order id: the same key within 24 h returns the
    /// same job. Without one, each call gets a fresh key (reused on its retries).
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Checks the payload by the API's own rules ([`crate::payload::Payload::parse`]) before
    /// anything is sent; the errors point where the API's would (`/payload/to`).
    pub fn check(&self) -> Result<(), Vec<crate::FieldError>> {
        crate::payload::Payload::parse(self.kind, self.payload.clone(), "/payload", Utc::now()).map(|_| ())
    }
}
