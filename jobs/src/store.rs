//! The enqueue client: writes jobs with `enqueue.lua` and reads their status.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use crate::redis_conn::Conn;
use chrono::{DateTime, Utc};
use redis::{Pipeline, Script};
use serde::{Deserialize, Serialize};

use crate::keys::QueueKeys;
use crate::limits::{OtpLimit, OtpLimits};
use crate::record::{JobRecord, millis};
use crate::{JobInfo, JobStatus, Keys, Kind, NewJob};

static ENQUEUE: LazyLock<Script> = LazyLock::new(|| crate::record::with_records(include_str!("../lua/enqueue.lua")));

/// What happened to one job handed to [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    Created {
        id: String,
        status: JobStatus,
        run_at: DateTime<Utc>,
    },
    /// Its idempotency key was seen with the same request: the earlier job.
    Replayed {
        id: String,
        status: JobStatus,
        run_at: DateTime<Utc>,
    },
    /// Its idempotency key was seen with another request; nothing was written for its queue.
    Conflict {
        existing_id: String,
    },
    /// Over a rate limit (the SMS-pumping guard); nothing was written for its queue. A slot
    /// for it frees in `retry_after`.
    Limited {
        limit: OtpLimit,
        retry_after: Duration,
    },
    /// Not written because another job of the same queue in this call conflicts or is limited.
    NotWritten,
}

impl EnqueueOutcome {
    /// A conflict or a limit: what stops a whole call.
    fn refused(&self) -> bool {
        matches!(self, EnqueueOutcome::Conflict { .. } | EnqueueOutcome::Limited { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or did not answer in time: the caller may try again.
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// Redis reached its `maxmemory` and refuses writes (`OOM`, under `noeviction`): an outage
    /// of capacity, not a fault of the call. Nothing was written; the caller may try again
    /// once memory is freed (finished jobs expiring, dead letters evicted) or raised.
    #[error("redis is full: {0}")]
    Full(#[source] Cause),
    #[error("redis answered unexpectedly: {0}")]
    Protocol(#[source] Cause),
}

/// What went wrong under a [`StoreError`]: a message, and the error that caused it when there
/// is one (a Redis error, an undecodable record), kept as the error's source so that logs can
/// print the whole chain.
#[derive(Debug)]
pub struct Cause {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    pub fn new(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { message: message.into(), source: Some(Box::new(source)) }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self { message, source: None }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if crate::redis_conn::is_unavailable(&e) {
            StoreError::Unavailable(Cause::new(e.to_string(), e))
        } else if crate::redis_conn::is_full(&e) {
            crate::redis_conn::note_full(&e);
            StoreError::Full(Cause::new(e.to_string(), e))
        } else {
            StoreError::Protocol(Cause::new(e.to_string(), e))
        }
    }
}

/// An error and its causes on one line, `outer: cause: cause`, leaving out a cause whose text
/// its parent already ends with (a wrapper that repeats what it wraps).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

impl From<crate::record::BadRecord> for StoreError {
    fn from(e: crate::record::BadRecord) -> Self {
        StoreError::Protocol(Cause::new("a job record could not be read", e))
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    conn: Conn,
    keys: Keys,
    idempotency_ttl: Duration,
    /// Bound on any one call, so a dead Redis costs a caller this long at most.
    call_timeout: Duration,
    otp_limits: OtpLimits,
    replica_wait: Option<ReplicaWait>,
}

/// Replicas that must confirm an enqueue before it counts as written: Redis `WAIT`, sent in the
/// same round trip as the script. Replication is asynchronous, so without it a failover can
/// lose the jobs the old master accepted in its last moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    pub replicas: u32,
    pub timeout: Duration,
}

/// One call of `enqueue.lua` (its ARGV[1]; the records follow as ARGV[2..]).
#[derive(Serialize)]
struct EnqueueCall {
    ready: String,
    scheduled: String,
    wake: String,
    job_prefix: String,
    idem_ttl: u64,
    check: bool,
    jobs: Vec<EnqueueJob>,
    limits: Vec<RateLimit>,
    /// A schedule's regular tick: the queue's hash of schedule pauses, the schedule and when
    /// the tick was claimed (ms); absent for every other call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pauses: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claimed: Option<i64>,
}

/// A schedule's regular tick, for [`Store::enqueue_tick`]: the schedule's name and when its
/// tick was claimed (the claim's `now`, on the schedules' Redis clock).
#[derive(Debug, Clone)]
pub struct TickClaim {
    pub schedule: String,
    pub claimed: DateTime<Utc>,
}

#[derive(Serialize)]
struct EnqueueJob {
    id: String,
    key: String,
    st: JobStatus,
    ra: i64,
    /// The lane: the priority's code and the group (`lua/lanes.lua`), absent for normal, none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pi: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fp: Option<String>,
}

/// One rate limit as `enqueue.lua` receives it.
#[derive(Serialize)]
struct RateLimit {
    key: String,
    max: u32,
    /// ms
    window: u64,
    name: OtpLimit,
    /// The 1-based positions, within the call, of the jobs that count against it.
    jobs: Vec<usize>,
}

/// What `enqueue.lua` answers for one job.
#[derive(Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum EnqueueReply {
    Created { id: String, st: JobStatus, ra: i64 },
    Replayed { id: String, st: JobStatus, ra: i64 },
    Conflict { id: String },
    Limited { limit: OtpLimit, wait: u64 },
    NotWritten,
}

/// The recipient of an OTP SMS payload (already validated and normalized at enqueue).
fn recipient(payload: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct To {
        to: String,
    }
    serde_json::from_str::<To>(payload).ok().map(|p| p.to)
}

impl Store {
    pub fn new(conn: Conn, keys: Keys, idempotency_ttl: Duration, call_timeout: Duration) -> Self {
        Self { conn, keys, idempotency_ttl, call_timeout, otp_limits: OtpLimits::OFF, replica_wait: None }
    }

    /// Reports jobs written only once `wait.replicas` replicas hold them (the producer API's
    /// store, with `REDIS_WAIT_REPLICAS`); until then the enqueue fails as unavailable.
    #[must_use]
    pub fn with_replica_wait(mut self, wait: Option<ReplicaWait>) -> Self {
        self.replica_wait = wait;
        self
    }

    /// Applies the SMS-pumping guard to the OTP SMS this store enqueues (the producer API's store).
    #[must_use]
    pub fn with_otp_limits(mut self, limits: OtpLimits) -> Self {
        self.otp_limits = limits;
        self
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Writes `jobs` with one `enqueue.lua` call per queue, all sent at once: one round trip.
    /// Each queue's call is atomic; outcomes come back in the order of `jobs`.
    ///
    /// Jobs of several queues that carry idempotency keys, or OTP SMS under a rate limit, are
    /// first checked in every queue (a read-only round trip), so a conflict or a limit in one
    /// queue writes nothing in any. Only a request racing this one between the two trips can
    /// still leave other queues written; their outcomes then say so.
    pub async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut groups: BTreeMap<Kind, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            groups.entry(job.kind).or_default().push(i);
        }
        let limited = !self.otp_limits.is_off() && groups.contains_key(&Kind::OtpSms);
        if groups.len() > 1 && (limited || jobs.iter().any(|j| j.idempotency.is_some())) {
            let checked = self.run_enqueue(jobs, &groups, true, None).await?;
            if checked.iter().any(EnqueueOutcome::refused) {
                return Ok(checked
                    .into_iter()
                    .map(|o| if o.refused() { o } else { EnqueueOutcome::NotWritten })
                    .collect());
            }
        }
        self.run_enqueue(jobs, &groups, false, None).await
    }

    /// Writes one schedule's regular tick, unless a pause of that schedule was taken at or
    /// after `claim.claimed` (then [`EnqueueOutcome::NotWritten`], nothing written): the check
    /// and the write are one `enqueue.lua` call, so no tick is written once a pause answered.
    pub async fn enqueue_tick(&self, job: &NewJob, claim: &TickClaim) -> Result<EnqueueOutcome, StoreError> {
        let groups = BTreeMap::from([(job.kind, vec![0])]);
        let mut outcomes = self.run_enqueue(std::slice::from_ref(job), &groups, false, Some(claim)).await?;
        outcomes.pop().ok_or_else(|| StoreError::Protocol("enqueue.lua answered nothing".into()))
    }

    async fn run_enqueue(
        &self,
        jobs: &[NewJob],
        groups: &BTreeMap<Kind, Vec<usize>>,
        check_only: bool,
        tick: Option<&TickClaim>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let now = jobs.first().map_or_else(Utc::now, |j| j.created_at);
        // One call per queue, sent together: one round trip on one node, and on a cluster
        // (where each queue lives in its own slot) one concurrent request per queue.
        let wait = if check_only { None } else { self.replica_wait };
        let calls = groups.iter().map(|(kind, indices)| {
            let mut pipe = redis::pipe();
            self.add_enqueue_call(&mut pipe, *kind, indices.iter().map(|&i| &jobs[i]), now, check_only, tick);
            if let Some(wait) = wait {
                pipe.cmd("WAIT").arg(wait.replicas).arg(u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX));
            }
            async move {
                let mut replies: Vec<redis::Value> = self.run_scripts(&pipe).await?;
                if let Some(wait) = wait {
                    let acked: i64 = replies.pop().map(redis::from_redis_value).transpose().map_err(redis::RedisError::from)?.unwrap_or(0);
                    if acked < i64::from(wait.replicas) {
                        return Err(StoreError::Unavailable(Cause::from(format!(
                            "the Redis master took the jobs but {acked} of the {} required replicas confirmed them within {} ms",
                            wait.replicas,
                            wait.timeout.as_millis()
                        ))));
                    }
                }
                let reply = replies.pop().ok_or_else(|| StoreError::Protocol("enqueue.lua answered nothing".into()))?;
                let bytes: Vec<u8> = redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
                rmp_serde::from_slice::<Vec<EnqueueReply>>(&bytes)
                    .map_err(|e| StoreError::Protocol(Cause::new("enqueue.lua answered unreadably", e)))
            }
        });
        let replies = futures::future::try_join_all(calls).await?;
        let mut outcomes = vec![EnqueueOutcome::NotWritten; jobs.len()];
        for ((_, indices), reply) in groups.iter().zip(replies) {
            if reply.len() != indices.len() {
                return Err(StoreError::Protocol(
                    format!("enqueue.lua answered {} results for {} jobs", reply.len(), indices.len()).into(),
                ));
            }
            for (&i, reply) in indices.iter().zip(reply) {
                outcomes[i] = match reply {
                    EnqueueReply::Created { id, st, ra } => {
                        EnqueueOutcome::Created { id, status: st, run_at: millis(ra) }
                    }
                    EnqueueReply::Replayed { id, st, ra } => {
                        EnqueueOutcome::Replayed { id, status: st, run_at: millis(ra) }
                    }
                    EnqueueReply::Conflict { id } => EnqueueOutcome::Conflict { existing_id: id },
                    EnqueueReply::Limited { limit, wait } => {
                        EnqueueOutcome::Limited { limit, retry_after: Duration::from_millis(wait) }
                    }
                    EnqueueReply::NotWritten => EnqueueOutcome::NotWritten,
                };
            }
        }
        Ok(outcomes)
    }

    fn add_enqueue_call<'a>(
        &self,
        pipe: &mut Pipeline,
        kind: Kind,
        jobs: impl ExactSizeIterator<Item = &'a NewJob> + Clone,
        now: DateTime<Utc>,
        check_only: bool,
        tick: Option<&TickClaim>,
    ) {
        let queue = self.keys.queue(kind);
        let limits = if kind == Kind::OtpSms { self.limits_of(&queue, jobs.clone()) } else { Vec::new() };
        let mut call = EnqueueCall {
            ready: queue.ready(),
            scheduled: queue.scheduled(),
            wake: queue.wake(),
            job_prefix: queue.job_prefix(),
            idem_ttl: u64::try_from(self.idempotency_ttl.as_millis()).unwrap_or(u64::MAX),
            check: check_only,
            jobs: Vec::with_capacity(jobs.len()),
            limits,
            pauses: tick.map(|_| queue.schedule_pauses()),
            schedule: tick.map(|t| t.schedule.clone()),
            claimed: tick.map(|t| t.claimed.timestamp_millis()),
        };
        let mut records = Vec::with_capacity(jobs.len());
        for job in jobs {
            let record = JobRecord::new(job, now);
            let id = job.id.to_string();
            let (idem, fp) = match &job.idempotency {
                Some((key, fingerprint)) => (Some(queue.idempotency(&job.producer, key)), Some(fingerprint.clone())),
                None => (None, None),
            };
            call.jobs.push(EnqueueJob {
                key: queue.job(&id),
                id,
                st: record.status,
                ra: record.run_at,
                pi: job.priority.code(),
                gr: job.group.clone(),
                idem,
                fp,
            });
            records.push(record.encode());
        }
        let mut invocation = ENQUEUE.prepare_invoke();
        for key in [&call.ready, &call.scheduled, &call.wake] {
            invocation.key(key);
        }
        for job in &call.jobs {
            invocation.key(&job.key);
            if let Some(idem) = &job.idem {
                invocation.key(idem);
            }
        }
        for limit in &call.limits {
            invocation.key(&limit.key);
        }
        if let Some(pauses) = &call.pauses {
            invocation.key(pauses);
        }
        invocation.arg(rmp_serde::to_vec_named(&call).unwrap_or_default());
        for record in records {
            invocation.arg(record);
        }
        pipe.invoke_script(&invocation);
    }

    /// The rate limits the OTP SMS of one call count against: one per recipient, one per producer.
    fn limits_of<'a>(&self, queue: &QueueKeys, jobs: impl Iterator<Item = &'a NewJob>) -> Vec<RateLimit> {
        let mut by_key: BTreeMap<String, RateLimit> = BTreeMap::new();
        let window = self.otp_limits.window;
        for (position, job) in jobs.enumerate().map(|(i, job)| (i + 1, job)) {
            let mut count = |key: String, limit: OtpLimit, max: u32| {
                let entry = by_key.entry(key.clone()).or_insert_with(|| RateLimit {
                    key,
                    max,
                    window: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                    name: limit,
                    jobs: Vec::new(),
                });
                entry.jobs.push(position);
            };
            if self.otp_limits.per_number > 0
                && let Some(to) = recipient(&job.payload)
            {
                count(queue.rate_per_number(&to), OtpLimit::PerNumber, self.otp_limits.per_number);
            }
            if self.otp_limits.per_key > 0 {
                count(queue.rate_per_producer(&job.producer), OtpLimit::PerKey, self.otp_limits.per_key);
            }
        }
        // Per-number limits first, so a job over both is reported for its number.
        let (mut limits, per_key): (Vec<_>, Vec<_>) = by_key.into_values().partition(|l| l.name == OtpLimit::PerNumber);
        limits.extend(per_key);
        limits
    }

    /// Runs a pipeline of `EVALSHA`s; after a Redis restart has flushed the script cache,
    /// loads the script and runs the pipeline once more (a `NOSCRIPT` pipeline wrote nothing).
    async fn run_scripts<T: redis::FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        let first = self.bounded(pipe.query_async::<T>(&mut conn)).await?;
        match first {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.bounded(ENQUEUE.load_async(&mut conn)).await??;
                Ok(self.bounded(pipe.query_async::<T>(&mut conn)).await??)
            }
            other => Ok(other?),
        }
    }

    async fn bounded<F: Future>(&self, f: F) -> Result<F::Output, StoreError> {
        tokio::time::timeout(self.call_timeout, f).await.map_err(|_| {
            StoreError::Unavailable(format!("no answer within {} ms", self.call_timeout.as_millis()).into())
        })
    }

    /// The job's status, wherever its queue; `None` when unknown or expired.
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, StoreError> {
        let found = self.bounded(crate::record::find(&self.conn, &self.keys, id)).await??;
        Ok(found.map(|(kind, record)| JobInfo::from_record(id, kind, &record)))
    }

    /// Puts a provider's report on job `job_id` of `kind`, idempotently: see
    /// [`crate::delivery`] for the precedence. An unknown or expired job is
    /// [`crate::delivery::DeliveryOutcome::Unknown`], nothing written.
    pub async fn record_delivery(
        &self,
        kind: Kind,
        job_id: &str,
        delivery: &crate::delivery::Delivery,
    ) -> Result<crate::delivery::DeliveryOutcome, StoreError> {
        crate::delivery::Deliveries::new(self.conn.clone(), self.keys.clone(), self.call_timeout)
            .record(kind, job_id, delivery)
            .await
    }

    /// Whether Redis (every master, on a cluster) has room for writes, from `INFO memory`.
    pub async fn memory(&self) -> Result<crate::redis_conn::Memory, StoreError> {
        Ok(self.bounded(crate::redis_conn::memory(&self.conn)).await??)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = self.bounded(redis::cmd("PING").query_async(&mut conn)).await??;
        Ok(())
    }
}
