//! The enqueue client: writes jobs with `enqueue.lua` and reads their status.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use crate::redis_conn::Conn;
use chrono::{DateTime, Utc};
use redis::{Pipeline, Script};

use crate::keys::QueueKeys;
use crate::limits::{OtpLimit, OtpLimits};
use crate::{JobInfo, Keys, Kind, NewJob};

static ENQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/enqueue.lua")));

/// What happened to one job handed to [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    Created {
        id: String,
        status: String,
        run_at: DateTime<Utc>,
    },
    /// Its idempotency key was seen with the same request: the earlier job.
    Replayed {
        id: String,
        status: String,
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
    Unavailable(String),
    /// Redis reached its `maxmemory` and refuses writes (`OOM`, under `noeviction`): an outage
    /// of capacity, not a fault of the call. Nothing was written; the caller may try again
    /// once memory is freed (finished jobs expiring, dead letters evicted) or raised.
    #[error("redis is full: {0}")]
    Full(String),
    #[error("redis answered unexpectedly: {0}")]
    Protocol(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if crate::redis_conn::is_unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else if crate::redis_conn::is_full(&e) {
            crate::redis_conn::note_full(&e);
            StoreError::Full(e.to_string())
        } else {
            StoreError::Protocol(e.to_string())
        }
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

type ScriptReply = Vec<(i64, String, String, i64)>;

/// One rate limit as `enqueue.lua` receives it.
struct RateLimit {
    key: String,
    max: u32,
    window: Duration,
    name: OtpLimit,
    /// The 1-based positions, within the call, of the jobs that count against it.
    positions: String,
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
            let checked = self.run_enqueue(jobs, &groups, true).await?;
            if checked.iter().any(EnqueueOutcome::refused) {
                return Ok(checked
                    .into_iter()
                    .map(|o| if o.refused() { o } else { EnqueueOutcome::NotWritten })
                    .collect());
            }
        }
        self.run_enqueue(jobs, &groups, false).await
    }

    async fn run_enqueue(
        &self,
        jobs: &[NewJob],
        groups: &BTreeMap<Kind, Vec<usize>>,
        check_only: bool,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let now_ms = jobs.first().map_or(0, |j| j.created_at.timestamp_millis());
        // One call per queue, sent together: one round trip on one node, and on a cluster
        // (where each queue lives in its own slot) one concurrent request per queue.
        let wait = if check_only { None } else { self.replica_wait };
        let calls = groups.iter().map(|(kind, indices)| {
            let mut pipe = redis::pipe();
            self.add_enqueue_call(&mut pipe, *kind, indices.iter().map(|&i| &jobs[i]), now_ms, check_only);
            if let Some(wait) = wait {
                pipe.cmd("WAIT").arg(wait.replicas).arg(u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX));
            }
            async move {
                let mut replies: Vec<redis::Value> = self.run_scripts(&pipe).await?;
                if let Some(wait) = wait {
                    let acked: i64 = replies.pop().map(redis::from_redis_value).transpose().map_err(redis::RedisError::from)?.unwrap_or(0);
                    if acked < i64::from(wait.replicas) {
                        return Err(StoreError::Unavailable(format!(
                            "the Redis master took the jobs but {acked} of the {} required replicas confirmed them within {} ms",
                            wait.replicas,
                            wait.timeout.as_millis()
                        )));
                    }
                }
                let reply = replies.pop().ok_or_else(|| StoreError::Protocol("enqueue.lua answered nothing".into()))?;
                Ok::<ScriptReply, StoreError>(redis::from_redis_value(reply).map_err(redis::RedisError::from)?)
            }
        });
        let replies = futures::future::try_join_all(calls).await?;
        let mut outcomes = vec![EnqueueOutcome::NotWritten; jobs.len()];
        for ((_, indices), reply) in groups.iter().zip(replies) {
            if reply.len() != indices.len() {
                return Err(StoreError::Protocol(format!(
                    "enqueue.lua answered {} results for {} jobs",
                    reply.len(),
                    indices.len()
                )));
            }
            for (&i, (code, id, status, run_at_ms)) in indices.iter().zip(reply) {
                let run_at = DateTime::from_timestamp_millis(run_at_ms).unwrap_or_default();
                outcomes[i] = match code {
                    1 => EnqueueOutcome::Created { id, status, run_at },
                    2 => EnqueueOutcome::Replayed { id, status, run_at },
                    0 => EnqueueOutcome::Conflict { existing_id: id },
                    -2 => EnqueueOutcome::Limited {
                        limit: OtpLimit::parse(&id).ok_or_else(|| {
                            StoreError::Protocol(format!("enqueue.lua named an unknown limit `{id}`"))
                        })?,
                        retry_after: Duration::from_millis(u64::try_from(run_at_ms).unwrap_or(0)),
                    },
                    _ => EnqueueOutcome::NotWritten,
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
        now_ms: i64,
        check_only: bool,
    ) {
        let queue = self.keys.queue(kind);
        let mut call = ENQUEUE.prepare_invoke();
        call.key(queue.ready()).key(queue.scheduled());
        call.arg(now_ms)
            .arg(self.idempotency_ttl.as_millis())
            .arg(kind.as_str())
            .arg(queue.job_prefix())
            .arg(jobs.len());
        let limits = if kind == Kind::OtpSms { self.limits_of(&queue, jobs.clone()) } else { Vec::new() };
        for job in jobs {
            let id = job.id.to_string();
            let job_key = queue.job(&id);
            let (idem_key, fingerprint) = match &job.idempotency {
                Some((key, fingerprint)) => (queue.idempotency(&job.producer, key), fingerprint.as_str()),
                None => (job_key.clone(), ""),
            };
            call.key(job_key).key(idem_key);
            call.arg(&id)
                .arg(fingerprint)
                .arg(job.run_at.map_or(0, |t| t.timestamp_millis()))
                .arg(job.max_attempts)
                .arg(&job.producer)
                .arg(job.idempotency.as_ref().map_or("", |(key, _)| key.as_str()))
                .arg(&job.payload)
                .arg(job.traceparent.as_deref().unwrap_or(""));
        }
        call.arg(if check_only { "check" } else { "write" });
        call.arg(limits.len());
        for limit in limits {
            call.key(limit.key);
            call.arg(limit.max).arg(limit.window.as_millis()).arg(limit.name.as_str()).arg(limit.positions);
        }
        call.key(queue.wake());
        pipe.invoke_script(&call);
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
                    window,
                    name: limit,
                    positions: String::new(),
                });
                if !entry.positions.is_empty() {
                    entry.positions.push(' ');
                }
                entry.positions.push_str(&position.to_string());
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
        tokio::time::timeout(self.call_timeout, f)
            .await
            .map_err(|_| StoreError::Unavailable(format!("no answer within {} ms", self.call_timeout.as_millis())))
    }

    /// The job's status, wherever its queue; `None` when unknown or expired.
    pub async fn job(&self, id: &str) -> Result<Option<JobInfo>, StoreError> {
        let reads =
            crate::redis_conn::for_job_in_every_queue::<HashMap<String, String>>(&self.conn, &self.keys, id, |key| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(key);
                cmd
            });
        let hashes = self.bounded(reads).await??;
        Ok(hashes.iter().find(|h| !h.is_empty()).and_then(JobInfo::from_hash))
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
