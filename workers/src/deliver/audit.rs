//! Audit-log events into PostgreSQL, in batches. Each audit job hands its event to one writer
//! task and waits; the writer collects events until it has `AUDIT_BATCH_SIZE` of them or
//! `AUDIT_FLUSH_MS` has passed since the first, and writes them all in one transaction: a binary
//! `COPY` into a staging table, then one statement. Each job succeeds only once its batch has
//! committed, so an acknowledged event is in PostgreSQL.
//!
//! - A PostgreSQL outage: the batch is retried, with backoff, for up to
//!   `AUDIT_OUTAGE_RETRY_SECONDS` while the jobs' leases are kept alive; only then do the jobs
//!   fail their attempt and go to the durable retry. An outage shorter than that costs no attempt.
//! - A row PostgreSQL refuses (a broken rule, a value it cannot read): the batch is split in
//!   halves until the refused rows stand alone; those fail permanently (dead letters), their
//!   neighbours are written.
//! - A repeated `event_id`, in one batch or across batches and redeliveries, is stored once: the
//!   statement claims each (event id, month of `occurred_at`) in `audit_event_ids` and inserts
//!   only what it claimed.
//! - Retention: [`keep_partitions`] creates the months ahead and, with `AUDIT_RETENTION_MONTHS`,
//!   drops the months past the horizon from both tables.

use std::net::IpAddr;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use jobs::payload::AuditLog;
use jobs::settings::{Env, SettingError};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::outcome::{Delivered, JobError};

/// The staging table a batch is copied into: one per connection (temporary), emptied at each
/// commit. No constraints: the rules are `audit_logs`'s, checked by [`FROM_STAGING`].
const STAGING: &str = "
    CREATE TEMP TABLE IF NOT EXISTS audit_staging (
        position bigint, event_id uuid, tenant_id text, actor text, action text, resource_type text,
        resource_id text, ip inet, user_agent text, metadata jsonb, occurred_at timestamptz, job_id uuid
    ) ON COMMIT DELETE ROWS";

const COPY_STAGING: &str = "COPY audit_staging (position, event_id, tenant_id, actor, action, resource_type, \
     resource_id, ip, user_agent, metadata, occurred_at, job_id) FROM STDIN (FORMAT binary)";

/// One statement moves the staged batch: duplicates of an event id inside the batch collapse to
/// the first, `audit_event_ids` claims each (event id, month) and only the claimed rows are
/// inserted.
const FROM_STAGING: &str = "
    WITH input AS (
        SELECT DISTINCT ON (event_id) * FROM audit_staging ORDER BY event_id, position
    ),
    claimed AS (
        INSERT INTO audit_event_ids (event_id, month) SELECT event_id, jobplane_audit_month(occurred_at) FROM input
        ON CONFLICT DO NOTHING RETURNING event_id
    )
    INSERT INTO audit_logs (event_id, tenant_id, actor, action, resource_type, resource_id, ip, user_agent,
                            metadata, occurred_at, job_id)
    SELECT i.event_id, i.tenant_id, i.actor, i.action, i.resource_type, i.resource_id, i.ip, i.user_agent,
           i.metadata, i.occurred_at, i.job_id
    FROM input i JOIN claimed c ON c.event_id = i.event_id";

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    /// `AUDIT_BATCH_SIZE` (default 1000): a batch is written once it holds this many events.
    pub batch: usize,
    /// `AUDIT_FLUSH_MS` (default 200): ... or this long after its first event arrived.
    pub flush: Duration,
    /// `AUDIT_OUTAGE_RETRY_SECONDS` (default 60): how long a batch keeps trying while
    /// PostgreSQL is unreachable before its jobs fail the attempt.
    pub outage_retry: Duration,
    /// `AUDIT_WRITERS` (default 2): batches written at once, each on its own connection, so
    /// the next batch fills and commits while one is in flight.
    pub writers: usize,
    /// `AUDIT_RETENTION_MONTHS` (default: none, keep everything): months of `audit_logs` (and
    /// of `audit_event_ids`) kept whole before the current one; older partitions are dropped.
    pub retention_months: Option<u32>,
}

impl AuditSettings {
    pub fn from_env(env: &Env, job_timeout: Duration) -> Result<Self, SettingError> {
        let batch: usize = env.parse("AUDIT_BATCH_SIZE", 1000)?;
        if !(1..=10_000).contains(&batch) {
            return Err(SettingError::new("AUDIT_BATCH_SIZE", "must be between 1 and 10000"));
        }
        let flush = env.millis("AUDIT_FLUSH_MS", 200)?;
        if flush.is_zero() || flush > Duration::from_mins(1) {
            return Err(SettingError::new("AUDIT_FLUSH_MS", "must be between 1 and 60000"));
        }
        let outage_retry = env.seconds("AUDIT_OUTAGE_RETRY_SECONDS", 60)?;
        if outage_retry + flush + Duration::from_secs(10) > job_timeout {
            return Err(SettingError::new(
                "AUDIT_OUTAGE_RETRY_SECONDS",
                format!(
                    "must leave at least 10 s of WORKER_JOB_TIMEOUT_SECONDS ({} s) for the write itself",
                    job_timeout.as_secs()
                ),
            ));
        }
        let writers: usize = env.parse("AUDIT_WRITERS", 2)?;
        if !(1..=32).contains(&writers) {
            return Err(SettingError::new("AUDIT_WRITERS", "must be between 1 and 32"));
        }
        let retention_months = match env.get("AUDIT_RETENTION_MONTHS") {
            None => None,
            Some(v) => Some(v.parse::<u32>().ok().filter(|m| (1..=1200).contains(m)).ok_or_else(|| {
                SettingError::new("AUDIT_RETENTION_MONTHS", "must be a whole number of months between 1 and 1200")
            })?),
        };
        Ok(Self { batch, flush, outage_retry, writers, retention_months })
    }
}

/// One event as it is written.
#[derive(Debug, Clone)]
pub struct Row {
    pub event_id: Uuid,
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub metadata: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub job_id: Option<Uuid>,
}

impl Row {
    fn new(job_id: &str, event: &AuditLog) -> Result<Self, JobError> {
        Ok(Self {
            event_id: event.event_id.ok_or_else(|| JobError::Permanent("the event has no event_id".into()))?,
            tenant_id: event.tenant_id.clone(),
            actor: event.actor.clone(),
            action: event.action.clone(),
            resource_type: event.resource_type.clone(),
            resource_id: event.resource_id.clone(),
            ip: event.ip,
            user_agent: event.user_agent.clone(),
            metadata: serde_json::Value::Object(event.metadata.clone()),
            occurred_at: event.occurred_at.ok_or_else(|| JobError::Permanent("the event has no occurred_at".into()))?,
            job_id: job_id.parse().ok(),
        })
    }
}

type Pending = (Row, oneshot::Sender<Result<(), JobError>>);

/// The handle audit jobs write through; cheap to share.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Starts the writer task. It ends when the last handle is dropped.
    pub fn spawn(pool: PgPool, settings: AuditSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.batch * 2);
        tokio::spawn(run(pool, rx, settings));
        Self { tx }
    }

    /// Returns once the event's batch has committed (or failed).
    pub async fn write(&self, job_id: &str, event: &AuditLog) -> Result<Delivered, JobError> {
        let row = Row::new(job_id, event)?;
        let (reply, written) = oneshot::channel();
        let stopped = || JobError::Retry("the audit-log writer has stopped".into());
        self.tx.send((row, reply)).await.map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())??;
        Ok(Delivered::done())
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Pending>, settings: AuditSettings) {
    let writers = std::sync::Arc::new(tokio::sync::Semaphore::new(settings.writers));
    let mut batch = Vec::with_capacity(settings.batch);
    loop {
        // Collect the next batch only once a writer is free to take it, so it keeps growing
        // while every writer is busy.
        let Ok(writer) = writers.clone().acquire_owned().await else { return };
        if rx.recv_many(&mut batch, settings.batch).await == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + settings.flush;
        while batch.len() < settings.batch {
            let room = settings.batch - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let (rows, replies): (Vec<Row>, Vec<_>) = batch.drain(..).unzip();
        let pool = pool.clone();
        tokio::spawn(async move {
            metrics::histogram!("jobplane_audit_batch_size")
                .record(f64::from(u32::try_from(rows.len()).unwrap_or(u32::MAX)));
            let results = write_isolating(&pool, &rows, settings.outage_retry).await;
            let written = results.iter().filter(|r| r.is_ok()).count();
            metrics::counter!("jobplane_audit_events_written_total").increment(written as u64);
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
            drop(writer);
        });
    }
}

/// Why a batch did not commit.
#[derive(Debug)]
enum Failure {
    /// PostgreSQL refused something in the batch: a row breaks a rule or cannot be read.
    Refused(String),
    /// PostgreSQL could not take the batch now (unreachable, restarting, not migrated yet).
    Unavailable(String),
}

/// Writes `rows`, one result per row: a refused batch is split until the refused rows stand
/// alone, so one poison event does not sink its neighbours.
async fn write_isolating(pool: &PgPool, rows: &[Row], outage_retry: Duration) -> Vec<Result<(), JobError>> {
    match write_retrying(pool, rows, outage_retry).await {
        Ok(()) => vec![Ok(()); rows.len()],
        Err(Failure::Unavailable(e)) => vec![Err(JobError::Retry(format!("postgresql unavailable: {e}"))); rows.len()],
        Err(Failure::Refused(e)) if rows.len() == 1 => {
            tracing::warn!(event_id = %rows[0].event_id, error = %e, "postgresql refused an audit event");
            vec![Err(JobError::Permanent(format!("postgresql refused the event: {e}")))]
        }
        Err(Failure::Refused(_)) => {
            let (left, right) = rows.split_at(rows.len() / 2);
            let mut results = Box::pin(write_isolating(pool, left, outage_retry)).await;
            results.extend(Box::pin(write_isolating(pool, right, outage_retry)).await);
            results
        }
    }
}

/// One statement for the whole batch, tried again while PostgreSQL is unavailable, for at most
/// `outage_retry` of waiting in all.
async fn write_retrying(pool: &PgPool, rows: &[Row], outage_retry: Duration) -> Result<(), Failure> {
    let policy = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(outage_retry));
    (|| insert(pool, rows))
        .retry(policy)
        .when(|e| matches!(e, Failure::Unavailable(_)))
        .notify(|e, wait| {
            tracing::warn!(error = ?e, events = rows.len(), retry_in_ms = wait.as_millis(), "audit batch not written; retrying");
        })
        .await
}

async fn insert(pool: &PgPool, rows: &[Row]) -> Result<(), Failure> {
    // The server ends a statement after `STATEMENT_TIMEOUT`; this bounds the wait when it (or
    // the network) stops answering at all, so the writer task never hangs on one batch.
    tokio::time::timeout(db::QUERY_DEADLINE, write_batch(pool, rows))
        .await
        .unwrap_or_else(|_| Err(db::no_answer()))
        .map_err(|e| classify(&e))
}

/// Writes `rows` in one transaction: a binary `COPY` into the connection's staging table, then
/// one statement into `audit_event_ids` and `audit_logs` (public for the benchmark, which
/// measures it against PostgreSQL's own ceiling).
pub async fn write_batch(pool: &PgPool, rows: &[Row]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(STAGING).execute(&mut *tx).await?;
    let mut copy = tx.copy_in_raw(COPY_STAGING).await?;
    copy.send(binary_copy(rows, Columns::Staging)).await?;
    copy.finish().await?;
    sqlx::query(FROM_STAGING).execute(&mut *tx).await?;
    tx.commit().await
}

/// Which columns [`binary_copy`] writes for each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// `audit_staging`'s: the position in the batch, then `audit_logs`'s.
    Staging,
    /// `audit_logs`'s (event_id, tenant_id, actor, action, resource_type, resource_id, ip,
    /// user_agent, metadata, occurred_at, job_id).
    AuditLogs,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// `rows` in PostgreSQL's binary `COPY` format: the header, each row's fields as length-prefixed
/// values in their types' binary forms, and the trailer.
pub fn binary_copy(rows: &[Row], columns: Columns) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256 + 21);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&[0; 8]); // flags, header extension length
    for (position, row) in rows.iter().enumerate() {
        let fields: i16 = if columns == Columns::Staging { 12 } else { 11 };
        out.extend_from_slice(&fields.to_be_bytes());
        if columns == Columns::Staging {
            field(&mut out, Some(&i64::try_from(position).unwrap_or(i64::MAX).to_be_bytes()));
        }
        field(&mut out, Some(row.event_id.as_bytes()));
        for text in [&row.tenant_id, &row.actor, &row.action, &row.resource_type] {
            field(&mut out, Some(text.as_bytes()));
        }
        field(&mut out, row.resource_id.as_deref().map(str::as_bytes));
        field(&mut out, row.ip.map(inet).as_deref());
        field(&mut out, row.user_agent.as_deref().map(str::as_bytes));
        let mut jsonb = vec![1_u8]; // jsonb's binary form: a version byte, then the text
        serde_json::to_writer(&mut jsonb, &row.metadata).unwrap_or_default();
        field(&mut out, Some(&jsonb));
        let micros = row.occurred_at.timestamp_micros() - POSTGRES_EPOCH_MICROS;
        field(&mut out, Some(&micros.to_be_bytes()));
        field(&mut out, row.job_id.as_ref().map(Uuid::as_bytes).map(<[u8; 16]>::as_slice));
    }
    out.extend_from_slice(&(-1_i16).to_be_bytes());
    out
}

/// One field: its length (-1 for NULL), then its bytes.
fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1_i32).to_be_bytes()),
        Some(bytes) => {
            out.extend_from_slice(&i32::try_from(bytes.len()).unwrap_or(i32::MAX).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// `inet`'s binary form: family (2 for IPv4, 3 for IPv6), prefix bits, is-cidr, length, address.
fn inet(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => [&[2, 32, 0, 4][..], &v4.octets()].concat(),
        IpAddr::V6(v6) => [&[3, 128, 0, 16][..], &v6.octets()].concat(),
    }
}

/// SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation) are about the
/// rows; anything else (I/O, pool timeout, shutdown, a table not migrated yet) is about the
/// server, and passes.
fn classify(e: &sqlx::Error) -> Failure {
    if let sqlx::Error::Database(db) = e
        && db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
    {
        return Failure::Refused(db.message().to_owned());
    }
    Failure::Unavailable(e.to_string())
}

/// Keeps the monthly partitions of `audit_logs` and `audit_event_ids` ahead of time (this month
/// and the next two) and, with `retention_months`, drops the months past the horizon; at start
/// and then daily. Waits, retrying, while PostgreSQL or the migrations are not there yet; a
/// missing partition is never fatal (the default partition takes the rows).
pub async fn keep_partitions(pool: PgPool, retention_months: Option<u32>) {
    let mut wait = Duration::from_secs(1);
    loop {
        match maintain_partitions(&pool, retention_months, Utc::now()).await {
            Ok(_) => {
                wait = Duration::from_secs(1);
                tokio::time::sleep(Duration::from_hours(24)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit-log partitions not checked; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_mins(5));
            }
        }
    }
}

/// What one pass of the partition upkeep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// Months whose partitions were created.
    pub created: i32,
    /// Partitions detached and dropped, of both tables, oldest first.
    pub dropped: Vec<String>,
}

/// One pass of the upkeep as if the time were `now` (the clock is a parameter so a test can
/// roll a month out without waiting): creates the partitions of `now`'s month and the next two,
/// then drops those whose month ended more than `retention_months` months before `now`'s month.
/// Each dropped partition is logged and counted in `jobplane_audit_partitions_dropped_total`.
pub async fn maintain_partitions(
    pool: &PgPool,
    retention_months: Option<u32>,
    now: DateTime<Utc>,
) -> Result<Upkeep, sqlx::Error> {
    let ensure =
        sqlx::query_scalar::<_, i32>("SELECT jobplane_ensure_audit_partitions(2, $1)").bind(now).fetch_one(pool);
    let created = tokio::time::timeout(db::QUERY_DEADLINE, ensure).await.unwrap_or_else(|_| Err(db::no_answer()))?;
    if created > 0 {
        tracing::info!(created, "audit-log partitions created");
    }
    let mut upkeep = Upkeep { created, dropped: Vec::new() };
    let Some(keep) = retention_months else { return Ok(upkeep) };
    let keep = i32::try_from(keep).unwrap_or(i32::MAX);
    let drop = sqlx::query_scalar::<_, String>("SELECT jobplane_drop_audit_partitions($1, $2)")
        .bind(keep)
        .bind(now)
        .fetch_all(pool);
    upkeep.dropped = tokio::time::timeout(db::QUERY_DEADLINE, drop).await.unwrap_or_else(|_| Err(db::no_answer()))?;
    for partition in &upkeep.dropped {
        tracing::info!(partition, retention_months = keep, "audit-log partition past the retention horizon dropped");
    }
    metrics::counter!("jobplane_audit_partitions_dropped_total").increment(upkeep.dropped.len() as u64);
    Ok(upkeep)
}
