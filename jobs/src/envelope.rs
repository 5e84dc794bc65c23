//! The job request as producers send it, and the job as it is written to Redis.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::lanes::valid_group;
use crate::payload::Payload;
use crate::validation::{Checker, FieldError, from_serde};
use crate::{Kind, Priority, fingerprint};

/// How far ahead a job may be scheduled.
pub const MAX_DELAY_SECONDS: u64 = 366 * 24 * 3600;

/// A W3C trace context `traceparent` (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
/// neither id all zeros. Returns it lower-cased, or `None` for anything else (ignored, as the spec says).
pub fn valid_traceparent(value: &str) -> Option<String> {
    let value = value.trim().to_ascii_lowercase();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    ok.then_some(value)
}

/// Idempotency keys are 1 to 255 visible ASCII characters (IETF httpapi draft).
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// One job as it arrives: `POST /v1/jobs`, or one item of a batch. Its `Debug` leaves the
/// payload out, since it may hold an OTP code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub kind: String,
    pub payload: Value,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub delay_seconds: Option<u64>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Only in batches; a single job takes the `Idempotency-Key` header.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// `high`, `normal` (the default) or `low`; read as text so a bad value is named.
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

impl std::fmt::Debug for JobRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRequest").field("kind", &self.kind).field("payload", &"[redacted]").finish_non_exhaustive()
    }
}

/// A request that passed every rule, not yet given an id.
#[derive(Debug, Clone)]
pub struct ValidJob {
    pub kind: Kind,
    pub payload: Payload,
    /// `None`: run now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: u32,
    pub idempotency_key: Option<String>,
    /// Hash of the request as sent, compared when an idempotency key comes back.
    pub fingerprint: String,
    pub priority: Priority,
    pub group: Option<String>,
}

impl ValidJob {
    /// Reads one job from `value`; errors point under `base` (`""` for a single job, `/jobs/3` in a batch).
    pub fn parse(value: Value, base: &str, now: DateTime<Utc>) -> Result<Self, Vec<FieldError>> {
        let fingerprint = fingerprint::of_request(&value);
        if !value.is_object() {
            return Err(vec![FieldError::new(base, "must be a JSON object")]);
        }
        let request: JobRequest = serde_path_to_error::deserialize(value).map_err(|e| vec![from_serde(base, &e)])?;
        let mut c = Checker::new(base);
        let kind = match request.kind.parse::<Kind>() {
            Ok(kind) => kind,
            Err(e) => {
                c.fail("kind", e.to_string());
                return Err(c.errors);
            }
        };
        let run_at = schedule(&mut c, &request, now);
        let max_attempts = request.max_attempts.unwrap_or_else(|| kind.default_max_attempts());
        c.range("max_attempts", max_attempts, 1, kind.max_attempts_limit());
        if let Some(key) = &request.idempotency_key
            && !valid_idempotency_key(key)
        {
            c.fail("idempotency_key", "must be 1 to 255 visible ASCII characters");
        }
        let priority = match request.priority.as_deref().map(str::parse::<Priority>) {
            None => Priority::Normal,
            Some(Ok(priority)) => priority,
            Some(Err(e)) => {
                c.fail("priority", e);
                Priority::Normal
            }
        };
        if let Some(group) = &request.group
            && !valid_group(group)
        {
            c.fail("group", "must be 1 to 128 visible ASCII characters (no space)");
        }
        let payload = Payload::parse(kind, request.payload, &format!("{base}/payload"), now);
        let payload = match payload {
            Ok(p) if c.errors.is_empty() => p,
            Ok(_) => return Err(c.errors),
            Err(mut errors) => {
                c.errors.append(&mut errors);
                return Err(c.errors);
            }
        };
        Ok(ValidJob {
            kind,
            payload,
            run_at,
            max_attempts,
            idempotency_key: request.idempotency_key,
            fingerprint,
            priority,
            group: request.group,
        })
    }

    /// The dead-letter console's audit record of an operator's action (actor
    /// `console:<operator>`, which [`ValidJob::parse`] refuses from anyone else).
    pub fn operator_audit_record(
        operator: &str,
        fields: serde_json::Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Self, Vec<FieldError>> {
        let payload = Payload::operator_audit_record(operator, fields, now)?;
        let kind = Kind::AuditLog;
        let fingerprint = fingerprint::of_request(&serde_json::json!({"kind": kind.as_str(), "payload": payload}));
        Ok(ValidJob {
            kind,
            payload,
            run_at: None,
            max_attempts: kind.default_max_attempts(),
            idempotency_key: None,
            fingerprint,
            priority: Priority::Normal,
            group: None,
        })
    }

    /// Gives the job its id and its producer: what the enqueue script writes.
    pub fn into_new(self, producer: &str, now: DateTime<Utc>) -> NewJob {
        NewJob {
            id: Uuid::now_v7(),
            kind: self.kind,
            payload: self.payload.to_json(),
            created_at: now,
            run_at: self.run_at.filter(|t| *t > now),
            max_attempts: self.max_attempts,
            producer: producer.to_owned(),
            idempotency: self.idempotency_key.map(|key| (key, self.fingerprint)),
            traceparent: None,
            priority: self.priority,
            group: self.group,
        }
    }
}

/// `run_at` or `delay_seconds`, never both; `None` means now.
fn schedule(c: &mut Checker, request: &JobRequest, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let limit = Duration::seconds(i64::try_from(MAX_DELAY_SECONDS).unwrap_or(i64::MAX));
    match (request.run_at, request.delay_seconds) {
        (Some(_), Some(_)) => {
            c.fail("delay_seconds", "must not be given together with run_at");
            None
        }
        (Some(at), None) => {
            if at > now + limit {
                c.fail("run_at", "must be at most 366 days ahead");
            }
            Some(at)
        }
        (None, Some(delay)) => {
            c.range("delay_seconds", delay, 0, MAX_DELAY_SECONDS);
            let delay = Duration::seconds(i64::try_from(delay.min(MAX_DELAY_SECONDS)).unwrap_or(0));
            (delay > Duration::zero()).then(|| now + delay)
        }
        (None, None) => None,
    }
}

/// A job ready to be written: what `enqueue.lua` receives. Its `Debug` leaves the payload out.
#[derive(Clone)]
pub struct NewJob {
    /// UUIDv7: unique across producers and sortable by creation time.
    pub id: Uuid,
    pub kind: Kind,
    /// The payload's normal form as JSON.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// Set only when in the future: the job waits in the scheduled set.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: u32,
    pub producer: String,
    /// The idempotency key and the request's fingerprint.
    pub idempotency: Option<(String, String)>,
    /// The W3C `traceparent` of the request that made the job; the worker's span continues it.
    pub traceparent: Option<String>,
    /// Its lane: served after every ready job of a higher priority of its kind.
    pub priority: Priority,
    /// Its group (a tenant): served round-robin with the other groups of its lane.
    pub group: Option<String>,
}

impl std::fmt::Debug for NewJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewJob")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("payload", &"[redacted]")
            .field("run_at", &self.run_at)
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<ValidJob, Vec<FieldError>> {
        ValidJob::parse(value, "", Utc::now())
    }

    fn webhook() -> Value {
        json!({"kind": "webhook", "payload": {"url": "https://example.org/h", "event": "a.b"}})
    }

    #[test]
    fn unknown_kind_names_the_field() {
        let errors = parse(json!({"kind": "fax", "payload": {}})).unwrap_err();
        assert_eq!(errors[0].field, "/kind");
        assert!(errors[0].message.contains("fax"));
    }

    #[test]
    fn schedule_rules() {
        let mut v = webhook();
        v["delay_seconds"] = json!(60);
        let job = parse(v.clone()).unwrap();
        assert!(job.run_at.unwrap() > Utc::now());
        v["run_at"] = json!("2030-01-01T00:00:00Z");
        assert_eq!(parse(v).unwrap_err()[0].field, "/delay_seconds");
        let mut v = webhook();
        v["run_at"] = json!("2999-01-01T00:00:00Z");
        assert_eq!(parse(v).unwrap_err()[0].field, "/run_at");
        let mut v = webhook();
        v["delay_seconds"] = json!(0);
        assert!(parse(v).unwrap().run_at.is_none());
    }

    #[test]
    fn max_attempts_is_bounded_per_kind() {
        let mut v = webhook();
        assert_eq!(parse(v.clone()).unwrap().max_attempts, 10);
        v["max_attempts"] = json!(26);
        assert_eq!(parse(v.clone()).unwrap_err()[0].field, "/max_attempts");
        v["max_attempts"] = json!(0);
        assert_eq!(parse(v).unwrap_err()[0].field, "/max_attempts");
    }

    #[test]
    fn envelope_and_payload_errors_come_together() {
        let v = json!({"kind": "webhook", "max_attempts": 99, "payload": {"url": "x", "event": "e"}});
        let fields: Vec<_> =
            ValidJob::parse(v, "/jobs/2", Utc::now()).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["/jobs/2/max_attempts", "/jobs/2/payload/url"]);
    }

    #[test]
    fn past_run_at_runs_now() {
        let mut v = webhook();
        v["run_at"] = json!("2020-01-01T00:00:00Z");
        let job = parse(v).unwrap().into_new("p", Utc::now());
        assert!(job.run_at.is_none());
    }
}
