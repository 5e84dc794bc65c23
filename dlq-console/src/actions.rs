//! What operators do to dead letters, shared by the JSON API, the pages and the CLI. Every
//! action is written to the audit log as an `audit_log` job with actor `console:<operator>`.

use std::time::{Duration, Instant};

use chrono::Utc;
use jobs::dead::{DeadFilter, DeadLetters, ReplayOutcome, ReplayRefused};
use jobs::payload::Payload;
use jobs::sms_templates::SmsTemplates;
use jobs::{FieldError, Kind, Store, StoreError, ValidJob};
use serde::Serialize;
use serde_json::{Value, json};

/// Why an action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no dead letter has this id")]
    NotFound,
    #[error("no job has this id")]
    JobNotFound,
    #[error("{0}")]
    Refused(String),
    #[error("the edited payload breaks {} rule(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReplayOutcome> for ActionError {
    fn from(outcome: ReplayOutcome) -> Self {
        match outcome {
            ReplayOutcome::Refused(ReplayRefused::NotFound) => ActionError::NotFound,
            ReplayOutcome::Refused(ReplayRefused::NotReplayable(why)) => ActionError::Refused(why),
            ReplayOutcome::Store(e) => ActionError::Store(e),
        }
    }
}

/// What a bulk replay did.
#[derive(Debug, Default, Serialize)]
pub struct ReplayReport {
    pub replayed: u64,
    /// Letters that could not be replayed, with the reason (an expired OTP, gone meanwhile).
    pub refused: Vec<Refusal>,
}

#[derive(Debug, Serialize)]
pub struct Refusal {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Console {
    pub dead: DeadLetters,
    pub store: Store,
    /// Letters per second a bulk replay may queue.
    pub replay_rate: u32,
    pub templates: SmsTemplates,
    /// Cancel and run now (`crate::control`).
    pub control: jobs::control::Control,
    /// Pausing and resuming kinds; their latency (see `fleet.rs`).
    pub pauses: jobs::pause::Pauses,
    /// The kinds' rate limits (see `rate.rs`).
    pub rates: jobs::rate::RateLimits,
    /// The workers' heartbeats.
    pub fleet: jobs::fleet::Fleet,
    /// Webhook destinations cooling down (see `destinations.rs`).
    pub destinations: jobs::destinations::Destinations,
    /// The email suppression list (see `suppressions.rs`).
    pub suppressions: jobs::suppression::Suppressions,
}

impl Console {
    /// Replays one letter; `edited` (a payload object) replaces its payload after the checks of
    /// the producer API. Values left as the console showed them redacted keep what is stored,
    /// but only while the destination is unchanged (see [`jobs::redact::restore_redacted`]);
    /// the audit record names the fields the edit changed.
    pub async fn replay(&self, operator: &str, id: &str, edited: Option<Value>) -> Result<(), ActionError> {
        let now = Utc::now();
        let (payload, changed) = match edited {
            None => (None, None),
            Some(value) => {
                let (payload, changed) = self.checked_payload(id, value).await?;
                (Some(payload), Some(changed))
            }
        };
        let kind = self.dead.replay(id, payload.as_deref(), operator, now).await?;
        let (action, metadata) = match changed {
            Some(changed) => ("dead_letter.edit_and_replay", json!({"kind": kind, "changed": changed})),
            None => ("dead_letter.replay", json!({"kind": kind})),
        };
        self.record(operator, action, Some(id), metadata).await;
        Ok(())
    }

    /// The edited payload, checked, and the JSON pointers of the fields it changed.
    async fn checked_payload(&self, id: &str, mut value: Value) -> Result<(String, Vec<String>), ActionError> {
        let (kind, stored) = self.dead.payload(id).await?.ok_or(ActionError::NotFound)?;
        let stored: Value = serde_json::from_str(&stored).unwrap_or(Value::Null);
        let held = jobs::redact::restore_redacted(kind, &mut value, &stored);
        if kind == Kind::OtpSms && held.iter().any(|f| f == "/code") {
            return Err(ActionError::Invalid(vec![FieldError::new(
                "/payload/to",
                "cannot change while keeping the stored code: send a new code with the new number",
            )]));
        }
        if !held.is_empty() {
            let destination =
                jobs::redact::destination_fields(kind).iter().map(|f| format!("`{f}`")).collect::<Vec<_>>();
            return Err(ActionError::Invalid(
                held.iter()
                    .map(|field| {
                        FieldError::new(
                            format!("/payload{field}"),
                            format!(
                                "is still `[redacted]`, and the destination ({}) changed: a stored secret goes only where it went before; supply the value",
                                destination.join(", ")
                            ),
                        )
                    })
                    .collect(),
            ));
        }
        let payload = Payload::parse(kind, value, "/payload", Utc::now()).map_err(ActionError::Invalid)?;
        if let Payload::OtpSms(otp) = &payload
            && let Some(error) = self.templates.check(otp, "/payload")
        {
            return Err(ActionError::Invalid(vec![error]));
        }
        let json = payload.to_json();
        let checked: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        Ok((json, jobs::redact::changed_fields(&stored, &checked, 50)))
    }

    #[expect(clippy::cast_precision_loss, reason = "pacing: counts far below 2^52")]
    /// Replays letters one by one at most `replay_rate` a second, calling `progress` with the
    /// number handled so far. One audit record covers the whole action.
    pub async fn replay_many(
        &self,
        operator: &str,
        ids: &[String],
        scope: Value,
        mut progress: impl FnMut(u64),
    ) -> Result<ReplayReport, ActionError> {
        // Recorded first, so a replay cut short (the process stopped) is still on record.
        self.record(operator, "dead_letter.replay_many.started", None, json!({"scope": scope, "letters": ids.len()}))
            .await;
        let mut report = ReplayReport::default();
        let started = Instant::now();
        let now = Utc::now();
        for (done, id) in (1u64..).zip(ids) {
            match self.dead.replay(id, None, operator, now).await.map_err(ActionError::from) {
                Ok(_) => report.replayed += 1,
                Err(ActionError::Store(e)) => {
                    self.record(
                        operator,
                        "dead_letter.replay_many",
                        None,
                        json!({"scope": scope, "replayed": report.replayed, "stopped": e.to_string()}),
                    )
                    .await;
                    return Err(ActionError::Store(e));
                }
                Err(e) => report.refused.push(Refusal { id: id.clone(), reason: e.to_string() }),
            }
            progress(done);
            // Pace: the n-th letter goes no sooner than n / rate seconds after the start.
            let due = Duration::from_secs_f64(done as f64 / f64::from(self.replay_rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        self.record(
            operator,
            "dead_letter.replay_many",
            None,
            json!({"scope": scope, "replayed": report.replayed, "refused": report.refused.len()}),
        )
        .await;
        Ok(report)
    }

    /// The ids matching `filter` (for bulk actions and `--dry-run`).
    pub async fn matching(&self, filter: &DeadFilter) -> Result<Vec<(Kind, String)>, ActionError> {
        Ok(self.dead.matching(filter).await?)
    }

    pub async fn delete(&self, operator: &str, id: &str) -> Result<(), ActionError> {
        if !self.dead.delete(id).await? {
            return Err(ActionError::NotFound);
        }
        self.record(operator, "dead_letter.delete", Some(id), json!({})).await;
        Ok(())
    }

    /// Deletes every letter matching `filter`, a chunk per round trip; returns how many.
    pub async fn purge(
        &self,
        operator: &str,
        filter: &DeadFilter,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, ActionError> {
        let targets = self.dead.matching(filter).await?;
        let mut deleted = 0;
        for kind in Kind::ALL {
            let ids: Vec<String> = targets.iter().filter(|(k, _)| *k == kind).map(|(_, id)| id.clone()).collect();
            for chunk in ids.chunks(jobs::dead::CHUNK) {
                deleted += self.dead.delete_many(kind, chunk).await?;
                progress(deleted);
            }
        }
        self.record(operator, "dead_letter.purge", None, json!({"filter": filter, "deleted": deleted})).await;
        Ok(deleted)
    }

    /// Writes an operator action on a dead letter to the audit log.
    async fn record(&self, operator: &str, action: &str, id: Option<&str>, metadata: Value) {
        self.record_on(operator, action, "dead_letter", id, metadata).await;
    }

    /// Writes an operator action on a `resource_type` to the audit log (an `audit_log` job). A
    /// failure is logged: the action itself already happened.
    pub(crate) async fn record_on(
        &self,
        operator: &str,
        action: &str,
        resource_type: &str,
        id: Option<&str>,
        metadata: Value,
    ) {
        let now = Utc::now();
        let mut fields = serde_json::Map::new();
        fields.insert("tenant_id".to_owned(), json!("jobplane"));
        fields.insert("action".to_owned(), json!(action));
        fields.insert("resource_type".to_owned(), json!(resource_type));
        fields.insert("metadata".to_owned(), metadata);
        if let Some(id) = id {
            fields.insert("resource_id".to_owned(), Value::String(id.to_owned()));
        }
        let job = match ValidJob::operator_audit_record(operator, fields, now) {
            Ok(job) => job.into_new("console", now),
            Err(errors) => {
                tracing::error!(?errors, action, "operator action not recordable");
                return;
            }
        };
        if let Err(e) = self.store.enqueue(&[job]).await {
            tracing::error!(error = %e, action, operator, "operator action done but not written to the audit log");
        }
    }
}
