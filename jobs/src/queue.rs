//! The worker's side of a queue: lease jobs, renew leases, record outcomes, put jobs back.
//! Each call is one Lua script over one queue's keys (one Redis Cluster slot).

use std::sync::LazyLock;
use std::time::Duration;

use crate::redis_conn::Conn;
use chrono::{DateTime, Utc};
use redis::Script;
use serde::Serialize;

use crate::keys::QueueKeys;
use crate::record::{DeadReason, JobRecord, millis, with_rate, with_records};
use crate::{Keys, Kind, StoreError};

static FETCH: LazyLock<Script> = LazyLock::new(|| with_rate(include_str!("../lua/fetch.lua")));
static FINISH: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/finish.lua")));
static EXTEND: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/extend.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| with_records(include_str!("../lua/release.lua")));

/// The most due jobs of each waiting set, and the most expired leases, one fetch moves.
pub const MAX_PROMOTE: usize = 1000;

/// How long jobs and dead letters stay, and how many dead letters a queue keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// A succeeded job stays readable this long, then expires (zero: deleted at once, unless
    /// its idempotency record lives longer).
    pub finished: Duration,
    /// Dead letters kept per kind, all producers together: the memory bound.
    pub dead_cap: u64,
    /// Dead letters kept per kind and producer: a producer beyond it loses its own oldest
    /// letters, so its flood of failing jobs never evicts another producer's letters (as long
    /// as it is below `dead_cap`).
    pub dead_cap_per_producer: u64,
    pub dead_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            finished: Duration::from_hours(24),
            dead_cap: 100_000,
            dead_cap_per_producer: 10_000,
            dead_age: Duration::from_hours(90 * 24),
        }
    }
}

/// A job leased to this worker.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    pub kind: Kind,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The lease's token: what `finish`, `extend` and `release` present to show the lease is
    /// still the job's current one. Never repeats for a job, unlike `attempt`.
    pub token: u64,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub producer: String,
    /// The W3C `traceparent` of the request that enqueued the job, if it had one.
    pub traceparent: Option<String>,
}

/// What one `fetch.lua` call answered.
#[derive(Debug, Clone, Default)]
pub struct FetchReply {
    /// The jobs leased, with their payloads.
    pub jobs: Vec<(Leased, String)>,
    /// When nothing was leased: how soon the queue has work again without a new job (see
    /// [`Queue::fetch_or_next`]); `None` when paused.
    pub next: Option<Duration>,
    /// The queue is paused ([`crate::pause`]): nothing was leased, and the worker should look
    /// again shortly, or at once when woken (a resume pushes wake-up markers).
    pub paused: bool,
    /// Jobs are ready but the kind's rate limit has no token ([`crate::rate`]): nothing was
    /// leased, and `next` is when a token is due. The worker sleeps until then; a wake-up
    /// marker (a new job) would find no token either.
    pub throttled: bool,
}

/// How an attempt ended, as `finish.lua` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Run again at this time.
    Retry {
        at: DateTime<Utc>,
    },
    /// A dead letter (an expired job, for [`DeadReason::Expired`]).
    Dead(DeadReason),
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub job: Leased,
    pub outcome: Outcome,
    /// The error of a failed attempt; never holds a payload value.
    pub error: Option<String>,
    /// The provider's id of what a succeeded attempt sent (an SES message id, a Twilio SID).
    pub provider_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// One call of `finish.lua` (its ARGV[1]).
#[derive(Serialize)]
struct FinishCall<'a> {
    now: i64,
    retention: u64,
    dead_cap: u64,
    dead_cap_per_producer: u64,
    dead_age: u64,
    job_prefix: &'a str,
    idem_prefix: &'a str,
    done: Vec<FinishedJob<'a>>,
}

#[derive(Serialize)]
struct FinishedJob<'a> {
    id: &'a str,
    token: u64,
    outcome: WireOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    started_at: i64,
    finished_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum WireOutcome {
    Succeeded,
    Retry { at: i64 },
    Dead { reason: DeadReason },
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What one `finish` call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinishReport {
    pub recorded: u64,
    /// Outcomes of attempts whose lease was lost meanwhile: ignored.
    pub stale: u64,
    /// Dead letters removed by the cap or the age limit.
    pub evicted: u64,
}

/// The worker's handle on one queue.
#[derive(Debug, Clone)]
pub struct Queue {
    conn: Conn,
    kind: Kind,
    keys: QueueKeys,
    idempotency_prefix: String,
    worker: String,
}

impl Queue {
    pub fn new(conn: Conn, keys: &Keys, kind: Kind, worker: impl Into<String>) -> Self {
        let queue = keys.queue(kind);
        let idempotency_prefix = queue.idempotency_prefix();
        Self { conn, kind, keys: queue, idempotency_prefix, worker: worker.into() }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Leases up to `batch` jobs for `lease`, after promoting due scheduled jobs and recovering
    /// expired leases (at most `promote_limit` of each). Returns the jobs with their payloads.
    pub async fn fetch(
        &self,
        lease: Duration,
        batch: usize,
        promote_limit: usize,
    ) -> Result<Vec<(Leased, String)>, StoreError> {
        Ok(self.fetch_or_next(lease, batch, promote_limit).await?.0)
    }

    /// [`Queue::fetch`], and when it leased nothing, how soon the queue has work again without
    /// any new job: zero while jobs are still ready (every id it popped was skipped), else the
    /// next scheduled job's due time or the next lease's deadline (`None`: neither exists).
    pub async fn fetch_or_next(
        &self,
        lease: Duration,
        batch: usize,
        promote_limit: usize,
    ) -> Result<(Vec<(Leased, String)>, Option<Duration>), StoreError> {
        let reply = self.fetch_reply(lease, batch, promote_limit).await?;
        Ok((reply.jobs, reply.next))
    }

    /// [`Queue::fetch_or_next`], and whether the queue is paused (then nothing was leased).
    pub async fn fetch_reply(
        &self,
        lease: Duration,
        batch: usize,
        promote_limit: usize,
    ) -> Result<FetchReply, StoreError> {
        let mut call = FETCH.prepare_invoke();
        call.key(self.keys.ready())
            .key(self.keys.scheduled())
            .key(self.keys.retry())
            .key(self.keys.active())
            .key(self.keys.dead())
            .key(self.keys.paused())
            .key(self.keys.bucket());
        call.arg(ms(lease))
            .arg(batch)
            .arg(promote_limit.clamp(1, MAX_PROMOTE))
            .arg(self.keys.job_prefix())
            .arg(&self.worker)
            .arg(&self.idempotency_prefix)
            .arg(ms(crate::rate::RAMP));
        let reply: Vec<redis::Value> = call.invoke_async(&mut self.conn.clone()).await?;
        let mut reply = reply.into_iter();
        let header: Vec<i64> = reply
            .by_ref()
            .take(6)
            .map(redis::from_redis_value)
            .collect::<Result<_, _>>()
            .map_err(redis::RedisError::from)?;
        let [_promoted, _recovered, next, skipped, paused, throttled] = header[..] else {
            return Err(StoreError::Protocol(format!("fetch.lua answered {} header values", header.len()).into()));
        };
        if skipped > 0 {
            tracing::error!(kind = %self.kind, skipped, "fetched ids without a readable job record were dropped");
        }
        let next = u64::try_from(next).ok().map(Duration::from_millis);
        let mut jobs = Vec::new();
        while let (Some(id), Some(record)) = (reply.next(), reply.next()) {
            let id: String = redis::from_redis_value(id).map_err(redis::RedisError::from)?;
            let record: Vec<u8> = redis::from_redis_value(record).map_err(redis::RedisError::from)?;
            // Failing the whole fetch for one record would strand the other jobs fetch.lua just
            // leased: each would wait out its lease and lose an attempt. This one is left to its
            // lease, whose recovery ends it.
            let record = match JobRecord::decode(&record) {
                Ok(record) => record,
                Err(e) => {
                    tracing::error!(kind = %self.kind, job_id = %id, error = crate::store::chain(&e), "a leased job's record could not be read; left to its lease");
                    continue;
                }
            };
            let leased = Leased {
                id,
                kind: self.kind,
                attempt: record.attempts,
                token: record.leases,
                max_attempts: record.max_attempts,
                created_at: millis(record.created_at),
                producer: record.producer,
                traceparent: record.traceparent,
            };
            jobs.push((leased, record.payload.unwrap_or_default()));
        }
        Ok(FetchReply { jobs, next, paused: paused == 1, throttled: throttled == 1 })
    }

    /// Blocks on the queue's wake-up list for at most `timeout`, on `conn`, which must be a
    /// connection of its own: a blocked connection serves nothing else. True when woken by a
    /// new job, false when the time ran out.
    pub async fn wait_for_work(&self, conn: &mut Conn, timeout: Duration) -> Result<bool, StoreError> {
        let woken: Option<(String, String)> =
            redis::cmd("BLPOP").arg(self.keys.wake()).arg(timeout.as_secs_f64()).query_async(conn).await?;
        Ok(woken.is_some())
    }

    /// Records outcomes in one call. Dead letters beyond the retention's cap or age are evicted.
    pub async fn finish(
        &self,
        done: &[Finished],
        now: DateTime<Utc>,
        retention: &Retention,
    ) -> Result<FinishReport, StoreError> {
        let job_prefix = self.keys.job_prefix();
        let call = FinishCall {
            now: now.timestamp_millis(),
            retention: ms(retention.finished),
            dead_cap: retention.dead_cap,
            dead_cap_per_producer: retention.dead_cap_per_producer,
            dead_age: ms(retention.dead_age),
            job_prefix: &job_prefix,
            idem_prefix: &self.idempotency_prefix,
            done: done
                .iter()
                .map(|f| FinishedJob {
                    id: &f.job.id,
                    token: f.job.token,
                    outcome: match &f.outcome {
                        Outcome::Succeeded => WireOutcome::Succeeded,
                        Outcome::Retry { at } => WireOutcome::Retry { at: at.timestamp_millis() },
                        Outcome::Dead(reason) => WireOutcome::Dead { reason: *reason },
                    },
                    error: f.error.as_deref(),
                    started_at: f.started_at.timestamp_millis(),
                    finished_at: f.finished_at.timestamp_millis(),
                    provider_id: f.provider_id.as_deref(),
                })
                .collect(),
        };
        let mut invocation = FINISH.prepare_invoke();
        invocation
            .key(self.keys.retry())
            .key(self.keys.active())
            .key(self.keys.dead())
            .key(self.keys.stats(now.timestamp().div_euclid(60)))
            .key(self.keys.succeeded())
            .key(self.keys.cancelled());
        invocation.arg(rmp_serde::to_vec_named(&call).unwrap_or_default());
        let (recorded, stale, evicted): (u64, u64, u64) = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(FinishReport { recorded, stale, evicted })
    }

    /// Renews to Redis's now + `lease` the leases of `jobs` (id, the lease's token) that are
    /// still their job's current one: a stale holder renews nothing.
    pub async fn extend(&self, jobs: &[(String, u64)], lease: Duration) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut call = EXTEND.prepare_invoke();
        call.key(self.keys.active()).arg(ms(lease)).arg(self.keys.job_prefix());
        for (id, attempt) in jobs {
            call.arg(id).arg(attempt);
        }
        Ok(call.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Puts back leased jobs (id, the lease's token) this worker will not finish, the attempt
    /// not counted; a lease that is no longer its job's current one puts back nothing.
    pub async fn release(&self, jobs: &[(String, u64)]) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut call = RELEASE.prepare_invoke();
        call.key(self.keys.ready()).key(self.keys.active()).key(self.keys.cancelled()).arg(self.keys.job_prefix());
        for (id, attempt) in jobs {
            call.arg(id).arg(attempt);
        }
        Ok(call.invoke_async(&mut self.conn.clone()).await?)
    }
}
