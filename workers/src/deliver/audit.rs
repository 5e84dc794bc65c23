//! Audit-log events into PostgreSQL. This version writes each job's event with one statement
//! (stored once per `event_id`); batching many jobs per statement is the job-kinds issue.

use jobs::payload::AuditLog;
use sqlx::PgPool;

use crate::outcome::{Delivered, JobError};

const INSERT: &str = "
    WITH claimed AS (
        INSERT INTO audit_event_ids (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING event_id
    )
    INSERT INTO audit_logs (event_id, tenant_id, actor, action, resource_type, resource_id, ip, user_agent, metadata, occurred_at, job_id)
    SELECT event_id, $2, $3, $4, $5, $6, $7::inet, $8, $9, $10, $11::uuid FROM claimed";

#[derive(Debug)]
pub struct AuditWriter {
    pool: PgPool,
}

impl AuditWriter {
    pub fn new(database_url: &str) -> Result<Self, sqlx::Error> {
        Ok(Self { pool: jobs::db::pool(database_url, 4)? })
    }

    pub async fn write(&self, job_id: &str, event: &AuditLog) -> Result<Delivered, JobError> {
        let event_id = event.event_id.ok_or_else(|| JobError::Permanent("the event has no event_id".into()))?;
        let occurred_at =
            event.occurred_at.ok_or_else(|| JobError::Permanent("the event has no occurred_at".into()))?;
        sqlx::query(INSERT)
            .bind(event_id)
            .bind(&event.tenant_id)
            .bind(&event.actor)
            .bind(&event.action)
            .bind(&event.resource_type)
            .bind(&event.resource_id)
            .bind(event.ip.map(|ip| ip.to_string()))
            .bind(&event.user_agent)
            .bind(sqlx::types::Json(&event.metadata))
            .bind(occurred_at)
            .bind(job_id)
            .execute(&self.pool)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_check_violation() => {
                    JobError::Permanent(format!("the event breaks a rule: {db}"))
                }
                _ => JobError::Retry(format!("postgresql: {e}")),
            })?;
        Ok(Delivered::done())
    }
}
