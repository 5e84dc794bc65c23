//! The final status of an SMS in `sms_deliveries` (`delivery_status`, `delivered_at`,
//! `delivery_detail`), written from a verified delivery report.
//!
//! The job record in Redis is the truth `GET /v1/jobs/{id}` shows; the row is for operators and
//! billing, so it is written off the callback's path: a spawned task, bounded in time, whose
//! failure is logged and counted and never fails the callback (the provider would resend, and
//! the job already holds the report). The same precedence as the job's (complained > bounced >
//! undelivered > delivered) is applied by the statement itself, so resends and late weaker
//! reports change nothing, in whatever order they come. A report that arrives before the
//! worker's row is written (the worker writes rows in batches, off its own path) finds no row
//! and is not kept in PostgreSQL; the job keeps it.

use std::time::Duration;

use jobs::delivery::Delivery;
use sqlx::PgPool;

/// The longest the write may take, connection included.
const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// Writes `delivery` on the sent rows of `job_id` from `provider`, in the background.
pub fn record(db: &PgPool, provider: &'static str, job_id: &str, delivery: &Delivery) {
    let Ok(job_id) = uuid::Uuid::try_parse(job_id) else { return };
    let (db, delivery) = (db.clone(), delivery.clone());
    tokio::spawn(async move {
        let write = sqlx::query(
            "UPDATE sms_deliveries
             SET delivery_status = $3, delivered_at = $4, delivery_detail = $5
             WHERE job_id = $1 AND provider = $2 AND status = 'sent'
               AND (delivery_status IS NULL
                    OR array_position(ARRAY['delivered', 'undelivered', 'bounced', 'complained'], delivery_status)
                     < array_position(ARRAY['delivered', 'undelivered', 'bounced', 'complained'], $3))",
        )
        .bind(job_id)
        .bind(provider)
        .bind(delivery.status.as_str())
        .bind(delivery.at)
        .bind(delivery.detail.as_deref())
        .execute(&db);
        match tokio::time::timeout(WRITE_LIMIT, write).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failed(provider, &job_id, &e.to_string()),
            Err(_) => failed(provider, &job_id, "no answer in time"),
        }
    });
}

fn failed(provider: &'static str, job_id: &uuid::Uuid, error: &str) {
    metrics::counter!("jobplane_sms_delivery_status_dropped_total", "provider" => provider).increment(1);
    tracing::warn!(provider, %job_id, error, "sms_deliveries: the delivery report was not written (the job keeps it)");
}
