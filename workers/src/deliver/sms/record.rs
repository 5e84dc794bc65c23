//! `sms_deliveries`: one row per delivery attempt (masked number, provider, its message id,
//! sent or failed, the redacted error, the cost when known), for operators and billing.
//!
//! Written off the job's path: the sender hands each record to a bounded channel without
//! waiting, and a task of its own writes them in batches, retrying with backoff. A PostgreSQL
//! outage therefore never fails, delays or repeats an SMS; records are lost only when it
//! lasts past the retries or the channel fills up, and each loss is logged and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use jobs::queue::Leased;
use sqlx::{PgPool, QueryBuilder};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Message, Sent, mask};
use crate::outcome::JobError;

/// Records waiting to be written, at most; beyond it new ones are dropped (and counted).
const CAPACITY: usize = 10_000;
/// Rows per statement.
const BATCH: usize = 200;
/// The longest error text kept (the column's CHECK).
const MAX_ERROR_CHARS: usize = 1024;

/// One delivery attempt: one row of `sms_deliveries`.
#[derive(Debug)]
pub struct Row {
    job_id: Uuid,
    attempt: i32,
    to_masked: String,
    provider: &'static str,
    message_id: Option<String>,
    status: &'static str,
    error: Option<String>,
    cost: Option<String>,
    at: DateTime<Utc>,
}

impl Row {
    /// The record of `job`'s attempt to send `message`; `None` for a job id that is not a
    /// UUID (a foreign writer), which the table cannot hold.
    pub fn of(
        job: &Leased,
        message: &Message<'_>,
        provider: &'static str,
        result: &Result<Sent, JobError>,
    ) -> Option<Self> {
        let (status, message_id, cost, error) = match result {
            Ok(sent) => ("sent", sent.message_id.clone(), sent.cost.clone(), None),
            Err(e) => ("failed", None, None, Some(e.to_string().chars().take(MAX_ERROR_CHARS).collect())),
        };
        Some(Self {
            job_id: Uuid::try_parse(&job.id).ok()?,
            attempt: i32::try_from(job.attempt).ok()?,
            to_masked: mask(message.to),
            provider,
            message_id,
            status,
            error,
            cost,
            at: Utc::now(),
        })
    }
}

enum Command {
    Record(Row),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
pub struct Recorder {
    tx: mpsc::Sender<Command>,
    /// Whether the channel was full at the last record, so a full channel is logged once, not per SMS.
    full: AtomicBool,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Record(a) => f.debug_tuple("Record").field(&a.job_id).finish(),
            Command::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Recorder {
    /// Starts the writing task (on the current Tokio runtime).
    pub fn spawn(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        tokio::spawn(write_all(pool, rx));
        Self { tx, full: AtomicBool::new(false) }
    }

    /// Hands `attempt` to the writer without waiting.
    pub fn record(&self, attempt: Option<Row>) {
        let Some(attempt) = attempt else { return };
        match self.tx.try_send(Command::Record(attempt)) {
            Ok(()) => self.full.store(false, Ordering::Relaxed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("jobplane_sms_records_dropped_total").increment(1);
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        capacity = CAPACITY,
                        "sms_deliveries: too many records waiting (PostgreSQL slow or down); dropping new ones until it catches up"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!("jobplane_sms_records_dropped_total").increment(1);
                tracing::warn!("sms_deliveries: the writer has stopped; record dropped");
            }
        }
    }

    /// Waits, at most `limit`, until every record handed over so far is written or given up.
    pub async fn flush(&self, limit: Duration) {
        let (done, written) = oneshot::channel();
        let flushed = async {
            if self.tx.send(Command::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        };
        if tokio::time::timeout(limit, flushed).await.is_err() {
            tracing::warn!("sms_deliveries: records still waiting at shutdown are lost");
        }
    }
}

async fn write_all(pool: PgPool, mut rx: mpsc::Receiver<Command>) {
    let mut commands = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut commands, BATCH).await > 0 {
        let mut batch = Vec::with_capacity(commands.len());
        let mut flushed = Vec::new();
        for command in commands.drain(..) {
            match command {
                Command::Record(attempt) => batch.push(attempt),
                Command::Flush(done) => flushed.push(done),
            }
        }
        if !batch.is_empty() {
            write(&pool, &batch).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Writes `batch`, retrying for about 15 s (0.5, 1, 2, 4, 8 s apart) before giving up on it.
async fn write(pool: &PgPool, batch: &[Row]) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(8))
        .with_max_times(5);
    let result = (|| insert(pool, batch))
        .retry(backoff)
        .notify(|e, wait| {
            tracing::warn!(error = %e, rows = batch.len(), retry_in_ms = wait.as_millis(), "sms_deliveries: write failed; retrying");
        })
        .await;
    if let Err(e) = result {
        let jobs: Vec<String> = batch.iter().map(|a| a.job_id.to_string()).collect();
        tracing::error!(error = %e, rows = batch.len(), ?jobs, "sms_deliveries: giving up on these delivery records (the SMS themselves are not affected)");
        metrics::counter!("jobplane_sms_records_dropped_total").increment(batch.len() as u64);
    }
}

/// One statement; a record written before (a retry after a lost answer) is kept once.
async fn insert(pool: &PgPool, batch: &[Row]) -> Result<(), sqlx::Error> {
    let mut query = QueryBuilder::new(
        "INSERT INTO sms_deliveries (job_id, attempt, to_masked, provider, provider_message_id, status, error, cost, created_at) ",
    );
    query.push_values(batch, |mut row, a| {
        row.push_bind(a.job_id)
            .push_bind(a.attempt)
            .push_bind(&a.to_masked)
            .push_bind(a.provider)
            .push_bind(&a.message_id)
            .push_bind(a.status)
            .push_bind(&a.error)
            .push_bind(&a.cost)
            .push_bind(a.at);
    });
    query.push(" ON CONFLICT (job_id, attempt) DO NOTHING");
    // Bounded on our own clock too (see `db::QUERY_DEADLINE`): the writer never hangs.
    tokio::time::timeout(db::QUERY_DEADLINE, query.build().execute(pool))
        .await
        .unwrap_or_else(|_| Err(db::no_answer()))
        .map(|_| ())
}
