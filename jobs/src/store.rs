//! The enqueue client: writes jobs with `enqueue.lua` and reads their status.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::{Pipeline, Script};

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
    /// Not written because another job of the same queue in this call conflicts.
    NotWritten,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached or did not answer in time: the caller may try again.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis answered unexpectedly: {0}")]
    Protocol(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Protocol(e.to_string())
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
    idempotency_ttl: Duration,
    /// Bound on any one call, so a dead Redis costs a caller this long at most.
    call_timeout: Duration,
}

type ScriptReply = Vec<Vec<(i64, String, String, i64)>>;

impl Store {
    pub fn new(conn: ConnectionManager, keys: Keys, idempotency_ttl: Duration, call_timeout: Duration) -> Self {
        Self { conn, keys, idempotency_ttl, call_timeout }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Writes `jobs` with one `enqueue.lua` call per queue, all in one pipeline: one round
    /// trip. Each queue's call is atomic; outcomes come back in the order of `jobs`.
    ///
    /// Jobs of several queues that carry idempotency keys are first checked in every queue
    /// (a read-only round trip), so a conflict in one queue writes nothing in any. Only a
    /// conflicting request racing this one between the two trips can still leave other
    /// queues written; their outcomes then say so.
    pub async fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let mut groups: BTreeMap<Kind, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            groups.entry(job.kind).or_default().push(i);
        }
        if groups.len() > 1 && jobs.iter().any(|j| j.idempotency.is_some()) {
            let checked = self.run_enqueue(jobs, &groups, true).await?;
            if checked.iter().any(|o| matches!(o, EnqueueOutcome::Conflict { .. })) {
                return Ok(checked
                    .into_iter()
                    .map(|o| if let EnqueueOutcome::Conflict { .. } = o { o } else { EnqueueOutcome::NotWritten })
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
        let mut pipe = redis::pipe();
        for (kind, indices) in groups {
            self.add_enqueue_call(&mut pipe, *kind, indices.iter().map(|&i| &jobs[i]), now_ms, check_only);
        }
        let replies: ScriptReply = self.run_scripts(&pipe).await?;
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
        jobs: impl ExactSizeIterator<Item = &'a NewJob>,
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
                .arg(&job.payload);
        }
        call.arg(if check_only { "check" } else { "write" });
        pipe.invoke_script(&call);
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
        let mut pipe = redis::pipe();
        for kind in Kind::ALL {
            pipe.hgetall(self.keys.queue(kind).job(id));
        }
        let mut conn = self.conn.clone();
        let hashes: Vec<HashMap<String, String>> = self.bounded(pipe.query_async(&mut conn)).await??;
        Ok(hashes.iter().find(|h| !h.is_empty()).and_then(JobInfo::from_hash))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = self.bounded(redis::cmd("PING").query_async(&mut conn)).await??;
        Ok(())
    }
}
